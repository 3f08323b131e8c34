"""The rollout state machine: decide(state, input, now) -> (state, commands), pure and deterministic.

Every decision of the planner lives here; the service around it only decodes messages, calls
decide() and carries out the commands. `now` is the time of the input (the JetStream timestamp
of the message that carried it), so a redelivered message yields the very same outputs.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from services.analyzer.assess import Phase, run_phase
from services.planner import basic_canary
from services.planner.state import (
    Abort,
    AnalysisErrored,
    AnalysisMeasured,
    AnalysisProgress,
    AnalysisStarted,
    AnalysisStep,
    Apply,
    CanaryScaleStep,
    Command,
    Delete,
    Emit,
    ExperimentProgress,
    ExperimentStep,
    HeaderRouteStep,
    Input,
    MirrorRouteStep,
    Pause,
    PauseCondition,
    PauseStep,
    PendingScaleDown,
    Plan,
    Promote,
    PublishScale,
    PublishTraffic,
    Reject,
    Restart,
    Resume,
    Retry,
    Revision,
    RolloutState,
    ScaleReported,
    SetWeightStep,
    StartAnalysis,
    StopAnalysis,
    Tick,
    TrafficApplied,
)
from shared.messages import (
    ArgValue,
    ReplicaSetDesired,
    RolloutEvent,
    ScaleDesired,
    ServiceSelector,
    TemplateRef,
    TrafficDesired,
    WeightedDestination,
)
from shared.routes import HeaderRoute, MirrorRoute

CANARY_PAUSE_STEP = "CanaryPauseStep"
BLUE_GREEN_PAUSE = "BlueGreenPause"
INCONCLUSIVE = "InconclusiveAnalysisRun"
TERMINAL_ANALYSIS = {Phase.SUCCESSFUL.value, Phase.FAILED.value, Phase.ERROR.value, Phase.INCONCLUSIVE.value}


class _Ctx:
    """A working copy of the state plus the commands decided so far."""

    def __init__(self, state: RolloutState, now: float) -> None:
        self.s = msgspec.structs.replace(state)
        self.now = now
        self.out: list[Command] = []
        self.waiting = ""  # why the rollout is not moving on, for the Progressing message
        self.waiting_on = ""  # "replicas" | "traffic": what the progress deadline watches

    def wait(self, on: str, why: str) -> None:
        self.waiting_on = on
        self.waiting = why

    def emit(self, type_: str, message: str, **extra: Any) -> None:
        s = self.s
        s.event_seq += 1
        self.out.append(
            Emit(
                event=RolloutEvent(
                    type=type_,
                    namespace=s.namespace,
                    name=s.name,
                    revision=s.revision,
                    step_index=s.step_index,
                    set_weight=s.set_weight,
                    actual_weight=s.actual_weight,
                    phase=s.phase,
                    time=iso(self.now),
                    message=message,
                    seq=s.event_seq,
                    current_revision=s.current_hash,
                    stable_revision=s.stable_hash,
                    abort=s.abort,
                    **extra,
                )
            )
        )


@functools.lru_cache(maxsize=64)
def iso(ts: float) -> str:
    """RFC 3339 UTC with milliseconds; cached, as a decision stamps all its events with one time."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- entry point ---------------------------------------------------------------------------


def decide(
    state: RolloutState | None, event: Input, now: float, *, namespace: str, name: str
) -> tuple[RolloutState | None, list[Command]]:
    """The next state of one rollout and what must be done, for one input."""
    if state is None:
        if isinstance(event, Apply):
            return _create(event, now, namespace, name)
        if isinstance(
            event, (TrafficApplied, ScaleReported, AnalysisStarted, AnalysisMeasured, AnalysisErrored, Tick)
        ):
            return None, []  # feedback about a rollout we no longer know: nothing to do
        return None, [Reject(message=f"rollout {namespace}/{name} not found")]

    if state.deleted:  # a tombstone waiting for its key to be removed: nothing more happens to it
        if isinstance(
            event, (TrafficApplied, ScaleReported, AnalysisStarted, AnalysisMeasured, AnalysisErrored, Tick)
        ):
            return state, []
        return state, [Reject(message=f"rollout {namespace}/{name} is being deleted")]
    c = _Ctx(state, now)
    if isinstance(event, Delete):
        _delete(c)
        c.s.updated_at = now
        return c.s, c.out
    match event:
        case Apply():
            rejected = _apply(c, event)
        case Promote(full=full):
            rejected = _promote(c, full)
        case Abort():
            rejected = _abort(c)
        case Retry():
            rejected = _retry(c)
        case Pause():
            rejected = _pause(c)
        case Resume():
            rejected = _resume(c)
        case TrafficApplied():
            rejected = _traffic_applied(c, event)
        case ScaleReported():
            rejected = _scale_reported(c, event)
        case AnalysisStarted():
            rejected = _analysis_started(c, event)
        case AnalysisMeasured():
            rejected = _analysis_measured(c, event)
        case AnalysisErrored():
            rejected = _analysis_errored(c, event)
        case Tick():
            rejected = None
        case Restart():
            rejected = _restart(c)
    if rejected is not None:
        return state, [Reject(message=rejected)]
    _progress(c)
    _check_deadline(c)
    _update_phase(c)
    if c.out:
        c.s.updated_at = now
    return c.s, c.out


def runs_of(state: RolloutState) -> list[AnalysisProgress]:
    """Every analysis run the rollout is following: the step's, the background one, the experiment's."""
    runs = [a for a in (state.analysis, state.background) if a is not None]
    if state.experiment is not None:
        runs.extend(state.experiment.runs.values())
    return runs


def next_wakeup(state: RolloutState) -> float | None:
    """The earliest time at which a Tick could change this rollout (pause end, scale-downs)."""
    times = [p.at for p in state.scale_downs]
    if state.pause_until is not None and state.pause_conditions:
        times.append(state.pause_until)
    if state.experiment is not None and state.experiment.ends_at is not None:
        times.append(state.experiment.ends_at)
    if state.waiting_since is not None and not state.deadline_exceeded:
        times.append(state.waiting_since + state.plan.progress_deadline_seconds)
    return min(times) if times else None


# --- inputs ----------------------------------------------------------------------------------


def _create(event: Apply, now: float, namespace: str, name: str) -> tuple[RolloutState, list[Command]]:
    plan = event.plan
    # The first version of a rollout becomes stable directly, without steps (as in Argo).
    state = RolloutState(
        namespace=namespace,
        name=name,
        plan=plan,
        spec=event.spec,
        uid=f"{int(now * 1_000_000):x}",
        current_hash=plan.template_hash,
        stable_hash=plan.template_hash,
        revisions=(Revision(number=1, hash=plan.template_hash, images=plan.images),),
        templates={plan.template_hash: plan.template},
        step_index=len(plan.steps),
        set_weight=100,
        paused=plan.paused,
    )
    c = _Ctx(state, now)
    c.emit(
        "RolloutCreated",
        f"Rollout created: revision 1 ({', '.join(plan.images) or plan.template_hash}) is stable",
    )
    _progress(c)
    _check_deadline(c)
    _update_phase(c)
    c.s.updated_at = now
    return c.s, c.out


def _apply(c: _Ctx, event: Apply) -> str | None:
    s = c.s
    plan = event.plan
    if plan == s.plan and event.spec == s.spec:
        return None  # the same document again: nothing changes
    s.generation += 1
    s.plan = plan
    s.spec = event.spec
    s.paused = plan.paused
    new_hash = plan.template_hash
    if new_hash == s.current_hash:
        c.emit("RolloutUpdated", f"Rollout spec updated (generation {s.generation}); pod template unchanged")
        return None
    _stop_analysis(c)
    _stop_background(c)
    _end_experiment(c)
    s.background = None
    intermediate = s.current_hash if s.current_hash != s.stable_hash else None
    if intermediate:
        s.scale_downs = (
            *_without(s.scale_downs, intermediate),
            PendingScaleDown(revision=intermediate, at=c.now),
        )
    s.abort = False
    s.aborted_at = None
    s.pause_conditions = ()
    s.pause_until = None
    s.promote_full = False
    s.abort_scale_down_at = None
    _reset_blue_green(s)
    s.templates = {**s.templates, new_hash: plan.template}
    if new_hash == s.stable_hash:
        # Going back to the stable revision skips every step (fast rollback).
        s.current_hash = new_hash
        s.revision = revision_of(s, new_hash)
        s.step_index = len(plan.steps)
        s.set_weight = 100
        c.emit("RolloutRolledBack", f"Pod template is the stable revision {s.revision}: steps skipped")
        return None
    window = sorted((r.number for r in s.revisions if r.number != s.revision), reverse=True)
    recent = {r.hash for r in s.revisions if r.number in window[: plan.rollback_window]}
    s.current_hash = new_hash
    s.revision = max((r.number for r in s.revisions), default=0) + 1
    s.revisions = (*s.revisions, Revision(number=s.revision, hash=new_hash, images=plan.images))
    s.step_index = 0
    s.set_weight = 0
    s.actual_weight = 0
    s.canary_scale = None
    s.stable_scale = None
    _trim_history(s)
    images = ", ".join(plan.images) or new_hash
    if new_hash in recent:
        # rollbackWindow: going back to one of the last N revisions skips the steps, as Argo does.
        s.promote_full = True
        c.emit(
            "RolloutRolledBack",
            f"Revision {s.revision} ({images}) is within the rollback window: steps skipped",
        )
        return None
    c.emit(
        "RevisionStarted",
        f"Rollout updated to revision {s.revision} ({images}): starting step 1 of {len(plan.steps)}",
    )
    return None


def _promote(c: _Ctx, full: bool) -> str | None:
    s = c.s
    if s.current_hash == s.stable_hash and not s.paused:
        c.emit("PromoteIgnored", "Rollout is already fully promoted")
        return None
    if s.abort and not full:
        return "rollout is aborted: use `retry` to restart the steps or `promote --full` to go to the new revision"
    if full:
        _stop_analysis(c)
        _stop_background(c)
        _end_experiment(c)
        s.abort = False
        s.aborted_at = None
        s.abort_scale_down_at = None
        s.paused = False
        s.pause_conditions = ()
        s.pause_until = None
        s.promote_full = True
        c.emit("PromotedFull", "Rollout promoted fully: skipping all remaining steps, pauses and analyses")
        return None
    steps = len(s.plan.steps)
    if s.paused or s.pause_conditions:
        # As Argo: promote unpauses and ends a pause step (or an inconclusive analysis) at once.
        if s.paused:
            s.paused = False
            c.emit("Resumed", "Rollout resumed")
        if s.pause_conditions:
            reasons = ", ".join(p.reason for p in s.pause_conditions)
            # The step's own pause (or its inconclusive analysis) is passed; a pause caused by the
            # background analysis only ends.
            step_paused = any(p.reason == CANARY_PAUSE_STEP for p in s.pause_conditions) or (
                s.analysis is not None
                and s.analysis.step_index == s.step_index
                and s.analysis.phase == Phase.INCONCLUSIVE.value
            )
            if any(p.reason == BLUE_GREEN_PAUSE for p in s.pause_conditions):
                s.bg_pause_done = True
            s.pause_conditions = ()
            s.pause_until = None
            if step_paused:
                s.step_index = min(s.step_index + 1, steps)
            c.emit("Promoted", f"Rollout promoted past {reasons} to step {s.step_index + 1}")
        return None
    if s.step_index >= steps:
        c.emit("PromoteIgnored", "All steps are done; the rollout is completing")
        return None
    _stop_analysis(c)
    _end_experiment(c)
    s.step_index += 1
    c.emit("StepSkipped", f"Rollout promoted: step {s.step_index} skipped")
    return None


def _abort(c: _Ctx) -> str | None:
    s = c.s
    if s.current_hash == s.stable_hash:
        return "rollout is not progressing: nothing to abort"
    if s.abort:
        return None
    _do_abort(c, "")
    return None


def _do_abort(c: _Ctx, reason: str) -> None:
    s = c.s
    _stop_analysis_run(c)
    _stop_background(c)
    _end_experiment(c)
    s.bg_active = ""  # blue-green: the active service goes back to the stable revision
    s.abort = True
    s.aborted_at = c.now
    s.pause_conditions = ()
    s.pause_until = None
    s.promote_full = False
    s.step_index = 0
    s.abort_message = f"Rollout aborted update to revision {s.revision}" + (f": {reason}" if reason else "")
    c.emit("RolloutAborted", s.abort_message)


def _retry(c: _Ctx) -> str | None:
    s = c.s
    if not s.abort:
        return "rollout is not aborted: nothing to retry"
    s.abort = False
    s.aborted_at = None
    s.abort_scale_down_at = None
    s.abort_message = ""
    s.step_index = 0
    s.set_weight = 0
    s.analysis = None
    s.background = None
    s.canary_scale = None
    s.stable_scale = None
    _reset_blue_green(s)
    s.scale_downs = _without(s.scale_downs, s.current_hash)
    c.emit("RolloutRetried", f"Rollout retried: revision {s.revision} restarts at step 1")
    return None


def _delete(c: _Ctx) -> None:
    """The Rollout is gone (`rollouts delete`, or its Kubernetes resource was deleted): stop its
    analysis runs, scale every revision to zero and take it off the router (Kubernetes routers keep
    their objects, as Argo leaves them; the local proxy stops listening)."""
    s = c.s
    for run in runs_of(s):
        c.out.append(StopAnalysis(run_id=run.run_id))
    s.analysis = s.background = None
    s.experiment = None
    s.deleted = True
    s.pause_conditions = ()
    _publish_scale(c, {}, force=True)  # every revision to zero
    s.traffic_generation += 1
    c.out.append(
        PublishTraffic(
            desired=TrafficDesired(
                namespace=s.namespace,
                name=s.name,
                generation=s.traffic_generation,
                stable_revision=None,
                uid=s.uid,
            )
        )
    )
    s.phase, s.message = "Deleted", "the Rollout was deleted"
    c.emit("RolloutDeleted", "Rollout deleted: every revision scaled to zero, its analysis runs stopped")


def _restart(c: _Ctx) -> str | None:
    """Argo's restart: every replica created before now is replaced, a few at a time (the scaler)."""
    s = c.s
    s.restart_at = c.now
    _publish_scale(c, dict(s.replicas), force=True)
    c.emit(
        "RolloutRestarted",
        f"Restart requested: replicas created before {iso(c.now)} are replaced one at a time",
    )
    return None


def _pause(c: _Ctx) -> str | None:
    s = c.s
    if s.paused:
        return None
    s.paused = True
    c.emit("RolloutPaused", "Rollout paused by user")
    return None


def _resume(c: _Ctx) -> str | None:
    s = c.s
    if not s.paused:
        return None
    s.paused = False
    c.emit("Resumed", "Rollout resumed")
    return None


def _traffic_applied(c: _Ctx, ev: TrafficApplied) -> str | None:
    s = c.s
    if ev.generation != s.traffic_generation or s.traffic_confirmed == ev.generation:
        return None  # stale or duplicate confirmation
    if ev.error:
        if s.last_error != f"traffic:{ev.generation}:{ev.error}":
            s.last_error = f"traffic:{ev.generation}:{ev.error}"
            c.emit("TrafficError", f"Traffic router could not apply weight {ev.canary_weight}: {ev.error}")
        return None
    s.traffic_confirmed = ev.generation
    s.confirmed_canary = s.routed_canary if ev.canary_weight > 0 else s.routed_preview
    s.confirmed_stable = s.routed_stable if ev.canary_weight < 100 else ""
    released = set(s.confirmed_additional) - {d.revision for d in s.routed_additional}
    s.confirmed_additional = tuple(d.revision for d in s.routed_additional)
    if released:  # experiment sets no longer sent traffic: now they may go
        _scale(c, canary=None)
    s.actual_weight = _share_of_current(s, s.routed_canary, ev.canary_weight)
    c.emit("WeightConfirmed", f"Traffic router confirmed weight {s.actual_weight}% on revision {s.revision}")
    return None


def _scale_reported(c: _Ctx, ev: ScaleReported) -> str | None:
    s = c.s
    if ev.generation < s.scale_observed:
        return None
    s.scale_observed = ev.generation
    if ev.error and s.last_error != f"scale:{ev.error}":
        s.last_error = f"scale:{ev.error}"
        c.emit("ScaleError", f"Scaler could not reach the desired replicas: {ev.error}")
    ready = {h: n for h, n in ev.ready.items() if h in s.replicas}  # a revision scaled to 0 is not ready
    if ready != s.ready:
        s.ready = ready
        c.emit("ReplicasUpdated", "Ready replicas: " + _describe_ready(s))
    return None


def _slot(s: RolloutState, run_id: str) -> str | None:
    """Which of the rollout's runs (the step's, the background one, or an experiment's) a report is about."""
    for slot in ("analysis", "background"):
        a = getattr(s, slot)
        if a is not None and a.run_id == run_id:
            return slot
    if s.experiment is not None:
        for name, a in s.experiment.runs.items():
            if a.run_id == run_id:
                return f"exp:{name}"
    return None


def _get_run(s: RolloutState, slot: str) -> AnalysisProgress | None:
    if slot.startswith("exp:"):
        return s.experiment.runs.get(slot[4:]) if s.experiment is not None else None
    run: AnalysisProgress | None = getattr(s, slot)
    return run


def _set_run(s: RolloutState, slot: str, run: AnalysisProgress) -> None:
    if slot.startswith("exp:"):
        assert s.experiment is not None
        s.experiment = msgspec.structs.replace(s.experiment, runs={**s.experiment.runs, slot[4:]: run})
    else:
        setattr(s, slot, run)


def _analysis_started(c: _Ctx, ev: AnalysisStarted) -> str | None:
    slot = _slot(c.s, ev.run_id)
    a: AnalysisProgress | None = _get_run(c.s, slot) if slot else None
    if slot is None or a is None or a.metrics:
        return None
    # Measurements may have been handled first (they travel on the same stream, but a redelivery
    # can reorder them): keep what they said.
    phases = {m: a.metric_phases.get(m, Phase.RUNNING.value) for m in ev.metrics}
    phase = run_phase({m: Phase(p) for m, p in phases.items()}, set(ev.dry_run)).value if phases else "Error"
    _set_run(
        c.s,
        slot,
        msgspec.structs.replace(a, metrics=ev.metrics, dry_run=ev.dry_run, phase=phase, metric_phases=phases),
    )
    c.emit(
        "AnalysisRunRunning",
        f"Analysis run {ev.run_id} running: metrics {', '.join(ev.metrics)}",
        analysis_run=ev.run_id,
    )
    return None


def _analysis_measured(c: _Ctx, ev: AnalysisMeasured) -> str | None:
    slot = _slot(c.s, ev.run_id)
    a: AnalysisProgress | None = _get_run(c.s, slot) if slot else None
    if slot is None or a is None or a.phase in TERMINAL_ANALYSIS:
        return None
    if ev.index < a.metric_counts.get(ev.metric, 0):
        return None  # a duplicate measurement (redelivered work)
    phases = {**a.metric_phases, ev.metric: ev.metric_phase}
    counts = {**a.metric_counts, ev.metric: ev.index + 1}
    phase = (
        run_phase({m: Phase(p) for m, p in phases.items()}, set(a.dry_run)).value if a.metrics else a.phase
    )
    message = a.message
    if ev.metric_phase in TERMINAL_ANALYSIS and ev.metric_phase != Phase.SUCCESSFUL.value:
        why = ev.metric_message or ev.message
        message = f'Metric "{ev.metric}" assessed {ev.metric_phase}' + (f": {why}" if why else "")
    _set_run(
        c.s,
        slot,
        msgspec.structs.replace(
            a,
            metric_phases=phases,
            metric_counts=counts,
            phase=phase,
            measurements=a.measurements + 1,
            message=message,
        ),
    )
    c.emit(
        "AnalysisMeasurement",
        f"Metric {ev.metric} measurement {ev.index + 1}: {ev.phase}"
        + (f" ({ev.message})" if ev.message else ""),
        analysis_run=ev.run_id,
        metric=ev.metric,
        measurement=ev.value,
    )
    if phase in TERMINAL_ANALYSIS:
        c.emit(
            "AnalysisRunCompleted",
            f"Analysis run {ev.run_id} {phase}" + (f": {message}" if message else ""),
            analysis_run=ev.run_id,
        )
    return None


def _analysis_errored(c: _Ctx, ev: AnalysisErrored) -> str | None:
    slot = _slot(c.s, ev.run_id)
    a: AnalysisProgress | None = _get_run(c.s, slot) if slot else None
    if slot is None or a is None or a.phase in TERMINAL_ANALYSIS:
        return None
    _set_run(c.s, slot, msgspec.structs.replace(a, phase=Phase.ERROR.value, message=ev.message))
    c.emit("AnalysisRunCompleted", f"Analysis run {ev.run_id} Error: {ev.message}", analysis_run=ev.run_id)
    return None


# --- progress: move as far as the observed world allows ---------------------------------------


def _progress(c: _Ctx) -> None:
    s = c.s
    for _ in range(len(s.plan.steps) + 4):
        if not _step_once(c):
            break
    _scale(c, canary=None)  # scale-downs now due, and revisions the router no longer uses


def _step_once(c: _Ctx) -> bool:
    """One move; True when the rollout advanced and the next move should be tried at once."""
    s = c.s
    plan = s.plan
    if s.abort:
        _aborted(c)
        return False
    if s.current_hash == s.stable_hash:
        _steady(c)
        return False
    if _background(c):
        return True
    if s.plan.strategy == "blueGreen":
        return _blue_green(c)
    if s.paused:
        return False
    if s.pause_conditions:
        if (
            s.pause_until is not None
            and c.now >= s.pause_until
            and all(p.reason == CANARY_PAUSE_STEP for p in s.pause_conditions)
        ):
            s.pause_conditions = ()
            s.pause_until = None
            s.step_index += 1
            c.emit("PauseEnded", f"Pause ended: continuing with step {s.step_index + 1}")
            return True
        return False
    if s.promote_full or s.step_index >= len(plan.steps):
        return _complete(c)
    step = plan.steps[s.step_index]
    match step:
        case SetWeightStep(weight=weight):
            return _set_weight_step(c, min(weight, plan.max_traffic_weight))
        case PauseStep(seconds=seconds):
            if seconds is not None and seconds <= 0:
                s.step_index += 1
                return True
            s.pause_conditions = (PauseCondition(reason=CANARY_PAUSE_STEP, start_time=c.now),)
            s.pause_until = c.now + seconds if seconds is not None else None
            how = f"for {_fmt_seconds(seconds)}" if seconds is not None else "until promoted"
            c.emit("RolloutPaused", f"Step {s.step_index + 1}/{len(plan.steps)}: paused {how}")
            return False
        case AnalysisStep():
            return _analysis_step(c, step)
        case CanaryScaleStep():
            return _canary_scale_step(c, step)
        case HeaderRouteStep(route=route):
            s.header_routes = _upsert(s.header_routes, route, s.plan)
            return _routes_step(c, f"header route {route.name}")
        case MirrorRouteStep(route=route):
            s.mirror_routes = _upsert(s.mirror_routes, route, s.plan)
            return _routes_step(c, f"mirror route {route.name}")
        case ExperimentStep():
            return _experiment_step(c, step)
    return False


def _blue_green(c: _Ctx) -> bool:
    """Blue-green: preview the new revision, pre-promotion analysis, pause (or auto-promote),
    switch the active service, post-promotion analysis, then it becomes stable."""
    s = c.s
    p = s.plan
    if s.paused or any(pc.reason == INCONCLUSIVE for pc in s.pause_conditions):
        return False
    if s.promote_full:
        s.bg_pre_done = s.bg_pause_done = True
    if not s.bg_promoting:
        preview = p.preview_replica_count if p.preview_replica_count is not None else p.replicas
        if not _sized_and_routed(
            c, preview, f"{preview} preview replica(s) to be ready", "the preview service to point at it"
        ):
            return False
        if p.pre_promotion is not None and not s.bg_pre_done:
            phase = _promotion_analysis(c, p.pre_promotion, -2, "pre-promotion")
            if phase is None:
                return False
            if phase != Phase.SUCCESSFUL.value:
                return phase in (Phase.FAILED.value, Phase.ERROR.value)
            s.bg_pre_done = True
        if not s.bg_pause_done:
            if s.pause_conditions:
                ended = s.pause_until is not None and c.now >= s.pause_until
                if not ended:
                    return False
                s.pause_conditions = ()
                s.pause_until = None
                s.bg_pause_done = True
                c.emit("PauseEnded", "autoPromotionSeconds elapsed: promoting")
            elif not p.auto_promotion_enabled or p.auto_promotion_seconds:
                s.pause_conditions = (PauseCondition(reason=BLUE_GREEN_PAUSE, start_time=c.now),)
                auto = p.auto_promotion_enabled and p.auto_promotion_seconds
                s.pause_until = (
                    c.now + p.auto_promotion_seconds if auto and p.auto_promotion_seconds else None
                )
                how = f"for {_fmt_seconds(p.auto_promotion_seconds)}" if auto else "until promoted"
                c.emit("RolloutPaused", f"Preview of revision {s.revision} ready: paused {how}")
                return False
            else:
                s.bg_pause_done = True
        s.bg_promoting = True
        c.emit("Promoting", f"Promoting revision {s.revision}: scaling it to {p.replicas} replica(s)")
    if s.bg_active != s.current_hash and s.ready.get(s.current_hash, 0) >= p.replicas:
        s.bg_active = s.current_hash
        c.emit("ActiveSwitched", f"Active service {p.stable_service} switching to revision {s.revision}")
    if not _sized_and_routed(
        c,
        p.replicas,
        f"{p.replicas} replica(s) of revision {s.revision} to be ready",
        "the active service to point at the new revision",
    ):
        return False
    if p.post_promotion is not None and not s.promote_full:
        phase = _promotion_analysis(c, p.post_promotion, -3, "post-promotion")
        if phase is None:
            return False
        if phase != Phase.SUCCESSFUL.value:
            return phase in (Phase.FAILED.value, Phase.ERROR.value)
    s.bg_active = ""
    return _complete(c)


def _reset_blue_green(s: RolloutState) -> None:
    s.bg_active = ""
    s.bg_pre_done = s.bg_pause_done = s.bg_promoting = False


def _sized_and_routed(c: _Ctx, replicas: int, ready_what: str, route_what: str) -> bool:
    """Blue-green: the current revision at `replicas` ready pods, then the services routed as the
    state says (active and preview); False while either is still under way."""
    s = c.s
    _scale(c, canary=replicas)
    if s.ready.get(s.current_hash, 0) < replicas:
        c.wait("replicas", f"waiting for {ready_what}")
        return False
    _route(c, 0)
    if s.traffic_confirmed < s.traffic_generation:
        c.wait("traffic", f"waiting for {route_what}")
        return False
    return True


def _promotion_analysis(c: _Ctx, spec: AnalysisStep, marker: int, what: str) -> str | None:
    """Start (once) and follow a pre- or post-promotion run; its phase once terminal, else None.
    Failed/Error abort the rollout; Inconclusive pauses it (InconclusiveAnalysisRun)."""
    s = c.s
    a = s.analysis
    if a is None or a.step_index != marker:
        run_id = _start_run(
            c, what[:3], spec.templates, spec.args, dry_run=spec.dry_run, retention=spec.retention
        )
        s.analysis = AnalysisProgress(run_id=run_id, step_index=marker)
        c.emit("AnalysisRunStarted", f"{what} analysis started", analysis_run=run_id)
        c.wait("analysis", f"waiting for {what} analysis")
        return None
    if a.phase in (Phase.FAILED.value, Phase.ERROR.value):
        s.bg_active = ""
        _do_abort(c, f"{what} analysis run {a.run_id} {a.phase}" + (f": {a.message}" if a.message else ""))
        return a.phase
    if a.phase == Phase.INCONCLUSIVE.value:
        if not a.acknowledged:
            s.analysis = msgspec.structs.replace(a, acknowledged=True)
            s.pause_conditions = (PauseCondition(reason=INCONCLUSIVE, start_time=c.now),)
            c.emit(
                "RolloutPaused", f"{what} analysis run {a.run_id} Inconclusive: paused until promote or abort"
            )
            return a.phase
        return Phase.SUCCESSFUL.value  # promoted past the inconclusive run
    if a.phase == Phase.SUCCESSFUL.value:
        return a.phase
    c.wait("analysis", f"waiting for {what} analysis")
    return None


def _start_run(
    c: _Ctx,
    tag: str,
    templates: tuple[TemplateRef, ...],
    args: tuple[ArgValue, ...],
    *,
    dry_run: tuple[str, ...] = (),
    retention: dict[str, int] | None = None,
    step_index: int | None = None,
) -> str:
    """Ask the analyzers for a new run; its id names the rollout, revision and what it is for."""
    s = c.s
    s.analysis_counter += 1
    run_id = f"{s.name}-{s.current_hash[:10]}-{s.revision}-{tag}{s.analysis_counter}"
    c.out.append(
        StartAnalysis(
            namespace=s.namespace,
            name=s.name,
            run_id=run_id,
            templates=templates,
            args=tuple(_resolve_arg(s, a) for a in args),
            dry_run=dry_run,
            retention=retention or {},
            revision=s.revision,
            step_index=step_index,
        )
    )
    return run_id


def _background(c: _Ctx) -> bool:
    """The background analysis (strategy.canary.analysis): started once the rollout reaches
    startingStep, running beside the steps; True when its verdict aborted the rollout."""
    s = c.s
    spec = s.plan.background
    if spec is None or s.promote_full or s.step_index < s.plan.background_starting_step:
        return False
    b = s.background
    if b is None:
        run_id = _start_run(
            c, "bg", spec.templates, spec.args, dry_run=spec.dry_run, retention=spec.retention
        )
        s.background = AnalysisProgress(run_id=run_id, step_index=-1)
        names = ", ".join(t.template_name for t in spec.templates)
        c.emit("AnalysisRunStarted", f"Background analysis {names} started", analysis_run=run_id)
        return False
    if b.phase in (Phase.FAILED.value, Phase.ERROR.value):
        _do_abort(
            c, f"background analysis run {b.run_id} {b.phase}" + (f": {b.message}" if b.message else "")
        )
        return True
    if b.phase == Phase.INCONCLUSIVE.value and not b.acknowledged:
        s.pause_conditions = (*s.pause_conditions, PauseCondition(reason=INCONCLUSIVE, start_time=c.now))
        s.background = msgspec.structs.replace(b, acknowledged=True)
        c.emit(
            "RolloutPaused", f"Background analysis run {b.run_id} Inconclusive: paused until promote or abort"
        )
    return False


def canary_size(plan: Plan, weight: int, scale: CanaryScaleStep | None) -> int:
    """Argo: ceil(replicas * weight / 100), unless a setCanaryScale is in force; at least
    minPodsPerReplicaSet while the canary has any. (`rollouts plan` shows the same numbers.)"""
    if scale is not None and scale.replicas is not None:
        need = scale.replicas
    else:
        w = scale.weight if scale is not None and scale.weight is not None else weight
        need = math.ceil(plan.replicas * w / 100)
    return max(need, plan.min_pods_per_replica_set) if need > 0 else 0


def _canary_replicas(s: RolloutState, weight: int) -> int:
    return canary_size(s.plan, weight, s.canary_scale)


def _basic_set_weight(c: _Ctx, weight: int) -> bool:
    """A canary without trafficRouting (Argo's basic canary): replica counts carry the split.

    The step wants ceil(replicas x weight / 100) canary pods and ceil(replicas x (100 - weight) /
    100) stable ones; each decision moves towards them within maxSurge and maxUnavailable
    (services/planner/basic_canary.py, Argo's algorithm), and the step completes once both counts
    are set and available. The built-in proxy then splits by those counts, as a Service over both
    replica sets would."""
    s = c.s
    p = s.plan
    r = p.replicas
    current, stable = s.current_hash, s.stable_hash
    spec = {"canary_spec": s.replicas.get(current, 0), "stable_spec": s.replicas.get(stable, 0)}
    new_canary, new_stable = basic_canary.next_counts(
        replicas=r,
        weight=weight,
        max_surge=p.max_surge,
        max_unavailable=p.max_unavailable,
        canary_available=s.ready.get(current, 0),
        stable_available=s.ready.get(stable, 0),
        older=sum(n for h, n in s.replicas.items() if h not in (current, stable)),
        **spec,
    )
    s.stable_scale = new_stable if new_stable != r else None
    _scale(c, canary=new_canary)
    want_canary, want_stable = basic_canary.desired_counts(r, weight)
    if s.set_weight != weight:
        s.set_weight = weight
        c.emit(
            "WeightSet",
            f"Step {s.step_index + 1}/{len(p.steps)}: setWeight {weight} "
            f"({want_canary} canary and {want_stable} stable pods)",
        )
    if not basic_canary.at_desired(
        replicas=r,
        weight=weight,
        canary_spec=s.replicas.get(current, 0),
        canary_available=s.ready.get(current, 0),
        stable_spec=s.replicas.get(stable, 0),
        stable_available=s.ready.get(stable, 0),
    ):
        c.wait(
            "replicas",
            f"waiting for {want_canary} canary and {want_stable} stable replica(s) to be ready "
            f"(maxSurge {p.max_surge}, maxUnavailable {p.max_unavailable})",
        )
        return False
    total = want_canary + want_stable
    _route(c, round(100 * want_canary / total) if total else 0)
    if s.traffic_confirmed < s.traffic_generation:
        c.wait("traffic", "waiting for the traffic router to split by replica counts")
        return False
    return _step_completed(c, f"weight {weight}")


def _set_weight_step(c: _Ctx, weight: int) -> bool:
    s = c.s
    if s.plan.routing is None and s.plan.strategy == "canary":
        return _basic_set_weight(c, weight)
    need = _canary_replicas(s, weight)
    if s.plan.dynamic_stable_scale and weight < s.set_weight:
        # Traffic comes back to the stable: grow it first.
        if not _stable_sized(c, weight):
            return False
    _scale(c, canary=max(need, 0))
    if s.ready.get(s.current_hash, 0) < need:
        c.wait("replicas", f"waiting for {need} canary replica(s) to be ready")
        return False
    if s.set_weight != weight:
        s.set_weight = weight
        c.emit("WeightSet", f"Step {s.step_index + 1}/{len(s.plan.steps)}: setWeight {weight}")
    _route(c, weight)
    if s.traffic_confirmed < s.traffic_generation:
        c.wait("traffic", f"waiting for the traffic router to apply weight {weight}")
        return False
    if s.plan.dynamic_stable_scale and not _stable_sized(c, weight):
        return False  # traffic moved to the canary: the stable shrinks to its share afterwards
    return _step_completed(c, f"weight {weight}")


def _stable_sized(c: _Ctx, weight: int) -> bool:
    """dynamicStableScale: the stable sized to its share of the traffic (and ready when growing)."""
    s = c.s
    want = max(math.ceil(s.plan.replicas * (100 - weight) / 100), s.plan.min_pods_per_replica_set)
    if s.stable_scale != want:
        s.stable_scale = want if want < s.plan.replicas else None
        _scale(c, canary=None)
    if s.ready.get(s.stable_hash, 0) < want:
        c.wait("replicas", f"waiting for {want} stable replica(s) to be ready")
        return False
    return True


R = TypeVar("R", HeaderRoute, MirrorRoute)


def _upsert(routes: tuple[R, ...], route: R, plan: Plan) -> tuple[R, ...]:
    """Add or replace a managed route by name (an empty match removes it), in managedRoutes order."""
    kept = [r for r in routes if r.name != route.name]
    if route.match:
        kept.append(route)
    order = [m.get("name") for m in (plan.routing or {}).get("managedRoutes") or []]
    kept.sort(key=lambda r: order.index(r.name) if r.name in order else len(order))
    return tuple(kept)


def _experiment_step(c: _Ctx, step: ExperimentStep) -> bool:
    """Replica sets cloned from the stable and canary templates run side by side with their
    analyses, for `duration` (or until the required analyses complete); any failing run aborts."""
    s = c.s
    e = s.experiment
    if e is None or e.step_index != s.step_index:
        sets = {}
        weights = {}
        for t in step.templates:
            source = s.stable_hash if t.spec_ref == "stable" else s.current_hash
            key = f"{source}-{t.name}"
            sets[key] = t.replicas
            if t.weight:
                weights[key] = (t.name, t.weight)
            s.templates = {**s.templates, key: s.templates.get(source, s.plan.template)}
        s.experiment = e = ExperimentProgress(step_index=s.step_index, sets=sets, weights=weights)
        _scale(c, canary=None)
        names = ", ".join(t.name for t in step.templates)
        c.emit("ExperimentStarted", f"Step {s.step_index + 1}: experiment with {names}")
    if not e.started:
        missing = [k for k, n in e.sets.items() if s.ready.get(k, 0) < n]
        if missing:
            c.wait("replicas", f"waiting for the experiment's replica sets ({', '.join(missing)})")
            return False
        if e.weights and not e.routed:
            # Argo's additionalDestinations: the weighted sets take their share of the traffic
            # (from the stable's) before the analyses start measuring them.
            s.experiment = e = msgspec.structs.replace(e, routed=True)
            _route(c, s.desired_canary_weight)
        if e.routed and s.traffic_confirmed < s.traffic_generation:
            c.wait("traffic", "waiting for the traffic router to route to the experiment's replica sets")
            return False
        runs = {}
        for a in step.analyses:
            run_id = _start_run(
                c, f"exp-{a.name}-", a.templates, a.args, dry_run=step.dry_run, step_index=s.step_index
            )
            runs[a.name] = AnalysisProgress(run_id=run_id, step_index=s.step_index)
        ends = c.now + step.seconds if step.seconds is not None else None
        s.experiment = e = msgspec.structs.replace(e, started=True, ends_at=ends, runs=runs)
    failed = [(n, r) for n, r in e.runs.items() if r.phase in (Phase.FAILED.value, Phase.ERROR.value)]
    if failed:
        name, run = failed[0]
        _end_experiment(c)
        why = f"experiment analysis {name} ({run.run_id}) {run.phase}" + (
            f": {run.message}" if run.message else ""
        )
        _do_abort(c, why)
        return True
    required = [a.name for a in step.analyses if a.required_for_completion]
    required_done = all(e.runs[n].phase in TERMINAL_ANALYSIS for n in required)
    over = (e.ends_at is not None and c.now >= e.ends_at) or (e.ends_at is None and required_done)
    if not (over and required_done):
        c.wait("analysis", "experiment running")
        return False
    inconclusive = [n for n, r in e.runs.items() if r.phase == Phase.INCONCLUSIVE.value]
    _end_experiment(c)
    s.step_index += 1
    if inconclusive:
        # The experiment is over; promote continues with the next step.
        s.pause_conditions = (PauseCondition(reason=INCONCLUSIVE, start_time=c.now),)
        c.emit(
            "RolloutPaused",
            f"Experiment analysis {', '.join(inconclusive)} Inconclusive: paused until promote",
        )
        return False
    _announce_step(c, "experiment Successful")
    return True


def _step_completed(c: _Ctx, what: str) -> bool:
    """The current step is done: move on (True: try the next one at once)."""
    c.s.step_index += 1
    _announce_step(c, what)
    return True


def _announce_step(c: _Ctx, what: str) -> None:
    """StepCompleted for the step just left (step_index already points past it)."""
    c.emit("StepCompleted", f"Step {c.s.step_index}/{len(c.s.plan.steps)} completed: {what}")


def _routes_step(c: _Ctx, what: str) -> bool:
    s = c.s
    _route(c, s.set_weight)
    if s.traffic_confirmed < s.traffic_generation:
        c.wait("traffic", f"waiting for the traffic router to apply the {what}")
        return False
    return _step_completed(c, f"{what} applied")


def _canary_scale_step(c: _Ctx, step: CanaryScaleStep) -> bool:
    s = c.s
    s.canary_scale = step if (step.replicas is not None or step.weight is not None) else None
    need = _canary_replicas(s, s.set_weight)
    _scale(c, canary=need)
    if s.ready.get(s.current_hash, 0) < need:
        c.wait("replicas", f"waiting for {need} canary replica(s) to be ready")
        return False
    return _step_completed(c, f"canary scaled to {need}")


def _analysis_step(c: _Ctx, step: AnalysisStep) -> bool:
    s = c.s
    a = s.analysis
    if a is None or a.step_index != s.step_index:
        run_id = _start_run(
            c,
            "",
            step.templates,
            step.args,
            dry_run=step.dry_run,
            retention=step.retention,
            step_index=s.step_index,
        )
        s.analysis = AnalysisProgress(run_id=run_id, step_index=s.step_index)
        names = ", ".join(t.template_name for t in step.templates)
        c.emit(
            "AnalysisRunStarted",
            f"Step {s.step_index + 1}/{len(s.plan.steps)}: analysis {names} started",
            analysis_run=run_id,
        )
        c.waiting = "waiting for analysis"
        return False
    if a.phase == Phase.SUCCESSFUL.value:
        return _step_completed(c, f"analysis {a.run_id} Successful")
    if a.phase in (Phase.FAILED.value, Phase.ERROR.value):
        _do_abort(c, f"analysis run {a.run_id} {a.phase}" + (f": {a.message}" if a.message else ""))
        return True
    if a.phase == Phase.INCONCLUSIVE.value:
        s.pause_conditions = (PauseCondition(reason=INCONCLUSIVE, start_time=c.now),)
        c.emit("RolloutPaused", f"Analysis run {a.run_id} Inconclusive: paused until promote or abort")
        return False
    c.waiting = "waiting for analysis"
    return False


def _complete(c: _Ctx) -> bool:
    """All steps done (or promote --full): the new revision at full size becomes stable."""
    s = c.s
    replicas = s.plan.replicas
    _scale(c, canary=replicas)
    if s.ready.get(s.current_hash, 0) < replicas:
        c.wait("replicas", f"waiting for {replicas} updated replica(s) to be ready")
        return False
    old = s.stable_hash
    _reset_blue_green(s)
    s.stable_scale = None
    s.canary_scale = None
    s.stable_hash = s.current_hash
    s.step_index = len(s.plan.steps)
    s.set_weight = 100
    s.promote_full = False
    s.analysis = None if s.analysis and s.analysis.phase not in TERMINAL_ANALYSIS else s.analysis
    _stop_background(c)
    delay = s.plan.scale_down_delay_seconds
    s.scale_downs = _delay_scale_down(c, old, delay)
    c.emit(
        "RolloutPromoted",
        f"Revision {s.revision} promoted to stable; old revision scaled down in {_fmt_seconds(delay)}",
    )
    return True


def _steady(c: _Ctx) -> None:
    s = c.s
    s.step_index = len(s.plan.steps)
    s.set_weight = 100
    _scale(c, canary=None)
    _route(c, 0)
    ready = s.ready.get(s.stable_hash, 0) >= s.plan.replicas
    confirmed = s.traffic_confirmed >= s.traffic_generation
    if not ready:
        c.wait("replicas", f"waiting for {s.plan.replicas} stable replica(s) to be ready")
    elif not confirmed:
        c.wait("traffic", "waiting for the traffic router to send all traffic to the stable revision")


def _aborted(c: _Ctx) -> None:
    s = c.s
    s.set_weight = 0
    if s.stable_scale is not None:
        # dynamicStableScale: the stable grows back to full size before it gets the traffic back.
        s.stable_scale = None
        _scale(c, canary=None)
    if (s.plan.dynamic_stable_scale or s.plan.routing is None) and s.ready.get(
        s.stable_hash, 0
    ) < s.plan.replicas:
        c.wait("replicas", f"waiting for {s.plan.replicas} stable replica(s) before moving traffic back")
        return
    _route(c, 0)
    if s.traffic_confirmed >= s.traffic_generation and s.abort_scale_down_at is None:
        delay = s.plan.abort_scale_down_delay_seconds
        s.abort_scale_down_at = c.now + delay if delay > 0 else -1.0  # -1: never (as Argo's 0)
        if delay > 0:
            s.scale_downs = (
                *_without(s.scale_downs, s.current_hash),
                PendingScaleDown(revision=s.current_hash, at=c.now + delay),
            )
    _scale(c, canary=None)


# --- commands --------------------------------------------------------------------------------


def _scale(c: _Ctx, *, canary: int | None) -> None:
    """Desired replicas: stable at full size; the current revision at `canary` (None: as it is,
    unless an abort's scale-down came due); revisions waiting for their scale-down delay, or
    still sent traffic by the router (as Argo's isReplicaSetReferenced), left where they are."""
    s = c.s
    due = {p.revision for p in s.scale_downs if p.at <= c.now}
    s.scale_downs = tuple(p for p in s.scale_downs if p.at > c.now)
    keep = {p.revision for p in s.scale_downs} | {s.confirmed_canary or "", s.confirmed_stable}
    keep.update(s.confirmed_additional)
    replicas: dict[str, int] = {h: n for h, n in s.replicas.items() if h in keep}
    if s.experiment is not None:
        replicas.update(s.experiment.sets)
    stable = s.plan.replicas
    if s.stable_scale is not None and s.current_hash != s.stable_hash and not s.abort:
        stable = s.stable_scale
    replicas[s.stable_hash] = stable
    if s.current_hash != s.stable_hash:
        if canary is None:
            aborted_and_due = s.abort and s.current_hash in due
            n = 0 if aborted_and_due else s.replicas.get(s.current_hash, 0)
        else:
            n = canary
        if n > 0:
            replicas[s.current_hash] = n
    remaining = {k for k, v in replicas.items() if v > 0}
    gone = [h for h in s.replicas if h not in remaining]
    _publish_scale(c, replicas)
    for h in gone:
        c.emit("ScaledDown", f"Revision {revision_of(s, h)} scaled down to 0")


def _selectors(s: RolloutState) -> dict[str, str]:
    """Which revision each of the rollout's Services selects, as Argo points them: the stable (or
    active) Service at the revision the router sends stable traffic to, the canary Service at the
    canary (the stable one when there is none), the preview Service at the previewed revision."""
    p = s.plan
    stable = s.routed_stable or s.stable_hash
    out: dict[str, str] = {}
    if p.stable_service:
        out[p.stable_service] = stable
    if p.canary_service:
        out[p.canary_service] = s.routed_canary or stable
    if p.preview_service:
        out[p.preview_service] = s.routed_preview or stable
    return out


def _publish_scale(c: _Ctx, replicas: dict[str, int], *, force: bool = False) -> None:
    s = c.s
    replicas = {h: n for h, n in replicas.items() if n > 0}
    selected = _selectors(s)
    if replicas == s.replicas and selected == s.selected and s.scale_generation > 0 and not force:
        return
    s.replicas = replicas
    s.selected = selected
    s.ready = {h: n for h, n in s.ready.items() if h in replicas}
    s.scale_generation += 1
    sets = tuple(
        ReplicaSetDesired(
            revision=h, replicas=n, template=s.templates.get(h, s.plan.template), restart_at=s.restart_at
        )
        for h, n in sorted(replicas.items())
    )
    c.out.append(
        PublishScale(
            desired=ScaleDesired(
                namespace=s.namespace,
                name=s.name,
                generation=s.scale_generation,
                uid=s.uid,
                sets=sets,
                services=tuple(ServiceSelector(service=k, revision=v) for k, v in sorted(selected.items())),
            )
        )
    )


def _route(c: _Ctx, canary_weight: int) -> None:
    s = c.s
    if s.plan.strategy == "blueGreen":
        _route_bg(c, active=s.bg_active or s.stable_hash, preview=not s.abort)
        return
    canary = s.current_hash if s.current_hash != s.stable_hash else None
    weight = canary_weight if canary else 0
    if canary is None or s.abort:
        s.header_routes = s.mirror_routes = ()  # managed routes end with the rollout (or its abort)
    _publish_route(c, stable=s.stable_hash, canary=canary, weight=weight, preview=None)


def _route_bg(c: _Ctx, *, active: str, preview: bool) -> None:
    """Blue-green: the active service on one revision; the preview service on the current one."""
    s = c.s
    previewed = s.current_hash if preview and s.current_hash != active else None
    _publish_route(c, stable=active, canary=None, weight=0, preview=previewed)


def _publish_route(c: _Ctx, *, stable: str, canary: str | None, weight: int, preview: str | None) -> None:
    s = c.s
    additional = _additional(s)
    if (
        s.traffic_generation > 0
        and s.routed_stable == stable
        and s.routed_canary == canary
        and s.routed_preview == preview
        and s.desired_canary_weight == weight
        and s.routed_header_routes == s.header_routes
        and s.routed_mirror_routes == s.mirror_routes
        and s.routed_additional == additional
    ):
        if s.traffic_confirmed >= s.traffic_generation:
            s.actual_weight = _share_of_current(s, canary, weight)
        return
    s.traffic_generation += 1
    s.routed_stable = stable
    s.routed_canary = canary
    s.routed_preview = preview
    s.routed_header_routes = s.header_routes
    s.routed_mirror_routes = s.mirror_routes
    s.routed_additional = additional
    s.desired_canary_weight = weight
    if s.scale_generation > 0 and _selectors(s) != s.selected:
        # Kubernetes mode: Services are pointed at their revisions before the router moves weight.
        _publish_scale(c, dict(s.replicas))
    plan = s.plan
    c.out.append(
        PublishTraffic(
            desired=TrafficDesired(
                namespace=s.namespace,
                name=s.name,
                generation=s.traffic_generation,
                uid=s.uid,
                stable_revision=stable,
                canary_revision=canary,
                canary_weight=weight,
                port=plan.port,
                stable_service=plan.stable_service,
                canary_service=plan.canary_service,
                routing=plan.routing,
                preview_revision=preview,
                header_routes=s.header_routes,
                mirror_routes=s.mirror_routes,
                preview_port=plan.preview_port if preview else None,
                preview_service=plan.preview_service if preview else None,
                additional=additional,
            )
        )
    )


def _additional(s: RolloutState) -> tuple[WeightedDestination, ...]:
    """The experiment's weighted replica sets, once the experiment routes to them."""
    e = s.experiment
    if e is None or not e.routed or s.abort:
        return ()
    return tuple(
        WeightedDestination(revision=key, weight=weight, name=name)
        for key, (name, weight) in sorted(e.weights.items())
    )


def _stop_analysis(c: _Ctx) -> None:
    s = c.s
    _stop_analysis_run(c)
    s.analysis = None


def _stop_analysis_run(c: _Ctx, slot: str = "analysis") -> None:
    a = _get_run(c.s, slot)
    if a is not None and a.phase not in TERMINAL_ANALYSIS:
        c.out.append(StopAnalysis(run_id=a.run_id))
        _set_run(
            c.s,
            slot,
            msgspec.structs.replace(a, phase="Terminated", message="run stopped: the rollout moved on"),
        )


def _end_experiment(c: _Ctx) -> None:
    """Stop the experiment's runs and take its replica sets away (they are scaled to 0 by _scale)."""
    s = c.s
    if s.experiment is None:
        return
    for name in s.experiment.runs:
        _stop_analysis_run(c, f"exp:{name}")
    routed = s.experiment.routed
    s.experiment = None
    if routed:  # the weighted sets give their traffic back (they stay up until the router confirms)
        _route(c, s.desired_canary_weight)
    _scale(c, canary=None)


def _stop_background(c: _Ctx) -> None:
    _stop_analysis_run(c, "background")


# --- phase and message, in Argo's order: Degraded, Paused, Progressing, Healthy ----------------


# Events that show the rollout moving; while waiting on replicas or traffic, the progress deadline
# (progressDeadlineSeconds) counts from the last of them.
PROGRESS_EVENTS = {
    "RevisionStarted",
    "StepCompleted",
    "WeightSet",
    "WeightConfirmed",
    "ReplicasUpdated",
    "PauseEnded",
    "Promoted",
    "PromotedFull",
    "RolloutRetried",
    "Resumed",
    "RolloutPromoted",
    "RolloutCreated",
}


def _check_deadline(c: _Ctx) -> None:
    s = c.s
    if c.waiting_on not in ("replicas", "traffic") or s.abort or s.paused or s.pause_conditions:
        s.waiting_since = None
        s.deadline_exceeded = False
        return
    progressed = any(isinstance(o, Emit) and o.event.type in PROGRESS_EVENTS for o in c.out)
    if s.waiting_since is None or progressed:
        s.waiting_since = c.now
        s.deadline_exceeded = False
        return
    deadline = s.plan.progress_deadline_seconds
    if not s.deadline_exceeded and c.now - s.waiting_since >= deadline:
        s.deadline_exceeded = True
        why = f"revision {s.revision} has timed out progressing ({c.waiting}) after {_fmt_seconds(deadline)}"
        c.emit("ProgressDeadlineExceeded", why)
        if s.plan.progress_deadline_abort and s.current_hash != s.stable_hash:
            _do_abort(c, f"ProgressDeadlineExceeded: {why}")
            _aborted(c)


def _update_phase(c: _Ctx) -> None:
    s = c.s
    if s.abort:
        phase, message = "Degraded", f"RolloutAborted: {s.abort_message}"
    elif s.deadline_exceeded:
        phase, message = (
            "Degraded",
            f"ProgressDeadlineExceeded: revision {s.revision} has timed out progressing ({c.waiting})",
        )
    elif s.paused:
        phase, message = "Paused", "manually paused"
    elif s.pause_conditions:
        phase, message = "Paused", s.pause_conditions[0].reason
    elif s.current_hash != s.stable_hash or c.waiting:
        phase, message = "Progressing", c.waiting or "more replicas need to be updated"
    else:
        phase, message = "Healthy", ""
    if (phase, message) != (s.phase, s.message):
        old = s.phase
        s.phase, s.message = phase, message
        if phase != old:
            c.emit("PhaseChanged", f"Rollout is {phase}" + (f": {message}" if message else ""))


# --- small helpers -----------------------------------------------------------------------------


_FIELD = re.compile(r"^([A-Za-z0-9_.]+?)(?:\[['\"]([^'\"]+)['\"]\])?$")


def _resolve_arg(s: RolloutState, arg: ArgValue) -> ArgValue:
    """Argo's rollout-side argument sources: a pod-template hash, or a field of the Rollout."""
    source = arg.value_from
    if source is None:
        return arg
    kind, _, what = source.partition(":")
    value: Any = None
    if kind == "podTemplateHash":
        value = s.stable_hash if what == "Stable" else s.current_hash
    elif kind == "fieldRef":
        m = _FIELD.match(what)
        if m:
            node: Any = s.spec
            for part in m.group(1).split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if m.group(2) is not None:
                node = node.get(m.group(2)) if isinstance(node, dict) else None
            value = node
    return ArgValue(name=arg.name, value=None if value is None else str(value))


def _share_of_current(s: RolloutState, canary: str | None, canary_weight: int) -> int:
    if canary is None:
        return 100 if s.routed_stable == s.current_hash else 0
    return canary_weight if canary == s.current_hash else 0


def _delay_scale_down(c: _Ctx, old: str, delay: float) -> tuple[PendingScaleDown, ...]:
    """The old stable waits `delay` before its scale-down; with scaleDownDelayRevisionLimit only the
    newest that many old revisions wait, older ones go at once (Argo's scaleDownDelayHelper)."""
    s = c.s
    pending = (*_without(s.scale_downs, old), PendingScaleDown(revision=old, at=c.now + delay))
    limit = s.plan.scale_down_delay_revision_limit
    if limit is None or len(pending) <= limit:
        return pending
    newest = sorted(pending, key=lambda p: revision_of(s, p.revision), reverse=True)
    return tuple(
        p if i < limit else PendingScaleDown(revision=p.revision, at=c.now) for i, p in enumerate(newest)
    )


def _without(items: Sequence[PendingScaleDown], revision: str) -> tuple[PendingScaleDown, ...]:
    return tuple(p for p in items if p.revision != revision)


def revision_of(s: RolloutState, h: str) -> int:
    for r in reversed(s.revisions):
        if r.hash == h:
            return r.number
    return 0


def _trim_history(s: RolloutState) -> None:
    keep = max(s.plan.revision_history_limit, 0) + 2
    if len(s.revisions) > keep:
        live = {s.current_hash, s.stable_hash, *s.replicas}
        drop = [r for r in s.revisions[:-keep] if r.hash not in live]
        dropped = {r.hash for r in drop}
        s.revisions = tuple(r for r in s.revisions if r.hash not in dropped)
        s.templates = {h: t for h, t in s.templates.items() if h not in dropped}


def _describe_ready(s: RolloutState) -> str:
    parts = []
    for h, n in sorted(s.ready.items(), key=lambda kv: revision_of(s, kv[0])):
        role = "stable" if h == s.stable_hash else ("canary" if h == s.current_hash else "old")
        parts.append(f"revision {revision_of(s, h)} ({role}) {n}/{s.replicas.get(h, 0)}")
    return ", ".join(parts) or "none"


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "ever"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
