"""What the CLI does over NATS: send commands, read rollout state, follow the event stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyNotFoundError, NoKeysError

from services.planner.service import rollout_document, state_decoder
from services.planner.state import RolloutState
from services.planner.status import status_of
from shared import subjects
from shared.analysis_runs import AnalysisRunRecord, record_decoder
from shared.jetstream import Connection, connect
from shared.messages import CommandReply, RolloutEvent, event_decoder, reply_decoder


class CliError(Exception):
    """A failed operation: printed on stderr, exit code 1."""


class EventFeed:
    """A live subscription to one rollout's events; get() waits for the next one."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[RolloutEvent] = asyncio.Queue()
        self.sub: Any = None

    async def on_msg(self, msg: Any) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            self.queue.put_nowait(event_decoder.decode(msg.data))

    async def get(self, timeout: float | None = None) -> RolloutEvent | None:
        """The next event, or None when `timeout` seconds pass without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    async def close(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
            self.sub = None


class Client:
    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Connection | None = None

    async def __aenter__(self) -> Client:
        try:
            self.conn = await asyncio.wait_for(connect(self.url, name="rollouts-cli"), timeout=10)
        except (OSError, TimeoutError, NatsTimeout) as e:
            raise CliError(f"cannot connect to NATS at {self.url}: {e or type(e).__name__}") from e
        except Exception as e:
            raise CliError(f"cannot connect to NATS at {self.url}: {e}") from e
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.nc.close()

    @property
    def c(self) -> Connection:
        assert self.conn is not None
        return self.conn

    async def command(
        self, namespace: str, name: str, verb: str, payload: bytes = b"", *, timeout: float = 10.0
    ) -> CommandReply:
        subject = subjects.command(
            subjects.check_token(namespace, "namespace"), subjects.check_token(name, "name"), verb
        )
        try:
            msg = await self.c.nc.request(subject, payload, timeout=timeout)
        except (NatsTimeout, NoRespondersError) as e:
            raise CliError(
                f"{subject}: no planner answered within {timeout:g}s; the command is stored and takes "
                "effect when a planner runs"
            ) from e
        try:
            return reply_decoder.decode(msg.data)
        except msgspec.DecodeError as e:
            raise CliError(f"{subject}: unreadable reply: {e}") from e

    async def state(self, namespace: str, name: str) -> RolloutState:
        kv = await self.c.kv(subjects.ROLLOUTS_BUCKET)
        try:
            entry = await kv.get(subjects.rollout_key(namespace, name))
        except KeyNotFoundError as e:
            raise CliError(f"rollout {namespace}/{name} not found") from e
        if not entry.value:
            raise CliError(f"rollout {namespace}/{name} not found")
        return state_decoder.decode(entry.value)

    async def states(self) -> list[RolloutState]:
        kv = await self.c.kv(subjects.ROLLOUTS_BUCKET)
        try:
            keys = await kv.keys()
        except NoKeysError:
            return []
        out = []
        for key in sorted(keys):
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(key)
                if entry.value:
                    out.append(state_decoder.decode(entry.value))
        return out

    async def runs(self) -> list[AnalysisRunRecord]:
        """Every AnalysisRun record, oldest first."""
        kv = await self.c.kv(subjects.ANALYSIS_RUNS_BUCKET)
        try:
            keys = [k for k in await kv.keys() if k.startswith("run.")]
        except NoKeysError:
            return []
        out = []
        for key in keys:
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(key)
                if entry.value:
                    out.append(record_decoder.decode(entry.value))
        return sorted(out, key=lambda r: r.started_at)

    async def run(self, name: str) -> AnalysisRunRecord:
        kv = await self.c.kv(subjects.ANALYSIS_RUNS_BUCKET)
        try:
            entry = await kv.get(subjects.run_record_key(name))
        except KeyNotFoundError as e:
            raise CliError(f"analysis run {name} not found") from e
        if not entry.value:
            raise CliError(f"analysis run {name} not found")
        return record_decoder.decode(entry.value)

    async def document(self, namespace: str, name: str) -> dict[str, Any]:
        return rollout_document(await self.state(namespace, name))

    async def feed(self, namespace: str, name: str, *, history: bool = True) -> EventFeed:
        """The rollout's events: its whole history first (if asked), then live ones."""
        feed = EventFeed()
        feed.sub = await self.c.js.subscribe(
            subjects.events(namespace, name),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL if history else DeliverPolicy.NEW,
            cb=feed.on_msg,
        )
        return feed

    async def events(self, namespace: str, name: str, *, history: bool = True) -> AsyncIterator[RolloutEvent]:
        feed = await self.feed(namespace, name, history=history)
        try:
            while True:
                ev = await feed.get()
                if ev is not None:
                    yield ev
        finally:
            await feed.close()

    async def history(self, namespace: str, name: str) -> list[RolloutEvent]:
        """Every stored event of the rollout, oldest first."""
        info = await self.c.js.stream_info(
            subjects.EVENTS_STREAM, subjects_filter=subjects.events(namespace, name)
        )
        total = (info.state.subjects or {}).get(subjects.events(namespace, name), 0) if info.state else 0
        out: list[RolloutEvent] = []
        if total == 0:
            return out
        async for ev in self.events(namespace, name):
            out.append(ev)
            if len(out) >= total:
                break
        return out


def short_status(state: RolloutState) -> dict[str, Any]:
    return status_of(state)
