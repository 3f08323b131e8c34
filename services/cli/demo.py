"""`rollouts demo`: the seed's canary plan end to end on this machine, with real processes and real traffic.

An embedded nats-server, the four services as child processes, a demo HTTP app in versions
1, 2 and 3 (3 answers half its requests with errors), and a traffic generator going through
the built-in proxy. Version 2 is promoted; version 3 fails its analysis and is rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from services.cli.client import Client
from services.cli.processes import Stack, wait_ready
from services.cli.prometheus_process import PrometheusProcess
from shared import subjects
from shared.embedded_server import free_port
from shared.messages import RolloutEvent
from shared.settings import Settings

NAME = "my-app-rollout"
NS = "default"


def _seed_template(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The seed's `http-error-rate` template (args service-name and error-threshold) with `metrics`."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "http-error-rate"},
        "spec": {
            "args": [{"name": "service-name"}, {"name": "error-threshold", "value": "1"}],
            "metrics": metrics,
        },
    }


def analysis_template(admin_port: int) -> dict[str, Any]:
    """The seed's `http-error-rate`: the canary service's 5xx percentage, measured by the traffic-shifter."""
    return _seed_template(
        [
            {
                "name": "error-rate",
                "interval": "2s",
                "count": 3,
                "failureLimit": 0,
                "successCondition": "result <= {{args.error-threshold}}",
                "provider": {
                    "web": {
                        "url": f"http://127.0.0.1:{admin_port}/api/v1/services/{{{{args.service-name}}}}",
                        "jsonPath": "{$.errorPercent}",
                        "timeoutSeconds": 5,
                    }
                },
            }
        ]
    )


def prometheus_template(address: str) -> dict[str, Any]:
    """The seed's analysis from Prometheus: 5xx rate under the threshold (in %) and p99 under 500 ms,
    over the proxy's per-service metrics that Prometheus scrapes from the traffic-shifter."""
    selector = 'service="{{args.service-name}}"'
    errors = (
        f'100 * sum(rate(rollouts_proxy_requests_total{{{selector},code_class="5xx"}}[10s]))'
        f" / sum(rate(rollouts_proxy_requests_total{{{selector}}}[10s]))"
    )
    p99 = (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(rollouts_proxy_request_duration_seconds_bucket{{{selector}}}[10s])))"
    )
    # initialDelay: Prometheus needs a few scrapes of the canary's series before rate() has data.
    common = {"initialDelay": "3s", "interval": "2s", "count": 3, "failureLimit": 0}
    return _seed_template(
        [
            {
                "name": "error-rate",
                **common,
                "successCondition": "len(result) > 0 && result[0] <= {{args.error-threshold}}",
                "provider": {"prometheus": {"address": address, "query": errors}},
            },
            {
                "name": "latency-p99",
                **common,
                "successCondition": "len(result) > 0 && (isNaN(result[0]) || result[0] < 0.5)",
                "provider": {"prometheus": {"address": address, "query": p99}},
            },
        ]
    )


def rollout(
    version: int, *, port: int, replicas: int, time_scale: float, error_rate: float = 0.0
) -> dict[str, Any]:
    """The seed's plan, with a command for local mode and pauses scaled by --time-scale."""
    pause = max(1, round(300 * time_scale))
    delay = max(1, round(30 * time_scale))
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": NAME},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "my-app"}},
            "template": {
                "metadata": {"labels": {"app": "my-app"}},
                "spec": {
                    "containers": [
                        {
                            "name": "my-app",
                            "image": f"my-app:{version}.0.0",
                            "command": ["python", "-m", "services.demo_app"],
                            "args": ["--message", "hello from version $(VERSION)"],
                            "env": [
                                {"name": "VERSION", "value": str(version)},
                                {"name": "ERROR_RATE", "value": str(error_rate)},
                            ],
                            "ports": [{"containerPort": port}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": port},
                                "periodSeconds": 1,
                            },
                        }
                    ]
                },
            },
            "strategy": {
                "canary": {
                    "canaryService": "my-app-canary-svc",
                    "stableService": "my-app-stable-svc",
                    "scaleDownDelaySeconds": delay,
                    "abortScaleDownDelaySeconds": delay,
                    "trafficRouting": {
                        "istio": {"virtualService": {"name": "my-app-vsvc", "routes": ["primary"]}}
                    },
                    "steps": [
                        {"setWeight": 10},
                        {"pause": {}},
                        {"setWeight": 25},
                        {"pause": {"duration": f"{pause}s"}},
                        {"setWeight": 50},
                        {
                            "analysis": {
                                "templates": [{"templateName": "http-error-rate"}],
                                "args": [
                                    {"name": "service-name", "value": "my-app-canary-svc"},
                                    {"name": "error-threshold", "value": "1"},
                                ],
                            }
                        },
                    ],
                }
            },
        },
    }


class Traffic:
    """Sends requests through the proxy and counts who answered since the last weight change."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.window: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.total = 0
        self.stop = asyncio.Event()

    def reset(self) -> tuple[Counter[str], Counter[str]]:
        w, e = self.window, self.errors
        self.window, self.errors = Counter(), Counter()
        return w, e

    async def run(self, workers: int = 4) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._worker(session) for _ in range(workers)))

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            try:
                async with session.get(self.url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                    await r.read()
                    role = r.headers.get("X-Rollouts-Revision", "none")
                    self.window[role] += 1
                    self.total += 1
                    if r.status >= 500:
                        self.errors[role] += 1
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.05)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def run_demo(
    *, time_scale: float, replicas: int, state_dir: Path | None, use_prometheus: bool = True
) -> int:
    started = time.monotonic()
    tmp = None
    if state_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="rollouts-demo-")
        state_dir = Path(tmp.name)
    app_port = 8080 if _port_free(8080) else free_port()
    settings = Settings(
        nats_url=f"nats://127.0.0.1:{free_port()}", state_dir=state_dir, admin_port=free_port()
    )
    stack = Stack(settings, embedded_nats=True, log_dir=state_dir / "logs")
    prometheus: PrometheusProcess | None = PrometheusProcess(
        scrape_port=settings.admin_port,
        data_dir=state_dir / "prometheus",
        log_file=state_dir / "logs" / "prometheus.log",
    )
    if not use_prometheus or not prometheus.available:  # type: ignore[union-attr]
        prometheus = None

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    say(f"starting nats-server (JetStream) on {settings.nats_url} and the four services as processes")
    say(
        f"logs: {state_dir / 'logs'}; the app is served through the built-in proxy on http://127.0.0.1:{app_port}/"
    )
    await asyncio.to_thread(stack.start)
    await wait_ready(settings.nats_url)
    say("all four services answer")
    traffic = Traffic(f"http://127.0.0.1:{app_port}/")
    outcome: dict[str, Any] = {}
    shares: list[tuple[int, int, float, int]] = []  # revision, weight, share, requests
    try:
        async with Client(settings.nats_url) as client:
            if prometheus is not None:
                await prometheus.start()
                say(
                    f"analysis provider: Prometheus at {prometheus.address} (a prometheus binary is on the PATH),"
                    " scraping the traffic-shifter's /metrics every second"
                )
                await _apply(client, prometheus_template(prometheus.address))
            else:
                say(
                    "analysis provider: web (no prometheus binary on the PATH), reading the traffic-shifter's"
                    " per-service error percentage"
                )
                await _apply(client, analysis_template(settings.admin_port))
            say(
                f"applying Rollout {NAME} version 1 ({replicas} replicas): the first version becomes stable directly"
            )
            watcher = asyncio.create_task(_follow(client, traffic, say, shares))
            await _apply(client, rollout(1, port=app_port, replicas=replicas, time_scale=time_scale))
            await _wait(client, lambda s: s["phase"] == "Healthy", timeout=60)
            say("version 1 Healthy; starting traffic through the proxy")
            gen = asyncio.create_task(traffic.run())
            pause = max(1, round(300 * time_scale))
            say(
                f"applying version 2: the seed's 6 steps (the 5m pause is shortened to {pause}s by --time-scale {time_scale:g})"
            )
            t0 = time.monotonic()
            await _apply(client, rollout(2, port=app_port, replicas=replicas, time_scale=time_scale))
            st = await _wait(
                client,
                lambda s: (
                    (
                        s["phase"] in ("Healthy", "Degraded")
                        and s["currentRevision"] == 2
                        and s["stableRevision"] == 2
                    )
                    or s["phase"] == "Degraded"
                ),
                timeout=90,
            )
            outcome["v2"] = (st["phase"], time.monotonic() - t0)
            say(
                f"version 2 is {st['phase']} (stable revision {st['stableRevision']}) after {time.monotonic() - t0:.1f}s"
            )
            say("applying version 3, which answers half of its requests with HTTP 500")
            t0 = time.monotonic()
            await _apply(
                client, rollout(3, port=app_port, replicas=replicas, time_scale=time_scale, error_rate=0.5)
            )
            st = await _wait(
                client,
                lambda s: (
                    (s["phase"] == "Degraded" and s["actualWeight"] == 0)
                    or (s["phase"] == "Healthy" and s["currentRevision"] == 3)
                ),
                timeout=90,
            )
            outcome["v3"] = (st["phase"], time.monotonic() - t0)
            say(f"version 3 is {st['phase']}: {st['message']}")
            w, e = traffic.reset()
            await asyncio.sleep(1.0)  # a second of traffic after the rollback, to show where it goes
            w, e = traffic.reset()
            served = sum(w.values())
            to_canary = served - w[st["stableRS"]]
            say(f"after the rollback: {served} requests, {to_canary} to the canary, {sum(e.values())} errors")
            outcome["after"] = (served, to_canary, sum(e.values()))
            traffic.stop.set()
            await gen
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    finally:
        traffic.stop.set()
        say("stopping the services and nats-server")
        if prometheus is not None:
            prometheus.stop()
        await asyncio.to_thread(stack.stop)
        if tmp is not None:
            tmp.cleanup()
    ok = outcome.get("v2", ("",))[0] == "Healthy" and outcome.get("v3", ("",))[0] == "Degraded"
    print("\nSummary")
    print("-------")
    print(
        f"version 2: {outcome.get('v2', ('?', 0))[0]} after {outcome.get('v2', ('?', 0))[1]:.1f}s"
        + (" (promoted to stable)" if outcome.get("v2", ("",))[0] == "Healthy" else " (expected Healthy)")
    )
    print(
        f"version 3: {outcome.get('v3', ('?', 0))[0]} after {outcome.get('v3', ('?', 0))[1]:.1f}s"
        + (
            " (analysis failed, rolled back)"
            if outcome.get("v3", ("",))[0] == "Degraded"
            else " (expected Degraded)"
        )
    )
    print(f"requests sent through the proxy: {traffic.total}")
    print(
        "weight set on the new revision -> share of requests it really received while that weight was in effect:"
    )
    for rev, weight, share, n in shares:
        if n:
            print(f"  revision {rev}: weight {weight:>3}% -> {share:5.1f}% of {n} requests")
    print(f"total time: {time.monotonic() - started:.1f}s; result: {'OK' if ok else 'UNEXPECTED'}")
    return 0 if ok else 1


async def _apply(client: Client, doc: dict[str, Any]) -> None:
    kind = doc["kind"]
    ns = "_cluster" if kind == "ClusterAnalysisTemplate" else NS
    reply = await client.command(ns, doc["metadata"]["name"], "apply", json.dumps(doc).encode(), timeout=20)
    if not reply.ok:
        raise SystemExit(f"error: apply {kind}: {reply.error}")


async def _wait(client: Client, cond: Any, *, timeout: float) -> dict[str, Any]:
    """Re-read the status on every event until `cond` holds."""
    deadline = time.monotonic() + timeout
    feed = await client.feed(NS, NAME, history=False)
    try:
        while True:
            st = (await client.document(NS, NAME))["status"]
            if cond(st):
                return dict(st)
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"error: demo timed out; last status: {json.dumps(st)}")
            await feed.get(timeout=min(left, 1.0))
    finally:
        await feed.close()


async def _follow(
    client: Client, traffic: Traffic, say: Any, shares: list[tuple[int, int, float, int]]
) -> None:
    """Print every event; promote indefinite pauses with a plain NATS publish; report observed shares."""
    last_weight: tuple[int, int, str] | None = None  # revision, weight, its pod template hash
    async for ev in client.events(NS, NAME, history=False):
        line = _describe(ev)
        if ev.type == "WeightConfirmed":
            w, e = traffic.reset()
            n = sum(w.values())
            if last_weight is not None and n:
                rev, weight, current = last_weight
                got = w[current]
                share = 100.0 * got / n
                err = 100.0 * e[current] / got if got else 0.0
                shares.append((rev, weight, share, n))
                say(
                    f"    traffic while weight was {weight}%: revision {rev} got {share:.1f}% of {n} requests"
                    f" ({err:.0f}% of its answers were errors)"
                )
            last_weight = (ev.revision, ev.actual_weight, ev.current_revision)
        if line:
            say(line)
        if ev.type == "RolloutPaused" and "until promoted" in ev.message:
            await asyncio.sleep(1.0)  # let the audience see the pause
            await client.c.nc.publish(subjects.command(NS, NAME, "promote"), b"")
            say("    promote sent as a plain NATS publish on rollouts.cmd.default.my-app-rollout.promote")


def _describe(ev: RolloutEvent) -> str:
    if ev.type in ("ReplicasUpdated",):
        return f"    {ev.message}"
    return (
        f"rev {ev.revision} step {ev.step_index} setWeight {ev.set_weight:>3} actualWeight {ev.actual_weight:>3} "
        f"{ev.phase:<11} {ev.type}: {ev.message}"
        + (f" [value {ev.measurement}]" if ev.measurement is not None else "")
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(run_demo(time_scale=0.02, replicas=10, state_dir=None)))
