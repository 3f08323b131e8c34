"""Integration tests of the analyzer's Kubernetes Job runner against the HTTP-level API emulator
(tests.support.kube_api): the exact Job created for a measurement (DNS-safe name, Argo's
analysisrun.argoproj.io label and annotations, the spec as given), success on Complete, failure with
the Failed condition's reason, the deadline (Job deleted), cancellation (Job deleted, Background
propagation), a redelivered measurement following its existing Job, garbage collection of old Jobs,
and run_job delegating to the configured runner."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.analyzer.providers import job as job_provider
from services.analyzer.providers.errors import MeasurementError
from services.analyzer.providers.job import JobContext, run_job
from services.analyzer.providers.kube_job import (
    ANALYSIS_RUN_METRIC_ANNOTATION,
    ANALYSIS_RUN_NAME_ANNOTATION,
    ANALYSIS_RUN_UID_LABEL,
    KubeJobRunner,
    job_name,
    label_value,
)
from tests.support.kube_api import KubeEmulator

NS = "default"
SPEC: dict[str, Any] = {
    "backoffLimit": 1,
    "template": {
        "spec": {
            "containers": [{"name": "test", "image": "tester:1", "command": ["run-tests"]}],
            "restartPolicy": "Never",
        }
    },
}
CONTEXT = JobContext(namespace=NS, run_id="web-7f9c-2", metric="smoke", index=3)


def running(result: str) -> dict[str, Any]:
    """Job metadata telling the emulated Job controller how the Job ends."""
    return {"annotations": {"emulator/result": result}, "labels": {"team": "shop"}}


async def eventually(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator:
        yield emulator


@pytest.fixture
async def runner(kube: KubeEmulator) -> AsyncIterator[KubeJobRunner]:
    async with kube.api_client() as api:
        yield KubeJobRunner(api, None, deadline_grace=0.2)


def test_job_names_are_dns_labels_of_at_most_63_characters() -> None:
    assert job_name("web-7f9c-2", "smoke", 3) == "web-7f9c-2-smoke-3"
    assert job_name("Web_Run", "Error Rate", 0) == "web-run-error-rate-0"
    long = job_name("r" * 50, "m" * 40, 12)
    assert len(long) <= 63 and long.endswith("-12") and long[0].isalnum()
    assert long != job_name("r" * 50, "m" * 39 + "x", 12), "cut names stay distinct"
    assert label_value("run/1 (retry)") == "run-1-retry"
    assert len(label_value("x" * 100)) <= 63


async def test_a_completed_job_is_a_success_and_the_job_is_created_as_argo_makes_it(
    kube: KubeEmulator, runner: KubeJobRunner
) -> None:
    result = await runner.run(SPEC, metadata=running("succeed"), context=CONTEXT)
    assert (result.succeeded, result.exit_code) == (True, 0)
    assert "web-7f9c-2-smoke-3 completed" in result.message

    posts = kube.requests_to("POST", f"/apis/batch/v1/namespaces/{NS}/jobs")
    assert len(posts) == 1
    assert posts[0].body == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "web-7f9c-2-smoke-3",
            "namespace": NS,
            "labels": {"team": "shop", ANALYSIS_RUN_UID_LABEL: "web-7f9c-2"},
            "annotations": {
                "emulator/result": "succeed",
                ANALYSIS_RUN_NAME_ANNOTATION: "web-7f9c-2",
                ANALYSIS_RUN_METRIC_ANNOTATION: "smoke",
            },
        },
        "spec": SPEC,
    }
    stored = kube.get("batch/v1", "jobs", NS, "web-7f9c-2-smoke-3")
    assert stored is not None, "a finished Job is kept (as history)"
    assert "ownerReferences" not in stored["metadata"]
    assert kube.requests_to("DELETE") == []


async def test_a_failed_job_is_a_failure_with_the_conditions_reason(
    kube: KubeEmulator, runner: KubeJobRunner
) -> None:
    result = await runner.run(SPEC, metadata=running("fail"), context=CONTEXT)
    assert (result.succeeded, result.exit_code) == (False, None)
    assert result.message == (
        "job web-7f9c-2-smoke-3 failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
    )


async def test_a_job_past_its_deadline_fails_and_is_deleted(
    kube: KubeEmulator, runner: KubeJobRunner
) -> None:
    started = time.monotonic()
    result = await runner.run(
        {**SPEC, "activeDeadlineSeconds": 1}, metadata=running("running"), context=CONTEXT
    )
    assert time.monotonic() - started < 3
    assert not result.succeeded
    assert result.message == "job web-7f9c-2-smoke-3 exceeded its deadline of 1s"
    assert kube.get("batch/v1", "jobs", NS, "web-7f9c-2-smoke-3") is None
    (delete,) = kube.requests_to("DELETE", f"/apis/batch/v1/namespaces/{NS}/jobs/web-7f9c-2-smoke-3")
    assert delete.query.get("propagationPolicy") == "Background"


async def test_a_cancelled_measurement_deletes_its_job(kube: KubeEmulator, runner: KubeJobRunner) -> None:
    task = asyncio.create_task(runner.run(SPEC, metadata=running("running"), context=CONTEXT))
    await eventually(
        lambda: any(
            r.query.get("watch") for r in kube.requests_to("GET", f"/apis/batch/v1/namespaces/{NS}/jobs")
        ),
        what="the runner to watch its Job",
    )
    job = kube.get("batch/v1", "jobs", NS, "web-7f9c-2-smoke-3")
    assert job is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kube.get("batch/v1", "jobs", NS, "web-7f9c-2-smoke-3") is None
    (delete,) = kube.requests_to("DELETE", f"/apis/batch/v1/namespaces/{NS}/jobs/web-7f9c-2-smoke-3")
    assert delete.query.get("propagationPolicy") == "Background"


async def test_a_redelivered_measurement_follows_the_job_already_there(
    kube: KubeEmulator, runner: KubeJobRunner
) -> None:
    kube.job_controller = False
    kube.seed(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "web-7f9c-2-smoke-3",
                "namespace": NS,
                "annotations": {ANALYSIS_RUN_NAME_ANNOTATION: "web-7f9c-2"},
            },
            "spec": SPEC,
            "status": {
                "failed": 1,
                "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}],
            },
        }
    )
    result = await runner.run(SPEC, metadata=None, context=CONTEXT)
    assert not result.succeeded and result.message.endswith("failed: DeadlineExceeded")

    kube.seed(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "other-run-smoke-1",
                "namespace": NS,
                "annotations": {ANALYSIS_RUN_NAME_ANNOTATION: "x"},
            },
            "spec": SPEC,
        }
    )
    with pytest.raises(MeasurementError, match="belongs to another analysis run"):
        await runner.run(
            SPEC, metadata=None, context=JobContext(namespace=NS, run_id="other-run", metric="smoke", index=1)
        )


async def test_old_jobs_of_a_run_are_garbage_collected(kube: KubeEmulator) -> None:
    async with kube.api_client() as api:
        runner = KubeJobRunner(api, "analysis", history_limit=2)
        for index in range(3):
            ctx = JobContext(namespace=NS, run_id="web-7f9c-2", metric="smoke", index=index)
            assert (await runner.run(SPEC, metadata=None, context=ctx)).succeeded
    names = sorted(j["metadata"]["name"] for j in kube.list("batch/v1", "jobs", "analysis"))
    assert names == ["web-7f9c-2-smoke-1", "web-7f9c-2-smoke-2"]
    assert kube.list("batch/v1", "jobs", NS) == [], "the runner's namespace wins over the run's"


async def test_run_job_delegates_to_the_configured_runner(kube: KubeEmulator, runner: KubeJobRunner) -> None:
    job_provider.use_runner(runner)
    try:
        result = await run_job(SPEC, metadata=running("fail"), context=CONTEXT)
    finally:
        job_provider.use_runner(None)
    assert not result.succeeded
    assert kube.get("batch/v1", "jobs", NS, "web-7f9c-2-smoke-3") is not None


async def test_an_invalid_deadline_is_an_error_naming_the_field(runner: KubeJobRunner) -> None:
    with pytest.raises(MeasurementError, match=r"activeDeadlineSeconds"):
        await runner.run({**SPEC, "activeDeadlineSeconds": "soon"}, metadata=None, context=CONTEXT)
    with pytest.raises(MeasurementError, match="needs the analysis run"):
        await runner.run(SPEC, metadata=None, context=None)
