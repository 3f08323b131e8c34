"""Actions that rewrite the spec, through the CLI and NATS: `set image` starts a new revision through
the steps; `undo` goes back to an earlier revision (the stable one: steps skipped) and
`undo --to-revision` to any kept one; bad payloads are answered with the field at fault."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from shared.embedded_server import free_port
from tests.e2e.harness import Harness, rollout, versions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

STEPS = [{"setWeight": 50}, {"pause": {}}]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


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
