"""WeightedProxy against real aiohttp backends: weight accuracy, atomic switches, errors, forwarding, stats,
and Argo's managed routes (header routes to the canary, mirrored copies counted at the backend)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from services.traffic_shifter.providers import LocalProxyProvider, NotReady
from services.traffic_shifter.proxy import MIRROR_HEADER, Backend, ProxyStats, WeightedProxy
from services.traffic_shifter.weighting import RoundRobin, SmoothWeightedChooser
from shared.messages import Endpoints, TrafficDesired, WeightedDestination
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


# --- managed routes: setHeaderRoute / setMirrorRoute ---------------------------------------


def _header_route(*matches: tuple[str, StringMatch], name: str = "set-header-1") -> HeaderRoute:
    return HeaderRoute(name=name, match=tuple(HeaderMatch(header_name=n, header_value=v) for n, v in matches))


async def _get(
    client: aiohttp.ClientSession,
    proxy: WeightedProxy,
    path: str = "/",
    headers: dict[str, str] | None = None,
) -> str:
    async with client.get(f"{proxy.url}{path}", headers=headers or {}) as resp:
        assert resp.status == 200
        return await resp.text()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("match", "hits", "misses"),
    [
        (StringMatch(exact="yes"), ["yes"], ["no", "Yes", "yess", "yes-no"]),
        (StringMatch(prefix="beta"), ["beta", "beta-2"], ["alpha", "xbeta", "Beta"]),
        (StringMatch(regex="v[0-9]+"), ["v1", "v42"], ["v", "v1a", "xv1"]),
    ],
    ids=["exact", "prefix", "regex"],
)
async def test_header_route_sends_matching_requests_to_canary_at_weight_zero(
    match: StringMatch,
    hits: list[str],
    misses: list[str],
    backends: tuple[App, App],
    proxy: WeightedProxy,
    client: aiohttp.ClientSession,
) -> None:
    stable, canary = backends
    proxy.set_backends(
        stable=Backend("v1", (stable.address,)),
        canary=Backend("v2", (canary.address,)),
        canary_weight=0,
        header_routes=(_header_route(("X-Canary", match)),),
    )
    seen: Counter[str] = Counter()
    for _ in range(10):
        for value in hits:
            assert await _get(client, proxy, headers={"X-Canary": value}) == "canary-app"
        for value in misses:
            assert await _get(client, proxy, headers={"X-Canary": value}) == "stable-app"
        seen[await _get(client, proxy)] += 1
    assert seen == Counter({"stable-app": 10})
    stats = proxy.stats()
    assert stats.canary_weight == 0
    v2 = stats.find("v2", "canary")
    v1 = stats.find("v1", "stable")
    assert v2 is not None and v1 is not None
    # Header-routed requests are real client traffic: counted as the canary's requests.
    assert v2.requests == v2.responses["2xx"] == 10 * len(hits)
    assert v1.requests == 10 * (len(misses) + 1)
    assert v2.mirrored == 0


@pytest.mark.timeout(60)
async def test_header_route_ands_matches_and_leaves_the_split_untouched(
    backends: tuple[App, App], proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    stable, canary = backends
    route = _header_route(
        ("X-Canary", StringMatch(exact="yes")), ("User-Agent", StringMatch(prefix="Mozilla"))
    )
    proxy.set_backends(
        stable=Backend("v1", (stable.address,)),
        canary=Backend("v2", (canary.address,)),
        canary_weight=50,
        header_routes=(route,),
    )
    both = {"X-Canary": "yes", "User-Agent": "Mozilla/5.0"}
    one = {"X-Canary": "yes", "User-Agent": "curl/8"}
    split: Counter[str] = Counter()
    for _ in range(100):
        assert await _get(client, proxy, headers=both) == "canary-app"
        split[await _get(client, proxy, headers=one)] += 1
    # Header-routed requests do not advance the weighted chooser: the others split exactly 50/50.
    assert split == Counter({"stable-app": 50, "canary-app": 50})


@pytest.mark.timeout(60)
async def test_header_route_without_canary_addresses_falls_back_to_the_split(
    backends: tuple[App, App], proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    stable, _ = backends
    proxy.set_backends(
        stable=Backend("v1", (stable.address,)),
        canary=Backend("v2", ()),
        canary_weight=0,
        header_routes=(_header_route(("X-Canary", StringMatch(exact="yes"))),),
        mirror_routes=(MirrorRoute(name="all", match=(RouteMatch(),)),),
    )
    for _ in range(5):
        assert await _get(client, proxy, headers={"X-Canary": "yes"}) == "stable-app"
    await proxy.drain_mirrors()
    assert proxy.stats().find("v2") is None


@pytest.mark.timeout(60)
async def test_mirror_route_copies_exactly_its_percentage_of_matching_requests(
    backends: tuple[App, App], proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    stable, canary = backends
    proxy.set_backends(
        stable=Backend("v1", (stable.address,)),
        canary=Backend("v2", (canary.address,)),
        canary_weight=0,
        mirror_routes=(
            MirrorRoute(
                name="api-mirror", percentage=50, match=(RouteMatch(path=StringMatch(prefix="/api")),)
            ),
        ),
    )
    for i in range(100):
        assert await _get(client, proxy, f"/api/items/{i}?page={i}") == "stable-app"
        assert await _get(client, proxy, "/") == "stable-app"
        assert await _get(client, proxy, f"/echo/api/{i}") != ""
    # Counted at the canary backend itself, waiting on its own record of requests.
    await canary.wait_calls(50)
    await proxy.drain_mirrors()
    assert len(canary.calls) == 50
    mirrored = [c.path_qs for c in canary.calls]
    assert all(p.startswith("/api/items/") for p in mirrored), mirrored
    assert all(c.headers[MIRROR_HEADER] == "api-mirror" for c in canary.calls)
    # The deterministic sampler interleaves: every other matching request is copied.
    assert mirrored == [f"/api/items/{i}?page={i}" for i in range(0, 100, 2)]
    assert len(stable.calls) == 300
    stats = proxy.stats()
    v2 = stats.find("v2", "canary")
    v1 = stats.find("v1", "stable")
    assert v1 is not None and v2 is not None
    # Mirrors stay out of the canary's request, response and latency counters.
    assert (v2.mirrored, v2.mirror_errors, v2.mirror_skipped) == (50, 0, 0)
    assert (v2.requests, v2.latency_count, v2.errors5xx) == (0, 0, 0)
    assert v1.requests == 300 and v1.mirrored == 0
    decoded = msgspec.json.decode(msgspec.json.encode(stats), type=ProxyStats)
    assert decoded == stats


@pytest.mark.timeout(60)
async def test_mirror_copies_method_path_headers_and_body(
    backends: tuple[App, App], proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    stable, canary = backends
    proxy.set_backends(
        stable=Backend("v1", (stable.address,)),
        canary=Backend("v2", (canary.address,)),
        canary_weight=0,
        mirror_routes=(
            MirrorRoute(
                name="posts",
                match=(
                    RouteMatch(method=StringMatch(exact="GET"), path=StringMatch(exact="/never")),
                    RouteMatch(
                        method=StringMatch(exact="POST"), headers={"X-Team": StringMatch(regex="a|b")}
                    ),
                ),
            ),
        ),
    )
    async with client.post(
        f"{proxy.url}/echo/orders?x=1",
        data=b'{"id": 7}',
        headers={"X-Team": "b", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Backend"] == "stable-app"
        assert (await resp.json())["body"] == '{"id": 7}'
    async with client.post(f"{proxy.url}/echo/orders", data=b"no team") as resp:
        assert resp.status == 200
    await canary.wait_calls(1)
    await proxy.drain_mirrors()
    assert len(canary.calls) == 1
    copy = canary.calls[0]
    original = stable.calls[0]
    assert (copy.method, copy.path_qs, copy.body) == ("POST", "/echo/orders?x=1", b'{"id": 7}')
    assert copy.headers["X-Team"] == "b"
    assert copy.headers["Content-Type"] == "application/json"
    assert copy.headers["X-Forwarded-For"] == original.headers["X-Forwarded-For"]
    assert copy.headers[MIRROR_HEADER] == "posts"
    assert MIRROR_HEADER not in original.headers


@pytest.mark.timeout(60)
async def test_mirror_failures_and_streamed_bodies_never_reach_the_client(
    backends: tuple[App, App], proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    stable, _ = backends
    proxy.set_backends(
        stable=Backend("v1", (stable.address,)),
        canary=Backend("v2", (f"127.0.0.1:{_closed_port()}",)),
        canary_weight=0,
        mirror_routes=(MirrorRoute(name="everything", match=(RouteMatch(),)),),
    )
    for _ in range(5):
        assert await _get(client, proxy, "/api/x") == "stable-app"
    # A body too large to buffer is streamed to the primary once, so it cannot also be copied.
    async with client.put(f"{proxy.url}/echo/big", data=b"z" * (1024 * 1024)) as resp:
        assert resp.status == 200
        assert len((await resp.json())["body"]) == 1024 * 1024
    await proxy.drain_mirrors()
    v2 = proxy.stats().find("v2", "canary")
    assert v2 is not None
    assert (v2.mirrored, v2.mirror_errors, v2.mirror_skipped, v2.requests) == (5, 5, 1, 0)


@pytest.mark.timeout(60)
async def test_header_route_wins_over_mirror_route(
    backends: tuple[App, App], proxy: WeightedProxy, client: aiohttp.ClientSession
) -> None:
    stable, canary = backends
    proxy.set_backends(
        stable=Backend("v1", (stable.address,)),
        canary=Backend("v2", (canary.address,)),
        canary_weight=0,
        header_routes=(_header_route(("X-Canary", StringMatch(exact="yes"))),),
        mirror_routes=(MirrorRoute(name="everything", match=(RouteMatch(),)),),
    )
    assert await _get(client, proxy, "/api/a", headers={"X-Canary": "yes"}) == "canary-app"
    assert await _get(client, proxy, "/api/b") == "stable-app"
    await canary.wait_calls(2)
    await proxy.drain_mirrors()
    # One routed request and one mirror of the other; the routed one is not copied a second time.
    assert [(c.path_qs, MIRROR_HEADER in c.headers) for c in canary.calls] == [
        ("/api/a", False),
        ("/api/b", True),
    ]
    # Clearing the routes takes effect on the next request.
    _set(proxy, stable, canary, 0)
    assert await _get(client, proxy, "/api/c", headers={"X-Canary": "yes"}) == "stable-app"
    await proxy.drain_mirrors()
    assert len(canary.calls) == 2


def _desired(**kw: Any) -> TrafficDesired:
    """Rollout ns/app, stable v1 and canary v2, on a free port."""
    return TrafficDesired(
        namespace="ns",
        name="app",
        generation=1,
        stable_revision="v1",
        canary_revision="v2",
        port=_closed_port(),
        **kw,
    )


@pytest.mark.timeout(60)
async def test_local_provider_applies_the_desired_managed_routes(
    backends: tuple[App, App], client: aiohttp.ClientSession
) -> None:
    stable, canary = backends
    desired = _desired(
        header_routes=(_header_route(("X-Canary", StringMatch(exact="yes"))),),
        mirror_routes=(MirrorRoute(name="m", match=(RouteMatch(path=StringMatch(prefix="/api")),)),),
    )
    provider = LocalProxyProvider(host="127.0.0.1")
    try:
        # Routes naming a canary without endpoints cannot be honoured yet.
        with pytest.raises(NotReady):
            await provider.apply(
                desired, Endpoints(namespace="ns", name="app", revisions={"v1": [stable.address]})
            )
        endpoints = Endpoints(
            namespace="ns", name="app", revisions={"v1": [stable.address], "v2": [canary.address]}
        )
        await provider.apply(desired, endpoints)
        proxy = provider.proxies["ns/app"]
        assert await _get(client, proxy, headers={"X-Canary": "yes"}) == "canary-app"
        assert await _get(client, proxy, "/api/1") == "stable-app"
        await canary.wait_calls(2)
        await proxy.drain_mirrors()
        assert [c.path_qs for c in canary.calls] == ["/", "/api/1"]
        entry = provider.stats()["ns/app"].find("v2", "canary")
        assert entry is not None and (entry.requests, entry.mirrored) == (1, 1)
    finally:
        await provider.close()


@pytest.mark.timeout(60)
async def test_local_provider_splits_to_an_experiments_weighted_sets(
    backends: tuple[App, App], client: aiohttp.ClientSession
) -> None:
    """Argo's additionalDestinations: stable 100 - 20 - 10 - 10, canary 20, two experiment sets
    10 each; a set without endpoints is not confirmed; each set is counted under its own role."""
    stable, canary = backends
    baseline = await _start_app("baseline-app")
    candidate = await _start_app("candidate-app")
    desired = _desired(
        canary_weight=20,
        additional=(
            WeightedDestination(revision="v1-baseline", weight=10, name="baseline"),
            WeightedDestination(revision="v2-canary", weight=10, name="canary"),
        ),
    )
    revisions = {"v1": [stable.address], "v2": [canary.address], "v1-baseline": [baseline.address]}
    provider = LocalProxyProvider(host="127.0.0.1")
    try:
        with pytest.raises(NotReady, match="v2-canary"):
            await provider.apply(desired, Endpoints(namespace="ns", name="app", revisions=revisions))
        revisions["v2-canary"] = [candidate.address]
        await provider.apply(desired, Endpoints(namespace="ns", name="app", revisions=revisions))
        seen = await _hit(client, provider.proxies["ns/app"], 1000)
        assert seen == {"stable-app": 600, "canary-app": 200, "baseline-app": 100, "candidate-app": 100}
        entry = provider.stats()["ns/app"].find("v1-baseline", "experiment:baseline")
        assert entry is not None and entry.requests == 100
        # The experiment ends: its share goes back to the stable.
        await provider.apply(
            msgspec.structs.replace(desired, generation=2, additional=()),
            Endpoints(namespace="ns", name="app", revisions=revisions),
        )
        seen = await _hit(client, provider.proxies["ns/app"], 100)
        assert seen == {"stable-app": 80, "canary-app": 20}
    finally:
        await provider.close()
        await baseline.runner.cleanup()
        await candidate.runner.cleanup()
