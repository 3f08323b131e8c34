"""A lean NATS subscriber for benchmarks that watch every event of thousands of rollouts.

nats-py spends some 40 µs of Python per delivered message (protocol parse, a Msg object, a queue,
a callback); at 3,000 events/s that is a tenth of a core the benchmark's own observer takes from
the two-core machine it measures. This tap speaks the few protocol operations a plain subscriber
needs (INFO, CONNECT, SUB, MSG/HMSG, PING/PONG) over one asyncio connection and hands each payload
to a callback, unparsed. It is a measuring instrument only: no reconnects, no TLS, no auth.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from urllib.parse import urlparse

_CRLF = b"\r\n"


class _TapProtocol(asyncio.Protocol):
    def __init__(self, on_payload: Callable[[bytes], None], ready: asyncio.Future[None]) -> None:
        self.on_payload = on_payload
        self.ready = ready
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        n = len(buf)
        while pos < n:
            eol = buf.find(_CRLF, pos)
            if eol < 0:
                break
            line = bytes(buf[pos:eol])
            if line.startswith((b"MSG ", b"HMSG ")):
                args = line.split()
                total = int(args[-1])
                hdr = int(args[-2]) if line[0:1] == b"H" else 0
                start = eol + 2
                end = start + total
                if end + 2 > n:
                    break  # the payload is not all here yet
                self.on_payload(bytes(buf[start + hdr : end]))
                pos = end + 2
                continue
            pos = eol + 2
            if line == b"PING" and self.transport is not None:
                self.transport.write(b"PONG\r\n")
            elif line == b"PONG" and not self.ready.done():
                self.ready.set_result(None)
            elif line.startswith(b"-ERR"):
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(line.decode(errors="replace")))
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("connection closed"))


class EventTap:
    """Subscribe to `subject` on the server at `url`; `on_payload(bytes)` is called per message."""

    def __init__(self, url: str, subject: str, on_payload: Callable[[bytes], None]) -> None:
        self.url = url
        self.subject = subject
        self.on_payload = on_payload
        self.transport: asyncio.Transport | None = None

    async def start(self) -> None:
        u = urlparse(self.url)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(
            lambda: _TapProtocol(self.on_payload, ready), u.hostname or "127.0.0.1", u.port or 4222
        )
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        connect = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1, "name": "bench-tap"}
        transport.write(
            b"CONNECT "
            + json.dumps(connect).encode()
            + _CRLF
            + b"SUB "
            + self.subject.encode()
            + b" 1"
            + _CRLF
            + b"PING"
            + _CRLF
        )
        await asyncio.wait_for(ready, timeout=10)  # PONG: the subscription is in place

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
