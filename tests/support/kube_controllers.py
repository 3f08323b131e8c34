"""Emulated cluster controllers: ReplicaSet and Job status, owner-reference garbage collection, CRD registration.

Each status computation is a pure function; `ControllerEmulation` reacts to store events by scheduling a task
that writes the new status through the status path (a MODIFIED event), after the triggering request returned.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Coroutine
from typing import Any

from tests.support.kube_resources import ResourceTable, ResourceType
from tests.support.kube_store import Event, Obj, Store, now_rfc3339

RESULT_ANNOTATION = "emulator/result"


def replicaset_status(rs: Obj, *, hold_ready: bool) -> dict[str, Any]:
    """The status the ReplicaSet controller would write: every replica becomes ready at once, unless held."""
    replicas = rs.get("spec", {}).get("replicas", 1)
    current = rs.get("status") or {}
    ready = min(current.get("readyReplicas", 0), replicas) if hold_ready else replicas
    available = min(current.get("availableReplicas", 0), ready) if hold_ready else ready
    status: dict[str, Any] = {"replicas": replicas}
    # The real controller omits zero-valued optional counts (omitempty).
    for key, value in (
        ("fullyLabeledReplicas", replicas),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("observedGeneration", rs["metadata"].get("generation", 0)),
    ):
        if value:
            status[key] = value
    return status


def _condition(type_: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    now = now_rfc3339()
    condition: dict[str, Any] = {
        "type": type_,
        "status": "True",
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def job_finished(job: Obj) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def job_next_status(job: Obj) -> dict[str, Any] | None:
    """The Job controller's next status: first the pod starts (active=1), then it succeeds or fails.

    The annotation `emulator/result` chooses: "fail" → Failed, "running" → stays active, otherwise Complete.
    """
    if job_finished(job):
        return None
    status = copy.deepcopy(job.get("status") or {})
    result = (job["metadata"].get("annotations") or {}).get(RESULT_ANNOTATION, "succeed")
    if not status.get("startTime"):
        status.update(startTime=now_rfc3339(), active=1, ready=0, terminating=0, uncountedTerminatedPods={})
        return status
    if result == "running":
        return None
    status.pop("active", None)
    if result == "fail":
        message = "Job has reached the specified backoff limit"
        status["failed"] = 1
        status["conditions"] = [
            _condition("FailureTarget", "BackoffLimitExceeded", message),
            _condition("Failed", "BackoffLimitExceeded", message),
        ]
    else:
        status.update(succeeded=1, completionTime=now_rfc3339())
        status["conditions"] = [
            _condition(
                "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"
            ),
            _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
        ]
    return status


def register_crd(table: ResourceTable, crd: Obj) -> None:
    """Serve the kind a CustomResourceDefinition describes, as the apiextensions server does once it is created."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        rt = table.register(
            spec.get("group", ""),
            version["name"],
            names.get("plural", ""),
            names.get("kind", ""),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            status="status" in subresources,
            scale="scale" in subresources,
            custom=True,
        )
        scale = subresources.get("scale")
        if scale:
            rt.spec_replicas_path = scale.get("specReplicasPath", ".spec.replicas").lstrip(".")
            rt.status_replicas_path = scale.get("statusReplicasPath", ".status.replicas").lstrip(".")
            path = scale.get("labelSelectorPath")
            rt.label_selector_path = path.lstrip(".") if path else None


class ControllerEmulation:
    """Schedules the emulated controllers' reconciles on store events; one pending reconcile per object."""

    def __init__(self, store: Store, table: ResourceTable) -> None:
        self.store = store
        self.table = table
        self.replicaset_controller = True
        self.job_controller = True
        self.garbage_collector = True
        # Seconds a controller waits before writing, to let a test observe the intermediate state.
        self.delay = 0.0
        self.held: set[tuple[str, str]] = set()
        self._pending: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        store.listeners.append(self.on_event)

    def on_event(self, event: Event) -> None:
        key = event.rt.key
        if key == ("apiextensions.k8s.io", "customresourcedefinitions") and event.type != "DELETED":
            register_crd(self.table, event.obj)
        elif event.type == "DELETED":
            if self.garbage_collector:
                self._spawn(("gc", "", event.obj["metadata"].get("uid", "")), self._collect_garbage())
            return
        elif key == ("apps", "replicasets") and self.replicaset_controller:
            self._schedule(event.rt, event.obj)
        elif key == ("batch", "jobs") and self.job_controller:
            self._schedule(event.rt, event.obj)

    def _schedule(self, rt: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        key = (rt.plural, meta.get("namespace", ""), meta["name"])
        self._spawn(key, self._reconcile(rt, key[1], key[2]))

    def _spawn(self, key: tuple[str, str, str], work: Coroutine[Any, Any, None]) -> None:
        if key in self._pending and not self._pending[key].done():
            work.close()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work.close()
            return  # seeded before the server started: reconciled when the next write happens
        self._pending[key] = loop.create_task(work)

    async def _collect_garbage(self) -> None:
        """Delete objects all of whose owners are gone (background propagation), like the garbage collector."""
        await asyncio.sleep(0)
        alive = {obj["metadata"].get("uid") for rt in self.table.all() for obj in self.store.list(rt, None)}
        for rt in self.table.all():
            for obj in self.store.list(rt, None):
                owners = [ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []]
                if owners and not any(uid in alive for uid in owners):
                    meta = obj["metadata"]
                    if self.store.get(rt, meta.get("namespace"), meta["name"]) is not None:
                        self.store.delete(rt, meta.get("namespace"), meta["name"])

    async def _reconcile(self, rt: ResourceType, namespace: str, name: str) -> None:
        await asyncio.sleep(self.delay)
        # Let the triggering reply go out first, as a separate controller process would.
        await asyncio.sleep(0)
        obj = self.store.get(rt, namespace, name)
        if obj is None:
            return
        if rt.plural == "replicasets":
            if not self.replicaset_controller:
                return
            status = replicaset_status(obj, hold_ready=(namespace, name) in self.held)
        else:
            if not self.job_controller:
                return
            next_status = job_next_status(obj)
            if next_status is None:
                return
            status = next_status
        if status != obj.get("status"):
            self._pending.pop((rt.plural, namespace, name), None)
            self.store.update(rt, namespace, name, {**obj, "status": status}, subresource="status")

    def hold(self, namespace: str, name: str) -> None:
        self.held.add((namespace, name))

    def release(self, namespace: str, name: str) -> None:
        self.held.discard((namespace, name))
        rt = self.table.find("apps", "v1", "replicasets")
        obj = self.store.get(rt, namespace, name) if rt else None
        if rt is not None and obj is not None:
            self._schedule(rt, obj)

    async def settle(self) -> None:
        """Wait until no reconcile is pending (including reconciles that the awaited ones triggered)."""
        while tasks := [t for t in self._pending.values() if not t.done()]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        tasks = [t for t in self._pending.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()
