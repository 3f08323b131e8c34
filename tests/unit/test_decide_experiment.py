"""The experiment step: baseline (stable) and canary replica sets run side by side with their
analyses for the duration (or until the required ones complete); a failing analysis aborts; the
sets are scaled away when it ends."""

from __future__ import annotations

from typing import Any

import pytest

from services.cli.render import rollout_view
from services.planner.state import (
    AnalysisMeasured,
    AnalysisStarted,
    PublishScale,
    PublishTraffic,
    StartAnalysis,
)
from services.planner.status import status_of
from shared.specs import SpecError
from tests.unit.test_decide import T0, World, apply, last_of

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


def weighted(**extra: Any) -> list[dict[str, Any]]:
    steps = experiment(duration="60s", **extra)
    templates = steps[1]["experiment"]["templates"]
    templates[0]["weight"] = 5
    templates[1]["weight"] = 15
    return steps


def test_weighted_templates_take_their_share_before_the_analyses_start() -> None:
    w = World()
    w.send(apply("my-app:1.0.0", steps=weighted()))
    w.answer_traffic = False
    w.send(apply("my-app:2.0.0", steps=weighted()))
    w.confirm_traffic()  # setWeight 20
    old, new = w.s.stable_hash, w.s.current_hash
    # The sets are ready; the router is told about them (out of the stable's share) and must
    # confirm before anything measures them.
    route = last_of(w.log, PublishTraffic).desired
    assert route.canary_weight == 20
    assert sorted((d.revision, d.weight, d.name) for d in route.additional) == sorted(
        [(f"{new}-canary", 15, "canary"), (f"{old}-baseline", 5, "baseline")]
    )
    assert not any(isinstance(c, StartAnalysis) for c in w.log)
    assert w.s.experiment is not None and not w.s.experiment.started
    w.confirm_traffic()
    assert any(isinstance(c, StartAnalysis) for c in w.log)
    weights = status_of(w.s)["canary"]["weights"]
    assert weights["stable"]["weight"] == 60 and weights["canary"]["weight"] == 20
    assert sorted(a["weight"] for a in weights["additional"]) == [5, 15]


def test_weighted_sets_give_their_traffic_back_before_they_are_scaled_away() -> None:
    w = World()
    w.send(apply("my-app:1.0.0", steps=weighted()))
    w.send(apply("my-app:2.0.0", steps=weighted()))
    old = w.s.stable_hash
    verdict(w, "Successful")
    w.answer_traffic = False
    w.tick(T0 + 60)
    assert w.s.experiment is None
    assert last_of(w.log, PublishTraffic).desired.additional == ()
    assert f"{old}-baseline" in sets(w)  # the router may still send it traffic
    w.confirm_traffic()
    assert f"{old}-baseline" not in sets(w)


def test_an_abort_takes_the_experiments_weights_away() -> None:
    w = World()
    w.send(apply("my-app:1.0.0", steps=weighted()))
    w.send(apply("my-app:2.0.0", steps=weighted()))
    verdict(w, "Failed")
    route = last_of(w.log, PublishTraffic).desired
    assert w.s.abort and route.canary_weight == 0 and route.additional == ()


def test_template_weights_over_100_are_refused_with_their_path() -> None:
    steps = weighted()
    steps[1]["experiment"]["templates"][1]["weight"] = 96
    with pytest.raises(SpecError) as e:
        apply("my-app:1.0.0", steps=steps)
    assert "steps[1].experiment.templates" in str(e.value)


def test_the_human_view_shows_the_running_experiment() -> None:
    w = World()
    w.send(apply("my-app:1.0.0", steps=weighted()))
    w.send(apply("my-app:2.0.0", steps=weighted()))
    old, new = w.s.stable_hash, w.s.current_hash
    view = rollout_view(w.s)
    assert "Experiment:      step 2, ends " in view
    assert f"  replica set {old}-baseline: 1/1 ready, 5% of traffic" in view
    assert f"  replica set {new}-canary: 2/2 ready, 15% of traffic" in view
    assert "  analysis judge: " in view and "Pending" in view
