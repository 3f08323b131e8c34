"""The autoscaling/v1 Scale view of an object with a scale subresource (ReplicaSets, Deployments, Rollouts)."""

from __future__ import annotations

from typing import Any

from tests.support.kube_resources import ResourceType
from tests.support.kube_selectors import selector_string

Obj = dict[str, Any]


def nested(obj: Obj, path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def set_nested(obj: Obj, path: str, value: Any) -> None:
    parts = path.split(".")
    node = obj
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def scale_of(rt: ResourceType, obj: Obj) -> Obj:
    meta = obj["metadata"]
    if rt.label_selector_path is not None:
        selector = selector_string(nested(obj, rt.label_selector_path) or "")
    elif rt.custom:
        selector = ""
    else:
        selector = selector_string(nested(obj, "spec.selector"))
    status: Obj = {"replicas": nested(obj, rt.status_replicas_path) or 0}
    if selector:
        status["selector"] = selector
    scale_meta = {
        k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
    }
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": nested(obj, rt.spec_replicas_path) or 0},
        "status": status,
    }
