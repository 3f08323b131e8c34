"""Benchmark: time from a `promote` command being published to the event confirming the new weight.

Runs an embedded nats-server and the planner, traffic-shifter and scaler as separate processes
(shifter and scaler in no-op mode, so the number is the control plane's own: NATS hops, JetStream
persistence, the planner's decide + KV write). The rollout alternates `setWeight` and `pause: {}`;
each promote ends a pause and the next setWeight must be confirmed by the traffic-shifter.

    .venv/bin/python bench/promote_latency.py [--promotions 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
from bench_rollouts import bench_rollout

from services.cli.client import Client
from services.cli.processes import Stack, wait_ready
from shared.embedded_server import free_port
from shared.messages import event_decoder
from shared.settings import Settings


def plan(promotions: int) -> list[dict[str, object]]:
    steps: list[dict[str, object]] = []
    for i in range(promotions):
        steps.append({"pause": {}})
        steps.append({"setWeight": 10 + (i % 2) * 10})
    return steps


def rollout(version: int, promotions: int) -> dict[str, object]:
    return bench_rollout("bench", version, plan(promotions))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


async def main(promotions: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="rollouts-bench-") as tmp:
        settings = Settings(
            nats_url=f"nats://127.0.0.1:{free_port()}", state_dir=Path(tmp), admin_port=free_port()
        )
        stack = Stack(settings, embedded_nats=True, platform="noop", log_dir=Path(tmp) / "logs")
        await asyncio.to_thread(stack.start)
        try:
            await wait_ready(settings.nats_url, ("planner", "traffic-shifter", "scaler"))
            nc = await nats.connect(settings.nats_url)
            events: asyncio.Queue[tuple[float, str, int]] = asyncio.Queue()

            async def on_event(msg: object) -> None:
                ev = event_decoder.decode(msg.data)  # type: ignore[attr-defined]
                events.put_nowait((time.perf_counter(), ev.type, ev.actual_weight))

            await nc.subscribe("rollouts.events.default.bench", cb=on_event)
            async with Client(settings.nats_url) as client:
                for version in (1, 2):
                    reply = await client.command(
                        "default",
                        "bench",
                        "apply",
                        json.dumps(rollout(version, promotions)).encode(),
                        timeout=30,
                    )
                    assert reply.ok, reply.error

            async def until(kind: str) -> tuple[float, int]:
                while True:
                    at, t, weight = await asyncio.wait_for(events.get(), timeout=30)
                    if t == kind:
                        return at, weight

            await until("RolloutPaused")
            latencies: list[float] = []
            for _ in range(promotions):
                t0 = time.perf_counter()
                await nc.publish("rollouts.cmd.default.bench.promote", b"")
                at, _weight = await until("WeightConfirmed")
                latencies.append((at - t0) * 1000)
                if len(latencies) < promotions:
                    await until("RolloutPaused")
            await nc.close()
        finally:
            await asyncio.to_thread(stack.stop)
    return {
        "promotions": float(len(latencies)),
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "mean_ms": statistics.fmean(latencies),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--promotions", type=int, default=200)
    args = parser.parse_args()
    result = asyncio.run(main(args.promotions))
    print(json.dumps(result))
    print(
        f"promote -> weight confirmed over {int(result['promotions'])} promotions: "
        f"p50 {result['p50_ms']:.2f} ms, p90 {result['p90_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
        f"max {result['max_ms']:.2f} ms",
        file=sys.stderr,
    )
