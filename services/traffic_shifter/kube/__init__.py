"""Kubernetes traffic routers (Istio, NGINX Ingress, Gateway API, SMI), as Argo Rollouts drives them.

One pure module per router turns the live object(s) and the desired weights into the object to
store; ``provider.py`` is the I/O shell that reads, compares, writes and watches for drift.
This package module holds what they share: the error tree and the Rollout owner reference.
"""

from __future__ import annotations

from typing import Any

ROLLOUT_API_VERSION = "argoproj.io/v1alpha1"


class RouterError(Exception):
    """The router's objects cannot carry the desired traffic as configured; the message names the object and field."""


class ObjectNotFound(RouterError):
    """An object the rollout's trafficRouting names does not exist."""


def owner_reference(rollout: str, uid: str, api_version: str = ROLLOUT_API_VERSION) -> dict[str, Any]:
    """The controller reference Argo puts on the objects it creates (metav1.NewControllerRef)."""
    return {
        "apiVersion": api_version,
        "kind": "Rollout",
        "name": rollout,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controlled_by(obj: dict[str, Any], uid: str) -> bool:
    """metav1.IsControlledBy: the object's controller reference points at ``uid``."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, dict) and r.get("controller") and r.get("uid") == uid for r in refs)


__all__ = ["ROLLOUT_API_VERSION", "ObjectNotFound", "RouterError", "controlled_by", "owner_reference"]
