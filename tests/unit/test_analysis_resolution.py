"""Resolving a run's templates (composition, args, secrets, dry run, retention), the secret store and
redaction, and the AnalysisRun record fold (duplicates, retention)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.analyzer.secrets import REDACTED, SecretError, SecretStore, redact
from services.analyzer.templates import ResolveError, resolve
from shared.analysis_runs import AnalysisRunRecord, measured, started
from shared.messages import AnalysisRunStarted, ArgValue, MeasurementTaken, MetricTallyView, TemplateRef

pytestmark = pytest.mark.timeout(30)


def tmpl(metrics: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"kind": "AnalysisTemplate", "spec": {"metrics": metrics, **spec}}


def metric(name: str, url: str = "http://x/{{args.svc}}") -> dict[str, Any]:
    return {"name": name, "provider": {"web": {"url": url}}}


def test_args_defaults_overrides_composition_and_dry_run() -> None:
    docs = {
        ("ns", "a"): tmpl(
            [metric("m1")],
            args=[{"name": "svc", "value": "default"}],
            templates=[{"templateName": "c", "clusterScope": True}],
            dryRun=[{"metricName": "m1"}],
        ),
        (None, "c"): tmpl(
            [metric("m2", "http://{{args.host}}/")],
            args=[{"name": "host"}],
            measurementRetention=[{"metricName": "m2", "limit": 3}],
        ),
    }
    run = resolve(
        "ns",
        (TemplateRef(template_name="a"),),
        (ArgValue(name="host", value="h1"),),
        lambda ns, n: docs.get((ns, n)),
        retention={"m1": 5},
    )
    assert [m["provider"]["web"]["url"] for m in run.metrics] == ["http://x/default", "http://h1/"]
    assert run.dry_run == {"m1"} and run.retention == {"m2": 3, "m1": 5}


def test_missing_template_argument_and_duplicate_metric_are_named() -> None:
    with pytest.raises(ResolveError, match="AnalysisTemplate 'nope' not found in namespace ns"):
        resolve("ns", (TemplateRef(template_name="nope"),), (), lambda ns, n: None)
    docs = {("ns", "a"): tmpl([metric("m")], args=[{"name": "svc"}])}
    with pytest.raises(ResolveError, match=r"args\.svc: no value"):
        resolve("ns", (TemplateRef(template_name="a"),), (), lambda ns, n: docs.get((ns, n)))
    docs = {("ns", "a"): tmpl([metric("m", "http://{{args.nope}}")])}
    with pytest.raises(ResolveError, match=r"args\.nope"):
        resolve("ns", (TemplateRef(template_name="a"),), (), lambda ns, n: docs.get((ns, n)))


def test_secret_arguments_stay_placeholders_until_measured() -> None:
    docs = {
        ("ns", "a"): tmpl(
            [
                {
                    "name": "m",
                    "provider": {
                        "web": {"url": "http://x/", "headers": [{"key": "A", "value": "{{args.tok}}"}]}
                    },
                }
            ],
            args=[{"name": "tok", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        )
    }
    run = resolve("ns", (TemplateRef(template_name="a"),), (), lambda ns, n: docs.get((ns, n)))
    assert run.metrics[0]["provider"]["web"]["headers"][0]["value"] == "{{args.tok}}"
    assert run.secrets == {"tok": ("s", "k")}


def test_secret_store_file_env_and_errors_without_values(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("ns:\n  db: {password: hunter2}\nshared: {token: abc}\n")
    store = SecretStore(file=f, environ={"ROLLOUTS_SECRET_API_KEY_VALUE": "from-env"})
    assert store.get("ns", "db", "password") == "hunter2"
    assert store.get("other", "shared", "token") == "abc"
    assert store.get("ns", "api-key", "value") == "from-env"
    with pytest.raises(SecretError) as e:
        store.get("ns", "db", "user")
    assert "hunter2" not in str(e.value) and "'db'" in str(e.value)
    assert redact({"a": ["x hunter2 y"], "b": 1}, ["hunter2"]) == {"a": [f"x {REDACTED} y"], "b": 1}


def _taken(index: int, phase: str = "Successful") -> MeasurementTaken:
    return MeasurementTaken(
        namespace="ns",
        name="r",
        run_id="run",
        metric="m",
        index=index,
        phase=phase,
        value=index,
        metric_phase="Running",
        tally=MetricTallyView(phase="Running", count=index + 1, successful=index + 1),
    )


def test_record_fold_drops_duplicates_and_keeps_the_latest_measurements() -> None:
    r = AnalysisRunRecord(name="run", namespace="ns", rollout="r")
    started(
        r, AnalysisRunStarted(namespace="ns", name="r", run_id="run", metrics=("m",), retention={"m": 2}), 1.0
    )
    for i in (0, 1, 1, 2, 0):
        measured(r, _taken(i))
    m = r.metrics[0]
    assert m.next_index == 3 and [x.value for x in m.measurements] == [1, 2] and m.count == 3
