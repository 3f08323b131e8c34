"""Per-second traffic samples of each rollout's stable and canary, for the canary judge.

The proxy keeps cumulative counters per (revision, role) (:meth:`WeightedProxy.stats`). A
:class:`SampleRecorder` snapshots them about once a second into a bounded ring buffer per
rollout (``namespace/name``), and turns consecutive snapshots into per-second series per role:

* ``requests``: completed responses per second (what ``rollouts_proxy_requests_total``
  counts; an upstream failure answered 502/504 by the proxy is a completed 5xx);
* ``errorRate``: 5xx responses / completed responses in that interval, NaN without responses;
* ``latencyP50`` / ``latencyP99`` (seconds): estimated from the latency-histogram bucket
  deltas of that interval the way Prometheus' ``histogram_quantile`` does (linear within a
  bucket; a rank in the overflow bucket yields the highest finite bound), NaN without
  responses.

Only intervals whose two ends both show the role's *current* revision (the one in the
latest snapshot) are used, so a new canary revision never inherits the previous one's
samples. An interval in which a counter went backwards (the proxy was recreated) is
skipped. The pure functions (:func:`role_series`, :func:`quantile_from_buckets`,
:func:`samples_document`) need no server; :func:`samples_handler` serves
``GET /api/v1/rollouts/{namespace}/{name}/samples?window=60`` from a recorder.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec
from aiohttp import web

from services.traffic_shifter.proxy import CANARY, STABLE, ProxyStats
from shared.durations import parse_pause_duration

__all__ = [
    "DEFAULT_RETENTION_SECONDS",
    "DEFAULT_WINDOW_SECONDS",
    "ROLES",
    "SERIES",
    "RoleCounters",
    "RoleSeries",
    "SampleRecorder",
    "Snapshot",
    "quantile_from_buckets",
    "role_series",
    "samples_document",
    "samples_handler",
    "snapshot_of",
]

log = logging.getLogger(__name__)

DEFAULT_RETENTION_SECONDS: Final = 600.0
DEFAULT_INTERVAL_SECONDS: Final = 1.0
DEFAULT_WINDOW_SECONDS: Final = 60.0
ROLES: Final = (STABLE, CANARY)
SERIES: Final = ("requests", "errorRate", "latencyP50", "latencyP99")


class RoleCounters(msgspec.Struct, frozen=True, kw_only=True):
    """Cumulative counters of the revision serving one role at snapshot time."""

    revision: str
    completed: int  # responses observed (the latency histogram's count)
    errors5xx: int
    buckets: tuple[int, ...]  # non-cumulative, one per bound plus the overflow bucket


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """One rollout's counters at one instant (unix seconds)."""

    at: float
    bounds: tuple[float, ...]
    roles: dict[str, RoleCounters]  # "stable" / "canary"; a role without a revision is absent


class RoleSeries(msgspec.Struct, frozen=True, kw_only=True):
    """Per-interval series of one role, oldest first; NaN where a value is undefined."""

    revision: str | None = None
    timestamps: tuple[float, ...] = ()  # end of each interval
    requests: tuple[float, ...] = ()
    error_rate: tuple[float, ...] = ()
    latency_p50: tuple[float, ...] = ()
    latency_p99: tuple[float, ...] = ()

    def by_name(self) -> dict[str, tuple[float, ...]]:
        return {
            "requests": self.requests,
            "errorRate": self.error_rate,
            "latencyP50": self.latency_p50,
            "latencyP99": self.latency_p99,
        }


def snapshot_of(stats: ProxyStats, at: float) -> Snapshot:
    """The counters of the revisions currently serving each role (zeros before their first request)."""
    roles: dict[str, RoleCounters] = {}
    empty = (0,) * (len(stats.latency_bounds) + 1)
    for role, revision in ((STABLE, stats.stable_revision), (CANARY, stats.canary_revision)):
        if not revision:
            continue
        entry = stats.find(revision, role)
        if entry is None:
            roles[role] = RoleCounters(revision=revision, completed=0, errors5xx=0, buckets=empty)
        else:
            roles[role] = RoleCounters(
                revision=revision,
                completed=entry.latency_count,
                errors5xx=entry.errors5xx,
                buckets=tuple(entry.latency_buckets),
            )
    return Snapshot(at=at, bounds=tuple(stats.latency_bounds), roles=roles)


def quantile_from_buckets(q: float, buckets: Sequence[int], bounds: Sequence[float]) -> float:
    """``histogram_quantile`` over non-cumulative bucket counts; NaN when the buckets are empty."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within 0..1, got {q}")
    if len(buckets) != len(bounds) + 1:
        raise ValueError(f"expected {len(bounds) + 1} buckets for {len(bounds)} bounds, got {len(buckets)}")
    total = sum(buckets)
    if total <= 0 or not bounds:
        return math.nan
    rank = q * total
    cumulative = 0
    for i, count in enumerate(buckets):
        if count > 0 and cumulative + count >= rank:
            if i == len(bounds):
                return float(bounds[-1])
            lower = bounds[i - 1] if i > 0 else 0.0
            upper = bounds[i]
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
    return float(bounds[-1])


def role_series(snapshots: Iterable[Snapshot], role: str, *, since: float, until: float) -> RoleSeries:
    """Series of ``role`` over the intervals between consecutive snapshots ending in ``(since, until]``.

    The role's revision is the one in the latest snapshot at or before ``until``; intervals
    of any other revision, and intervals where a counter went backwards, are left out.
    """
    ordered = sorted((s for s in snapshots if s.at <= until), key=lambda s: s.at)
    if not ordered:
        return RoleSeries()
    latest = ordered[-1].roles.get(role)
    if latest is None:
        return RoleSeries()
    revision = latest.revision
    stamps: list[float] = []
    requests: list[float] = []
    errors: list[float] = []
    p50: list[float] = []
    p99: list[float] = []
    for before, after in itertools.pairwise(ordered):
        if after.at <= since:
            continue
        a, b = before.roles.get(role), after.roles.get(role)
        if a is None or b is None or a.revision != revision or b.revision != revision:
            continue
        dt = after.at - before.at
        if dt <= 0 or after.bounds != before.bounds or len(a.buckets) != len(b.buckets):
            continue
        completed = b.completed - a.completed
        failed = b.errors5xx - a.errors5xx
        deltas = [y - x for x, y in zip(a.buckets, b.buckets, strict=True)]
        if completed < 0 or failed < 0 or any(d < 0 for d in deltas):
            continue  # counters were reset: the interval is unknown
        stamps.append(after.at)
        requests.append(completed / dt)
        errors.append(failed / completed if completed else math.nan)
        p50.append(quantile_from_buckets(0.5, deltas, after.bounds))
        p99.append(quantile_from_buckets(0.99, deltas, after.bounds))
    return RoleSeries(
        revision=revision,
        timestamps=tuple(stamps),
        requests=tuple(requests),
        error_rate=tuple(errors),
        latency_p50=tuple(p50),
        latency_p99=tuple(p99),
    )


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def samples_document(
    snapshots: Sequence[Snapshot], *, window: float, now: float, namespace: str, name: str
) -> dict[str, Any]:
    """The JSON body of the samples endpoint: series per role, NaN as null.

    A role without a revision is ``null``; ``stable`` and ``canary`` map series names
    (``requests``, ``errorRate``, ``latencyP50``, ``latencyP99``) to lists.
    """
    since = now - window
    body: dict[str, Any] = {"namespace": namespace, "name": name, "window": window, "now": now}
    timestamps: dict[str, list[float]] = {}
    for role in ROLES:
        series = role_series(snapshots, role, since=since, until=now)
        body[f"{role}Revision"] = series.revision
        if series.revision is None:
            body[role] = None
            continue
        body[role] = {key: [_json_number(v) for v in values] for key, values in series.by_name().items()}
        timestamps[role] = list(series.timestamps)
    body["timestamps"] = timestamps
    return body


class SampleRecorder:
    """Ring buffers of snapshots per rollout, filled by :meth:`run` (or :meth:`snapshot` directly)."""

    def __init__(
        self,
        *,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not retention_seconds > 0 or not interval_seconds > 0:
            raise ValueError("retention_seconds and interval_seconds must be positive")
        self.retention_seconds = retention_seconds
        self.interval_seconds = interval_seconds
        self.clock = clock
        # One snapshot more than the retention holds intervals, plus slack for a faster cadence.
        self._maxlen = math.ceil(retention_seconds / interval_seconds) * 2 + 2
        self._buffers: dict[str, deque[Snapshot]] = {}

    def keys(self) -> list[str]:
        return sorted(self._buffers)

    def snapshots(self, key: str) -> list[Snapshot]:
        return list(self._buffers.get(key, ()))

    def snapshot(self, stats: Mapping[str, ProxyStats], *, at: float | None = None) -> None:
        """Record every rollout's counters at ``at`` (default: the clock); drop data past retention."""
        when = self.clock() if at is None else at
        for key, proxy_stats in stats.items():
            buffer = self._buffers.get(key)
            if buffer is None:
                buffer = self._buffers[key] = deque(maxlen=self._maxlen)
            if buffer and when <= buffer[-1].at:
                continue  # time must move forward within one buffer
            buffer.append(snapshot_of(proxy_stats, when))
        horizon = when - self.retention_seconds
        for key in list(self._buffers):
            buffer = self._buffers[key]
            # Keep one snapshot at or before the horizon: it starts the oldest retained interval.
            while len(buffer) > 1 and buffer[1].at <= horizon:
                buffer.popleft()
            if buffer and buffer[-1].at <= horizon:
                del self._buffers[key]  # the rollout is gone from the router

    def document(self, key: str, *, window: float, now: float | None = None) -> dict[str, Any] | None:
        """The endpoint body for rollout ``key`` ("namespace/name"), or None when it was never seen."""
        buffer = self._buffers.get(key)
        if buffer is None:
            return None
        namespace, _, name = key.partition("/")
        when = self.clock() if now is None else now
        return samples_document(list(buffer), window=window, now=when, namespace=namespace, name=name)

    async def run(self, stats_fn: Callable[[], Mapping[str, ProxyStats]], stop: asyncio.Event) -> None:
        """Snapshot ``stats_fn()`` every interval until ``stop`` is set; a failing tick is logged, not fatal."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while not stop.is_set():
            try:
                self.snapshot(stats_fn())
            except Exception:
                log.exception("traffic samples: snapshot failed")
            next_tick += self.interval_seconds
            now = loop.time()
            if next_tick < now:  # fell behind (a long pause): skip the missed ticks
                next_tick = now + self.interval_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=next_tick - now)


def _window_of(raw: str | None, retention: float) -> float:
    if raw is None or not raw.strip():
        return min(DEFAULT_WINDOW_SECONDS, retention)
    text = raw.strip()
    try:
        seconds = float(text) if _is_number(text) else parse_pause_duration(text)
    except ValueError as exc:
        raise ValueError(f"window: {exc}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"window must be a positive number of seconds or a duration, got {raw!r}")
    if seconds > retention:
        raise ValueError(f"window {seconds:g}s exceeds the {retention:g}s of samples kept")
    return seconds


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def samples_handler(recorder: SampleRecorder) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """aiohttp handler for ``GET /api/v1/rollouts/{namespace}/{name}/samples?window=<seconds|duration>``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        key = f"{request.match_info['namespace']}/{request.match_info['name']}"
        try:
            window = _window_of(request.query.get("window"), recorder.retention_seconds)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        body = recorder.document(key, window=window)
        if body is None:
            return web.json_response({"error": f"rollout {key!r} has no traffic samples"}, status=404)
        return web.Response(body=msgspec.json.encode(body), content_type="application/json")

    return handle
