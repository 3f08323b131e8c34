"""The emulator's storage: objects per kind, one global resourceVersion, the watch history and live watchers.

All API-server write semantics live here (create/update/delete with preconditions, status isolation,
generation, no-op updates, finalizers); the HTTP layer in kube_api.py only parses requests and renders replies.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import datetime
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support import kube_errors as errors
from tests.support.kube_resources import ResourceTable, ResourceType
from tests.support.kube_selectors import Predicate

Obj = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace or "", name)


@dataclass
class Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    rt: ResourceType
    obj: Obj
    old: Obj | None = None


@dataclass(eq=False)
class Watcher:
    rt: ResourceType
    namespace: str | None
    predicate: Predicate
    queue: asyncio.Queue[tuple[str, Obj] | None] = field(default_factory=asyncio.Queue)

    def translate(self, event: Event) -> tuple[str, Obj] | None:
        """What this watcher sees of `event`: label changes turn MODIFIED into ADDED/DELETED, as a real cache does."""
        if event.rt is not self.rt:
            return None
        if self.namespace is not None and event.obj["metadata"].get("namespace") != self.namespace:
            return None
        now = self.predicate(event.obj)
        before = event.old is not None and self.predicate(event.old)
        if event.type == "MODIFIED":
            if now and before:
                return ("MODIFIED", event.obj)
            if now:
                return ("ADDED", event.obj)
            if before:
                return ("DELETED", event.obj)
            return None
        return (event.type, event.obj) if now else None


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_part(obj: Obj, *, status_separate: bool) -> Obj:
    """The part of an object whose change bumps metadata.generation."""
    ignored = {"metadata", "status"} if status_separate else {"metadata"}
    return {k: v for k, v in obj.items() if k not in ignored and k not in ("apiVersion", "kind")}


class Store:
    def __init__(self, table: ResourceTable) -> None:
        self.table = table
        self.rv = 0
        self.compacted_rv = 0
        self.objects: dict[tuple[str, str], dict[ObjKey, Obj]] = {}
        self.history: list[Event] = []
        self.watchers: set[Watcher] = set()
        self.listeners: list[Callable[[Event], None]] = []

    # --- reads ----------------------------------------------------------------------------------------------

    def _bucket(self, rt: ResourceType) -> dict[ObjKey, Obj]:
        return self.objects.setdefault(rt.key, {})

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        return self._bucket(rt).get((namespace or "", name))

    def require(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.get(rt, namespace, name)
        if obj is None:
            raise errors.not_found(rt, name)
        return obj

    def list(self, rt: ResourceType, namespace: str | None) -> list[Obj]:
        bucket = self._bucket(rt)
        return [bucket[k] for k in sorted(bucket) if namespace is None or k[0] == namespace]

    # --- writes ---------------------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _emit(self, type_: str, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        event = Event(int(obj["metadata"]["resourceVersion"]), type_, rt, obj, old)
        self.history.append(event)
        for watcher in list(self.watchers):
            seen = watcher.translate(event)
            if seen is not None:
                watcher.queue.put_nowait(seen)
        for listener in self.listeners:
            listener(event)

    def _check_namespace(self, rt: ResourceType, namespace: str | None, body: Obj) -> None:
        meta = body.setdefault("metadata", {})
        if not rt.namespaced:
            meta.pop("namespace", None)
            return
        given = meta.get("namespace")
        if given and namespace and given != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = given or namespace or "default"

    def create(self, rt: ResourceType, namespace: str | None, body: Obj, api_version: str) -> Obj:
        obj = copy.deepcopy(body)
        self._check_namespace(rt, namespace, obj)
        meta = obj["metadata"]
        if not meta.get("name"):
            if meta.get("generateName"):
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                meta["name"] = meta["generateName"] + suffix
            else:
                raise errors.invalid(
                    rt, "", "metadata.name", "Required value: name or generateName is required"
                )
        if self.get(rt, meta.get("namespace"), meta["name"]) is not None:
            raise errors.already_exists(rt, meta["name"])
        for system_field in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(system_field, None)
        if rt.status:
            obj.pop("status", None)
        obj["apiVersion"], obj["kind"] = api_version, rt.kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
        return self._store(rt, obj, None)

    def _store(self, rt: ResourceType, obj: Obj, old: Obj | None) -> Obj:
        obj["metadata"]["resourceVersion"] = self._next_rv()
        meta = obj["metadata"]
        self._bucket(rt)[(meta.get("namespace", ""), meta["name"])] = obj
        self._emit("ADDED" if old is None else "MODIFIED", rt, obj, old)
        return obj

    def update(
        self, rt: ResourceType, namespace: str | None, name: str, body: Obj, *, subresource: str | None = None
    ) -> Obj:
        """PUT semantics (also the last step of PATCH): preconditions, status isolation, generation, no-ops."""
        existing = self.require(rt, namespace, name)
        body = copy.deepcopy(body)
        self._check_namespace(rt, namespace, body)
        meta = body["metadata"]
        if meta.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        old_meta = existing["metadata"]
        if meta.get("resourceVersion") and meta["resourceVersion"] != old_meta["resourceVersion"]:
            raise errors.conflict(rt, name)
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise errors.conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: {old_meta['uid']}",
            )
        if subresource == "status":
            new = copy.deepcopy(existing)
            if "status" in body:
                new["status"] = body["status"]
            else:
                new.pop("status", None)
        else:
            new = body
            if rt.status:
                new.pop("status", None)
                if "status" in existing:
                    new["status"] = copy.deepcopy(existing["status"])
            new["apiVersion"], new["kind"] = existing["apiVersion"], existing["kind"]
            new_meta = new["metadata"]
            new_meta["name"] = name
            for system_field in (
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ):
                if system_field in old_meta:
                    new_meta[system_field] = old_meta[system_field]
                else:
                    new_meta.pop(system_field, None)
            if _spec_part(new, status_separate=rt.status) != _spec_part(existing, status_separate=rt.status):
                new_meta["generation"] = old_meta.get("generation", 0) + 1
        return self.write(rt, existing, new)

    def write(self, rt: ResourceType, existing: Obj, new: Obj) -> Obj:
        """Store `new` in place of `existing` unless nothing changed (a real server skips no-op writes)."""
        new["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        if new == existing:
            return existing
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._bucket(rt).pop((new["metadata"].get("namespace", ""), new["metadata"]["name"]), None)
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._emit("DELETED", rt, new, existing)
            return new
        return self._store(rt, new, existing)

    def delete(
        self, rt: ResourceType, namespace: str | None, name: str, preconditions: dict[str, Any] | None = None
    ) -> tuple[Obj, bool]:
        """Delete now, or mark for deletion while finalizers remain; returns (object, deleted now)."""
        existing = self.require(rt, namespace, name)
        meta = existing["metadata"]
        preconditions = preconditions or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise errors.conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: {meta['uid']}",
            )
        if (
            preconditions.get("resourceVersion")
            and preconditions["resourceVersion"] != meta["resourceVersion"]
        ):
            raise errors.conflict(
                rt,
                name,
                f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return existing, False
            marked = copy.deepcopy(existing)
            marked["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0)
            return self._store(rt, marked, existing), False
        del self._bucket(rt)[(meta.get("namespace", ""), name)]
        gone = copy.deepcopy(existing)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._emit("DELETED", rt, gone, existing)
        return gone, True

    def seed(self, rt: ResourceType, body: Obj) -> Obj:
        """Create or replace as given (status included): a test's backdoor, still visible to watchers."""
        obj = copy.deepcopy(body)
        self._check_namespace(rt, None, obj)
        meta = obj["metadata"]
        if not meta.get("name"):
            raise errors.invalid(rt, "", "metadata.name", "Required value: name or generateName is required")
        existing = self.get(rt, meta.get("namespace"), meta["name"])
        if existing is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_rfc3339())
            meta.setdefault("generation", 1)
            return self._store(rt, obj, None)
        old_meta = existing["metadata"]
        for system_field in ("uid", "creationTimestamp", "generation"):
            meta.setdefault(system_field, old_meta.get(system_field))
        if _spec_part(obj, status_separate=rt.status) != _spec_part(existing, status_separate=rt.status):
            meta["generation"] = max(meta.get("generation") or 0, (old_meta.get("generation") or 0) + 1)
        return self._store(rt, obj, existing)

    def edit(self, rt: ResourceType, namespace: str | None, name: str, fn: Callable[[Obj], None]) -> Obj:
        """A hand edit: `fn` mutates a copy (status too); generation bumps if the spec part changed."""
        existing = self.require(rt, namespace, name)
        new = copy.deepcopy(existing)
        fn(new)
        if _spec_part(new, status_separate=rt.status) != _spec_part(existing, status_separate=rt.status):
            new["metadata"]["generation"] = (existing["metadata"].get("generation") or 0) + 1
        new["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        return self._store(rt, new, existing)

    # --- watches --------------------------------------------------------------------------------------------

    def watch(
        self, rt: ResourceType, namespace: str | None, predicate: Predicate, resource_version: str | None
    ) -> tuple[builtins.list[tuple[str, Obj]], Watcher]:
        """Register a watcher and return what it must first replay (synchronously, so nothing slips between)."""
        watcher = Watcher(rt, namespace, predicate)
        if resource_version in (None, "", "0"):
            initial = [("ADDED", obj) for obj in self.list(rt, namespace) if predicate(obj)]
            initial.sort(key=lambda item: int(item[1]["metadata"]["resourceVersion"]))
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise errors.bad_request(f"invalid resource version: {resource_version!r}") from None
            if since < self.compacted_rv:
                raise errors.expired(resource_version, self.compacted_rv)
            initial = [
                seen for e in self.history if e.rv > since and (seen := watcher.translate(e)) is not None
            ]
        self.watchers.add(watcher)
        return initial, watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    def compact(self) -> None:
        self.history.clear()
        self.compacted_rv = self.rv

    def close_watchers(self) -> None:
        for watcher in list(self.watchers):
            watcher.queue.put_nowait(None)
