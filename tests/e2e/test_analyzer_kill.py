"""Three analyzer processes share the work queue; one is SIGKILLed while it is in the middle of a
measurement. Its unacknowledged items come back after the ack wait (2 s here) and the two others
finish them: the rollout still becomes Healthy, and the feedback stream holds every
(metric, index) exactly once, none lost and none doubled.

The web metric is a real aiohttp server in this test that answers after 0.3 s, so a measurement
is in flight long enough to be caught. Which analyzer process a request comes from is read from
/proc (the request's source port belongs to one of the process's sockets), so the kill happens
exactly while the victim holds a measurement it has not acknowledged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from nats.js.api import DeliverPolicy

from shared import subjects
from shared.embedded_server import free_port
from shared.messages import MeasurementTaken, feedback_decoder
from tests.e2e.harness import NS, Harness, rollout

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="maps sockets to processes via /proc"),
]

ACK_WAIT = 2.0
METRICS = ("m0", "m1", "m2", "m3")
COUNT = 12


# --- a slow web metric, and which process a request comes from --------------------------------


@dataclasses.dataclass
class Request:
    metric: str
    peer_port: int
    started: float
    finished: float | None = None


class SlowMetric:
    """An HTTP server answering `{"value": 1}` on /m/<metric> after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.port = free_port()
        self.requests: list[Request] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        r = Request(request.match_info["metric"], int(peer[1]) if peer else -1, time.time())
        self.requests.append(r)
        try:
            await asyncio.sleep(self.delay)
            return web.json_response({"value": 1})
        finally:
            r.finished = time.time()

    def in_flight(self) -> list[Request]:
        return [r for r in self.requests if r.finished is None]

    def count(self, metric: str) -> int:
        return sum(1 for r in self.requests if r.metric == metric)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/m/{metric}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def tcp_ports_of(pid: int) -> set[int]:
    """Local TCP ports of the sockets process `pid` has open (Linux /proc)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return set()
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def worker_id(pid: int) -> str:
    """The `worker` field the analyzer process `pid` puts in its MeasurementTaken messages."""
    return f"{socket.gethostname()}:{pid}"


def slow_template(
    name: str, *, port: int, metrics: tuple[str, ...], count: int, interval: str
) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {
            "metrics": [
                {
                    "name": m,
                    "interval": interval,
                    "count": count,
                    "successCondition": "result == 1",
                    "provider": {"web": {"url": f"http://127.0.0.1:{port}/m/{m}", "jsonPath": "{$.value}"}},
                }
                for m in metrics
            ]
        },
    }


ANALYSIS_STEPS: list[dict[str, Any]] = [
    {"setWeight": 50},
    {"analysis": {"templates": [{"templateName": "slow"}]}},
]


class Taken:
    """Every MeasurementTaken of a rollout, read from the feedback stream from its start."""

    def __init__(self) -> None:
        self.items: list[MeasurementTaken] = []
        self.sub: Any = None

    async def start(self, h: Harness, name: str) -> None:
        async def on_msg(msg: Any) -> None:
            ev = feedback_decoder.decode(msg.data)
            if isinstance(ev, MeasurementTaken):
                self.items.append(ev)

        self.sub = await h.client.c.js.subscribe(
            subjects.feedback("analysis", NS, name),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            cb=on_msg,
        )

    async def until(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.items) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # anything doubled would arrive now

    async def stop(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()


def harness_with_ack_wait(tmp: Path, *, analyzers: int, ack_wait: float) -> Harness:
    """The e2e harness with a short analyzer ack wait (it reaches the children as ROLLOUTS_ANALYZER_ACK_WAIT)."""
    h = Harness(tmp, analyzers=analyzers)
    h.settings = dataclasses.replace(h.settings, analyzer_ack_wait=ack_wait)
    h.stack.settings = h.settings
    return h


# --- the test ------------------------------------------------------------------------------------


async def test_sigkilled_analyzer_items_are_finished_by_the_others_exactly_once(tmp_path: Path) -> None:
    metric = SlowMetric(delay=0.3)
    await metric.start()
    h = harness_with_ack_wait(tmp_path, analyzers=3, ack_wait=ACK_WAIT)
    await h.start()
    taken = Taken()
    try:
        victim_name = "analyzer-2"
        victim = worker_id(h.stack.children[victim_name].pid)
        app_port = free_port()
        await h.apply(slow_template("slow", port=metric.port, metrics=METRICS, count=COUNT, interval="0.05s"))
        await h.apply(rollout("web", version=1, port=app_port, steps=ANALYSIS_STEPS))
        await h.wait("web", lambda s: s["phase"] == "Healthy")
        await taken.start(h, "web")
        await h.apply(rollout("web", version=2, port=app_port, steps=ANALYSIS_STEPS))

        # Kill the victim the moment it is measuring (request open at the metric server, so its
        # work item is unacknowledged), once it has already reported a measurement or two.
        victim_pid = h.stack.children[victim_name].pid
        deadline = time.monotonic() + 30
        holding: list[Request] = []
        while not holding:
            assert time.monotonic() < deadline, f"{victim_name} never took work\n{h.logs()}"
            await asyncio.sleep(0.01)
            if sum(1 for m in taken.items if m.worker == victim) < 2:
                continue
            ports = tcp_ports_of(victim_pid)
            holding = [r for r in metric.in_flight() if r.peer_port in ports]
        h.kill(victim_name)
        killed_at = time.time()
        held_metrics = {r.metric for r in holding}

        st = await h.wait("web", lambda s: s["phase"] == "Healthy" and s["stableRevision"] == 2, timeout=60)
        assert st["currentAnalysisRun"]["phase"] == "Successful"
        await taken.until(len(METRICS) * COUNT, timeout=10)

        # Every measurement exactly once: none lost, none doubled.
        seen = Counter((m.metric, m.index) for m in taken.items)
        expected = {(m, i) for m in METRICS for i in range(COUNT)}
        assert set(seen) == expected, f"missing {sorted(expected - set(seen))}"
        assert all(n == 1 for n in seen.values()), f"doubled {[k for k, n in seen.items() if n > 1]}"

        # Nothing after the kill was reported by the victim; it did take part before.
        assert any(m.worker == victim for m in taken.items)
        assert not [m for m in taken.items if m.worker == victim and m.finished_at > killed_at]

        # The item the victim was measuring was redone by another worker once the ack wait expired.
        for name in held_metrics:
            chain = sorted((m for m in taken.items if m.metric == name), key=lambda m: m.index)
            redo = next(m for m in chain if m.started_at > killed_at)
            assert redo.worker != victim
            assert redo.worker in {
                worker_id(p.pid) for n, p in h.stack.children.items() if n.startswith("analyzer")
            }
            waited = redo.started_at - killed_at
            print(
                f"{name}[{redo.index}] held by the killed {victim}, redone by {redo.worker} {waited:.2f}s later"
            )
            # Redelivery comes ack_wait after the victim got the item, which was < ~0.4 s before the kill.
            assert waited > ACK_WAIT - 1.0, (
                f"{name}[{redo.index}] redone {waited:.2f}s after the kill: too soon for a redelivery"
            )
            assert waited < ACK_WAIT + 5.0, f"{name}[{redo.index}] redone only {waited:.2f}s after the kill"
            previous = [m for m in chain if m.index < redo.index]
            assert previous and previous[-1].finished_at < killed_at
        # A metric's measurements are sequential, so the metric server saw each one once, plus at
        # most one unanswered request of the victim per metric (certainly for those it held).
        for name in METRICS:
            extra = 1 if name in held_metrics else 0
            assert COUNT + extra <= metric.count(name) <= COUNT + 1, (
                name,
                metric.count(name),
                msgspec.json.encode(sorted((m.index, m.worker) for m in taken.items if m.metric == name)),
            )
    finally:
        await taken.stop()
        await h.stop()
        await metric.stop()
