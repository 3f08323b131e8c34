"""Answering `nats req` on command subjects, although JetStream keeps no reply subject.

The planner sees each command twice: from the commands stream (where it is handled, durably) and
on a core-NATS subscription (which carries the requester's inbox). For one (subject, payload) both
copies arrive in publish order, so the n-th copy seen on the core subscription belongs to the n-th
handled from the stream; a plain publish takes its place in that order with no inbox.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

Key = tuple[str, bytes]


class ReplyMatcher:
    def __init__(
        self, *, seen_ttl: float = 60.0, done_ttl: float = 2.0, clock: Callable[[], float] = time.monotonic
    ):
        # A request waits for its command as long as a client would (seen_ttl); a result waits for
        # its core copy only briefly (done_ttl): a command sent while no planner listened has none.
        self.seen_ttl = seen_ttl
        self.done_ttl = done_ttl
        self.clock = clock
        self._purged_at = float("-inf")
        self.seen: dict[Key, deque[tuple[float, str | None]]] = {}
        self.done: dict[Key, deque[tuple[float, bytes]]] = {}

    def on_core(self, key: Key, inbox: str | None) -> tuple[str, bytes] | None:
        """A command seen on the core subscription; returns (inbox, answer) when already handled."""
        now = self.clock()
        self._purge(now)
        done = self.done.get(key)
        if done:
            _, answer = done.popleft()
            if not done:
                del self.done[key]
            return (inbox, answer) if inbox else None
        self.seen.setdefault(key, deque()).append((now, inbox))
        return None

    def on_handled(self, key: Key, answer: bytes) -> str | None:
        """A command handled from the stream; returns the inbox waiting for its answer, if any."""
        now = self.clock()
        self._purge(now)
        seen = self.seen.get(key)
        if seen:
            _, inbox = seen.popleft()
            if not seen:
                del self.seen[key]
            return inbox
        self.done.setdefault(key, deque()).append((now, answer))
        return None

    def _purge(self, now: float) -> None:
        # At most once a second: a scan per call would make a burst of N commands cost N².
        if now - self._purged_at < 1.0:
            return
        self._purged_at = now
        for table, ttl in ((self.seen, self.seen_ttl), (self.done, self.done_ttl)):
            for key in [k for k, q in table.items() if q and now - q[0][0] > ttl]:
                q = table[key]
                while q and now - q[0][0] > ttl:
                    q.popleft()
                if not q:
                    del table[key]
