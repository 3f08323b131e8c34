"""The analyzer: a worker taking analysis work from the shared JetStream work queue.

Work items are `start` (resolve templates, announce the run, enqueue each metric's first
measurement) and `measure` (take one measurement, fold it into the metric's tally, report it,
enqueue the next). A measurement's tally travels inside the work item, so workers share no
state and any number of them can run; a worker killed mid-measurement leaves its item
unacknowledged and JetStream redelivers it to another after the ack wait. Every published
result carries a Nats-Msg-Id of (run, metric, index), so a redone measurement is not doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

import aiohttp
import msgspec
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from services.analyzer.assess import (
    MetricPolicy,
    MetricTally,
    Phase,
    is_metric_done,
    measurement_phase,
    next_due,
    tally,
)
from services.analyzer.measuring import measure
from services.analyzer.providers.errors import MeasurementError
from services.analyzer.providers.job import JobContext
from services.analyzer.secrets import SecretError, SecretSource, SecretStore, redact
from services.analyzer.templates import ResolveError, resolve, substitute
from shared import subjects
from shared.durations import parse_go_duration
from shared.jetstream import Connection
from shared.messages import (
    AnalysisRunErrored,
    AnalysisRunStarted,
    AnalysisStart,
    MeasurementTaken,
    MeasureTask,
    MetricTallyView,
    encoder,
    work_decoder,
)
from shared.specs import Metric, SpecError, load_documents  # noqa: F401  (Metric typed for the decoder)

log = logging.getLogger(__name__)

WORKER = f"{socket.gethostname()}:{os.getpid()}"
# A work item due within this many seconds is held by the worker that got it, not nak'ed.
HOLD_SECONDS = 5.0
# How long a worker with free slots lingers for more items once it got one (seconds).
GREEDY_FETCH_SECONDS = 0.005


def policy_of(metric: Metric, *, dry_run: bool) -> MetricPolicy:
    """Argo's defaults: one measurement without interval, failureLimit 0, consecutiveErrorLimit 4."""
    interval = parse_go_duration(metric.interval) if metric.interval else None
    count = _int(metric.count, "count")
    if count is None and interval is None:
        count = 1
    return MetricPolicy(
        name=metric.name,
        success_condition=metric.success_condition or None,
        failure_condition=metric.failure_condition or None,
        count=count,
        interval_seconds=interval,
        failure_limit=_int(metric.failure_limit, "failureLimit", 0),
        inconclusive_limit=_int(metric.inconclusive_limit, "inconclusiveLimit", 0),
        consecutive_error_limit=_int(metric.consecutive_error_limit, "consecutiveErrorLimit", 4),
        consecutive_success_limit=_int(metric.consecutive_success_limit, "consecutiveSuccessLimit"),
        dry_run=dry_run,
    )


def _int(value: int | str | None, field: str, default: int | None = None) -> Any:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as e:
        raise SpecError(field, f"must be an integer, got {value!r}") from e


def tally_view(t: MetricTally) -> MetricTallyView:
    return msgspec.convert(msgspec.to_builtins(t), MetricTallyView)


def tally_of(v: MetricTallyView | None) -> MetricTally:
    if v is None:
        return MetricTally()
    return msgspec.convert(msgspec.to_builtins(v), MetricTally)


class Analyzer:
    def __init__(self, conn: Connection, *, concurrency: int, ack_wait: float) -> None:
        self.conn = conn
        self.concurrency = max(1, concurrency)
        self.ack_wait = ack_wait
        self.slots = asyncio.Semaphore(self.concurrency)
        self.inflight: set[asyncio.Task[None]] = set()
        self.draining = False
        self.session: aiohttp.ClientSession | None = None
        self.templates: KeyValue | None = None
        self.runs: KeyValue | None = None
        self.measured = 0
        self.secrets: SecretSource = SecretStore.from_env()

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        js = self.conn.js
        self.templates = await js.key_value(subjects.TEMPLATES_BUCKET)
        self.runs = await js.key_value(subjects.ANALYSIS_RUNS_BUCKET)
        self.session = aiohttp.ClientSession()
        config = ConsumerConfig(
            durable_name=subjects.ANALYZER_CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            max_ack_pending=100_000,
        )
        # Create or update: a changed ack wait reaches a consumer that already exists.
        try:
            await js.add_consumer(subjects.ANALYSIS_WORK_STREAM, config=config)
        except Exception as e:
            log.warning("could not update the analyzers consumer (keeping its settings): %r", e)
        sub = await js.pull_subscribe(
            subjects.ANALYSIS_WORK_WILDCARD,
            durable=subjects.ANALYZER_CONSUMER,
            stream=subjects.ANALYSIS_WORK_STREAM,
            config=config,
        )
        log.info("analyzer started (concurrency %d)", self.concurrency)
        if ready is not None:
            ready.set()
        try:
            while not stop.is_set():
                # Wait for one item (a lingering pull returns as soon as one is there), then take
                # whatever else is already waiting, up to the free slots, without lingering: a pull
                # never holds items back while this worker is busy, and workers share the queue.
                await self.slots.acquire()
                try:
                    msgs = await sub.fetch(1, timeout=1.0)
                except TimeoutError:
                    self.slots.release()
                    continue
                except BaseException:
                    self.slots.release()
                    raise
                free = self.slots._value
                if free > 0:
                    with contextlib.suppress(TimeoutError):
                        msgs += await sub.fetch(free, timeout=GREEDY_FETCH_SECONDS)
                for i, msg in enumerate(msgs):
                    if i > 0:
                        await self.slots.acquire()
                    task = asyncio.create_task(self._guarded(msg))
                    self.inflight.add(task)
                    task.add_done_callback(self.inflight.discard)
        finally:
            # SIGTERM drains: finish what was taken, take nothing new.
            self.draining = True
            if self.inflight:
                log.info("draining %d in-flight work item(s)", len(self.inflight))
                await asyncio.gather(*self.inflight, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            await self.session.close()

    async def _guarded(self, msg: Msg) -> None:
        try:
            await self._handle(msg)
        except Exception:  # the error boundary: the item is retried later
            log.exception("work item on %s failed; it will be redelivered", msg.subject)
            with contextlib.suppress(Exception):
                await msg.nak(delay=2.0)
        finally:
            self.slots.release()

    async def _handle(self, msg: Msg) -> None:
        try:
            work = work_decoder.decode(msg.data)
        except msgspec.DecodeError as e:
            log.warning("malformed analysis work on %s dropped: %s", msg.subject, e)
            await msg.term()
            return
        match work:
            case AnalysisStart():
                await self._start(work)
                await msg.ack()
            case MeasureTask():
                await self._measure(work, msg)

    # --- start: resolve and fan out -------------------------------------------------------------

    async def _start(self, work: AnalysisStart) -> None:
        js = self.conn.js
        docs: dict[tuple[str | None, str], dict[str, Any] | None] = {}
        for ref in work.templates:
            await self._collect(work.namespace, ref.cluster_scope, ref.template_name, docs)
        try:
            resolved = resolve(
                work.namespace,
                work.templates,
                work.args,
                lambda ns, name: docs.get((ns, name)),
                dry_run=work.dry_run,
                retention=work.retention,
            )
            tasks = []
            now = time.time()
            for m in resolved.metrics:
                metric = msgspec.convert(m, Metric)
                policy_of(metric, dry_run=metric.name in resolved.dry_run)  # validates counts and durations
                delay = parse_go_duration(metric.initial_delay) if metric.initial_delay else 0.0
                tasks.append(
                    MeasureTask(
                        namespace=work.namespace,
                        name=work.name,
                        run_id=work.run_id,
                        metric=m,
                        index=0,
                        due_at=now + delay,
                        dry_run=metric.name in resolved.dry_run,
                        secrets=resolved.secrets,
                    )
                )
        except (ResolveError, SpecError, ValueError, msgspec.ValidationError) as e:
            log.warning("analysis run %s cannot start: %s", work.run_id, e)
            err = AnalysisRunErrored(
                namespace=work.namespace, name=work.name, run_id=work.run_id, message=str(e)
            )
            await js.publish(
                subjects.feedback("analysis", work.namespace, work.name),
                encoder.encode(err),
                headers={"Nats-Msg-Id": f"ar.{work.run_id}.error"},
            )
            return
        started = AnalysisRunStarted(
            namespace=work.namespace,
            name=work.name,
            run_id=work.run_id,
            metrics=tuple(t.metric.get("name", "") for t in tasks),
            dry_run=tuple(sorted(resolved.dry_run)),
            retention=resolved.retention,
            templates=tuple(t.template_name for t in work.templates),
        )
        await js.publish(
            subjects.feedback("analysis", work.namespace, work.name),
            encoder.encode(started),
            headers={"Nats-Msg-Id": f"ar.{work.run_id}.started"},
        )
        for t in tasks:
            await js.publish(
                subjects.analysis_work("measure", work.namespace, work.name),
                encoder.encode(t),
                headers={"Nats-Msg-Id": f"mt.{work.run_id}.{t.metric.get('name')}.0"},
            )

    async def _collect(
        self,
        namespace: str,
        cluster: bool,
        name: str,
        docs: dict[tuple[str | None, str], dict[str, Any] | None],
    ) -> None:
        scope = None if cluster else namespace
        if (scope, name) in docs:
            return
        assert self.templates is not None
        try:
            entry = await self.templates.get(subjects.template_key(scope, name))
            doc = msgspec.json.decode(entry.value) if entry.value else None
        except KeyNotFoundError:
            doc = None
        docs[(scope, name)] = doc
        for nested in ((doc or {}).get("spec") or {}).get("templates") or []:
            await self._collect(
                namespace, bool(nested.get("clusterScope")), nested.get("templateName", ""), docs
            )

    # --- measure: one measurement of one metric -------------------------------------------------

    async def _measure(self, work: MeasureTask, msg: Msg) -> None:
        js = self.conn.js
        if await self._stopped(work.run_id):
            await msg.ack()
            return
        wait = work.due_at - time.time()
        if wait > HOLD_SECONDS or (wait > 0 and self.draining):
            # Far in the future: JetStream hands it back when due, to whichever worker asks.
            await msg.nak(delay=wait)
            return
        if wait > 0:
            # Soon due: keep it (a nak would bounce it to the back of the queue and bias
            # the work towards whichever worker asked last); the interval is the schedule.
            await asyncio.sleep(wait)
            if await self._stopped(work.run_id):
                await msg.ack()
                return
        started = time.time()
        value: Any = None
        hidden: list[str] = []
        try:
            spec = work.metric
            if work.secrets:
                values = {
                    arg: await self.secrets.fetch(work.namespace, s, k)
                    for arg, (s, k) in work.secrets.items()
                }
                hidden = list(values.values())
                spec = substitute(spec, values)
            metric = msgspec.convert(spec, Metric)
            policy = policy_of(metric, dry_run=work.dry_run)
            context = JobContext(
                namespace=work.namespace, run_id=work.run_id, metric=metric.name, index=work.index
            )
            measured = await measure(metric, session=self.session, context=context)  # type: ignore[arg-type]
            value = measured.value
            if measured.phase is not None:
                phase, message = Phase(measured.phase), measured.message
            else:
                phase, message = measurement_phase(policy, value)
        except (MeasurementError, SecretError) as e:
            metric = msgspec.convert(work.metric, Metric)
            policy = policy_of(metric, dry_run=work.dry_run)
            phase, message = Phase.ERROR, str(e)
        finished = time.time()
        # Secret values never leave the worker: not in results, messages, events or logs.
        value, message = redact(value, hidden), redact(message, hidden)
        new_tally = tally(policy, tally_of(work.tally), phase, message)
        done = is_metric_done(new_tally)
        self.measured += 1
        taken = MeasurementTaken(
            namespace=work.namespace,
            name=work.name,
            run_id=work.run_id,
            metric=policy.name,
            index=work.index,
            phase=phase.value,
            value=_jsonable(value),
            message=message,
            started_at=started,
            finished_at=finished,
            metric_phase=new_tally.phase.value,
            tally=tally_view(new_tally),
            worker=WORKER,
        )
        await js.publish(
            subjects.feedback("analysis", work.namespace, work.name),
            encoder.encode(taken),
            headers={"Nats-Msg-Id": f"ms.{work.run_id}.{policy.name}.{work.index}"},
        )
        if not done:
            due = next_due(policy, new_tally, finished) or finished
            nxt = msgspec.structs.replace(work, index=work.index + 1, due_at=due, tally=tally_view(new_tally))
            await js.publish(
                subjects.analysis_work("measure", work.namespace, work.name),
                encoder.encode(nxt),
                headers={"Nats-Msg-Id": f"mt.{work.run_id}.{policy.name}.{work.index + 1}"},
            )
        await msg.ack()

    async def _stopped(self, run_id: str) -> bool:
        assert self.runs is not None
        try:
            entry = await self.runs.get(subjects.run_stop_key(run_id))
        except KeyNotFoundError:
            return False
        return bool(entry.value)


def _jsonable(value: Any) -> Any:
    try:
        encoder.encode(value)
    except (TypeError, msgspec.EncodeError):
        return repr(value)
    return value


async def run_analyzer(
    conn: Connection,
    stop: asyncio.Event,
    ready: asyncio.Event,
    *,
    concurrency: int,
    ack_wait: float,
    secrets: SecretSource | None = None,
) -> None:
    """`secrets`: where secretKeyRef arguments come from (default: file and environment)."""
    analyzer = Analyzer(conn, concurrency=concurrency, ack_wait=ack_wait)
    if secrets is not None:
        analyzer.secrets = secrets
    await analyzer.run(stop, ready)
