"""NGINX Ingress: the canary Ingress cloned from each stable Ingress (pure; no I/O).

Follows argo-rollouts ``rollout/trafficrouting/nginx/nginx.go`` (networking.k8s.io/v1):

* The canary Ingress is ``<rollout>-<stableIngress>-canary`` (the prefix cut to fit 253 characters),
  controlled by the Rollout (ownerReference), with the stable Ingress's ``spec.tls``,
  ``spec.ingressClassName`` and ``kubernetes.io/ingress.class`` annotation, and only the rules
  that have a path backed by the stable Service, with those backends pointed at the canary Service.
  A stable Ingress with no such rule is an error.
* Annotations: ``additionalIngressAnnotations`` (keys without the prefix get it), then
  ``canaryIngressAnnotations`` verbatim, then ``<prefix>/canary: "true"``,
  ``<prefix>/canary-weight: "<weight>"`` and, when ``maxTrafficWeight`` is set,
  ``<prefix>/canary-weight-total``. The prefix is ``annotationPrefix`` or
  ``nginx.ingress.kubernetes.io``.
* An existing canary Ingress gets exactly these annotations, no labels and this spec (Argo's merge
  patch of annotations, labels and spec); one controlled by another object is an error.

Beyond Argo (whose NGINX router ignores managed routes): a ``setHeaderRoute`` in effect becomes
``canary-by-header`` plus ``canary-by-header-value`` (exact), or ``canary-by-header-pattern``
(regex; a prefix ``p`` becomes ``^<p escaped>.*``). NGINX has one header condition per canary
Ingress, so more than one header route, or a route with several conditions, is an error.
Mirror routes are ignored, as in Argo. Legacy ``extensions/v1beta1`` Ingresses are not handled.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import msgspec

from services.traffic_shifter.kube import ROLLOUT_API_VERSION, RouterError, controlled_by, owner_reference
from shared.routes import HeaderRoute
from shared.specs.rollouts import NginxTrafficRouting

FIELD = "spec.strategy.canary.trafficRouting.nginx"
DEFAULT_PREFIX = "nginx.ingress.kubernetes.io"
CANARY_SUFFIX = "-canary"
INGRESS_CLASS = "kubernetes.io/ingress.class"
MAX_NAME = 253

Obj = dict[str, Any]


class NginxWeights(msgspec.Struct, frozen=True, kw_only=True):
    """What every canary Ingress of the rollout should express."""

    rollout: str
    canary_service: str
    stable_service: str
    canary_weight: int
    max_weight: int | None = None  # trafficRouting.maxTrafficWeight
    header_routes: tuple[HeaderRoute, ...] = ()
    owner_uid: str | None = None  # the Rollout's uid; None: no ownerReference can be set or checked
    owner_api_version: str = ROLLOUT_API_VERSION  # the Rollout's group/version (ROLLOUTS_API_GROUP)


def stable_ingresses(spec: NginxTrafficRouting) -> list[tuple[str, str]]:
    """(stable Ingress name, the spec field naming it), in order."""
    if spec.stable_ingresses:
        return [(name, f"{FIELD}.stableIngresses[{i}]") for i, name in enumerate(spec.stable_ingresses)]
    if spec.stable_ingress:
        return [(spec.stable_ingress, f"{FIELD}.stableIngress")]
    raise RouterError(f"{FIELD}: stableIngress or stableIngresses is required")


def canary_ingress_name(rollout: str, stable_ingress: str) -> str:
    """Argo's GetCanaryIngressName."""
    prefix = f"{rollout}-{stable_ingress}"[: MAX_NAME - len(CANARY_SUFFIX)]
    return prefix + CANARY_SUFFIX


def canary_ingress(stable: Obj, live: Obj | None, spec: NginxTrafficRouting, want: NginxWeights) -> Obj:
    """The canary Ingress to store for ``stable``, given the ``live`` canary Ingress (None: to create)."""
    meta = stable.get("metadata") or {}
    namespace = meta.get("namespace", "")
    name = canary_ingress_name(want.rollout, meta.get("name", ""))
    annotations = _annotations(stable, spec, want, f"nginx canary Ingress {namespace}/{name}")
    body = _spec(stable, want)
    if live is None:
        metadata: Obj = {"name": name, "namespace": namespace, "annotations": annotations}
        if want.owner_uid:
            metadata["ownerReferences"] = [
                owner_reference(want.rollout, want.owner_uid, want.owner_api_version)
            ]
        return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": body}
    if want.owner_uid and not controlled_by(live, want.owner_uid):
        raise RouterError(
            f"nginx canary Ingress {namespace}/{name} is controlled by another object, not Rollout "
            f"{namespace}/{want.rollout}"
        )
    new = copy.deepcopy(live)
    new_meta = new.setdefault("metadata", {})
    new_meta["annotations"] = annotations
    new_meta.pop("labels", None)
    new["spec"] = body
    return new


def _spec(stable: Obj, want: NginxWeights) -> Obj:
    meta = stable.get("metadata") or {}
    source = stable.get("spec") or {}
    rules: list[Obj] = []
    for rule in source.get("rules") or []:
        rule = copy.deepcopy(rule)
        uses_stable = False
        for path in (rule.get("http") or {}).get("paths") or []:
            service = (path.get("backend") or {}).get("service")
            if isinstance(service, dict) and service.get("name") == want.stable_service:
                service["name"] = want.canary_service
                uses_stable = True
        if uses_stable:
            rules.append(rule)
    if not rules:
        raise RouterError(
            f"nginx Ingress {meta.get('namespace', '')}/{meta.get('name', '')} has no rules using service "
            f"{want.stable_service} backend (spec.strategy.canary.stableService)"
        )
    body: Obj = {"rules": rules}
    if source.get("tls") is not None:
        body["tls"] = copy.deepcopy(source["tls"])
    if source.get("ingressClassName") is not None:
        body["ingressClassName"] = source["ingressClassName"]
    return body


def _annotations(stable: Obj, spec: NginxTrafficRouting, want: NginxWeights, where: str) -> dict[str, str]:
    prefix = spec.annotation_prefix or DEFAULT_PREFIX
    out: dict[str, str] = {}
    stable_annotations = (stable.get("metadata") or {}).get("annotations") or {}
    if INGRESS_CLASS in stable_annotations:
        out[INGRESS_CLASS] = stable_annotations[INGRESS_CLASS]
    for key, value in (spec.additional_ingress_annotations or {}).items():
        out[key if key.startswith(prefix) else f"{prefix}/{key}"] = value
    out.update(spec.canary_ingress_annotations or {})
    header = _header_annotations(want.header_routes, prefix, where)
    if header:  # the header route replaces any header condition given in the annotations
        for key in ("canary-by-header", "canary-by-header-value", "canary-by-header-pattern"):
            out.pop(f"{prefix}/{key}", None)
        out.update(header)
    out[f"{prefix}/canary"] = "true"
    out[f"{prefix}/canary-weight"] = str(want.canary_weight)
    if want.max_weight is not None:
        out[f"{prefix}/canary-weight-total"] = str(want.max_weight)
    return out


def _header_annotations(routes: tuple[HeaderRoute, ...], prefix: str, where: str) -> dict[str, str]:
    in_effect = [r for r in routes if r.match]
    if not in_effect:
        return {}
    if len(in_effect) > 1 or len(in_effect[0].match) > 1:
        names = ", ".join(f"{r.name} ({len(r.match)} conditions)" for r in in_effect)
        raise RouterError(
            f"{where}: NGINX routes by one header condition; the header routes in effect are {names}"
        )
    match = in_effect[0].match[0]
    out = {f"{prefix}/canary-by-header": match.header_name}
    value = match.header_value
    if value.exact:
        out[f"{prefix}/canary-by-header-value"] = value.exact
    elif value.regex:
        out[f"{prefix}/canary-by-header-pattern"] = value.regex
    elif value.prefix:
        out[f"{prefix}/canary-by-header-pattern"] = f"^{re.escape(value.prefix)}.*"
    return out


__all__ = ["NginxWeights", "canary_ingress", "canary_ingress_name", "stable_ingresses"]
