"""Pure request matching for Argo's managed routes: setHeaderRoute (AND) and setMirrorRoute (OR of ANDs).

Regexes are full matches (Istio/Envoy semantics; Argo's own examples write ``firefox(.*)``), compiled
once and cached. Python's re backtracks, so patterns longer than MAX_PATTERN_LENGTH and values longer
than MAX_REGEX_INPUT never match; neither does a pattern Python cannot compile (see bad_patterns).
Empty strings in a StringMatch count as unset, as in Argo's Go types.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Final

from multidict import MultiMapping

from shared.routes import HeaderMatch, HeaderRoute, MirrorRoute, RouteMatch, StringMatch

MAX_REGEX_INPUT: Final = 4096
MAX_PATTERN_LENGTH: Final = 1024


@functools.lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    if len(pattern) > MAX_PATTERN_LENGTH:
        return None
    try:
        return re.compile(pattern)
    except re.error:
        return None


def pattern_problem(pattern: str) -> str | None:
    """Why a regex will never match anything here, or None when it is usable."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"longer than {MAX_PATTERN_LENGTH} characters"
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


def string_matches(match: StringMatch, value: str) -> bool:
    if match.exact:
        return value == match.exact
    if match.prefix:
        return value.startswith(match.prefix)
    if match.regex:
        if len(value) > MAX_REGEX_INPUT:
            return False
        compiled = _compiled(match.regex)
        return compiled is not None and compiled.fullmatch(value) is not None
    return False


def _header_values(headers: Mapping[str, str], name: str) -> Iterable[str]:
    """Every value of a header, case-insensitively (repeated headers each get a chance to match)."""
    if isinstance(headers, MultiMapping):
        # aiohttp's CIMultiDictProxy: case-insensitive lookups with every repeated value.
        values: list[str] = headers.getall(name, [])
        return values
    lowered = name.lower()
    return [value for key, value in headers.items() if key.lower() == lowered]


def _header_matches(headers: Mapping[str, str], name: str, match: StringMatch) -> bool:
    return any(string_matches(match, value) for value in _header_values(headers, name))


def header_match_matches(match: HeaderMatch, headers: Mapping[str, str]) -> bool:
    return _header_matches(headers, match.header_name, match.header_value)


def header_route_matches(route: HeaderRoute, headers: Mapping[str, str]) -> bool:
    """True when every header match of the route matches; a route without matches matches nothing."""
    if not route.match:
        return False
    return all(header_match_matches(m, headers) for m in route.match)


def route_match_matches(match: RouteMatch, method: str, path: str, headers: Mapping[str, str]) -> bool:
    """True when every field the entry sets matches (an entry setting nothing matches everything)."""
    if match.method is not None and not string_matches(match.method, method):
        return False
    if match.path is not None and not string_matches(match.path, path):
        return False
    if match.headers:
        for name, value_match in match.headers.items():
            if not _header_matches(headers, name, value_match):
                return False
    return True


def _route_regexes(
    header_routes: Iterable[HeaderRoute], mirror_routes: Iterable[MirrorRoute]
) -> Iterable[str]:
    for hr in header_routes:
        for hm in hr.match:
            if hm.header_value.regex:
                yield hm.header_value.regex
    for mr in mirror_routes:
        for rm in mr.match:
            fields = [rm.method, rm.path, *(rm.headers or {}).values()]
            yield from (f.regex for f in fields if f is not None and f.regex)


def bad_patterns(
    header_routes: Iterable[HeaderRoute], mirror_routes: Iterable[MirrorRoute]
) -> dict[str, str]:
    """The routes' regexes that can never match here, each with the reason."""
    out: dict[str, str] = {}
    for pattern in _route_regexes(header_routes, mirror_routes):
        problem = pattern_problem(pattern)
        if problem is not None:
            out[pattern] = problem
    return out


def mirror_matches(route: MirrorRoute, method: str, path: str, headers: Mapping[str, str]) -> bool:
    """True when any match entry matches; a route without entries matches nothing (Argo's removal)."""
    return any(route_match_matches(m, method, path, headers) for m in route.match)


__all__ = [
    "MAX_PATTERN_LENGTH",
    "MAX_REGEX_INPUT",
    "bad_patterns",
    "header_match_matches",
    "header_route_matches",
    "mirror_matches",
    "pattern_problem",
    "route_match_matches",
    "string_matches",
]
