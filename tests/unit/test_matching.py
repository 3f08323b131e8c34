"""Managed-route matching: StringMatch kinds, AND within a header route, OR across mirror entries,
validation of the route Structs and their Argo JSON names."""

from __future__ import annotations

import msgspec
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from services.traffic_shifter.matching import (
    MAX_PATTERN_LENGTH,
    MAX_REGEX_INPUT,
    bad_patterns,
    header_route_matches,
    mirror_matches,
    string_matches,
)
from shared.messages import TrafficDesired, traffic_decoder
from shared.routes import HeaderMatch, HeaderRoute, MirrorRoute, RouteMatch, StringMatch


def _hr(*matches: tuple[str, StringMatch]) -> HeaderRoute:
    return HeaderRoute(name="h", match=tuple(HeaderMatch(header_name=n, header_value=v) for n, v in matches))


def test_exact_prefix_regex() -> None:
    assert string_matches(StringMatch(exact="yes"), "yes")
    assert not string_matches(StringMatch(exact="yes"), "yes!")
    assert not string_matches(StringMatch(exact="yes"), "Yes")
    assert string_matches(StringMatch(prefix="/api"), "/api/v1")
    assert string_matches(StringMatch(prefix="/api"), "/api")
    assert not string_matches(StringMatch(prefix="/api"), "/ap")
    # Regexes match the whole value, as Istio/Envoy do: Argo's own examples write "firefox(.*)".
    assert string_matches(StringMatch(regex="firefox(.*)"), "firefox 126")
    assert not string_matches(StringMatch(regex="firefox"), "firefox 126")
    assert not string_matches(StringMatch(regex="firefox(.*)"), "old firefox")
    assert string_matches(StringMatch(regex="v[0-9]+"), "v42")


def test_regex_input_is_bounded() -> None:
    match = StringMatch(regex="a*")
    assert string_matches(match, "a" * MAX_REGEX_INPUT)
    assert not string_matches(match, "a" * (MAX_REGEX_INPUT + 1))
    # Exact and prefix matches are linear, so they take any length.
    assert string_matches(StringMatch(prefix="a"), "a" * (MAX_REGEX_INPUT + 1))


def test_string_match_needs_exactly_one_kind() -> None:
    for bad in ({}, {"exact": "a", "prefix": "b"}, {"exact": ""}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, StringMatch)
    with pytest.raises(ValueError):
        StringMatch()
    # As in Argo's Go types, an empty string is unset.
    assert string_matches(msgspec.convert({"exact": "", "prefix": "/a"}, StringMatch), "/ab")


def test_unusable_regex_decodes_but_never_matches() -> None:
    # RE2 syntax Python lacks, or a plain mistake, must not make the whole desired state undecodable.
    broken = msgspec.convert({"regex": "("}, StringMatch)
    long = StringMatch(regex="a" * (MAX_PATTERN_LENGTH + 1))
    assert not string_matches(broken, "(")
    assert not string_matches(long, "a" * (MAX_PATTERN_LENGTH + 1))
    routes = (
        HeaderRoute(name="h", match=(HeaderMatch(header_name="x", header_value=broken),)),
        HeaderRoute(name="ok", match=(HeaderMatch(header_name="x", header_value=StringMatch(regex="a+")),)),
    )
    mirrors = (MirrorRoute(name="m", match=(RouteMatch(headers={"y": long}),)),)
    problems = bad_patterns(routes, mirrors)
    assert set(problems) == {"(", long.regex}
    assert "longer than" in problems[str(long.regex)]


def test_header_route_ands_its_matches() -> None:
    route = _hr(("X-Canary", StringMatch(exact="yes")), ("User-Agent", StringMatch(prefix="Mozilla")))
    assert header_route_matches(route, {"X-Canary": "yes", "User-Agent": "Mozilla/5.0"})
    assert not header_route_matches(route, {"X-Canary": "yes"})
    assert not header_route_matches(route, {"User-Agent": "Mozilla/5.0"})
    assert not header_route_matches(route, {"X-Canary": "no", "User-Agent": "Mozilla/5.0"})


def test_header_names_are_case_insensitive_and_repeated_values_each_count() -> None:
    route = _hr(("x-canary", StringMatch(exact="yes")))
    assert header_route_matches(route, {"X-CANARY": "yes"})
    multi: CIMultiDict[str] = CIMultiDict([("X-Canary", "no"), ("X-Canary", "yes")])
    assert header_route_matches(route, CIMultiDictProxy(multi))
    assert not header_route_matches(route, CIMultiDictProxy(CIMultiDict([("X-Canary", "no")])))


def test_missing_header_never_matches_and_empty_route_matches_nothing() -> None:
    assert not header_route_matches(_hr(("X-Canary", StringMatch(regex=".*"))), {})
    # A setHeaderRoute without match is how Argo removes the route.
    assert not header_route_matches(HeaderRoute(name="h"), {"X-Canary": "yes"})


def test_mirror_ors_its_entries_and_ands_each_entry() -> None:
    route = MirrorRoute(
        name="m",
        match=(
            RouteMatch(method=StringMatch(exact="POST"), path=StringMatch(prefix="/color")),
            RouteMatch(headers={"X-Shadow": StringMatch(exact="1"), "X-Team": StringMatch(regex="a|b")}),
        ),
    )
    assert mirror_matches(route, "POST", "/color/red", {})
    assert not mirror_matches(route, "GET", "/color/red", {})  # first entry: method fails
    assert not mirror_matches(route, "POST", "/shape", {})  # first entry: path fails
    assert mirror_matches(route, "GET", "/shape", {"x-shadow": "1", "X-Team": "b"})  # second entry
    assert not mirror_matches(route, "GET", "/shape", {"X-Shadow": "1"})  # second entry: header missing
    assert not mirror_matches(route, "GET", "/shape", {"X-Shadow": "1", "X-Team": "ab"})


def test_mirror_entry_fields_are_optional() -> None:
    assert mirror_matches(MirrorRoute(name="all", match=(RouteMatch(),)), "DELETE", "/x", {})
    assert mirror_matches(
        MirrorRoute(name="gets", match=(RouteMatch(method=StringMatch(regex="GET|HEAD")),)), "HEAD", "/", {}
    )
    assert not mirror_matches(MirrorRoute(name="removed"), "GET", "/", {})


def test_mirror_percentage_defaults_to_100_and_is_bounded() -> None:
    assert MirrorRoute(name="m").percentage == 100
    for bad in (-1, 101):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({"name": "m", "percentage": bad}, MirrorRoute)


def test_traffic_desired_carries_routes_with_argo_json_names() -> None:
    wire = {
        "namespace": "ns",
        "name": "app",
        "generation": 3,
        "stableRevision": "a",
        "canaryRevision": "b",
        "headerRoutes": [
            {
                "name": "set-header-1",
                "match": [{"headerName": "agent", "headerValue": {"regex": "firefox(.*)"}}],
            }
        ],
        "mirrorRoutes": [
            {
                "name": "mirror-route",
                "percentage": 35,
                "match": [
                    {"method": {"exact": "GET"}, "path": {"prefix": "/"}, "headers": {"x": {"exact": "1"}}}
                ],
            }
        ],
    }
    desired = traffic_decoder.decode(msgspec.json.encode(wire))
    assert desired.header_routes == (
        HeaderRoute(
            name="set-header-1",
            match=(HeaderMatch(header_name="agent", header_value=StringMatch(regex="firefox(.*)")),),
        ),
    )
    mirror = desired.mirror_routes[0]
    assert (mirror.name, mirror.percentage) == ("mirror-route", 35)
    assert mirror.match[0] == RouteMatch(
        method=StringMatch(exact="GET"), path=StringMatch(prefix="/"), headers={"x": StringMatch(exact="1")}
    )
    assert msgspec.json.decode(msgspec.json.encode(desired)) == wire
    # Old messages without routes still decode, and new empty routes stay off the wire.
    plain = TrafficDesired(namespace="ns", name="app", generation=1, stable_revision="a")
    assert b"Routes" not in msgspec.json.encode(plain)
    assert traffic_decoder.decode(msgspec.json.encode(plain)) == plain
