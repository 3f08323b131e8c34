"""A command sent twice with the same client-given Nats-Msg-Id takes effect once (JetStream drops the
duplicate), and the duplicate's unanswered request does not steal the answer of the next command."""

from __future__ import annotations

import json

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout

from shared.embedded_server import free_port
from tests.e2e.harness import Harness, rollout

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

STEPS = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 40}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]
PROMOTE = "rollouts.cmd.default.web.promote"


async def test_duplicate_promote_is_applied_once_and_the_next_one_is_answered(stack: Harness) -> None:
    port = free_port()
    await stack.apply(rollout("web", version=1, port=port, steps=STEPS))
    await stack.wait("web", lambda s: s["phase"] == "Healthy")
    await stack.apply(rollout("web", version=2, port=port, steps=STEPS))
    await stack.wait("web", lambda s: s["phase"] == "Paused" and s["currentStepIndex"] == 1)

    nc = await nats.connect(stack.url)
    try:
        first = await nc.request(PROMOTE, b"", timeout=10, headers={"Nats-Msg-Id": "promote-1"})
        assert json.loads(first.data)["ok"] is True
        await stack.wait("web", lambda s: s["phase"] == "Paused" and s["currentStepIndex"] == 3)

        # The same id again: dropped by the stream, so no planner ever answers it.
        with pytest.raises(NatsTimeout):
            await nc.request(PROMOTE, b"", timeout=1.5, headers={"Nats-Msg-Id": "promote-1"})

        # A new id with the same payload is answered to its own requester.
        third = await nc.request(PROMOTE, b"", timeout=10, headers={"Nats-Msg-Id": "promote-2"})
        assert json.loads(third.data)["ok"] is True
    finally:
        await nc.close()
    st = await stack.wait("web", lambda s: s["phase"] == "Paused" and s["currentStepIndex"] == 5)
    assert st["setWeight"] == 60  # two promotes took effect, not three
