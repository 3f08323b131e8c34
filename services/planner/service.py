"""The planner's I/O shell: commands and feedback in, decide(), desired state and events out.

Inputs are decided in batches (see Planner.handle). For each rollout that changed in a batch: store
its state in KV with the outputs in its outbox, publish every output with a Nats-Msg-Id derived from
the state (so a redelivered input republishes nothing new), and only then ack or answer the inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NamedTuple

import msgspec
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.planner.decide import decide, next_wakeup, runs_of
from services.planner.edits import EditError, SetImagePayload, UndoPayload, set_image_document, undo_document
from services.planner.leadership import Lease
from services.planner.plan import compile_plan
from services.planner.recording import RunRecorder
from services.planner.replies import ReplyMatcher
from services.planner.state import (
    Abort,
    AnalysisErrored,
    AnalysisMeasured,
    AnalysisProgress,
    AnalysisStarted,
    Apply,
    Delete,
    Emit,
    Input,
    Pause,
    Promote,
    PublishScale,
    PublishTraffic,
    Reject,
    Restart,
    Resume,
    Retry,
    RolloutState,
    ScaleReported,
    StartAnalysis,
    StopAnalysis,
    Tick,
    TrafficApplied,
)
from services.planner.status import status_of
from shared import subjects
from shared.analysis_runs import AnalysisRunRecord
from shared.jetstream import LEASE_TTL, Connection
from shared.messages import (
    AnalysisRunErrored,
    AnalysisRunStarted,
    CommandReply,
    Feedback,
    MeasurementTaken,
    PromotePayload,
    ScaleObserved,
    TrafficConfirmed,
    encoder,
    event_decoder,
    feedback_decoder,
)
from shared.publisher import PubAck, publish_lean
from shared.publisher import check as check_ack
from shared.specs import (
    AnalysisTemplate,
    ClusterAnalysisTemplate,
    Rollout,
    SpecError,
    load_documents,
    to_builtins,
)
from shared.subjects import SubjectError

log = logging.getLogger(__name__)

state_decoder = msgspec.json.Decoder(RolloutState)
promote_decoder = msgspec.json.Decoder(PromotePayload)
undo_decoder = msgspec.json.Decoder(UndoPayload)
set_image_decoder = msgspec.json.Decoder(SetImagePayload)


# Commands handled at once (across rollouts); bounded so a burst cannot outrun the ack wait.
MAX_IN_FLIGHT = 256
# Inputs decided in one batch, and batches whose commit may be under way at once.
MAX_BATCH = 512
MAX_COMMITS = 4


class NotLeader(RuntimeError):
    """This process lost the lease (or was overtaken): it must not decide anything more."""


class CommandError(ValueError):
    """A command that cannot be carried out; its message goes back to the sender."""


_PLACEHOLDER = re.compile(r"\{\{\s*args\.[A-Za-z0-9_.-]+\s*\}\}")


def check_condition(source: str) -> str | None:
    """A condition's syntax, checked at lint/apply time; {{args.x}} placeholders stand for a number."""
    from services.analyzer.expressions import ExpressionError, compile_expression

    try:
        compile_expression(_PLACEHOLDER.sub("0", source), variables=("result",))
    except ExpressionError as e:
        return str(e)
    return None


def rollout_document(state: RolloutState) -> dict[str, Any]:
    """The Rollout as `rollouts get -o json` prints it: the applied document plus Argo-style status."""
    doc = dict(state.spec)
    doc["status"] = status_of(state)
    return doc


class Planner:
    def __init__(self, conn: Connection, *, lease: Lease | None = None) -> None:
        self.conn = conn
        self.lease = lease
        self.states: dict[str, RolloutState] = {}
        self.kv_revisions: dict[str, int] = {}  # last KV revision of each state, for compare-and-set
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.timer_at: dict[str, float | None] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.queue: list[_Work] = []  # inputs waiting for a batch, in arrival order
        self.wake = asyncio.Event()
        self.batcher: asyncio.Task[None] | None = None
        self.commits: set[asyncio.Task[None]] = set()
        self.busy: set[str] = set()  # rollouts with a commit under way
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.replies = ReplyMatcher()
        self.kv: KeyValue | None = None
        self.templates: KeyValue | None = None
        self.runs: KeyValue | None = None
        self.subs: list[Any] = []
        self.handled = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        js = self.conn.js
        self.kv = await js.key_value(subjects.ROLLOUTS_BUCKET)
        self.templates = await js.key_value(subjects.TEMPLATES_BUCKET)
        self.runs = await js.key_value(subjects.ANALYSIS_RUNS_BUCKET)
        self.recorder = RunRecorder(self.runs)
        await self._load_states()
        # Thousands of long-lived states make every full collection walk them all; the planner
        # creates few reference cycles, so collect rarely and keep what is loaded out of the scans.
        gc.freeze()
        gc.set_threshold(50_000, 50, 1000)
        # Replies: the stream keeps no reply subject, so remember who asked (core subscription).
        self.subs.append(await self.conn.nc.subscribe(subjects.COMMANDS_WILDCARD, cb=self._on_request))
        common = {
            "ack_policy": AckPolicy.EXPLICIT,
            # Short enough that a message in flight at a dead leader is redelivered soon after the
            # takeover; long enough for any one handle() (milliseconds) even under load.
            "ack_wait": 10.0,
            "max_deliver": -1,
            "max_ack_pending": 1000,
        }
        self.subs.append(
            await js.subscribe(
                subjects.COMMANDS_WILDCARD,
                durable=subjects.PLANNER_COMMANDS_CONSUMER,
                stream=subjects.COMMANDS_STREAM,
                cb=self._spawn(self._on_command),
                manual_ack=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, **common),  # type: ignore[arg-type]
            )
        )
        self.subs.append(
            await js.subscribe(
                subjects.FEEDBACK_WILDCARD,
                durable=subjects.PLANNER_FEEDBACK_CONSUMER,
                stream=subjects.FEEDBACK_STREAM,
                cb=self._on_feedback,
                manual_ack=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW, **common),  # type: ignore[arg-type]
            )
        )
        await self._publish_outboxes()
        for key in [k for k, st in self.states.items() if st.deleted]:
            await self._forget(key)
        for key in list(self.states):
            self._arm_timer(key)
        log.info("planner started with %d rollout(s)", len(self.states))

    async def stop(self) -> None:
        for t in self.timers.values():
            t.cancel()
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self.tasks:  # let handlers under way finish (their messages are acked or nak'ed)
            await asyncio.wait(self.tasks, timeout=10)
        if self.commits:
            await asyncio.wait(self.commits, timeout=10)
        if self.batcher is not None:
            self.batcher.cancel()
        for w in self.queue:  # never decided: a command's sender learns it, feedback is redelivered
            if w.future is not None and not w.future.done():
                w.future.set_exception(NotLeader("the planner is stopping"))
        self.queue.clear()

    def _spawn(self, handler: Callable[[Msg], Coroutine[Any, Any, None]]) -> Callable[[Msg], Awaitable[None]]:
        """Handle commands concurrently (nats-py runs a subscription's callback one message at a
        time; an apply parses and checks a document first); a rollout's own commands still go in
        order, as each queues its input before its first await. At most MAX_IN_FLIGHT at once."""

        async def cb(msg: Msg) -> None:
            await self.in_flight.acquire()
            task: asyncio.Task[None] = asyncio.create_task(handler(msg))
            self.tasks.add(task)
            task.add_done_callback(self._done)

        return cb

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.in_flight.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("message handler died: %r", task.exception())

    async def _publish_outboxes(self) -> None:
        """Outputs of the last decision of each rollout that a dead predecessor may not have sent.

        Every stored state carries the outbox of its last batch, so at a takeover this looks at
        each rollout: the lookups of the last stored event run side by side (bounded), not one
        round trip after another."""
        pending = [s for s in self.states.values() if s.outbox]
        limit = asyncio.Semaphore(64)

        async def publish_if_lost(s: RolloutState) -> None:
            async with limit:
                if await self._outbox_published(s):
                    return
                log.info("%s/%s: publishing the outputs of its last decision", s.namespace, s.name)
                await self._carry_out(list(s.outbox), s.uid, s.updated_at)

        await asyncio.gather(*(publish_if_lost(s) for s in pending))

    async def _outbox_published(self, s: RolloutState) -> bool:
        """Whether the rollout's last stored event shows its outbox's events went out."""
        seqs = [c.event.seq for c in s.outbox if isinstance(c, Emit)]
        if not seqs:
            return False  # no event to tell by: publish again (the ids drop what did get through)
        try:
            last = await self.conn.js.get_last_msg(
                subjects.EVENTS_STREAM, subjects.events(s.namespace, s.name)
            )
            return event_decoder.decode(last.data or b"").seq >= max(seqs)
        except Exception:  # no event stored yet for this rollout, or an old one unreadable
            return False

    async def _load_states(self) -> None:
        assert self.kv is not None
        # One pass over the bucket (the last value of every key), not a request per key: with
        # 10,000 rollouts this is the difference between a second and half a minute.
        watcher = await self.kv.watchall(ignore_deletes=True)
        try:
            while True:
                entry = await watcher.updates(timeout=30)  # type: ignore[no-untyped-call]
                if entry is None:
                    break
                if not entry.value:
                    continue
                try:
                    self.states[entry.key] = state_decoder.decode(entry.value)
                    self.kv_revisions[entry.key] = entry.revision or 0
                except msgspec.DecodeError as e:
                    log.error("state %s unreadable, ignored: %s", entry.key, e)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    # --- inputs -----------------------------------------------------------------------------

    async def _on_request(self, msg: Msg) -> None:
        found = self.replies.on_core(_reply_key(msg), msg.reply or None)
        if found is not None:
            await self.conn.nc.publish(*found)

    async def _on_command(self, msg: Msg) -> None:
        now = _stored_at(msg)
        reply = CommandReply(ok=True)
        try:
            parsed = subjects.parse_command(msg.subject)
            reply = await self._command(parsed.namespace, parsed.name, parsed.verb, msg.data, now)
        except NotLeader as e:
            log.warning("command %s left for the leader: %s", msg.subject, e)
            await msg.nak(delay=1.0)
            return
        except (SubjectError, CommandError, SpecError) as e:
            log.warning("command %s rejected: %s", msg.subject, e)
            reply = CommandReply(ok=False, error=_spec_message(e))
        except Exception as e:  # the error boundary: never let one message kill the planner
            log.exception("command %s failed", msg.subject)
            reply = CommandReply(ok=False, error=f"internal error: {e!r}")
        await self._answer(_reply_key(msg), encoder.encode(reply))
        await msg.ack()

    async def _answer(self, key: tuple[str, bytes], payload: bytes) -> None:
        inbox = self.replies.on_handled(key, payload)
        if inbox:
            await self.conn.nc.publish(inbox, payload)

    async def _command(self, namespace: str, name: str, verb: str, data: bytes, now: float) -> CommandReply:
        if verb == "apply":
            return await self._apply(namespace, name, data, now)
        if verb in ("undo", "set-image"):
            return await self._edit(namespace, name, verb, data, now)
        event: Input
        match verb:
            case "promote":
                try:
                    full = promote_decoder.decode(data).full if data.strip() else False
                except msgspec.DecodeError as e:
                    raise CommandError(f'payload: expected nothing or {{"full": true}}: {e}') from e
                event = Promote(full=full)
            case "abort":
                event = Abort()
            case "retry":
                event = Retry()
            case "pause":
                event = Pause()
            case "resume":
                event = Resume()
            case "restart":
                event = Restart()
            case "delete":
                event = Delete()
            case _:
                raise CommandError(f"verb {verb!r} is not supported")
        return await self.handle(namespace, name, event, now)

    async def _apply(self, namespace: str, name: str, data: bytes, now: float) -> CommandReply:
        docs = [
            d
            for d in load_documents(data, check_condition=check_condition)
            if isinstance(d, (Rollout, AnalysisTemplate, ClusterAnalysisTemplate))
        ]
        if len(docs) != 1:
            raise CommandError(
                "apply takes exactly one Rollout, AnalysisTemplate or ClusterAnalysisTemplate document"
            )
        doc = docs[0]
        doc_name = doc.metadata.name if doc.metadata else None
        if doc_name != name:
            raise CommandError(f"metadata.name {doc_name!r} does not match the subject's name {name!r}")
        if isinstance(doc, (AnalysisTemplate, ClusterAnalysisTemplate)):
            from services.analyzer.providers.judge import check_template

            check_template(doc)
            scope = None if isinstance(doc, ClusterAnalysisTemplate) else namespace
            assert self.templates is not None
            await self.templates.put(subjects.template_key(scope, name), encoder.encode(to_builtins(doc)))
            return CommandReply(ok=True)
        doc_ns = doc.metadata.namespace if doc.metadata else None
        if doc_ns and doc_ns != namespace:
            raise CommandError(
                f"metadata.namespace {doc_ns!r} does not match the subject's namespace {namespace!r}"
            )
        plan = compile_plan(doc)
        spec = to_builtins(doc)
        spec.setdefault("metadata", {})["namespace"] = namespace
        spec.pop("status", None)
        return await self.handle(namespace, name, Apply(plan=plan, spec=spec), now)

    async def _edit(self, namespace: str, name: str, verb: str, data: bytes, now: float) -> CommandReply:
        """undo / set-image: a new document derived from the applied one, then applied as usual."""
        state = self.states.get(subjects.rollout_key(namespace, name))
        if state is None:
            raise CommandError(f"rollout {namespace}/{name} not found")
        try:
            if verb == "undo":
                undo = undo_decoder.decode(data) if data.strip() else UndoPayload()
                doc = undo_document(state, undo.to_revision)
            else:
                doc = set_image_document(state, set_image_decoder.decode(data or b"{}"))
        except msgspec.DecodeError as e:
            raise CommandError(f"payload: {e}") from e
        except EditError as e:
            raise CommandError(str(e)) from e
        return await self._apply(namespace, name, encoder.encode(doc), now)

    async def _on_feedback(self, msg: Msg) -> None:
        """Queue a feedback message for the next batch (no task per message); the batch's commit
        acknowledges it. A malformed one is acked and dropped, so it is not redelivered forever."""
        try:
            fb = feedback_decoder.decode(msg.data)
            event: Input
            match fb:
                case TrafficConfirmed():
                    event = TrafficApplied(
                        generation=fb.generation, canary_weight=fb.canary_weight, error=fb.error
                    )
                case ScaleObserved():
                    event = ScaleReported(
                        generation=fb.generation, ready={s.revision: s.ready for s in fb.sets}, error=fb.error
                    )
                case AnalysisRunStarted():
                    event = AnalysisStarted(run_id=fb.run_id, metrics=fb.metrics, dry_run=fb.dry_run)
                case MeasurementTaken():
                    event = AnalysisMeasured(
                        run_id=fb.run_id,
                        metric=fb.metric,
                        index=fb.index,
                        phase=fb.phase,
                        metric_phase=fb.metric_phase,
                        metric_message=fb.tally.message if fb.tally else "",
                        value=fb.value,
                        message=fb.message,
                    )
                case AnalysisRunErrored():
                    event = AnalysisErrored(run_id=fb.run_id, message=fb.message)
            uid = fb.uid if isinstance(fb, (TrafficConfirmed, ScaleObserved)) else ""
            work = _Work(fb.namespace, fb.name, event, _stored_at(msg), report=fb, uid=uid)
        except msgspec.DecodeError as e:
            log.warning("malformed feedback on %s dropped: %s", msg.subject, e)
            await msg.ack()
            return
        work.msg = msg
        self._enqueue(work)

    # --- the core step: decisions in batches, each batch committed at once ------------------------
    #
    # Inputs (commands, feedback, timer ticks) queue up as _Work. One loop takes whatever is queued,
    # decides on each item in arrival order (decide() is pure and synchronous, so a batch is decided
    # without a single await), and hands the batch to a commit: one state write per rollout that
    # changed, carrying the outputs of all its decisions in the batch in its outbox, then those
    # outputs, all put on the connection at once, and their acks awaited together. Only then is any
    # input of the batch acknowledged or answered. A rollout with a commit under way is not decided
    # on again until that commit is over (its next inputs wait in the queue, in order); other
    # rollouts go on in the next batch meanwhile, up to MAX_COMMITS batches in flight.

    async def handle(
        self,
        namespace: str,
        name: str,
        event: Input,
        now: float,
        *,
        report: Feedback | None = None,
        uid: str = "",
    ) -> CommandReply:
        """Decide on one input of one rollout (in arrival order with the rollout's other inputs) and
        return once the decision is stored and its outputs are out; `report` is folded into its
        AnalysisRun record."""
        work = _Work(namespace, name, event, now, report=report, uid=uid)
        work.future = asyncio.get_running_loop().create_future()
        self._enqueue(work)
        return await work.future

    def _enqueue(self, work: _Work) -> None:
        self.queue.append(work)
        if self.batcher is None or self.batcher.done():
            self.batcher = asyncio.create_task(self._batches(), name="planner-batches")
        self.wake.set()

    async def _batches(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                while len(self.commits) >= MAX_COMMITS:
                    await asyncio.wait(self.commits, return_when=asyncio.FIRST_COMPLETED)
                batch = self._take_batch()
                if not batch:
                    break  # all queued inputs are of rollouts being committed: a commit's end wakes us
                try:
                    decided = await self._decide_batch(batch)
                except BaseException as e:  # never strand a waiting input
                    for w in batch:
                        w.error = e
                    decided = _Decided(batch)
                keys = set(decided.changed)
                self.busy |= keys
                if not self.commits and not self.queue:
                    # Nothing else to do meanwhile (a lone command, a quiet moment): commit here,
                    # a task less on the way to the answer.
                    try:
                        await self._commit(decided)
                    except Exception as e:  # its inputs are settled; the loop must go on
                        log.error("commit died: %r", e)
                    finally:
                        self.busy -= keys
                    continue
                task = asyncio.create_task(self._commit(decided), name="planner-commit")
                self.commits.add(task)
                task.add_done_callback(functools.partial(self._committed, keys=keys))

    def _take_batch(self) -> list[_Work]:
        """The queued inputs that may be decided now, in order: none of a rollout being committed,
        nor anything after such an input of the same rollout (a rollout's inputs keep their order)."""
        batch: list[_Work] = []
        rest: list[_Work] = []
        held: set[str] = set()
        for w in self.queue:
            if len(batch) >= MAX_BATCH or w.key in self.busy or w.key in held:
                held.add(w.key)
                rest.append(w)
            else:
                batch.append(w)
        self.queue = rest
        return batch

    def _committed(self, task: asyncio.Task[None], *, keys: set[str]) -> None:
        self.commits.discard(task)
        self.busy -= keys
        if not task.cancelled() and task.exception() is not None:
            log.error("commit died: %r", task.exception())
        if self.queue:
            self.wake.set()

    async def _decide_batch(self, batch: list[_Work]) -> _Decided:
        out = _Decided(batch)
        for w in batch:
            try:
                if self.lease is not None and not self.lease.valid():
                    raise NotLeader("this planner no longer holds the lease")
                key = w.key
                if w.report is not None:
                    record = await self.recorder.reported(w.report, w.now)
                    if record is not None:
                        out.record_puts.append((key, record))
                old = out.changed[key] if key in out.changed else self.states.get(key)
                if w.uid and (old is None or old.uid != w.uid):
                    w.reply = CommandReply(ok=True)  # feedback about a deleted incarnation of this name
                    continue
                new, commands = decide(old, w.event, w.now, namespace=w.namespace, name=w.name)
                rejected = [c.message for c in commands if isinstance(c, Reject)]
                if rejected:
                    w.reply = CommandReply(
                        ok=False, error=rejected[0], status=status_of(old) if old else None
                    )
                    continue
                if new is not None and commands:
                    out.changed[key] = new
                    out.outputs.setdefault(key, []).extend(commands)
                    out.now[key] = w.now
                    out.records.setdefault(key, []).extend(runs_of(new) + _ended_runs(old, new))
                self.handled += 1
                w.reply = CommandReply(ok=True)
                # The status is built once the batch is out (_settle); feedback has no one to answer.
                if w.report is None and not _is_feedback(w.event):
                    w.status_of = new
            except Exception as e:
                w.error = e
        return out

    async def _commit(self, decided: _Decided) -> None:
        failed: dict[str, BaseException] = {}
        try:
            written, stream_acks = await self._write(decided, failed)
            # AnalysisRun records the batch's reports changed, written with it (no round trip each).
            record_acks = [(key, await self._put_record(record)) for key, record in decided.record_puts]
            for subject, pending, keys in stream_acks:
                try:
                    check_ack(await pending, subject)
                except Exception as e:  # the stream may not hold these rollouts' outputs
                    for key in keys:
                        failed.setdefault(key, e)
            for w in written:
                try:
                    await self._stored(w.key, w.update)
                except Exception as e:
                    failed.setdefault(w.key, e)
                if w.key in failed:
                    continue
                self.states[w.key] = w.state
                if w.state.deleted:
                    await self._forget(w.key)
                    continue
                self._arm_timer(w.key)
                for run in decided.records.get(w.key, ()):
                    record = await self.recorder.progressed(run, decided.now[w.key])
                    if record is not None:
                        record_acks.append((w.key, await self._put_record(record)))
            for key, pending in record_acks:
                try:
                    check_ack(await pending, key)
                except Exception as e:
                    failed.setdefault(key, e)
        except BaseException as e:  # never strand a waiting input: everything not settled failed
            for key in decided.changed:
                failed.setdefault(key, e)
            raise
        finally:
            await self._settle(decided.batch, failed)

    async def _write(
        self, decided: _Decided, failed: dict[str, BaseException]
    ) -> tuple[list[_Written], list[_StreamAck]]:
        """Put each changed rollout's state, then its outputs, on the connection; nothing waits for
        an answer but a new rollout's create (all creates are on the wire by then).

        Store first (with the outputs in its outbox), then publish: a crash in between leaves the
        outputs to whoever loads the state next. NATS keeps a connection's order, so whatever
        reached the server after a state write was preceded by it: a successor never sees outputs
        of an unstored decision."""
        written: list[_Written] = []
        created: list[tuple[str, RolloutState, asyncio.Future[PubAck]]] = []
        wire = _Wire()
        for key, new in decided.changed.items():
            commands = decided.outputs[key]
            state = msgspec.structs.replace(new, outbox=tuple(commands))
            try:
                if key not in self.kv_revisions:
                    # A new rollout: its outputs wait for the create's answer (below), as a key
                    # deleted earlier (a tombstone) needs another attempt.
                    created.append((key, state, await self._store(key, state)))
                    continue
                outputs = await self._outputs(commands, new.uid, decided.now[key])
            except Exception as e:
                failed[key] = e
                continue
            wire.state(key, state, self.kv_revisions[key])
            wire.outputs(key, outputs)
            written.append(_Written(key, state, None))
        stream_acks = await self._put_on_wire(wire, written)
        wire = _Wire()
        for key, state, create in created:
            try:
                await self._created(key, state, create)
                wire.outputs(key, await self._outputs(decided.outputs[key], state.uid, decided.now[key]))
            except Exception as e:
                failed[key] = e
                continue
            written.append(_Written(key, state, None))
        stream_acks += await self._put_on_wire(wire, [])
        return written, stream_acks

    async def _put_on_wire(self, wire: _Wire, written: list[_Written]) -> list[_StreamAck]:
        """Publish what `wire` holds, in order. Every state write asks for its answer (a
        compare-and-set may fail for one rollout); of the outputs, only the last message to each
        stream does: the server stores one connection's messages to one stream in order, so that
        ack comes after the stream took the earlier ones (a duplicate is dropped silently either
        way), and a failure there fails every rollout with an output on that stream."""
        send = self.conn.acks().send
        index = {w.key: i for i, w in enumerate(written)}
        last = {stream: i for i, (_, stream, _, _, _) in enumerate(wire.items) if stream}
        acks: list[_StreamAck] = []
        for i, (key, stream, subject, payload, headers) in enumerate(wire.items):
            if not stream:  # a state write
                n = index[key]
                written[n] = written[n]._replace(update=await send(subject, payload, headers))
            elif last[stream] == i:
                acks.append((subject, await send(subject, payload, headers), wire.keys[stream]))
            else:
                await publish_lean(self.conn.nc, subject, payload, headers=headers)
        return acks

    async def _settle(self, batch: list[_Work], failed: dict[str, BaseException]) -> None:
        """Answer every input of a committed batch; a feedback message is acked (or, when its
        decision could not be stored or carried out, nak'ed for a redelivery)."""
        for w in batch:
            error = w.error or failed.get(w.key)
            if w.msg is not None:
                try:
                    if error is None:
                        await publish_lean(self.conn.nc, w.msg.reply, b"+ACK")
                    else:
                        log.warning("feedback on %s failed (redelivered): %r", w.msg.subject, error)
                        await w.msg.nak(delay=1.0)
                except Exception as e:
                    log.warning("acknowledging %s failed: %r", w.msg.subject, e)
            if w.future is not None and not w.future.done():
                if error is not None:
                    w.future.set_exception(error)
                    continue
                reply = w.reply or CommandReply(ok=True)
                if w.status_of is not None:
                    reply.status = status_of(w.status_of)
                w.future.set_result(reply)

    async def _put_record(self, record: AnalysisRunRecord) -> asyncio.Future[PubAck]:
        subject, data = self.recorder.put_of(record)
        return await self.conn.acks().send(subject, data)

    async def _forget(self, key: str) -> None:
        """A deleted rollout's outputs are out: remove its key (a crash before this leaves a
        tombstone, whose outbox the next planner republishes and then removes the same way)."""
        assert self.kv is not None
        await self.kv.delete(key)
        self.states.pop(key, None)
        self.kv_revisions.pop(key, None)
        self._arm_timer(key)

    async def _store(self, key: str, state: RolloutState) -> asyncio.Future[PubAck]:
        """A new rollout's first write, on the wire: its key must not exist (`_created` awaits the
        answer and settles a tombstone). Updates go out with their batch (`_Wire.state`)."""
        return await self.conn.acks().send(*_state_write(key, state, 0))

    async def _created(self, key: str, state: RolloutState, pending: asyncio.Future[PubAck]) -> None:
        """The answer to a new rollout's first write. A key deleted before (the rollout was deleted
        and is applied again) still has a tombstone: KeyValue.create writes over that, and refuses
        when the key holds a value, i.e. another planner created it meanwhile."""
        assert self.kv is not None
        try:
            self.kv_revisions[key] = check_ack(await pending, key).seq
            return
        except KeyWrongLastSequenceError:
            pass
        try:
            self.kv_revisions[key] = await self.kv.create(key, encoder.encode(state))
        except KeyWrongLastSequenceError as e:
            raise NotLeader(f"state of {key} was written by another planner") from e

    async def _stored(self, key: str, pending: asyncio.Future[PubAck] | None) -> None:
        if pending is None:
            return
        try:
            self.kv_revisions[key] = check_ack(await pending, key).seq
        except KeyWrongLastSequenceError as e:
            raise NotLeader(f"state of {key} was written by another planner") from e

    async def _carry_out(self, commands: list[Any], uid: str, now: float) -> None:
        """Publish a decision's outputs and wait until the streams have them (a successor's redo)."""
        wire = _Wire()
        wire.outputs("", await self._outputs(commands, uid, now))
        for subject, pending, _ in await self._put_on_wire(wire, []):
            check_ack(await pending, subject)

    async def _outputs(self, commands: list[Any], uid: str, now: float) -> list[_Output]:
        """A decision's outputs as messages (stream, subject, payload, Nats-Msg-Id), each id derived
        from the state, so that a redo of the same decision (after a crash) is deduplicated. An
        analysis run's record is created (and a stopped run's marker put) here, before its work
        item goes out."""
        out: list[_Output] = []
        for c in commands:
            match c:
                case Emit(event=ev):
                    msg_id = f"ev.{ev.namespace}.{ev.name}.{uid}.{ev.seq}"
                    out.append(("events", subjects.events(ev.namespace, ev.name), encoder.encode(ev), msg_id))
                case PublishTraffic(desired=d):
                    msg_id = f"tr.{d.namespace}.{d.name}.{uid}.{d.generation}"
                    out.append(
                        ("traffic", subjects.traffic_desired(d.namespace, d.name), encoder.encode(d), msg_id)
                    )
                case PublishScale(desired=d):
                    msg_id = f"sc.{d.namespace}.{d.name}.{uid}.{d.generation}"
                    out.append(
                        ("scale", subjects.scale_desired(d.namespace, d.name), encoder.encode(d), msg_id)
                    )
                case StartAnalysis():
                    await self.recorder.created(c, now)
                    subject = subjects.analysis_work("start", c.namespace, c.name)
                    out.append(("analysis", subject, encoder.encode(c), f"an.{c.run_id}"))
                case StopAnalysis(run_id=run_id):
                    assert self.runs is not None
                    await self.runs.put(subjects.run_stop_key(run_id), b"stopped")
        return out

    # --- timers ---------------------------------------------------------------------------------

    def _arm_timer(self, key: str) -> None:
        """One timer per rollout, for its next wakeup; left alone when that time did not change."""
        state = self.states.get(key)
        at = next_wakeup(state) if state is not None else None
        if self.timer_at.get(key) == at and (at is None or key in self.timers):
            return
        old = self.timers.pop(key, None)
        if old is not None:
            old.cancel()
        self.timer_at[key] = at
        if state is None or at is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, at - time.time())
        ns, name = state.namespace, state.name
        self.timers[key] = loop.call_later(delay, lambda: asyncio.ensure_future(self._tick(ns, name)))

    async def _tick(self, namespace: str, name: str) -> None:
        key = subjects.rollout_key(namespace, name)
        self.timers.pop(key, None)  # this timer has fired: the next _arm_timer arms a new one
        self.timer_at.pop(key, None)
        try:
            await self.handle(namespace, name, Tick(), time.time())
        except Exception as e:
            # A lost tick would leave a pause running forever: try again shortly.
            log.warning("timer of %s/%s failed (%r); retrying in 1 s", namespace, name, e)
            self.timers[key] = asyncio.get_running_loop().call_later(
                1.0, lambda: asyncio.ensure_future(self._tick(namespace, name))
            )


class _Work:
    """One input of one rollout on its way through a batch: decided, committed, then answered."""

    __slots__ = (
        "error",
        "event",
        "future",
        "key",
        "msg",
        "name",
        "namespace",
        "now",
        "reply",
        "report",
        "status_of",
        "uid",
    )

    def __init__(
        self, namespace: str, name: str, event: Input, now: float, *, report: Feedback | None, uid: str
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.key = subjects.rollout_key(namespace, name)
        self.event = event
        self.now = now
        self.report = report
        self.uid = uid
        self.msg: Msg | None = None  # feedback: acked (or nak'ed) once the batch is committed
        self.future: asyncio.Future[CommandReply] | None = None  # commands and ticks: awaited
        self.reply: CommandReply | None = None
        self.status_of: RolloutState | None = None  # the state whose status the answer carries
        self.error: BaseException | None = None


class _Written(NamedTuple):
    """A rollout's new state of a batch, on the wire: the answer to its write still to await."""

    key: str
    state: RolloutState
    update: asyncio.Future[PubAck] | None  # None: a create (already answered), or not sent yet


_Output = tuple[str, str, bytes, str]  # stream, subject, payload, Nats-Msg-Id
_StreamAck = tuple[str, "asyncio.Future[PubAck]", set[str]]  # subject, its ack, the rollouts it covers


def _state_write(key: str, state: RolloutState, last: int) -> tuple[str, bytes, dict[str, str]]:
    """KeyValue.update(last=…) of a rollout's state as a message (last 0: the key must not exist)."""
    return (
        f"$KV.{subjects.ROLLOUTS_BUCKET}.{key}",
        encoder.encode(state),
        {"Nats-Expected-Last-Subject-Sequence": str(last)},
    )


class _Wire:
    """What a batch puts on the connection, in order: state writes ("" stream) and outputs."""

    __slots__ = ("items", "keys")

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str, bytes, dict[str, str]]] = []  # key, stream, subject, ...
        self.keys: dict[str, set[str]] = {}  # stream -> rollouts with an output on it

    def state(self, key: str, state: RolloutState, last: int) -> None:
        """A compare-and-set write of the rollout's state on its last KV revision."""
        self.items.append((key, "", *_state_write(key, state, last)))

    def outputs(self, key: str, outputs: list[_Output]) -> None:
        for stream, subject, payload, msg_id in outputs:
            self.items.append((key, stream, subject, payload, {"Nats-Msg-Id": msg_id}))
            self.keys.setdefault(stream, set()).add(key)


class _Decided:
    """A decided batch: the new state of each rollout that changed, with the outputs of all its
    decisions, the time of its last one, the analysis runs whose records may need an update once
    it is stored, and the records its reports changed."""

    __slots__ = ("batch", "changed", "now", "outputs", "record_puts", "records")

    def __init__(self, batch: list[_Work]) -> None:
        self.batch = batch
        self.changed: dict[str, RolloutState] = {}
        self.outputs: dict[str, list[Any]] = {}
        self.now: dict[str, float] = {}
        self.records: dict[str, list[AnalysisProgress]] = {}
        # AnalysisRun records the batch's reports changed, by the rollout they belong to
        self.record_puts: list[tuple[str, AnalysisRunRecord]] = []


def _stored_at(msg: Msg) -> float:
    """When the stream stored a message, from its ack subject: $JS.ACK.<stream>.<consumer>.
    <delivered>.<sseq>.<cseq>.<ns>.<pending> (or the 12-token form with domain and account);
    cheaper than nats-py's Msg.metadata. Decisions use it as `now`, so a redelivery decides alike."""
    tokens = (msg.reply or "").split(".")
    try:
        if len(tokens) == 9:
            return int(tokens[7]) / 1e9
        if len(tokens) >= 11:
            return int(tokens[9]) / 1e9
    except ValueError:
        pass
    return time.time()


def _reply_key(msg: Msg) -> tuple[str, bytes]:
    """What pairs a command's core copy (with the requester's inbox) with its stream copy.

    A client-given Nats-Msg-Id is part of it: a duplicate the stream drops has a core copy only,
    and keyed by its own id that copy can never take the place of a later, different command."""
    msg_id = (msg.headers or {}).get("Nats-Msg-Id")
    return (msg.subject, msg.data if not msg_id else msg_id.encode() + b"\0" + msg.data)


def _is_feedback(event: Input) -> bool:
    return isinstance(
        event, (TrafficApplied, ScaleReported, AnalysisStarted, AnalysisMeasured, AnalysisErrored, Tick)
    )


def _ended_runs(old: RolloutState | None, new: RolloutState) -> list[AnalysisProgress]:
    """Runs the decision dropped from the state (e.g. an experiment's, when it ended): their last
    known phase, marked Terminated if they were still running, for their records."""
    if old is None:
        return []
    kept = {r.run_id for r in runs_of(new)}
    out = []
    for r in runs_of(old):
        if r.run_id not in kept:
            if r.phase in ("Pending", "Running"):
                r = msgspec.structs.replace(
                    r, phase="Terminated", message="run stopped: the rollout moved on"
                )
            out.append(r)
    return out


def _spec_message(e: Exception) -> str:
    obj = getattr(e, "obj", None)
    return f"{obj}: {e}" if obj else str(e)


async def run_planner(
    conn: Connection,
    stop: asyncio.Event,
    ready: asyncio.Event,
    *,
    on_leading: Callable[[bool], None] | None = None,
) -> None:
    """Stand by until this process holds the lease, drive every rollout while it does.

    `on_leading(True/False)` is told when this process starts and stops driving (the Kubernetes
    bridge writes status only while its planner leads)."""
    kv = await conn.js.key_value(subjects.LEASES_BUCKET)
    lease = Lease(kv, holder=f"{socket.gethostname()}:{os.getpid()}", ttl=LEASE_TTL)
    renew_every = LEASE_TTL / 6  # often, so that a busy loop rarely lets the lease's validity lapse
    try:
        while not stop.is_set():
            if not await lease.acquire():
                ready.set()  # a standby is ready too: another planner is driving
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=renew_every)
                continue
            lost = asyncio.Event()

            async def keep_renewing(lost: asyncio.Event = lost) -> None:
                # Renewed from the moment it is held, whatever start() or the load is doing.
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=renew_every)
                    if not stop.is_set() and not await lease.renew():
                        lost.set()
                        return

            renewer = asyncio.create_task(keep_renewing(), name="planner-lease")
            planner = Planner(conn, lease=lease)
            try:
                await planner.start()
                ready.set()
                if on_leading is not None:
                    on_leading(True)
                stopping = asyncio.create_task(stop.wait())
                losing = asyncio.create_task(lost.wait())
                await asyncio.wait({stopping, losing}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                losing.cancel()
            finally:
                if on_leading is not None:
                    on_leading(False)
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
                await planner.stop()
    finally:
        await lease.release()
