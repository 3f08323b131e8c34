"""One active planner at a time: a lease in a JetStream KV bucket whose entries expire.

The leader creates the lease key and renews it (compare-and-set on its revision) every third of the
TTL; if it dies, the entry expires and a standby's create succeeds, so another planner takes over
within the TTL plus one renewal interval. A leader that cannot renew stops acting before the TTL
runs out (`valid()`), and its state writes are compare-and-set too, so a paused ex-leader cannot
overwrite its successor's decisions.
"""

from __future__ import annotations

import logging
import time

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

LEASE_KEY = "planner"


class Lease:
    def __init__(self, kv: KeyValue, *, holder: str, ttl: float, key: str = LEASE_KEY) -> None:
        self.kv = kv
        self.holder = holder
        self.ttl = ttl
        self.key = key
        self.revision: int | None = None
        self.valid_until = 0.0

    def valid(self) -> bool:
        return self.revision is not None and time.monotonic() < self.valid_until

    async def acquire(self) -> bool:
        started = time.monotonic()
        try:
            self.revision = await self.kv.create(self.key, self.holder.encode())
        except KeyWrongLastSequenceError:
            return False
        self.valid_until = started + self.ttl * 0.8
        log.info("planner %s holds the lease", self.holder)
        return True

    async def renew(self) -> bool:
        if self.revision is None:
            return False
        started = time.monotonic()
        try:
            self.revision = await self.kv.update(self.key, self.holder.encode(), last=self.revision)
        except Exception as e:
            # A timed-out renewal may still have landed (the server was busy): read it back.
            try:
                entry = await self.kv.get(self.key)
                if entry.value == self.holder.encode() and entry.revision:
                    self.revision = entry.revision
                    self.valid_until = started + self.ttl * 0.8
                    return True
            except Exception:
                pass
            log.warning("planner %s lost the lease: %r", self.holder, e)  # someone else holds it
            self.revision = None
            return False
        self.valid_until = started + self.ttl * 0.8
        return True

    async def release(self) -> None:
        if self.revision is None:
            return
        try:
            await self.kv.delete(self.key, last=self.revision)
        except Exception as e:
            log.info("releasing the lease failed (it will expire): %r", e)
        self.revision = None
