"""Gateway API: HTTPRoute backendRef weights and header rules (pure; no I/O).

Follows the ``argoproj-labs/gatewayAPI`` traffic router plugin (rollouts-plugin-trafficrouter-gatewayapi,
``pkg/plugin/httproute.go``), configured under ``trafficRouting.plugins["argoproj-labs/gatewayAPI"]`` with
``httpRoute`` (header routes enabled) and/or ``httpRoutes: [{name, useHeaderRoutes}]`` and ``namespace``
(default: the rollout's):

* Every backendRef named after the canary Service gets the canary weight, every one named after the
  stable Service ``100 - weight``, in all rules but the managed header rules. A route without both
  is an error.
* A ``setHeaderRoute`` in effect (on routes with header routes enabled) appends one rule: the
  matches of the first rule that references both Services (their path and query params, with the
  header conditions ANDed), its filters, and a single backendRef to the canary Service (group "",
  kind Service, the canary backendRef's port). Exact values match ``Exact``; regex values, and
  prefixes as ``<prefix>.*``, match ``RegularExpression``.

Where we differ: the plugin remembers its rules' indexes in a ConfigMap; we keep them on the
HTTPRoute itself (annotation ``nats-rollouts.io/managed-rules``, JSON name -> index), so the rule and
its bookkeeping change in one write; a recorded rule is only removed if it still is a lone canary
backendRef. A source rule without matches gives the header rule one match of the headers alone
(the plugin would emit no match, i.e. all traffic). Not handled: GRPCRoute, TCPRoute, TLSRoute,
route selectors, the in-progress label, experiments, mirror routes (the plugin ignores those too).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec

from services.traffic_shifter.kube import RouterError
from shared.routes import HeaderRoute, StringMatch

PLUGIN = "argoproj-labs/gatewayAPI"
FIELD = f"spec.strategy.canary.trafficRouting.plugins.{PLUGIN}"
MANAGED_FIELD = "spec.strategy.canary.trafficRouting.managedRoutes"
MANAGED_RULES = "nats-rollouts.io/managed-rules"

Obj = dict[str, Any]


class HTTPRouteRef(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    name: str
    use_header_routes: bool = False


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """The plugin's configuration, restricted to what we support (unknown fields are rejected)."""

    http_route: str | None = None
    http_routes: tuple[HTTPRouteRef, ...] = ()
    namespace: str | None = None
    config_map: str | None = None  # accepted for compatibility; managed rules are recorded on the route


class GatewayWeights(msgspec.Struct, frozen=True, kw_only=True):
    canary_service: str
    stable_service: str
    canary_weight: int
    managed_routes: tuple[str, ...] = ()  # managedRoutes names, in order
    header_routes: tuple[HeaderRoute, ...] = ()


def gateway_config(raw: Any) -> GatewayConfig:
    try:
        return msgspec.convert(raw, GatewayConfig)
    except msgspec.ValidationError as e:
        raise RouterError(f"{FIELD}: {e} (supported: httpRoute, httpRoutes, namespace, configMap)") from None


def http_routes(config: GatewayConfig) -> list[tuple[str, bool, str]]:
    """(HTTPRoute name, header routes enabled, the spec field naming it), in the plugin's order."""
    refs = [
        (r.name, r.use_header_routes, f"{FIELD}.httpRoutes[{i}].name")
        for i, r in enumerate(config.http_routes)
    ]
    if config.http_route:
        refs.append((config.http_route, True, f"{FIELD}.httpRoute"))
    if not refs:
        raise RouterError(f"{FIELD}: httpRoute or httpRoutes is required")
    return refs


def http_route(live: Obj, want: GatewayWeights, *, use_header_routes: bool) -> Obj:
    """The HTTPRoute ``live`` with the weights set and the managed header rules in effect."""
    meta = live.get("metadata") or {}
    where = f"Gateway API HTTPRoute {meta.get('namespace', '')}/{meta.get('name', '')}"
    new = copy.deepcopy(live)
    body = new.get("spec")
    if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
        raise RouterError(f"{where}: has no spec.rules")
    recorded = _recorded(meta.get("annotations") or {})
    rules = [
        rule
        for i, rule in enumerate(body["rules"])
        if not (i in recorded.values() and _is_managed_rule(rule, want.canary_service))
    ]
    rules = _weighted(rules, want, where)
    records: dict[str, int] = {}
    if use_header_routes:
        in_effect = _headers_in_effect(want, where)
        source = _source_rule(rules, want)
        for name in want.managed_routes:
            if name in in_effect:
                rules.append(_header_rule(in_effect[name], source, want))
                records[name] = len(rules) - 1
    body["rules"] = rules
    annotations = dict((new.get("metadata") or {}).get("annotations") or {})
    if records:
        annotations[MANAGED_RULES] = json.dumps(records, sort_keys=True, separators=(",", ":"))
    else:
        annotations.pop(MANAGED_RULES, None)
    new_meta = new.setdefault("metadata", {})
    if annotations or "annotations" in new_meta:
        new_meta["annotations"] = annotations
    return new


def _weighted(rules: list[Obj], want: GatewayWeights, where: str) -> list[Obj]:
    found: set[str] = set()
    out: list[Obj] = []
    for rule in rules:
        refs = rule.get("backendRefs")
        if not isinstance(refs, list):
            out.append(rule)
            continue
        weighted = []
        for ref in refs:
            name = ref.get("name") if isinstance(ref, dict) else None
            if name == want.canary_service:
                target = want.canary_weight
            elif name == want.stable_service:
                target = 100 - want.canary_weight
            else:
                weighted.append(ref)
                continue
            found.add(name)
            weighted.append(ref if ref.get("weight") == target else {**ref, "weight": target})
        out.append({**rule, "backendRefs": weighted})
    for role, service in (("canary", want.canary_service), ("stable", want.stable_service)):
        if service not in found:
            raise RouterError(
                f"{where}: no backendRef names the {role} Service {service!r} (spec.strategy.canary.{role}Service)"
            )
    return out


def _headers_in_effect(want: GatewayWeights, where: str) -> dict[str, HeaderRoute]:
    in_effect: dict[str, HeaderRoute] = {}
    for route in want.header_routes:
        if route.name not in want.managed_routes:
            raise RouterError(f"{where}: header route {route.name!r} is not listed in {MANAGED_FIELD}")
        if route.match:
            in_effect[route.name] = route
    return in_effect


def _source_rule(rules: list[Obj], want: GatewayWeights) -> Obj:
    """The rule a header rule copies its matches from: the first that references both Services."""
    with_canary = [r for r in rules if want.canary_service in _ref_names(r)]
    both = [r for r in with_canary if want.stable_service in _ref_names(r)]
    return (both or with_canary)[0]  # _weighted guarantees a canary backendRef


def _header_rule(route: HeaderRoute, source: Obj, want: GatewayWeights) -> Obj:
    headers = [_header_match(m.header_name, m.header_value) for m in route.match]
    matches: list[Obj] = []
    for m in source.get("matches") or [{}]:
        match: Obj = {}
        if m.get("path") is not None:
            match["path"] = copy.deepcopy(m["path"])
        match["headers"] = headers
        if m.get("queryParams"):
            match["queryParams"] = copy.deepcopy(m["queryParams"])
        matches.append(match)
    canary_ref = next(r for r in source["backendRefs"] if r.get("name") == want.canary_service)
    backend: Obj = {"group": "", "kind": "Service", "name": want.canary_service}
    if canary_ref.get("port") is not None:
        backend["port"] = canary_ref["port"]
    rule: Obj = {"matches": matches, "backendRefs": [backend]}
    if source.get("filters"):
        rule["filters"] = copy.deepcopy(source["filters"])
    return rule


def _header_match(name: str, value: StringMatch) -> Obj:
    if value.exact:
        return {"name": name, "type": "Exact", "value": value.exact}
    if value.prefix:
        return {"name": name, "type": "RegularExpression", "value": f"{value.prefix}.*"}
    return {"name": name, "type": "RegularExpression", "value": value.regex or ""}


def _is_managed_rule(rule: Obj, canary_service: str) -> bool:
    refs = rule.get("backendRefs")
    return (
        isinstance(refs, list)
        and len(refs) == 1
        and isinstance(refs[0], dict)
        and refs[0].get("name") == canary_service
    )


def _ref_names(rule: Obj) -> set[str]:
    return {str(r.get("name")) for r in rule.get("backendRefs") or [] if isinstance(r, dict)}


def _recorded(annotations: dict[str, Any]) -> dict[str, int]:
    raw = annotations.get(MANAGED_RULES)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, int)}


__all__ = [
    "MANAGED_RULES",
    "PLUGIN",
    "GatewayConfig",
    "GatewayWeights",
    "gateway_config",
    "http_route",
    "http_routes",
]
