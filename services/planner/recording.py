"""Keeping AnalysisRun records: the planner folds what analyzers report into one KV entry per run.

Only the planner writes them (it handles every report of a rollout in order), so there is no
write contention between analyzers; records are what `rollouts analysis list/get` read.

`reported` and `progressed` only fold a report into the (cached) record and return it when it
changed: the planner writes it with the rest of its batch's commit (`put_of`), so a measurement
costs no round trip of its own while other rollouts wait to be decided.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from services.planner.state import AnalysisProgress, StartAnalysis
from shared import analysis_runs as runs
from shared import subjects
from shared.messages import AnalysisRunErrored, AnalysisRunStarted, Feedback, MeasurementTaken, encoder

log = logging.getLogger(__name__)


class RunRecorder:
    def __init__(self, kv: KeyValue, *, cache_size: int = 512) -> None:
        self.kv = kv
        self.cache: OrderedDict[str, runs.AnalysisRunRecord] = OrderedDict()
        self.cache_size = cache_size

    async def _get(self, run_id: str) -> runs.AnalysisRunRecord | None:
        record = self.cache.get(run_id)
        if record is None:
            try:
                entry = await self.kv.get(subjects.run_record_key(run_id))
            except KeyNotFoundError:
                return None
            if not entry.value:
                return None
            record = runs.record_decoder.decode(entry.value)
        self.cache[run_id] = record
        self.cache.move_to_end(run_id)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return record

    async def _save(self, record: runs.AnalysisRunRecord) -> None:
        await self.kv.put(subjects.run_record_key(record.name), encoder.encode(record))

    def put_of(self, record: runs.AnalysisRunRecord) -> tuple[str, bytes]:
        """The subject and payload that write `record` to its KV key."""
        return (
            f"$KV.{subjects.ANALYSIS_RUNS_BUCKET}.{subjects.run_record_key(record.name)}",
            encoder.encode(record),
        )

    async def created(self, c: StartAnalysis, now: float) -> None:
        if await self._get(c.run_id) is not None:
            return  # a redelivered decision
        record = runs.AnalysisRunRecord(
            name=c.run_id,
            namespace=c.namespace,
            rollout=c.name,
            revision=c.revision,
            step_index=c.step_index,
            templates=[t.template_name for t in c.templates],
            started_at=now,
        )
        self.cache[c.run_id] = record
        await self._save(record)

    async def reported(self, fb: Feedback, now: float) -> runs.AnalysisRunRecord | None:
        """Fold an analyzer's report into its run's record; the record, to be written."""
        if not isinstance(fb, (AnalysisRunStarted, MeasurementTaken, AnalysisRunErrored)):
            return None
        record = await self._get(fb.run_id)
        if record is None:
            return None
        match fb:
            case AnalysisRunStarted():
                runs.started(record, fb, now)
            case MeasurementTaken():
                runs.measured(record, fb)
            case AnalysisRunErrored():
                runs.errored(record, fb, now)
        return record

    async def progressed(
        self, analysis: AnalysisProgress | None, now: float
    ) -> runs.AnalysisRunRecord | None:
        """The run's phase as the planner decided it (Successful, Failed, …, or Terminated); the
        record, to be written, when that changed it."""
        if analysis is None or analysis.phase in ("Pending", "Running"):
            return None
        record = await self._get(analysis.run_id)
        if record is None or (record.phase, record.message) == (analysis.phase, analysis.message):
            return None
        runs.finished(record, analysis.phase, analysis.message, now)
        return record
