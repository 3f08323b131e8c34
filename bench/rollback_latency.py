"""Benchmark: automated rollback latency, from the first failing measurement to traffic at 0 %.

An embedded nats-server and the real planner, traffic-shifter, scaler and analyzer processes
(`rollouts up`'s Stack; traffic-shifter and scaler with `--platform noop`, or the local proxy
with `--platform local`). A web metric served by this process answers `{"value": 1}` while
healthy and `{"value": 0}` once it is switched to failing; the AnalysisTemplate's metric has
`successCondition: result == 1`, `interval: --interval` and no count (runs until it fails),
failureLimit 0. The rollout's steps are `setWeight: 20` then that analysis.

Each repetition applies a new revision, waits until its analysis run reported a successful
measurement, switches the metric to failing, then waits for the planner's `RolloutAborted`
event and the `WeightConfirmed` event with actualWeight 0 that follows it (the traffic-shifter
confirmed the rollback). Two latencies per repetition (same clock, same machine):

* from_failed_measurement_ms: from the failing MeasurementTaken's `finishedAt` (the analyzer
  has the failing value) to WeightConfirmed(0) received: the control plane's reaction;
* from_metric_failing_ms: from the moment the metric server started failing (a random point
  of the interval after a good measurement): adds the wait for the next measurement (up to one
  interval, on average half) and the measurement itself.

    .venv/bin/python bench/rollback_latency.py [--repeats 30] [--interval 100ms] [--platform noop]

Prints one JSON object on stdout and a human summary on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from aiohttp import web

from services.cli.client import Client
from services.cli.processes import Stack, wait_ready
from shared import subjects
from shared.durations import parse_go_duration
from shared.embedded_server import free_port
from shared.messages import MeasurementTaken, RolloutEvent, event_decoder, feedback_decoder
from shared.settings import Settings

NS = "default"
NAME = "bench"


def template(metric_port: int, interval: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "health"},
        "spec": {
            "metrics": [
                {
                    "name": "health",
                    "interval": interval,
                    "successCondition": "result == 1",
                    "provider": {"web": {"url": f"http://127.0.0.1:{metric_port}/", "jsonPath": "{$.value}"}},
                }
            ]
        },
    }


def rollout(version: int, app_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": NAME},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": f"{NAME}:{version}",
                            "command": ["python", "-m", "services.demo_app"],
                            "env": [{"name": "VERSION", "value": str(version)}],
                            "ports": [{"containerPort": app_port}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": app_port}},
                        }
                    ]
                },
            },
            "strategy": {
                "canary": {
                    "canaryService": f"{NAME}-canary",
                    "stableService": f"{NAME}-stable",
                    "trafficRouting": {
                        "istio": {"virtualService": {"name": f"{NAME}-vsvc", "routes": ["primary"]}}
                    },
                    "abortScaleDownDelaySeconds": 1,
                    "steps": [
                        {"setWeight": 20},
                        {"analysis": {"templates": [{"templateName": "health"}]}},
                    ],
                }
            },
        },
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


class Metric:
    def __init__(self) -> None:
        self.failing = False
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def handle(self, _: web.Request) -> web.Response:
        return web.json_response({"value": 0 if self.failing else 1})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def main(repeats: int, interval: str, platform: str) -> dict[str, Any]:
    interval_s = parse_go_duration(interval)
    metric = Metric()
    await metric.start()
    with tempfile.TemporaryDirectory(prefix="rollouts-bench-") as tmp:
        settings = Settings(
            nats_url=f"nats://127.0.0.1:{free_port()}", state_dir=Path(tmp), admin_port=free_port()
        )
        stack = Stack(settings, embedded_nats=True, platform=platform, log_dir=Path(tmp) / "logs")
        await asyncio.to_thread(stack.start)
        from_failed: list[float] = []
        from_flip: list[float] = []
        try:
            await wait_ready(settings.nats_url)
            nc = await nats.connect(settings.nats_url)
            events: asyncio.Queue[tuple[float, RolloutEvent]] = asyncio.Queue()
            taken: asyncio.Queue[MeasurementTaken] = asyncio.Queue()

            async def on_event(msg: Any) -> None:
                events.put_nowait((time.time(), event_decoder.decode(msg.data)))

            async def on_feedback(msg: Any) -> None:
                fb = feedback_decoder.decode(msg.data)
                if isinstance(fb, MeasurementTaken):
                    taken.put_nowait(fb)

            await nc.subscribe(subjects.events(NS, NAME), cb=on_event)
            await nc.subscribe(subjects.feedback("analysis", NS, NAME), cb=on_feedback)
            await nc.flush()

            async def until_event(pred: Any, timeout: float = 60) -> tuple[float, RolloutEvent]:
                while True:
                    at, ev = await asyncio.wait_for(events.get(), timeout=timeout)
                    if pred(ev):
                        return at, ev

            async def until_taken(pred: Any, timeout: float = 60) -> MeasurementTaken:
                while True:
                    m = await asyncio.wait_for(taken.get(), timeout=timeout)
                    if pred(m):
                        return m

            app_port = free_port()
            async with Client(settings.nats_url) as client:

                async def apply(doc: dict[str, Any]) -> None:
                    reply = await client.command(
                        NS, doc["metadata"]["name"], "apply", json.dumps(doc).encode(), timeout=30
                    )
                    assert reply.ok, reply.error

                await apply(template(metric.port, interval))
                await apply(rollout(1, app_port))
                await until_event(lambda e: e.phase == "Healthy")
                for i in range(repeats):
                    metric.failing = False
                    applied = time.time()
                    await apply(rollout(i + 2, app_port))
                    # The new run's first good measurement (the aborted run's are long gone).
                    ok = await until_taken(lambda m, t=applied: m.phase == "Successful" and m.started_at > t)
                    # Start failing at a random point of the measurement interval.
                    await asyncio.sleep(random.uniform(0, interval_s))
                    metric.failing = True
                    flipped = time.time()
                    failed = await until_taken(
                        lambda m, run=ok.run_id: m.run_id == run and m.phase == "Failed"
                    )
                    await until_event(lambda e: e.type == "RolloutAborted")
                    confirmed, _ = await until_event(
                        lambda e: e.type == "WeightConfirmed" and e.actual_weight == 0
                    )
                    from_failed.append((confirmed - failed.finished_at) * 1000)
                    from_flip.append((confirmed - flipped) * 1000)
                    # Drain what the aborted run still sends before the next revision.
                    await asyncio.sleep(0.2)
                    while not taken.empty():
                        taken.get_nowait()
            await nc.close()
        finally:
            await asyncio.to_thread(stack.stop)
            await metric.stop()
    return {
        "repeats": len(from_failed),
        "platform": platform,
        "interval": interval,
        "from_failed_measurement_ms": {
            "p50": round(percentile(from_failed, 0.5), 2),
            "p90": round(percentile(from_failed, 0.9), 2),
            "p99": round(percentile(from_failed, 0.99), 2),
            "max": round(max(from_failed), 2),
            "mean": round(statistics.fmean(from_failed), 2),
        },
        "from_metric_failing_ms": {
            "p50": round(percentile(from_flip, 0.5), 2),
            "p90": round(percentile(from_flip, 0.9), 2),
            "p99": round(percentile(from_flip, 0.99), 2),
            "max": round(max(from_flip), 2),
            "mean": round(statistics.fmean(from_flip), 2),
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--interval", default="100ms", help="the metric's measurement interval (Go duration)")
    parser.add_argument("--platform", choices=("noop", "local"), default="noop")
    args = parser.parse_args()
    result = asyncio.run(main(args.repeats, args.interval, args.platform))
    print(json.dumps(result))
    a, b = result["from_failed_measurement_ms"], result["from_metric_failing_ms"]
    print(
        f"rollback over {result['repeats']} aborts ({args.platform}): failing measurement -> weight 0 confirmed "
        f"p50 {a['p50']:.1f} ms, p99 {a['p99']:.1f} ms (max {a['max']:.1f}); "
        f"metric starts failing -> weight 0 confirmed p50 {b['p50']:.1f} ms, p99 {b['p99']:.1f} ms",
        file=sys.stderr,
    )
