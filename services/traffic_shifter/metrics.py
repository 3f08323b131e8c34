"""Prometheus text exposition (format 0.0.4) of the built-in proxy's traffic counters.

The traffic-shifter serves this at ``GET /metrics`` so a real Prometheus can scrape the
proxy and analysis templates can use the ``prometheus`` provider against it, e.g.::

    sum(rate(rollouts_proxy_requests_total{service="web-canary",code_class="5xx"}[1m]))
      / sum(rate(rollouts_proxy_requests_total{service="web-canary"}[1m]))

Families (all per ``namespace``/``rollout``; per-revision ones also carry ``revision``,
``role`` and ``service``):

* ``rollouts_proxy_requests_total`` (counter, plus ``code_class`` "2xx".."5xx"): completed
  responses; an upstream failure is answered 502/504 by the proxy and counted as 5xx.
* ``rollouts_proxy_upstream_errors_total`` (counter): upstream connection failures.
* ``rollouts_proxy_request_duration_seconds`` (histogram over ``LATENCY_BOUNDS``).
* ``rollouts_proxy_unrouted_requests_total`` (counter, no revision): 503s for want of a backend.
* ``rollouts_traffic_weight`` (gauge, ``role`` and ``service``): the desired percentage.

``service`` is the stable or canary service name of the desired traffic, chosen by role:
the counters of a (revision, role) pair were served through that role's service.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

from services.traffic_shifter.proxy import CANARY, STABLE, ProxyStats, RevisionStats
from shared.messages import TrafficDesired

__all__ = ["CONTENT_TYPE", "render_prometheus"]

# What a Prometheus server expects for the text format; aiohttp takes the charset separately.
CONTENT_TYPE: Final = "text/plain; version=0.0.4"

_CODE_CLASSES: Final = ("2xx", "3xx", "4xx", "5xx")

_REQUESTS: Final = "rollouts_proxy_requests_total"
_UPSTREAM: Final = "rollouts_proxy_upstream_errors_total"
_DURATION: Final = "rollouts_proxy_request_duration_seconds"
_UNROUTED: Final = "rollouts_proxy_unrouted_requests_total"
_WEIGHT: Final = "rollouts_traffic_weight"


def _escape_label(value: str) -> str:
    # The three escapes the 0.0.4 format defines for label values.
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    # HELP text escapes only backslash and newline (quotes are literal there).
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _format_le(bound: float) -> str:
    # Same spelling as the official clients ("0.005", "1.0", "+Inf"), so le strings match across jobs.
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{_escape_label(value)}"' for name, value in pairs)
    return "{" + inner + "}" if inner else ""


class _Family:
    """One metric family: HELP and TYPE once, then its samples (the format forbids interleaving)."""

    __slots__ = ("help", "lines", "name", "type")

    def __init__(self, name: str, type_: str, help_: str) -> None:
        self.name = name
        self.type = type_
        self.help = help_
        self.lines: list[str] = []

    def add(self, suffix: str, labels: Iterable[tuple[str, str]], value: float) -> None:
        self.lines.append(f"{self.name}{suffix}{_labels(labels)} {_format_value(value)}")

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {_escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.type}")
        out.extend(self.lines)


def _split_key(key: str, desired: TrafficDesired | None) -> tuple[str, str]:
    if desired is not None:
        return desired.namespace, desired.name
    namespace, sep, name = key.partition("/")
    return (namespace, name) if sep else ("", key)


def _service(desired: TrafficDesired | None, role: str) -> str:
    if desired is None:
        return ""
    name = desired.canary_service if role == CANARY else desired.stable_service
    return name or ""


def _cumulative(entry: RevisionStats, bounds: tuple[float, ...]) -> list[tuple[str, int]]:
    # latency_buckets are per-bucket counts plus a final overflow bucket; Prometheus wants running totals.
    out: list[tuple[str, int]] = []
    running = 0
    counts = entry.latency_buckets
    for i, bound in enumerate(bounds):
        running += counts[i] if i < len(counts) else 0
        out.append((_format_le(bound), running))
    running += sum(counts[len(bounds) :])
    out.append(("+Inf", running))
    return out


def render_prometheus(stats: Mapping[str, ProxyStats], desired: Mapping[str, TrafficDesired]) -> str:
    """Render the proxies' ``stats`` (keyed "namespace/name") as Prometheus text format 0.0.4.

    ``desired`` supplies the service names and the weights; a rollout present in only one of
    the two mappings is still rendered with what is known (empty ``service`` when unknown).
    """
    requests = _Family(_REQUESTS, "counter", "Responses sent by the rollouts proxy, by status class.")
    upstream = _Family(_UPSTREAM, "counter", "Requests the rollouts proxy could not forward upstream.")
    duration = _Family(_DURATION, "histogram", "Time the rollouts proxy took to answer a request.")
    unrouted = _Family(_UNROUTED, "counter", "Requests answered 503 because no backend was routable.")
    weight = _Family(_WEIGHT, "gauge", "Desired share of a rollout's traffic (percent) per role.")

    for key in sorted(stats):
        proxy = stats[key]
        want = desired.get(key)
        namespace, rollout = _split_key(key, want)
        base = (("namespace", namespace), ("rollout", rollout))
        unrouted.add("", base, proxy.unrouted)
        for entry in sorted(proxy.revisions, key=lambda e: (e.role, e.revision)):
            series = (
                *base,
                ("service", _service(want, entry.role)),
                ("revision", entry.revision),
                ("role", entry.role),
            )
            # Every class is always present, so rate() over any class starts at the same scrape.
            for code_class in _CODE_CLASSES:
                requests.add("", (*series, ("code_class", code_class)), entry.responses.get(code_class, 0))
            upstream.add("", series, entry.upstream_errors)
            buckets = _cumulative(entry, proxy.latency_bounds)
            for le, count in buckets:
                duration.add("_bucket", (*series, ("le", le)), count)
            duration.add("_sum", series, entry.latency_sum)
            # _count must equal the +Inf bucket, whatever latency_count says about in-flight requests.
            duration.add("_count", series, buckets[-1][1])

    for key in sorted(set(desired) | set(stats)):
        want = desired.get(key)
        proxy_stats = stats.get(key)
        namespace, rollout = _split_key(key, want)
        # The desired weight is what the shifter was asked for; without it, the proxy's effective one.
        canary = want.canary_weight if want is not None else proxy_stats.canary_weight if proxy_stats else 0
        for role, value in ((STABLE, 100 - canary), (CANARY, canary)):
            labels = (
                ("namespace", namespace),
                ("rollout", rollout),
                ("role", role),
                ("service", _service(want, role)),
            )
            weight.add("", labels, value)

    out: list[str] = []
    for family in (requests, upstream, duration, unrouted, weight):
        family.render(out)
    return "\n".join(out) + "\n"
