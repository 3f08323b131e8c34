"""JetStream publishes with a lean acknowledgement path, for the services' hot loops.

nats-py's `JetStreamContext.publish` is a full request per message: a fresh NUID token, an
`asyncio.wait_for` (a timer and a wrapper per call), the ack parsed with `json.loads` into a
dataclass. The planner publishes several messages per decision, and at thousands of decisions per
second that overhead was a fifth of its CPU (py-spy, bench/planner_scale.py). Here every publish
carries a reply subject under one wildcard subscription, the ack is decoded by msgspec, pending
publishes sit in a dict keyed by a counter, and one sweeper fails those whose ack is overdue.

The semantics are JetStream's: a publish returns once the stream stored the message (or says it
was a duplicate), and raises when the stream refuses it (wrong expected sequence, no stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import APIError, KeyWrongLastSequenceError, NoStreamResponseError

# JetStream's error code for "wrong last sequence" (KV compare-and-set lost).
WRONG_LAST_SEQUENCE = 10071


class _AckError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _AckError | None = None


_decode_ack = msgspec.json.Decoder(PubAck).decode


class AckPublisher:
    """Publish to JetStream and await the stream's ack; any number of publishes in flight."""

    def __init__(self, nc: Client, *, timeout: float = 10.0) -> None:
        self.nc = nc
        self.timeout = timeout
        self._prefix = ""
        self._ids = itertools.count(1)
        self._pending: dict[str, tuple[asyncio.Future[PubAck], float]] = {}
        self._sub: Any = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._prefix = self.nc.new_inbox() + "."
        self._sub = await self.nc.subscribe(self._prefix + "*", cb=self._on_ack)
        self._sweeper = asyncio.create_task(self._sweep(), name="ack-sweeper")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("publisher closed"))
        self._pending.clear()

    async def send(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[PubAck]:
        """Put the message on the connection and return its ack's future (see `check`).

        Several sends in a row keep their order on the wire and cost no task each: await them
        one after another (they only fill the connection's buffer), then await the futures.
        """
        if self._sub is None:
            await self.start()
        token = f"{self._prefix}{next(self._ids)}"
        fut: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        self._pending[token] = (fut, time.monotonic() + self.timeout)
        try:
            await publish_lean(self.nc, subject, payload, reply=token, headers=headers)
        except BaseException:
            self._pending.pop(token, None)
            fut.cancel()
            raise
        return fut

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> PubAck:
        return check(await (await self.send(subject, payload, headers)), subject)

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._pending.pop(msg.subject, None)
        if entry is None or entry[0].done():
            return  # late ack of a publish that timed out, or one whose waiter was cancelled
        fut = entry[0]
        if not msg.data:  # no responders: a 503 status without a body
            fut.set_exception(NoStreamResponseError())
            return
        try:
            fut.set_result(_decode_ack(msg.data))
        except msgspec.DecodeError as e:
            fut.set_exception(APIError(description=f"unreadable JetStream ack: {e}"))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.timeout / 2))
            now = time.monotonic()
            for token, (fut, deadline) in list(self._pending.items()):
                if deadline < now:
                    del self._pending[token]
                    if not fut.done():
                        fut.set_exception(TimeoutError(f"no JetStream ack within {self.timeout:g}s"))


_UNSAFE = re.compile(r"[\s]")
_HEADER_START = b"NATS/1.0\r\n"


async def publish_lean(
    nc: Client, subject: str, payload: bytes, *, reply: str = "", headers: dict[str, str] | None = None
) -> None:
    """`nc.publish` for the services' hot paths, without its per-message cost.

    nats-py validates the subjects with a regular expression, builds the header block key by key
    and formats the command through several layers: at thousands of messages per second that was
    a tenth of the planner's CPU. Here the PUB/HPUB command is formatted in one go and queued on the
    connection's own buffer, which its flusher writes (what `nc.publish` does after its checks).
    Anything unusual (not connected, draining, oversized, whitespace in a subject, a line break in
    a header) takes `nc.publish`, which raises or buffers exactly as documented; so does a nats-py
    without the internals this relies on (`_send_command`, `_flush_queue`, `_flush_pending`)."""
    send = getattr(nc, "_send_command", None)
    flush_queue = getattr(nc, "_flush_queue", None)
    if (
        send is None
        or flush_queue is None
        or not subject
        or not nc.is_connected
        or nc.is_draining_pubs
        or len(payload) > nc.max_payload
        or _UNSAFE.search(subject)
        or (reply and _UNSAFE.search(reply))
        or (headers and any("\r" in v or "\n" in v or ":" in k for k, v in headers.items()))
    ):
        await nc.publish(subject, payload, reply=reply, headers=headers)
        return
    if headers:
        block = _HEADER_START + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n"
        cmd = b"HPUB %b %b %d %d\r\n%b%b\r\n" % (
            subject.encode(),
            reply.encode(),
            len(block),
            len(block) + len(payload),
            block,
            payload,
        )
    else:
        cmd = b"PUB %b %b %d\r\n%b\r\n" % (subject.encode(), reply.encode(), len(payload), payload)
    await send(cmd)
    if flush_queue.empty():
        await nc._flush_pending()


def check(ack: PubAck, subject: str) -> PubAck:
    """The ack, or the stream's refusal as nats-py's exception types."""
    if ack.error is not None:
        e = ack.error
        if e.err_code == WRONG_LAST_SEQUENCE:
            raise KeyWrongLastSequenceError(description=e.description)
        raise APIError(code=e.code, err_code=e.err_code, description=f"{subject}: {e.description}")
    return ack
