"""Messages between the four services, one Struct per message, one tagged union per subject family.

Inter-service messages tolerate unknown fields (msgspec's default) so that a rolling upgrade
of one service never breaks another; user specs are the strict ones (shared.specs).
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.routes import HeaderRoute, MirrorRoute


class _Msg(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel", frozen=True):
    pass


# --- desired state (planner -> traffic-shifter / scaler), last value per rollout ----------


class WeightedDestination(_Msg, frozen=True):
    """An extra destination of a rollout's traffic (Argo's additionalDestinations): an experiment's
    replica set taking `weight` percent while the experiment runs."""

    revision: str  # the replica set's key, as in ScaleDesired / Endpoints ("<hash>-<template name>")
    weight: int
    name: str = ""  # the experiment template's name


class TrafficDesired(_Msg, frozen=True):
    """Where a rollout's traffic should go; the shifter confirms `generation` once applied."""

    namespace: str
    name: str
    generation: int
    stable_revision: str | None
    uid: str = ""  # the rollout's incarnation: generations count anew after a delete and re-create
    canary_revision: str | None = None
    canary_weight: int = 0
    port: int | None = None  # local mode: where the built-in proxy serves the rollout
    stable_service: str | None = None
    canary_service: str | None = None
    routing: dict[str, Any] | None = None  # the spec's trafficRouting, for router providers
    # blue-green: the preview service's revision, served (local mode) on preview_port
    preview_revision: str | None = None
    preview_port: int | None = None
    preview_service: str | None = None
    # Argo's managed routes (setHeaderRoute / setMirrorRoute steps in effect), in managedRoutes order.
    header_routes: tuple[HeaderRoute, ...] = ()
    mirror_routes: tuple[MirrorRoute, ...] = ()
    # Experiment replica sets with a weight; the stable revision gets 100 - canary_weight - their sum.
    additional: tuple[WeightedDestination, ...] = ()


class ReplicaSetDesired(_Msg, frozen=True):
    revision: str
    replicas: int
    template: dict[str, Any]  # the PodTemplateSpec, as builtins
    restart_at: float | None = None  # replicas created before this time are replaced, a few at a time


class ServiceSelector(_Msg, frozen=True):
    """Point a Service at one revision's pods (Kubernetes: `rollouts-pod-template-hash` selector)."""

    service: str
    revision: str


class ScaleDesired(_Msg, frozen=True):
    namespace: str
    name: str
    generation: int
    sets: tuple[ReplicaSetDesired, ...] = ()
    uid: str = ""  # the rollout's incarnation (see TrafficDesired.uid)
    # Kubernetes mode: canary/stable (or active/preview) Services and the revision each should select.
    services: tuple[ServiceSelector, ...] = ()


class Endpoints(_Msg, frozen=True):
    """Ready addresses per revision, published by the scaler in local mode."""

    namespace: str
    name: str
    revisions: dict[str, list[str]] = {}


# --- feedback (services -> planner) ------------------------------------------------------


class TrafficConfirmed(_Msg, frozen=True, tag="trafficConfirmed", tag_field="type"):
    namespace: str
    name: str
    generation: int
    canary_weight: int
    error: str | None = None
    uid: str = ""  # TrafficDesired.uid of what was applied


class ReplicaSetObserved(_Msg, frozen=True):
    revision: str
    desired: int
    ready: int


class ScaleObserved(_Msg, frozen=True, tag="scaleObserved", tag_field="type"):
    namespace: str
    name: str
    generation: int
    sets: tuple[ReplicaSetObserved, ...] = ()
    error: str | None = None
    uid: str = ""  # ScaleDesired.uid of what was observed


class AnalysisRunStarted(_Msg, frozen=True, tag="analysisRunStarted", tag_field="type"):
    namespace: str
    name: str
    run_id: str
    metrics: tuple[str, ...]
    dry_run: tuple[str, ...] = ()
    retention: dict[str, int] = {}  # measurements kept per metric ("*": every metric)
    templates: tuple[str, ...] = ()


class AnalysisRunErrored(_Msg, frozen=True, tag="analysisRunErrored", tag_field="type"):
    """The run could not start (missing template, bad argument): it counts as phase Error."""

    namespace: str
    name: str
    run_id: str
    message: str


class MetricTallyView(_Msg, frozen=True):
    phase: str
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    consecutive_success: int = 0
    message: str = ""


class MeasurementTaken(_Msg, frozen=True, tag="measurementTaken", tag_field="type"):
    namespace: str
    name: str
    run_id: str
    metric: str
    index: int
    phase: str
    value: Any = None
    message: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    metric_phase: str = "Running"
    tally: MetricTallyView | None = None
    worker: str = ""  # which analyzer process took it (host:pid)


Feedback = TrafficConfirmed | ScaleObserved | AnalysisRunStarted | AnalysisRunErrored | MeasurementTaken


# --- analysis work queue (planner -> analyzers, analyzers -> analyzers) --------------------


class ArgValue(_Msg, frozen=True):
    name: str
    value: str | None = None
    # Resolved by the planner when the run starts: "podTemplateHash:Stable|Latest" or "fieldRef:<path>".
    value_from: str | None = None


class TemplateRef(_Msg, frozen=True):
    template_name: str
    cluster_scope: bool = False


class AnalysisStart(_Msg, frozen=True, tag="start", tag_field="type"):
    namespace: str
    name: str
    run_id: str
    templates: tuple[TemplateRef, ...]
    args: tuple[ArgValue, ...] = ()
    dry_run: tuple[str, ...] = ()
    retention: dict[str, int] = {}
    revision: int = 0
    step_index: int | None = None


class MeasureTask(_Msg, frozen=True, tag="measure", tag_field="type"):
    """One measurement of one metric; carries the metric's running tally so no store is needed."""

    namespace: str
    name: str
    run_id: str
    metric: dict[str, Any]  # the Metric spec with {{args}} substituted, as builtins
    index: int
    due_at: float
    dry_run: bool = False
    tally: MetricTallyView | None = None
    secrets: dict[str, tuple[str, str]] = {}  # argument -> (secret name, key), filled in by the worker


AnalysisWork = AnalysisStart | MeasureTask


# --- public events -----------------------------------------------------------------------


class RolloutEvent(_Msg, frozen=True):
    """One state transition, published on rollouts.events.<namespace>.<name>."""

    type: str
    namespace: str
    name: str
    revision: int
    step_index: int
    set_weight: int
    actual_weight: int
    phase: str
    time: str
    message: str
    seq: int = 0
    current_revision: str = ""
    stable_revision: str = ""
    abort: bool = False
    analysis_run: str | None = None
    metric: str | None = None
    measurement: Any = None


# --- command replies ---------------------------------------------------------------------


class CommandReply(msgspec.Struct, kw_only=True):
    ok: bool
    error: str | None = None
    status: dict[str, Any] | None = None


class PromotePayload(msgspec.Struct, kw_only=True, rename="camel"):
    full: bool = False


class RetryPayload(msgspec.Struct, kw_only=True, rename="camel"):
    pass


feedback_decoder = msgspec.json.Decoder(Feedback)
work_decoder = msgspec.json.Decoder(AnalysisWork)
traffic_decoder = msgspec.json.Decoder(TrafficDesired)
scale_decoder = msgspec.json.Decoder(ScaleDesired)
endpoints_decoder = msgspec.json.Decoder(Endpoints)
event_decoder = msgspec.json.Decoder(RolloutEvent)
reply_decoder = msgspec.json.Decoder(CommandReply)
encoder = msgspec.json.Encoder()
