"""Scenario tests of the planner's pure core, services.planner.decide.decide().

A small `World` drives decide() the way the service would, without NATS: after each decision it
answers every PublishScale with a ScaleReported (all desired replicas ready) and every
PublishTraffic with a TrafficApplied for that generation, unless told to hold back; it also checks
on every call that decide() never mutates the state it was given.

Covers: the first apply becoming stable directly; a new revision walking the seed rollout's steps
(setWeight 10 -> pause{} -> promote -> 25 -> timed pause -> 50 -> analysis -> completion); canary
replicas = ceil(replicas * weight / 100) scaled and reported ready before the weight is published;
weights advancing only on a TrafficApplied of the right generation; maxTrafficWeight; analysis
Failed / Error / Inconclusive; promote, promote --full, abort, retry, pause, resume and the
rejections (retry when not aborted, abort when healthy, commands for an unknown rollout); a new
revision mid-rollout; fast rollback to the stable template; abortScaleDownDelaySeconds and
scaleDownDelaySeconds; the fields of emitted events; determinism and non-mutation.

Regression tests at the end: promote past the last step; an intermediate revision still routed is
not scaled down; a measurement before AnalysisStarted is not lost; redelivered error reports are not
re-emitted; a zero scaleDownDelaySeconds; actual_weight after a fast rollback; readiness of a
revision that was scaled down is not trusted when it comes back.
"""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
import yaml

from services.planner.decide import decide, next_wakeup
from services.planner.plan import compile_plan
from services.planner.state import (
    Abort,
    AnalysisErrored,
    AnalysisMeasured,
    AnalysisStarted,
    Apply,
    Command,
    Delete,
    Emit,
    Input,
    Pause,
    PauseStep,
    Promote,
    PublishScale,
    PublishTraffic,
    Reject,
    Resume,
    Retry,
    RolloutState,
    ScaleReported,
    SetWeightStep,
    StartAnalysis,
    StopAnalysis,
    Tick,
    TrafficApplied,
)
from services.planner.status import status_of
from shared.messages import RolloutEvent
from shared.specs import parse_rollout

pytestmark = pytest.mark.timeout(60)

SEED = Path(__file__).resolve().parent.parent / "fixtures" / "specs" / "seed-rollout.yaml"
NS, NAME = "default", "my-app"
T0 = 1_700_000_000.0
C = TypeVar("C")


# --- the world around decide() ----------------------------------------------------------------


def rollout_doc(
    image: str = "my-app:2.0.0",
    *,
    steps: list[dict[str, Any]] | None = None,
    replicas: int | None = None,
    paused: bool | None = None,
    **canary: Any,
) -> dict[str, Any]:
    """The seed rollout, with the image and (optionally) the steps, replicas and canary options changed."""
    doc: dict[str, Any] = yaml.safe_load(SEED.read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["image"] = image
    if steps is not None:
        doc["spec"]["strategy"]["canary"]["steps"] = steps
    if replicas is not None:
        doc["spec"]["replicas"] = replicas
    if paused is not None:
        doc["spec"]["paused"] = paused
    doc["spec"]["strategy"]["canary"].update(canary)
    return doc


def apply(image: str = "my-app:2.0.0", **kw: Any) -> Apply:
    doc = rollout_doc(image, **kw)
    return Apply(plan=compile_plan(parse_rollout(doc)), spec=doc)


class World:
    """Feeds decide() and plays the scaler and the traffic router (and nothing else)."""

    def __init__(self, now: float = T0) -> None:
        self.state: RolloutState | None = None
        self.now = now
        self.answer_scale = True
        self.answer_traffic = True
        self.log: list[Command] = []  # every command decided, in order

    @property
    def s(self) -> RolloutState:
        assert self.state is not None
        return self.state

    def send(self, event: Input, *, at: float | None = None) -> list[Command]:
        """decide() on `event`, then on the world's answers until it is quiet; all commands decided."""
        if at is not None:
            assert at >= self.now
            self.now = at
        out: list[Command] = []
        queue: list[Input] = [event]
        while queue:
            ev = queue.pop(0)
            cmds = self.decide(ev)
            out.extend(cmds)
            for c in cmds:
                if isinstance(c, PublishScale) and self.answer_scale:
                    ready = {rs.revision: rs.replicas for rs in c.desired.sets}
                    queue.append(ScaleReported(generation=c.desired.generation, ready=ready))
                if isinstance(c, PublishTraffic) and self.answer_traffic:
                    d = c.desired
                    queue.append(TrafficApplied(generation=d.generation, canary_weight=d.canary_weight))
        return out

    def decide(self, event: Input) -> list[Command]:
        """One decide() call, checking that the given state is left untouched."""
        before = None if self.state is None else msgspec.json.encode(self.state)
        snapshot = copy.deepcopy(self.state)
        state, cmds = decide(self.state, event, self.now, namespace=NS, name=NAME)
        if self.state is not None:
            assert msgspec.json.encode(self.state) == before, "decide() mutated its input state"
            assert self.state == snapshot
        self.state = state
        self.log.extend(cmds)
        return cmds

    def tick(self, at: float) -> list[Command]:
        return self.send(Tick(), at=at)

    def report_ready(self, ready: dict[str, int] | None = None) -> list[Command]:
        """Answer the last PublishScale by hand (all desired replicas ready unless `ready` is given)."""
        last = last_of(self.log, PublishScale)
        if ready is None:
            ready = {rs.revision: rs.replicas for rs in last.desired.sets}
        return self.send(ScaleReported(generation=last.desired.generation, ready=ready))

    def confirm_traffic(self) -> list[Command]:
        last = last_of(self.log, PublishTraffic)
        d = last.desired
        return self.send(TrafficApplied(generation=d.generation, canary_weight=d.canary_weight))

    def run_id(self) -> str:
        assert self.s.analysis is not None
        return self.s.analysis.run_id

    def measure(self, phase: str, metric: str = "error-rate", index: int = 0, **kw: Any) -> list[Command]:
        return self.send(
            AnalysisMeasured(
                run_id=self.run_id(), metric=metric, index=index, phase=phase, metric_phase=phase, **kw
            )
        )


def of_type(cmds: list[Command], kind: type[C]) -> list[C]:
    return [c for c in cmds if isinstance(c, kind)]


def last_of(cmds: list[Command], kind: type[C]) -> C:
    found = of_type(cmds, kind)
    assert found, f"no {kind.__name__} among {cmds}"
    return found[-1]


def events(cmds: list[Command], type_: str | None = None) -> list[RolloutEvent]:
    return [c.event for c in of_type(cmds, Emit) if type_ is None or c.event.type == type_]


def weights(cmds: list[Command]) -> list[int]:
    return [c.desired.canary_weight for c in of_type(cmds, PublishTraffic)]


def scales(cmds: list[Command]) -> list[dict[str, int]]:
    return [{rs.revision: rs.replicas for rs in c.desired.sets} for c in of_type(cmds, PublishScale)]


def stable_world(**kw: Any) -> World:
    """A world where revision 1 (my-app:2.0.0) is stable and Healthy."""
    w = World()
    w.send(apply("my-app:2.0.0", **kw))
    assert w.s.phase == "Healthy"
    return w


def canary_world(**kw: Any) -> World:
    """Revision 2 (my-app:2.1.0) started on top of a stable revision 1: at step 0 done, paused at step 1."""
    w = stable_world(**kw)
    w.send(apply("my-app:2.1.0", **kw))
    return w


# --- first apply -------------------------------------------------------------------------------


def test_first_apply_becomes_stable_directly_without_steps() -> None:
    w = World()
    cmds = w.decide(apply())
    s = w.s
    assert s.current_hash == s.stable_hash == s.plan.template_hash
    assert s.step_index == len(s.plan.steps) == 6
    assert s.set_weight == 100
    assert s.revision == 1
    assert next(e.type for e in events(cmds)) == "RolloutCreated"
    # the stable revision at full size, all traffic to it; no canary, no analysis
    assert scales(cmds) == [{s.stable_hash: 10}]
    traffic = last_of(cmds, PublishTraffic).desired
    assert (traffic.stable_revision, traffic.canary_revision, traffic.canary_weight) == (
        s.stable_hash,
        None,
        0,
    )
    assert not of_type(cmds, StartAnalysis)


def test_first_apply_is_progressing_until_scale_and_traffic_are_confirmed() -> None:
    w = World()
    w.answer_scale = w.answer_traffic = False
    w.send(apply())
    assert w.s.phase == "Progressing"
    w.report_ready()
    assert w.s.phase == "Progressing"  # traffic not confirmed yet
    assert "traffic router" in w.s.message
    w.confirm_traffic()
    assert w.s.phase == "Healthy"
    assert w.s.actual_weight == 100


def test_first_apply_is_not_healthy_with_too_few_ready_replicas() -> None:
    w = World()
    w.answer_scale = False
    w.send(apply())
    w.report_ready({w.s.stable_hash: 9})
    assert w.s.phase == "Progressing"
    assert "10 stable replica(s)" in w.s.message
    w.report_ready()
    assert w.s.phase == "Healthy"


def test_applying_the_same_document_again_changes_nothing() -> None:
    w = stable_world()
    before = w.s
    assert w.send(apply()) == []
    assert w.s == before


def test_spec_change_without_template_change_keeps_the_revision() -> None:
    w = stable_world()
    cmds = w.send(apply(replicas=4))
    assert w.s.revision == 1 and w.s.generation == 2
    assert next(e.type for e in events(cmds)) == "RolloutUpdated"
    assert scales(cmds) == [{w.s.stable_hash: 4}]
    assert w.s.phase == "Healthy"


def test_feedback_for_an_unknown_rollout_is_dropped() -> None:
    for ev in (
        Tick(),
        TrafficApplied(generation=1, canary_weight=0),
        ScaleReported(generation=1, ready={}),
        AnalysisStarted(run_id="r", metrics=("m",)),
        AnalysisMeasured(run_id="r", metric="m", index=0, phase="Successful", metric_phase="Successful"),
        AnalysisErrored(run_id="r", message="boom"),
    ):
        assert decide(None, ev, T0, namespace=NS, name=NAME) == (None, [])


@pytest.mark.parametrize("command", [Promote(), Promote(full=True), Abort(), Retry(), Pause(), Resume()])
def test_command_on_unknown_rollout_is_rejected(command: Input) -> None:
    state, cmds = decide(None, command, T0, namespace=NS, name=NAME)
    assert state is None
    assert len(cmds) == 1 and isinstance(cmds[0], Reject)
    assert f"{NS}/{NAME}" in cmds[0].message and "not found" in cmds[0].message


# --- the seed rollout's steps ---------------------------------------------------------------------


def test_new_revision_sets_weight_10_then_pauses_indefinitely() -> None:
    w = stable_world()
    stable = w.s.stable_hash
    cmds = w.send(apply("my-app:2.1.0"))
    s = w.s
    assert s.revision == 2 and s.current_hash != stable and s.stable_hash == stable
    assert weights(cmds) == [10]
    assert s.set_weight == 10 and s.actual_weight == 10
    assert s.step_index == 1
    assert s.phase == "Paused" and s.message == "CanaryPauseStep"
    assert [p.reason for p in s.pause_conditions] == ["CanaryPauseStep"]
    assert s.pause_until is None
    # an indefinite pause stays, however long we wait
    assert w.tick(T0 + 10**6) == []
    assert s.phase == "Paused" and w.s.step_index == 1
    assert status_of(w.s)["currentStepIndex"] == 1


def test_promote_leaves_the_pause_and_sets_weight_25_then_pauses_for_5m() -> None:
    w = canary_world()
    cmds = w.send(Promote(), at=T0 + 60)
    s = w.s
    assert weights(cmds) == [25]
    assert s.step_index == 3
    assert s.phase == "Paused" and s.message == "CanaryPauseStep"
    assert s.pause_until == T0 + 60 + 300
    assert next_wakeup(s) == T0 + 360
    assert "Promoted" in [e.type for e in events(cmds)]


def test_timed_pause_tick_before_the_end_does_nothing() -> None:
    w = canary_world()
    w.send(Promote())
    before = w.s
    for t in (T0, T0 + 1, T0 + 150, T0 + 299.999):
        assert w.tick(t) == []
        assert w.s == before


def test_timed_pause_tick_at_the_end_advances() -> None:
    w = canary_world()
    w.send(Promote())
    cmds = w.tick(T0 + 300)
    assert next(e.type for e in events(cmds)) == "PauseEnded"
    assert weights(cmds) == [50]
    assert w.s.pause_conditions == ()
    assert w.s.step_index == 5  # now at the analysis step


def test_timed_pause_tick_long_after_the_end_advances_once() -> None:
    w = canary_world()
    w.send(Promote())
    w.tick(T0 + 5000)
    assert w.s.step_index == 5 and w.s.set_weight == 50
    assert w.tick(T0 + 6000) == []


def at_analysis(**kw: Any) -> World:
    w = canary_world(**kw)
    w.send(Promote())
    w.tick(T0 + 300)
    assert w.s.step_index == 5
    return w


def test_analysis_step_starts_a_run() -> None:
    w = canary_world()
    w.send(Promote())
    cmds = w.tick(T0 + 300)
    start = last_of(cmds, StartAnalysis)
    assert (start.namespace, start.name) == (NS, NAME)
    assert [t.template_name for t in start.templates] == ["http-error-rate"]
    assert [(a.name, a.value) for a in start.args] == [
        ("service-name", "my-app-canary-svc"),
        ("error-threshold", "1"),
    ]
    assert w.s.analysis is not None and w.s.analysis.run_id == start.run_id
    assert w.s.phase == "Progressing" and w.s.message == "waiting for analysis"
    assert events(cmds, "AnalysisRunStarted")[0].analysis_run == start.run_id


def test_successful_analysis_advances_the_step_and_completes() -> None:
    w = at_analysis()
    old_stable, new = w.s.stable_hash, w.s.current_hash
    w.send(AnalysisStarted(run_id=w.run_id(), metrics=("error-rate",)))
    assert w.s.analysis is not None and w.s.analysis.phase == "Running"
    assert w.s.step_index == 5
    cmds = w.measure("Successful", value=0.001)
    s = w.s
    assert s.stable_hash == s.current_hash == new
    assert s.step_index == len(s.plan.steps) == 6
    assert s.set_weight == 100 and s.actual_weight == 100
    assert s.phase == "Healthy"
    assert status_of(s)["currentStepIndex"] == 6
    types = [e.type for e in events(cmds)]
    assert types.index("AnalysisRunCompleted") < types.index("StepCompleted") < types.index("RolloutPromoted")
    # the new revision is scaled to full size before it becomes stable; all traffic then goes to it
    assert scales(cmds)[0] == {new: 10, old_stable: 10}
    traffic = last_of(cmds, PublishTraffic).desired
    assert (traffic.stable_revision, traffic.canary_revision, traffic.canary_weight) == (new, None, 0)


def test_analysis_measurements_of_another_run_are_ignored() -> None:
    w = at_analysis()
    before = w.s
    assert w.send(AnalysisStarted(run_id="someone-else", metrics=("error-rate",))) == []
    ev = AnalysisMeasured(run_id="x", metric="error-rate", index=0, phase="Failed", metric_phase="Failed")
    assert w.send(ev) == []
    assert w.s == before


def test_analysis_with_two_metrics_waits_for_both() -> None:
    w = at_analysis()
    w.send(AnalysisStarted(run_id=w.run_id(), metrics=("error-rate", "latency")))
    w.measure("Successful", metric="error-rate")
    assert w.s.step_index == 5 and w.s.analysis is not None and w.s.analysis.phase == "Running"
    w.measure("Successful", metric="latency")
    assert w.s.phase == "Healthy"


def test_dry_run_metric_failure_does_not_abort() -> None:
    w = at_analysis()
    w.send(AnalysisStarted(run_id=w.run_id(), metrics=("error-rate", "latency"), dry_run=("latency",)))
    w.measure("Failed", metric="latency")
    assert not w.s.abort
    w.measure("Successful", metric="error-rate")
    assert w.s.phase == "Healthy"


# --- replicas before weight, generations ----------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "weight"),
    [(10, 10), (10, 25), (10, 50), (3, 10), (4, 50), (5, 33), (1, 1), (7, 99), (10, 100)],
)
def test_canary_replicas_are_ceil_of_replicas_times_weight(replicas: int, weight: int) -> None:
    w = stable_world(replicas=replicas, steps=[{"setWeight": weight}, {"pause": {}}])
    cmds = w.send(apply("my-app:2.1.0", replicas=replicas, steps=[{"setWeight": weight}, {"pause": {}}]))
    expected = math.ceil(replicas * weight / 100)
    assert scales(cmds)[0] == {w.s.stable_hash: replicas, w.s.current_hash: expected}
    assert w.s.replicas[w.s.current_hash] == expected


def test_weight_zero_needs_no_canary_replicas() -> None:
    w = stable_world(steps=[{"setWeight": 0}, {"pause": {}}])
    cmds = w.send(apply("my-app:2.1.0", steps=[{"setWeight": 0}, {"pause": {}}]))
    assert w.s.current_hash not in w.s.replicas
    assert weights(cmds) == [0]
    assert w.s.step_index == 1


def test_canary_replicas_are_published_and_ready_before_the_weight() -> None:
    w = stable_world()
    w.answer_scale = w.answer_traffic = False
    cmds = w.send(apply("my-app:2.1.0"))
    new = w.s.current_hash
    assert scales(cmds) == [{w.s.stable_hash: 10, new: 1}]
    assert not of_type(cmds, PublishTraffic)  # no weight before the canary is ready
    assert w.s.set_weight == 0
    assert w.s.message == "waiting for 1 canary replica(s) to be ready"
    # a report without the canary ready changes nothing
    cmds = w.report_ready({w.s.stable_hash: 10, new: 0})
    assert not of_type(cmds, PublishTraffic)
    cmds = w.report_ready()
    assert weights(cmds) == [10]
    assert w.s.set_weight == 10 and w.s.actual_weight == 0
    assert "WeightSet" in [e.type for e in events(cmds)]
    order = [type(c).__name__ for c in w.log if isinstance(c, (PublishScale, PublishTraffic))]
    assert order[-2:] == ["PublishScale", "PublishTraffic"]


def test_stale_scale_report_is_ignored() -> None:
    w = stable_world()
    w.answer_scale = False
    w.send(apply("my-app:2.1.0"))
    gen = last_of(w.log, PublishScale).desired.generation
    w.report_ready({w.s.stable_hash: 10, w.s.current_hash: 0})  # generation `gen` observed
    before = w.s
    # a late report of an older generation must not override the newer observation
    assert w.send(ScaleReported(generation=gen - 1, ready={w.s.current_hash: 1})) == []
    assert w.s == before
    assert w.s.set_weight == 0


def test_scale_reports_of_the_observed_generation_update_readiness() -> None:
    w = stable_world()
    w.answer_scale = False
    w.send(apply("my-app:2.1.0"))
    w.report_ready({w.s.stable_hash: 10, w.s.current_hash: 0})
    cmds = w.report_ready()  # the same generation again, now with the canary ready
    assert weights(cmds) == [10]


def test_weight_not_advanced_until_traffic_applied_with_the_right_generation() -> None:
    w = stable_world()
    w.answer_traffic = False
    w.send(apply("my-app:2.1.0"))
    gen = last_of(w.log, PublishTraffic).desired.generation
    assert w.s.step_index == 0 and w.s.set_weight == 10
    assert w.s.message == "waiting for the traffic router to apply weight 10"
    before = w.s
    # a stale generation (the previous routing) is ignored
    assert w.send(TrafficApplied(generation=gen - 1, canary_weight=0)) == []
    assert w.s == before
    # a generation from the future is not ours either
    assert w.send(TrafficApplied(generation=gen + 1, canary_weight=10)) == []
    assert w.s == before
    cmds = w.send(TrafficApplied(generation=gen, canary_weight=10))
    assert w.s.step_index == 1 and w.s.actual_weight == 10
    confirmed = events(cmds, "WeightConfirmed")
    assert len(confirmed) == 1 and confirmed[0].actual_weight == 10
    # the same confirmation again is a duplicate
    assert w.send(TrafficApplied(generation=gen, canary_weight=10)) == []


def test_traffic_error_does_not_confirm_the_weight() -> None:
    w = stable_world()
    w.answer_traffic = False
    w.send(apply("my-app:2.1.0"))
    gen = last_of(w.log, PublishTraffic).desired.generation
    cmds = w.send(TrafficApplied(generation=gen, canary_weight=10, error="istio down"))
    assert [e.type for e in events(cmds)] == ["TrafficError"]
    assert "istio down" in events(cmds)[0].message
    assert w.s.step_index == 0 and w.s.actual_weight == 0
    w.send(TrafficApplied(generation=gen, canary_weight=10))
    assert w.s.step_index == 1


def test_max_traffic_weight_caps_the_published_weight() -> None:
    kw: dict[str, Any] = {"trafficRouting": {"nginx": {"stableIngress": "ing"}, "maxTrafficWeight": 40}}
    w = stable_world(steps=[{"setWeight": 30}, {"pause": {}}], **kw)
    new = apply("my-app:2.1.0", steps=[{"setWeight": 40}, {"pause": {}}], **kw)
    assert new.plan.max_traffic_weight == 40
    # validation keeps setWeight <= maxTrafficWeight; decide() caps anyway
    plan = msgspec.structs.replace(new.plan, steps=(SetWeightStep(weight=60), PauseStep()))
    cmds = w.send(Apply(plan=plan, spec=new.spec))
    assert weights(cmds) == [40]
    assert w.s.set_weight == 40
    assert w.s.replicas[w.s.current_hash] == 4  # ceil(10 * 40 / 100)


# --- analysis outcomes ----------------------------------------------------------------------------


def test_failed_analysis_aborts() -> None:
    w = at_analysis()
    stable = w.s.stable_hash
    w.send(AnalysisStarted(run_id=w.run_id(), metrics=("error-rate",)))
    w.answer_traffic = False
    cmds = w.measure("Failed", value=0.2, metric_message="failed (1) > failureLimit (0)")
    s = w.s
    assert s.abort is True
    assert s.phase == "Degraded"
    assert s.stable_hash == stable
    assert s.step_index == 0 and s.set_weight == 0
    assert weights(cmds) == [0]
    assert last_of(cmds, PublishTraffic).desired.canary_revision == s.current_hash
    assert "error-rate" in s.message and "failureLimit" in s.message
    aborted = events(cmds, "RolloutAborted")
    assert len(aborted) == 1 and "error-rate" in aborted[0].message and aborted[0].abort
    assert status_of(s)["abort"] is True
    # analysis is already over: nothing to stop
    assert not of_type(cmds, StopAnalysis)


def test_error_measurement_aborts() -> None:
    w = at_analysis()
    w.send(AnalysisStarted(run_id=w.run_id(), metrics=("error-rate",)))
    cmds = w.measure("Error", message="prometheus unreachable")
    assert w.s.abort and w.s.phase == "Degraded"
    assert weights(cmds) == [0]
    assert "error-rate" in w.s.message


def test_analysis_errored_aborts() -> None:
    w = at_analysis()
    cmds = w.send(AnalysisErrored(run_id=w.run_id(), message="template http-error-rate not found"))
    assert w.s.abort and w.s.phase == "Degraded"
    assert weights(cmds) == [0]
    assert "http-error-rate not found" in w.s.message


def test_inconclusive_analysis_pauses_and_promote_continues() -> None:
    w = at_analysis()
    w.send(AnalysisStarted(run_id=w.run_id(), metrics=("error-rate",)))
    w.measure("Inconclusive")
    s = w.s
    assert not s.abort
    assert s.phase == "Paused" and s.message == "InconclusiveAnalysisRun"
    assert [p.reason for p in s.pause_conditions] == ["InconclusiveAnalysisRun"]
    # no timer ends an inconclusive pause
    assert w.tick(T0 + 10**6) == []
    w.send(Promote())
    assert w.s.phase == "Healthy"
    assert w.s.stable_hash == w.s.current_hash


def test_inconclusive_analysis_then_abort() -> None:
    w = at_analysis()
    w.send(AnalysisStarted(run_id=w.run_id(), metrics=("error-rate",)))
    w.measure("Inconclusive")
    w.send(Abort())
    assert w.s.abort and w.s.phase == "Degraded" and w.s.pause_conditions == ()


# --- promote ---------------------------------------------------------------------------------------


def test_promote_when_not_paused_skips_the_current_step() -> None:
    w = at_analysis()
    run = w.run_id()
    cmds = w.send(Promote())
    assert StopAnalysis(run_id=run) in cmds
    assert "StepSkipped" in [e.type for e in events(cmds)]
    assert w.s.phase == "Healthy" and w.s.stable_hash == w.s.current_hash


def test_promote_skips_a_set_weight_step_waiting_for_replicas() -> None:
    w = stable_world()
    w.answer_scale = False
    w.send(apply("my-app:2.1.0"))
    assert w.s.step_index == 0
    w.answer_scale = True
    cmds = w.send(Promote())
    assert w.s.step_index == 1
    assert w.s.phase == "Paused"
    assert 10 not in weights(cmds)


def test_promote_full_skips_to_completion() -> None:
    w = canary_world()
    cmds = w.send(Promote(full=True))
    s = w.s
    assert s.stable_hash == s.current_hash
    assert s.step_index == 6 and s.set_weight == 100
    assert s.phase == "Healthy"
    assert not of_type(cmds, StartAnalysis)
    assert "PromotedFull" in [e.type for e in events(cmds)]


def test_promote_full_during_analysis_stops_it() -> None:
    w = at_analysis()
    run = w.run_id()
    cmds = w.send(Promote(full=True))
    assert StopAnalysis(run_id=run) in cmds
    assert w.s.phase == "Healthy"


def test_promote_full_waits_for_full_size_before_switching_stable() -> None:
    w = canary_world()
    w.answer_scale = False
    stable = w.s.stable_hash
    cmds = w.send(Promote(full=True))
    assert scales(cmds) == [{stable: 10, w.s.current_hash: 10}]
    assert w.s.stable_hash == stable and w.s.promote_full
    assert "10 updated replica(s)" in w.s.message
    w.report_ready()
    assert w.s.stable_hash == w.s.current_hash and w.s.phase == "Healthy"


def test_promote_on_a_healthy_rollout_is_ignored() -> None:
    w = stable_world()
    before = w.s
    cmds = w.send(Promote())
    assert [e.type for e in events(cmds)] == ["PromoteIgnored"]
    assert not of_type(cmds, Reject)
    assert w.s.stable_hash == before.stable_hash and w.s.step_index == before.step_index


def test_promote_of_an_aborted_rollout_is_rejected() -> None:
    w = canary_world()
    w.send(Abort())
    before = w.s
    cmds = w.send(Promote())
    assert len(cmds) == 1 and isinstance(cmds[0], Reject) and "retry" in cmds[0].message
    assert w.s is before


def test_promote_full_of_an_aborted_rollout_goes_to_the_new_revision() -> None:
    w = canary_world()
    w.send(Abort())
    w.send(Promote(full=True))
    assert not w.s.abort
    assert w.s.stable_hash == w.s.current_hash and w.s.phase == "Healthy"


# --- abort and retry ----------------------------------------------------------------------------------


def test_abort_sends_traffic_back_to_stable() -> None:
    w = canary_world()
    w.send(Promote())  # at 25%, timed pause
    stable = w.s.stable_hash
    cmds = w.send(Abort(), at=T0 + 10)
    s = w.s
    assert s.abort and s.phase == "Degraded"
    assert s.stable_hash == stable
    assert s.step_index == 0 and s.set_weight == 0 and s.actual_weight == 0
    assert s.pause_conditions == () and s.pause_until is None
    assert weights(cmds) == [0]
    assert s.aborted_at == T0 + 10
    assert status_of(s)["abortedAt"] == "2023-11-14T22:13:30.000Z"


def test_abort_twice_is_harmless() -> None:
    w = canary_world()
    w.send(Abort())
    before = w.s
    assert w.send(Abort()) == []
    assert w.s == before


def test_abort_then_retry_restarts_at_step_0() -> None:
    w = canary_world()
    w.send(Promote())
    w.send(Abort())
    cmds = w.send(Retry())
    s = w.s
    assert not s.abort
    assert "RolloutRetried" in [e.type for e in events(cmds)]
    # step 0 (setWeight 10) runs again and the rollout stops at the pause{} of step 1
    assert weights(cmds) == [10]
    assert s.step_index == 1 and s.phase == "Paused" and s.message == "CanaryPauseStep"


def test_retry_when_not_aborted_is_rejected() -> None:
    w = canary_world()
    before = w.s
    state, cmds = decide(before, Retry(), w.now, namespace=NS, name=NAME)
    assert state is before
    assert len(cmds) == 1 and isinstance(cmds[0], Reject) and "not aborted" in cmds[0].message


def test_abort_when_healthy_is_rejected() -> None:
    w = stable_world()
    before = w.s
    state, cmds = decide(before, Abort(), w.now, namespace=NS, name=NAME)
    assert state is before
    assert len(cmds) == 1 and isinstance(cmds[0], Reject) and "nothing to abort" in cmds[0].message


def test_aborted_canary_scaled_down_after_abort_scale_down_delay() -> None:
    w = canary_world(abortScaleDownDelaySeconds=60)
    canary = w.s.current_hash
    w.send(Abort(), at=T0 + 10)
    assert w.s.replicas.get(canary) == 1  # kept for the delay
    assert w.s.abort_scale_down_at == T0 + 70
    assert next_wakeup(w.s) == T0 + 70
    assert w.tick(T0 + 69) == []
    cmds = w.tick(T0 + 70)
    assert canary not in w.s.replicas
    assert scales(cmds) == [{w.s.stable_hash: 10}]
    assert "ScaledDown" in [e.type for e in events(cmds)]
    assert w.s.phase == "Degraded"
    assert w.tick(T0 + 1000) == []


def test_abort_scale_down_delay_counts_from_the_traffic_confirmation() -> None:
    w = canary_world(abortScaleDownDelaySeconds=60)
    w.answer_traffic = False
    w.send(Abort(), at=T0 + 10)
    assert w.s.abort_scale_down_at is None
    w.tick(T0 + 100)
    assert w.s.current_hash in w.s.replicas  # still routed until the router confirms
    w.confirm_traffic()
    assert w.s.abort_scale_down_at == T0 + 160


def test_abort_scale_down_delay_zero_never_scales_the_canary_down() -> None:
    w = canary_world(abortScaleDownDelaySeconds=0)
    canary = w.s.current_hash
    w.send(Abort())
    assert w.s.abort_scale_down_at == -1
    w.tick(T0 + 10**6)
    assert w.s.replicas.get(canary) == 1


def test_retry_after_abort_scale_down_scales_the_canary_up_again() -> None:
    w = canary_world()
    canary = w.s.current_hash
    w.send(Abort())
    w.tick(T0 + 30)
    assert canary not in w.s.replicas
    cmds = w.send(Retry())
    assert scales(cmds)[0] == {w.s.stable_hash: 10, canary: 1}
    assert w.s.step_index == 1


# --- pause and resume --------------------------------------------------------------------------------


def test_pause_and_resume() -> None:
    w = stable_world()
    w.answer_scale = False
    w.send(apply("my-app:2.1.0"))
    cmds = w.send(Pause())
    assert w.s.paused and w.s.phase == "Paused" and w.s.message == "manually paused"
    assert "RolloutPaused" in [e.type for e in events(cmds)]
    # while paused the rollout does not move on, even with the canary ready
    w.answer_scale = True
    w.report_ready()
    assert w.s.step_index == 0 and w.s.set_weight == 0
    assert w.send(Pause()) == []  # pausing again is harmless
    cmds = w.send(Resume())
    assert not w.s.paused
    assert weights(cmds) == [10]
    assert w.s.step_index == 1 and w.s.message == "CanaryPauseStep"
    assert w.send(Resume()) == []


def test_paused_timed_pause_still_ends_but_does_not_advance_until_resumed() -> None:
    w = canary_world()
    w.send(Promote())  # timed pause of 300 s from T0
    w.send(Pause())
    w.tick(T0 + 400)
    assert w.s.step_index == 3 and w.s.phase == "Paused"
    w.send(Resume())
    assert w.s.step_index == 5


def test_promote_resumes_a_user_pause() -> None:
    w = canary_world()
    w.send(Promote())
    w.send(Pause())
    cmds = w.send(Promote())
    assert not w.s.paused
    assert "Resumed" in [e.type for e in events(cmds)]


def test_spec_paused_on_a_new_revision_holds_it_at_step_0() -> None:
    w = stable_world()
    w.send(apply("my-app:2.1.0", paused=True))
    assert w.s.phase == "Paused" and w.s.step_index == 0 and w.s.set_weight == 0
    w.send(Resume())
    assert w.s.step_index == 1


# --- spec changes mid-rollout --------------------------------------------------------------------------


def test_new_revision_mid_rollout_restarts_at_step_0_and_scales_the_intermediate_down() -> None:
    w = canary_world()
    w.send(Promote())  # revision 2 at 25 %
    stable, intermediate = w.s.stable_hash, w.s.current_hash
    assert w.s.replicas[intermediate] == 3
    cmds = w.send(apply("my-app:2.2.0"))
    s = w.s
    assert s.revision == 3
    assert s.current_hash not in (stable, intermediate)
    assert s.stable_hash == stable
    assert intermediate not in s.replicas
    assert scales(cmds)[-1] == {stable: 10, s.current_hash: 1}
    assert "ScaledDown" in [e.type for e in events(cmds)]
    assert last_of(cmds, PublishTraffic).desired.canary_revision == s.current_hash
    assert weights(cmds) == [10]
    assert s.step_index == 1 and s.phase == "Paused"
    assert [r.number for r in s.revisions] == [1, 2, 3]


def test_new_revision_mid_rollout_stops_the_running_analysis() -> None:
    w = at_analysis()
    run = w.run_id()
    cmds = w.send(apply("my-app:2.2.0"))
    assert StopAnalysis(run_id=run) in cmds
    assert w.s.analysis is None


def test_new_revision_clears_an_abort() -> None:
    w = canary_world()
    w.send(Abort())
    w.send(apply("my-app:2.2.0"))
    assert not w.s.abort and w.s.step_index == 1 and w.s.phase == "Paused"


def test_applying_the_stable_template_again_is_a_fast_rollback() -> None:
    w = canary_world()
    w.send(Promote())
    stable, canary = w.s.stable_hash, w.s.current_hash
    cmds = w.send(apply("my-app:2.0.0"))
    s = w.s
    assert "RolloutRolledBack" in [e.type for e in events(cmds)]
    assert s.current_hash == s.stable_hash == stable
    assert s.revision == 1
    assert s.step_index == len(s.plan.steps) and s.set_weight == 100
    assert not of_type(cmds, StartAnalysis)
    assert canary not in s.replicas
    traffic = last_of(cmds, PublishTraffic).desired
    assert (traffic.stable_revision, traffic.canary_revision, traffic.canary_weight) == (stable, None, 0)
    assert s.phase == "Healthy"


def test_fast_rollback_of_an_aborted_rollout() -> None:
    w = canary_world()
    w.send(Abort())
    w.send(apply("my-app:2.0.0"))
    assert not w.s.abort and w.s.phase == "Healthy" and w.s.current_hash == w.s.stable_hash


# --- scale-down of the old stable ---------------------------------------------------------------------


def test_old_stable_scaled_down_after_scale_down_delay() -> None:
    w = canary_world(scaleDownDelaySeconds=45)
    old = w.s.stable_hash
    w.send(Promote(full=True), at=T0 + 5)
    new = w.s.stable_hash
    assert w.s.replicas == {old: 10, new: 10}
    assert next_wakeup(w.s) == T0 + 50
    assert w.tick(T0 + 49) == []
    cmds = w.tick(T0 + 50)
    assert scales(cmds) == [{new: 10}]
    assert next(e.type for e in events(cmds)) == "ScaledDown"
    assert w.s.scale_downs == ()
    assert next_wakeup(w.s) is None
    assert w.s.phase == "Healthy"


def test_revision_after_old_stable_scale_down() -> None:
    w = canary_world()
    w.send(Promote(full=True))
    w.tick(T0 + 30)
    cmds = w.send(apply("my-app:2.2.0"))
    assert scales(cmds)[0] == {w.s.stable_hash: 10, w.s.current_hash: 1}
    assert w.s.revision == 3 and w.s.step_index == 1


# --- events ---------------------------------------------------------------------------------------------


def test_events_carry_the_rollout_fields() -> None:
    w = stable_world()
    w.now = T0 + 0.25
    cmds = w.send(apply("my-app:2.1.0"))
    evs = events(cmds)
    assert evs
    seqs = [e.seq for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for e in evs:
        assert (e.namespace, e.name) == (NS, NAME)
        assert e.revision == 2
        assert 0 <= e.step_index <= 6
        assert 0 <= e.set_weight <= 100 and 0 <= e.actual_weight <= 100
        assert e.phase in {"Healthy", "Progressing", "Paused", "Degraded"}
        assert e.time == "2023-11-14T22:13:20.250Z"
        assert datetime.fromisoformat(e.time).astimezone(UTC).timestamp() == T0 + 0.25
        assert e.message
        assert e.current_revision == w.s.current_hash and e.stable_revision == w.s.stable_hash
    started = events(cmds, "RevisionStarted")[0]
    assert (started.step_index, started.set_weight) == (0, 0)
    assert "revision 2" in started.message and "my-app:2.1.0" in started.message
    weight_set = events(cmds, "WeightSet")[0]
    assert (weight_set.step_index, weight_set.set_weight) == (0, 10)
    paused = events(cmds, "PhaseChanged")[-1]
    assert (paused.phase, paused.step_index) == ("Paused", 1)
    last = events(w.log)[-1]
    assert last.seq == w.s.event_seq


def test_weight_confirmed_event_carries_the_confirmed_weight() -> None:
    w = canary_world()
    w.send(Promote())
    confirmed = events(w.log, "WeightConfirmed")
    assert [e.actual_weight for e in confirmed] == [100, 10, 25]
    assert all(e.set_weight == e.actual_weight for e in confirmed[1:])
    w.send(Abort())
    assert events(w.log, "WeightConfirmed")[-1].actual_weight == 0


def test_measurement_events_carry_the_run_and_metric() -> None:
    w = at_analysis()
    run = w.run_id()
    w.send(AnalysisStarted(run_id=run, metrics=("error-rate",)))
    cmds = w.measure("Successful", value=0.004)
    m = events(cmds, "AnalysisMeasurement")[0]
    assert (m.analysis_run, m.metric, m.measurement) == (run, "error-rate", 0.004)


# --- purity ---------------------------------------------------------------------------------------------


def full_story() -> World:
    """Every kind of input once, with the world answering."""
    w = at_analysis(abortScaleDownDelaySeconds=20)
    w.send(AnalysisStarted(run_id=w.run_id(), metrics=("error-rate",)))
    w.measure("Failed")
    w.tick(T0 + 400)
    w.send(Retry())
    w.send(Pause())
    w.send(Resume())
    w.send(Promote())
    w.send(apply("my-app:2.2.0", abortScaleDownDelaySeconds=20))
    w.send(Promote(full=True))
    w.tick(T0 + 1000)
    return w


def test_decide_is_deterministic() -> None:
    a, b = full_story(), full_story()
    assert a.log == b.log
    assert a.s == b.s
    assert msgspec.json.encode(a.s) == msgspec.json.encode(b.s)


def test_decide_on_the_same_state_and_input_gives_equal_outputs() -> None:
    w = at_analysis()
    state = w.s
    ev = AnalysisErrored(run_id=w.run_id(), message="boom")
    first = decide(state, ev, T0 + 1, namespace=NS, name=NAME)
    second = decide(state, ev, T0 + 1, namespace=NS, name=NAME)
    assert first == second
    assert first[0] is not state


def test_decide_does_not_mutate_its_input() -> None:
    # World.decide checks this on every call; here explicitly, on a state with every field in use
    w = full_story()
    state = w.s
    frozen = msgspec.json.encode(state)
    for ev in (Abort(), Retry(), Promote(), Promote(full=True), Pause(), Tick(), apply("my-app:9")):
        decide(state, ev, T0 + 5000, namespace=NS, name=NAME)
        assert msgspec.json.encode(state) == frozen


def test_state_round_trips_through_json() -> None:
    w = full_story()
    data = msgspec.json.encode(w.s)
    assert msgspec.json.decode(data, type=RolloutState) == w.s


# --- known bugs ---------------------------------------------------------------------------------------


def test_promote_after_the_last_step_keeps_step_index_in_range() -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 10}]
    w = stable_world(steps=steps)
    w.answer_scale = False
    w.send(apply("my-app:2.1.0", steps=steps))
    w.report_ready()  # 1 canary ready: weight 10 applied, step 0 done
    # all steps done: the canary must now grow to 10 replicas; the scaler has not reported yet
    assert w.s.step_index == 1 == len(w.s.plan.steps)
    assert "10 updated replica(s)" in w.s.message
    assert w.s.stable_hash != w.s.current_hash
    w.send(Promote())
    assert w.s.step_index <= len(w.s.plan.steps)


def test_new_revision_mid_rollout_does_not_scale_down_a_revision_still_receiving_traffic() -> None:
    w = canary_world()
    w.send(Promote())  # revision 2 receives 25 %
    intermediate = w.s.current_hash
    w.answer_scale = False  # the new canary takes a while to become ready
    w.send(apply("my-app:2.2.0"))
    routed = last_of(w.log, PublishTraffic).desired
    gets_traffic = {routed.stable_revision} | ({routed.canary_revision} if routed.canary_weight else set())
    assert intermediate in gets_traffic  # still 25 % on revision 2 ...
    assert w.s.replicas.get(intermediate, 0) > 0  # ... so it must keep its pods


def test_measurement_before_analysis_started_is_not_lost() -> None:
    steps: list[dict[str, Any]] = [{"analysis": {"templates": [{"templateName": "t"}]}}]
    w = stable_world(steps=steps)
    w.send(apply("my-app:2.1.0", steps=steps))
    run = w.run_id()
    measured = AnalysisMeasured(
        run_id=run, metric="m", index=0, phase="Successful", metric_phase="Successful"
    )
    w.send(measured)
    w.send(AnalysisStarted(run_id=run, metrics=("m",)))
    w.send(measured)  # redelivered after the start
    assert w.s.phase == "Healthy"


def test_redelivered_scale_error_report_changes_nothing() -> None:
    w = stable_world()
    w.answer_scale = False
    w.send(apply("my-app:2.1.0"))
    gen = last_of(w.log, PublishScale).desired.generation
    report = ScaleReported(generation=gen, ready={w.s.stable_hash: 10}, error="exceeded quota")
    first = w.send(report)
    assert [e.type for e in events(first)] == ["ScaleError"]
    before = w.s
    assert w.send(report) == []
    assert w.s == before


def test_redelivered_traffic_error_report_changes_nothing() -> None:
    w = stable_world()
    w.answer_traffic = False
    w.send(apply("my-app:2.1.0"))
    gen = last_of(w.log, PublishTraffic).desired.generation
    report = TrafficApplied(generation=gen, canary_weight=10, error="istio down")
    w.send(report)
    before = w.s
    assert w.send(report) == []
    assert w.s == before


def test_zero_scale_down_delay_leaves_nothing_for_a_redelivered_report() -> None:
    w = canary_world(scaleDownDelaySeconds=0)
    old = w.s.stable_hash
    w.answer_scale = w.answer_traffic = False
    w.send(Promote(full=True))
    gen = last_of(w.log, PublishScale).desired.generation
    report = ScaleReported(generation=gen, ready={old: 10, w.s.current_hash: 10})
    w.send(report)
    assert w.s.stable_hash == w.s.current_hash != old  # promoted by this report
    assert w.send(report) == []  # the same report again


def test_fast_rollback_before_any_traffic_shift_reports_full_weight() -> None:
    w = stable_world()
    assert w.s.actual_weight == 100
    w.answer_scale = False  # the canary never becomes ready, so no weight is ever published for it
    assert not of_type(w.send(apply("my-app:2.1.0")), PublishTraffic)
    w.send(apply("my-app:2.0.0"))
    assert w.s.phase == "Healthy" and w.s.current_hash == w.s.stable_hash
    assert w.s.actual_weight == 100
    st = status_of(w.s)
    assert st["actualWeight"] == 100
    # As Argo reports a fully promoted rollout: no canary weight, all of it on the stable hash,
    # which is the current one.
    assert st["canary"]["weights"]["canary"]["weight"] == 0
    stable = st["canary"]["weights"]["stable"]
    assert (stable["weight"], stable["podTemplateHash"]) == (100, w.s.current_hash)


def test_weight_waits_for_fresh_readiness_of_a_revision_that_was_scaled_down() -> None:
    w = canary_world()  # revision 2 at 10 %, its 1 canary pod reported ready
    b = w.s.current_hash
    w.answer_scale = False  # from here on the scaler reports nothing
    cmds = w.send(apply("my-app:2.0.0"))  # fast rollback: revision 2 scaled to 0, traffic all stable
    assert b not in scales(cmds)[-1] and weights(cmds) == [0]
    cmds = w.send(apply("my-app:2.1.0"))  # the same template again: revision 3, pods to be recreated
    assert w.s.current_hash == b and w.s.revision == 3
    assert scales(cmds) == [{w.s.stable_hash: 10, b: 1}]
    assert weights(cmds) == []  # no weight before a ScaleReported shows the new pod ready


def test_delete_stops_runs_scales_to_zero_and_leaves_a_tombstone() -> None:
    w = stable_world()
    w.send(apply("my-app:2.1.0"))
    w.send(Promote())  # past the indefinite pause, into the timed one
    w.answer_scale = w.answer_traffic = False
    cmds = w.send(Delete())
    assert w.s.deleted and w.s.phase == "Deleted"
    assert scales(cmds) == [{}]  # every revision to zero
    traffic = of_type(cmds, PublishTraffic)
    assert len(traffic) == 1 and traffic[0].desired.stable_revision is None
    assert [e.type for e in events(cmds)] == ["RolloutDeleted"]
    # Feedback and ticks for a tombstone change nothing; commands are refused with a reason.
    before = msgspec.json.encode(w.s)
    assert w.send(Tick(), at=w.now + 3600) == []
    assert msgspec.json.encode(w.s) == before
    (reject,) = w.send(Abort())
    assert isinstance(reject, Reject) and "being deleted" in reject.message


def test_delete_of_an_unknown_rollout_is_refused() -> None:
    state, cmds = decide(None, Delete(), T0, namespace=NS, name="nope")
    assert state is None and isinstance(cmds[0], Reject) and "not found" in cmds[0].message
