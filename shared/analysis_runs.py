"""AnalysisRun records: what users inspect with `rollouts analysis list/get` (pure model and fold).

The planner folds the analyzers' reports into one record per run and stores it in the
`rollouts_analysis_runs` KV bucket under `run.<run id>`; field names follow Argo's AnalysisRun status.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.messages import AnalysisRunErrored, AnalysisRunStarted, MeasurementTaken

# Argo keeps the latest ten measurements of a metric unless measurementRetention says otherwise.
DEFAULT_MEASUREMENT_RETENTION = 10
TERMINAL = {"Successful", "Failed", "Error", "Inconclusive"}


class _R(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    pass


class MeasurementRecord(_R):
    phase: str
    value: Any = None
    message: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    worker: str = ""


class MetricRecord(_R):
    name: str
    phase: str = "Running"
    message: str = ""
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    dry_run: bool = False
    next_index: int = 0  # measurements are numbered; a lower index is a duplicate
    measurements: list[MeasurementRecord] = []


class AnalysisRunRecord(_R):
    name: str  # the run id
    namespace: str
    rollout: str
    revision: int = 0
    step_index: int | None = None
    templates: list[str] = []
    phase: str = "Pending"
    message: str = ""
    started_at: float = 0.0
    finished_at: float | None = None
    retention: dict[str, int] = {}
    metrics: list[MetricRecord] = []

    def metric(self, name: str) -> MetricRecord:
        for m in self.metrics:
            if m.name == name:
                return m
        m = MetricRecord(name=name)
        self.metrics.append(m)
        return m


record_decoder = msgspec.json.Decoder(AnalysisRunRecord)


def started(record: AnalysisRunRecord, ev: AnalysisRunStarted, now: float) -> None:
    record.started_at = record.started_at or now
    record.phase = "Running" if record.phase == "Pending" else record.phase
    record.retention = dict(ev.retention)
    for name in ev.metrics:
        record.metric(name).dry_run = name in ev.dry_run


def measured(record: AnalysisRunRecord, ev: MeasurementTaken) -> None:
    """Fold one measurement in; a duplicate (same index already counted) is ignored."""
    m = record.metric(ev.metric)
    tally = ev.tally
    if ev.index < m.next_index:
        return
    m.next_index = ev.index + 1
    m.measurements.append(
        MeasurementRecord(
            phase=ev.phase,
            value=ev.value,
            message=ev.message,
            started_at=ev.started_at,
            finished_at=ev.finished_at,
            worker=ev.worker,
        )
    )
    limit = record.retention.get(ev.metric, record.retention.get("*", DEFAULT_MEASUREMENT_RETENTION))
    if limit >= 0 and len(m.measurements) > limit:
        del m.measurements[: len(m.measurements) - limit]
    m.phase = ev.metric_phase
    if tally is not None:
        m.count, m.successful, m.failed = tally.count, tally.successful, tally.failed
        m.inconclusive, m.error, m.consecutive_error = (
            tally.inconclusive,
            tally.error,
            tally.consecutive_error,
        )
        m.message = tally.message
    if record.phase not in TERMINAL:
        record.phase = "Running"


def errored(record: AnalysisRunRecord, ev: AnalysisRunErrored, now: float) -> None:
    record.phase = "Error"
    record.message = ev.message
    record.finished_at = now


def finished(record: AnalysisRunRecord, phase: str, message: str, now: float) -> None:
    if record.phase != phase or record.message != message:
        record.phase = phase
        record.message = message
        if phase in TERMINAL or phase == "Terminated":
            record.finished_at = record.finished_at or now


def as_document(record: AnalysisRunRecord) -> dict[str, Any]:
    """The run in Argo's AnalysisRun shape, for `rollouts analysis get -o json`."""
    from datetime import UTC, datetime

    def iso(ts: float | None) -> str | None:
        if not ts:
            return None
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": {
            "name": record.name,
            "namespace": record.namespace,
            "labels": {"rollout": record.rollout, "revision": str(record.revision)},
        },
        "spec": {"templates": record.templates},
        "status": {
            "phase": record.phase,
            "message": record.message,
            "startedAt": iso(record.started_at),
            "finishedAt": iso(record.finished_at),
            "metricResults": [
                {
                    "name": m.name,
                    "phase": m.phase,
                    "message": m.message,
                    "count": m.count,
                    "successful": m.successful,
                    "failed": m.failed,
                    "inconclusive": m.inconclusive,
                    "error": m.error,
                    "consecutiveError": m.consecutive_error,
                    "dryRun": m.dry_run,
                    "measurements": [
                        {
                            "phase": x.phase,
                            "value": x.value,
                            "message": x.message,
                            "startedAt": iso(x.started_at),
                            "finishedAt": iso(x.finished_at),
                        }
                        for x in m.measurements
                    ],
                }
                for m in record.metrics
            ],
        },
    }
