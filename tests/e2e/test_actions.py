"""Actions that rewrite the spec, through the CLI and NATS: `set image` starts a new revision through
the steps; `undo` goes back to an earlier revision (the stable one: steps skipped) and
`undo --to-revision` to any kept one; bad payloads are answered with the field at fault."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from shared.embedded_server import free_port
from tests.e2e.harness import Harness, rollout, versions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

STEPS = [{"setWeight": 50}, {"pause": {}}]


async def test_set_image_and_undo(stack: Harness) -> None:
    port = free_port()
    await stack.apply(rollout("web", version=1, port=port, steps=STEPS))
    await stack.wait("web", lambda s: s["phase"] == "Healthy")

    code, out, err = await stack.cli("set", "image", "web", "app=web:2")
    assert code == 0, err
    st = await stack.wait("web", lambda s: s["phase"] == "Paused" and s["currentRevision"] == 2)
    assert st["actualWeight"] == 50
    doc = json.loads((await stack.cli("get", "web", "-o", "json"))[1])
    assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == "web:2"

    code, out, err = await stack.cli("undo", "web")  # back to revision 1, the stable one: no steps
    assert code == 0, err
    st = await stack.wait(
        "web", lambda s: s["phase"] == "Healthy" and s["stableRevision"] == 1 and s["actualWeight"] == 100
    )
    assert await versions(port, 10) == {"1": 10}

    code, out, err = await stack.cli("undo", "web", "--to-revision", "2")
    assert code == 0, err
    st = await stack.wait("web", lambda s: s["phase"] == "Paused" and s["currentRevision"] == 3)

    code, _, err = await stack.cli("undo", "web", "--to-revision", "42")
    assert code == 1 and "toRevision" in err
    code, _, err = await stack.cli("set", "image", "web", "nope=web:9")
    assert code == 1 and "'nope' is not a container" in err
    code, _, err = await stack.cli("set", "image", "web", "missing-equals")
    assert code == 2

    nc = await nats.connect(stack.url)
    try:
        msg = await nc.request("rollouts.cmd.default.web.set-image", b'{"imag": "x"}', timeout=10)
    finally:
        await nc.close()
    reply = json.loads(msg.data)
    assert reply["ok"] is False and "imag" in reply["error"]


async def pids(port: int, n: int) -> set[int]:
    import aiohttp

    seen: set[int] = set()
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.get(f"http://127.0.0.1:{port}/") as r:
                assert r.status == 200
                seen.add(int((await r.json())["pid"]))
    return seen


async def test_restart_replaces_every_replica_without_dropping_requests(stack: Harness) -> None:
    port = free_port()
    await stack.apply(rollout("web", version=1, port=port, steps=STEPS, replicas=2))
    await stack.wait("web", lambda s: s["phase"] == "Healthy")
    before = await pids(port, 10)
    assert len(before) == 2
    code, out, err = await stack.cli("restart", "web")
    assert code == 0 and "restarting" in out, err
    deadline = asyncio.get_running_loop().time() + 60
    while True:  # every request keeps succeeding while replicas are replaced one at a time
        now = await pids(port, 10)
        if not now & before:
            break
        assert asyncio.get_running_loop().time() < deadline, f"still old replicas: {now & before}"
    assert len(await pids(port, 10)) == 2
    events = [e.type for e in await stack.client.history("default", "web")]
    assert "RolloutRestarted" in events


async def test_delete_stops_replicas_and_the_proxy_and_forgets_the_rollout(stack: Harness) -> None:
    import os

    port = free_port()
    await stack.apply(rollout("web", version=1, port=port, steps=STEPS, replicas=2))
    await stack.wait("web", lambda s: s["phase"] == "Healthy")
    replicas = await pids(port, 10)
    assert len(replicas) == 2
    feed = await stack.client.feed("default", "web", history=False)
    try:
        code, out, err = await stack.cli("delete", "web")
        assert code == 0 and "deleted" in out, err
        while (await feed.get(timeout=10)).type != "RolloutDeleted":
            pass
    finally:
        await feed.close()
    code, _, err = await stack.cli("get", "web")
    assert code == 1 and "not found" in err
    deadline = asyncio.get_running_loop().time() + 30
    while any(_alive(pid) for pid in replicas):  # the scaler stops them (draining first)
        assert asyncio.get_running_loop().time() < deadline, "replicas still running"
        await asyncio.sleep(0.05)
    while True:  # and the traffic-shifter stops listening on the rollout's port
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            break
        writer.close()
        assert asyncio.get_running_loop().time() < deadline, "proxy still listening"
        await asyncio.sleep(0.05)
    # The name is free again: applying it creates a new rollout at revision 1.
    await stack.apply(rollout("web", version=2, port=port, steps=STEPS, replicas=1))
    st = await stack.wait("web", lambda s: s["phase"] == "Healthy")
    assert st["currentRevision"] == 1
    assert os.getpid() not in replicas


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
