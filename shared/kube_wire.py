"""Raw Kubernetes API calls (`_preload_content=False`) decoded with msgspec: one request, one watch stream.

The scaler (ReplicaSets) and the analyzer's Job runner read the API server's answers as bytes and
decode them into their own msgspec views; what a request or a watch stream returns, and how its
failures read, is the same for both and lives here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import aiohttp
import msgspec
from kubernetes_asyncio.client.exceptions import ApiException

from shared.kube_errors import KubeRequestError, WatchGone

T = TypeVar("T")


class _Status(msgspec.Struct, kw_only=True):
    code: int = 0
    reason: str = ""
    message: str = ""


class _Event(msgspec.Struct, kw_only=True):
    type: str
    object: msgspec.Raw


def request_error(what: str, status: int, body: bytes) -> KubeRequestError:
    """A non-2xx answer, with the reason and message of its Status body when it has one."""
    try:
        s = msgspec.json.decode(body, type=_Status)
        return KubeRequestError(what, status, s.reason, s.message)
    except msgspec.DecodeError:
        return KubeRequestError(what, status, "", body[:200].decode(errors="replace"))


async def send(what: str, call: Awaitable[Any], *, allow: tuple[int, ...] = ()) -> tuple[int, bytes]:
    """One request: (status, body) on 2xx or an allowed status, else KubeRequestError."""
    try:
        resp = await call
        async with resp:
            status, body = resp.status, bytes(await resp.read())
    except (aiohttp.ClientError, TimeoutError) as e:
        raise KubeRequestError(what, 0, type(e).__name__, str(e)) from None
    except ApiException as e:
        raise KubeRequestError(what, e.status or 0, str(e.reason or ""), "") from None
    if 200 <= status < 300 or status in allow:
        return status, body
    raise request_error(what, status, body)


async def watch_events(what: str, call: Awaitable[Any], kind: type[T]) -> AsyncIterator[tuple[str, T]]:
    """(event type, object) from one watch request; WatchGone on 410, KubeRequestError otherwise."""
    try:
        resp = await call
    except (aiohttp.ClientError, TimeoutError, ApiException) as e:
        raise KubeRequestError(what, getattr(e, "status", 0) or 0, type(e).__name__, str(e)) from None
    async with resp:
        if resp.status == 410:
            raise WatchGone
        if not 200 <= resp.status < 300:
            raise request_error(what, resp.status, await resp.read())
        try:
            async for line in resp.content:
                if not line.strip():
                    continue
                event = msgspec.json.decode(line, type=_Event)
                if event.type == "ERROR":
                    status = msgspec.json.decode(event.object, type=_Status)
                    if status.code == 410:
                        raise WatchGone
                    raise KubeRequestError(what, status.code, status.reason, status.message)
                yield event.type, msgspec.json.decode(event.object, type=kind)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise KubeRequestError(what, 0, type(e).__name__, str(e)) from None
        except msgspec.DecodeError as e:
            raise KubeRequestError(what, resp.status, "malformed watch event", str(e)) from None
