"""WeightedProxy against real aiohttp backends: weight accuracy, atomic switches, errors, forwarding, stats,
and Argo's managed routes (header routes to the canary, mirrored copies counted at the backend)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from services.traffic_shifter.proxy import MIRROR_HEADER, Backend, ProxyStats, WeightedProxy
from services.traffic_shifter.weighting import RoundRobin, SmoothWeightedChooser
from shared.routes import HeaderMatch, HeaderRoute, MirrorRoute, RouteMatch, StringMatch


@dataclass
class Call:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes


@dataclass
class App:
    name: str
    runner: web.AppRunner
    address: str
    calls: list[Call] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_calls(self, n: int, *, timeout: float = 10.0) -> None:
        """Until the backend has answered at least n requests (a deadline, not a sleep)."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.calls) >= n)


async def _start_app(name: str) -> App:
    calls: list[Call] = []
    changed = asyncio.Condition()

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        response = await handler(request)
        async with changed:
            calls.append(Call(request.method, request.path_qs, dict(request.headers), body))
            changed.notify_all()
        return response

    async def root(request: web.Request) -> web.Response:
        return web.Response(text=name)

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        payload = {
            "name": name,
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "body": body.decode(),
        }
        return web.json_response(payload, headers={"X-Backend": name})

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    app = web.Application(middlewares=[record], client_max_size=4 * 1024 * 1024)
    app.router.add_get("/", root)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_route("*", "/api/{tail:.*}", root)
    app.router.add_get("/fail", fail)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return App(name, runner, f"127.0.0.1:{port}", calls, changed)


@pytest.fixture
async def backends() -> AsyncIterator[tuple[App, App]]:
    stable = await _start_app("stable-app")
    canary = await _start_app("canary-app")
    yield stable, canary
    await stable.runner.cleanup()
    await canary.runner.cleanup()


@pytest.fixture
async def proxy() -> AsyncIterator[WeightedProxy]:
    p = WeightedProxy(host="127.0.0.1", port=0, name="test")
    await p.start()
    assert p.port != 0
    yield p
    await p.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _hit(client: aiohttp.ClientSession, proxy: WeightedProxy, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        async with client.get(f"{proxy.url}/") as resp:
            assert resp.status == 200
            seen[await resp.text()] += 1
    return seen


def _set(proxy: WeightedProxy, stable: App | None, canary: App | None, weight: int) -> None:
    proxy.set_backends(
        stable=Backend("v1", (stable.address,)) if stable else None,
        canary=Backend("v2", (canary.address,)) if canary else None,
        canary_weight=weight,
    )


def test_smooth_weighted_chooser_is_exact_and_interleaved() -> None:
    chooser = SmoothWeightedChooser({"stable": 90, "canary": 10, "off": 0})
    picks = [chooser.choose() for _ in range(1000)]
    assert picks.count("canary") == 100
    assert "off" not in picks
    # Smoothness: never more than 9 stable picks in a row at 90/10.
    run = longest = 0
    for label in picks:
        run = run + 1 if label == "stable" else 0
        longest = max(longest, run)
    assert longest <= 9
    for n in (7, 33, 101):
        c = SmoothWeightedChooser({"a": 3, "b": 5, "c": 2})
        counts = Counter(c.choose() for _ in range(n))
        for label, weight in (("a", 3), ("b", 5), ("c", 2)):
            assert abs(counts[label] - weight / 10 * n) <= 1
    with pytest.raises(ValueError):
        SmoothWeightedChooser({"a": 0, "b": 0})
    rr = RoundRobin(["x", "y"])
    assert [rr.next() for _ in range(4)] == ["x", "y", "x", "y"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("weight", [10, 25, 50])
async def test_canary_share_matches_weight(
    weight: int, backends: tuple[App, App], proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    stable, canary = backends
    _set(proxy, stable, canary, weight)
    seen = await _hit(client, proxy, 2000)
    share = seen["canary-app"] / 2000 * 100
    assert abs(share - weight) <= 1.0, seen
    assert seen["stable-app"] + seen["canary-app"] == 2000


@pytest.mark.timeout(60)
async def test_weight_change_applies_to_next_request(
    backends: tuple[App, App], proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    stable, canary = backends
    _set(proxy, stable, canary, 0)
    assert (await _hit(client, proxy, 50)) == Counter({"stable-app": 50})
    _set(proxy, stable, canary, 100)
    assert (await _hit(client, proxy, 1)) == Counter({"canary-app": 1})
    assert (await _hit(client, proxy, 49)) == Counter({"canary-app": 49})
    _set(proxy, stable, canary, 0)
    assert (await _hit(client, proxy, 1)) == Counter({"stable-app": 1})
    assert proxy.canary_weight == 0


@pytest.mark.timeout(60)
async def test_empty_group_hands_traffic_to_other(
    backends: tuple[App, App], proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    stable, canary = backends
    proxy.set_backends(stable=Backend("v1", (stable.address,)), canary=Backend("v2", ()), canary_weight=50)
    assert proxy.canary_weight == 0
    assert (await _hit(client, proxy, 10)) == Counter({"stable-app": 10})
    _set(proxy, None, canary, 0)
    assert proxy.canary_weight == 100
    assert (await _hit(client, proxy, 10)) == Counter({"canary-app": 10})


@pytest.mark.timeout(60)
async def test_round_robin_within_group(
    backends: tuple[App, App], proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    stable, canary = backends
    proxy.set_backends(stable=Backend("v1", (stable.address, canary.address)), canary=None, canary_weight=0)
    assert (await _hit(client, proxy, 20)) == Counter({"stable-app": 10, "canary-app": 10})


@pytest.mark.timeout(60)
async def test_dead_upstream_gives_502_and_is_counted(
    proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    proxy.set_backends(stable=Backend("v1", (f"127.0.0.1:{_closed_port()}",)), canary=None, canary_weight=0)
    for _ in range(3):
        async with client.get(f"{proxy.url}/") as resp:
            assert resp.status == 502
            assert resp.headers["X-Rollouts-Revision"] == "v1"
            assert "failed" in await resp.text()
    entry = proxy.stats().find("v1", "stable")
    assert entry is not None
    assert entry.requests == 3
    assert entry.upstream_errors == 3
    assert entry.errors5xx == 3
    assert entry.error_rate == 1.0


@pytest.mark.timeout(60)
async def test_no_backends_gives_503(proxy: WeightedProxy, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{proxy.url}/anything") as resp:
        assert resp.status == 503
        assert "no backends" in await resp.text()
    proxy.set_backends(stable=Backend("v1", ()), canary=Backend("v2", ()), canary_weight=30)
    async with client.get(f"{proxy.url}/") as resp:
        assert resp.status == 503
    stats = proxy.stats()
    assert stats.unrouted == 2
    assert stats.revisions == []


@pytest.mark.timeout(60)
async def test_post_forwards_method_path_query_headers_body(
    backends: tuple[App, App], proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    stable, canary = backends
    _set(proxy, stable, canary, 100)
    async with client.post(
        f"{proxy.url}/echo/a/b?x=1&y=two",
        data=b'{"hello": "world"}',
        headers={
            "Content-Type": "application/json",
            "X-Custom": "yes",
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "should-not-pass",
        },
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Rollouts-Revision"] == "v2"
        assert resp.headers["X-Rollouts-Role"] == "canary"
        assert resp.headers["X-Backend"] == "canary-app"
        echoed = await resp.json()
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo/a/b"
    assert echoed["query"] == {"x": "1", "y": "two"}
    assert echoed["body"] == '{"hello": "world"}'
    assert echoed["headers"]["X-Custom"] == "yes"
    assert echoed["headers"]["Content-Type"] == "application/json"
    assert "X-Secret-Hop" not in echoed["headers"]
    assert echoed["headers"]["X-Forwarded-For"] == "127.0.0.1"

    # A large body goes down the streaming path both ways.
    big = b"z" * (1024 * 1024)
    async with client.put(f"{proxy.url}/echo/big", data=big) as resp:
        assert resp.status == 200
        echoed = json.loads(await resp.read())
    assert echoed["method"] == "PUT"
    assert len(echoed["body"]) == len(big)


@pytest.mark.timeout(60)
async def test_stats_match_observed_traffic(
    backends: tuple[App, App], proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    stable, canary = backends
    _set(proxy, stable, canary, 25)
    seen = await _hit(client, proxy, 200)
    for _ in range(4):
        async with client.get(f"{proxy.url}/fail") as resp:
            assert resp.status == 500
    stats = proxy.stats()
    assert stats.stable_revision == "v1"
    assert stats.canary_revision == "v2"
    assert stats.canary_weight == 25
    v1 = stats.find("v1")
    v2 = stats.find("v2")
    assert v1 is not None and v2 is not None
    assert (v1.role, v2.role) == ("stable", "canary")
    assert v1.responses["2xx"] == seen["stable-app"]
    assert v2.responses["2xx"] == seen["canary-app"]
    assert v1.errors5xx + v2.errors5xx == 4
    assert v1.requests + v2.requests == 204
    assert v1.latency_count == v1.requests
    assert v1.latency_p50 is not None and 0 < v1.latency_p50 <= v1.latency_p99 <= 10  # type: ignore[operator]
    assert v2.error_rate == pytest.approx(v2.errors5xx / v2.requests)
    assert v1.upstream_errors == 0
    # The snapshot must round-trip through JSON for publishing over NATS.
    decoded = msgspec.json.decode(msgspec.json.encode(stats), type=ProxyStats)
    assert decoded == stats
