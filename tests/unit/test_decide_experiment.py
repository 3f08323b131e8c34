"""The experiment step: baseline (stable) and canary replica sets run side by side with their
analyses for the duration (or until the required ones complete); a failing analysis aborts; the
sets are scaled away when it ends."""

from __future__ import annotations

from typing import Any

import pytest

from services.planner.state import AnalysisMeasured, AnalysisStarted, PublishScale, StartAnalysis
from tests.unit.test_decide import T0, World, apply

pytestmark = pytest.mark.timeout(30)


def experiment(**extra: Any) -> list[dict[str, Any]]:
    return [
        {"setWeight": 20},
        {
            "experiment": {
                "templates": [
                    {"name": "baseline", "specRef": "stable"},
                    {"name": "canary", "specRef": "canary", "replicas": 2},
                ],
                "analyses": [{"name": "judge", "templateName": "mw"}],
                **extra,
            }
        },
        {"setWeight": 50},
    ]


def sets(w: World) -> dict[str, int]:
    last = [c for c in w.log if isinstance(c, PublishScale)][-1]
    return {s.revision: s.replicas for s in last.desired.sets}


def started_world(**extra: Any) -> World:
    w = World()
    w.send(apply("my-app:1.0.0", steps=experiment(**extra)))
    w.send(apply("my-app:2.0.0", steps=experiment(**extra)))
    return w


def verdict(w: World, phase: str) -> None:
    run = [c for c in w.log if isinstance(c, StartAnalysis)][-1].run_id
    w.send(AnalysisStarted(run_id=run, metrics=("m",)))
    w.send(AnalysisMeasured(run_id=run, metric="m", index=0, phase=phase, metric_phase=phase))


def test_runs_side_by_side_for_its_duration_then_continues() -> None:
    w = started_world(duration="60s")
    old, new = w.s.stable_hash, w.s.current_hash
    assert sets(w) == {old: 10, new: 2, f"{old}-baseline": 1, f"{new}-canary": 2}
    assert w.s.experiment is not None and w.s.experiment.started
    verdict(w, "Successful")
    assert w.s.step_index == 1  # still in the experiment until its duration is over
    w.tick(T0 + 60)
    assert w.s.experiment is None and w.s.phase == "Healthy" and w.s.stable_hash == new
    assert not any("-" in key for key in sets(w))  # the experiment's sets are gone


def test_required_analysis_ends_it_without_duration() -> None:
    steps = experiment()
    steps[1]["experiment"]["analyses"][0]["requiredForCompletion"] = True
    w = World()
    w.send(apply("my-app:1.0.0", steps=steps))
    w.send(apply("my-app:2.0.0", steps=steps))
    verdict(w, "Successful")
    assert w.s.experiment is None and w.s.step_index >= 2


def test_failing_analysis_aborts_and_removes_the_sets() -> None:
    w = started_world(duration="60s")
    old = w.s.stable_hash
    verdict(w, "Failed")
    assert w.s.abort and w.s.phase == "Degraded" and "experiment analysis judge" in w.s.message
    assert w.s.experiment is None and f"{old}-baseline" not in sets(w)
