"""The `job` provider in Kubernetes mode: the metric's Job runs as a batch/v1 Job; success = its
Complete condition, failure = its Failed condition (Argo's metricproviders/job).

The Job is ownerless (no AnalysisRun object need exist) and carries Argo's analysisrun.argoproj.io/*
label and annotations. Waiting is bounded by activeDeadlineSeconds (default 600 s) plus a grace for
the Job controller to report it; a Job still unfinished then, or whose measurement is cancelled, is
deleted with propagationPolicy Background.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Final

import msgspec
from kubernetes_asyncio import client as k8s

from services.analyzer.providers.errors import MeasurementError
from services.analyzer.providers.job import DEFAULT_DEADLINE, JobContext, JobResult
from shared import kube_wire
from shared.kube_errors import KubeRequestError, WatchGone

log = logging.getLogger(__name__)

# Argo's names (metricproviders/job/job.go).
ANALYSIS_RUN_NAME_ANNOTATION: Final = "analysisrun.argoproj.io/name"
ANALYSIS_RUN_METRIC_ANNOTATION: Final = "analysisrun.argoproj.io/metric-name"
ANALYSIS_RUN_UID_LABEL: Final = "analysisrun.argoproj.io/uid"
MAX_NAME: Final = 63  # the Job controller copies the name into a pod label, which allows 63 characters

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


# --- pure: names, the Job, its outcome -----------------------------------------------------------------


def _shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, a hash of the whole kept at the end so cut names stay distinct."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: limit - 9].rstrip('-._')}-{digest}"


def job_name(run_id: str, metric: str, index: int) -> str:
    """`<analysis-run>-<metric>-<index>` as a DNS-1123 label (lower case, `-`, at most 63 characters)."""
    base = _NOT_DNS.sub("-", f"{run_id}-{metric}".lower()).strip("-") or "analysis"
    suffix = f"-{index}"
    name = f"{base}{suffix}"
    if len(name) <= MAX_NAME:
        return name
    return f"{_shorten(base, MAX_NAME - len(suffix)).strip('-')}{suffix}"


def label_value(text: str) -> str:
    """`text` as a valid label value: [A-Za-z0-9._-], alphanumeric at both ends, at most 63 characters."""
    value = _NOT_LABEL.sub("-", text).strip("-._")
    return _shorten(value, MAX_NAME).strip("-._")


def deadline_of(job_spec: dict[str, Any], default: float = DEFAULT_DEADLINE) -> float:
    value = job_spec.get("activeDeadlineSeconds")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise MeasurementError(
            f"job.spec.activeDeadlineSeconds: must be a positive number of seconds, not {value!r}"
        )
    return float(value)


def build_job(
    job_spec: dict[str, Any],
    metadata: dict[str, Any] | None,
    *,
    name: str,
    context: JobContext,
    namespace: str,
) -> dict[str, Any]:
    """The batch/v1 Job for one measurement (Argo's newMetricJob, without the owner reference)."""
    if not isinstance(job_spec.get("template"), dict):
        raise MeasurementError("job.spec.template: a pod template is required")
    meta = metadata or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    labels[ANALYSIS_RUN_UID_LABEL] = label_value(context.run_id)
    annotations[ANALYSIS_RUN_NAME_ANNOTATION] = context.run_id
    annotations[ANALYSIS_RUN_METRIC_ANNOTATION] = context.metric
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": copy.deepcopy(job_spec),
    }


class _Condition(msgspec.Struct, kw_only=True):
    type: str = ""
    status: str = ""
    reason: str | None = None
    message: str | None = None


class _JobStatus(msgspec.Struct, kw_only=True):
    conditions: list[_Condition] | None = None
    succeeded: int | None = None
    failed: int | None = None


class _Meta(msgspec.Struct, kw_only=True, rename="camel"):
    name: str = ""
    resource_version: str = ""
    creation_timestamp: str | None = None
    annotations: dict[str, str] | None = None


class JobObject(msgspec.Struct, kw_only=True):
    metadata: _Meta = msgspec.field(default_factory=_Meta)
    status: _JobStatus = msgspec.field(default_factory=_JobStatus)


def job_outcome(job: JobObject) -> JobResult | None:
    """Complete → success, Failed → failure with the condition's reason and message; None while running."""
    name = job.metadata.name
    for c in job.status.conditions or []:
        if c.status != "True":
            continue
        if c.type == "Complete":
            return JobResult(True, 0, f"job {name} completed")
        if c.type == "Failed":
            detail = ": ".join(p for p in (c.reason, c.message) if p)
            return JobResult(False, None, f"job {name} failed" + (f": {detail}" if detail else ""))
    return None


# --- I/O: create, watch, delete -------------------------------------------------------------------------


class _JobList(msgspec.Struct, kw_only=True):
    items: list[JobObject] | None = None


class KubeJobRunner:
    """Runs job metrics as Kubernetes Jobs in `namespace` (Argo's ARGO_ROLLOUTS_ANALYSIS_JOB_NAMESPACE)
    or, when it is None, in the analysis run's own namespace."""

    def __init__(
        self,
        api_client: Any,
        namespace: str | None,
        *,
        default_deadline: float = DEFAULT_DEADLINE,  # seconds, when the spec sets no activeDeadlineSeconds
        deadline_grace: float = 5.0,  # seconds past the deadline for the Job controller to mark it Failed
        history_limit: int = 10,  # finished Jobs kept per analysis run (Argo's measurement retention)
    ) -> None:
        # Calls pass _preload_content=False and get the raw aiohttp response (decoded here with msgspec),
        # which the generated annotations do not describe: hence Any.
        self.batch: Any = k8s.BatchV1Api(api_client)
        self.namespace = namespace
        self.default_deadline = default_deadline
        self.deadline_grace = deadline_grace
        self.history_limit = history_limit

    async def run(
        self, job_spec: dict[str, Any], *, metadata: dict[str, Any] | None, context: JobContext | None
    ) -> JobResult:
        if context is None:
            raise MeasurementError(
                "job: Kubernetes mode needs the analysis run, metric and index to name the Job"
            )
        namespace = self.namespace or context.namespace
        name = job_name(context.run_id, context.metric, context.index)
        deadline = deadline_of(job_spec, self.default_deadline)
        body = build_job(job_spec, metadata, name=name, context=context, namespace=namespace)
        created = await self._create(namespace, body, context)
        try:
            async with asyncio.timeout(deadline + self.deadline_grace):
                result = await self._wait(namespace, created)
        except TimeoutError:
            await self._delete(namespace, name)
            return JobResult(False, None, f"job {name} exceeded its deadline of {deadline:g}s")
        except asyncio.CancelledError:
            # The measurement is no longer wanted (run stopped, analyzer shutting down): no orphan Job.
            with contextlib.suppress(MeasurementError):
                await asyncio.shield(self._delete(namespace, name))
            raise
        await self._collect_garbage(namespace, context)
        return result

    async def _create(self, namespace: str, body: dict[str, Any], context: JobContext) -> JobObject:
        name = body["metadata"]["name"]
        status, raw = await self._send(
            f"create Job {namespace}/{name}",
            self.batch.create_namespaced_job(namespace, body, _preload_content=False),
            allow=(409,),
        )
        if status != 409:
            log.info("%s/%s: job %s created for metric %s", namespace, context.run_id, name, context.metric)
            return msgspec.json.decode(raw, type=JobObject)
        # A redelivered measurement: the Job of the first attempt is ours if it names the same run.
        existing = await self._get(namespace, name)
        if (
            existing is None
            or (existing.metadata.annotations or {}).get(ANALYSIS_RUN_NAME_ANNOTATION) != context.run_id
        ):
            raise MeasurementError(
                f"job: Job {namespace}/{name} already exists and belongs to another analysis run"
            )
        log.info("%s/%s: job %s already exists, following it", namespace, context.run_id, name)
        return existing

    async def _wait(self, namespace: str, job: JobObject) -> JobResult:
        name = job.metadata.name
        version: str | None = job.metadata.resource_version
        current: JobObject | None = job
        while True:
            if current is None:
                return JobResult(False, None, f"job {name} was deleted before it finished")
            outcome = job_outcome(current)
            if outcome is not None:
                return outcome
            try:
                async for kind, obj in self._stream(namespace, name, version):
                    version = obj.metadata.resource_version or version
                    if kind == "DELETED":
                        return JobResult(False, None, f"job {name} was deleted before it finished")
                    if kind in ("ADDED", "MODIFIED") and (outcome := job_outcome(obj)) is not None:
                        return outcome
            except WatchGone:
                pass
            current = await self._get(namespace, name)  # the watch ended or expired: where is it now?
            version = current.metadata.resource_version if current else None

    async def _stream(
        self, namespace: str, name: str, version: str | None
    ) -> AsyncIterator[tuple[str, JobObject]]:
        call = self.batch.list_namespaced_job(
            namespace,
            field_selector=f"metadata.name={name}",
            watch=True,
            resource_version=version,
            timeout_seconds=300,
            _preload_content=False,
        )
        try:
            async for event in kube_wire.watch_events(f"watch Job {namespace}/{name}", call, JobObject):
                yield event
        except KubeRequestError as e:
            raise MeasurementError(f"job: {e}") from None

    async def _get(self, namespace: str, name: str) -> JobObject | None:
        status, raw = await self._send(
            f"get Job {namespace}/{name}",
            self.batch.read_namespaced_job(name, namespace, _preload_content=False),
            allow=(404,),
        )
        return None if status == 404 else msgspec.json.decode(raw, type=JobObject)

    async def _delete(self, namespace: str, name: str) -> None:
        await self._send(
            f"delete Job {namespace}/{name}",
            self.batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background", _preload_content=False
            ),
            allow=(404,),
        )
        log.info("%s: job %s deleted", namespace, name)

    async def _collect_garbage(self, namespace: str, context: JobContext) -> None:
        """Keeps the newest `history_limit` finished Jobs of the run (Argo's GarbageCollect)."""
        selector = f"{ANALYSIS_RUN_UID_LABEL}={label_value(context.run_id)}"
        _, raw = await self._send(
            f"list Jobs in {namespace} ({selector})",
            self.batch.list_namespaced_job(namespace, label_selector=selector, _preload_content=False),
        )
        jobs = msgspec.json.decode(raw, type=_JobList).items or []
        finished = sorted(
            (j for j in jobs if job_outcome(j) is not None),
            key=lambda j: (j.metadata.creation_timestamp or "", j.metadata.name),
        )
        for job in finished[: max(0, len(finished) - self.history_limit)]:
            await self._delete(namespace, job.metadata.name)

    async def _send(
        self, what: str, call: Awaitable[Any], *, allow: tuple[int, ...] = ()
    ) -> tuple[int, bytes]:
        """One request made with _preload_content=False: (status, body) on 2xx or an allowed status;
        anything else becomes a MeasurementError naming the request."""
        try:
            return await kube_wire.send(what, call, allow=allow)
        except KubeRequestError as e:
            raise MeasurementError(f"job: {e}") from None
