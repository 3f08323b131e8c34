"""The scaler: sizes each revision's replica set to the planner's desired counts and reports what is ready.

Desired counts arrive on a last-value stream (one message per rollout); the scaler converges
on the newest one and reports ready replicas (and, in local mode, their endpoints).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, Protocol

import msgspec
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from services.scaler.kube_errors import KubePlatformError
from services.scaler.local_platform import LocalProcessPlatform, ReplicaStartError, ReplicaTemplate
from shared import subjects
from shared.jetstream import Connection
from shared.messages import (
    Endpoints,
    ReplicaSetDesired,
    ReplicaSetObserved,
    ScaleDesired,
    ScaleObserved,
    encoder,
    scale_decoder,
)

log = logging.getLogger(__name__)


class TemplateError(ValueError):
    """The pod template cannot run on this platform; names the field at fault."""


class ScalePlatform(Protocol):
    async def apply(self, desired: ScaleDesired) -> dict[str, int]:
        """Converge every revision of the rollout to the desired counts; ready replicas per revision."""
        ...

    def ready(self, namespace: str, name: str) -> dict[str, int]: ...

    def endpoints(self, namespace: str, name: str) -> dict[str, list[str]] | None: ...

    async def close(self) -> None: ...


class NoopPlatform:
    """Every replica is ready at once: for benchmarks of the planner and for dry runs."""

    def __init__(self) -> None:
        self.state: dict[str, dict[str, int]] = {}

    async def apply(self, desired: ScaleDesired) -> dict[str, int]:
        ready = {s.revision: s.replicas for s in desired.sets}
        self.state[f"{desired.namespace}/{desired.name}"] = ready
        return ready

    def ready(self, namespace: str, name: str) -> dict[str, int]:
        return dict(self.state.get(f"{namespace}/{name}", {}))

    def endpoints(self, namespace: str, name: str) -> dict[str, list[str]] | None:
        return None

    async def close(self) -> None:
        return None


def replica_template(template: dict[str, Any], *, readiness_timeout: float) -> ReplicaTemplate:
    """A pod template's first container as a local process: command + args, env, readiness probe."""
    containers = (template.get("spec") or {}).get("containers") or []
    if not containers:
        raise TemplateError("spec.template.spec.containers: at least one container is required")
    c = containers[0]
    command = list(c.get("command") or [])
    args = [str(a) for a in c.get("args") or []]
    if not command and not args:
        raise TemplateError(
            "spec.template.spec.containers[0].command: local mode runs the container's command; none is given"
        )
    if not command:
        command, args = args[:1], args[1:]
    env = tuple((str(e["name"]), str(e.get("value", ""))) for e in c.get("env") or [] if "name" in e)
    probe = c.get("readinessProbe") or {}
    http_get = probe.get("httpGet")
    return ReplicaTemplate(
        command=tuple(command),
        args=tuple(args),
        env=env,
        readiness_path=(http_get.get("path") or "/") if http_get else None,
        readiness_scheme=(http_get.get("scheme") or "HTTP") if http_get else "HTTP",
        readiness_initial_delay=float(probe.get("initialDelaySeconds") or 0),
        readiness_period=min(float(probe.get("periodSeconds") or 0.1), 0.5),
        readiness_timeout=readiness_timeout,
    )


class LocalPlatform:
    """Replicas as local processes (services.scaler.local_platform)."""

    def __init__(self, *, log_dir: Path | None, readiness_timeout: float, on_change: Any = None) -> None:
        self.readiness_timeout = readiness_timeout
        self.processes = LocalProcessPlatform(log_dir=log_dir, on_change=on_change)

    async def apply(self, desired: ScaleDesired) -> dict[str, int]:
        key = f"{desired.namespace}/{desired.name}"
        wanted = {s.revision: s for s in desired.sets}
        running = {r.revision for r in self.processes.replicas(key)}
        errors: list[str] = []

        async def converge(rev: str, rs: ReplicaSetDesired | None) -> None:
            try:
                if rs is None:
                    await self.processes.scale(key, rev, ReplicaTemplate(command=("true",)), 0)
                    return
                tmpl = replica_template(rs.template, readiness_timeout=self.readiness_timeout)
                await self.processes.scale(key, rev, tmpl, rs.replicas)
                if rs.restart_at is not None:
                    await self.processes.restart(key, rev, tmpl, before=rs.restart_at)
            except (TemplateError, ReplicaStartError) as e:
                errors.append(f"revision {rev}: {e}")

        # Scale-ups first and in parallel; revisions no longer wanted go last.
        await asyncio.gather(*(converge(rev, rs) for rev, rs in wanted.items()))
        await asyncio.gather(*(converge(rev, None) for rev in running - set(wanted)))
        if errors:
            raise TemplateError("; ".join(errors))
        return self.ready(desired.namespace, desired.name)

    def ready(self, namespace: str, name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.processes.replicas(f"{namespace}/{name}"):
            if r.ready:
                out[r.revision] = out.get(r.revision, 0) + 1
        return out

    def endpoints(self, namespace: str, name: str) -> dict[str, list[str]] | None:
        out: dict[str, list[str]] = {}
        for r in self.processes.replicas(f"{namespace}/{name}"):
            if r.ready:
                out.setdefault(r.revision, []).append(r.address)
        return out

    async def close(self) -> None:
        await self.processes.stop_all()


class Scaler:
    def __init__(self, conn: Connection, platform: ScalePlatform) -> None:
        self.conn = conn
        self.platform = platform
        self.latest: dict[str, ScaleDesired] = {}
        self.workers: dict[str, asyncio.Task[None]] = {}
        self.wake: dict[str, asyncio.Event] = {}
        self.subs: list[Any] = []

    async def start(self) -> None:
        self.subs.append(
            await self.conn.js.subscribe(
                subjects.SCALE_WILDCARD,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                cb=self._on_desired,
            )
        )
        log.info("scaler started")

    async def stop(self) -> None:
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for t in self.workers.values():
            t.cancel()
        await asyncio.gather(*self.workers.values(), return_exceptions=True)
        await self.platform.close()

    async def _on_desired(self, msg: Msg) -> None:
        try:
            desired = scale_decoder.decode(msg.data)
        except msgspec.DecodeError as e:
            log.warning("malformed desired scale on %s dropped: %s", msg.subject, e)
            return
        key = f"{desired.namespace}/{desired.name}"
        current = self.latest.get(key)
        if current is not None and current.uid == desired.uid and current.generation > desired.generation:
            return
        self.latest[key] = desired
        self.wake.setdefault(key, asyncio.Event()).set()
        if key not in self.workers or self.workers[key].done():
            self.workers[key] = asyncio.create_task(self._worker(key), name=f"scaler:{key}")

    async def _worker(self, key: str) -> None:
        """Converges one rollout, always on its newest desired state."""
        wake = self.wake[key]
        while True:
            await wake.wait()
            wake.clear()
            desired = self.latest[key]
            error: str | None = None
            try:
                await self.platform.apply(desired)
            except (TemplateError, KubePlatformError) as e:
                error = str(e)
                log.warning("%s: %s", key, error)
            except Exception as e:
                error = repr(e)
                log.exception("%s: scaling failed", key)
            await self.report(desired.namespace, desired.name, error=error)

    async def report(self, namespace: str, name: str, *, error: str | None = None) -> None:
        key = f"{namespace}/{name}"
        desired = self.latest.get(key)
        if desired is None:
            return
        ready = self.platform.ready(namespace, name)
        eps = self.platform.endpoints(namespace, name)
        if eps is not None:
            await self.conn.publish(
                subjects.endpoints(namespace, name),
                encoder.encode(Endpoints(namespace=namespace, name=name, revisions=eps)),
            )
        observed = ScaleObserved(
            namespace=namespace,
            name=name,
            generation=desired.generation,
            uid=desired.uid,
            sets=tuple(
                ReplicaSetObserved(revision=s.revision, desired=s.replicas, ready=ready.get(s.revision, 0))
                for s in desired.sets
            ),
            error=error,
        )
        await self.conn.publish(subjects.feedback("scale", namespace, name), encoder.encode(observed))

    async def on_replica_change(self, key: str, revision: str) -> None:
        """A replica became ready, died or was restarted: report the new truth."""
        namespace, _, name = key.partition("/")
        try:
            await self.report(namespace, name)
        except Exception:
            log.exception("%s: reporting a replica change failed", key)


async def run_scaler(
    conn: Connection,
    stop: asyncio.Event,
    ready: asyncio.Event,
    *,
    platform: str,
    log_dir: Path,
    readiness_timeout: float,
    kube_api: Any = None,
    api_group: str = "argoproj.io",
) -> None:
    scaler: Scaler
    failed: asyncio.Event | None = None
    if platform == "noop":
        scaler = Scaler(conn, NoopPlatform())
    elif platform == "kubernetes":
        from services.scaler.kube_platform import KubePlatform

        kube_holder: list[Scaler] = []

        async def on_kube_change(key: str, revision: str) -> None:
            if kube_holder:
                await kube_holder[0].on_replica_change(key, revision)

        kube = KubePlatform(kube_api, on_change=on_kube_change, rollout_group=api_group)
        failed = kube.failed
        scaler = Scaler(conn, kube)
        kube_holder.append(scaler)
    else:
        holder: list[Scaler] = []

        async def on_change(key: str, revision: str) -> None:
            if holder:
                await holder[0].on_replica_change(key, revision)

        scaler = Scaler(
            conn, LocalPlatform(log_dir=log_dir, readiness_timeout=readiness_timeout, on_change=on_change)
        )
        holder.append(scaler)
    await scaler.start()
    ready.set()
    try:
        if failed is None:
            await stop.wait()
        else:  # a dead ReplicaSet watch would leave ready counts stale: stop and let it restart
            waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(failed.wait())}
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in pending:
                w.cancel()
            if failed.is_set():
                raise RuntimeError("the Kubernetes ReplicaSet watch died")
    finally:
        await scaler.stop()
