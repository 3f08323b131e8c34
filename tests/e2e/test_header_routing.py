"""Header routing and mirroring through the built-in proxy, end to end: with setCanaryScale and no
weight, only requests carrying the header reach the canary; a mirror route copies requests to it
while clients keep the stable's answers; the routes are removed when the rollout completes."""

from __future__ import annotations

import aiohttp
import pytest

from shared.embedded_server import free_port
from tests.e2e.harness import Harness, rollout, versions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

STEPS = [
    {"setCanaryScale": {"replicas": 1}},
    {
        "setHeaderRoute": {
            "name": "beta",
            "match": [{"headerName": "X-Beta", "headerValue": {"exact": "yes"}}],
        }
    },
    {"pause": {}},
    {"setMirrorRoute": {"name": "shadow", "percentage": 100, "match": [{"path": {"prefix": "/"}}]}},
    {"pause": {}},
]


def doc(version: int, port: int) -> dict[str, object]:
    d = rollout("web", version=version, port=port, steps=STEPS)
    canary = d["spec"]["strategy"]["canary"]  # type: ignore[index]
    canary["trafficRouting"]["managedRoutes"] = [{"name": "beta"}, {"name": "shadow"}]
    return d


async def with_header(port: int, n: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.get(f"http://127.0.0.1:{port}/", headers={"X-Beta": "yes"}) as r:
                v = str((await r.json())["version"])
                counts[v] = counts.get(v, 0) + 1
    return counts


async def test_header_route_then_mirror_then_cleanup(stack: Harness) -> None:
    port = free_port()
    await stack.apply(doc(1, port))
    await stack.wait("web", lambda s: s["phase"] == "Healthy")
    await stack.apply(doc(2, port))
    st = await stack.wait("web", lambda s: s["phase"] == "Paused" and s["currentStepIndex"] == 2)
    assert st["actualWeight"] == 0
    assert await versions(port, 20) == {"1": 20}  # no weight: plain requests stay on the stable
    assert await with_header(port, 20) == {"2": 20}  # the header route sends these to the canary

    code, _, err = await stack.cli("promote", "web")
    assert code == 0, err
    await stack.wait("web", lambda s: s["phase"] == "Paused" and s["currentStepIndex"] == 4)
    assert await versions(port, 20) == {"1": 20}  # clients get the stable's answers...
    async with aiohttp.ClientSession() as s:  # ...while the canary receives copies
        async with s.get(f"http://127.0.0.1:{stack.settings.admin_port}/api/v1/rollouts") as r:
            stats = await r.json()
    canary = [x for x in stats["default/web"]["revisions"] if x["role"] == "canary"]
    assert canary and sum(x.get("mirrored", 0) for x in canary) > 0

    code, _, err = await stack.cli("promote", "web", "--full")
    assert code == 0, err
    await stack.wait("web", lambda s: s["phase"] == "Healthy" and s["stableRevision"] == 2)
    assert await with_header(port, 10) == {"2": 10}
    history = await stack.client.history("default", "web")
    assert any(e.type == "StepCompleted" and "header route beta" in e.message for e in history)
