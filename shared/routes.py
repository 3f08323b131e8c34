"""Managed routes (Argo's setHeaderRoute / setMirrorRoute) as carried from the planner to the shifter.

Field and JSON names mirror Argo's v1alpha1 types (StringMatch, HeaderRoutingMatch, RouteMatch);
matching itself lives in services.traffic_shifter.matching.
"""

from __future__ import annotations

import msgspec


class _Route(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel", frozen=True):
    pass


class StringMatch(_Route, frozen=True):
    """Exactly one of ``exact``, ``prefix`` or ``regex`` (a full match, as Istio/Envoy do).

    As in Argo's Go types, an empty string counts as unset. A regex Python cannot compile is not
    rejected here (RE2 and Python differ, and one bad pattern must not make the whole desired
    state undecodable): it matches nothing, and the proxy logs it.
    """

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    def __post_init__(self) -> None:
        if sum(bool(v) for v in (self.exact, self.prefix, self.regex)) != 1:
            raise ValueError("a string match needs exactly one of exact, prefix or regex")


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


__all__ = ["HeaderMatch", "HeaderRoute", "MirrorRoute", "RouteMatch", "StringMatch"]
