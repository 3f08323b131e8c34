"""shared/publisher.py against a real nats-server: the lean publish puts the same bytes on the wire
as nats-py's (subject, reply, headers, payload), falls back to nats-py where nats-py would refuse,
and AckPublisher returns the stream's acks and its refusals."""

from __future__ import annotations

import asyncio

import pytest
from nats.errors import BadSubjectError
from nats.js.errors import KeyWrongLastSequenceError, NoStreamResponseError

from shared import subjects
from shared.jetstream import Connection
from shared.publisher import AckPublisher, check, publish_lean

pytestmark = pytest.mark.timeout(30)


async def _received(conn: Connection, subject: str, n: int) -> tuple[asyncio.Queue[object], object]:
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def cb(msg: object) -> None:
        await queue.put(msg)

    sub = await conn.nc.subscribe(subject, cb=cb)
    await conn.nc.flush()
    return queue, sub


async def test_lean_publish_delivers_what_nats_py_would(nats_conn: Connection) -> None:
    queue, _ = await _received(nats_conn, "lean.>", 2)
    headers = {"Nats-Msg-Id": "ev.default.web.1a2b.7", "X-Other": "a b"}
    await publish_lean(nats_conn.nc, "lean.one", b'{"x":1}', reply="lean.reply", headers=headers)
    await publish_lean(nats_conn.nc, "lean.two", b"")
    first = await asyncio.wait_for(queue.get(), 5)
    second = await asyncio.wait_for(queue.get(), 5)
    assert (first.subject, first.reply, first.data, first.headers) == (  # type: ignore[attr-defined]
        "lean.one",
        "lean.reply",
        b'{"x":1}',
        headers,
    )
    assert (second.subject, second.data, second.headers) == ("lean.two", b"", None)  # type: ignore[attr-defined]


async def test_lean_publish_refuses_what_nats_py_refuses(nats_conn: Connection) -> None:
    with pytest.raises(BadSubjectError):
        await publish_lean(nats_conn.nc, "", b"x")
    # A header value with a line break goes through nats-py, which keeps it from ending the block.
    queue, _ = await _received(nats_conn, "lean.hdr", 1)
    await publish_lean(nats_conn.nc, "lean.hdr", b"x", headers={"X-A": "one\r\ntwo"})
    msg = await asyncio.wait_for(queue.get(), 5)
    assert "\n" not in (msg.headers or {}).get("X-A", "")  # type: ignore[attr-defined]


async def test_ack_publisher_returns_acks_and_refusals(nats_conn: Connection) -> None:
    acks = AckPublisher(nats_conn.nc)
    try:
        key = "$KV." + subjects.ROLLOUTS_BUCKET + ".default.pub-test"
        first = check(await (await acks.send(key, b"1", {"Nats-Expected-Last-Subject-Sequence": "0"})), key)
        assert first.seq > 0 and not first.duplicate
        stale = await (await acks.send(key, b"2", {"Nats-Expected-Last-Subject-Sequence": "0"}))
        with pytest.raises(KeyWrongLastSequenceError):
            check(stale, key)
        event = subjects.events("default", "pub-test")
        one = await acks.publish(event, b"{}", {"Nats-Msg-Id": "pub-test-1"})
        again = await acks.publish(event, b"{}", {"Nats-Msg-Id": "pub-test-1"})
        assert again.duplicate and again.seq == one.seq
        with pytest.raises(NoStreamResponseError):  # no stream takes the subject: at once, no timeout
            await acks.publish("no.stream.here", b"{}")
    finally:
        await acks.close()
