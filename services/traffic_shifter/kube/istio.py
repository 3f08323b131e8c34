"""Istio: VirtualService route weights and managed routes, DestinationRule subsets (pure; no I/O).

Follows argo-rollouts ``rollout/trafficrouting/istio/istio.go``:

* Weights go on the destinations of the selected routes whose host (up to the first ``.``) is the
  canary/stable Service, or whose subset is the DestinationRule's canary/stable subset; any other
  destination with a non-zero weight is dropped, one with weight 0 is kept. A weight already right
  is not rewritten (an absent weight counts as 0).
* HTTP routes are selected by name (``virtualService.routes``); without names the VirtualService
  must hold exactly one route besides the managed ones. TLS routes are selected by ``port`` and
  ``sniHosts`` (as a set), TCP routes by ``port``; without selectors the only route is used.
* Managed routes (``setHeaderRoute`` / ``setMirrorRoute``) are rebuilt on every apply: every HTTP
  route named in ``managedRoutes`` is removed, the ones in effect are built again (header route:
  one ``match`` entry per header condition, i.e. Istio ORs them, as Argo does; mirror route: the
  selected route's destinations and weights plus ``mirror`` and ``mirrorPercentage``) and all are
  put on top in ``managedRoutes`` order. Their destination is the DestinationRule's host (with the
  canary subset) when one is configured, else the canary Service, with the port of the first
  destination of the first selected route.
* The DestinationRule's canary/stable subsets get ``rollouts-pod-template-hash`` = revision and the
  rule the ``argo-rollouts.argoproj.io/managed-by-rollouts`` annotation; as in Argo's code, subsets
  that are neither canary, stable nor listed in ``additionalSubsetNames`` are dropped.

Where we do less or differ: no experiment (additional) destinations; a VirtualService named as
``name.namespace`` is supported but the DestinationRule is always in the rollout's namespace (as in
Argo); selectors that match nothing, or routes the VirtualService does not have, are errors
(Argo skips some of these silently).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import msgspec

from services.traffic_shifter.kube import RouterError
from shared.routes import HeaderRoute, MirrorRoute, RouteMatch, StringMatch
from shared.specs.rollouts import IstioDestinationRule, IstioVirtualService, TCPRoute, TLSRoute

POD_TEMPLATE_HASH = "rollouts-pod-template-hash"
MANAGED_BY = "argo-rollouts.argoproj.io/managed-by-rollouts"
FIELD = "spec.strategy.canary.trafficRouting.istio"
MANAGED_FIELD = "spec.strategy.canary.trafficRouting.managedRoutes"

Obj = dict[str, Any]


class IstioWeights(msgspec.Struct, frozen=True, kw_only=True):
    """What every VirtualService of the rollout should express."""

    canary_service: str
    stable_service: str
    canary_weight: int
    canary_subset: str = ""  # set when a DestinationRule is configured
    stable_subset: str = ""
    destination_host: str = ""  # the DestinationRule's spec.host: managed routes point there
    managed_routes: tuple[str, ...] = ()  # managedRoutes names, in order
    header_routes: tuple[HeaderRoute, ...] = ()
    mirror_routes: tuple[MirrorRoute, ...] = ()


def virtual_service_address(name: str, namespace: str) -> tuple[str, str]:
    """``name`` or ``name.namespace`` (Argo's GetVirtualServiceNamespaceName) -> (namespace, name)."""
    fields = name.split(".")
    if len(fields) >= 2:
        return fields[1], fields[0]
    return namespace, name


def virtual_service(live: Obj, spec: IstioVirtualService, want: IstioWeights, *, field: str) -> Obj:
    """The VirtualService ``live`` with ``want`` applied; ``field`` is the spec path naming it (for errors)."""
    where = f"istio VirtualService {_address(live)}"
    new = copy.deepcopy(live)
    body = new.get("spec")
    if not isinstance(body, dict):
        raise RouterError(f"{where}: has no spec")
    in_effect = _managed_in_effect(want, where)
    http, tls, tcp = body.get("http"), body.get("tls"), body.get("tcp")
    if http is None and tls is None and tcp is None:
        raise RouterError(f"{where}: spec has no http, tls or tcp routes")
    if http is not None:
        body["http"] = _http_routes(_routes(http, where, "http"), spec, want, in_effect, where, field)
    elif spec.routes or in_effect:
        raise RouterError(
            f"{where}: spec.http not found, but {field}.routes or the managed routes need HTTP routes"
        )
    pickers: tuple[tuple[str, Any, bool, Callable[[list[Obj]], list[int]]], ...] = (
        ("tls", tls, bool(spec.tls_routes), lambda r: _tls_indexes(r, spec.tls_routes, where, field)),
        ("tcp", tcp, bool(spec.tcp_routes), lambda r: _tcp_indexes(r, spec.tcp_routes, where, field)),
    )
    for kind, found, selected, indexes in pickers:
        if found is not None:
            routes = _routes(found, where, kind)
            for i in indexes(routes):
                routes[i] = _weighted_route(routes[i], want, where, f"{kind}[{i}]")
            body[kind] = routes
        elif selected:
            raise RouterError(
                f"{where}: spec.{kind} not found, but {field}.{kind}Routes selects {kind.upper()} routes"
            )
    return new


def destination_rule(
    live: Obj,
    spec: IstioDestinationRule,
    *,
    rollout: str,
    canary_hash: str | None,
    stable_hash: str | None,
) -> Obj:
    """The DestinationRule ``live`` with the canary/stable subsets selecting their revisions."""
    new = copy.deepcopy(live)
    meta = new.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), MANAGED_BY: rollout}
    body = new.setdefault("spec", {})
    subsets = body.get("subsets")
    if subsets is None:
        return new
    if not isinstance(subsets, list):
        raise RouterError(f"istio DestinationRule {_address(live)}: spec.subsets is not a list")
    extra = set(spec.additional_subset_names or ())
    kept: list[Any] = []
    for subset in subsets:
        name = subset.get("name") if isinstance(subset, dict) else None
        if name == spec.canary_subset_name:
            revision = canary_hash
        elif name == spec.stable_subset_name:
            revision = stable_hash
        elif name in extra:
            kept.append(subset)
            continue
        else:
            continue  # Argo keeps only the subsets it manages
        labels = dict(subset.get("labels") or {})
        if revision:
            labels[POD_TEMPLATE_HASH] = revision
        else:
            labels.pop(POD_TEMPLATE_HASH, None)
        updated = dict(subset)
        if labels or "labels" in subset:
            updated["labels"] = labels
        kept.append(updated)
    body["subsets"] = kept
    return new


# --- HTTP routes ---------------------------------------------------------------------------------


def _http_routes(
    routes: list[Obj],
    spec: IstioVirtualService,
    want: IstioWeights,
    in_effect: dict[str, HeaderRoute | MirrorRoute],
    where: str,
    field: str,
) -> list[Obj]:
    managed = set(want.managed_routes)
    plain = [r for r in routes if not r.get("name") or r["name"] not in managed]
    indexes = _http_indexes(plain, spec.routes, where, field)
    for i in indexes:
        label = f"HTTP route {plain[i].get('name')!r}" if plain[i].get("name") else f"http[{i}]"
        plain[i] = _weighted_route(plain[i], want, where, label)
    if not in_effect:
        return plain
    if not indexes:
        raise RouterError(f"{where}: managed routes need an HTTP route that carries the weights")
    primary = plain[indexes[0]]
    built: dict[str, Obj] = {}
    for name, route in in_effect.items():
        if isinstance(route, HeaderRoute):
            built[name] = _header_route(route, primary, want)
        else:
            built[name] = _mirror_route(route, primary, want)
    return [built[name] for name in want.managed_routes if name in built] + plain


def _http_indexes(plain: list[Obj], names: list[str] | None, where: str, field: str) -> list[int]:
    if names:
        indexes: list[int] = []
        for name in names:
            found = [i for i, r in enumerate(plain) if r.get("name") == name]
            if not found:
                raise RouterError(f"{where}: HTTP route {name!r} not found ({field}.routes)")
            indexes.append(found[0])
        return list(dict.fromkeys(indexes))
    if len(plain) != 1:
        raise RouterError(
            f"{where}: spec.http must have exactly one route (besides managed routes) when {field}.routes "
            f"is omitted; it has {len(plain)}"
        )
    if plain[0].get("name"):
        raise RouterError(f"{where}: the HTTP route is named {plain[0]['name']!r}: list it in {field}.routes")
    return [0]


def _header_route(route: HeaderRoute, primary: Obj, want: IstioWeights) -> Obj:
    return {
        "name": route.name,
        "match": [{"headers": {m.header_name: _string_match(m.header_value)}} for m in route.match],
        "route": [
            _destination(
                want.destination_host or want.canary_service, _port(primary), want.canary_subset, 100
            )
        ],
    }


def _mirror_route(route: MirrorRoute, primary: Obj, want: IstioWeights) -> Obj:
    destinations: list[Obj] = []
    for d in primary.get("route") or []:
        dest = d.get("destination") or {}
        copied: Obj = {"destination": {k: dest[k] for k in ("host", "subset", "port") if dest.get(k)}}
        if int(d.get("weight") or 0):
            copied["weight"] = int(d["weight"])
        destinations.append(copied)
    mirror: Obj = {"host": want.destination_host or want.canary_service}
    if want.canary_subset:
        mirror["subset"] = want.canary_subset
    port = _port(primary)
    if port:
        mirror["port"] = {"number": port}
    return {
        "name": route.name,
        "match": [_route_match(m) for m in route.match],
        "route": destinations,
        "mirror": mirror,
        "mirrorPercentage": {"value": route.percentage},
    }


def _route_match(match: RouteMatch) -> Obj:
    out: Obj = {}
    if match.method is not None:
        out["method"] = _string_match(match.method)
    if match.path is not None:
        out["uri"] = _string_match(match.path)
    if match.headers:
        out["headers"] = {name: _string_match(value) for name, value in match.headers.items()}
    return out


def _string_match(match: StringMatch) -> Obj:
    return {k: v for k, v in (("exact", match.exact), ("regex", match.regex), ("prefix", match.prefix)) if v}


def _destination(host: str, port: int, subset: str, weight: int) -> Obj:
    dest: Obj = {"host": host}
    if port:
        dest["port"] = {"number": port}
    if subset:
        dest["subset"] = subset
    return {"destination": dest, "weight": weight}


def _port(route: Obj) -> int:
    destinations = route.get("route") or []
    if not destinations:
        return 0
    port = (destinations[0].get("destination") or {}).get("port") or {}
    return int(port.get("number") or 0)


def _managed_in_effect(want: IstioWeights, where: str) -> dict[str, HeaderRoute | MirrorRoute]:
    """The managed routes to build: an empty ``match`` is Argo's way of removing a route."""
    in_effect: dict[str, HeaderRoute | MirrorRoute] = {}
    routes: list[HeaderRoute | MirrorRoute] = [*want.header_routes, *want.mirror_routes]
    for route in routes:
        if route.name not in want.managed_routes:
            raise RouterError(f"{where}: managed route {route.name!r} is not listed in {MANAGED_FIELD}")
        if route.match:
            in_effect[route.name] = route
        else:
            in_effect.pop(route.name, None)
    return in_effect


# --- TLS / TCP routes ----------------------------------------------------------------------------


def _tls_indexes(routes: list[Obj], selectors: list[TLSRoute] | None, where: str, field: str) -> list[int]:
    if not selectors:
        return _only_route(routes, where, "tls", f"{field}.tlsRoutes")
    indexes: list[int] = []
    for sel in selectors:
        found = [i for i, r in enumerate(routes) if _tls_matches(r, sel)]
        if not found:
            raise RouterError(
                f"{where}: no TLS route matches port {sel.port or 0} and sniHosts {sel.sni_hosts or []} "
                f"({field}.tlsRoutes)"
            )
        indexes.extend(found)
    return list(dict.fromkeys(indexes))


def _tcp_indexes(routes: list[Obj], selectors: list[TCPRoute] | None, where: str, field: str) -> list[int]:
    if not selectors:
        return _only_route(routes, where, "tcp", f"{field}.tcpRoutes")
    indexes: list[int] = []
    for sel in selectors:
        found = [i for i, r in enumerate(routes) if _single_port(r) == (sel.port or 0)]
        if not found:
            raise RouterError(f"{where}: no TCP route matches port {sel.port or 0} ({field}.tcpRoutes)")
        indexes.extend(found)
    return list(dict.fromkeys(indexes))


def _only_route(routes: list[Obj], where: str, kind: str, selector_field: str) -> list[int]:
    if len(routes) > 1:
        raise RouterError(
            f"{where}: spec.{kind} must have exactly one route when {selector_field} is omitted; "
            f"it has {len(routes)}"
        )
    return [0] if routes else []


def _tls_matches(route: Obj, sel: TLSRoute) -> bool:
    port = _single_port(route)
    sni = {host for m in route.get("match") or [] for host in m.get("sniHosts") or []}
    return port == (sel.port or 0) and sni == set(sel.sni_hosts or [])


def _single_port(route: Obj) -> int | None:
    """The one port the route's matches name (0 for none); None when they name several."""
    ports = {int(m.get("port") or 0) for m in route.get("match") or []}
    if len(ports) > 1:
        return None
    return next(iter(ports), 0)


# --- weights -------------------------------------------------------------------------------------


def _weighted_route(route: Obj, want: IstioWeights, where: str, label: str) -> Obj:
    destinations = route.get("route")
    if not isinstance(destinations, list):
        raise RouterError(f"{where}: {label} has no route destinations")
    _check_destinations(destinations, want, where, label)
    stable_weight = 100 - want.canary_weight
    weighted: list[Obj] = []
    for d in destinations:
        host = _short_host(d)
        subset = (d.get("destination") or {}).get("subset") or ""
        weight = int(d.get("weight") or 0)
        if not host:
            weighted.append(d)
            continue
        if host == want.canary_service or (subset and subset == want.canary_subset):
            target = want.canary_weight
        elif host == want.stable_service or (subset and subset == want.stable_subset):
            target = stable_weight
        else:
            if weight == 0:
                weighted.append(d)  # Argo removes only foreign destinations that carry traffic
            continue
        weighted.append(d if weight == target else {**d, "weight": target})
    return {**route, "route": weighted}


def _check_destinations(destinations: list[Obj], want: IstioWeights, where: str, label: str) -> None:
    hosts = {_short_host(d) for d in destinations}
    subsets = {(d.get("destination") or {}).get("subset") for d in destinations}
    if want.canary_subset or want.stable_subset:
        if want.canary_subset not in subsets:
            raise RouterError(
                f"{where}: canary DestinationRule subset {want.canary_subset!r} not found in {label}"
            )
        if want.stable_subset not in subsets:
            raise RouterError(
                f"{where}: stable DestinationRule subset {want.stable_subset!r} not found in {label}"
            )
        return
    if want.canary_service not in hosts:
        raise RouterError(f"{where}: canary Service {want.canary_service!r} not found in {label}")
    if want.stable_service not in hosts:
        raise RouterError(f"{where}: stable Service {want.stable_service!r} not found in {label}")


def _short_host(destination: Obj) -> str:
    """Argo's getHost: the host up to its first dot ("" when it starts with one)."""
    host = str((destination.get("destination") or {}).get("host") or "")
    dot = host.find(".")
    return host if dot < 0 else host[:dot]


def _routes(value: Any, where: str, kind: str) -> list[Obj]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise RouterError(f"{where}: spec.{kind} is not a list of routes")
    return list(value)


def _address(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


__all__ = [
    "MANAGED_BY",
    "POD_TEMPLATE_HASH",
    "IstioWeights",
    "destination_rule",
    "virtual_service",
    "virtual_service_address",
]
