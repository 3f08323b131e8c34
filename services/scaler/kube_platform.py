"""Kubernetes mode for the scaler: one ReplicaSet per revision sized as the planner says, readiness
followed through a watch, Services switched to a revision once it can serve, pods restarted a few at
a time. The decisions live in services.scaler.kube_objects; this module only talks to the API server.

Restarts (`restart_at`): pods of the rollout created before it are deleted as Argo's pod restarter
does (at most max(maxUnavailable, 1) missing at once); their ReplicaSet recreates them. Pods are
deleted rather than evicted, so PodDisruptionBudgets are not consulted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Final

import msgspec
from kubernetes_asyncio import client as k8s

from services.scaler.changes import OnChange, notify
from services.scaler.kube_errors import KubeApiError, KubePlatformError, ServiceNotFoundError
from services.scaler.kube_objects import (
    DEFAULT_ROLLOUT_GROUP,
    POD_TEMPLATE_HASH_LABEL,
    ROLLOUT_VERSION,
    KubeObjectError,
    PodObject,
    ReplicaSetObject,
    ReplicaSetView,
    RolloutInfo,
    RolloutObject,
    ScaleChange,
    ServiceObject,
    desired_replicas,
    max_unavailable,
    may_select,
    plan_replica_sets,
    plan_restart,
    pod_view,
    ready_count,
    replica_set_view,
    rollout_info,
    selected_revision,
    service_patch,
)
from shared import kube_wire
from shared.kube_errors import KubeRequestError, WatchGone
from shared.messages import ScaleDesired
from shared.tasks import TaskGroup

log = logging.getLogger(__name__)


MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"


class _ListMeta(msgspec.Struct, kw_only=True, rename="camel"):
    resource_version: str = ""


class _ReplicaSetList(msgspec.Struct, kw_only=True):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[ReplicaSetObject] | None = None


class _PodList(msgspec.Struct, kw_only=True):
    items: list[PodObject] | None = None


def _newer(new: str, old: str) -> bool:
    """Whether resourceVersion `new` is not older than `old` (they are integers on every real server;
    anything else is taken as newer)."""
    try:
        return int(new) >= int(old)
    except ValueError:
        return True


class KubePlatform:
    """The scaler's ScalePlatform on a Kubernetes API server."""

    def __init__(
        self,
        api_client: Any,
        *,
        on_change: OnChange | None = None,
        rollout_group: str = DEFAULT_ROLLOUT_GROUP,
        watch_timeout: float = 300.0,  # seconds a watch request stays open before it is renewed
        sync_timeout: float = 30.0,  # seconds apply() waits for a namespace's first ReplicaSet list
        retry_delay: float = 1.0,  # seconds between attempts after a failed list or watch
        restart_check: float = 5.0,  # seconds between checks while pods wait to be restarted
        error_retry: float = 10.0,  # seconds before a rollout that failed to converge is tried again
    ) -> None:
        self.api_client = api_client
        # Every call passes _preload_content=False and gets the raw aiohttp response (decoded here with
        # msgspec), which the generated annotations do not describe: hence Any.
        self.apps: Any = k8s.AppsV1Api(api_client)
        self.core: Any = k8s.CoreV1Api(api_client)
        self.custom: Any = k8s.CustomObjectsApi(api_client)
        self.on_change = on_change
        self.rollout_group = rollout_group
        self.watch_timeout = watch_timeout
        self.sync_timeout = sync_timeout
        self.retry_delay = retry_delay
        self.restart_check = restart_check
        self.error_retry = error_retry
        self.tasks = TaskGroup("scaler")
        self.failed = self.tasks.failed  # set when a watch dies: the service should stop
        self._sets: dict[str, dict[str, ReplicaSetView]] = {}  # "ns/rollout" -> revision -> view
        self._desired: dict[str, ScaleDesired] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._watches: dict[str, asyncio.Task[Any]] = {}
        self._synced: dict[str, asyncio.Event] = {}
        self._watch_errors: dict[str, str] = {}
        self._pending: set[str] = set()  # rollouts waiting on a ReplicaSet change to go on converging
        self._dirty: set[str] = set()
        self._retries: dict[str, asyncio.Task[Any]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._restarted: dict[str, float] = {}  # restart_at whose restart is complete, per rollout
        self._failing: set[str] = set()  # rollouts whose last convergence failed (retried on a timer)

    # --- ScalePlatform -------------------------------------------------------------------------

    async def apply(self, desired: ScaleDesired) -> dict[str, int]:
        key = f"{desired.namespace}/{desired.name}"
        self._desired[key] = desired
        await self._ensure_synced(desired.namespace)
        async with self._lock(key):
            try:
                await self._converge(key)
            except (KubePlatformError, KubeObjectError):
                self._failed_converging(key)
                raise
            self._failing.discard(key)
        return self.ready(desired.namespace, desired.name)

    def ready(self, namespace: str, name: str) -> dict[str, int]:
        views = self._sets.get(f"{namespace}/{name}", {})
        return {rev: n for rev, v in views.items() if (n := ready_count(v)) > 0}

    def replica_sets(self, namespace: str, name: str) -> dict[str, ReplicaSetView]:
        """The rollout's ReplicaSets as last seen, per revision."""
        return dict(self._sets.get(f"{namespace}/{name}", {}))

    def endpoints(self, namespace: str, name: str) -> dict[str, list[str]] | None:
        return None  # Services route to pods; there are no addresses for a local proxy

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await self.tasks.cancel_all()

    # --- converging one rollout ------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _converge(self, key: str) -> None:
        desired = self._desired[key]
        ns, name = desired.namespace, desired.name
        rollout = await self._get_rollout(ns, name)
        services: dict[str, ServiceObject] = {}
        missing: list[str] = []
        for sel in desired.services:
            svc = await self._get_service(ns, sel.service)
            if svc is None:
                missing.append(
                    f'Service "{ns}/{sel.service}" not found '
                    f"(rollout {key} points it at revision {sel.revision})"
                )
            else:
                services[sel.service] = svc

        selected = {r for s in services.values() if (r := selected_revision(s))}
        plan = plan_replica_sets(desired, self._sets.get(key, {}), rollout, selected=selected)
        for body in plan.creates:
            await self._create_replica_set(ns, body)
        for change in plan.ups:
            await self._scale(ns, change)

        waiting = False
        wanted = {s.revision: s.replicas for s in desired.sets}
        for sel in desired.services:
            svc = services.get(sel.service)
            if svc is None:
                continue
            role = rollout.services.get(sel.service) if rollout else None
            view = self._sets.get(key, {}).get(sel.revision)
            if not may_select(role, view, wanted.get(sel.revision)):
                if selected_revision(svc) != sel.revision:
                    log.info(
                        "%s: delaying the switch of Service %s to %s: its ReplicaSet is not fully available",
                        key,
                        sel.service,
                        sel.revision,
                    )
                    waiting = True
                continue
            patch = service_patch(svc, sel.revision, name)
            if patch is not None:
                services[sel.service] = await self._patch_service(ns, sel.service, patch)
                log.info("%s: Service %s now selects revision %s", key, sel.service, sel.revision)

        # Scale-downs only now: a Service switched above no longer holds its old revision up.
        selected = {r for s in services.values() if (r := selected_revision(s))}
        plan = plan_replica_sets(desired, self._sets.get(key, {}), rollout, selected=selected)
        for change in plan.downs:
            await self._scale(ns, change)
        for rs_name in plan.deletes:
            await self._delete(
                f"ReplicaSet {ns}/{rs_name}",
                self.apps.delete_namespaced_replica_set(rs_name, ns, _preload_content=False),
            )
            log.info("%s: ReplicaSet %s deleted (beyond the revision history limit)", key, rs_name)
        waiting = waiting or bool(plan.held)

        if await self._restart(key, desired, rollout):
            self._schedule_check(key, self.restart_check)
        if waiting:
            self._pending.add(key)
        else:
            self._pending.discard(key)
        if missing:
            raise ServiceNotFoundError("; ".join(missing))

    async def _restart(self, key: str, desired: ScaleDesired, rollout: RolloutInfo | None) -> bool:
        """Deletes the pods due for a restart now; True while some still wait for their turn."""
        restart_at = max((s.restart_at for s in desired.sets if s.restart_at is not None), default=None)
        if restart_at is None or self._restarted.get(key) == restart_at:
            return False
        views = [v for v in self._sets.get(key, {}).values() if v.spec_replicas > 0 or v.replicas > 0]
        uids = {v.uid for v in views}
        pods = []
        for v in views:
            for obj in await self._list_pods(desired.namespace, f"{POD_TEMPLATE_HASH_LABEL}={v.revision}"):
                p = pod_view(obj)
                if uids.intersection(p.owner_uids):
                    pods.append(p)
        replicas = desired_replicas(desired, rollout)
        plan = plan_restart(
            pods,
            restart_at,
            replicas=replicas,
            total_replicas=sum(v.spec_replicas for v in views),
            max_unavailable=max_unavailable(rollout, replicas),
            min_ready_seconds=rollout.min_ready_seconds if rollout else 0,
            now=time.time(),
        )
        for pod in plan.delete:
            await self._delete(
                f"Pod {desired.namespace}/{pod}",
                self.core.delete_namespaced_pod(pod, desired.namespace, _preload_content=False),
            )
            log.info("%s: restarting pod %s (created before the restart)", key, pod)
        if plan.remaining == 0:
            self._restarted[key] = restart_at
            return False
        return True

    def _schedule_check(self, key: str, delay: float) -> None:
        """Converge `key` again in `delay` seconds, for what no ReplicaSet change may announce: pods deleted
        for a restart (Argo's restartPodCheckTime), a Service created after we failed to find it."""
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._on_timer, key)

    def _on_timer(self, key: str) -> None:
        self._timers.pop(key, None)
        self._kick(key)

    def _failed_converging(self, key: str) -> None:
        self._failing.add(key)
        self._schedule_check(key, self.error_retry)

    def _kick(self, key: str) -> None:
        """Converge `key` again soon (coalesced), outside the watch that noticed the change."""
        if key not in self._desired:
            return
        self._dirty.add(key)
        task = self._retries.get(key)
        if task is None or task.done():
            self._retries[key] = self.tasks.spawn(self._reconverge(key), name=f"converge:{key}")

    async def _reconverge(self, key: str) -> None:
        while key in self._dirty:
            self._dirty.discard(key)
            try:
                async with self._lock(key):
                    await self._converge(key)
            except (KubePlatformError, KubeObjectError) as e:
                log.warning("%s: %s", key, e)
                self._failed_converging(key)
                continue
            desired = self._desired.get(key)
            if key in self._failing and desired is not None and desired.sets:
                # Converged at last: a report now clears the error the scaler last published.
                self._failing.discard(key)
                await self._notify(key, desired.sets[0].revision)

    # --- following ReplicaSets ---------------------------------------------------------------------

    async def _ensure_synced(self, namespace: str) -> None:
        if namespace not in self._watches:
            self._synced[namespace] = asyncio.Event()
            self._watches[namespace] = self.tasks.spawn(self._watch(namespace), name=f"watch:{namespace}")
        synced, task = self._synced[namespace], self._watches[namespace]
        if synced.is_set():
            return
        if task.done():
            raise KubePlatformError(f"the ReplicaSet watch in namespace {namespace} has stopped")
        try:
            async with asyncio.timeout(self.sync_timeout):
                await synced.wait()
        except TimeoutError:
            error = self._watch_errors.get(namespace, "no answer")
            raise KubePlatformError(
                f"ReplicaSets in namespace {namespace} could not be listed within {self.sync_timeout:g}s: {error}"
            ) from None

    async def _watch(self, namespace: str) -> None:
        """List, then watch from the list's resourceVersion; on 410 Gone list again."""
        version: str | None = None
        while True:
            started = time.monotonic()
            events = 0
            try:
                if version is None:
                    version = await self._relist(namespace)
                    self._synced[namespace].set()
                async for kind, obj in self._stream(namespace, version):
                    events += 1
                    if obj.metadata.resource_version:
                        version = obj.metadata.resource_version
                    if kind != "BOOKMARK":
                        await self._observe(namespace, kind, obj)
                self._watch_errors.pop(namespace, None)
            except WatchGone:
                log.info(
                    "ReplicaSet watch in %s: resourceVersion %s expired, listing again", namespace, version
                )
                version = None
                continue
            except KubePlatformError as e:
                self._watch_errors[namespace] = str(e)
                log.warning("ReplicaSet watch in %s failed, retrying: %s", namespace, e)
                await asyncio.sleep(self.retry_delay)
                continue
            if events == 0 and time.monotonic() - started < 1.0:
                await asyncio.sleep(self.retry_delay)  # a server that closes at once must not make us spin

    async def _relist(self, namespace: str) -> str:
        body = await self._send(
            f"list ReplicaSets in {namespace}",
            self.apps.list_namespaced_replica_set(
                namespace, label_selector=POD_TEMPLATE_HASH_LABEL, _preload_content=False
            ),
        )
        listed = msgspec.json.decode(body, type=_ReplicaSetList)
        seen: set[tuple[str, str]] = set()
        for obj in listed.items or []:
            view = replica_set_view(obj)
            if view is not None:
                seen.add((view.rollout, view.revision))
            await self._observe(namespace, "MODIFIED", obj, force=True)
        prefix = f"{namespace}/"
        for key, views in list(self._sets.items()):
            if not key.startswith(prefix):
                continue
            for revision, view in list(views.items()):
                if (view.rollout, revision) not in seen:
                    await self._forget(key, revision)
        return listed.metadata.resource_version

    async def _stream(self, namespace: str, version: str) -> AsyncIterator[tuple[str, ReplicaSetObject]]:
        call = self.apps.list_namespaced_replica_set(
            namespace,
            label_selector=POD_TEMPLATE_HASH_LABEL,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=version,
            timeout_seconds=max(1, int(self.watch_timeout)),
            _preload_content=False,
            _request_timeout=(self.sync_timeout, self.watch_timeout + 30),
        )
        try:
            async for event in kube_wire.watch_events(
                f"watch ReplicaSets in {namespace}", call, ReplicaSetObject
            ):
                yield event
        except KubeRequestError as e:
            raise _platform_error(e) from None

    async def _observe(
        self, namespace: str, kind: str, obj: ReplicaSetObject, *, force: bool = False
    ) -> None:
        """Takes in what the server says a ReplicaSet now is (from the watch or a write's response)."""
        view = replica_set_view(obj)
        if view is None:
            return
        key = f"{namespace}/{view.rollout}"
        if kind == "DELETED":
            await self._forget(key, view.revision)
            return
        views = self._sets.setdefault(key, {})
        old = views.get(view.revision)
        if old is not None and not force and not _newer(view.resource_version, old.resource_version):
            return  # an event older than a write's response we already hold
        views[view.revision] = view
        await self._changed(key, view.revision, old, view)

    async def _forget(self, key: str, revision: str) -> None:
        views = self._sets.get(key, {})
        old = views.pop(revision, None)
        if not views:
            self._sets.pop(key, None)
        if old is not None:
            await self._changed(key, revision, old, None)

    async def _changed(
        self, key: str, revision: str, old: ReplicaSetView | None, new: ReplicaSetView | None
    ) -> None:
        if old == new:
            return
        if key in self._pending or self._lock(key).locked():
            # Also while a convergence is under way: it may already have judged this ReplicaSet
            # unavailable and be about to wait for a change that has just happened.
            self._kick(key)
        before = ready_count(old) if old else 0
        after = ready_count(new) if new else 0
        if before != after:
            await self._notify(key, revision)

    async def _notify(self, key: str, revision: str) -> None:
        await notify(self.on_change, key, revision)

    # --- requests ------------------------------------------------------------------------------------

    async def _send(self, what: str, call: Awaitable[Any]) -> bytes:
        """Runs one request made with _preload_content=False: the body on 2xx, else KubeApiError."""
        try:
            _, body = await kube_wire.send(what, call)
        except KubeRequestError as e:
            raise _platform_error(e) from None
        return body

    async def _get_rollout(self, namespace: str, name: str) -> RolloutInfo | None:
        try:
            body = await self._send(
                f"get Rollout {namespace}/{name}",
                self.custom.get_namespaced_custom_object(
                    self.rollout_group, ROLLOUT_VERSION, namespace, "rollouts", name, _preload_content=False
                ),
            )
        except KubeApiError as e:
            if e.status == 404:
                return None
            raise
        obj = msgspec.json.decode(body, type=RolloutObject)
        if not obj.api_version:
            obj.api_version = f"{self.rollout_group}/{ROLLOUT_VERSION}"
        return rollout_info(obj)

    async def _get_service(self, namespace: str, name: str) -> ServiceObject | None:
        try:
            body = await self._send(
                f"get Service {namespace}/{name}",
                self.core.read_namespaced_service(name, namespace, _preload_content=False),
            )
        except KubeApiError as e:
            if e.status == 404:
                return None
            raise
        return msgspec.json.decode(body, type=ServiceObject)

    async def _patch_service(self, namespace: str, name: str, patch: dict[str, Any]) -> ServiceObject:
        body = await self._send(
            f"patch Service {namespace}/{name}",
            self.core.patch_namespaced_service(
                name, namespace, patch, _content_type=STRATEGIC_MERGE_PATCH, _preload_content=False
            ),
        )
        return msgspec.json.decode(body, type=ServiceObject)

    async def _create_replica_set(self, namespace: str, rs: dict[str, Any]) -> None:
        name = rs["metadata"]["name"]
        what = f"create ReplicaSet {namespace}/{name}"
        try:
            body = await self._send(
                what, self.apps.create_namespaced_replica_set(namespace, rs, _preload_content=False)
            )
            log.info("%s/%s: created ReplicaSet %s", namespace, name, name)
        except KubeApiError as e:
            if e.status != 409:
                raise
            # Created by an earlier attempt whose response we did not see (or our cache is behind).
            body = await self._send(
                f"get ReplicaSet {namespace}/{name}",
                self.apps.read_namespaced_replica_set(name, namespace, _preload_content=False),
            )
        await self._observe(namespace, "MODIFIED", msgspec.json.decode(body, type=ReplicaSetObject))

    async def _scale(self, namespace: str, change: ScaleChange) -> None:
        body = await self._send(
            f"scale ReplicaSet {namespace}/{change.name} to {change.replicas}",
            self.apps.patch_namespaced_replica_set(
                change.name, namespace, change.patch, _content_type=MERGE_PATCH, _preload_content=False
            ),
        )
        log.info("%s: ReplicaSet %s scaled to %d", namespace, change.name, change.replicas)
        await self._observe(namespace, "MODIFIED", msgspec.json.decode(body, type=ReplicaSetObject))

    async def _delete(self, what: str, call: Awaitable[Any]) -> None:
        try:
            await self._send(f"delete {what}", call)
        except KubeApiError as e:
            if e.status != 404:
                raise

    async def _list_pods(self, namespace: str, selector: str) -> list[PodObject]:
        body = await self._send(
            f"list Pods in {namespace} ({selector})",
            self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False),
        )
        return msgspec.json.decode(body, type=_PodList).items or []


def _platform_error(e: KubeRequestError) -> KubeApiError:
    return KubeApiError(e.what, e.status, e.reason, e.message)
