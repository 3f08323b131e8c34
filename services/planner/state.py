"""The planner's data: the compiled plan of a Rollout, its persisted state, and decide()'s inputs and outputs."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.messages import (
    AnalysisStart,
    ArgValue,
    RolloutEvent,
    ScaleDesired,
    TemplateRef,
    TrafficDesired,
    WeightedDestination,
)
from shared.routes import HeaderRoute, MirrorRoute


class _S(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel", frozen=True):
    pass


class _Mutable(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    pass


# --- the plan: what a Rollout spec means to the planner ------------------------------------


class SetWeightStep(_S, frozen=True, tag="setWeight", tag_field="kind"):
    weight: int


class PauseStep(_S, frozen=True, tag="pause", tag_field="kind"):
    seconds: float | None = None  # None: indefinite, until promote


class AnalysisStep(_S, frozen=True, tag="analysis", tag_field="kind"):
    templates: tuple[TemplateRef, ...]
    args: tuple[ArgValue, ...] = ()
    dry_run: tuple[str, ...] = ()
    retention: dict[str, int] = {}


class CanaryScaleStep(_S, frozen=True, tag="setCanaryScale", tag_field="kind"):
    """setCanaryScale: a fixed replica count, a weight's worth of replicas, or (both None) back to
    matching the traffic weight."""

    replicas: int | None = None
    weight: int | None = None


class HeaderRouteStep(_S, frozen=True, tag="setHeaderRoute", tag_field="kind"):
    """setHeaderRoute: add or replace a managed header route (an empty match removes it)."""

    route: HeaderRoute


class MirrorRouteStep(_S, frozen=True, tag="setMirrorRoute", tag_field="kind"):
    """setMirrorRoute: add or replace a managed mirror route (an empty match removes it)."""

    route: MirrorRoute


class ExperimentTemplate(_S, frozen=True):
    name: str
    spec_ref: str  # "stable" | "canary"
    replicas: int = 1
    weight: int = 0  # share of traffic routed to this replica set while the experiment runs


class ExperimentAnalysis(_S, frozen=True):
    name: str
    templates: tuple[TemplateRef, ...]
    args: tuple[ArgValue, ...] = ()
    required_for_completion: bool = False


class ExperimentStep(_S, frozen=True, tag="experiment", tag_field="kind"):
    """Baseline and canary replica sets side by side for a while, with their analyses."""

    templates: tuple[ExperimentTemplate, ...]
    analyses: tuple[ExperimentAnalysis, ...] = ()
    seconds: float | None = None  # duration; None: until the required analyses complete
    dry_run: tuple[str, ...] = ()


Step = (
    SetWeightStep
    | PauseStep
    | AnalysisStep
    | CanaryScaleStep
    | HeaderRouteStep
    | MirrorRouteStep
    | ExperimentStep
)


class Plan(_S, frozen=True):
    """Everything decide() needs from a Rollout spec, already validated and normalised."""

    replicas: int
    steps: tuple[Step, ...]
    template: dict[str, Any]
    template_hash: str
    steps_hash: str = ""  # Argo's currentStepHash of strategy.canary.steps ("" without steps)
    images: tuple[str, ...] = ()
    port: int | None = None
    paused: bool = False
    stable_service: str | None = None
    canary_service: str | None = None
    routing: dict[str, Any] | None = None
    max_traffic_weight: int = 100
    scale_down_delay_seconds: float = 30.0
    abort_scale_down_delay_seconds: float = 30.0  # 0 = never scale the aborted canary down
    scale_down_delay_revision_limit: int | None = None  # old revisions waiting out the delay at once
    revision_history_limit: int = 10
    background: AnalysisStep | None = None  # strategy.canary.analysis
    min_pods_per_replica_set: int = 1
    dynamic_stable_scale: bool = False
    # basic canary (no trafficRouting): maxSurge and maxUnavailable as pod counts (Argo's defaults 25%)
    max_surge: int = 1
    max_unavailable: int = 0
    rollback_window: int = 0  # revisions back within which a rollback skips the steps
    progress_deadline_seconds: float = 600.0
    progress_deadline_abort: bool = False
    # blue-green (strategy.blueGreen); stable_service plays the active service
    strategy: str = "canary"  # "canary" | "blueGreen"
    preview_service: str | None = None
    preview_port: int | None = None
    preview_replica_count: int | None = None
    auto_promotion_enabled: bool = True
    auto_promotion_seconds: float | None = None
    pre_promotion: AnalysisStep | None = None
    post_promotion: AnalysisStep | None = None
    background_starting_step: int = 0


# --- persisted state ---------------------------------------------------------------------


class PauseCondition(_S, frozen=True):
    reason: str  # CanaryPauseStep | InconclusiveAnalysisRun
    start_time: float


class Revision(_S, frozen=True):
    number: int
    hash: str
    images: tuple[str, ...] = ()


class AnalysisProgress(_S, frozen=True):
    run_id: str
    step_index: int
    metrics: tuple[str, ...] = ()  # empty until the analyzer reports the run started
    dry_run: tuple[str, ...] = ()
    metric_phases: dict[str, str] = {}
    phase: str = "Pending"
    message: str = ""
    measurements: int = 0
    metric_counts: dict[str, int] = {}  # measurements seen per metric, to drop duplicates
    acknowledged: bool = False  # an Inconclusive background run already paused the rollout once


class ExperimentProgress(_S, frozen=True):
    step_index: int
    sets: dict[str, int] = {}  # replica-set key ("<hash>-<template name>") -> replicas
    # weighted templates: replica-set key -> (template name, share of traffic), routed once ready
    weights: dict[str, tuple[str, int]] = {}
    routed: bool = False  # the weights were sent to the router (taken back when it ends)
    started: bool = False  # every set ready and the analyses started
    ends_at: float | None = None
    runs: dict[str, AnalysisProgress] = {}


class PendingScaleDown(_S, frozen=True):
    revision: str
    at: float


class RolloutState(_Mutable):
    """One rollout as the planner keeps it in the KV bucket (one key per rollout)."""

    namespace: str
    name: str
    plan: Plan
    spec: dict[str, Any]  # the applied Rollout document, for `get -o json`
    uid: str = ""  # set at creation (from the creating message's time); part of every Nats-Msg-Id
    generation: int = 1
    revision: int = 1  # the current revision's number
    current_hash: str = ""
    stable_hash: str = ""
    revisions: tuple[Revision, ...] = ()
    templates: dict[str, dict[str, Any]] = {}  # pod template per live revision hash
    step_index: int = 0
    set_weight: int = 0  # desired share of traffic on the current revision
    actual_weight: int = 0  # share the traffic-shifter confirmed
    traffic_generation: int = 0
    traffic_confirmed: int = 0  # last generation the shifter confirmed
    desired_canary_weight: int = 0  # what the router was last told for the canary
    routed_stable: str = ""  # revisions the router was last told about
    routed_canary: str | None = None
    routed_preview: str | None = None
    confirmed_stable: str = ""  # revisions the router confirmed sending traffic to
    confirmed_canary: str | None = None
    confirmed_additional: tuple[str, ...] = ()  # experiment sets the router confirmed routing to
    header_routes: tuple[HeaderRoute, ...] = ()  # managed routes in force for the canary
    mirror_routes: tuple[MirrorRoute, ...] = ()
    routed_header_routes: tuple[HeaderRoute, ...] = ()  # as last sent to the router
    routed_mirror_routes: tuple[MirrorRoute, ...] = ()
    routed_additional: tuple[WeightedDestination, ...] = ()  # experiment sets, as last sent
    experiment: ExperimentProgress | None = None
    restart_at: float | None = None  # `restart`: replicas created before this are replaced
    canary_scale: CanaryScaleStep | None = None  # the last setCanaryScale in force (None: match weight)
    stable_scale: int | None = None  # dynamicStableScale: the stable's current size (None: full)
    selected: dict[str, str] = {}  # Service -> revision its selector was last told (Kubernetes mode)
    bg_active: str = ""  # blue-green: the revision the active service points at ("" = the stable one)
    bg_pre_done: bool = False  # blue-green: pre-promotion analysis passed
    bg_pause_done: bool = False  # blue-green: the pause before promotion is over
    bg_promoting: bool = False  # blue-green: promotion under way (new revision scaled to full size)
    waiting_since: float | None = None  # since when the rollout waits on replicas or traffic
    deadline_exceeded: bool = False
    last_error: str = ""  # the last error reported by a service, so a redelivery is not re-reported
    scale_generation: int = 0
    replicas: dict[str, int] = {}  # desired replicas per revision hash
    ready: dict[str, int] = {}  # ready replicas per revision hash, as last observed
    scale_observed: int = 0
    abort: bool = False
    aborted_at: float | None = None
    abort_message: str = ""
    abort_scale_down_at: float | None = None  # -1: never (abortScaleDownDelaySeconds 0)
    paused: bool = False  # user pause (spec.paused or the pause command)
    pause_conditions: tuple[PauseCondition, ...] = ()
    pause_until: float | None = None
    analysis: AnalysisProgress | None = None  # the current step's analysis run
    background: AnalysisProgress | None = None  # the background analysis run (step_index -1)
    analysis_counter: int = 0
    scale_downs: tuple[PendingScaleDown, ...] = ()
    promote_full: bool = False
    phase: str = "Progressing"
    message: str = ""
    event_seq: int = 0
    updated_at: float = 0.0
    deleted: bool = False  # a tombstone: its last outputs are published, then the key is removed
    # The outputs of the decision that produced this state, stored with it and published after the
    # write: a planner that dies in between has its successor publish them (Nats-Msg-Id dedupes).
    outbox: tuple[Outbound, ...] = ()


# --- decide() inputs ---------------------------------------------------------------------


class Apply(_S, frozen=True, tag="apply", tag_field="type"):
    plan: Plan
    spec: dict[str, Any]


class Promote(_S, frozen=True, tag="promote", tag_field="type"):
    full: bool = False


class Abort(_S, frozen=True, tag="abort", tag_field="type"):
    pass


class Retry(_S, frozen=True, tag="retry", tag_field="type"):
    pass


class Pause(_S, frozen=True, tag="pause", tag_field="type"):
    pass


class Resume(_S, frozen=True, tag="resume", tag_field="type"):
    pass


class Tick(_S, frozen=True, tag="tick", tag_field="type"):
    pass


class Delete(_S, frozen=True, tag="delete", tag_field="type"):
    pass


class Restart(_S, frozen=True, tag="restart", tag_field="type"):
    pass


class TrafficApplied(_S, frozen=True, tag="trafficApplied", tag_field="type"):
    generation: int
    canary_weight: int
    error: str | None = None


class ScaleReported(_S, frozen=True, tag="scaleReported", tag_field="type"):
    generation: int
    ready: dict[str, int]
    error: str | None = None


class AnalysisStarted(_S, frozen=True, tag="analysisStarted", tag_field="type"):
    run_id: str
    metrics: tuple[str, ...]
    dry_run: tuple[str, ...] = ()


class AnalysisMeasured(_S, frozen=True, tag="analysisMeasured", tag_field="type"):
    run_id: str
    metric: str
    index: int
    phase: str
    metric_phase: str
    value: Any = None
    message: str = ""
    metric_message: str = ""  # why the metric reached its phase (e.g. failed (1) > failureLimit (0))


class AnalysisErrored(_S, frozen=True, tag="analysisErrored", tag_field="type"):
    run_id: str
    message: str


Input = (
    Apply
    | Promote
    | Abort
    | Retry
    | Pause
    | Resume
    | Tick
    | Restart
    | Delete
    | TrafficApplied
    | ScaleReported
    | AnalysisStarted
    | AnalysisMeasured
    | AnalysisErrored
)

# --- decide() outputs --------------------------------------------------------------------


class PublishTraffic(_S, frozen=True, tag="publishTraffic", tag_field="type"):
    desired: TrafficDesired


class PublishScale(_S, frozen=True, tag="publishScale", tag_field="type"):
    desired: ScaleDesired


# Starting a run: the command is the work-queue message itself (published as it is).
StartAnalysis = AnalysisStart


class StopAnalysis(_S, frozen=True, tag="stopAnalysis", tag_field="type"):
    run_id: str


class Emit(_S, frozen=True, tag="emit", tag_field="type"):
    event: RolloutEvent


class Reject(_S, frozen=True, tag="reject", tag_field="type"):
    """The input was refused (e.g. retry of a rollout that is not aborted); state is unchanged."""

    message: str


Outbound = PublishTraffic | PublishScale | StartAnalysis | StopAnalysis | Emit
Command = PublishTraffic | PublishScale | StartAnalysis | StopAnalysis | Emit | Reject
