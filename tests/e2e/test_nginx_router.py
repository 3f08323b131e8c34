"""The four services with the nginx router (`--router nginx`) instead of the built-in proxy: local
replicas behind a real nginx that the traffic-shifter configures and reloads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.traffic_shifter.nginx_provider import NginxProvider
from shared.embedded_server import free_port
from tests.e2e.harness import Harness, rollout, versions

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        NginxProvider.available() is None,
        reason="nginx is not installed (apt-get install nginx; .ci/run installs it)",
    ),
]

STEPS = [{"setWeight": 50}, {"pause": {}}]


@pytest.fixture
async def nginx_stack(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, router="nginx")
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


async def test_a_canary_through_nginx(nginx_stack: Harness) -> None:
    h = nginx_stack
    port = free_port()
    await h.apply(rollout("web", version=1, port=port, steps=STEPS))
    await h.wait("web", lambda s: s["phase"] == "Healthy")
    assert await versions(port, 20) == {"1": 20}

    await h.apply(rollout("web", version=2, port=port, steps=STEPS))
    st = await h.wait("web", lambda s: s["phase"] == "Paused" and s["currentRevision"] == 2)
    assert st["actualWeight"] == 50
    assert await versions(port, 200) == {"1": 100, "2": 100}  # nginx's weighted round robin: exact

    code, _, err = await h.cli("promote", "web")
    assert code == 0, err
    await h.wait("web", lambda s: s["phase"] == "Healthy" and s["stableRevision"] == 2)
    assert await versions(port, 20) == {"2": 20}
    # It was nginx that served: the traffic-shifter wrote its configuration under the state dir.
    assert any((h.settings.state_dir / "nginx").rglob("*.conf"))
