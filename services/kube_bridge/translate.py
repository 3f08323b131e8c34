"""What a change of an Argo resource asks of the planner: the commands (verb + payload) to send.

Pure: from the previous and the new object. A spec change (metadata.generation moved) is an `apply`
of the object; the fields Argo's CLI writes into a Rollout's status (`kubectl argo rollouts abort`,
`retry`, `promote [--full]`) and `spec.restartAt` (`restart`) map to the planner's verbs. Each command
carries a Nats-Msg-Id made of the object's uid, resourceVersion and verb, so a replayed watch event or
a second bridge sends nothing twice.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.specs import (
    AnalysisTemplate,
    ClusterAnalysisTemplate,
    Rollout,
    SpecError,
    load_documents,
    to_builtins,
)
from shared.specs.loading import ARGO_GROUP, ARGO_VERSION

ROLLOUT = "Rollout"
ANALYSIS_TEMPLATE = "AnalysisTemplate"
CLUSTER_ANALYSIS_TEMPLATE = "ClusterAnalysisTemplate"
KINDS = (ROLLOUT, ANALYSIS_TEMPLATE, CLUSTER_ANALYSIS_TEMPLATE)

# The namespace token the planner files cluster-scoped templates under (see the CLI's apply).
CLUSTER_NAMESPACE = "_cluster"

# kubectl's copy of the whole manifest: it changes with every apply and means nothing to the planner.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

PROMOTE_FULL_PAYLOAD = b'{"full":true}'


class TranslateError(ValueError):
    """A resource whose fields cannot be read as Argo's; the message names the field and the object."""


class BridgeCommand(msgspec.Struct, frozen=True, kw_only=True):
    """One command for the planner, as `Client.command` would send it."""

    namespace: str  # the subject's namespace token ("_cluster" for a ClusterAnalysisTemplate)
    name: str
    verb: str
    payload: bytes = b""
    msg_id: str  # Nats-Msg-Id: uid + resourceVersion + verb
    reason: str  # what in the resource asked for it, for the log


# --- lenient views of the fields we read (unknown fields tolerated: they belong to the API server) ---


class _Meta(msgspec.Struct, kw_only=True, rename="camel"):
    name: str = ""
    namespace: str | None = None
    uid: str = ""
    resource_version: str = ""
    generation: int = 0


class _PauseCondition(msgspec.Struct, kw_only=True, rename="camel"):
    reason: str = ""
    start_time: str | None = None


class _Status(msgspec.Struct, kw_only=True, rename="camel"):
    abort: bool | None = None
    promote_full: bool | None = None
    pause_conditions: list[_PauseCondition] | None = None
    current_step_index: int | None = None


class _Canary(msgspec.Struct, kw_only=True):
    steps: list[Any] | None = None


class _Strategy(msgspec.Struct, kw_only=True):
    canary: _Canary | None = None


class _Spec(msgspec.Struct, kw_only=True, rename="camel"):
    paused: bool | None = None
    restart_at: str | None = None
    strategy: _Strategy | None = None


class _Object(msgspec.Struct, kw_only=True):
    metadata: _Meta = msgspec.field(default_factory=_Meta)
    spec: _Spec | None = None
    status: _Status | None = None


def _view(obj: dict[str, Any], kind: str) -> _Object:
    try:
        return msgspec.convert(obj, _Object)
    except msgspec.ValidationError as e:
        raw = obj.get("metadata")
        meta: dict[str, Any] = raw if isinstance(raw, dict) else {}
        who = f"{kind} {meta.get('namespace') or ''}/{meta.get('name') or '?'}".replace(" /", " ")
        raise TranslateError(f"{who}: {e}".replace("`$.", "`")) from None


# --- identities ---------------------------------------------------------------------------------


def msg_id(uid: str, resource_version: str, verb: str) -> str:
    """The Nats-Msg-Id of the command `verb` caused by this version of the object."""
    return f"kube.{uid}.{resource_version}.{verb}"


def subject_namespace(kind: str, obj: dict[str, Any]) -> str:
    """The namespace token of the object's commands."""
    if kind == CLUSTER_ANALYSIS_TEMPLATE:
        return CLUSTER_NAMESPACE
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default")


def object_name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


# --- apply --------------------------------------------------------------------------------------


def apply_document(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the planner's `apply` takes it: Argo's apiVersion (whatever group it was served
    under), the user's metadata only (no resourceVersion, uid, managedFields...), the spec, no status."""
    meta = obj.get("metadata") or {}
    kept: dict[str, Any] = {"name": meta.get("name")}
    if kind != CLUSTER_ANALYSIS_TEMPLATE and meta.get("namespace"):
        kept["namespace"] = meta["namespace"]
    if meta.get("labels"):
        kept["labels"] = dict(meta["labels"])
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    if annotations:
        kept["annotations"] = annotations
    return {
        "apiVersion": f"{ARGO_GROUP}/{ARGO_VERSION}",
        "kind": kind,
        "metadata": kept,
        "spec": obj.get("spec"),
    }


def planner_spec(kind: str, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The object's `spec` normalised as the planner stores it (None when the planner would reject
    it): equal to the planner state's spec exactly when the planner already has this version."""
    try:
        docs = load_documents(msgspec.json.encode(apply_document(kind, obj)))
    except SpecError:
        return None
    for d in docs:
        if isinstance(d, (Rollout, AnalysisTemplate, ClusterAnalysisTemplate)):
            spec = to_builtins(d).get("spec")
            return spec if isinstance(spec, dict) else None
    return None


def _apply(kind: str, obj: dict[str, Any], meta: _Meta, reason: str) -> BridgeCommand:
    return BridgeCommand(
        namespace=subject_namespace(kind, obj),
        name=meta.name,
        verb="apply",
        payload=msgspec.json.encode(apply_document(kind, obj)),
        msg_id=msg_id(meta.uid, meta.resource_version, "apply"),
        reason=reason,
    )


# --- the translation ----------------------------------------------------------------------------


def commands(
    kind: str, prev: dict[str, Any] | None, new: dict[str, Any], *, own_write: bool = False
) -> list[BridgeCommand]:
    """The commands that turn the planner's view of the object from `prev` into `new`.

    `prev` is None for an object seen for the first time (created, or listed at start): it is applied.
    `own_write` marks a version the bridge wrote itself (its status patches): it asks for nothing.
    """
    if kind not in KINDS:
        raise TranslateError(f"kind {kind!r} is not one the planner takes (one of {', '.join(KINDS)})")
    now = _view(new, kind)
    meta = now.metadata
    if not meta.name:
        raise TranslateError(f"{kind}: metadata.name is missing")
    if prev is None:
        return [_apply(kind, new, meta, f"{kind} {meta.name} seen")]
    before = _view(prev, kind)
    out: list[BridgeCommand] = []
    if meta.generation != before.metadata.generation:
        out.append(
            _apply(kind, new, meta, f"metadata.generation {before.metadata.generation} -> {meta.generation}")
        )
    if kind != ROLLOUT or own_write:
        return out
    spec, old_spec = now.spec or _Spec(), before.spec or _Spec()
    if spec.restart_at and spec.restart_at != old_spec.restart_at:
        out.append(_verb(new, meta, "restart", f"spec.restartAt set to {spec.restart_at}"))
    out.extend(_status_commands(new, meta, before.status or _Status(), now.status or _Status(), _steps(spec)))
    return out


def _steps(spec: _Spec) -> int | None:
    canary = spec.strategy.canary if spec.strategy else None
    return len(canary.steps or []) if canary is not None else None


def _status_commands(
    obj: dict[str, Any], meta: _Meta, old: _Status, new: _Status, steps: int | None
) -> list[BridgeCommand]:
    """Argo's CLI writes: abort `{"abort":true}`, retry `{"abort":false}`, promote --full
    `{"promoteFull":true}`, promote `{"pauseConditions":null}` when paused, else a currentStepIndex
    bump (to the end: the deprecated --skip-all-steps, a full promotion)."""
    out: list[BridgeCommand] = []
    if bool(new.abort) != bool(old.abort):
        if new.abort:
            out.append(_verb(obj, meta, "abort", "status.abort set to true"))
        else:
            out.append(_verb(obj, meta, "retry", "status.abort set to false"))
    if new.promote_full and not old.promote_full:
        out.append(_verb(obj, meta, "promote", "status.promoteFull set to true", PROMOTE_FULL_PAYLOAD))
        return out
    if old.pause_conditions and not new.pause_conditions:
        reasons = ", ".join(p.reason for p in old.pause_conditions)
        out.append(_verb(obj, meta, "promote", f"status.pauseConditions ({reasons}) cleared"))
        return out
    before, after = old.current_step_index, new.current_step_index
    if before is not None and after is not None and after > before:
        why = f"status.currentStepIndex {before} -> {after}"
        if steps is not None and after >= steps and after - before > 1:
            out.append(_verb(obj, meta, "promote", why + " (all steps skipped)", PROMOTE_FULL_PAYLOAD))
        else:
            out.append(_verb(obj, meta, "promote", why))
    return out


def _verb(obj: dict[str, Any], meta: _Meta, verb: str, reason: str, payload: bytes = b"") -> BridgeCommand:
    return BridgeCommand(
        namespace=subject_namespace(ROLLOUT, obj),
        name=meta.name,
        verb=verb,
        payload=payload,
        msg_id=msg_id(meta.uid, meta.resource_version, verb),
        reason=reason,
    )


def command_fields(status: dict[str, Any] | None) -> tuple[bool, bool, tuple[str, ...], int | None]:
    """The status fields Argo's CLI writes, normalised (absent = false/empty): equal for two statuses
    exactly when no CLI write happened between them."""
    try:
        s = msgspec.convert(status or {}, _Status)
    except msgspec.ValidationError:
        return (False, False, ("<unreadable>",), None)
    return (
        bool(s.abort),
        bool(s.promote_full),
        tuple(p.reason for p in s.pause_conditions or ()),
        s.current_step_index,
    )
