"""The ``prometheus`` metric provider: one PromQL query over the HTTP API, typed like Argo.

Behaviour follows Argo's ``metricproviders/prometheus/prometheus.go`` (client_golang):

* an instant query goes to ``/api/v1/query`` as a POST form (``query``, ``time=now``),
  falling back to GET when the server answers 405/501, as client_golang does; with a
  ``rangeQuery`` (``range_start``/``range_end``/``range_step``) it goes to
  ``/api/v1/query_range`` instead;
* the address may carry a path prefix (``http://host/prometheus``); the API path is appended;
* results: a scalar is a ``float``; a vector is a ``list[float]`` with labels dropped (so
  ``result[0]`` reads a one-series answer); a matrix (range query, or an instant query such
  as ``x[5m]``) is every value of every series, flattened in series then time order (Argo's
  docs: "``all(result, # < 1000)`` checks every value"); a string is a ``str`` (Argo
  rejects strings as "metric type not supported"; returning it is harmless and lets
  conditions compare it). ``NaN``/``+Inf``/``-Inf`` come back as those floats;
* a transport error, a timeout, a non-2xx answer, ``status: error`` or an undecodable body
  is a :class:`MeasurementError`. Messages never contain header values, basic-auth
  credentials or URL passwords: they are scrubbed out, since they are usually secrets;
* Prometheus ``warnings`` are logged (Argo stores them as measurement metadata).

Range bounds accept ``now()``, ``now() - <go duration>`` (also Argo's documented
``now() - duration("5m")`` spelling), an RFC 3339 timestamp or unix seconds; the step is a
Go duration. ``timeout_seconds`` (Argo ``timeout``) bounds the whole request: negative is
rejected as in Argo, zero means the 30-second default.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import aiohttp
import msgspec
from yarl import URL

from services.analyzer.providers.errors import MeasurementError
from shared.durations import parse_go_duration
from shared.specs.analysis import PrometheusMetric

__all__ = ["ADDRESS_ENV", "PrometheusQuery", "measure_prometheus", "query_of", "resolve_time"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS: Final = 30.0
# Argo reads this when a template leaves `address` empty.
ADDRESS_ENV: Final = "ARGO_ROLLOUTS_PROMETHEUS_ADDRESS"

# client_golang retries a POST as GET on these: servers or proxies that only allow GET.
_GET_FALLBACK_STATUSES: Final = frozenset({405, 501})
_SNIPPET: Final = 200

_NOW = re.compile(r"now\(\s*\)")
_NOW_MINUS = re.compile(
    r"now\(\s*\)\s*-\s*(?:duration\(\s*(?P<quoted>\"[^\"]*\"|'[^']*')\s*\)|(?P<bare>[^\s()]+))"
)
_UNIX = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


class PrometheusQuery(msgspec.Struct, kw_only=True):
    """Argo's ``provider.prometheus`` block (headers flattened to a mapping, rangeQuery flattened)."""

    address: str
    query: str
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    insecure: bool = False
    headers: dict[str, str] = {}
    basic_auth: tuple[str, str] | None = None
    range_start: str | None = None
    range_end: str | None = None
    range_step: str | None = None


def query_of(spec: PrometheusMetric) -> PrometheusQuery:
    """Translate a template's ``provider.prometheus`` block; unsupported authentication is an error."""
    auth = spec.authentication
    if auth is not None and (auth.sigv4 is not None or auth.oauth2 is not None):
        # Querying without the credentials the template asks for would only produce confusing 401s.
        kind = "sigv4" if auth.sigv4 is not None else "oauth2"
        raise MeasurementError(f"prometheus authentication.{kind} is not supported")
    # basicAuth is read if the spec carries it (Argo: authentication.basicAuth{username,password}).
    basic = getattr(auth, "basic_auth", None) if auth is not None else None
    credentials = (str(basic.username or ""), str(basic.password or "")) if basic is not None else None
    rng = spec.range_query
    return PrometheusQuery(
        address=spec.address or "",
        query=spec.query or "",
        timeout_seconds=float(spec.timeout) if spec.timeout is not None else DEFAULT_TIMEOUT_SECONDS,
        insecure=bool(spec.insecure),
        headers={h.key: h.value for h in spec.headers or ()},
        basic_auth=credentials,
        range_start=rng.start if rng is not None else None,
        range_end=rng.end if rng is not None else None,
        range_step=rng.step if rng is not None else None,
    )


def resolve_time(expression: str, *, now: float) -> float:
    """Resolve a range bound to unix seconds; raise ``ValueError`` if it is not a supported form."""
    text = expression.strip()
    if _NOW.fullmatch(text):
        return now
    match = _NOW_MINUS.fullmatch(text)
    if match is not None:
        quoted = match.group("quoted")
        duration = quoted[1:-1] if quoted is not None else match.group("bare")
        return now - parse_go_duration(duration)
    if _UNIX.fullmatch(text):
        return float(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        # RFC 3339 requires an offset; a naive time would silently mean the host's zone.
        raise ValueError(
            f"invalid time {expression!r}: use now(), now() - <duration> (e.g. now() - 5m), "
            "an RFC 3339 timestamp with an offset, or unix seconds"
        )
    return parsed.timestamp()


def _basic_auth(user: str, password: str) -> str:
    # Go's SetBasicAuth: base64 of the UTF-8 "user:password" (aiohttp's BasicAuth is deprecated).
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _secrets(query: PrometheusQuery, url: URL) -> list[str]:
    values = [v for v in query.headers.values() if v]
    if query.basic_auth is not None:
        user, password = query.basic_auth
        values += [password, _basic_auth(user, password).partition(" ")[2]]
    if url.password:
        values.append(url.password)
    # Longest first, so a secret containing another is replaced whole.
    return sorted({v for v in values if v}, key=len, reverse=True)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _display(url: URL) -> str:
    # Userinfo may hold a password: never show it.
    return str(url.with_user(None)) if url.user or url.password else str(url)


def _parse_address(address: str) -> URL:
    try:
        url = URL(address)
    except (ValueError, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        shown = _display(url) if url is not None else "<unparsable>"
        raise MeasurementError(f"prometheus address {shown!r} is not in url format (http[s]://host[:port])")
    return url


def _endpoint(base: URL, api: str) -> URL:
    # Like client_golang's path.Join: keep any path prefix of the address and drop its query.
    prefix = base.path.rstrip("/")
    return base.with_query(None).with_fragment(None).with_path(f"{prefix}/api/v1/{api}")


def _float(raw: Any) -> float:
    # Prometheus encodes sample values as strings ("1.5", "NaN", "+Inf") to carry NaN/Inf in JSON.
    if isinstance(raw, str):
        return float(raw)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    raise ValueError(f"unexpected sample value {raw!r}")


def _sample_value(sample: Any) -> float:
    if not isinstance(sample, dict):
        raise ValueError("unexpected sample shape")
    if "value" in sample:
        return _float(sample["value"][1])
    if "histogram" in sample:
        raise ValueError("native histogram samples are not supported; aggregate them to floats in PromQL")
    raise ValueError("sample without a value")


def _series_values(series: Any) -> list[float]:
    if not isinstance(series, dict):
        raise ValueError("unexpected series shape")
    if series.get("histograms"):
        raise ValueError("native histogram samples are not supported; aggregate them to floats in PromQL")
    return [_float(pair[1]) for pair in series.get("values") or ()]


def _convert(data: Any) -> Any:
    """Type the ``data`` member of a successful response the way Argo hands it to conditions."""
    if not isinstance(data, dict):
        raise ValueError("response has no data object")
    kind = data.get("resultType")
    result: Any = data.get("result")
    if kind == "scalar":
        return _float(result[1])
    if kind == "string":
        return str(result[1])
    if kind == "vector":
        return [_sample_value(sample) for sample in result or ()]
    if kind == "matrix":
        return [value for series in result or () for value in _series_values(series)]
    raise ValueError(f"Prometheus metric type {kind!r} not supported")


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _error_message(status: int, reason: str | None, raw: bytes) -> str:
    body = _decode(raw)
    if isinstance(body, dict) and body.get("status") == "error":
        # Prometheus' own words, e.g. "bad_data: 1:5: parse error: unclosed left parenthesis".
        kind = body.get("errorType") or "error"
        return f"{kind}: {body.get('error') or 'unknown error'}"
    snippet = raw[:_SNIPPET].decode("utf-8", errors="replace").strip()
    head = f"HTTP {status}" + (f" {reason}" if reason else "")
    return f"{head}: {snippet}" if snippet else head


def _build_form(query: PrometheusQuery, now: float) -> tuple[str, dict[str, str]]:
    bounds = (query.range_start, query.range_end, query.range_step)
    if all(b is None or not b.strip() for b in bounds):
        return "query", {"query": query.query, "time": repr(now)}
    if any(b is None or not b.strip() for b in bounds):
        raise MeasurementError("rangeQuery needs start, end and step")
    assert query.range_start is not None and query.range_end is not None and query.range_step is not None
    try:
        start = resolve_time(query.range_start, now=now)
        end = resolve_time(query.range_end, now=now)
    except ValueError as exc:
        raise MeasurementError(f"rangeQuery: {exc}") from exc
    try:
        step = parse_go_duration(query.range_step)
    except ValueError as exc:
        raise MeasurementError(f"rangeQuery step: {exc}") from exc
    if not step > 0 or math.isinf(step):
        raise MeasurementError(f"rangeQuery step must be a positive duration, got {query.range_step!r}")
    return "query_range", {"query": query.query, "start": repr(start), "end": repr(end), "step": repr(step)}


def _request_headers(query: PrometheusQuery) -> dict[str, str]:
    headers = dict(query.headers)
    if query.basic_auth is not None:
        if any(name.lower() == "authorization" for name in headers):
            raise MeasurementError("basic auth and an Authorization header are both set; use one of them")
        user, password = query.basic_auth
        headers["Authorization"] = _basic_auth(user, password)
    return headers


async def measure_prometheus(query: PrometheusQuery, session: aiohttp.ClientSession, *, now: float) -> Any:
    """Run ``query`` against Prometheus at time ``now`` (unix seconds); raise :class:`MeasurementError`."""
    if query.timeout_seconds < 0:
        raise MeasurementError("prometheus timeout should not be negative")
    # Argo would fail every call with a zero timeout; the default is the useful reading of "unset".
    seconds = query.timeout_seconds or DEFAULT_TIMEOUT_SECONDS
    address = query.address or os.environ.get(ADDRESS_ENV, "")
    if not address:
        raise MeasurementError("prometheus address is not configured")
    base = _parse_address(address)
    secrets = _secrets(query, base)
    shown = _display(base)
    try:
        api, form = _build_form(query, now)
        headers = _request_headers(query)
    except MeasurementError as exc:
        raise MeasurementError(_scrub(f"{shown}: {exc}", secrets)) from None
    url = _endpoint(base, api)
    # yarl keeps userinfo on the URL; aiohttp turns it into basic auth, which must not clash.
    if (base.user or base.password) and query.basic_auth is not None:
        raise MeasurementError(f"{shown}: credentials in the address and basic auth are both set; use one")
    timeout = aiohttp.ClientTimeout(total=seconds)
    ssl = False if query.insecure else True
    try:
        async with session.post(url, data=form, headers=headers, timeout=timeout, ssl=ssl) as response:
            status, reason, raw = response.status, response.reason, await response.read()
        if status in _GET_FALLBACK_STATUSES:
            async with session.get(url, params=form, headers=headers, timeout=timeout, ssl=ssl) as response:
                status, reason, raw = response.status, response.reason, await response.read()
    except TimeoutError:
        raise MeasurementError(f"{shown}: prometheus query timed out after {seconds:g}s") from None
    except aiohttp.ClientError as exc:
        # "from None": aiohttp errors can carry the request (headers included) into tracebacks.
        detail = _scrub(str(exc) or type(exc).__name__, secrets)
        raise MeasurementError(f"{shown}: prometheus request failed: {detail}") from None
    except ValueError as exc:  # e.g. an invalid header value
        raise MeasurementError(f"{shown}: invalid prometheus request: {_scrub(str(exc), secrets)}") from None

    if not 200 <= status < 300:
        detail = _scrub(_error_message(status, reason, raw), secrets)
        raise MeasurementError(f"{shown}: prometheus query failed: {detail}")
    body = _decode(raw)
    if not isinstance(body, dict):
        raise MeasurementError(f"{shown}: prometheus answered with a body that is not a JSON object")
    if body.get("status") != "success":
        detail = _scrub(_error_message(status, reason, raw), secrets)
        raise MeasurementError(f"{shown}: prometheus query failed: {detail}")
    for warning in body.get("warnings") or ():
        log.warning("prometheus %s warned for %r: %s", shown, query.query, _scrub(str(warning), secrets))
    try:
        return _convert(body.get("data"))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise MeasurementError(f"{shown}: unexpected prometheus response: {exc}") from None
