"""Prometheus exposition of the proxy's counters, from real traffic through a real WeightedProxy.

Two aiohttp backends (one answers 200, one answers 500) and one dead address sit behind a
WeightedProxy at 30% canary; after 100 requests the rendered text is parsed by a small
parser written here (no prometheus_client dependency) and checked against what the client
saw: counters per code class, upstream errors, cumulative histogram buckets, weights.
The ``/metrics`` route of the traffic-shifter's admin app is exercised over HTTP too.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.traffic_shifter.metrics import render_prometheus
from services.traffic_shifter.proxy import LATENCY_BOUNDS, Backend, ProxyStats, WeightedProxy
from services.traffic_shifter.service import TrafficShifter
from shared.embedded_server import free_port
from shared.messages import Endpoints, TrafficDesired

KEY = "shop/web"
DESIRED = TrafficDesired(
    namespace="shop",
    name="web",
    generation=3,
    stable_revision="rev-a",
    canary_revision="rev-b",
    canary_weight=30,
    stable_service="web-stable",
    canary_service="web-canary",
)

# --- a tiny parser for the text format 0.0.4 ------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+-?\d+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Exposition:
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def find(self, name: str, **labels: str) -> list[Sample]:
        return [
            s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        found = self.find(name, **labels)
        assert len(found) == 1, (name, labels, found)
        return found[0].value


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        assert match is not None, f"bad label set at {text[pos:]!r}"
        value = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], match.group(2))
        assert match.group(1) not in labels, f"duplicate label {match.group(1)}"
        labels[match.group(1)] = value
        pos = match.end()
    return labels


def _family_of(name: str, types: dict[str, str]) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and types.get(base) == "histogram":
            return base
    return name


def parse(text: str) -> Exposition:
    out = Exposition()
    closed: set[str] = set()
    current: str | None = None
    assert text.endswith("\n"), "the format requires a final newline"
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            out.helps[name] = help_
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}, line
            assert name not in out.types, f"TYPE given twice for {name}"
            out.types[name] = kind
            continue
        assert not line.startswith("#"), line
        match = _SAMPLE.match(line)
        assert match is not None, f"unparsable sample line {line!r}"
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        family = _family_of(name, out.types)
        assert family in out.types, f"sample {name} before its TYPE line"
        # All samples of a family must be contiguous.
        if family != current:
            assert family not in closed, f"family {family} is interleaved with another"
            if current is not None:
                closed.add(current)
            current = family
        out.samples.append(Sample(name, _parse_labels(labels), float(value)))
    return out


# --- fixtures ---------------------------------------------------------------------------------


async def _start(status: int, text: str) -> web.AppRunner:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=status, text=text)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def _address(runner: web.AppRunner) -> str:
    return f"127.0.0.1:{runner.addresses[0][1]}"


@dataclass
class Traffic:
    proxy: WeightedProxy
    statuses: Counter[int]
    backend_statuses: dict[str, Counter[int]]


@pytest.fixture
async def traffic() -> AsyncIterator[Traffic]:
    ok = await _start(200, "ok")
    failing = await _start(500, "boom")
    proxy = WeightedProxy(host="127.0.0.1", port=0, name=KEY)
    await proxy.start()
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: connection refused -> 502 + upstream error
    proxy.set_backends(
        stable=Backend(revision="rev-a", addresses=(_address(ok),)),
        canary=Backend(revision="rev-b", addresses=(_address(failing), dead)),
        canary_weight=30,
    )
    statuses: Counter[int] = Counter()
    per_role: dict[str, Counter[int]] = {"stable": Counter(), "canary": Counter()}
    async with aiohttp.ClientSession() as client:
        for i in range(100):
            async with client.get(f"{proxy.url}/item/{i}") as response:
                await response.read()
                statuses[response.status] += 1
                role = response.headers.get("X-Rollouts-Role", "?")
                per_role.setdefault(role, Counter())[response.status] += 1
    yield Traffic(proxy, statuses, per_role)
    await proxy.stop()
    await ok.cleanup()
    await failing.cleanup()


# --- tests ------------------------------------------------------------------------------------


async def test_counters_match_the_traffic_sent(traffic: Traffic) -> None:
    stats = {KEY: traffic.proxy.stats()}
    exposition = parse(render_prometheus(stats, {KEY: DESIRED}))

    assert exposition.types == {
        "rollouts_proxy_requests_total": "counter",
        "rollouts_proxy_upstream_errors_total": "counter",
        "rollouts_proxy_request_duration_seconds": "histogram",
        "rollouts_proxy_unrouted_requests_total": "counter",
        "rollouts_traffic_weight": "gauge",
    }
    assert set(exposition.helps) == set(exposition.types)

    # The smooth weighted chooser sends exactly 30 of 100 to the canary, alternating its two addresses.
    assert traffic.statuses == Counter({200: 70, 500: 15, 502: 15})
    requests = "rollouts_proxy_requests_total"
    stable = {"namespace": "shop", "rollout": "web", "revision": "rev-a", "role": "stable"}
    canary = {"namespace": "shop", "rollout": "web", "revision": "rev-b", "role": "canary"}
    assert exposition.value(requests, code_class="2xx", **stable) == 70
    assert exposition.value(requests, code_class="5xx", **stable) == 0
    assert exposition.value(requests, code_class="5xx", **canary) == 30  # 500s and the proxy's 502s
    assert exposition.value(requests, code_class="2xx", **canary) == 0
    assert sum(s.value for s in exposition.find(requests)) == 100
    assert exposition.value("rollouts_proxy_upstream_errors_total", **canary) == 15
    assert exposition.value("rollouts_proxy_upstream_errors_total", **stable) == 0
    assert exposition.value("rollouts_proxy_unrouted_requests_total", namespace="shop", rollout="web") == 0

    # The service label follows the role, so queries can select by service name.
    assert {s.labels["service"] for s in exposition.find(requests, role="stable")} == {"web-stable"}
    assert {s.labels["service"] for s in exposition.find(requests, role="canary")} == {"web-canary"}
    assert sum(s.value for s in exposition.find(requests, service="web-canary", code_class="5xx")) == 30

    assert exposition.value("rollouts_traffic_weight", role="canary", service="web-canary") == 30
    assert exposition.value("rollouts_traffic_weight", role="stable", service="web-stable") == 70


async def test_histogram_buckets_are_cumulative_and_consistent(traffic: Traffic) -> None:
    exposition = parse(render_prometheus({KEY: traffic.proxy.stats()}, {KEY: DESIRED}))
    name = "rollouts_proxy_request_duration_seconds"
    expected_le = [repr(b) for b in LATENCY_BOUNDS] + ["+Inf"]
    for labels, served in (({"role": "stable"}, 70), ({"role": "canary"}, 30)):
        buckets = exposition.find(f"{name}_bucket", **labels)
        assert [b.labels["le"] for b in buckets] == expected_le
        counts = [b.value for b in buckets]
        assert counts == sorted(counts), "buckets must be cumulative"
        count = exposition.value(f"{name}_count", **labels)
        assert counts[-1] == count == served
        # _count agrees with the requests counter of the same series.
        assert count == sum(s.value for s in exposition.find("rollouts_proxy_requests_total", **labels))
        total = exposition.value(f"{name}_sum", **labels)
        assert 0 < total < count * 5.0  # local round trips: well under 5 s each
        # bucket labels are the series labels plus le
        assert {k for k in buckets[0].labels} == {"namespace", "rollout", "service", "revision", "role", "le"}


async def test_metrics_route_serves_the_text_format(traffic: Traffic) -> None:
    class StatsOnly:
        async def apply(self, desired: TrafficDesired, endpoints: Endpoints | None) -> None:
            return None

        def stats(self) -> dict[str, ProxyStats]:
            return {KEY: traffic.proxy.stats()}

        async def close(self) -> None:
            return None

    # The admin app never touches the NATS connection; the route only reads provider and desired.
    shifter = TrafficShifter(cast(Any, None), StatsOnly())
    shifter.desired[KEY] = DESIRED
    server = TestServer(shifter.admin_app(), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as client, client.get(server.make_url("/metrics")) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = await response.text()
    finally:
        await server.close()
    assert body == render_prometheus(StatsOnly().stats(), {KEY: DESIRED})
    exposition = parse(body)
    assert exposition.value("rollouts_traffic_weight", role="canary", rollout="web") == 30


def test_label_values_are_escaped_and_round_trip() -> None:
    awkward = 'we"ird\\svc\nline'
    desired = {
        "ns/app": TrafficDesired(
            namespace="ns",
            name="app",
            generation=1,
            stable_revision="r1",
            canary_weight=0,
            stable_service=awkward,
        )
    }
    text = render_prometheus({}, desired)
    assert "\nline" not in text.replace("\\n", "")  # a raw newline would break the line format
    exposition = parse(text)
    assert exposition.value("rollouts_traffic_weight", role="stable") == 100
    assert exposition.find("rollouts_traffic_weight", role="stable")[0].labels["service"] == awkward
    assert exposition.value("rollouts_traffic_weight", role="canary", service="") == 0
    # No proxy stats: the traffic families are declared but empty.
    assert exposition.find("rollouts_proxy_requests_total") == []


async def test_stats_without_desired_traffic_still_render(traffic: Traffic) -> None:
    exposition = parse(render_prometheus({KEY: traffic.proxy.stats()}, {}))
    found = exposition.find("rollouts_proxy_requests_total", namespace="shop", rollout="web", service="")
    assert sum(s.value for s in found) == 100
    # Without a desired state, the weight is the proxy's effective one.
    assert exposition.value("rollouts_traffic_weight", role="canary") == 30
