"""A small, faithful Kubernetes API server emulator over HTTP (aiohttp), for testing adapters at the wire level.

    async with KubeEmulator() as kube:
        async with kube.api_client() as api:
            await client.AppsV1Api(api).create_namespaced_replica_set("default", body)   # 201

It serves the kinds in kube_resources.py (add more with `kube.register(...)` or by creating a CRD) with the
real server's semantics: 201 on create, 409 AlreadyExists / Conflict (stale metadata.resourceVersion), one
global resourceVersion, generation bumped only by spec changes, status and scale subresources, merge / JSON /
strategic-merge patches (415 for strategic merge on custom resources), no-op writes skipped, finalizers,
label/field selectors, and watches (`watch=true|True|1`, resume from a resourceVersion, 410 Expired after
`compact()`, end after `timeoutSeconds`). Every request is recorded in `kube.requests`.

Emulated controllers (each writes through the status path after the triggering reply, emitting MODIFIED):
- ReplicaSet (`kube.replicaset_controller`, default on): status.replicas/ready/available follow spec.replicas;
  `kube.hold_ready(ns, name)` freezes the ready counts, so `kube.edit(...)` of them sticks (pods going unready).
- Job (`kube.job_controller`, default on): active, then Complete; annotation `emulator/result: fail` → Failed,
  `running` → stays active.
- Garbage collector (`kube.garbage_collector`, default on): deleting an owner deletes its dependents.
- Creating a CustomResourceDefinition serves its kind.
`await kube.settle()` waits until none of them has work pending.

Content types kubernetes_asyncio 36 sends (ApiClient.select_header_content_type):
- create_* / replace_* (typed and CustomObjectsApi): application/json.
- typed patch_* (CoreV1Api, AppsV1Api, BatchV1Api, ... incl. *_status and *_scale): a list body →
  application/json-patch+json; a dict or model body → application/strategic-merge-patch+json.
- CustomObjectsApi.patch_*_custom_object[_status|_scale]: ALWAYS application/json-patch+json unless told
  otherwise, even for a dict body (it offers json-patch and merge-patch only and falls back to the first), which
  a real server rejects with 400. Send merge patches with `_content_type="application/merge-patch+json"`.
- Any call can force a type with `_content_type=...`.
- Watch().stream(list_fn, ...) sends `watch=True` (capital T) and, when given, `timeoutSeconds`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web
from kubernetes_asyncio import client

from tests.support import kube_errors as errors
from tests.support.kube_controllers import ControllerEmulation
from tests.support.kube_discovery import api_group, api_group_list, api_resource_list
from tests.support.kube_errors import ApiError
from tests.support.kube_patches import (
    PatchError,
    PatchFormatError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from tests.support.kube_resources import ResourceTable, ResourceType
from tests.support.kube_scale import scale_of, set_nested
from tests.support.kube_selectors import SelectorError, field_selector, label_selector
from tests.support.kube_store import Obj, Store

logger = logging.getLogger(__name__)

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
TRUE_VALUES = frozenset({"1", "t", "T", "true", "True", "TRUE"})
# A real server ends a watch without timeoutSeconds after a random 30-60 min; tests never wait that long.
DEFAULT_WATCH_SECONDS = 1800.0


@dataclass
class Recorded:
    """One request as the emulator received it."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass
class Target:
    """What a request path names: a kind, maybe a namespace, maybe an object and a subresource."""

    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None


class KubeEmulator:
    def __init__(self) -> None:
        self.table = ResourceTable.with_defaults()
        self.store = Store(self.table)
        self.controllers = ControllerEmulation(self.store, self.table)
        self.requests: list[Recorded] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._closing = False

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def __aenter__(self) -> KubeEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        self._closing = True
        self.store.close_watchers()
        await self.controllers.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- client helpers -------------------------------------------------------------------------------------

    def configuration(self) -> client.Configuration:
        return client.Configuration(host=self.url)

    def api_client(self) -> client.ApiClient:
        return client.ApiClient(configuration=self.configuration())

    # --- test-side API --------------------------------------------------------------------------------------

    def register(
        self,
        group: str,
        version: str,
        plural: str,
        kind: str,
        namespaced: bool = True,
        status: bool = True,
        scale: bool = False,
    ) -> ResourceType:
        """Serve one more kind (or one more version of a kind), e.g. `kube.register("example.io", "v1", "widgets", "Widget")`."""
        return self.table.register(
            group, version, plural, kind, namespaced=namespaced, status=status, scale=scale
        )

    def _rt(self, api_version: str, plural: str) -> tuple[ResourceType, str]:
        group, _, version = api_version.rpartition("/")
        rt = self.table.find(group, version, plural)
        if rt is None:
            raise KeyError(
                f"the emulator serves no {plural!r} in {api_version!r}; add it with kube.register(...)"
            )
        return rt, version

    def seed(self, obj: Obj) -> Obj:
        """Create or replace any object as given (status included); emits ADDED or MODIFIED."""
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        rt = self.table.find_kind(api_version, kind)
        if rt is None:
            raise KeyError(
                f"the emulator serves no kind {kind!r} in {api_version!r}; add it with kube.register(...)"
            )
        return self._render(self.store.seed(rt, obj), rt, api_version.rpartition("/")[2])

    def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Obj | None:
        rt, version = self._rt(api_version, plural)
        obj = self.store.get(rt, namespace if rt.namespaced else None, name)
        return None if obj is None else self._render(obj, rt, version)

    def list(self, api_version: str, plural: str, namespace: str | None = None) -> list[Obj]:
        rt, version = self._rt(api_version, plural)
        return [self._render(obj, rt, version) for obj in self.store.list(rt, namespace)]

    def edit(
        self, api_version: str, plural: str, namespace: str | None, name: str, fn: Callable[[Obj], None]
    ) -> Obj:
        """Simulate a hand edit: `fn` mutates a copy (status too); bumps resourceVersion (and generation on spec)."""
        rt, version = self._rt(api_version, plural)
        return self._render(self.store.edit(rt, namespace if rt.namespaced else None, name, fn), rt, version)

    def delete(self, api_version: str, plural: str, namespace: str | None, name: str) -> None:
        rt, _ = self._rt(api_version, plural)
        self.store.delete(rt, namespace if rt.namespaced else None, name)

    def compact(self) -> None:
        """Forget the watch history: watching from an older resourceVersion now yields 410 Expired."""
        self.store.compact()

    @property
    def resource_version(self) -> str:
        return str(self.store.rv)

    @property
    def replicaset_controller(self) -> bool:
        return self.controllers.replicaset_controller

    @replicaset_controller.setter
    def replicaset_controller(self, enabled: bool) -> None:
        self.controllers.replicaset_controller = enabled

    @property
    def job_controller(self) -> bool:
        return self.controllers.job_controller

    @job_controller.setter
    def job_controller(self, enabled: bool) -> None:
        self.controllers.job_controller = enabled

    @property
    def garbage_collector(self) -> bool:
        return self.controllers.garbage_collector

    @garbage_collector.setter
    def garbage_collector(self, enabled: bool) -> None:
        self.controllers.garbage_collector = enabled

    async def settle(self) -> None:
        """Wait until the emulated controllers have nothing left to do (no pending status writes or collection)."""
        await self.controllers.settle()

    def hold_ready(self, namespace: str, name: str) -> None:
        """Freeze a ReplicaSet's ready/available counts (status.replicas still follows spec.replicas)."""
        self.controllers.hold(namespace, name)

    def release_ready(self, namespace: str, name: str) -> None:
        self.controllers.release(namespace, name)

    def requests_to(self, method: str, path_prefix: str = "") -> builtins.list[Recorded]:
        """The recorded requests with this method whose path starts with `path_prefix`."""
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # --- HTTP -----------------------------------------------------------------------------------------------

    @staticmethod
    def _render(obj: Obj, rt: ResourceType, version: str) -> Obj:
        out = copy.deepcopy(obj)
        out["apiVersion"], out["kind"] = rt.api_version(version), rt.kind
        return out

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        content_type = request.headers.get("Content-Type", "")
        body: Any = None
        decode_error: str | None = None
        if raw:
            try:
                body = yaml.safe_load(raw) if "yaml" in content_type else json.loads(raw)
            except (ValueError, yaml.YAMLError) as exc:
                decode_error = f"error decoding body: {exc}"
        self.requests.append(Recorded(request.method, request.path, dict(request.query), content_type, body))
        try:
            if self._closing:
                raise ApiError(503, "ServiceUnavailable", "the emulated API server is shutting down")
            if decode_error is not None:
                raise errors.bad_request(decode_error)
            return await self._dispatch(request, body, content_type)
        except ApiError as exc:
            return web.json_response(exc.status(), status=exc.code)
        except Exception as exc:  # an emulator bug: answer like a server's InternalError, and keep the trace
            logger.exception("emulator failed on %s %s", request.method, request.path)
            failure = ApiError(500, "InternalError", f"Internal error occurred: {type(exc).__name__}: {exc}")
            return web.json_response(failure.status(), status=500)

    async def _dispatch(self, request: web.Request, body: Any, content_type: str) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return web.json_response(
                {"major": "1", "minor": "33", "gitVersion": "v1.33.0-emulator", "platform": "linux/amd64"}
            )
        if parts and parts[0] == "api":
            if len(parts) == 1:
                return web.json_response(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}
                        ],
                    }
                )
            group, version, rest = "", parts[1], parts[2:]
        elif parts and parts[0] == "apis":
            if len(parts) == 1:
                return web.json_response(api_group_list(self.table))
            if len(parts) == 2:
                return web.json_response(api_group(self.table, parts[1]))
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise errors.resource_not_found()
        if not rest:
            return web.json_response(api_resource_list(self.table, group, version))
        target = self._target(group, version, rest)
        return await self._serve(request, target, body, content_type)

    def _target(self, group: str, version: str, rest: builtins.list[str]) -> Target:
        namespace: str | None = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise errors.resource_not_found()
        rt = self.table.find(group, version, rest[0])
        if rt is None:
            raise errors.resource_not_found()
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if (namespace is not None and not rt.namespaced) or (
            namespace is None and rt.namespaced and name is not None
        ):
            raise errors.resource_not_found()
        if subresource is not None and not (
            (subresource == "status" and rt.status) or (subresource == "scale" and rt.scale)
        ):
            raise errors.resource_not_found()
        return Target(rt, version, namespace, name, subresource)

    async def _serve(
        self, request: web.Request, target: Target, body: Any, content_type: str
    ) -> web.StreamResponse:
        method = request.method
        rt, version = target.rt, target.version
        if target.name is None:
            if method == "GET":
                if request.query.get("watch", "") in TRUE_VALUES:
                    return await self._watch(request, target)
                return web.json_response(self._list(target, request.query))
            if method == "POST":
                if rt.namespaced and target.namespace is None:
                    raise errors.method_not_allowed(method)
                obj = self._decode_object(body, content_type, target)
                created = self.store.create(rt, target.namespace, obj, rt.api_version(version))
                return web.json_response(self._render(created, rt, version), status=201)
            if method == "DELETE":
                return web.json_response(self._delete_collection(target, request.query))
            raise errors.method_not_allowed(method)
        if target.subresource == "scale":
            return web.json_response(self._serve_scale(method, target, body, content_type))
        if method == "GET":
            obj = self.store.require(rt, target.namespace, target.name)
            return web.json_response(self._render(obj, rt, version))
        if method == "PUT":
            obj = self._decode_object(body, content_type, target)
            updated = self.store.update(
                rt, target.namespace, target.name, obj, subresource=target.subresource
            )
            return web.json_response(self._render(updated, rt, version))
        if method == "PATCH":
            current = self._render(self.store.require(rt, target.namespace, target.name), rt, version)
            patched = self._apply_patch(rt, current, body, content_type)
            updated = self.store.update(
                rt, target.namespace, target.name, patched, subresource=target.subresource
            )
            return web.json_response(self._render(updated, rt, version))
        if method == "DELETE" and target.subresource is None:
            preconditions = body.get("preconditions") if isinstance(body, dict) else None
            obj, deleted = self.store.delete(rt, target.namespace, target.name, preconditions)
            if deleted and not rt.return_deleted:
                details = {"name": target.name, "kind": rt.plural, "uid": obj["metadata"]["uid"]}
                if rt.group:
                    details["group"] = rt.group
                success = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": details,
                }
                return web.json_response(success)
            # Pods answer with the object; anything held by finalizers answers 202 with the marked object.
            return web.json_response(self._render(obj, rt, version), status=200 if deleted else 202)
        raise errors.method_not_allowed(method)

    def _decode_object(self, body: Any, content_type: str, target: Target) -> Obj:
        media = content_type.split(";")[0].strip()
        if media not in ("application/json", "application/yaml", ""):
            raise errors.unsupported_media_type(
                media, ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
            )
        rt = target.rt
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body of a {rt.kind} request must be a JSON object")
        expected = rt.api_version(target.version)
        if rt.custom and not (body.get("apiVersion") and body.get("kind")):
            missing = "Kind" if not body.get("kind") else "apiVersion"
            raise errors.bad_request(f"Object '{missing}' is missing in '{json.dumps(body)[:200]}'")
        if body.get("apiVersion", expected) != expected or body.get("kind", rt.kind) != rt.kind:
            raise errors.bad_request(
                f"the API version in the data ({body.get('apiVersion')}) does not match the expected API version "
                f"({expected})"
                if body.get("apiVersion", expected) != expected
                else f"the kind in the data ({body.get('kind')}) does not match the expected kind ({rt.kind})"
            )
        return body

    def _apply_patch(self, rt: ResourceType, current: Obj, patch: Any, content_type: str) -> Obj:
        media = content_type.split(";")[0].strip()
        accepted = [JSON_PATCH, MERGE_PATCH] + ([] if rt.custom else [STRATEGIC_PATCH]) + [APPLY_PATCH]
        if media not in accepted or media == APPLY_PATCH:
            # Server-side apply is not emulated: say so rather than pretend.
            raise errors.unsupported_media_type(media, accepted)
        try:
            if media == JSON_PATCH:
                result = json_patch(current, patch)
            elif not isinstance(patch, dict):
                raise errors.bad_request("invalid JSON Patch: a merge patch must be a JSON object")
            elif media == MERGE_PATCH:
                result = merge_patch(current, patch)
            else:
                result = strategic_merge_patch(current, patch)
        except PatchFormatError as exc:
            raise errors.bad_request(str(exc)) from None
        except PatchError as exc:
            raise errors.patch_failed(str(exc)) from None
        if not isinstance(result, dict):
            raise errors.bad_request("the patched document is not an object")
        return result

    # --- lists, watches, scale ------------------------------------------------------------------------------

    def _predicate(self, target: Target, query: Any) -> Callable[[Obj], bool]:
        try:
            labels = label_selector(query.get("labelSelector"))
            fields = field_selector(query.get("fieldSelector"), custom=target.rt.custom)
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from None
        return lambda obj: labels(obj) and fields(obj)

    def _list(self, target: Target, query: Any) -> Obj:
        rt, version = target.rt, target.version
        predicate = self._predicate(target, query)
        items = [self._render(o, rt, version) for o in self.store.list(rt, target.namespace) if predicate(o)]
        if not rt.custom:
            for item in items:  # built-in lists carry kind/apiVersion only on the list itself
                item.pop("apiVersion", None)
                item.pop("kind", None)
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version(version),
            "metadata": {"resourceVersion": str(self.store.rv)},
            "items": items,
        }

    def _delete_collection(self, target: Target, query: Any) -> Obj:
        predicate = self._predicate(target, query)
        deleted = []
        for obj in list(self.store.list(target.rt, target.namespace)):
            if predicate(obj):
                meta = obj["metadata"]
                gone, _ = self.store.delete(target.rt, meta.get("namespace"), meta["name"])
                deleted.append(self._render(gone, target.rt, target.version))
        return {
            "kind": f"{target.rt.kind}List",
            "apiVersion": target.rt.api_version(target.version),
            "metadata": {"resourceVersion": str(self.store.rv)},
            "items": deleted,
        }

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        predicate = self._predicate(target, request.query)
        try:
            timeout = float(request.query.get("timeoutSeconds") or DEFAULT_WATCH_SECONDS)
        except ValueError:
            raise errors.bad_request(f"invalid timeoutSeconds: {request.query['timeoutSeconds']!r}") from None
        try:
            initial, watcher = self.store.watch(
                target.rt, target.namespace, predicate, request.query.get("resourceVersion")
            )
        except ApiError as exc:
            if exc.code != 410:
                raise
            # A real server answers 200 and sends the expiry as the stream's only event.
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            await response.write(json.dumps({"type": "ERROR", "object": exc.status()}).encode() + b"\n")
            await response.write_eof()
            return response
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        )
        deadline = time.monotonic() + timeout
        try:
            await response.prepare(request)
            for type_, obj in initial:
                await self._write_event(response, type_, obj, target)
            while (remaining := deadline - time.monotonic()) > 0:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), timeout=min(remaining, 0.5))
                except TimeoutError:
                    continue
                if item is None:
                    break
                await self._write_event(response, item[0], item[1], target)
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            self.store.unwatch(watcher)
        return response

    async def _write_event(self, response: web.StreamResponse, type_: str, obj: Obj, target: Target) -> None:
        event = {"type": type_, "object": self._render(obj, target.rt, target.version)}
        await response.write(json.dumps(event).encode() + b"\n")

    def _serve_scale(self, method: str, target: Target, body: Any, content_type: str) -> Obj:
        rt, name = target.rt, target.name or ""
        obj = self.store.require(rt, target.namespace, name)
        scale = scale_of(rt, obj)
        if method == "GET":
            return scale
        if method == "PATCH":
            media = content_type.split(";")[0].strip()
            if media not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH):
                raise errors.unsupported_media_type(media, [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH])
            # The Scale is a built-in type, so strategic merge works on it even for custom resources.
            wanted = self._apply_patch(
                self.table.find("apps", "v1", "replicasets") or rt, scale, body, content_type
            )
        elif method == "PUT":
            if not isinstance(body, dict):
                raise errors.bad_request("the body of a scale update must be an autoscaling/v1 Scale")
            wanted = body
        else:
            raise errors.method_not_allowed(method)
        wanted_meta = wanted.get("metadata") or {}
        if wanted_meta.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({wanted_meta['name']}) does not match the name on the URL ({name})"
            )
        if (
            wanted_meta.get("resourceVersion")
            and wanted_meta["resourceVersion"] != obj["metadata"]["resourceVersion"]
        ):
            raise errors.conflict(rt, name)
        replicas = (wanted.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid(
                rt,
                name,
                "spec.replicas",
                f"Invalid value: {replicas!r}: must be a non-negative integer",
                "FieldValueInvalid",
            )
        new = copy.deepcopy(obj)
        new["metadata"].pop("resourceVersion", None)
        set_nested(new, rt.spec_replicas_path, replicas)
        updated = self.store.update(rt, target.namespace, name, new)
        return scale_of(rt, updated)
