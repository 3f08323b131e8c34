"""Tests for services.cli.timeline: the pure timeline of a compiled Plan and its text/JSON views.

Covers: the seed rollout (weights 10/25/50, canary replicas 1/3/5 of 10 with the stable at 10, the
indefinite pause making the minimum time "∞ (manual)", the 5m pause, the analysis step's template and
args, the final promote entry with the 30s scale-down delay); timed pauses summing into the minimum
time; maxTrafficWeight capping the weight and the canary size; empty steps (only the promote entry);
spec.paused; zero-second pauses; valueFrom args; the header lines of the text view (first deploy
skips the steps) and the JSON document; `rollouts plan` run in-process (text, JSON, invalid file,
file without a Rollout); and the status line and exit code of `rollouts status`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from services.cli.main import main
from services.cli.timeline import (
    MANUAL,
    status_exit_code,
    status_line,
    timeline,
    timeline_document,
    timeline_view,
)
from services.planner.plan import compile_plan
from services.planner.state import PauseStep, Plan, SetWeightStep
from shared.messages import ArgValue, TemplateRef
from shared.specs import parse_rollout

pytestmark = pytest.mark.timeout(60)

SPECS = Path(__file__).resolve().parent.parent / "fixtures" / "specs"
SEED = SPECS / "seed-rollout.yaml"


def seed() -> dict[str, Any]:
    data = yaml.safe_load(SEED.read_text())
    assert isinstance(data, dict)
    return data


def with_canary(**changes: Any) -> Plan:
    data = copy.deepcopy(seed())
    data["spec"]["strategy"]["canary"].update(changes)
    return compile_plan(parse_rollout(data))


def test_seed_timeline() -> None:
    entries = timeline(compile_plan(parse_rollout(seed())))
    assert [e.step for e in entries] == [1, 2, 3, 4, 5, 6, None]
    assert [e.kind for e in entries] == [
        "setWeight",
        "pause",
        "setWeight",
        "pause",
        "setWeight",
        "analysis",
        "promote",
    ]
    assert [e.set_weight for e in entries] == [10, 10, 25, 25, 50, 50, 100]
    assert [e.canary_replicas for e in entries] == [1, 1, 3, 3, 5, 5, 10]
    assert all(e.stable_replicas == 10 for e in entries)
    assert all(e.requested_weight is None for e in entries)

    pause_forever, pause_5m = entries[1], entries[3]
    assert pause_forever.until_promoted and pause_forever.pause_seconds is None
    assert pause_forever.description == "pause until promoted"
    assert pause_5m.pause_seconds == 300 and not pause_5m.until_promoted
    assert pause_5m.description == "pause 5m"

    assert entries[0].min_time == "0s" and not entries[0].manual
    assert all(e.manual and e.min_time == MANUAL for e in entries[1:])
    assert [e.min_seconds for e in entries] == [0, 0, 0, 300, 300, 300, 300]

    analysis = entries[5]
    assert analysis.templates == (TemplateRef(template_name="http-error-rate"),)
    assert analysis.args == (
        ArgValue(name="service-name", value="my-app-canary-svc"),
        ArgValue(name="error-threshold", value="1"),
    )
    assert "http-error-rate" in analysis.description
    assert "service-name=my-app-canary-svc, error-threshold=1" in analysis.description

    promote = entries[-1]
    assert promote.scale_down_delay_seconds == 30
    assert promote.description == (
        "promote: canary scaled to 10, becomes stable; old stable scaled down after 30s"
    )


def test_timed_pauses_add_up() -> None:
    plan = with_canary(
        steps=[
            {"setWeight": 20},
            {"pause": {"duration": "30s"}},
            {"setWeight": 40},
            {"pause": {"duration": 90}},
            {"pause": {"duration": "1h"}},
        ],
        scaleDownDelaySeconds=5,
    )
    entries = timeline(plan)
    assert [e.min_time for e in entries] == ["0s", "30s", "30s", "2m", "1h2m", "1h2m"]
    assert [e.canary_replicas for e in entries] == [2, 2, 4, 4, 4, 10]
    assert not any(e.manual for e in entries)
    assert entries[-1].description.endswith("old stable scaled down after 5s")


def test_max_traffic_weight_caps_weight_and_canary_size() -> None:
    # Validation keeps setWeight <= maxTrafficWeight in specs; decide() still caps, and so does the
    # timeline, for plans built otherwise.
    plan = msgspec.structs.replace(
        compile_plan(parse_rollout(seed())),
        steps=(SetWeightStep(weight=10), SetWeightStep(weight=50), PauseStep(), SetWeightStep(weight=100)),
        max_traffic_weight=30,
    )
    entries = timeline(plan)
    assert [e.set_weight for e in entries] == [10, 30, 30, 30, 100]
    assert [e.canary_replicas for e in entries] == [1, 3, 3, 3, 10]
    assert [e.requested_weight for e in entries] == [None, 50, None, 100, None]
    assert "setWeight 50 capped by maxTrafficWeight" in entries[1].description
    assert "maxTrafficWeight 30" in timeline_view("r", "default", plan)


def test_max_traffic_weight_from_a_spec() -> None:
    data = copy.deepcopy(seed())
    canary = data["spec"]["strategy"]["canary"]
    canary["trafficRouting"] = {"nginx": {"stableIngress": "my-app"}, "maxTrafficWeight": 30}
    canary["steps"] = [{"setWeight": 10}, {"setWeight": 30}]
    plan = compile_plan(parse_rollout(data))
    assert plan.max_traffic_weight == 30
    entries = timeline(plan)
    assert [e.set_weight for e in entries] == [10, 30, 100]
    assert [e.canary_replicas for e in entries] == [1, 3, 10]
    assert timeline_document("r", "default", plan)["maxTrafficWeight"] == 30


def test_canary_replicas_round_up() -> None:
    data = copy.deepcopy(seed())
    data["spec"]["replicas"] = 3
    data["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 1}, {"setWeight": 34}, {"setWeight": 0}]
    entries = timeline(compile_plan(parse_rollout(data)))
    assert [e.canary_replicas for e in entries] == [1, 2, 0, 3]
    assert all(e.stable_replicas == 3 for e in entries)


def test_empty_steps_go_straight_to_promotion() -> None:
    options: list[list[Any] | None] = [[], None]
    for steps in options:
        data = copy.deepcopy(seed())
        canary = data["spec"]["strategy"]["canary"]
        if steps is None:
            del canary["steps"]
        else:
            canary["steps"] = steps
        entries = timeline(compile_plan(parse_rollout(data)))
        assert len(entries) == 1
        (promote,) = entries
        assert promote.kind == "promote" and promote.step is None
        assert promote.set_weight == 100 and promote.canary_replicas == 10
        assert promote.min_time == "0s" and not promote.manual


def test_spec_paused_makes_everything_manual() -> None:
    data = copy.deepcopy(seed())
    data["spec"]["paused"] = True
    data["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 50}]
    plan = compile_plan(parse_rollout(data))
    assert all(e.min_time == MANUAL for e in timeline(plan))
    assert "spec.paused is set" in timeline_view("r", "default", plan)


def test_zero_pause_is_skipped_and_weightless_start() -> None:
    plan = with_canary(
        steps=[
            {"pause": {"duration": 0}},
            {"analysis": {"templates": [{"templateName": "t", "clusterScope": True}]}},
        ]
    )
    pause, analysis, promote = timeline(plan)
    assert pause.description == "pause 0s (skipped)" and pause.pause_seconds == 0
    assert pause.set_weight == 0 and pause.canary_replicas == 0
    assert analysis.set_weight == 0 and analysis.canary_replicas == 0
    assert analysis.description == "analysis t (cluster)"
    assert promote.min_time == "0s"


def test_value_from_args_are_shown() -> None:
    plan = with_canary(
        steps=[
            {
                "analysis": {
                    "templates": [{"templateName": "t"}],
                    "args": [
                        {"name": "hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
                        {"name": "ns", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    ],
                }
            }
        ]
    )
    analysis = timeline(plan)[0]
    assert analysis.description == (
        "analysis t (hash=<podTemplateHash:Latest>, ns=<fieldRef:metadata.namespace>)"
    )


def test_text_view_and_json_document() -> None:
    plan = compile_plan(parse_rollout(seed()))
    view = timeline_view("my-app-rollout", "default", plan)
    lines = view.splitlines()
    assert lines[0] == "Rollout default/my-app-rollout: 10 replica(s), 6 step(s)"
    assert "First deploy skips the steps" in view
    header = next(line for line in lines if line.startswith("STEP"))
    assert header.split()[:5] == ["STEP", "KIND", "WEIGHT", "CANARY", "STABLE"]
    row4 = next(line for line in lines if line.startswith("4 "))
    assert row4.split()[:5] == ["4", "pause", "25", "3", "10"] and "pause 5m" in row4 and MANUAL in row4
    assert lines[-1].startswith("-") and "promote: canary scaled to 10" in lines[-1]

    doc = timeline_document("my-app-rollout", "default", plan)
    assert doc["firstDeploySkipsSteps"] is True
    json.dumps(doc)  # serialisable
    steps = doc["timeline"]
    assert steps[0] == {
        "step": 1,
        "kind": "setWeight",
        "setWeight": 10,
        "canaryReplicas": 1,
        "stableReplicas": 10,
        "minSeconds": 0.0,
        "manual": False,
        "minTime": "0s",
        "description": "set weight 10: canary scaled to 1 of 10 first",
    }
    assert steps[5]["templates"] == [{"templateName": "http-error-rate"}]
    assert steps[5]["args"][0] == {"name": "service-name", "value": "my-app-canary-svc"}
    assert steps[-1]["step"] is None and steps[-1]["scaleDownDelaySeconds"] == 30


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_plan_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "plan", "-f", str(SEED))
    assert code == 0, err
    assert "Rollout default/my-app-rollout" in out and "First deploy skips the steps" in out

    code, out, err = run_cli(capsys, "plan", "-f", str(SEED), "-o", "json")
    assert code == 0, err
    items = json.loads(out)["items"]
    assert [i["name"] for i in items] == ["my-app-rollout"]
    assert [s["canaryReplicas"] for s in items[0]["timeline"]] == [1, 1, 3, 3, 5, 5, 10]

    bad = copy.deepcopy(seed())
    bad["spec"]["strategy"]["canary"]["steps"][3]["pause"]["duration"] = "5 minutes"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    code, out, err = run_cli(capsys, "plan", "-f", str(path))
    assert code == 1 and out == ""
    assert err.startswith(f"error: {path}: ") and "steps[3].pause.duration" in err

    # The same error format as `lint` (for errors both detect).
    path.write_text("kind: Rollout\napiVersion: argoproj.io/v1alpha1\nmetadata: {name: x}\nspec: 3\n")
    code, _, plan_err = run_cli(capsys, "plan", "-f", str(path))
    lint_code, _, lint_err = run_cli(capsys, "lint", "-f", str(path))
    assert code == lint_code == 1 and plan_err == lint_err and plan_err.startswith("error: ")

    code, _, err = run_cli(capsys, "plan", "-f", str(SPECS / "analysis-templates.yaml"))
    assert code == 1 and "no Rollout" in err

    code, _, err = run_cli(capsys, "plan", "-f", str(tmp_path / "missing.yaml"))
    assert code == 1 and err.startswith("error: ")

    code, _, _ = run_cli(capsys, "plan")
    assert code == 2


def test_status_line_and_exit_code() -> None:
    assert status_line("Healthy", "") == "Healthy"
    assert status_line("Paused", "CanaryPauseStep") == "Paused - CanaryPauseStep"
    assert status_line("Degraded", "RolloutAborted: x") == "Degraded - RolloutAborted: x"
    assert [status_exit_code(p) for p in ("Healthy", "Paused", "Progressing", "Degraded")] == [0, 0, 0, 1]
