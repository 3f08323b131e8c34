"""The token bucket that bounds status writes to the API server (deterministic clock, no real sleeps)."""

from __future__ import annotations

import pytest

from services.kube_bridge.ratelimit import TokenBucket

pytestmark = pytest.mark.timeout(30)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_a_burst_goes_at_once_then_the_rate_holds() -> None:
    t = FakeTime()
    bucket = TokenBucket(40, 80, clock=t.clock, sleep=t.sleep)
    for _ in range(80):
        await bucket.acquire()
    assert t.now == 0.0  # the burst needs no waiting
    for _ in range(40):
        await bucket.acquire()
    assert t.now == pytest.approx(1.0)  # then 40 per second


async def test_tokens_come_back_while_idle_but_never_beyond_the_burst() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, 5, clock=t.clock, sleep=t.sleep)
    for _ in range(5):
        await bucket.acquire()
    t.now += 3600  # an idle hour refills 5 tokens, not 36,000
    for _ in range(5):
        await bucket.acquire()
    assert t.slept == []
    await bucket.acquire()
    assert t.slept == [pytest.approx(0.1)]


def test_bad_limits_are_refused_with_the_values() -> None:
    with pytest.raises(ValueError, match=r"qps > 0 and burst >= 1 \(got 0, 80\)"):
        TokenBucket(0, 80)
