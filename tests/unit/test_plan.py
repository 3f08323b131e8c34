"""Tests for services.planner.plan.compile_plan: a parsed Argo Rollout turned into the planner's Plan.

Covers: the seed rollout compiling to its 6 steps (kinds, weights, the indefinite pause, the 5m pause
as 300 s, the analysis step with its templates and args), the plan's other fields (replicas, images,
port, services, routing, defaults for maxTrafficWeight and the scale-down delays), spec.paused and
the canary options flowing into the plan; the template hash being stable across key order and
changing with the image; and the unsupported step kind (plugin) raising SpecError naming
`spec.strategy.canary.steps[i].plugin`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.planner.plan import compile_plan, template_hash
from services.planner.state import AnalysisStep, PauseStep, Plan, SetWeightStep
from shared.messages import ArgValue, TemplateRef
from shared.specs import SpecError, parse_rollout

pytestmark = pytest.mark.timeout(60)

SEED = Path(__file__).resolve().parent.parent / "fixtures" / "specs" / "seed-rollout.yaml"


def seed() -> dict[str, Any]:
    data = yaml.safe_load(SEED.read_text())
    assert isinstance(data, dict)
    return data


def compiled(data: dict[str, Any]) -> Plan:
    return compile_plan(parse_rollout(data))


def canary(data: dict[str, Any]) -> dict[str, Any]:
    c = data["spec"]["strategy"]["canary"]
    assert isinstance(c, dict)
    return c


# --- the seed rollout -------------------------------------------------------------------------


def test_seed_rollout_compiles_to_six_steps() -> None:
    plan = compiled(seed())
    assert plan.steps == (
        SetWeightStep(weight=10),
        PauseStep(seconds=None),
        SetWeightStep(weight=25),
        PauseStep(seconds=300.0),
        SetWeightStep(weight=50),
        AnalysisStep(
            templates=(TemplateRef(template_name="http-error-rate"),),
            args=(
                ArgValue(name="service-name", value="my-app-canary-svc"),
                ArgValue(name="error-threshold", value="1"),
            ),
        ),
    )


def test_seed_rollout_step_kinds_and_pause_duration() -> None:
    steps = compiled(seed()).steps
    assert [type(s).__name__ for s in steps] == [
        "SetWeightStep",
        "PauseStep",
        "SetWeightStep",
        "PauseStep",
        "SetWeightStep",
        "AnalysisStep",
    ]
    assert [s.weight for s in steps if isinstance(s, SetWeightStep)] == [10, 25, 50]
    pauses = [s for s in steps if isinstance(s, PauseStep)]
    assert pauses[0].seconds is None  # pause: {} waits for promote
    assert pauses[1].seconds == 300  # 5m


def test_seed_rollout_plan_fields() -> None:
    plan = compiled(seed())
    assert plan.replicas == 10
    assert plan.images == ("my-app:2.0.0",)
    assert plan.port == 8080
    assert plan.stable_service == "my-app-stable-svc"
    assert plan.canary_service == "my-app-canary-svc"
    assert plan.routing is not None and "istio" in plan.routing
    assert plan.max_traffic_weight == 100
    assert plan.scale_down_delay_seconds == 30
    assert plan.abort_scale_down_delay_seconds == 30
    assert plan.revision_history_limit == 10
    assert plan.paused is False
    assert plan.template == seed()["spec"]["template"]
    assert plan.template_hash == template_hash(plan.template)
    assert len(plan.template_hash) == 10


def test_canary_options_flow_into_the_plan() -> None:
    data = seed()
    data["spec"]["paused"] = True
    data["spec"]["replicas"] = 4
    data["spec"]["revisionHistoryLimit"] = 3
    c = canary(data)
    c["scaleDownDelaySeconds"] = 5
    c["abortScaleDownDelaySeconds"] = 0
    c["trafficRouting"] = {"nginx": {"stableIngress": "my-app-ingress"}, "maxTrafficWeight": 200}
    c["steps"] = [{"setWeight": 150}, {"pause": {"duration": "1h"}}, {"pause": {"duration": 45}}]
    plan = compiled(data)
    assert plan.paused is True
    assert plan.replicas == 4
    assert plan.revision_history_limit == 3
    assert plan.scale_down_delay_seconds == 5
    assert plan.abort_scale_down_delay_seconds == 0
    assert plan.max_traffic_weight == 200
    assert plan.routing is not None and "nginx" in plan.routing
    assert plan.steps == (SetWeightStep(weight=150), PauseStep(seconds=3600), PauseStep(seconds=45))


def test_analysis_step_dry_run_metrics() -> None:
    data = seed()
    canary(data)["steps"][5]["analysis"]["dryRun"] = [{"metricName": "error-rate"}]
    step = compiled(data).steps[5]
    assert isinstance(step, AnalysisStep)
    assert step.dry_run == ("error-rate",)


def test_no_steps_compiles_to_an_empty_plan() -> None:
    data = seed()
    del canary(data)["steps"]
    assert compiled(data).steps == ()


# --- template hash ------------------------------------------------------------------------------


def _reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


def test_template_hash_is_stable_across_key_order() -> None:
    template = seed()["spec"]["template"]
    reordered = _reverse_keys(template)
    assert list(reordered) != list(template)
    assert template_hash(reordered) == template_hash(template)
    data = seed()
    data["spec"]["template"] = reordered
    assert compiled(data).template_hash == compiled(seed()).template_hash


def test_template_hash_is_deterministic() -> None:
    assert compiled(seed()).template_hash == compiled(seed()).template_hash


def test_template_hash_changes_with_the_image() -> None:
    data = seed()
    data["spec"]["template"]["spec"]["containers"][0]["image"] = "my-app:2.0.1"
    changed = compiled(data)
    assert changed.template_hash != compiled(seed()).template_hash
    assert changed.images == ("my-app:2.0.1",)


def test_template_hash_ignores_non_template_fields() -> None:
    data = seed()
    data["spec"]["replicas"] = 3
    canary(data)["steps"] = [{"setWeight": 20}]
    assert compiled(data).template_hash == compiled(seed()).template_hash


# --- unsupported step kinds -----------------------------------------------------------------------

UNSUPPORTED: list[tuple[str, Any]] = [
    ("plugin", {"name": "my-plugin"}),
]


@pytest.mark.parametrize(("kind", "body"), UNSUPPORTED, ids=[k for k, _ in UNSUPPORTED])
@pytest.mark.parametrize("index", [0, 3])
def test_unsupported_step_kind_raises_spec_error_with_its_path(kind: str, body: Any, index: int) -> None:
    data = seed()
    c = canary(data)
    c["steps"].insert(index, {kind: copy.deepcopy(body)})
    # header/mirror steps need managed routes to pass validation at all
    c["trafficRouting"]["managedRoutes"] = [{"name": "header-route"}, {"name": "mirror-route"}]
    rollout = parse_rollout(data)  # accepted by the spec model (lint) ...
    with pytest.raises(SpecError) as info:
        compile_plan(rollout)  # ... but not executed by the planner
    assert info.value.path == f"spec.strategy.canary.steps[{index}].{kind}"
    assert f"spec.strategy.canary.steps[{index}].{kind}" in str(info.value)
