"""Connecting to NATS and declaring every stream and KV bucket (idempotently, from any service)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from shared import subjects
from shared.publisher import AckPublisher, PubAck

log = logging.getLogger(__name__)

DAY = 24 * 3600.0
LEASE_TTL = 3.0  # seconds; a standby planner takes over within about this long (plus a renewal)


def stream_configs() -> list[StreamConfig]:
    """The streams; each comment says why its retention is what it is."""
    return [
        # Commands are durable (a command sent while the planner is down takes effect later);
        # no_ack so that `nats req` gets the planner's answer, not a JetStream PubAck.
        StreamConfig(
            name=subjects.COMMANDS_STREAM,
            subjects=[subjects.COMMANDS_WILDCARD],
            no_ack=True,
            max_age=7 * DAY,
            duplicate_window=120.0,
            storage=StorageType.FILE,
        ),
        # The public history of every rollout; replayable by `rollouts get --watch`.
        StreamConfig(
            name=subjects.EVENTS_STREAM,
            subjects=[subjects.EVENTS_WILDCARD],
            max_age=30 * DAY,
            max_msgs_per_subject=10_000,
            duplicate_window=120.0,
            storage=StorageType.FILE,
        ),
        # Desired state: only the latest value per rollout matters (level-triggered services).
        StreamConfig(
            name=subjects.TRAFFIC_STREAM,
            subjects=[subjects.TRAFFIC_WILDCARD],
            max_msgs_per_subject=1,
            duplicate_window=120.0,
            storage=StorageType.FILE,
        ),
        StreamConfig(
            name=subjects.SCALE_STREAM,
            subjects=[subjects.SCALE_WILDCARD],
            max_msgs_per_subject=1,
            duplicate_window=120.0,
            storage=StorageType.FILE,
        ),
        StreamConfig(
            name=subjects.ENDPOINTS_STREAM,
            subjects=[subjects.ENDPOINTS_WILDCARD],
            max_msgs_per_subject=1,
            storage=StorageType.FILE,
        ),
        # Everything the planner must hear back; kept a while as the analysis record.
        StreamConfig(
            name=subjects.FEEDBACK_STREAM,
            subjects=[subjects.FEEDBACK_WILDCARD],
            max_age=7 * DAY,
            duplicate_window=120.0,
            storage=StorageType.FILE,
        ),
        # One message = one unit of analysis work, taken by exactly one analyzer.
        StreamConfig(
            name=subjects.ANALYSIS_WORK_STREAM,
            subjects=[subjects.ANALYSIS_WORK_WILDCARD],
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=120.0,
            discard=DiscardPolicy.OLD,
            storage=StorageType.FILE,
        ),
    ]


def bucket_configs() -> list[KeyValueConfig]:
    return [
        KeyValueConfig(bucket=subjects.ROLLOUTS_BUCKET, history=1, storage=StorageType.FILE),
        KeyValueConfig(bucket=subjects.TEMPLATES_BUCKET, history=5, storage=StorageType.FILE),
        KeyValueConfig(
            bucket=subjects.ANALYSIS_RUNS_BUCKET, history=1, ttl=7 * DAY, storage=StorageType.FILE
        ),
        # Leases expire on their own: a dead leader's lease is gone after LEASE_TTL seconds.
        KeyValueConfig(bucket=subjects.LEASES_BUCKET, history=1, ttl=LEASE_TTL, storage=StorageType.FILE),
    ]


@dataclass
class Connection:
    nc: Client
    js: JetStreamContext
    publisher: AckPublisher | None = None

    async def kv(self, bucket: str) -> KeyValue:
        return await self.js.key_value(bucket)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> PubAck:
        """A JetStream publish through the lean ack path (shared.publisher)."""
        return await self.acks().publish(subject, payload, headers)

    def acks(self) -> AckPublisher:
        if self.publisher is None:
            self.publisher = AckPublisher(self.nc)
        return self.publisher

    async def close(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()
        if not self.nc.is_closed:
            await self.nc.drain()


async def connect(url: str, *, name: str, declare: bool = True) -> Connection:
    """Connect with reconnects forever (services outlive a NATS restart) and declare the topology."""

    async def on_error(e: Exception) -> None:
        log.warning("nats: %s", e)

    nc = await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
        connect_timeout=5,
    )
    js = nc.jetstream(timeout=10)
    conn = Connection(nc, js)
    if declare:
        await declare_topology(js)
    return conn


async def declare_topology(js: JetStreamContext) -> None:
    for cfg in stream_configs():
        try:
            await js.add_stream(cfg)
        except BadRequestError:
            await js.update_stream(cfg)
    for kv in bucket_configs():
        try:
            await js.key_value(kv.bucket)
        except Exception:  # bucket missing: nats-py raises BucketNotFoundError or NotFoundError
            await js.create_key_value(kv)
