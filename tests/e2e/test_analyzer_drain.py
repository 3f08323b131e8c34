"""SIGTERM drains an analyzer: the measurements it has in flight are finished and acknowledged
(their MeasurementTaken is published by it, and no other analyzer measures them again after the
ack wait), it takes nothing new, and the process exits 0 within a bound.

Two analyzer processes with a 3 s ack wait and a web metric answering after 1 s: the SIGTERM
comes while the victim's request is open at the metric server (found via /proc, see
test_analyzer_kill), so the item is certainly unacknowledged at that moment. Had the victim
dropped it, the other analyzer would get it 3 s later and the metric server would see one
request too many.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from shared.embedded_server import free_port
from tests.e2e.harness import rollout
from tests.e2e.test_analyzer_kill import (
    ANALYSIS_STEPS,
    Request,
    SlowMetric,
    Taken,
    harness_with_ack_wait,
    slow_template,
    tcp_ports_of,
    worker_id,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="maps sockets to processes via /proc"),
]

ACK_WAIT = 3.0
DELAY = 1.0
METRICS = ("d0", "d1", "d2")
COUNT = 4
# In flight: at most DELAY left; then the fetch loop notices the stop within its 1 s pull timeout.
EXIT_BOUND = 8.0


async def test_sigterm_finishes_in_flight_measurements_then_exits_0(tmp_path: Path) -> None:
    metric = SlowMetric(delay=DELAY)
    await metric.start()
    h = harness_with_ack_wait(tmp_path, analyzers=2, ack_wait=ACK_WAIT)
    await h.start()
    taken = Taken()
    try:
        victim_name = "analyzer-2"
        proc = h.stack.children[victim_name]
        victim = worker_id(proc.pid)
        app_port = free_port()
        await h.apply(slow_template("slow", port=metric.port, metrics=METRICS, count=COUNT, interval="0.05s"))
        await h.apply(rollout("web", version=1, port=app_port, steps=ANALYSIS_STEPS))
        await h.wait("web", lambda s: s["phase"] == "Healthy")
        await taken.start(h, "web")
        await h.apply(rollout("web", version=2, port=app_port, steps=ANALYSIS_STEPS))

        deadline = time.monotonic() + 30
        holding: list[Request] = []
        while not holding:
            assert time.monotonic() < deadline, f"{victim_name} never took work\n{h.logs()}"
            await asyncio.sleep(0.01)
            ports = tcp_ports_of(proc.pid)
            holding = [r for r in metric.in_flight() if r.peer_port in ports]
        proc.send_signal(signal.SIGTERM)
        term_at = time.time()
        code = await asyncio.to_thread(proc.wait, EXIT_BOUND + 5)
        exited_after = time.time() - term_at
        assert code == 0, h.logs()
        assert exited_after < EXIT_BOUND, f"exited {exited_after:.2f}s after SIGTERM"
        assert "draining" in (tmp_path / "logs" / f"{victim_name}.log").read_text()
        print(f"{victim} held {[r.metric for r in holding]}; exited 0 {exited_after:.2f}s after SIGTERM")

        st = await h.wait("web", lambda s: s["phase"] == "Healthy" and s["stableRevision"] == 2, timeout=60)
        assert st["currentAnalysisRun"]["phase"] == "Successful"
        await taken.until(len(METRICS) * COUNT, timeout=10)

        # The measurements in flight at SIGTERM were finished and reported by the victim itself.
        for r in holding:
            assert r.finished is not None and r.finished < term_at + DELAY + 0.5
            mine = [
                m
                for m in taken.items
                if m.metric == r.metric and m.worker == victim and m.started_at <= term_at <= m.finished_at
            ]
            assert len(mine) == 1, f"{r.metric}: in-flight measurement not reported by {victim}"
            assert mine[0].phase == "Successful"
        # Nothing was started by the victim after it was told to stop... except what it had
        # already taken (a fetch in progress when the signal came is finished as well).
        late = [m for m in taken.items if m.worker == victim and m.started_at > term_at + 1.5]
        assert not late, late

        # Every measurement exactly once, and the metric server asked exactly COUNT times per
        # metric: acknowledged, so nothing was redelivered to the other analyzer and redone.
        seen = Counter((m.metric, m.index) for m in taken.items)
        assert set(seen) == {(m, i) for m in METRICS for i in range(COUNT)}
        assert all(n == 1 for n in seen.values()), seen
        for name in METRICS:
            assert metric.count(name) == COUNT, (name, metric.count(name))
        info = await h.client.c.js.consumer_info("ROLLOUTS_ANALYSIS_WORK", "analyzers")
        assert info.num_ack_pending == 0
    finally:
        await taken.stop()
        await h.stop()
        await metric.stop()
