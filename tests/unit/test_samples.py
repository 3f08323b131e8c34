"""Per-second traffic samples (services.traffic_shifter.samples) from synthetic proxy snapshots.

Covers the per-interval deltas (requests per second over uneven intervals, error rate as
5xx / completed), NaN for intervals without responses, quantiles from histogram bucket
deltas (against hand-computed ``histogram_quantile`` values, the overflow bucket), a
revision change in a role, counter resets, windows, retention of the ring buffer, the JSON
document (NaN as null, a role without revision), and the recorder's 1-second loop driven
with a short interval and polled with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time

import pytest

from services.traffic_shifter.proxy import LATENCY_BOUNDS, ProxyStats, RevisionStats
from services.traffic_shifter.samples import (
    SampleRecorder,
    quantile_from_buckets,
    role_series,
    samples_document,
    snapshot_of,
)

pytestmark = pytest.mark.timeout(30)

NB = len(LATENCY_BOUNDS) + 1
KEY = "shop/web"


def _rev(
    revision: str, role: str, *, ok: int = 0, err: int = 0, buckets: dict[int, int] | None = None
) -> RevisionStats:
    counts = [0] * NB
    for index, count in (buckets or {}).items():
        counts[index] = count
    # When no buckets are given, every response falls in the first bucket.
    if buckets is None:
        counts[0] = ok + err
    return RevisionStats(
        revision=revision,
        role=role,
        requests=ok + err,
        responses={"2xx": ok, "3xx": 0, "4xx": 0, "5xx": err},
        errors5xx=err,
        upstream_errors=0,
        error_rate=err / (ok + err) if ok + err else 0.0,
        latency_p50=None,
        latency_p99=None,
        latency_count=sum(counts),
        latency_sum=0.0,
        latency_buckets=tuple(counts),
    )


def _stats(*revisions: RevisionStats, stable: str | None = "a", canary: str | None = "b") -> ProxyStats:
    return ProxyStats(
        name=KEY,
        stable_revision=stable,
        canary_revision=canary,
        canary_weight=50,
        unrouted=0,
        revisions=list(revisions),
    )


def _nan_equal(actual: tuple[float, ...] | list[float | None], expected: list[float]) -> bool:
    if len(actual) != len(expected):
        return False
    for a, e in zip(actual, expected, strict=True):
        if math.isnan(e):
            if a is not None and not math.isnan(a):
                return False
        elif a is None or a != pytest.approx(e):
            return False
    return True


# --- quantiles ------------------------------------------------------------------------------


def test_quantile_interpolates_within_the_bucket_like_histogram_quantile() -> None:
    bounds = (0.1, 0.2, 0.4)
    # 10 observations: 4 in (0, 0.1], 4 in (0.1, 0.2], 2 in (0.2, 0.4], none above.
    buckets = (4, 4, 2, 0)
    assert quantile_from_buckets(0.5, buckets, bounds) == pytest.approx(0.1 + 0.1 * (5 - 4) / 4)
    assert quantile_from_buckets(0.99, buckets, bounds) == pytest.approx(0.2 + 0.2 * (9.9 - 8) / 2)
    assert quantile_from_buckets(0.2, buckets, bounds) == pytest.approx(0.1 * 2 / 4)


def test_quantile_in_the_overflow_bucket_is_the_highest_bound() -> None:
    assert quantile_from_buckets(0.99, (1, 0, 0, 9), (0.1, 0.2, 0.4)) == 0.4


def test_quantile_of_empty_buckets_is_nan_and_shapes_are_checked() -> None:
    assert math.isnan(quantile_from_buckets(0.5, (0, 0, 0, 0), (0.1, 0.2, 0.4)))
    with pytest.raises(ValueError, match="buckets"):
        quantile_from_buckets(0.5, (1, 2), (0.1, 0.2, 0.4))
    with pytest.raises(ValueError, match="quantile"):
        quantile_from_buckets(1.5, (1, 0, 0, 0), (0.1, 0.2, 0.4))


# --- series from snapshots ------------------------------------------------------------------


def test_deltas_give_rates_error_rates_and_nan_without_responses() -> None:
    snaps = [
        snapshot_of(_stats(_rev("a", "stable", ok=10)), 100.0),
        # +20 completed, 5 of them 5xx, over 2 s.
        snapshot_of(_stats(_rev("a", "stable", ok=25, err=5)), 102.0),
        # nothing new in 1 s
        snapshot_of(_stats(_rev("a", "stable", ok=25, err=5)), 103.0),
        # +4 (all errors) in 0.5 s
        snapshot_of(_stats(_rev("a", "stable", ok=25, err=9)), 103.5),
    ]
    series = role_series(snaps, "stable", since=0.0, until=200.0)
    assert series.revision == "a"
    assert series.timestamps == (102.0, 103.0, 103.5)
    assert series.requests == pytest.approx((10.0, 0.0, 8.0))
    assert _nan_equal(series.error_rate, [0.25, math.nan, 1.0])
    assert _nan_equal(series.latency_p50, [LATENCY_BOUNDS[0] * 0.5, math.nan, LATENCY_BOUNDS[0] * 0.5])


def test_latency_quantiles_come_from_the_bucket_deltas_of_the_interval() -> None:
    # The first interval is all fast; the second adds only slow responses (bucket index 5,
    # 0.1 < t <= 0.25): its quantiles must ignore the earlier fast ones.
    snaps = [
        snapshot_of(_stats(_rev("a", "stable", ok=0, buckets={})), 0.0),
        snapshot_of(_stats(_rev("a", "stable", ok=100, buckets={0: 100})), 1.0),
        snapshot_of(_stats(_rev("a", "stable", ok=110, buckets={0: 100, 5: 10})), 2.0),
    ]
    series = role_series(snaps, "stable", since=-1.0, until=2.0)
    low, high = LATENCY_BOUNDS[4], LATENCY_BOUNDS[5]
    assert series.latency_p50[0] == pytest.approx(LATENCY_BOUNDS[0] * 0.5)
    assert series.latency_p50[1] == pytest.approx(low + (high - low) * 0.5)
    assert series.latency_p99[1] == pytest.approx(low + (high - low) * 0.99)


def test_a_role_without_requests_yet_counts_from_zero_and_an_absent_role_has_no_series() -> None:
    snaps = [
        snapshot_of(_stats(_rev("a", "stable", ok=5)), 0.0),  # canary "b" has no entry yet
        snapshot_of(_stats(_rev("a", "stable", ok=5), _rev("b", "canary", ok=3, err=1)), 1.0),
    ]
    canary = role_series(snaps, "canary", since=-1.0, until=1.0)
    assert canary.revision == "b"
    assert canary.requests == (4.0,)
    assert canary.error_rate == (0.25,)
    no_canary = [snapshot_of(_stats(_rev("a", "stable", ok=5), canary=None), t) for t in (0.0, 1.0)]
    empty = role_series(no_canary, "canary", since=-1.0, until=1.0)
    assert empty.revision is None and empty.requests == ()


def test_only_the_current_revision_of_a_role_is_used() -> None:
    old = _rev("b1", "canary", ok=10, err=10)
    snaps = [
        snapshot_of(_stats(_rev("a", "stable", ok=1), _rev("b1", "canary"), canary="b1"), 0.0),
        snapshot_of(_stats(_rev("a", "stable", ok=2), old, canary="b1"), 1.0),
        # The canary moved to b2: the b1 -> b2 interval and the b1 intervals are dropped.
        snapshot_of(_stats(_rev("a", "stable", ok=3), old, _rev("b2", "canary", ok=2), canary="b2"), 2.0),
        snapshot_of(_stats(_rev("a", "stable", ok=4), old, _rev("b2", "canary", ok=6), canary="b2"), 3.0),
    ]
    canary = role_series(snaps, "canary", since=-1.0, until=3.0)
    assert canary.revision == "b2"
    assert canary.timestamps == (3.0,)
    assert canary.requests == (4.0,)
    assert canary.error_rate == (0.0,)
    # Looking back from before the switch, the canary was b1.
    before = role_series(snaps, "canary", since=-1.0, until=1.5)
    assert before.revision == "b1" and before.error_rate == (0.5,)


def test_an_interval_where_counters_went_backwards_is_skipped() -> None:
    snaps = [
        snapshot_of(_stats(_rev("a", "stable", ok=50)), 0.0),
        snapshot_of(_stats(_rev("a", "stable", ok=2)), 1.0),  # the proxy was recreated
        snapshot_of(_stats(_rev("a", "stable", ok=5)), 2.0),
    ]
    series = role_series(snaps, "stable", since=-1.0, until=2.0)
    assert series.timestamps == (2.0,) and series.requests == (3.0,)


def test_window_selects_intervals_ending_inside_it() -> None:
    snaps = [snapshot_of(_stats(_rev("a", "stable", ok=10 * t)), float(t)) for t in range(11)]
    series = role_series(snaps, "stable", since=7.0, until=10.0)
    assert series.timestamps == (8.0, 9.0, 10.0)
    assert series.requests == (10.0, 10.0, 10.0)
    assert role_series(snaps, "stable", since=7.0, until=8.5).timestamps == (8.0,)


def test_document_has_both_roles_nan_as_null_and_revisions() -> None:
    snaps = [
        snapshot_of(_stats(_rev("a", "stable", ok=4), _rev("b", "canary", ok=1)), 0.0),
        snapshot_of(_stats(_rev("a", "stable", ok=8), _rev("b", "canary", ok=1)), 1.0),
    ]
    body = samples_document(snaps, window=60.0, now=1.0, namespace="shop", name="web")
    assert body["stableRevision"] == "a" and body["canaryRevision"] == "b"
    assert body["stable"]["requests"] == [4.0]
    assert body["stable"]["errorRate"] == [0.0]
    assert body["canary"] == {
        "requests": [0.0],
        "errorRate": [None],
        "latencyP50": [None],
        "latencyP99": [None],
    }
    assert body["timestamps"] == {"stable": [1.0], "canary": [1.0]}
    lone = [snapshot_of(_stats(_rev("a", "stable", ok=t), canary=None), float(t)) for t in range(2)]
    body = samples_document(lone, window=60.0, now=1.0, namespace="shop", name="web")
    assert body["canary"] is None and body["canaryRevision"] is None


# --- the recorder -----------------------------------------------------------------------------


def test_recorder_keeps_a_bounded_window_and_forgets_rollouts_that_left() -> None:
    recorder = SampleRecorder(retention_seconds=10.0, interval_seconds=1.0)
    for t in range(100):
        recorder.snapshot({KEY: _stats(_rev("a", "stable", ok=t))}, at=float(t))
    kept = recorder.snapshots(KEY)
    # One snapshot at or before the horizon (89) starts the oldest retained interval.
    assert kept[0].at == 89.0 and kept[-1].at == 99.0
    # Time never goes backwards within a buffer.
    recorder.snapshot({KEY: _stats(_rev("a", "stable", ok=1000))}, at=50.0)
    assert recorder.snapshots(KEY)[-1].at == 99.0
    body = recorder.document(KEY, window=5.0, now=99.0)
    assert body is not None and body["stable"]["requests"] == [1.0] * 5
    assert recorder.document("shop/other", window=5.0, now=99.0) is None
    # The rollout disappears from the router: its samples age out.
    recorder.snapshot({}, at=200.0)
    assert recorder.keys() == []


async def test_run_snapshots_on_its_interval_until_stopped() -> None:
    recorder = SampleRecorder(retention_seconds=60.0, interval_seconds=0.01)
    calls = 0

    def stats() -> dict[str, ProxyStats]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a failing tick is logged, not fatal")
        return {KEY: _stats(_rev("a", "stable", ok=calls))}

    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stats, stop))
    deadline = time.monotonic() + 10.0
    while len(recorder.snapshots(KEY)) < 5:
        assert time.monotonic() < deadline, "the recorder did not take 5 snapshots in 10 s"
        assert not task.done(), task
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=5.0)
    snaps = recorder.snapshots(KEY)
    assert all(b.at > a.at for a, b in itertools.pairwise(snaps))
