"""A resumable watch of any Kubernetes resource: list, then watch from the list's resourceVersion.

A watch that ends (the server's timeoutSeconds, a dropped connection) resumes from the last
resourceVersion seen (bookmarks included); one the server refuses with 410 Gone (the version was
compacted away) relists and yields only the differences, with a DELETED for each object that vanished
meanwhile, so a consumer sees every change once. Connection and server errors back off and retry.

The resource is given as a kubernetes_asyncio list function with its path arguments bound, e.g.
`functools.partial(CustomObjectsApi(api).list_namespaced_custom_object, group, version, ns, plural)`
or `functools.partial(CoreV1Api(api).list_namespaced_config_map, ns)`; it is called with
`_preload_content=False` so that every resource arrives as plain JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
WatchEvent = tuple[str, dict[str, Any]]


class KubeApiError(Exception):
    """The Kubernetes API answered with an error Status (or not at all: status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message


class Gone(KubeApiError):
    """410 Gone / Expired: the resourceVersion (or continue token) is too old; relist."""


def api_error(status: int, body: Any, *, default_reason: str = "") -> KubeApiError:
    """A Kubernetes Status body (or anything else) as our error; 410 becomes Gone."""
    reason, message = default_reason, ""
    if isinstance(body, dict):
        reason = str(body.get("reason") or reason)
        message = str(body.get("message") or "")
        status = int(body.get("code") or status)
    elif body:
        message = str(body)[:500]
    cls = Gone if status == 410 else KubeApiError
    return cls(status, reason, message)


def from_api_exception(e: ApiException) -> KubeApiError:
    """kubernetes_asyncio's ApiException, translated once."""
    try:
        body = json.loads(e.body) if e.body else None
    except (TypeError, ValueError):
        body = e.body
    return api_error(int(e.status or 0), body, default_reason=str(e.reason or ""))


class ListFunction(Protocol):
    """A kubernetes_asyncio list call with the resource's path arguments bound."""

    def __call__(self, **kwargs: Any) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class WatchSettings:
    # Seconds the server keeps one watch request open; then the watch resumes from the last version.
    # Shorter than the API server's own 30-60 min so that a connection dead without a FIN is noticed.
    timeout_seconds: int = 300
    # Objects per list page (the API server's `limit`): bounds the size of one response.
    page_size: int = 500
    # Seconds before the first retry after an error; doubled on each further error up to the maximum.
    backoff_initial: float = 0.2
    backoff_max: float = 30.0
    # Longest line of a watch stream (one object), in bytes: a Rollout is a few kB, this is generous.
    max_line: int = 16 * 1024 * 1024


def object_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _meta(obj: dict[str, Any], field: str) -> str:
    return str((obj.get("metadata") or {}).get(field) or "")


class ResumableWatch:
    """Iterate `events()` for (type, object) of one resource, forever (cancel the consumer to stop)."""

    def __init__(self, list_fn: ListFunction, *, what: str, settings: WatchSettings | None = None) -> None:
        self.list_fn = list_fn
        self.what = what  # for logs: "rollouts.argoproj.io in default"
        self.settings = settings or WatchSettings()
        self.resource_version: str | None = None
        self.known: dict[str, dict[str, Any]] = {}  # last object seen per namespace/name
        self.lists = 0  # how many times the resource was (re)listed
        self.synced = asyncio.Event()  # set once the first list has been yielded

    async def events(self) -> AsyncIterator[WatchEvent]:
        delay = self.settings.backoff_initial
        while True:
            try:
                if self.resource_version is None:
                    for event in await self._relist():
                        yield event
                    self.synced.set()
                async for event in self._watch_once():
                    delay = self.settings.backoff_initial
                    yield event
                delay = self.settings.backoff_initial  # a normal end: resume at once
            except Gone as e:
                log.info("%s: resourceVersion %s gone (%s); relisting", self.what, self.resource_version, e)
                self.resource_version = None
            except (KubeApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                log.warning(
                    "%s: watch failed (%s); retrying in %.1fs", self.what, e or type(e).__name__, delay
                )
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.settings.backoff_max)

    # --- list -------------------------------------------------------------------------------------

    async def _relist(self) -> list[WatchEvent]:
        """Every object now, as the differences from what was known (all ADDED the first time)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": self.settings.page_size}
            if token:
                kwargs["_continue"] = token
            page = await self._call(**kwargs)
            items.extend(i for i in page.get("items") or [] if isinstance(i, dict))
            meta = page.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            token = meta.get("continue") or None
            if not token:
                break
        self.lists += 1
        events: list[WatchEvent] = []
        seen: dict[str, dict[str, Any]] = {}
        for obj in items:
            key = object_key(obj)
            seen[key] = obj
            old = self.known.get(key)
            if old is None:
                events.append((ADDED, obj))
            elif _meta(old, "uid") != _meta(obj, "uid"):  # deleted and created again meanwhile
                events.append((DELETED, old))
                events.append((ADDED, obj))
            elif _meta(old, "resourceVersion") != _meta(obj, "resourceVersion"):
                events.append((MODIFIED, obj))
        events.extend((DELETED, old) for key, old in self.known.items() if key not in seen)
        self.known = seen
        self.resource_version = version or None
        log.info("%s: listed %d object(s) at resourceVersion %s", self.what, len(items), version)
        return events

    async def _call(self, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = await self.list_fn(_preload_content=False, **kwargs)
        except ApiException as e:
            raise from_api_exception(e) from e
        try:
            body = await resp.read()
            data = json.loads(body) if body else None
            if not 200 <= resp.status <= 299:
                raise api_error(resp.status, data, default_reason=str(resp.reason or ""))
        finally:
            resp.release()
        if not isinstance(data, dict):
            raise KubeApiError(resp.status, "BadResponse", f"{self.what}: the list is not an object")
        return data

    # --- watch ------------------------------------------------------------------------------------

    async def _watch_once(self) -> AsyncIterator[WatchEvent]:
        timeout = self.settings.timeout_seconds
        try:
            resp = await self.list_fn(
                watch=True,
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _preload_content=False,
                # The server ends the request after `timeout`; a silent connection is dropped later.
                _request_timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout + 30),
            )
        except ApiException as e:
            raise from_api_exception(e) from e
        try:
            if not 200 <= resp.status <= 299:
                body = await resp.read()
                try:
                    data = json.loads(body) if body else None
                except ValueError:
                    data = body.decode(errors="replace")
                raise api_error(resp.status, data, default_reason=str(resp.reason or ""))
            while True:
                line = await resp.content.readline(max_line_length=self.settings.max_line)
                if not line:
                    return
                if not line.strip():
                    continue
                event = self._on_line(line)
                if event is not None:
                    yield event
        finally:
            resp.close()  # mid-stream (cancelled, error) the connection cannot go back to the pool

    def _on_line(self, line: bytes) -> WatchEvent | None:
        data = json.loads(line)
        kind, obj = data.get("type"), data.get("object")
        if not isinstance(obj, dict):
            raise KubeApiError(0, "BadEvent", f"{self.what}: a watch event without an object: {line[:200]!r}")
        if kind == "ERROR":
            raise api_error(int(obj.get("code") or 0), obj)
        version = _meta(obj, "resourceVersion")
        if kind == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return None
        if kind not in (ADDED, MODIFIED, DELETED):
            log.debug("%s: ignoring a %s event", self.what, kind)
            return None
        if version:
            self.resource_version = version
        key = object_key(obj)
        old = self.known.get(key)
        if kind == DELETED:
            if old is None:
                return None  # already gone (a relist said so)
            del self.known[key]
            return (DELETED, obj)
        if (
            old is not None
            and _meta(old, "resourceVersion") == version
            and _meta(old, "uid") == _meta(obj, "uid")
        ):
            return None  # this very version was already yielded (a replay after a resume)
        self.known[key] = obj
        return (MODIFIED if old is not None else ADDED, obj)
