"""The ``web`` metric provider: one HTTP request, JSONPath applied to the JSON reply.

Behaviour follows Argo's ``metricproviders/webmetric/webmetric.go``:

* method defaults to GET; ``body`` and ``jsonBody`` are exclusive and only
  allowed with POST/PUT; ``jsonBody`` adds ``Content-Type: application/json``;
* a non-2xx status, a transport error or a timeout is a measurement error;
* a body that is not JSON is returned verbatim as text (as :class:`RawText`).
  Argo marks such a measurement Successful *without* evaluating the
  conditions; callers that want that rule can test ``isinstance(v, RawText)``;
* otherwise the JSONPath (default ``{$}``) is applied and its first value
  returned.
"""

from __future__ import annotations

import json
from typing import Any, Final

import aiohttp
import msgspec

from services.analyzer.jsonpath import JsonPathError, extract
from services.analyzer.providers.errors import MeasurementError

__all__ = ["RawText", "WebQuery", "measure_web"]

DEFAULT_TIMEOUT_SECONDS: Final = 10.0
_BODY_METHODS: Final = frozenset({"POST", "PUT"})


class WebQuery(msgspec.Struct, kw_only=True):
    """Argo's ``provider.web`` block (headers flattened to a mapping)."""

    url: str
    method: str = "GET"
    headers: dict[str, str] = {}
    body: str | None = None
    json_body: Any = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    json_path: str = "{$}"
    insecure: bool = False


class RawText(str):
    """A response body that was not JSON, returned as-is."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    # Go's encoding/json rejects NaN/Infinity literals, so such a body is "not JSON" there too.
    raise ValueError(f"invalid JSON constant {name}")


def _build_request(query: WebQuery) -> tuple[str, dict[str, str], bytes | None]:
    method = (query.method or "GET").upper()
    has_body = bool(query.body)
    has_json = query.json_body is not None
    if has_body and has_json:
        raise MeasurementError(
            f"{query.url}: use either body or jsonBody; both cannot exist for a web metric"
        )
    if (has_body or has_json) and method not in _BODY_METHODS:
        raise MeasurementError(f"{query.url}: body/jsonBody can only be used with POST or PUT, not {method}")
    headers = dict(query.headers)
    data: bytes | None = None
    if has_body:
        assert query.body is not None
        data = query.body.encode()
    elif has_json:
        data = msgspec.json.encode(query.json_body)
        headers["Content-Type"] = "application/json"
    return method, headers, data


def _parse_body(raw: bytes, query: WebQuery) -> Any:
    try:
        document = json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return RawText(raw.decode("utf-8", errors="replace"))
    try:
        return extract(document, query.json_path or "{$}")
    except JsonPathError as exc:
        raise MeasurementError(f"{query.url}: could not find JSONPath in body: {exc}") from exc


async def measure_web(query: WebQuery, session: aiohttp.ClientSession) -> Any:
    """Perform the request described by ``query``; raise :class:`MeasurementError` on failure."""
    method, headers, data = _build_request(query)
    # Argo treats a non-positive timeout as "use the 10s default".
    seconds = query.timeout_seconds if query.timeout_seconds > 0 else DEFAULT_TIMEOUT_SECONDS
    try:
        async with session.request(
            method,
            query.url,
            headers=headers,
            data=data,
            timeout=aiohttp.ClientTimeout(total=seconds),
            ssl=False if query.insecure else True,
        ) as response:
            raw = await response.read()
            status = response.status
    except TimeoutError:
        raise MeasurementError(f"{query.url}: request timed out after {seconds:g}s") from None
    except aiohttp.ClientError as exc:
        raise MeasurementError(f"{query.url}: request failed: {exc}") from exc
    except ValueError as exc:  # e.g. a malformed URL
        raise MeasurementError(f"{query.url}: invalid request: {exc}") from exc
    if not 200 <= status < 300:
        raise MeasurementError(f"{query.url}: received non 2xx response code: {status}")
    return _parse_body(raw, query)
