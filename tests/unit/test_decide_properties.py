"""Property tests of services.planner.decide.decide(), with hypothesis.

Random plans (setWeight 0..100, pauses with and without a duration, analysis steps, a random
maxTrafficWeight, replicas and scale-down delays) for 3 pod templates, and random sequences of
inputs: the commands (promote, promote --full, abort, retry, pause, resume), Ticks with increasing
`now`, the world's answers (ScaleReported and TrafficApplied with the right or a stale
generation, with errors, partial readiness), analysis feedback for the current run (started,
measurements with random phases, duplicates, errors, measurements of an older run) and new Applies
switching between the templates.

After every input it checks: decide() never raises, never mutates its input and is
deterministic; a Reject leaves the state as it was; 0 <= set_weight <= 100 and every published
canary weight is within [0, maxTrafficWeight]; 0 <= step_index <= len(steps); the stable revision is always scaled to full size; scale and
traffic generations increase; whenever abort is true the last published weight is 0 and the
stable revision is the one from before the abort; Healthy implies stable == current; replaying the
same world feedback (TrafficApplied / ScaleReported / AnalysisStarted / AnalysisMeasured /
AnalysisErrored) a second time changes nothing and decides nothing (error reports included); the state round-trips through JSON (it is persisted in a KV
bucket); and from any reachable state, resume + promote --full with a responsive world and a late
Tick ends Healthy with only the new stable revision scaled up (liveness).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.analyzer.assess import Phase
from services.planner.decide import decide
from services.planner.plan import template_hash
from services.planner.state import (
    Abort,
    AnalysisErrored,
    AnalysisMeasured,
    AnalysisStarted,
    AnalysisStep,
    Apply,
    Command,
    Input,
    Pause,
    PauseStep,
    Plan,
    Promote,
    PublishScale,
    PublishTraffic,
    Reject,
    Resume,
    Retry,
    RolloutState,
    ScaleReported,
    SetWeightStep,
    Step,
    Tick,
    TrafficApplied,
)
from services.planner.status import status_of
from shared.messages import TemplateRef

pytestmark = pytest.mark.timeout(120)

NS, NAME = "default", "app"
T0 = 1_700_000_000.0
TEMPLATES: list[dict[str, Any]] = [
    {"metadata": {"labels": {"app": "app"}}, "spec": {"containers": [{"name": "app", "image": f"app:{i}"}]}}
    for i in range(3)
]
FEEDBACK = (TrafficApplied, ScaleReported, AnalysisStarted, AnalysisMeasured, AnalysisErrored)
PHASES = [p.value for p in Phase]
METRICS = ("m1", "m2")

# --- strategies --------------------------------------------------------------------------------

steps_st: st.SearchStrategy[Step] = st.one_of(
    st.builds(SetWeightStep, weight=st.integers(0, 100)),
    st.builds(PauseStep, seconds=st.sampled_from([None, 0.0, 10.0, 60.0, 300.0])),
    st.builds(
        AnalysisStep,
        templates=st.just((TemplateRef(template_name="t"),)),
        dry_run=st.sampled_from([(), ("m2",)]),
    ),
)


ANALYSIS = AnalysisStep(templates=(TemplateRef(template_name="t"),))


def make_plans(steps: tuple[Step, ...], replicas: int = 1, max_weight: int = 100, **kw: Any) -> list[Plan]:
    return [
        Plan(
            replicas=replicas,
            steps=steps,
            template=t,
            template_hash=template_hash(t),
            images=(f"app:{i}",),
            max_traffic_weight=max_weight,
            # traffic-routed canaries: the invariants below (stable at full size) are theirs;
            # the basic canary (no trafficRouting) has its own scenario tests
            routing={"istio": {"virtualService": {"name": "vs"}}},
            **kw,
        )
        for i, t in enumerate(TEMPLATES)
    ]


@st.composite
def plans(draw: st.DrawFn, analysis: bool = False) -> list[Plan]:
    """One plan per template, all with the same (random) steps and options.

    With `analysis`, the steps have an analysis step within their first two.
    """
    steps = tuple(draw(st.lists(steps_st, max_size=6)))
    if analysis:
        at = draw(st.integers(0, min(1, len(steps))))
        steps = (*steps[:at], ANALYSIS, *steps[at:])
    replicas = draw(st.integers(1, 10))
    max_weight = draw(st.sampled_from([100, 100, 50, 25]))
    scale_down = draw(st.sampled_from([30.0, 5.0, 0.0]))
    abort_scale_down = draw(st.sampled_from([30.0, 0.0, 5.0]))
    return make_plans(
        steps,
        replicas,
        max_weight,
        scale_down_delay_seconds=scale_down,
        abort_scale_down_delay_seconds=abort_scale_down,
    )


Action = tuple[Any, ...]

analysis_st: st.SearchStrategy[Action] = st.one_of(
    st.tuples(st.just("started"), st.sampled_from([("m1",), ("m1", "m2")])),
    st.tuples(
        st.just("measured"),
        st.sampled_from(METRICS),
        st.sampled_from(PHASES),
        st.sampled_from(["next", "next", "duplicate", "old_run"]),
    ),
)

actions_st: st.SearchStrategy[Action] = st.one_of(
    st.tuples(st.just("apply"), st.integers(0, 2)),
    st.sampled_from(
        [("promote",), ("promote_full",), ("abort",), ("retry",), ("pause",), ("resume",), ("errored",)]
    ),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1000.0])),
    # the world's answers, mostly the good ones so that rollouts get somewhere; "settle" answers
    # every outstanding scale and traffic request until the planner asks for nothing more
    st.just(("settle",)),
    st.just(("settle",)),
    st.tuples(st.just("scale"), st.sampled_from(["ok", "ok", "ok", "partial", "stale", "error"])),
    st.tuples(st.just("traffic"), st.sampled_from(["ok", "ok", "ok", "stale", "error"])),
    *[analysis_st] * 2,
)


# --- the driver ----------------------------------------------------------------------------------


@dataclass
class Run:
    plans: list[Plan]
    state: RolloutState | None = None
    now: float = T0
    log: list[Command] = field(default_factory=list)
    last_run_id: str | None = None  # an analysis run that is not the current one any more

    def event_for(self, action: Action) -> Input | None:
        """The concrete input for an abstract action, given the state; None when it makes no sense."""
        s = self.state
        match action:
            case ("apply", i):
                return Apply(plan=self.plans[i], spec={"image": f"app:{i}"})
            case ("promote",):
                return Promote()
            case ("promote_full",):
                return Promote(full=True)
            case ("abort",):
                return Abort()
            case ("retry",):
                return Retry()
            case ("pause",):
                return Pause()
            case ("resume",):
                return Resume()
            case ("tick", dt):
                self.now += dt
                return Tick()
        if s is None:
            return None
        scales = [c for c in self.log if isinstance(c, PublishScale)]
        traffic = [c for c in self.log if isinstance(c, PublishTraffic)]
        match action:
            case ("scale", mode):
                if not scales:
                    return None
                d = scales[-1].desired
                ready = {rs.revision: rs.replicas for rs in d.sets}
                if mode == "partial":
                    ready = {h: (n if h == s.stable_hash else n // 2) for h, n in ready.items()}
                if mode == "stale":
                    if len(scales) < 2:
                        return None
                    d = scales[-2].desired
                    ready = {rs.revision: rs.replicas for rs in d.sets}
                    return ScaleReported(generation=d.generation, ready=ready)
                return ScaleReported(
                    generation=d.generation, ready=ready, error="quota" if mode == "error" else None
                )
            case ("traffic", mode):
                if not traffic:
                    return None
                t = traffic[-2 if mode == "stale" and len(traffic) > 1 else -1].desired
                return TrafficApplied(
                    generation=t.generation,
                    canary_weight=t.canary_weight,
                    error="router down" if mode == "error" else None,
                )
        a = s.analysis
        if a is None:
            return None
        match action:
            case ("errored",):
                return AnalysisErrored(run_id=a.run_id, message="provider unreachable")
            case ("started", metrics):
                return AnalysisStarted(run_id=a.run_id, metrics=metrics, dry_run=a.dry_run)
            case ("measured", metric, phase, mode):
                run_id = a.run_id
                index = a.metric_counts.get(metric, 0)
                if mode == "duplicate":
                    index = max(index - 1, 0)
                if mode == "old_run":
                    if self.last_run_id is None or self.last_run_id == a.run_id:
                        return None
                    run_id = self.last_run_id
                return AnalysisMeasured(
                    run_id=run_id,
                    metric=metric,
                    index=index,
                    phase=phase,
                    metric_phase=phase,
                    value=0.5,
                    metric_message=f"{metric} assessed {phase}",
                )
        return None

    def step(self, action: Action, *, strict_step_index: bool = False) -> None:
        if action == ("settle",):
            for _ in range(20):
                answered = len(self.log)
                self.step(("scale", "ok"), strict_step_index=strict_step_index)
                self.step(("traffic", "ok"), strict_step_index=strict_step_index)
                if len(self.log) == answered:
                    break
            return
        ev = self.event_for(action)
        if ev is None:
            return
        prev = self.state
        frozen = None if prev is None else msgspec.json.encode(prev)
        state, cmds = decide(prev, ev, self.now, namespace=NS, name=NAME)
        # pure: the input is untouched, and the same call gives the same answer
        if prev is not None:
            assert msgspec.json.encode(prev) == frozen, "decide() mutated its input"
        assert decide(prev, ev, self.now, namespace=NS, name=NAME) == (state, cmds), "not deterministic"
        if prev is not None and prev.analysis is not None:
            self.last_run_id = prev.analysis.run_id
        self.log.extend(cmds)
        self.state = state
        check(prev, ev, state, cmds, self.log, strict_step_index=strict_step_index)
        if state is not None and isinstance(ev, FEEDBACK):
            again, more = decide(state, ev, self.now, namespace=NS, name=NAME)
            assert more == [], f"replayed {type(ev).__name__} decided {more}"
            assert again == state, f"replayed {type(ev).__name__} changed the state"


def check(
    prev: RolloutState | None,
    ev: Input,
    s: RolloutState | None,
    cmds: list[Command],
    log: list[Command],
    *,
    strict_step_index: bool,
) -> None:
    """The invariants that hold after every decide()."""
    if any(isinstance(c, Reject) for c in cmds):
        assert len(cmds) == 1 and s is prev, "a Reject must leave the state as it was"
        return
    if s is None:
        assert prev is None and not isinstance(ev, Apply)
        return
    plan = s.plan
    n_steps = len(plan.steps)
    # weights
    assert 0 <= s.set_weight <= 100
    assert 0 <= s.actual_weight <= 100
    for c in cmds:
        if isinstance(c, PublishTraffic):
            assert 0 <= c.desired.canary_weight <= plan.max_traffic_weight, c
            assert c.desired.stable_revision == s.stable_hash or prev is not None
    # steps
    assert 0 <= status_of(s)["currentStepIndex"] <= n_steps
    if strict_step_index:
        assert 0 <= s.step_index <= n_steps, f"step_index {s.step_index} of {n_steps} steps"
    else:
        assert s.step_index >= 0
    # the stable revision (before or after this decision: promotion may switch it) at full size
    stables = {s.stable_hash} | ({prev.stable_hash} if prev is not None else set())
    for c in cmds:
        if isinstance(c, PublishScale):
            desired = {rs.revision: rs.replicas for rs in c.desired.sets}
            assert any(desired.get(h) == plan.replicas for h in stables), desired
            assert all(n > 0 for n in desired.values())
    final_scale = [c for c in cmds if isinstance(c, PublishScale)]
    if final_scale:
        desired = {rs.revision: rs.replicas for rs in final_scale[-1].desired.sets}
        assert desired.get(s.stable_hash) == plan.replicas, desired
    # generations only go up
    for kind in (PublishScale, PublishTraffic):
        gens = [c.desired.generation for c in log if isinstance(c, kind)]
        assert gens == sorted(set(gens)), gens
    # abort: traffic back to stable, stable unchanged
    if s.abort:
        published = [c for c in log if isinstance(c, PublishTraffic)]
        assert published and published[-1].desired.canary_weight == 0
        assert s.set_weight == 0 and s.step_index == 0
        assert s.phase == "Degraded"
        assert prev is not None and s.stable_hash == prev.stable_hash
        assert s.current_hash != s.stable_hash
    # Healthy only with the current revision stable
    if s.phase == "Healthy":
        assert s.stable_hash == s.current_hash
        assert not s.abort and not s.paused and not s.pause_conditions
    if s.current_hash == s.stable_hash:
        assert not s.abort and s.pause_conditions == ()
    # the KV bucket keeps it as JSON
    assert msgspec.json.decode(msgspec.json.encode(s), type=RolloutState) == s


SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(plans(), st.lists(actions_st, min_size=10, max_size=50))
def test_invariants_hold_for_any_input_sequence(plans: list[Plan], actions: list[Action]) -> None:
    run = Run(plans)
    run.step(("apply", 0))
    for action in actions:
        run.step(action)
    # and from wherever it got to, resume + promote --full with a responsive world ends Healthy
    for action in [("resume",), ("promote_full",), ("settle",), ("tick", 1000.0), ("settle",)]:
        run.step(action)
    s = run.state
    assert s is not None
    assert (s.phase, s.message) == ("Healthy", "")
    assert s.stable_hash == s.current_hash == s.plan.template_hash  # the last applied template
    assert s.step_index == len(s.plan.steps) and s.set_weight == 100
    assert s.actual_weight == 100
    assert set(s.replicas) == {s.stable_hash}


@settings(SETTINGS, max_examples=100)
@given(plans(), st.lists(actions_st, min_size=10, max_size=50))
def test_invariants_hold_for_an_idle_world(plans: list[Plan], actions: list[Action]) -> None:
    """The same, with commands and ticks only: nothing is ever confirmed."""
    run = Run(plans)
    run.step(("apply", 0))
    for action in actions:
        if action[0] in {"scale", "traffic", "started", "measured"}:
            continue
        run.step(action)


analysis_actions_st: st.SearchStrategy[Action] = st.one_of(
    analysis_st,
    analysis_st,
    st.just(("settle",)),
    st.tuples(st.just("apply"), st.integers(0, 2)),
    st.sampled_from([("promote",), ("abort",), ("retry",), ("errored",)]),
    st.tuples(st.just("tick"), st.sampled_from([1.0, 10.0, 300.0])),
)


@settings(SETTINGS, max_examples=150)
@given(plans(analysis=True), st.lists(analysis_actions_st, min_size=10, max_size=40))
def test_invariants_hold_around_analysis(plans: list[Plan], actions: list[Action]) -> None:
    """Plans with an early analysis step, and mostly analysis feedback."""
    run = Run(plans)
    run.step(("apply", 0))
    run.step(("apply", 1))
    run.step(("settle",))
    for action in actions:
        run.step(action)


@settings(SETTINGS, max_examples=100)
@given(plans(), st.lists(actions_st, min_size=10, max_size=50))
@example(  # the shortest way there: the one step done, the canary not yet at full size, promote
    plans=make_plans((SetWeightStep(weight=10),), replicas=2),
    actions=[("apply", 1), ("scale", "ok"), ("traffic", "ok"), ("promote",)],
)
def test_step_index_never_passes_the_end(plans: list[Plan], actions: list[Action]) -> None:
    run = Run(plans)
    run.step(("apply", 0), strict_step_index=True)
    for action in actions:
        run.step(action, strict_step_index=True)
