"""Weighted HTTP reverse proxy splitting traffic between a stable and a canary revision.

Argo's managed routes come first: a request matching a header route goes to the canary whatever the
weight; a request matching a mirror route is also copied, in the background, to the canary.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from typing import Final

import aiohttp
import msgspec
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from services.traffic_shifter.matching import bad_patterns, header_route_matches, mirror_matches
from services.traffic_shifter.weighting import RoundRobin, SmoothWeightedChooser
from shared.routes import HeaderRoute, MirrorRoute

log = logging.getLogger(__name__)

STABLE: Final = "stable"
CANARY: Final = "canary"
EXPERIMENT_PREFIX: Final = "experiment:"  # role of an experiment's weighted replica set: + template name

# Prometheus client default buckets, so numbers line up with what users already know.
LATENCY_BOUNDS: Final[tuple[float, ...]] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# RFC 9110 section 7.6.1; Host and Content-Length are recomputed by the client side.
_HOP_BY_HOP: Final = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
        "TE", "Trailer", "Transfer-Encoding", "Upgrade",
    )
)  # fmt: skip
_DROP_REQUEST: Final = _HOP_BY_HOP | {"host", "content-length"}
_DROP_RESPONSE: Final = _HOP_BY_HOP | {"content-length"}

# Bodies up to this size are buffered; larger ones are streamed chunk by chunk.
_BUFFER_LIMIT: Final = 256 * 1024
_CHUNK: Final = 64 * 1024

REVISION_HEADER: Final = "X-Rollouts-Revision"
ROLE_HEADER: Final = "X-Rollouts-Role"
# Set on mirrored copies (value: the mirror route's name) so a canary can tell shadow traffic apart,
# the way Envoy marks shadows by suffixing the Host with "-shadow".
MIRROR_HEADER: Final = "X-Rollouts-Mirror"

# A slow canary must not pile up unbounded background copies; beyond this many in flight, skip.
_MAX_MIRRORS_IN_FLIGHT: Final = 256
# Nobody waits for a mirror's answer, so give up on it well before a client would.
_MIRROR_TIMEOUT: Final = aiohttp.ClientTimeout(total=30.0, connect=5.0)


class Backend(msgspec.Struct, frozen=True):
    """One revision's replica addresses ("127.0.0.1:port")."""

    revision: str
    addresses: tuple[str, ...]


class RevisionStats(msgspec.Struct, frozen=True):
    revision: str
    role: str
    requests: int
    responses: dict[str, int]  # "2xx" .. "5xx"
    errors5xx: int
    upstream_errors: int
    error_rate: float
    latency_p50: float | None
    latency_p99: float | None
    latency_count: int
    latency_sum: float
    # Non-cumulative counts per bucket of LATENCY_BOUNDS, plus a final overflow (+Inf) bucket.
    latency_buckets: tuple[int, ...]
    # Mirror-route copies sent to this revision; kept out of every counter above so analysis sees
    # only the traffic whose answers clients got.
    mirrored: int = 0
    mirror_errors: int = 0  # copies that got no answer (connect failure, timeout, broken response)
    mirror_skipped: int = 0  # matching requests not copied: streamed body, or too many copies in flight


class ProxyStats(msgspec.Struct, frozen=True):
    name: str
    stable_revision: str | None
    canary_revision: str | None
    canary_weight: int
    unrouted: int
    revisions: list[RevisionStats]
    latency_bounds: tuple[float, ...] = LATENCY_BOUNDS

    def find(self, revision: str, role: str | None = None) -> RevisionStats | None:
        for entry in self.revisions:
            if entry.revision == revision and (role is None or entry.role == role):
                return entry
        return None


class _Counters:
    """Mutable per (revision, role) counters, updated in place on the hot path."""

    __slots__ = (
        "buckets", "latency_sum", "mirror_errors", "mirror_skipped", "mirrored", "requests", "revision",
        "role", "statuses", "upstream_errors",
    )  # fmt: skip

    def __init__(self, revision: str, role: str) -> None:
        self.revision = revision
        self.role = role
        self.requests = 0
        self.statuses = [0, 0, 0, 0, 0, 0]  # index = status // 100
        self.upstream_errors = 0
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)
        self.latency_sum = 0.0
        self.mirrored = 0
        self.mirror_errors = 0
        self.mirror_skipped = 0

    @property
    def active(self) -> bool:
        return bool(self.requests or self.mirrored or self.mirror_skipped)

    def observe(self, status: int, elapsed: float) -> None:
        self.statuses[min(status // 100, 5)] += 1
        self.buckets[bisect.bisect_left(LATENCY_BOUNDS, elapsed)] += 1
        self.latency_sum += elapsed

    def snapshot(self) -> RevisionStats:
        count = sum(self.buckets)
        errors = self.statuses[5]
        return RevisionStats(
            revision=self.revision,
            role=self.role,
            requests=self.requests,
            responses={f"{i}xx": self.statuses[i] for i in range(2, 6)},
            errors5xx=errors,
            upstream_errors=self.upstream_errors,
            error_rate=errors / self.requests if self.requests else 0.0,
            latency_p50=_quantile(0.5, self.buckets),
            latency_p99=_quantile(0.99, self.buckets),
            latency_count=count,
            latency_sum=self.latency_sum,
            latency_buckets=tuple(self.buckets),
            mirrored=self.mirrored,
            mirror_errors=self.mirror_errors,
            mirror_skipped=self.mirror_skipped,
        )


def _quantile(q: float, buckets: list[int]) -> float | None:
    """Estimate a quantile the way Prometheus' histogram_quantile does (linear within a bucket)."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for i, count in enumerate(buckets):
        if cumulative + count >= rank and count > 0:
            if i == len(LATENCY_BOUNDS):
                return LATENCY_BOUNDS[-1]
            lower = LATENCY_BOUNDS[i - 1] if i > 0 else 0.0
            upper = LATENCY_BOUNDS[i]
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
    return LATENCY_BOUNDS[-1]


class _Group:
    __slots__ = ("backend", "counters", "role", "rr")

    def __init__(self, role: str, backend: Backend, counters: _Counters) -> None:
        self.role = role
        self.backend = backend
        self.counters = counters
        self.rr = RoundRobin(backend.addresses)


class _Mirror:
    """A mirror route plus its deterministic sampler: exactly ``percentage``% of matches, interleaved."""

    __slots__ = ("chooser", "route")

    def __init__(self, route: MirrorRoute) -> None:
        self.route = route
        share = route.percentage
        self.chooser = (
            SmoothWeightedChooser({"mirror": share, "skip": 100 - share}) if 0 < share < 100 else None
        )

    def take(self) -> bool:
        if self.chooser is None:
            return self.route.percentage > 0
        return self.chooser.choose() == "mirror"


class _RoutingTable:
    """Immutable routing decision; replaced wholesale by set_backends so a request sees one version."""

    __slots__ = ("canary_weight", "chooser", "groups", "header_routes", "mirrors", "single")

    def __init__(
        self,
        groups: dict[str, _Group],
        canary_weight: int,
        header_routes: tuple[HeaderRoute, ...] = (),
        mirror_routes: tuple[MirrorRoute, ...] = (),
        additional: dict[str, int] | None = None,
    ) -> None:
        self.groups = groups
        self.canary_weight = canary_weight
        # Both kinds of managed route target the canary, so without canary addresses they are inert.
        has_canary = CANARY in groups
        self.header_routes = header_routes if has_canary else ()
        self.mirrors = tuple(_Mirror(r) for r in mirror_routes) if has_canary else ()
        self.single: _Group | None = None
        self.chooser: SmoothWeightedChooser | None = None
        extra = additional or {}
        weights = {STABLE: max(0, 100 - canary_weight - sum(extra.values())), CANARY: canary_weight, **extra}
        live = {role: w for role, w in weights.items() if role in groups and w > 0}
        if len(live) == 1:
            # Skip the chooser entirely when only one side takes traffic.
            self.single = groups[next(iter(live))]
        elif len(live) > 1:
            self.chooser = SmoothWeightedChooser(live)

    def pick(self) -> _Group | None:
        if self.single is not None:
            return self.single
        if self.chooser is None:
            return None
        return self.groups[self.chooser.choose()]

    def header_routed(self, headers: CIMultiDictProxy[str]) -> _Group | None:
        for route in self.header_routes:
            if header_route_matches(route, headers):
                return self.groups[CANARY]
        return None

    def mirror_for(self, request: web.BaseRequest) -> _Mirror | None:
        """The first matching mirror route (as the first matching route wins in a mesh)."""
        path = request.rel_url.raw_path
        for mirror in self.mirrors:
            if mirror_matches(mirror.route, request.method, path, request.headers):
                return mirror
        return None


_EMPTY_TABLE: Final = _RoutingTable({}, 0)


class WeightedProxy:
    """aiohttp reverse proxy; routing changes apply atomically to the next request."""

    def __init__(self, *, host: str, port: int, name: str) -> None:
        self.host = host
        self.port = port
        self.name = name
        self._table: _RoutingTable = _EMPTY_TABLE
        self._counters: dict[tuple[str, str], _Counters] = {}
        self._unrouted = 0
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._mirror_tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def canary_weight(self) -> int:
        """Effective canary weight after accounting for empty groups."""
        table = self._table
        if table.single is not None:
            return 100 if table.single.role == CANARY else 0
        return table.canary_weight if table.chooser is not None else 0

    async def start(self) -> None:
        if self._runner is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=256, keepalive_timeout=30.0, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Upstream bodies are relayed byte-for-byte with their Content-Encoding.
            auto_decompress=False,
            # A shared jar would leak one client's cookies to every other client.
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=(hdrs.USER_AGENT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE),
            timeout=aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=60.0),
        )
        server = web.Server(self._handle)
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info("proxy %s listening on %s", self.name, self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        # Copies nobody waits for are dropped rather than delaying shutdown.
        for task in list(self._mirror_tasks):
            task.cancel()
        await self.drain_mirrors()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def drain_mirrors(self) -> None:
        """Wait until every mirrored copy sent so far has been answered, failed or cancelled."""
        while self._mirror_tasks:
            await asyncio.gather(*self._mirror_tasks, return_exceptions=True)

    def set_backends(
        self,
        *,
        stable: Backend | None,
        canary: Backend | None,
        canary_weight: int,
        header_routes: tuple[HeaderRoute, ...] = (),
        mirror_routes: tuple[MirrorRoute, ...] = (),
        additional: tuple[tuple[str, Backend, int], ...] = (),
    ) -> None:
        """`additional`: (name, backend, weight) of an experiment's weighted replica sets, served as
        role `experiment:<name>`; their weights come out of the stable's share."""
        if not 0 <= canary_weight <= 100:
            raise ValueError(f"canary_weight must be within 0..100, got {canary_weight}")
        groups: dict[str, _Group] = {}
        extra = {f"{EXPERIMENT_PREFIX}{name}": (backend, weight) for name, backend, weight in additional}
        roles = [(STABLE, stable), (CANARY, canary), *((role, b) for role, (b, _) in extra.items())]
        for role, backend in roles:
            if backend is None or not backend.addresses:
                continue
            key = (backend.revision, role)
            counters = self._counters.get(key)
            if counters is None:
                counters = self._counters[key] = _Counters(backend.revision, role)
            groups[role] = _Group(role, backend, counters)
        weight = canary_weight
        # An empty side hands its share to the other side instead of failing requests.
        if CANARY not in groups:
            weight = 0
        elif STABLE not in groups:
            weight = 100
        for pattern, problem in bad_patterns(header_routes, mirror_routes).items():
            log.warning("proxy %s: regex %r never matches: %s", self.name, pattern, problem)
        table = _RoutingTable(
            groups,
            weight,
            tuple(header_routes),
            tuple(mirror_routes),
            {role: w for role, (_, w) in extra.items() if role in groups},
        )
        self._table = table
        log.info(
            "proxy %s routing: stable=%s canary=%s canary_weight=%d header_routes=%s mirror_routes=%s",
            self.name,
            _describe(groups.get(STABLE)),
            _describe(groups.get(CANARY)),
            weight,
            ",".join(r.name for r in table.header_routes) or "-",
            ",".join(f"{m.route.name}@{m.route.percentage}%" for m in table.mirrors) or "-",
        )

    def stats(self) -> ProxyStats:
        table = self._table
        stable = table.groups.get(STABLE)
        canary = table.groups.get(CANARY)
        return ProxyStats(
            name=self.name,
            stable_revision=stable.backend.revision if stable else None,
            canary_revision=canary.backend.revision if canary else None,
            canary_weight=self.canary_weight,
            unrouted=self._unrouted,
            revisions=[c.snapshot() for c in self._counters.values() if c.active],
        )

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        table = self._table
        mirror: _Mirror | None = None
        # Managed routes before the weighted split; header-routed requests leave the split's
        # sequence untouched and, already bound for the canary, are not copied to it again.
        group = table.header_routed(request.headers) if table.header_routes else None
        if group is None:
            group = table.pick()
            if table.mirrors:
                matched = table.mirror_for(request)
                if matched is not None and matched.take():
                    mirror = matched
        if group is None:
            self._unrouted += 1
            return web.Response(status=503, text=f"proxy {self.name}: no backends available\n")
        session = self._session
        assert session is not None, "proxy not started"
        counters = group.counters
        counters.requests += 1
        started = time.perf_counter()
        address = group.rr.next()
        try:
            response = await self._forward(session, request, group, address, table, mirror)
        except _MidStreamError as exc:
            counters.upstream_errors += 1
            counters.observe(exc.status, time.perf_counter() - started)
            log.warning(
                "proxy %s: upstream %s (%s) broke mid-response: %r", self.name, address, group.role, exc
            )
            # Headers already went out, so the only honest signal left is dropping the connection.
            raise
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            counters.upstream_errors += 1
            status = 504 if isinstance(exc, TimeoutError) else 502
            counters.observe(status, time.perf_counter() - started)
            log.warning("proxy %s: upstream %s (%s) failed: %r", self.name, address, group.role, exc)
            return web.Response(
                status=status,
                text=f"proxy {self.name}: upstream {group.backend.revision} at {address} failed\n",
                headers={REVISION_HEADER: group.backend.revision, ROLE_HEADER: group.role},
            )
        counters.observe(response.status, time.perf_counter() - started)
        return response

    async def _forward(
        self,
        session: aiohttp.ClientSession,
        request: web.BaseRequest,
        group: _Group,
        address: str,
        table: _RoutingTable,
        mirror: _Mirror | None,
    ) -> web.StreamResponse:
        headers = _filter_headers(request.headers, _DROP_REQUEST)
        peer = request.remote
        if peer:
            prior = request.headers.get("X-Forwarded-For")
            headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        if request.host:
            headers["X-Forwarded-Host"] = request.host
        headers["X-Forwarded-Proto"] = request.scheme

        data: bytes | aiohttp.StreamReader | None = None
        if request.body_exists:
            length = request.content_length
            if length is not None and length <= _BUFFER_LIMIT:
                data = await request.content.readexactly(length) if length else b""
            else:
                # Unknown or large bodies are streamed; the client re-frames them as chunked.
                data = request.content

        if mirror is not None:
            self._send_mirror(session, request, table.groups[CANARY], mirror, headers, data)

        url = URL(f"http://{address}{request.raw_path}", encoded=True)
        async with session.request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        ) as upstream:
            out_headers = _filter_headers(upstream.headers, _DROP_RESPONSE)
            out_headers[REVISION_HEADER] = group.backend.revision
            out_headers[ROLE_HEADER] = group.role
            length = upstream.content_length
            if request.method != hdrs.METH_HEAD and length is not None and length <= _BUFFER_LIMIT:
                body = await upstream.read()
                return web.Response(
                    status=upstream.status, reason=upstream.reason, headers=out_headers, body=body
                )
            stream = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=out_headers)
            if length is not None:
                stream.content_length = length
            await stream.prepare(request)
            try:
                if request.method != hdrs.METH_HEAD:
                    async for chunk in upstream.content.iter_chunked(_CHUNK):
                        await stream.write(chunk)
                await stream.write_eof()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _MidStreamError(upstream.status) from exc
            return stream

    def _send_mirror(
        self,
        session: aiohttp.ClientSession,
        request: web.BaseRequest,
        canary: _Group,
        mirror: _Mirror,
        headers: CIMultiDict[str],
        data: bytes | aiohttp.StreamReader | None,
    ) -> None:
        counters = canary.counters
        if isinstance(data, aiohttp.StreamReader):
            # A streamed body can be read only once, and it belongs to the client's request.
            counters.mirror_skipped += 1
            log.debug("proxy %s: not mirroring %s %s: streamed body", self.name, request.method, request.path)
            return
        if len(self._mirror_tasks) >= _MAX_MIRRORS_IN_FLIGHT:
            counters.mirror_skipped += 1
            log.debug(
                "proxy %s: not mirroring: %d copies already in flight", self.name, _MAX_MIRRORS_IN_FLIGHT
            )
            return
        copy = CIMultiDict(headers)
        copy[MIRROR_HEADER] = mirror.route.name
        address = canary.rr.next()
        url = URL(f"http://{address}{request.raw_path}", encoded=True)
        counters.mirrored += 1
        task = asyncio.get_running_loop().create_task(
            self._mirror(session, counters, request.method, url, copy, data, mirror.route.name)
        )
        self._mirror_tasks.add(task)
        task.add_done_callback(self._mirror_tasks.discard)

    async def _mirror(
        self,
        session: aiohttp.ClientSession,
        counters: _Counters,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        data: bytes | None,
        route: str,
    ) -> None:
        try:
            async with session.request(
                method, url, headers=headers, data=data, allow_redirects=False, timeout=_MIRROR_TIMEOUT
            ) as upstream:
                # Drained, not kept: the answer is discarded but the connection stays reusable.
                async for _ in upstream.content.iter_chunked(_CHUNK):
                    pass
        except Exception as exc:  # best effort by design: nothing about a copy may reach the client
            counters.mirror_errors += 1
            log.debug("proxy %s: mirror %s of %s %s failed: %r", self.name, route, method, url, exc)


class _MidStreamError(ConnectionError):
    """Upstream failed after the response headers were already relayed."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream failed after sending status {status}")
        self.status = status


def _filter_headers(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    extra: set[str] = set()
    connection = headers.get(hdrs.CONNECTION)
    if connection:
        # Headers named in Connection are hop-by-hop too (RFC 9110 section 7.6.1).
        extra = {token.strip().lower() for token in connection.split(",") if token.strip()}
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        lowered = key.lower()
        if lowered in drop or lowered in extra:
            continue
        out.add(key, value)
    return out


def _describe(group: _Group | None) -> str:
    if group is None:
        return "-"
    return f"{group.backend.revision}[{len(group.backend.addresses)}]"


__all__ = [
    "CANARY",
    "LATENCY_BOUNDS",
    "MIRROR_HEADER",
    "REVISION_HEADER",
    "ROLE_HEADER",
    "STABLE",
    "Backend",
    "ProxyStats",
    "RevisionStats",
    "WeightedProxy",
]
