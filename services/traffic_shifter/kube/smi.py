"""SMI: the rollout's TrafficSplit (pure; no I/O).

Follows argo-rollouts ``rollout/trafficrouting/smi/smi.go``: the TrafficSplit is named
``trafficSplitName`` (default: the rollout's name), controlled by the Rollout, with
``spec.service`` = ``rootService`` (default: the stable Service) and two backends, the canary
Service with the canary weight first, then the stable Service with ``100 - weight``. In
``v1alpha1`` a weight is a Kubernetes quantity (written as a string, ``"30"``); in ``v1alpha2`` and
``v1alpha3`` an integer. An existing TrafficSplit gets this spec (Argo's merge patch of the spec);
one the Rollout does not control is an error.

Where we do less: no experiment (additional) backends; ``v1alpha3`` ``matches`` are not set.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from services.traffic_shifter.kube import ROLLOUT_API_VERSION, RouterError, controlled_by, owner_reference
from shared.specs.rollouts import SMITrafficRouting

FIELD = "spec.strategy.canary.trafficRouting.smi"
GROUP = "split.smi-spec.io"
VERSIONS = ("v1alpha1", "v1alpha2", "v1alpha3")
DEFAULT_VERSION = "v1alpha1"  # Argo's default (--traffic-split-api-version)

Obj = dict[str, Any]


class SmiWeights(msgspec.Struct, frozen=True, kw_only=True):
    rollout: str
    namespace: str
    canary_service: str
    stable_service: str
    canary_weight: int
    owner_uid: str | None = None  # the Rollout's uid; None: no ownerReference can be set or checked
    owner_api_version: str = ROLLOUT_API_VERSION  # the Rollout's group/version (ROLLOUTS_API_GROUP)


def traffic_split_name(spec: SMITrafficRouting, rollout: str) -> str:
    return spec.traffic_split_name or rollout


def traffic_split(live: Obj | None, spec: SMITrafficRouting, want: SmiWeights, *, api_version: str) -> Obj:
    """The TrafficSplit to store, given the ``live`` one (None: to create)."""
    if api_version not in VERSIONS:
        raise RouterError(f"SMI TrafficSplit API version {api_version!r} is not one of {', '.join(VERSIONS)}")
    name = traffic_split_name(spec, want.rollout)
    desired_spec = {
        "service": spec.root_service or want.stable_service,
        "backends": [
            {"service": want.canary_service, "weight": _weight(want.canary_weight, api_version)},
            {"service": want.stable_service, "weight": _weight(100 - want.canary_weight, api_version)},
        ],
    }
    if live is None:
        metadata: Obj = {"name": name, "namespace": want.namespace}
        if want.owner_uid:
            metadata["ownerReferences"] = [
                owner_reference(want.rollout, want.owner_uid, want.owner_api_version)
            ]
        return {
            "apiVersion": f"{GROUP}/{api_version}",
            "kind": "TrafficSplit",
            "metadata": metadata,
            "spec": desired_spec,
        }
    if want.owner_uid and not controlled_by(live, want.owner_uid):
        raise RouterError(
            f"SMI TrafficSplit {want.namespace}/{name} is not controlled by Rollout {want.namespace}/{want.rollout} "
            f"({FIELD}.trafficSplitName)"
        )
    new = copy.deepcopy(live)
    new["spec"] = desired_spec
    return new


def _weight(weight: int, api_version: str) -> int | str:
    return str(weight) if api_version == "v1alpha1" else weight


__all__ = ["DEFAULT_VERSION", "GROUP", "VERSIONS", "SmiWeights", "traffic_split", "traffic_split_name"]
