"""Two analyzer processes share the JetStream work queue: every measurement is taken exactly once,
by one of them, and both take part."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from nats.js.api import DeliverPolicy

from shared import subjects
from shared.embedded_server import free_port
from shared.messages import MeasurementTaken, feedback_decoder
from tests.e2e.harness import Harness, rollout, template

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_two_analyzers_share_the_work_each_measurement_once(tmp_path: Path) -> None:
    h = Harness(tmp_path, analyzers=2)
    await h.start()
    try:
        port = free_port()
        await h.apply(template("t1", admin_port=h.settings.admin_port, count=8, interval="0.1s"))
        steps = [
            {"setWeight": 50},
            {
                "analysis": {
                    "templates": [{"templateName": "t1"}],
                    "args": [{"name": "service-name", "value": "web-canary"}],
                }
            },
        ]
        await h.apply(rollout("web", version=1, port=port, steps=steps))
        await h.wait("web", lambda s: s["phase"] == "Healthy")
        await h.apply(rollout("web", version=2, port=port, steps=steps))
        st = await h.wait("web", lambda s: s["phase"] == "Healthy" and s["stableRevision"] == 2, timeout=60)
        assert st["currentAnalysisRun"]["phase"] == "Successful"

        # Read every measurement the analyzers reported from the feedback stream.
        taken: list[MeasurementTaken] = []
        done = asyncio.Event()

        async def on_msg(msg: object) -> None:
            ev = feedback_decoder.decode(msg.data)  # type: ignore[attr-defined]
            if isinstance(ev, MeasurementTaken):
                taken.append(ev)
                if len(taken) == 8:
                    done.set()

        sub = await h.client.c.js.subscribe(
            subjects.feedback("analysis", "default", "web"),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            cb=on_msg,
        )
        await asyncio.wait_for(done.wait(), timeout=10)
        await sub.unsubscribe()
        indexes = sorted(m.index for m in taken)
        assert indexes == list(range(8)), msgspec.json.encode(taken)  # each measurement once, none lost
        workers = {m.worker for m in taken}
        assert len(workers) == 2, f"only {workers} took work"
    finally:
        await h.stop()
