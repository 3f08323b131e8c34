"""NginxProvider against the Debian ``nginx`` binary and real aiohttp backends answering with their revision.

Covers: the observed split of 2,000 sequential requests within one point of the weight (10/25/50/90, with
two stable and three canary replicas), weights 0 and 100 and an immediate switch between them, header
routes to the canary, mirror routes copying their exact percentage, the blue-green preview listener,
NotReady without endpoints, a config nginx rejects (the previous weights stay served), a reload nginx
cannot take (a port in use), drift from hand edits (of the file alone, and of the running config), a
killed nginx restarted by check_drift, and close() leaving no nginx process behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from services.traffic_shifter.nginx_provider import NginxProvider, NginxRejected, NginxReloadFailed
from services.traffic_shifter.providers import NotReady
from services.traffic_shifter.proxy import MIRROR_HEADER, REVISION_HEADER, ROLE_HEADER
from shared.embedded_server import free_port
from shared.messages import Endpoints, TrafficDesired, WeightedDestination
from shared.routes import HeaderMatch, HeaderRoute, MirrorRoute, RouteMatch, StringMatch

pytestmark = [
    pytest.mark.skipif(
        NginxProvider.available() is None,
        reason="nginx is not installed (apt-get install nginx; .ci/run installs it)",
    ),
    pytest.mark.timeout(60),
]

STABLE, CANARY, PREVIEW = "rev-stable", "rev-canary", "rev-preview"
REQUESTS = 2000


@dataclass
class Backend:
    revision: str
    runner: web.ServerRunner
    address: str
    mirrored: list[tuple[str, str]] = field(default_factory=list)  # (mirror route, path) of copies
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_mirrored(self, n: int, *, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.mirrored) >= n)


async def _start_backend(revision: str) -> Backend:
    backend: Backend | None = None

    async def handle(request: web.BaseRequest) -> web.Response:
        assert backend is not None
        copy = request.headers.get(MIRROR_HEADER)
        if copy is not None:
            async with backend.changed:
                backend.mirrored.append((copy, request.path))
                backend.changed.notify_all()
        return web.Response(text=revision)

    runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    backend = Backend(revision, runner, f"127.0.0.1:{runner.addresses[0][1]}")
    return backend


@dataclass
class Backends:
    stable: list[Backend]
    canary: list[Backend]
    preview: list[Backend]

    def endpoints(self, *, without: str | None = None) -> Endpoints:
        revisions = {
            group[0].revision: [b.address for b in group]
            for group in (self.stable, self.canary, self.preview)
            if group[0].revision != without
        }
        return Endpoints(namespace="shop", name="web", revisions=revisions)


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    started = Backends(
        stable=[await _start_backend(STABLE) for _ in range(2)],
        canary=[await _start_backend(CANARY) for _ in range(3)],
        preview=[await _start_backend(PREVIEW)],
    )
    yield started
    for backend in started.stable + started.canary + started.preview:
        await backend.runner.cleanup()


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[NginxProvider]:
    p = NginxProvider(state_dir=tmp_path / "nginx")
    yield p
    await p.close()


@pytest.fixture
def port() -> int:
    return free_port()


def desired(port: int, weight: int, generation: int = 1, **extra: object) -> TrafficDesired:
    return TrafficDesired(
        namespace="shop",
        name="web",
        generation=generation,
        stable_revision=STABLE,
        canary_revision=CANARY,
        canary_weight=weight,
        port=port,
        **extra,  # type: ignore[arg-type]
    )


async def served(
    port: int, n: int = REQUESTS, *, path: str = "/", headers: dict[str, str] | None = None
) -> Counter[str]:
    """The revisions answering n sequential requests, over a fresh keep-alive session."""
    seen: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as response:
                assert response.status == 200, await response.text()
                seen[await response.text()] += 1
    return seen


def canary_percent(seen: Counter[str]) -> float:
    return 100.0 * seen[CANARY] / sum(seen.values())


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Poll an async condition until it holds (a deadline, not a sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("weight", [10, 25, 50, 90])
async def test_observed_split_is_within_one_point_of_the_weight(
    provider: NginxProvider, backends: Backends, port: int, weight: int
) -> None:
    await provider.apply(desired(port, weight), backends.endpoints())
    seen = await served(port)
    assert set(seen) == {STABLE, CANARY}
    assert abs(canary_percent(seen) - weight) <= 1.0, seen


async def test_weights_0_and_100_switch_for_the_very_next_request(
    provider: NginxProvider, backends: Backends, port: int
) -> None:
    await provider.apply(desired(port, 0), backends.endpoints())
    assert await served(port, 200) == Counter({STABLE: 200})
    first = provider.pid
    await provider.apply(desired(port, 100, generation=2), backends.endpoints())
    assert provider.pid == first  # a reload, not a restart
    assert await served(port, 200) == Counter({CANARY: 200})
    await provider.apply(desired(port, 0, generation=3), backends.endpoints())
    assert await served(port, 200) == Counter({STABLE: 200})


async def test_responses_name_revision_and_role(
    provider: NginxProvider, backends: Backends, port: int
) -> None:
    await provider.apply(desired(port, 50), backends.endpoints())
    async with aiohttp.ClientSession() as session:
        for _ in range(10):
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                body = await response.text()
                assert response.headers[REVISION_HEADER] == body
                assert response.headers[ROLE_HEADER] == ("canary" if body == CANARY else "stable")


async def test_header_route_sends_matching_requests_to_the_canary(
    provider: NginxProvider, backends: Backends, port: int
) -> None:
    routes = (
        HeaderRoute(
            name="testers",
            match=(
                HeaderMatch(header_name="X-Canary", header_value=StringMatch(exact="yes")),
                HeaderMatch(header_name="User-Agent", header_value=StringMatch(regex=r"firefox(.*)")),
            ),
        ),
        HeaderRoute(
            name="beta", match=(HeaderMatch(header_name="X-Beta", header_value=StringMatch(prefix="on")),)
        ),
    )
    await provider.apply(desired(port, 0, header_routes=routes), backends.endpoints())
    both = {"X-Canary": "yes", "User-Agent": "firefox/123"}
    assert await served(port, 30, headers=both) == Counter({CANARY: 30})
    assert await served(port, 30, headers={"X-Beta": "on-please"}) == Counter({CANARY: 30})
    # One header of an AND alone, a case change (exact is case-sensitive) or a partial regex: weights.
    assert await served(port, 30, headers={"X-Canary": "yes"}) == Counter({STABLE: 30})
    assert await served(port, 30, headers={**both, "X-Canary": "Yes"}) == Counter({STABLE: 30})
    assert await served(port, 30, headers={**both, "User-Agent": "a firefox"}) == Counter({STABLE: 30})
    assert await served(port, 30) == Counter({STABLE: 30})


async def test_mirror_route_copies_its_percentage_of_matching_requests(
    provider: NginxProvider, backends: Backends, port: int
) -> None:
    route = MirrorRoute(name="shadow", percentage=50, match=(RouteMatch(path=StringMatch(prefix="/api/")),))
    await provider.apply(desired(port, 0, mirror_routes=(route,)), backends.endpoints())
    assert await served(port, 40, path="/api/items?page=2") == Counter({STABLE: 40})
    assert await served(port, 10, path="/other") == Counter({STABLE: 10})

    async def twenty() -> bool:
        return sum(len(b.mirrored) for b in backends.canary) >= 20

    await eventually(twenty)
    copies = [copy for b in backends.canary for copy in b.mirrored]
    assert len(copies) == 20  # exactly half of the 40 matching requests, none of the others
    assert set(copies) == {("shadow", "/api/items")}
    assert all(len(b.mirrored) in (6, 7) for b in backends.canary)  # spread over the replicas


async def test_preview_port_serves_the_preview_revision(
    provider: NginxProvider, backends: Backends, port: int
) -> None:
    preview_port = free_port()
    await provider.apply(
        desired(port, 0, preview_revision=PREVIEW, preview_port=preview_port), backends.endpoints()
    )
    assert await served(preview_port, 20) == Counter({PREVIEW: 20})
    assert await served(port, 20) == Counter({STABLE: 20})


async def test_missing_endpoints_raise_not_ready_before_nginx_starts(
    provider: NginxProvider, backends: Backends, port: int
) -> None:
    with pytest.raises(NotReady, match=CANARY):
        await provider.apply(desired(port, 10), backends.endpoints(without=CANARY))
    assert provider.pid is None
    await provider.apply(desired(port, 10), backends.endpoints())
    assert provider.pid is not None


async def test_rejected_config_names_the_rollout_and_keeps_the_previous_weights(
    provider: NginxProvider, backends: Backends, port: int
) -> None:
    await provider.apply(desired(port, 10), backends.endpoints())
    written = provider.config_path.read_text()
    bad = (
        HeaderRoute(
            name="broken",
            match=(HeaderMatch(header_name="X-A", header_value=StringMatch(regex="(unclosed")),),
        ),
    )
    with pytest.raises(NginxRejected, match=r"rollout shop/web: nginx rejected .*\(unclosed") as caught:
        await provider.apply(desired(port, 50, generation=2, header_routes=bad), backends.endpoints())
    assert "of rollout shop/web" in str(caught.value)  # the config line is traced to its rollout
    assert provider.config_path.read_text() == written
    assert canary_percent(await served(port, 300)) == 10.0  # 300: five full cycles of weight 60
    await provider.apply(desired(port, 50, generation=3), backends.endpoints())
    assert canary_percent(await served(port, 300)) == 50.0


async def test_reload_nginx_cannot_take_keeps_the_running_config(
    provider: NginxProvider, backends: Backends, port: int
) -> None:
    await provider.apply(desired(port, 10), backends.endpoints())
    written = provider.config_path.read_text()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        # nginx -t accepts a port in use; the reload's bind() fails (after nginx's 2.5 s of retries).
        with pytest.raises(NginxReloadFailed, match=rf"rollout shop/web: .*bind\(\) to 127.0.0.1:{taken}"):
            await provider.apply(desired(taken, 50, generation=2), backends.endpoints())
    assert provider.config_path.read_text() == written
    assert canary_percent(await served(port, 300)) == 10.0  # 300: five full cycles of weight 60
    assert await provider.check_drift() is False


async def test_hand_edit_of_the_file_alone_is_restored(
    provider: NginxProvider, backends: Backends, port: int
) -> None:
    await provider.apply(desired(port, 10), backends.endpoints())
    written = provider.config_path.read_text()
    provider.config_path.write_text(written.replace("weight=27 ", "weight=3 "))  # not reloaded
    assert await provider.check_drift() is True
    restored = provider.config_path.read_text()
    assert "weight=27 " in restored and "weight=3 " not in restored
    assert restored != written  # rewritten as a new generation, and reloaded
    assert await provider.check_drift() is False
    assert canary_percent(await served(port, 600)) == 10.0  # 600: ten full cycles of weight 60


async def test_hand_edited_and_reloaded_weights_are_restored(
    provider: NginxProvider, backends: Backends, port: int
) -> None:
    await provider.apply(desired(port, 10), backends.endpoints())
    text = provider.config_path.read_text()
    # Two stable replicas at weight 27 and three canary ones at weight 2 make 10%; someone makes it 50%.
    edited = text.replace("weight=27 ", "weight=3 ")
    assert edited != text
    provider.config_path.write_text(edited)
    assert provider.pid is not None
    os.kill(provider.pid, signal.SIGHUP)

    async def hand_edit_live() -> bool:
        return abs(canary_percent(await served(port, 60)) - 50) <= 5

    await eventually(hand_edit_live)
    assert await provider.check_drift() is True
    assert canary_percent(await served(port, 600)) == 10.0
    assert await provider.check_drift() is False


async def test_dead_nginx_is_restarted_by_check_drift(
    provider: NginxProvider, backends: Backends, port: int
) -> None:
    await provider.apply(desired(port, 25), backends.endpoints())
    first = provider.pid
    assert first is not None
    # SIGKILL leaves the worker running, still holding the listen port: it must go before a restart.
    os.kill(first, signal.SIGKILL)

    async def gone() -> bool:
        return provider.pid is None

    await eventually(gone)
    assert await provider.check_drift() is True
    assert provider.pid not in (None, first)
    assert _group(first) == []
    assert canary_percent(await served(port, 600)) == 25.0  # 600: 25 full cycles of weight 24


async def test_close_leaves_no_nginx_process(provider: NginxProvider, backends: Backends, port: int) -> None:
    await provider.apply(desired(port, 50), backends.endpoints())
    master = provider.pid
    assert master is not None
    workers = _group(master)
    assert len(workers) == 2  # the master and its one worker
    await provider.close()
    assert provider.pid is None
    assert _group(master) == []
    with pytest.raises(aiohttp.ClientConnectionError):
        await served(port, 1)


def _group(pgrp: int) -> list[int]:
    """Live processes of a process group (the provider starts nginx in a session of its own)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[2] == str(pgrp) and fields[0] != "Z":
            members.append(int(entry))
    return members


async def test_experiment_sets_get_their_weight(
    provider: NginxProvider, backends: Backends, port: int
) -> None:
    """Argo's additionalDestinations through nginx: the preview backend plays an experiment's set."""
    extra = (WeightedDestination(revision=PREVIEW, weight=20, name="baseline"),)
    await provider.apply(desired(port, 20, additional=extra), backends.endpoints())
    seen = await served(port)
    total = sum(seen.values())
    shares = {rev: 100.0 * n / total for rev, n in seen.items()}
    assert abs(shares[STABLE] - 60) <= 1.0 and abs(shares[CANARY] - 20) <= 1.0, seen
    assert abs(shares[PREVIEW] - 20) <= 1.0, seen
