"""Pure request matching for Argo's managed routes: setHeaderRoute (AND) and setMirrorRoute (OR of ANDs).

Regexes are full matches (Istio/Envoy semantics; Argo's own examples write ``firefox(.*)``), compiled
once and cached; values longer than MAX_REGEX_INPUT never match a regex, so a backtracking pattern
cannot be fed an arbitrarily long header.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Final

from multidict import MultiMapping

from shared.routes import HeaderMatch, HeaderRoute, MirrorRoute, RouteMatch, StringMatch

MAX_REGEX_INPUT: Final = 4096


@functools.lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def string_matches(match: StringMatch, value: str) -> bool:
    if match.exact is not None:
        return value == match.exact
    if match.prefix is not None:
        return value.startswith(match.prefix)
    if match.regex is not None:
        if len(value) > MAX_REGEX_INPUT:
            return False
        return _compiled(match.regex).fullmatch(value) is not None
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


def mirror_matches(route: MirrorRoute, method: str, path: str, headers: Mapping[str, str]) -> bool:
    """True when any match entry matches; a route without entries matches nothing (Argo's removal)."""
    return any(route_match_matches(m, method, path, headers) for m in route.match)


__all__ = [
    "MAX_REGEX_INPUT",
    "header_match_matches",
    "header_route_matches",
    "mirror_matches",
    "route_match_matches",
    "string_matches",
]
