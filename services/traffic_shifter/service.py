"""The traffic-shifter: follows each rollout's desired weights and confirms them once the router serves them.

Desired weights and endpoints arrive on last-value streams (one message per rollout), so a
restarted shifter reads the current desired state and converges: it is level-triggered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec
from aiohttp import web
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from services.traffic_shifter.providers import (
    PREVIEW_SUFFIX,
    DriftChecker,
    DriftWatcher,
    NotReady,
    TrafficProvider,
)
from services.traffic_shifter.samples import SampleRecorder, samples_handler
from shared import subjects
from shared.jetstream import Connection
from shared.messages import (
    Endpoints,
    TrafficConfirmed,
    TrafficDesired,
    encoder,
    endpoints_decoder,
    traffic_decoder,
)

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 256  # reconciles under way at once (across rollouts)


class TrafficShifter:
    def __init__(self, conn: Connection, provider: TrafficProvider) -> None:
        self.conn = conn
        self.provider = provider
        self.desired: dict[str, TrafficDesired] = {}
        self.endpoints: dict[str, Endpoints] = {}
        self.confirmed: dict[str, tuple[str, int]] = {}  # rollout -> (uid, generation) confirmed
        self.services: dict[str, tuple[str, str]] = {}  # service name -> (rollout key, role)
        self.locks: dict[str, asyncio.Lock] = {}
        self.subs: list[Any] = []
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        js = self.conn.js
        # Endpoints first, so that the first desired weights find their addresses.
        self.subs.append(
            await js.subscribe(
                subjects.ENDPOINTS_WILDCARD,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                cb=self._on_endpoints,
            )
        )
        self.subs.append(
            await js.subscribe(
                subjects.TRAFFIC_WILDCARD,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                cb=self._on_desired,
            )
        )
        log.info("traffic-shifter started")

    async def stop(self) -> None:
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=10)
        await self.provider.close()

    async def _on_desired(self, msg: Msg) -> None:
        try:
            desired = traffic_decoder.decode(msg.data)
        except msgspec.DecodeError as e:
            log.warning("malformed desired traffic on %s dropped: %s", msg.subject, e)
            return
        key = f"{desired.namespace}/{desired.name}"
        current = self.desired.get(key)
        if current is not None and current.uid == desired.uid and current.generation > desired.generation:
            return
        self.desired[key] = desired
        for service, role in (
            (desired.stable_service, "stable"),
            (desired.canary_service, "canary"),
            (desired.preview_service, "preview"),
        ):
            if service:
                self.services[service] = (key, role)
        await self._spawn_reconcile(key)

    async def _spawn_reconcile(self, key: str) -> None:
        """Rollouts are reconciled concurrently (a router call can take a while; one slow rollout
        must not hold up the others); a rollout's own reconciles queue on its lock and each one
        applies the newest desired state. At most MAX_IN_FLIGHT at once."""
        await self.in_flight.acquire()
        task = asyncio.create_task(self._reconcile(key))
        self.tasks.add(task)
        task.add_done_callback(self._reconciled)

    def _reconciled(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.in_flight.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("reconcile died: %r", task.exception())

    async def _on_endpoints(self, msg: Msg) -> None:
        try:
            eps = endpoints_decoder.decode(msg.data)
        except msgspec.DecodeError as e:
            log.warning("malformed endpoints on %s dropped: %s", msg.subject, e)
            return
        key = f"{eps.namespace}/{eps.name}"
        self.endpoints[key] = eps
        if key in self.desired:
            await self._spawn_reconcile(key)

    async def _reconcile(self, key: str) -> None:
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            desired = self.desired[key]
            error: str | None = None
            try:
                await self.provider.apply(desired, self.endpoints.get(key))
            except NotReady as e:
                log.info("%s: weight %d waits: %s", key, desired.canary_weight, e)
                return
            except Exception as e:  # a router failure is reported, never confirmed
                log.exception("%s: applying weight %d failed", key, desired.canary_weight)
                error = str(e) or repr(e)
            if error is None and self.confirmed.get(key) == (desired.uid, desired.generation):
                return  # already confirmed (e.g. an endpoints change re-applied the same weights)
            confirmation = TrafficConfirmed(
                namespace=desired.namespace,
                name=desired.name,
                generation=desired.generation,
                canary_weight=desired.canary_weight,
                error=error,
                uid=desired.uid,
            )
            msg_id = f"tc.{desired.namespace}.{desired.name}.{desired.uid}.{desired.generation}" + (
                ".err" if error else ""
            )
            await self.conn.publish(
                subjects.feedback("traffic", desired.namespace, desired.name),
                encoder.encode(confirmation),
                headers={"Nats-Msg-Id": msg_id},
            )
            if error is None:
                self.confirmed[key] = (desired.uid, desired.generation)

    # --- admin / metrics HTTP -------------------------------------------------------------------

    def admin_app(self, samples: SampleRecorder | None = None) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/api/v1/rollouts", self._all_stats)
        app.router.add_get("/api/v1/services/{service}", self._service_stats)
        app.router.add_get("/metrics", self._metrics)
        if samples is not None:
            app.router.add_get("/api/v1/rollouts/{namespace}/{name}/samples", samples_handler(samples))
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        """Prometheus text exposition of the proxy counters (see services.traffic_shifter.metrics)."""
        # Imported here so that adding the route stays a single, self-contained edit of this module.
        from services.traffic_shifter.metrics import CONTENT_TYPE, render_prometheus

        text = render_prometheus(self.provider.stats(), self.desired)
        return web.Response(body=text.encode(), headers={"Content-Type": f"{CONTENT_TYPE}; charset=utf-8"})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _all_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=encoder.encode(self.provider.stats()), content_type="application/json")

    async def _service_stats(self, request: web.Request) -> web.Response:
        """Traffic stats of the revision a (canary or stable) service currently points at."""
        service = request.match_info["service"]
        found = self.services.get(service)
        if found is None:
            return web.json_response(
                {"error": f"service {service!r} is not known to the traffic-shifter"}, status=404
            )
        key, role = found
        desired = self.desired[key]
        revision = {"canary": desired.canary_revision, "preview": desired.preview_revision}.get(
            role, desired.stable_revision
        )
        listener = f"{key}{PREVIEW_SUFFIX}" if role == "preview" else key
        stats = self.provider.stats().get(listener)
        proxy_role = "stable" if role == "preview" else role  # the preview listener routes it as its stable
        entry = stats.find(revision, proxy_role) if stats is not None and revision else None
        requests = entry.requests if entry else 0
        errors = entry.errors5xx if entry else 0  # upstream failures are answered 502/504: counted
        body = {
            "service": service,
            "rollout": key,
            "role": role,
            "revision": revision,
            "weight": desired.canary_weight if role == "canary" else 100 - desired.canary_weight,
            "requests": requests,
            "errors": errors,
            "errorRate": errors / requests if requests else 0.0,
            "errorPercent": 100.0 * errors / requests if requests else 0.0,
            "latencyP99": entry.latency_p99 if entry else None,
        }
        return web.json_response(body)


async def run_traffic_shifter(
    conn: Connection,
    provider: TrafficProvider,
    stop: asyncio.Event,
    ready: asyncio.Event,
    *,
    admin_host: str,
    admin_port: int,
    drift_interval: float = 30.0,
) -> None:
    shifter = TrafficShifter(conn, provider)
    await shifter.start()
    samples = SampleRecorder()
    runner = web.AppRunner(shifter.admin_app(samples), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, admin_host, admin_port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else admin_port
    log.info("traffic-shifter admin on http://%s:%d", admin_host, bound)
    ready.set()
    # Per-second traffic samples for the canary judge; a failing snapshot is logged, never fatal.
    sampling = asyncio.create_task(samples.run(provider.stats, stop), name="traffic-samples")
    drift = asyncio.create_task(correct_drift(provider, stop, drift_interval), name="traffic-drift")
    try:
        await stop.wait()
    finally:
        for task in (sampling, drift):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.cleanup()
        await shifter.stop()


async def correct_drift(provider: TrafficProvider, stop: asyncio.Event, interval: float) -> None:
    """Put the desired weights back when someone edits the router by hand.

    Providers that can watch their objects (Kubernetes) react at once and are also re-checked
    every `interval` seconds; file-based ones (nginx) are checked every `interval` seconds. A
    failed check is logged and tried again, never fatal."""
    check = provider.check_drift if isinstance(provider, DriftChecker) else None
    watcher = (
        asyncio.create_task(provider.watch_drift(stop), name="drift-watch")
        if isinstance(provider, DriftWatcher)
        else None
    )
    try:
        while check is not None and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set():
                break
            try:
                corrected = await check()
                if corrected:
                    log.warning("router drift corrected: %s object(s) re-applied", int(corrected))
            except Exception:
                log.exception("drift check failed; trying again in %gs", interval)
        if watcher is not None:
            await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
