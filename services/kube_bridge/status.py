"""The merge patch that brings a Rollout's written status to the planner's (argo_status). Pure."""

from __future__ import annotations

from typing import Any


def merge_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`: changed keys, null for removed ones."""
    old = old or {}
    patch: dict[str, Any] = {}
    for k, v in new.items():
        before = old.get(k)
        if isinstance(v, dict) and isinstance(before, dict):
            inner = merge_patch(before, v)
            if inner:
                patch[k] = inner
        elif k not in old or before != v:
            patch[k] = v
    for k in old:
        if k not in new:
            patch[k] = None
    return patch
