"""A token bucket for writes to the Kubernetes API server (client-side QPS, as Argo's --qps/--burst).

Status writes are already folded per rollout (the newest status wins); this bounds them across
rollouts, so that thousands of rollouts stepping at once cannot flood the API server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a rate limit needs qps > 0 and burst >= 1 (got {rate:g}, {burst})")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.sleep = sleep
        self.tokens = float(burst)
        self.at = clock()

    async def acquire(self) -> None:
        """Take one token, waiting for it when the bucket is empty."""
        while True:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1 - 1e-9:  # float sums of fractions may stop just short of 1
                self.tokens = max(self.tokens - 1, 0.0)
                return
            await self.sleep((1 - self.tokens) / self.rate)
