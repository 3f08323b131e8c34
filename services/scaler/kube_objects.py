"""The Kubernetes objects the scaler reads and writes, as Argo Rollouts shapes them: pure builders and
decisions (ReplicaSets per revision, their scale, Service selectors, pod restarts), no I/O.

Argo sources followed: rollout/sync.go (createDesiredReplicaSet, scaleReplicaSet, revision history),
rollout/service.go (ensureSVCTargets, switchServiceSelector), rollout/restart.go, utils/annotations,
utils/replicaset (IsReplicaSetAvailable, MaxUnavailable).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final, Literal

import msgspec

from shared.messages import ReplicaSetDesired, ScaleDesired

# Argo's names (pkg/apis/rollouts/v1alpha1 and utils/annotations).
POD_TEMPLATE_HASH_LABEL: Final = "rollouts-pod-template-hash"
REVISION_ANNOTATION: Final = "rollout.argoproj.io/revision"
REVISION_HISTORY_ANNOTATION: Final = "rollout.argoproj.io/revision-history"
DESIRED_REPLICAS_ANNOTATION: Final = "rollout.argoproj.io/desired-replicas"
MANAGED_BY_ANNOTATION: Final = "argo-rollouts.argoproj.io/managed-by-rollouts"
LAST_APPLIED_ANNOTATION: Final = "kubectl.kubernetes.io/last-applied-configuration"
DEFAULT_REVISION_HISTORY_LIMIT: Final = 10  # Argo's default revisionHistoryLimit
DEFAULT_ROLLOUT_GROUP: Final = "argoproj.io"
ROLLOUT_VERSION: Final = "v1alpha1"

# Rollout annotations that are not copied onto its ReplicaSets (Argo's annotationsToSkip).
_SKIPPED_ANNOTATIONS: Final = frozenset(
    {LAST_APPLIED_ANNOTATION, REVISION_ANNOTATION, REVISION_HISTORY_ANNOTATION, DESIRED_REPLICAS_ANNOTATION}
)

ServiceRole = Literal["canary", "stable", "active", "preview"]


class KubeObjectError(ValueError):
    """A Kubernetes object does not have the shape the scaler needs; names the object and field."""


# --- lenient wire structs: what the scaler reads back (unknown fields tolerated) ---------------------


class _Wire(msgspec.Struct, kw_only=True, rename="camel"):
    pass


class OwnerRef(_Wire):
    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None


class Meta(_Wire):
    name: str = ""
    namespace: str | None = None
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[OwnerRef] | None = None


class _RSSpec(_Wire):
    replicas: int | None = None


class _RSStatus(_Wire):
    replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    observed_generation: int = 0


class ReplicaSetObject(_Wire):
    metadata: Meta = msgspec.field(default_factory=Meta)
    spec: _RSSpec = msgspec.field(default_factory=_RSSpec)
    status: _RSStatus = msgspec.field(default_factory=_RSStatus)


class _Canary(_Wire):
    canary_service: str | None = None
    stable_service: str | None = None
    max_surge: int | str | None = None
    max_unavailable: int | str | None = None


class _BlueGreen(_Wire):
    active_service: str | None = None
    preview_service: str | None = None


class _Strategy(_Wire):
    canary: _Canary | None = None
    blue_green: _BlueGreen | None = None


class _RolloutSpec(_Wire):
    replicas: int | None = None
    selector: dict[str, Any] | None = None
    min_ready_seconds: int | None = None
    revision_history_limit: int | None = None
    strategy: _Strategy = msgspec.field(default_factory=_Strategy)


class RolloutObject(_Wire):
    api_version: str = ""
    metadata: Meta = msgspec.field(default_factory=Meta)
    spec: _RolloutSpec = msgspec.field(default_factory=_RolloutSpec)


class _Condition(_Wire):
    type: str = ""
    status: str = ""
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None


class _PodStatus(_Wire):
    conditions: list[_Condition] | None = None


class PodObject(_Wire):
    metadata: Meta = msgspec.field(default_factory=Meta)
    status: _PodStatus = msgspec.field(default_factory=_PodStatus)


class _ServiceSpec(_Wire):
    selector: dict[str, str] | None = None


class ServiceObject(_Wire):
    metadata: Meta = msgspec.field(default_factory=Meta)
    spec: _ServiceSpec = msgspec.field(default_factory=_ServiceSpec)


# --- views: the decision-relevant facts of each object ---------------------------------------------


class RolloutInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the scaler takes from the Rollout object when it exists in the cluster."""

    api_version: str
    name: str
    uid: str
    replicas: int = 1
    selector: dict[str, Any] | None = None
    annotations: dict[str, str] = {}
    min_ready_seconds: int = 0
    revision_history_limit: int = DEFAULT_REVISION_HISTORY_LIMIT
    strategy: Literal["canary", "blueGreen"] | None = None
    max_surge: int | str | None = None
    max_unavailable: int | str | None = None
    services: dict[str, ServiceRole] = {}  # Service name -> its role in the strategy


class ReplicaSetView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    namespace: str
    uid: str
    rollout: str
    revision: str  # the pod-template-hash
    spec_replicas: int
    replicas: int
    ready: int
    available: int
    generation: int
    observed_generation: int
    created_at: float
    resource_version: str = ""
    deleting: bool = False
    revision_number: int | None = None
    desired_replicas: int | None = None  # the desired-replicas annotation


class PodView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    owner_uids: tuple[str, ...]
    created_at: float
    ready_since: float | None  # when the Ready condition last became True; None while not ready
    deleting: bool


def parse_time(value: str | None) -> float:
    """An RFC 3339 timestamp as the API server writes it, in epoch seconds (0.0 when absent)."""
    if not value:
        return 0.0
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise KubeObjectError(f"timestamp {value!r} is not RFC 3339") from None


def _int_annotation(annotations: Mapping[str, str], key: str) -> int | None:
    try:
        return int(annotations[key])
    except (KeyError, ValueError):
        return None


def replica_set_name(rollout: str, revision: str) -> str:
    """`<rollout>-<pod-template-hash>`, as Argo names a revision's ReplicaSet."""
    return f"{rollout}-{revision}"


def replica_set_view(obj: ReplicaSetObject) -> ReplicaSetView | None:
    """The view of one of our ReplicaSets; None for a ReplicaSet no rollout of ours owns."""
    meta = obj.metadata
    labels = meta.labels or {}
    revision = labels.get(POD_TEMPLATE_HASH_LABEL)
    if not revision:
        return None
    rollout = next(
        (o.name for o in meta.owner_references or [] if o.kind == "Rollout" and o.controller), None
    )
    if rollout is None:
        suffix = f"-{revision}"
        if not meta.name.endswith(suffix) or len(meta.name) == len(suffix):
            return None
        rollout = meta.name[: -len(suffix)]
    annotations = meta.annotations or {}
    spec_replicas = obj.spec.replicas if obj.spec.replicas is not None else 1
    return ReplicaSetView(
        name=meta.name,
        namespace=meta.namespace or "",
        uid=meta.uid,
        rollout=rollout,
        revision=revision,
        spec_replicas=spec_replicas,
        replicas=obj.status.replicas,
        ready=obj.status.ready_replicas,
        available=obj.status.available_replicas,
        generation=meta.generation,
        observed_generation=obj.status.observed_generation,
        created_at=parse_time(meta.creation_timestamp),
        resource_version=meta.resource_version,
        deleting=meta.deletion_timestamp is not None,
        revision_number=_int_annotation(annotations, REVISION_ANNOTATION),
        desired_replicas=_int_annotation(annotations, DESIRED_REPLICAS_ANNOTATION),
    )


def ready_count(view: ReplicaSetView) -> int:
    """Replicas of the revision that serve: available ones, never more than the ReplicaSet now wants."""
    return max(0, min(view.available, view.spec_replicas))


def rollout_info(obj: RolloutObject) -> RolloutInfo:
    spec = obj.spec
    strategy: Literal["canary", "blueGreen"] | None = None
    roles: tuple[tuple[str | None, ServiceRole], ...] = ()
    canary, blue_green = spec.strategy.canary, spec.strategy.blue_green
    if canary is not None:
        strategy = "canary"
        roles = ((canary.canary_service, "canary"), (canary.stable_service, "stable"))
    elif blue_green is not None:
        strategy = "blueGreen"
        roles = ((blue_green.active_service, "active"), (blue_green.preview_service, "preview"))
    services: dict[str, ServiceRole] = {name: role for name, role in roles if name}
    return RolloutInfo(
        api_version=obj.api_version,
        name=obj.metadata.name,
        uid=obj.metadata.uid,
        replicas=spec.replicas if spec.replicas is not None else 1,
        selector=spec.selector,
        annotations=dict(obj.metadata.annotations or {}),
        min_ready_seconds=spec.min_ready_seconds or 0,
        revision_history_limit=(
            spec.revision_history_limit
            if spec.revision_history_limit is not None
            else DEFAULT_REVISION_HISTORY_LIMIT
        ),
        strategy=strategy,
        max_surge=canary.max_surge if canary else None,
        max_unavailable=canary.max_unavailable if canary else None,
        services=services,
    )


def pod_view(obj: PodObject) -> PodView:
    ready_since: float | None = None
    for c in obj.status.conditions or []:
        if c.type == "Ready" and c.status == "True":
            ready_since = parse_time(c.last_transition_time) or parse_time(obj.metadata.creation_timestamp)
    return PodView(
        name=obj.metadata.name,
        owner_uids=tuple(o.uid for o in obj.metadata.owner_references or []),
        created_at=parse_time(obj.metadata.creation_timestamp),
        ready_since=ready_since,
        deleting=obj.metadata.deletion_timestamp is not None,
    )


# --- ReplicaSets: create, scale, keep as history ---------------------------------------------------


def desired_replicas(desired: ScaleDesired, rollout: RolloutInfo | None) -> int:
    """The desired-replicas annotation: the Rollout's spec.replicas (without a Rollout object in the
    cluster, the largest desired set, which the planner keeps at the rollout's full size)."""
    if rollout is not None:
        return rollout.replicas
    return max((s.replicas for s in desired.sets), default=0)


def _selector(
    template_labels: Mapping[str, str], rollout: RolloutInfo | None, revision: str
) -> dict[str, Any]:
    """The Rollout's selector plus the hash (Argo's CloneSelectorAndAddLabel); without a Rollout object
    the pod template's labels stand in for it."""
    if rollout is not None and rollout.selector:
        selector = copy.deepcopy(rollout.selector)
    else:
        selector = {"matchLabels": dict(template_labels)}
    match_labels = dict(selector.get("matchLabels") or {})
    match_labels[POD_TEMPLATE_HASH_LABEL] = revision
    selector["matchLabels"] = match_labels
    return selector


def build_replica_set(
    *,
    namespace: str,
    rollout_name: str,
    want: ReplicaSetDesired,
    revision_number: int,
    desired_replicas: int,
    rollout: RolloutInfo | None,
) -> dict[str, Any]:
    """A new revision's ReplicaSet, created at 0 replicas as Argo's createDesiredReplicaSet does."""
    template = copy.deepcopy(want.template)
    if not isinstance(template, dict):
        raise KubeObjectError(f"revision {want.revision}: the pod template is not an object")
    template_meta = template.setdefault("metadata", {})
    if not isinstance(template_meta, dict):
        raise KubeObjectError(f"revision {want.revision}: spec.template.metadata is not an object")
    labels = {str(k): str(v) for k, v in (template_meta.get("labels") or {}).items()}
    selector = _selector(labels, rollout, want.revision)
    labels[POD_TEMPLATE_HASH_LABEL] = want.revision
    template_meta["labels"] = labels
    annotations = {
        k: v for k, v in (rollout.annotations if rollout else {}).items() if k not in _SKIPPED_ANNOTATIONS
    }
    annotations[REVISION_ANNOTATION] = str(revision_number)
    annotations[DESIRED_REPLICAS_ANNOTATION] = str(desired_replicas)
    metadata: dict[str, Any] = {
        "name": replica_set_name(rollout_name, want.revision),
        "namespace": namespace,
        "labels": dict(labels),
        "annotations": annotations,
    }
    if rollout is not None:
        metadata["ownerReferences"] = [owner_reference(rollout)]
    spec: dict[str, Any] = {"replicas": 0, "selector": selector, "template": template}
    if rollout is not None and rollout.min_ready_seconds:
        spec["minReadySeconds"] = rollout.min_ready_seconds
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": metadata, "spec": spec}


def owner_reference(rollout: RolloutInfo) -> dict[str, Any]:
    """metav1.NewControllerRef(rollout, Rollout kind)."""
    return {
        "apiVersion": rollout.api_version,
        "kind": "Rollout",
        "name": rollout.name,
        "uid": rollout.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def scale_patch(replicas: int, desired_replicas: int) -> dict[str, Any]:
    """A JSON merge patch that sizes a ReplicaSet and records the rollout's size (Argo's scaleReplicaSet)."""
    return {
        "metadata": {"annotations": {DESIRED_REPLICAS_ANNOTATION: str(desired_replicas)}},
        "spec": {"replicas": replicas},
    }


class ScaleChange(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    revision: str
    replicas: int
    patch: dict[str, Any]


class ReplicaSetPlan(msgspec.Struct, frozen=True, kw_only=True):
    creates: tuple[dict[str, Any], ...] = ()  # new ReplicaSets, at 0 replicas
    ups: tuple[ScaleChange, ...] = ()  # scale-ups (and size-neutral annotation updates)
    downs: tuple[ScaleChange, ...] = ()
    deletes: tuple[str, ...] = ()  # ReplicaSets beyond the revision history limit
    held: tuple[str, ...] = ()  # revisions left up because a Service still selects them


def plan_replica_sets(
    desired: ScaleDesired,
    existing: Mapping[str, ReplicaSetView],
    rollout: RolloutInfo | None,
    *,
    selected: Iterable[str] = (),
) -> ReplicaSetPlan:
    """What to create, scale and delete so that every revision of `desired` has its size; revisions
    absent from it go to 0 (kept as history, the oldest beyond the limit deleted), unless a Service
    still selects them (Argo's isReplicaSetReferenced)."""
    size = desired_replicas(desired, rollout)
    selected = frozenset(selected)
    next_number = max((v.revision_number or 0 for v in existing.values()), default=0) + 1
    creates: list[dict[str, Any]] = []
    ups: list[ScaleChange] = []
    downs: list[ScaleChange] = []
    for want in desired.sets:
        if want.replicas < 0:
            raise KubeObjectError(f"revision {want.revision}: replicas {want.replicas} is negative")
        view = existing.get(want.revision)
        name = replica_set_name(desired.name, want.revision)
        if view is None:
            creates.append(
                build_replica_set(
                    namespace=desired.namespace,
                    rollout_name=desired.name,
                    want=want,
                    revision_number=next_number,
                    desired_replicas=size,
                    rollout=rollout,
                )
            )
            next_number += 1
            current = 0
        else:
            current = view.spec_replicas
            if current == want.replicas and view.desired_replicas == size:
                continue
        if view is None and want.replicas == 0:
            continue
        change = ScaleChange(
            name=name, revision=want.revision, replicas=want.replicas, patch=scale_patch(want.replicas, size)
        )
        (ups if want.replicas >= current else downs).append(change)
    wanted = {s.revision for s in desired.sets}
    held: list[str] = []
    for revision, view in sorted(existing.items()):
        if revision in wanted or view.spec_replicas == 0 or view.deleting:
            continue
        if revision in selected:
            held.append(revision)
            continue
        downs.append(ScaleChange(name=view.name, revision=revision, replicas=0, patch=scale_patch(0, size)))
    old = [v for r, v in existing.items() if r not in wanted]
    limit = rollout.revision_history_limit if rollout else DEFAULT_REVISION_HISTORY_LIMIT
    return ReplicaSetPlan(
        creates=tuple(creates),
        ups=tuple(ups),
        downs=tuple(downs),
        deletes=tuple(history_to_prune(old, limit)),
        held=tuple(held),
    )


def history_to_prune(old: Iterable[ReplicaSetView], limit: int) -> list[str]:
    """Old ReplicaSets beyond the history limit, oldest first; only those fully scaled down and observed
    so (Argo's reconcileRevisionHistoryLimit)."""
    alive = sorted((v for v in old if not v.deleting), key=lambda v: (v.created_at, v.name))
    excess = len(alive) - max(limit, 0)
    out: list[str] = []
    for view in alive[: max(excess, 0)]:
        if view.replicas != 0 or view.spec_replicas != 0 or view.generation > view.observed_generation:
            continue
        out.append(view.name)
    return out


# --- Services: point each at one revision once that revision can serve -----------------------------


def is_available(view: ReplicaSetView | None, wanted: int | None) -> bool:
    """Argo's IsReplicaSetAvailable, against the size the planner asked for (the ReplicaSet's own spec
    may not show our latest scale yet)."""
    if view is None or not wanted:
        return False
    need = max(wanted, view.spec_replicas)
    return need > 0 and view.available > 0 and view.available >= need


def may_select(role: ServiceRole | None, view: ReplicaSetView | None, wanted: int | None) -> bool:
    """Whether a Service may now select this revision: a preview Service follows the new revision at
    once (Argo's reconcilePreviewService); every other one waits until it is fully available
    (ensureSVCTargets, and the active service's saturation check)."""
    if role == "preview":
        return view is not None
    return is_available(view, wanted)


def service_patch(service: ServiceObject, revision: str, rollout_name: str) -> dict[str, Any] | None:
    """The strategic merge patch switching a Service's selector to `revision` (Argo's generatePatch);
    None when it already selects it and carries the managed-by annotation."""
    current = (service.spec.selector or {}).get(POD_TEMPLATE_HASH_LABEL)
    managed = MANAGED_BY_ANNOTATION in (service.metadata.annotations or {})
    if current == revision and managed:
        return None
    patch: dict[str, Any] = {"spec": {"selector": {POD_TEMPLATE_HASH_LABEL: revision}}}
    if not managed:
        patch["metadata"] = {"annotations": {MANAGED_BY_ANNOTATION: rollout_name}}
    return patch


def selected_revision(service: ServiceObject) -> str | None:
    return (service.spec.selector or {}).get(POD_TEMPLATE_HASH_LABEL)


# --- restarts: replace pods created before restartAt, a few at a time --------------------------------


def scaled_value(value: int | str | None, total: int, *, round_up: bool, default: str) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    v: int | str = default if value is None else value
    if isinstance(v, int):
        return v
    text = v.strip()
    if text.endswith("%"):
        try:
            percent = int(text[:-1])
        except ValueError:
            raise KubeObjectError(f"invalid percentage {v!r}") from None
        scaled = percent * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    try:
        return int(text)
    except ValueError:
        raise KubeObjectError(f"invalid int-or-percent {v!r}") from None


def max_unavailable(rollout: RolloutInfo | None, replicas: int) -> int:
    """Argo's replicasetutil.MaxUnavailable: 0 for blue-green; else maxUnavailable (default 25%, rounded
    down) of the rollout's replicas, 1 when both it and maxSurge (25%, rounded up) come to 0."""
    if replicas == 0 or (rollout is not None and rollout.strategy == "blueGreen"):
        return 0
    surge_value = rollout.max_surge if rollout else None
    unavailable_value = rollout.max_unavailable if rollout else None
    surge = scaled_value(surge_value, replicas, round_up=True, default="25%")
    unavailable = scaled_value(unavailable_value, replicas, round_up=False, default="25%")
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return min(unavailable, replicas)


def is_pod_available(pod: PodView, min_ready_seconds: int, now: float) -> bool:
    if pod.deleting or pod.ready_since is None:
        return False
    return min_ready_seconds == 0 or pod.ready_since + min_ready_seconds <= now


class RestartPlan(msgspec.Struct, frozen=True, kw_only=True):
    delete: tuple[str, ...] = ()
    remaining: int = 0  # pods still created before restartAt, these deletions included


def plan_restart(
    pods: Iterable[PodView],
    restart_at: float,
    *,
    replicas: int,
    total_replicas: int,
    max_unavailable: int,
    min_ready_seconds: int,
    now: float,
) -> RestartPlan:
    """Pods to delete now (Argo's RolloutPodRestarter): at most max(maxUnavailable, 1) missing from the
    larger of the rollout's and the ReplicaSets' sizes at any time; pods already terminating count."""
    pods = list(pods)
    available = sum(1 for p in pods if is_pod_available(p, min_ready_seconds, now))
    concurrent = max(max_unavailable, 1)
    can_restart = available - (max(replicas, total_replicas) - concurrent)
    delete: list[str] = []
    remaining = 0
    for pod in sorted(pods, key=lambda p: (p.created_at, p.name)):
        if pod.created_at >= restart_at:
            continue
        remaining += 1
        if can_restart <= 0 or pod.deleting:
            continue
        delete.append(pod.name)
        can_restart -= 1
    return RestartPlan(delete=tuple(delete), remaining=remaining)
