"""Actions that change a rollout's spec, as Argo's CLI does: undo to an earlier revision, set an image.
Pure: state in, the new Rollout document out; the planner then applies it like any other document."""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from services.planner.state import RolloutState


class EditError(ValueError):
    pass


class UndoPayload(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    to_revision: int | None = None


class SetImagePayload(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    container: str | None = None  # None with one container: that one; "*": every container
    image: str = ""


def undo_document(state: RolloutState, to_revision: int | None) -> dict[str, Any]:
    """The applied document with an earlier revision's pod template (default: the one before)."""
    numbers = sorted(r.number for r in state.revisions)
    if to_revision is None:
        earlier = [n for n in numbers if n < state.revision]
        if not earlier:
            raise EditError(f"revision {state.revision} is the first kept revision: nothing to undo to")
        to_revision = earlier[-1]
    target = next((r for r in state.revisions if r.number == to_revision), None)
    if target is None:
        raise EditError(f"toRevision: revision {to_revision} is not in the history (kept: {numbers})")
    template = state.templates.get(target.hash)
    if template is None:
        raise EditError(f"toRevision: the pod template of revision {to_revision} is no longer kept")
    doc = copy.deepcopy(state.spec)
    doc.setdefault("spec", {})["template"] = copy.deepcopy(template)
    return doc


def set_image_document(state: RolloutState, payload: SetImagePayload) -> dict[str, Any]:
    if not payload.image:
        raise EditError("image: required")
    doc = copy.deepcopy(state.spec)
    containers = (((doc.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    names = [c.get("name") for c in containers]
    if payload.container is None and len(containers) != 1:
        raise EditError(
            f"container: required when the pod has several containers ({', '.join(map(str, names))})"
        )
    hit = False
    for c in containers:
        if payload.container in (None, "*", c.get("name")):
            c["image"] = payload.image
            hit = True
    if not hit:
        raise EditError(
            f"container: {payload.container!r} is not a container of the rollout ({', '.join(map(str, names))})"
        )
    return doc
