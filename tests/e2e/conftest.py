"""The e2e `stack` fixture: a Harness (embedded nats-server, the four services as processes, a
client) per test; modules that need another shape define their own `stack`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import Harness


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
