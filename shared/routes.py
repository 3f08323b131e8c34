"""Managed routes (Argo's setHeaderRoute / setMirrorRoute) as carried from the planner to the shifter.

Field and JSON names mirror Argo's v1alpha1 types (StringMatch, HeaderRoutingMatch, RouteMatch);
matching itself lives in services.traffic_shifter.matching.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

# Python's re backtracks; a bounded pattern (and a bounded input, see matching) keeps a hostile
# or careless pattern from stalling the proxy's event loop.
MAX_PATTERN_LENGTH: Final = 1024


class _Route(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel", frozen=True):
    pass


class StringMatch(_Route, frozen=True):
    """Exactly one of ``exact``, ``prefix`` or ``regex`` (a full match, as Istio/Envoy do)."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    def __post_init__(self) -> None:
        given = sum(v is not None for v in (self.exact, self.prefix, self.regex))
        if given != 1:
            raise ValueError("a string match needs exactly one of exact, prefix or regex")
        if self.regex is not None:
            if len(self.regex) > MAX_PATTERN_LENGTH:
                raise ValueError(f"regex longer than {MAX_PATTERN_LENGTH} characters")
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None


class HeaderMatch(_Route, frozen=True):
    """Argo's HeaderRoutingMatch: JSON ``{"headerName": ..., "headerValue": {...}}``."""

    header_name: str
    header_value: StringMatch


class HeaderRoute(_Route, frozen=True):
    """setHeaderRoute: requests matching every entry of ``match`` go to the canary.

    An empty ``match`` is how Argo removes the route, so it matches nothing.
    """

    name: str
    match: tuple[HeaderMatch, ...] = ()


class RouteMatch(_Route, frozen=True):
    """One entry of setMirrorRoute.match; the fields that are set must all match."""

    method: StringMatch | None = None
    path: StringMatch | None = None
    headers: dict[str, StringMatch] | None = None


class MirrorRoute(_Route, frozen=True):
    """setMirrorRoute: ``percentage`` % of requests matching any entry of ``match`` are copied to the canary.

    An empty ``match`` is how Argo removes the route, so it matches nothing.
    """

    name: str
    match: tuple[RouteMatch, ...] = ()
    percentage: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.percentage <= 100:
            raise ValueError(f"percentage must be within 0..100, got {self.percentage}")


__all__ = ["MAX_PATTERN_LENGTH", "HeaderMatch", "HeaderRoute", "MirrorRoute", "RouteMatch", "StringMatch"]
