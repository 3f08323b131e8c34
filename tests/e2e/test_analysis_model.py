"""The analysis model end to end: AnalysisRun records (`rollouts analysis list/get`), secret arguments that
never show up anywhere, the local `job` provider, dry-run metrics, measurement retention, and an
inconclusive run pausing the rollout until promote."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shared.embedded_server import free_port
from tests.e2e.harness import Harness, rollout

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SECRET = "s3cr3t-t0ken-value"


@pytest.fixture
async def metric_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A real HTTP metric endpoint: /ok answers {"value": 0}, /bad {"value": 5}, /mid {"value": 2};
    it records the Authorization headers /ok sees."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        if request.match_info["kind"] == "ok":
            seen.append(request.headers.get("Authorization", ""))
        value = {"ok": 0, "bad": 5, "mid": 2}[request.match_info["kind"]]
        return web.json_response({"value": value})

    app = web.Application()
    app.router.add_get("/{kind}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port, seen
    await runner.cleanup()


@pytest.fixture
async def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(json.dumps({"default": {"metrics-auth": {"token": SECRET}}}))
    monkeypatch.setenv("ROLLOUTS_SECRETS_FILE", str(secrets))  # inherited by the service processes
    h = Harness(tmp_path)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


def template(name: str, metrics: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {"metrics": metrics, **spec},
    }


def web_metric(name: str, port: int, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "successCondition": "result < 1",
        "provider": {"web": {"url": f"http://127.0.0.1:{port}/{kind}", "jsonPath": "{$.value}", **extra}},
    }


def analysis_steps(template_name: str) -> list[dict[str, Any]]:
    return [{"setWeight": 50}, {"analysis": {"templates": [{"templateName": template_name}]}}]


async def test_records_secrets_job_dry_run_and_retention(
    stack: Harness, metric_server: tuple[int, list[str]]
) -> None:
    port, seen = metric_server
    metrics = [
        {
            **web_metric(
                "authorized", port, "ok", headers=[{"key": "Authorization", "value": "Bearer {{args.token}}"}]
            ),
            "interval": "0.05s",
            "count": 6,
        },
        {
            "name": "smoke-job",
            "provider": {
                "job": {
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        "name": "t",
                                        "image": "busybox",
                                        "command": ["sh", "-c", "echo fine; exit 0"],
                                    }
                                ]
                            }
                        }
                    }
                }
            },
        },
        {**web_metric("would-fail", port, "bad"), "count": 2, "interval": "0.05s"},
    ]
    await stack.apply(
        template(
            "checks",
            metrics,
            args=[{"name": "token", "valueFrom": {"secretKeyRef": {"name": "metrics-auth", "key": "token"}}}],
            dryRun=[{"metricName": "would-fail"}],
            measurementRetention=[{"metricName": "authorized", "limit": 3}],
        )
    )
    app = free_port()
    await stack.apply(rollout("web", version=1, port=app, steps=analysis_steps("checks")))
    await stack.wait("web", lambda s: s["phase"] == "Healthy")
    await stack.apply(rollout("web", version=2, port=app, steps=analysis_steps("checks")))
    st = await stack.wait(
        "web", lambda s: s["phase"] in ("Healthy", "Degraded") and s["currentRevision"] == 2, timeout=60
    )
    assert st["phase"] == "Healthy" and st["stableRevision"] == 2  # the failing metric is dry-run only
    assert seen and all(h == f"Bearer {SECRET}" for h in seen)  # the secret reached the metric server

    run_name = st["currentAnalysisRun"]["name"]
    code, out, err = await stack.cli("analysis", "get", run_name, "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "AnalysisRun" and doc["status"]["phase"] == "Successful"
    results = {m["name"]: m for m in doc["status"]["metricResults"]}
    assert (
        results["authorized"]["count"] == 6 and len(results["authorized"]["measurements"]) == 3
    )  # retention
    assert results["smoke-job"]["phase"] == "Successful"
    assert "exited with 0" in results["smoke-job"]["measurements"][0]["message"]
    assert results["would-fail"]["phase"] == "Failed" and results["would-fail"]["dryRun"] is True

    code, out, err = await stack.cli("analysis", "list", "--rollout", "web")
    assert code == 0 and run_name in out and "Successful" in out
    code, out, err = await stack.cli("analysis", "get", run_name)
    assert code == 0 and "Metric would-fail (dry run): Failed" in out

    # The secret is nowhere: not in the run record, the rollout, its events, or any service log.
    history = json.dumps(
        [
            e.__struct_fields__ and {f: getattr(e, f) for f in e.__struct_fields__}
            for e in await stack.client.history("default", "web")
        ]
    )
    _, rollout_json, _ = await stack.cli("get", "web", "-o", "json")
    for text in (out, json.dumps(doc), history, rollout_json, stack.logs()):
        assert SECRET not in text


async def test_failing_job_aborts_and_inconclusive_pauses(
    stack: Harness, metric_server: tuple[int, list[str]]
) -> None:
    port, _ = metric_server
    failing_job = {
        "name": "job",
        "provider": {
            "job": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "t",
                                    "image": "busybox",
                                    "command": ["sh", "-c", "echo broken >&2; exit 3"],
                                }
                            ]
                        }
                    }
                }
            }
        },
    }
    await stack.apply(template("failing", [failing_job]))
    inconclusive = {**web_metric("mid", port, "mid"), "failureCondition": "result > 4"}
    await stack.apply(template("unsure", [inconclusive]))
    app = free_port()
    await stack.apply(rollout("a", version=1, port=app, steps=analysis_steps("failing")))
    await stack.wait("a", lambda s: s["phase"] == "Healthy")
    await stack.apply(rollout("a", version=2, port=app, steps=analysis_steps("failing")))
    st = await stack.wait("a", lambda s: s["phase"] == "Degraded", timeout=60)
    assert "exited with 3" in st["message"] and "broken" in st["message"]

    app2 = free_port()
    await stack.apply(rollout("b", version=1, port=app2, steps=analysis_steps("unsure")))
    await stack.wait("b", lambda s: s["phase"] == "Healthy")
    await stack.apply(rollout("b", version=2, port=app2, steps=analysis_steps("unsure")))
    st = await stack.wait("b", lambda s: s["phase"] == "Paused", timeout=60)
    assert st["pauseConditions"][0]["reason"] == "InconclusiveAnalysisRun"
    code, _, err = await stack.cli("promote", "b")
    assert code == 0, err
    st = await stack.wait("b", lambda s: s["phase"] == "Healthy" and s["stableRevision"] == 2, timeout=60)


async def test_missing_template_errors_the_run_and_aborts(stack: Harness) -> None:
    app = free_port()
    await stack.apply(rollout("c", version=1, port=app, steps=analysis_steps("nowhere")))
    await stack.wait("c", lambda s: s["phase"] == "Healthy")
    await stack.apply(rollout("c", version=2, port=app, steps=analysis_steps("nowhere")))
    st = await stack.wait("c", lambda s: s["phase"] == "Degraded", timeout=60)
    assert "AnalysisTemplate 'nowhere' not found" in st["message"]
