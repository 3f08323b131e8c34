"""Tests for shared.specs: decoding Argo Rollouts YAML/JSON into structs, error paths, validation, round-trips.

Covers: the seed rollout and other fixtures loading; rejection of bad input with the exact dotted
field path (unknown fields at several depths, maxSurge/maxUnavailable both zero, setWeight range,
unknown/multiple step kinds, missing selector, bad pause duration, bad metric interval, strict
IntOrString handling...); multi-document YAML with foreign kinds; JSON and `kind: List` input;
encode -> load equality; AnalysisTemplate/ClusterAnalysisTemplate with `{{args.*}}` placeholders;
the successCondition checker hook.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.specs import (
    AnalysisTemplate,
    ClusterAnalysisTemplate,
    OtherObject,
    Rollout,
    SpecError,
    SpecErrors,
    encode,
    load_documents,
    parse_analysis_template,
    parse_rollout,
    to_builtins,
    validate_analysis_template,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "specs"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def seed() -> dict[str, Any]:
    data = yaml.safe_load(fixture_text("seed-rollout.yaml"))
    assert isinstance(data, dict)
    return data


def template_doc() -> dict[str, Any]:
    data = next(yaml.safe_load_all(fixture_text("analysis-templates.yaml")))
    assert isinstance(data, dict)
    return data


def rejected(data: dict[str, Any] | str) -> SpecError:
    """Load `data` (a dict is dumped to YAML first) and return the SpecError it must raise."""
    text = yaml.safe_dump(data) if isinstance(data, dict) else data
    with pytest.raises(SpecError) as info:
        load_documents(text)
    return info.value


def assert_path(err: SpecError, path: str, fragment: str = "") -> None:
    assert err.path == path, str(err)
    assert str(err).startswith(f"{path}: ")
    assert fragment.lower() in err.message.lower(), err.message


Mutation = Callable[[dict[str, Any]], None]


def mutated(mutate: Mutation) -> dict[str, Any]:
    data = copy.deepcopy(seed())
    mutate(data)
    return data


def canary(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = data["spec"]["strategy"]["canary"]
    return result


# --- the seed and fixtures ----------------------------------------------------------------------


def test_seed_rollout_loads_and_validates() -> None:
    docs = load_documents(fixture_text("seed-rollout.yaml"))
    assert len(docs) == 1
    rollout = docs[0]
    assert isinstance(rollout, Rollout)
    assert rollout.metadata.name == "my-app-rollout"
    assert rollout.spec.replicas == 10
    strategy = rollout.spec.strategy.canary
    assert strategy is not None and strategy.steps is not None
    assert [s.kinds() for s in strategy.steps] == [
        ["setWeight"],
        ["pause"],
        ["setWeight"],
        ["pause"],
        ["setWeight"],
        ["analysis"],
    ]
    assert strategy.steps[1].pause is not None and strategy.steps[1].pause.duration is None
    assert strategy.steps[3].pause is not None and strategy.steps[3].pause.duration == "5m"
    analysis = strategy.steps[5].analysis
    assert analysis is not None and analysis.args is not None and analysis.templates is not None
    assert analysis.templates[0].template_name == "http-error-rate"
    assert [(a.name, a.value) for a in analysis.args] == [
        ("service-name", "my-app-canary-svc"),
        ("error-threshold", "1"),
    ]
    assert strategy.traffic_routing is not None and strategy.traffic_routing.istio is not None
    vsvc = strategy.traffic_routing.istio.virtual_service
    assert vsvc is not None and vsvc.routes == ["primary"]
    template = rollout.spec.template
    assert template is not None
    container = template.spec.containers[0]
    assert container.image == "my-app:2.0.0"
    assert container.ports is not None and container.ports[0].container_port == 8080


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_fixture_round_trips_through_encode(name: str) -> None:
    docs = load_documents((FIXTURES / name).read_bytes())
    ours = [d for d in docs if not isinstance(d, OtherObject)]
    assert ours
    for doc in ours:
        assert load_documents(encode(doc)) == [doc]
        assert load_documents(yaml.safe_dump(to_builtins(doc))) == [doc]


def test_bluegreen_fixture_fields() -> None:
    rollout = parse_rollout(fixture_text("bluegreen-rollout.yaml"))
    bg = rollout.spec.strategy.blue_green
    assert bg is not None and rollout.spec.strategy.canary is None
    assert (bg.active_service, bg.preview_service, bg.auto_promotion_enabled) == (
        "checkout-active",
        "checkout-preview",
        False,
    )
    assert bg.pre_promotion_analysis is not None and bg.pre_promotion_analysis.args is not None
    value_from = bg.pre_promotion_analysis.args[0].value_from
    assert value_from is not None and value_from.pod_template_hash_value == "Latest"
    template = rollout.spec.template
    assert template is not None
    container = template.spec.containers[0]
    assert container.ports is not None and container.ports[0].host_ip == "127.0.0.1"
    assert template.spec.host_ipc is False
    probe = container.readiness_probe
    assert probe is not None and probe.http_get is not None and probe.http_get.port == "http"
    assert container.resources is not None and container.resources.limits == {"cpu": 1, "memory": "0.5Gi"}


def test_camel_case_names_that_camel_renaming_gets_wrong() -> None:
    rollout = parse_rollout(fixture_text("bluegreen-rollout.yaml"))
    data = to_builtins(rollout)
    pod = data["spec"]["template"]["spec"]
    assert pod["hostIPC"] is False
    assert pod["containers"][0]["ports"][0]["hostIP"] == "127.0.0.1"
    assert list(data)[:2] == ["apiVersion", "kind"]


def test_int_or_string_keeps_yaml_types() -> None:
    docs = load_documents(fixture_text("multi-doc.yaml"))
    rollout = docs[-1]
    assert isinstance(rollout, Rollout)
    strategy = rollout.spec.strategy.canary
    assert strategy is not None and strategy.steps is not None
    assert strategy.max_surge == "50%"
    assert strategy.max_unavailable == 0
    pause = strategy.steps[1].pause
    assert pause is not None and pause.duration == 30
    assert encode(rollout).count(b'"maxUnavailable":0') == 1


# --- multi-document, JSON -----------------------------------------------------------------------


def test_multi_doc_returns_other_objects_for_foreign_kinds() -> None:
    docs = load_documents(fixture_text("multi-doc.yaml"))
    assert docs[:2] == [
        OtherObject(api_version="v1", kind="Service", name="my-app-canary-svc"),
        OtherObject(api_version="networking.istio.io/v1beta1", kind="VirtualService", name="my-app-vsvc"),
    ]
    assert isinstance(docs[2], Rollout)
    assert len(docs) == 3  # the empty document is skipped


def test_json_list_input() -> None:
    docs = load_documents((FIXTURES / "list.json").read_bytes())
    assert isinstance(docs[0], Rollout)
    assert docs[0].metadata.name == "json-app"
    assert docs[1] == OtherObject(api_version="v1", kind="ConfigMap", name="settings")


def test_json_object_input_and_parse_rollout_from_dict() -> None:
    text = json.dumps(seed())
    from_json = load_documents(text)
    assert from_json == [parse_rollout(seed())]
    assert from_json == [parse_rollout(text.encode())]


def test_empty_input_gives_no_documents() -> None:
    assert load_documents("") == []
    assert load_documents("---\n---\n") == []


def test_other_group_rollout_kind_is_not_ours() -> None:
    doc = {"apiVersion": "example.com/v1", "kind": "Rollout", "metadata": {"name": "x"}, "spec": {"a": 1}}
    assert load_documents(yaml.safe_dump(doc)) == [OtherObject("example.com/v1", "Rollout", "x")]


# --- decode errors (msgspec) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.update(foo=1), "foo"),
        (lambda d: d["spec"].update(foo=1), "spec.foo"),
        (lambda d: canary(d).update(foo=1), "spec.strategy.canary.foo"),
        (lambda d: canary(d)["steps"][0].update(foo=1), "spec.strategy.canary.steps[0].foo"),
        (lambda d: canary(d)["steps"].insert(2, {"foo": {}}), "spec.strategy.canary.steps[2].foo"),
        (
            lambda d: canary(d)["trafficRouting"]["istio"]["virtualService"].update(foo=1),
            "spec.strategy.canary.trafficRouting.istio.virtualService.foo",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(foo=1),
            "spec.template.spec.containers[0].foo",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(hostIp="x"),
            "spec.template.spec.containers[0].ports[0].hostIp",
        ),
        (lambda d: d["spec"]["strategy"].update({"unknown-strategy": {}}), "spec.strategy.unknown-strategy"),
    ],
)
def test_unknown_field_path(mutate: Mutation, path: str) -> None:
    err = rejected(mutated(mutate))
    assert_path(err, path, "unknown field")
    assert err.obj == "Rollout/my-app-rollout"


def test_unknown_field_in_analysis_template() -> None:
    data = template_doc()
    data["spec"]["metrics"][0]["provider"]["prometheus"]["foo"] = 1
    assert_path(rejected(data), "spec.metrics[0].provider.prometheus.foo", "unknown field")


def test_missing_required_field() -> None:
    err = rejected(mutated(lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name")))
    assert_path(err, "spec.template.spec.containers[0].name", "missing required field")


def test_missing_spec() -> None:
    err = rejected({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout"})
    assert_path(err, "spec", "missing required field")
    assert err.obj == "Rollout/<unnamed>"


def test_wrong_type_is_strict() -> None:
    err = rejected(mutated(lambda d: d["spec"].update(replicas="10")))
    assert_path(err, "spec.replicas", "expected int, got str")


def test_bool_is_not_int_or_string() -> None:
    err = rejected(mutated(lambda d: canary(d).update(maxSurge=True)))
    assert_path(err, "spec.strategy.canary.maxSurge", "got bool")


def test_unsupported_api_version() -> None:
    err = rejected(mutated(lambda d: d.update(apiVersion="argoproj.io/v1beta1")))
    assert_path(err, "apiVersion", "v1alpha1")
    assert err.obj == "Rollout/my-app-rollout"


def test_invalid_yaml_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="invalid YAML"):
        load_documents("a: [1, 2\n")


# --- rollout validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (
            lambda d: canary(d).update(maxSurge=0, maxUnavailable=0),
            "spec.strategy.canary.maxSurge",
            "both be zero",
        ),
        (
            lambda d: canary(d).update(maxSurge="0%", maxUnavailable=0),
            "spec.strategy.canary.maxSurge",
            "both be zero",
        ),
        (lambda d: canary(d).update(maxSurge="1"), "spec.strategy.canary.maxSurge", "percentage"),
        (
            lambda d: canary(d)["steps"][0].update(setWeight=101),
            "spec.strategy.canary.steps[0].setWeight",
            "0 and 100",
        ),
        (
            lambda d: canary(d)["steps"][2].update(setWeight=-1),
            "spec.strategy.canary.steps[2].setWeight",
            "0 and 100",
        ),
        (lambda d: canary(d)["steps"][0].update(pause={}), "spec.strategy.canary.steps[0]", "exactly one of"),
        (lambda d: canary(d)["steps"].append({}), "spec.strategy.canary.steps[6]", "exactly one of"),
        (
            lambda d: canary(d)["steps"][3]["pause"].update(duration="5 minutes"),
            "spec.strategy.canary.steps[3].pause.duration",
            "invalid pause duration",
        ),
        (
            lambda d: canary(d)["steps"][3]["pause"].update(duration=-5),
            "spec.strategy.canary.steps[3].pause.duration",
            "negative",
        ),
        (lambda d: d["spec"].pop("selector"), "spec.selector", "missing"),
        (lambda d: d["spec"].update(selector={}), "spec.selector", "empty selector"),
        (
            lambda d: d["spec"]["selector"]["matchLabels"].update(app="other"),
            "spec.template.metadata.labels",
            "does not match",
        ),
        (lambda d: d["spec"].pop("template"), "spec.template", "template or workloadRef"),
        (lambda d: d["spec"].update(replicas=-1), "spec.replicas", "greater than or equal to 0"),
        (lambda d: d["spec"].update(strategy={}), "spec.strategy", "one of canary or blueGreen"),
        (
            lambda d: d["spec"]["strategy"].update(blueGreen={"activeService": "a"}),
            "spec.strategy",
            "multiple strategies",
        ),
        (lambda d: canary(d).pop("canaryService"), "spec.strategy.canary.canaryService", "trafficRouting"),
        (
            lambda d: canary(d).update(stableService="my-app-canary-svc"),
            "spec.strategy.canary.stableService",
            "different services",
        ),
        (
            lambda d: canary(d)["steps"][5]["analysis"].update(templates=[]),
            "spec.strategy.canary.steps[5].analysis.templates",
            "at least one",
        ),
        (
            lambda d: canary(d)["steps"].append({"setCanaryScale": {"replicas": 1, "weight": 10}}),
            "spec.strategy.canary.steps[6].setCanaryScale",
            "exactly one of replicas, weight, matchTrafficWeight",
        ),
        (
            lambda d: canary(d)["steps"].append({"setHeaderRoute": {"name": "r"}}),
            "spec.strategy.canary.trafficRouting.managedRoutes",
            "missing",
        ),
        (
            lambda d: d["spec"]["template"]["spec"].update(containers=[]),
            "spec.template.spec.containers",
            "at least one container",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(containerPort=70000),
            "spec.template.spec.containers[0].ports[0].containerPort",
            "between 1 and 65535",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
                resources={"requests": {"memory": "lots"}}
            ),
            "spec.template.spec.containers[0].resources.requests.memory",
            "invalid quantity",
        ),
        (
            lambda d: d["spec"].update(rollbackWindow={"revisions": -1}),
            "spec.rollbackWindow.revisions",
            "greater than or equal to 0",
        ),
        (
            lambda d: d["spec"].update(minReadySeconds=700),
            "spec.progressDeadlineSeconds",
            "greater than minReadySeconds",
        ),
    ],
)
def test_rollout_validation_path(mutate: Mutation, path: str, fragment: str) -> None:
    err = rejected(mutated(mutate))
    assert_path(err, path, fragment)
    assert err.obj == "Rollout/my-app-rollout"


def test_set_weight_above_max_traffic_weight() -> None:
    def mutate(d: dict[str, Any]) -> None:
        canary(d)["trafficRouting"] = {"nginx": {"stableIngress": "ing"}, "maxTrafficWeight": 50}
        canary(d)["steps"][4]["setWeight"] = 60

    assert_path(rejected(mutated(mutate)), "spec.strategy.canary.steps[4].setWeight", "between 0 and 50")


def test_blue_green_rules() -> None:
    def bg(strategy: dict[str, Any]) -> Mutation:
        return lambda d: d["spec"].update(strategy={"blueGreen": strategy})

    assert_path(rejected(mutated(bg({}))), "spec.strategy.blueGreen.activeService", "required")
    err = rejected(mutated(bg({"activeService": "a", "previewService": "a"})))
    assert_path(err, "spec.strategy.blueGreen.activeService", "different services")
    parse_rollout(mutated(bg({"activeService": "a", "previewService": "b"})))


def test_workload_ref_needs_no_selector_or_template() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["spec"].pop("selector")
        d["spec"].pop("template")
        d["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "my-app"}

    rollout = parse_rollout(mutated(mutate))
    assert rollout.spec.workload_ref is not None and rollout.spec.workload_ref.name == "my-app"


def test_several_problems_are_all_reported() -> None:
    def mutate(d: dict[str, Any]) -> None:
        canary(d)["steps"][0]["setWeight"] = 101
        canary(d)["steps"][2]["setWeight"] = -1

    err = rejected(mutated(mutate))
    assert isinstance(err, SpecErrors)
    assert [e.path for e in err.errors] == [
        "spec.strategy.canary.steps[0].setWeight",
        "spec.strategy.canary.steps[2].setWeight",
    ]
    assert err.path == "spec.strategy.canary.steps[0].setWeight"
    assert len(str(err).splitlines()) == 2


# --- analysis templates -------------------------------------------------------------------------


def test_analysis_templates_load_with_placeholders() -> None:
    docs = load_documents(fixture_text("analysis-templates.yaml"))
    template, cluster = docs
    assert isinstance(template, AnalysisTemplate)
    assert isinstance(cluster, ClusterAnalysisTemplate)
    assert template.spec.metrics is not None
    error_rate, health = template.spec.metrics
    assert (error_rate.count, error_rate.failure_limit) == ("{{args.samples}}", "{{args.failures}}")
    assert error_rate.interval == "30s" and error_rate.initial_delay == "10s"
    assert error_rate.provider is not None and error_rate.provider.prometheus is not None
    assert error_rate.provider.prometheus.range_query is not None
    assert health.provider is not None and health.provider.web is not None
    web = health.provider.web
    assert web.method == "POST" and web.json_body == {"probe": True, "depth": [1, 2]}
    assert web.headers is not None and web.headers[0].key == "Authorization"
    assert health.consecutive_success_limit == 2
    assert template.spec.args is not None
    assert [a.name for a in template.spec.args] == ["service-name", "error-threshold", "api-token"]
    value_from = template.spec.args[2].value_from
    assert value_from is not None and value_from.secret_key_ref is not None
    assert value_from.secret_key_ref.key == "api"
    assert cluster.metadata.name == "smoke-tests"
    assert cluster.spec.metrics is not None and cluster.spec.metrics[0].provider is not None
    job = cluster.spec.metrics[0].provider.job
    assert job is not None and job.spec["backoffLimit"] == 1


def test_parse_analysis_template_requires_that_kind() -> None:
    assert parse_analysis_template(template_doc()).metadata.name == "http-error-rate"
    with pytest.raises(SpecError, match="exactly one AnalysisTemplate"):
        parse_analysis_template(fixture_text("seed-rollout.yaml"))


def first_metric(d: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = d["spec"]["metrics"][0]
    return result


def drop_interval(metric: dict[str, Any]) -> None:
    metric.pop("interval")
    metric["count"] = 5


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (lambda d: first_metric(d).update(interval="5"), "spec.metrics[0].interval", "missing unit"),
        (
            lambda d: first_metric(d).update(initialDelay="soon"),
            "spec.metrics[0].initialDelay",
            "invalid duration",
        ),
        (lambda d: first_metric(d).update(count=-1), "spec.metrics[0].count", "greater than or equal to 0"),
        (lambda d: first_metric(d).update(count="many"), "spec.metrics[0].count", "placeholder"),
        (
            lambda d: first_metric(d).update(failureLimit=-2),
            "spec.metrics[0].failureLimit",
            "greater than or equal to -1",
        ),
        (lambda d: first_metric(d).update(inconclusiveLimit="-1"), "spec.metrics[0].inconclusiveLimit", "0"),
        (
            lambda d: d["spec"]["metrics"][1].update(name="error-rate"),
            "spec.metrics[1].name",
            "duplicate metric",
        ),
        (lambda d: first_metric(d).pop("provider"), "spec.metrics[0].provider", "exactly one provider"),
        (lambda d: first_metric(d).update(provider={}), "spec.metrics[0].provider", "exactly one provider"),
        (
            lambda d: first_metric(d)["provider"].update(web={"url": "http://x"}),
            "spec.metrics[0].provider",
            "multiple providers",
        ),
        (
            lambda d: d["spec"]["metrics"][1]["provider"]["web"].pop("url"),
            "spec.metrics[1].provider.web.url",
            "url",
        ),
        (
            lambda d: d["spec"]["metrics"][1]["provider"]["web"].update(body="{}"),
            "spec.metrics[1].provider.web",
            "body or jsonBody",
        ),
        (lambda d: drop_interval(d["spec"]["metrics"][1]), "spec.metrics[1].interval", "count > 1"),
        (lambda d: d["spec"].update(metrics=[]), "spec.metrics", "at least one metric"),
    ],
)
def test_analysis_template_validation_path(mutate: Mutation, path: str, fragment: str) -> None:
    data = copy.deepcopy(template_doc())
    mutate(data)
    err = rejected(data)
    assert_path(err, path, fragment)
    assert err.obj == "AnalysisTemplate/http-error-rate"


def test_failure_limit_minus_one_is_allowed() -> None:
    data = template_doc()
    first_metric(data)["failureLimit"] = -1
    first_metric(data)["consecutiveSuccessLimit"] = 3
    parse_analysis_template(data)


def test_condition_checker_hook() -> None:
    seen: list[str] = []

    def check(expr: str) -> str | None:
        seen.append(expr)
        return "unexpected token" if "<" in expr else None

    template = parse_analysis_template(template_doc())  # no checker: syntax is not checked
    with pytest.raises(SpecError) as info:
        validate_analysis_template(template, check_condition=check)
    assert_path(info.value, "spec.metrics[0].successCondition", "unexpected token")
    assert seen == ["result[0] < {{args.error-threshold}}", "result == true"]
    with pytest.raises(SpecError) as info:
        load_documents(yaml.safe_dump(template_doc()), check_condition=check)
    assert info.value.obj == "AnalysisTemplate/http-error-rate"
