"""Background analysis (strategy.canary.analysis): skipped on the first deploy, started at
startingStep, running beside pauses; Failed aborts, Inconclusive pauses once until promote, and the
run is stopped when the rollout completes or a new revision arrives."""

from __future__ import annotations

from typing import Any

import pytest

from services.planner.state import AnalysisMeasured, AnalysisStarted, Promote, StartAnalysis, StopAnalysis
from tests.unit.test_decide import T0, World, apply

pytestmark = pytest.mark.timeout(30)

BG: dict[str, Any] = {"templates": [{"templateName": "bg"}], "startingStep": 1}
STEPS = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 40}, {"pause": {"duration": 10}}]


def starts(cmds: list[Any]) -> list[StartAnalysis]:
    return [c for c in cmds if isinstance(c, StartAnalysis)]


def world() -> World:
    w = World()
    cmds = w.send(apply("my-app:1.0.0", steps=STEPS, analysis=BG))
    assert starts(cmds) == []  # first deploy: no background analysis
    return w


def test_started_at_starting_step_and_stopped_on_completion() -> None:
    w = world()
    cmds = w.send(apply("my-app:2.0.0", steps=STEPS, analysis=BG))
    assert starts(cmds) and w.s.step_index == 1 and w.s.background is not None  # reached step 1 (pause)
    run = w.s.background.run_id
    w.send(AnalysisStarted(run_id=run, metrics=("m",)))
    w.send(AnalysisMeasured(run_id=run, metric="m", index=0, phase="Successful", metric_phase="Running"))
    w.send(Promote())
    cmds = w.tick(T0 + 100)
    assert w.s.phase == "Healthy" and w.s.stable_hash == w.s.current_hash
    assert StopAnalysis(run_id=run) in w.log


def test_failed_background_run_aborts() -> None:
    w = world()
    w.send(apply("my-app:2.0.0", steps=STEPS, analysis=BG))
    run = w.s.background.run_id  # type: ignore[union-attr]
    w.send(AnalysisStarted(run_id=run, metrics=("m",)))
    w.send(AnalysisMeasured(run_id=run, metric="m", index=0, phase="Failed", metric_phase="Failed"))
    assert w.s.abort and w.s.phase == "Degraded" and "background analysis" in w.s.message


def test_inconclusive_background_run_pauses_once_and_promote_resumes_without_skipping() -> None:
    w = world()
    w.send(apply("my-app:2.0.0", steps=STEPS, analysis=BG))
    w.send(Promote())  # past the indefinite pause: now at setWeight 40 then a timed pause
    run = w.s.background.run_id  # type: ignore[union-attr]
    w.send(AnalysisStarted(run_id=run, metrics=("m",)))
    step = w.s.step_index
    w.send(
        AnalysisMeasured(run_id=run, metric="m", index=0, phase="Inconclusive", metric_phase="Inconclusive")
    )
    assert w.s.phase == "Paused" and any(p.reason == "InconclusiveAnalysisRun" for p in w.s.pause_conditions)
    w.send(Promote())
    assert not any(p.reason == "InconclusiveAnalysisRun" for p in w.s.pause_conditions)
    assert w.s.step_index in (step, step + 1)  # the timed pause step may restart, never skipped twice
    w.tick(T0 + 1000)
    assert w.s.phase == "Healthy"


def test_new_revision_stops_the_background_run() -> None:
    w = world()
    w.send(apply("my-app:2.0.0", steps=STEPS, analysis=BG))
    run = w.s.background.run_id  # type: ignore[union-attr]
    cmds = w.send(apply("my-app:3.0.0", steps=STEPS, analysis=BG))
    assert StopAnalysis(run_id=run) in cmds
    assert w.s.background is not None and w.s.background.run_id != run  # a new run for revision 3
