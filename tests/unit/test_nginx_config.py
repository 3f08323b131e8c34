"""The pure nginx renderer: integer weight distribution (examples and properties), readiness and validation
of a rollout's routing, the exact text for a plain weighted split, header and mirror routes, the preview
listener, port conflicts, escaping (quoted tokens and PCRE literals) and tracing a config line to its rollout.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.traffic_shifter.nginx_config import (
    NginxConfigError,
    NginxSettings,
    match_regex,
    pcre_literal,
    quote,
    render_config,
    routing_for,
    section_of,
    server_weights,
    slug,
)
from services.traffic_shifter.providers import NotReady
from shared.messages import Endpoints, TrafficDesired, WeightedDestination
from shared.routes import HeaderMatch, HeaderRoute, MirrorRoute, RouteMatch, StringMatch

SETTINGS = NginxSettings(state_dir="/srv/rollouts", host="127.0.0.1", control_port=9000)
NAME = slug("shop/web")


def desired(weight: int = 10, **extra: object) -> TrafficDesired:
    fields: dict[str, object] = {
        "namespace": "shop",
        "name": "web",
        "generation": 1,
        "stable_revision": "v1",
        "canary_revision": "v2",
        "canary_weight": weight,
        "port": 8080,
        **extra,
    }
    return TrafficDesired(**fields)  # type: ignore[arg-type]


def endpoints(**revisions: list[str]) -> Endpoints:
    return Endpoints(namespace="shop", name="web", revisions=revisions)


ONE_EACH = endpoints(v1=["10.0.0.1:80"], v2=["10.0.0.2:80"])


def section(text: str) -> str:
    """The rollout's part of a rendered config, dedented."""
    body = text[text.index("    # rollout ") : text.index("    # end rollout")]
    return "\n".join(line.removeprefix("    ") for line in body.splitlines())


# --- integer weights ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        (((90, 1), (10, 1)), (9, 1)),
        (((90, 2), (10, 3)), (27, 2)),  # lcm 6: 270 and 20, divided by 10
        (((50, 2), (50, 3)), (3, 2)),
        (((75, 1), (25, 4)), (12, 1)),
        (((100, 3), (0, 2)), (1, 0)),
        (((0, 3), (100, 2)), (0, 1)),
        (((10, 0), (90, 2)), (0, 1)),  # a side without addresses gets nothing
        (((0, 1), (0, 1)), (0, 0)),
    ],
)
def test_server_weights_examples(shares: tuple[tuple[int, int], ...], expected: tuple[int, ...]) -> None:
    assert server_weights(shares) == expected


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=12)),
        min_size=1,
        max_size=4,
    )
)
def test_server_weights_keep_the_shares_exactly(shares: list[tuple[int, int]]) -> None:
    weights = server_weights(shares)
    live = [(share, count, w) for (share, count), w in zip(shares, weights, strict=True) if share and count]
    assert all(w == 0 for (share, count), w in zip(shares, weights, strict=True) if not (share and count))
    if not live:
        return
    assert all(w >= 1 for _, _, w in live)
    total_share = sum(share for share, _, _ in live)
    total_weight = sum(count * w for _, count, w in live)
    for share, count, w in live:
        assert Fraction(count * w, total_weight) == Fraction(share, total_share)
    assert math.gcd(*(w for _, _, w in live)) == 1  # fully reduced


# --- routing decisions ----------------------------------------------------------------------------


def test_routing_splits_each_revision_over_its_addresses() -> None:
    routing = routing_for(desired(10), endpoints(v1=["10.0.0.1:80", "10.0.0.3:80"], v2=["10.0.0.2:80"]))
    assert [(s.address, s.weight, s.revision, s.role) for s in routing.split] == [
        ("10.0.0.1:80", 9, "v1", "stable"),
        ("10.0.0.3:80", 9, "v1", "stable"),
        ("10.0.0.2:80", 2, "v2", "canary"),
    ]


@pytest.mark.parametrize(
    ("message", "want", "eps"),
    [
        ("stable revision v1", desired(10), endpoints(v2=["10.0.0.2:80"])),
        ("canary revision v2", desired(10), endpoints(v1=["10.0.0.1:80"])),
        (
            r"canary revision v2 \(managed routes\)",
            desired(0, header_routes=(HeaderRoute(name="h"),)),
            endpoints(v1=["10.0.0.1:80"]),
        ),
        ("preview revision v3", desired(0, preview_revision="v3", preview_port=8081), ONE_EACH),
        ("preview revision v3", desired(0, preview_revision="v3"), endpoints(v1=["a:1"], v3=["b:2"])),
    ],
)
def test_missing_endpoints_are_not_ready(message: str, want: TrafficDesired, eps: Endpoints) -> None:
    with pytest.raises(NotReady, match=message):
        routing_for(want, eps)


def test_missing_endpoints_are_fine_where_no_traffic_goes() -> None:
    stable_only = routing_for(desired(0), endpoints(v1=["10.0.0.1:80"]))
    assert [s.role for s in stable_only.split] == ["stable"]
    canary_only = routing_for(desired(100), endpoints(v2=["10.0.0.2:80"]))
    assert [s.role for s in canary_only.split] == ["canary"]


def test_an_empty_side_hands_its_share_over() -> None:
    # No stable revision yet (first rollout): the canary takes everything whatever the weight.
    routing = routing_for(desired(10, stable_revision=None), endpoints(v2=["10.0.0.2:80"]))
    assert [(s.role, s.weight) for s in routing.split] == [("canary", 1)]
    nothing = routing_for(desired(0, stable_revision=None, canary_revision=None), endpoints())
    assert nothing.split == ()
    assert "return 503" in render_config([nothing], SETTINGS, "g")


def test_one_revision_in_both_roles_is_all_stable() -> None:
    routing = routing_for(desired(40, canary_revision="v1"), endpoints(v1=["10.0.0.1:80"]))
    assert [(s.role, s.weight) for s in routing.split] == [("stable", 1)]
    with pytest.raises(NotReady, match="stable revision v1"):
        routing_for(desired(100, canary_revision="v1"), endpoints())


def test_canary_without_addresses_makes_routes_inert() -> None:
    routes = (
        HeaderRoute(name="h", match=(HeaderMatch(header_name="X-A", header_value=StringMatch(exact="1")),)),
    )
    routing = routing_for(desired(0, canary_revision=None, header_routes=routes), ONE_EACH)
    assert routing.header_routes == ()
    assert "$http_x_a" not in render_config([routing], SETTINGS, "g")


@pytest.mark.parametrize(
    ("message", "want", "eps"),
    [
        (r"rollout shop/web: spec\.template\.spec\.containers\[0\]\.ports", desired(port=None), ONE_EACH),
        (
            "rollout shop/web: endpoints of revision v1: 'x y:80'",
            desired(),
            endpoints(v1=["x y:80"], v2=["a:1"]),
        ),
        (
            "rollout shop/web: revision 'v\\$1'",
            desired(stable_revision="v$1"),
            endpoints(**{"v$1": ["a:1"], "v2": ["b:2"]}),
        ),
        (
            "rollout shop/web: header route 'h': header name 'X_A'",
            desired(
                header_routes=(
                    HeaderRoute(
                        name="h", match=(HeaderMatch(header_name="X_A", header_value=StringMatch(exact="1")),)
                    ),
                )
            ),
            ONE_EACH,
        ),
        (
            "rollout shop/web: mirror route 'm': header name 'X A'",
            desired(
                mirror_routes=(
                    MirrorRoute(name="m", match=(RouteMatch(headers={"X A": StringMatch(exact="1")}),)),
                )
            ),
            ONE_EACH,
        ),
    ],
)
def test_unwritable_routing_names_rollout_and_field(
    message: str, want: TrafficDesired, eps: Endpoints
) -> None:
    with pytest.raises(NginxConfigError, match=message):
        routing_for(want, eps)


# --- rendered text --------------------------------------------------------------------------------

PLAIN = f"""\
# Written by nats-rollouts' NginxProvider: hand edits are overwritten (drift correction).
# generation g-1
daemon off;
# One worker: smooth weighted round robin is kept per worker, and one worker splits exactly.
worker_processes 1;
pid "/srv/rollouts/nginx.pid";
error_log "/srv/rollouts/error.log" notice;
worker_shutdown_timeout 10s;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path "/srv/rollouts/tmp/client_body";
    proxy_temp_path "/srv/rollouts/tmp/proxy";
    fastcgi_temp_path "/srv/rollouts/tmp/fastcgi";
    uwsgi_temp_path "/srv/rollouts/tmp/uwsgi";
    scgi_temp_path "/srv/rollouts/tmp/scgi";
    client_max_body_size 0;
    proxy_http_version 1.1;
    # One revision per request, as the built-in proxy: a failing canary must not hide behind retries.
    proxy_next_upstream off;
    proxy_set_header Connection "";
    proxy_set_header Host $rollouts_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Host $rollouts_host;
    proxy_set_header X-Forwarded-Proto $scheme;
    map $http_host $rollouts_host {{ "" $host; default $http_host; }}
    map $request_uri $rollouts_path {{ "~^(?<rollouts_path_only>[^?]*)" $rollouts_path_only; }}

    # control: the generation of this file, and the sink for mirror copies sampled out
    server {{
        listen 127.0.0.1:9000;
        location = /_rollouts/generation {{ return 200 "g-1\\n"; }}
        location / {{ return 204; }}
    }}

    # rollout shop/web
    upstream {NAME}_split {{
        server 10.0.0.1:80 weight=9 max_fails=0;  # stable v1
        server 10.0.0.2:80 weight=1 max_fails=0;  # canary v2
        keepalive 16;
    }}
    map $upstream_addr ${NAME}_revision {{
        default "";
        "10.0.0.1:80" "v1";
        "10.0.0.2:80" "v2";
    }}
    map $upstream_addr ${NAME}_role {{
        default "";
        "10.0.0.1:80" "stable";
        "10.0.0.2:80" "canary";
    }}
    server {{
        listen 127.0.0.1:8080;
        location / {{
            proxy_pass http://{NAME}_split;
            add_header X-Rollouts-Revision ${NAME}_revision always;
            add_header X-Rollouts-Role ${NAME}_role always;
        }}
    }}
    # end rollout shop/web
}}
"""


def test_plain_weighted_split_renders_exactly() -> None:
    assert render_config([routing_for(desired(10), ONE_EACH)], SETTINGS, "g-1") == PLAIN


def test_root_workers_run_as_the_providers_user_and_ipv6_listens_bracketed() -> None:
    settings = NginxSettings(state_dir="/srv/r", host="::1", control_port=9000, worker_user="root root")
    text = render_config([routing_for(desired(10), ONE_EACH)], settings, "g")
    assert "\nuser root root;\n" in text
    assert "listen [::1]:8080;" in text
    assert "listen 127.0.0.1:9000;" in text  # the control port stays on IPv4 loopback


def test_header_routes_render_and_and_or_maps() -> None:
    routes = (
        HeaderRoute(
            name="testers",
            match=(
                HeaderMatch(header_name="X-Canary", header_value=StringMatch(exact="a.b")),
                HeaderMatch(header_name="User-Agent", header_value=StringMatch(regex=r'fire"fox\d+')),
            ),
        ),
        HeaderRoute(name="removed"),  # no matches: matches nothing
        HeaderRoute(
            name="beta", match=(HeaderMatch(header_name="X-Beta", header_value=StringMatch(prefix="on")),)
        ),
    )
    text = render_config([routing_for(desired(0, header_routes=routes), ONE_EACH)], SETTINGS, "g")
    n = NAME
    assert (
        section(text)
        == f"""\
# rollout shop/web
upstream {n}_split {{
    server 10.0.0.1:80 weight=1 max_fails=0;  # stable v1
    keepalive 16;
}}
map $http_x_canary ${n}_h0_0 {{ "" 0; "~^a\\\\.b$" 1; default 0; }}
map $http_user_agent ${n}_h0_1 {{ "" 0; "~^(?:fire\\"fox\\\\d+)$" 1; default 0; }}
map "${{{n}_h0_0}}${{{n}_h0_1}}" ${n}_h0 {{ "11" 1; default 0; }}
map $http_x_beta ${n}_h2_0 {{ "" 0; "~^on" 1; default 0; }}
map "${{{n}_h0}}${{{n}_h2_0}}" ${n}_routed {{ "~1" 1; default 0; }}
upstream {n}_canary {{
    server 10.0.0.2:80 max_fails=0;  # canary v2
    keepalive 16;
}}
map "${{{n}_routed}}" ${n}_upstream {{ 1 {n}_canary; default {n}_split; }}
map $upstream_addr ${n}_revision {{
    default "";
    "10.0.0.1:80" "v1";
    "10.0.0.2:80" "v2";
}}
map $upstream_addr ${n}_role {{
    default "";
    "10.0.0.1:80" "stable";
    "10.0.0.2:80" "canary";
}}
server {{
    listen 127.0.0.1:8080;
    location / {{
        proxy_pass http://${n}_upstream;
        add_header X-Rollouts-Revision ${n}_revision always;
        add_header X-Rollouts-Role ${n}_role always;
    }}
}}"""
    )


def test_mirror_routes_sample_their_percentage_against_the_sink() -> None:
    routes = (
        MirrorRoute(
            name="api-posts",
            percentage=25,
            match=(RouteMatch(method=StringMatch(exact="POST"), path=StringMatch(prefix="/api")),),
        ),
        MirrorRoute(name="never", percentage=0, match=(RouteMatch(),)),  # 0%: shadows what follows
        MirrorRoute(name="all", match=(RouteMatch(),)),
    )
    eps = endpoints(v1=["10.0.0.1:80"], v2=["10.0.0.2:80", "10.0.0.3:80"])
    text = render_config([routing_for(desired(0, mirror_routes=routes), eps)], SETTINGS, "g")
    n = NAME
    assert f"""\
map $request_method ${n}_m0_0_method {{ "" 0; "~^POST$" 1; default 0; }}
map $rollouts_path ${n}_m0_0_path {{ "" 0; "~^/api" 1; default 0; }}
map "${{{n}_m0_0_method}}${{{n}_m0_0_path}}" ${n}_m0_0 {{ "11" 1; default 0; }}
upstream {n}_mirror0 {{
    server 10.0.0.2:80 weight=1 max_fails=0;  # canary v2
    server 10.0.0.3:80 weight=1 max_fails=0;  # canary v2
    server 127.0.0.1:9000 weight=6 max_fails=0;  # sink: not copied
    keepalive 16;
}}
upstream {n}_mirror2 {{
    server 10.0.0.2:80 weight=1 max_fails=0;  # canary v2
    server 10.0.0.3:80 weight=1 max_fails=0;  # canary v2
    keepalive 16;
}}
map "0${{{n}_m0_0}}11" ${n}_mirror {{
    default "";
    "~^0{{1}}1" {n}_mirror0;
    "~^0{{3}}1" {n}_mirror2;
}}
map ${n}_mirror ${n}_mirror_name {{
    default "";
    "{n}_mirror0" "api-posts";
    "{n}_mirror2" "all";
}}""" in section(text)
    assert f"""\
    location / {{
        mirror /_rollouts_mirror;
        proxy_pass http://{n}_split;""" in section(text)
    assert f"""\
    location = /_rollouts_mirror {{
        internal;
        if (${n}_mirror = "") {{ return 204; }}
        proxy_set_header Connection "";
        proxy_set_header Host $rollouts_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Host $rollouts_host;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Rollouts-Mirror ${n}_mirror_name;
        proxy_pass http://${n}_mirror$request_uri;
    }}""" in section(text)


def test_mirror_routes_that_cannot_match_add_no_mirror() -> None:
    routes = (MirrorRoute(name="removed"), MirrorRoute(name="off", percentage=0, match=(RouteMatch(),)))
    text = render_config([routing_for(desired(0, mirror_routes=routes), ONE_EACH)], SETTINGS, "g")
    assert "mirror" not in section(text)


def test_preview_listener_serves_the_preview_revision() -> None:
    eps = endpoints(v1=["10.0.0.1:80"], v2=["10.0.0.2:80"], v3=["10.0.0.4:80", "10.0.0.5:80"])
    text = render_config(
        [routing_for(desired(0, preview_revision="v3", preview_port=8081), eps)], SETTINGS, "g"
    )
    assert section(text).endswith(f"""\
upstream {NAME}_preview {{
    server 10.0.0.4:80 max_fails=0;  # preview v3
    server 10.0.0.5:80 max_fails=0;  # preview v3
    keepalive 16;
}}
server {{
    listen 127.0.0.1:8081;
    location / {{
        proxy_pass http://{NAME}_preview;
        add_header X-Rollouts-Revision "v3" always;
        add_header X-Rollouts-Role stable always;
    }}
}}""")


def test_rollouts_render_sorted_and_port_conflicts_name_both() -> None:
    web = routing_for(desired(10), ONE_EACH)
    api = routing_for(desired(10, name="api", port=8090), ONE_EACH)
    text = render_config([web, api], SETTINGS, "g")
    assert text == render_config([api, web], SETTINGS, "g")
    assert text.index("# rollout shop/api") < text.index("# rollout shop/web")
    clash = routing_for(desired(10, name="api", port=8080), ONE_EACH)
    with pytest.raises(
        NginxConfigError, match="rollout shop/web: port 8080 is already taken by rollout shop/api"
    ):
        render_config([web, clash], SETTINGS, "g")
    control = routing_for(desired(10, port=9000), ONE_EACH)
    with pytest.raises(NginxConfigError, match="control port"):
        render_config([control], SETTINGS, "g")


def test_section_of_traces_lines_to_rollouts() -> None:
    web = routing_for(desired(10), ONE_EACH)
    api = routing_for(desired(10, name="api", port=8090), ONE_EACH)
    text = render_config([web, api], SETTINGS, "g")
    lines = text.splitlines()
    assert section_of(text, lines.index("    worker_connections 1024;") + 1) is None
    assert (
        section_of(text, next(i for i, x in enumerate(lines) if "listen 127.0.0.1:8090" in x) + 1)
        == "shop/api"
    )
    assert (
        section_of(text, next(i for i, x in enumerate(lines) if "listen 127.0.0.1:8080" in x) + 1)
        == "shop/web"
    )
    assert section_of(text, len(lines)) is None


def test_slugs_are_identifiers_and_distinct() -> None:
    assert re.fullmatch(r"rr_shop_web_[0-9a-f]{8}", slug("shop/web"))
    assert slug("a-b/c") != slug("a_b/c")


# --- escaping ---------------------------------------------------------------------------------------


def _nginx_unquote(token: str) -> str:
    """nginx's reading of a double-quoted token (ngx_conf_read_token's unescaping)."""
    assert token[0] == token[-1] == '"'
    out, i, body = [], 0, token[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "\"'\\":
                out.append(nxt)
                i += 2
                continue
            if nxt in "trn":
                out.append({"t": "\t", "r": "\r", "n": "\n"}[nxt])
                i += 2
                continue
        assert c != '"', "an unescaped quote would end the token"
        out.append(c)
        i += 1
    return "".join(out)


@given(st.text())
def test_quote_reads_back_as_the_value(value: str) -> None:
    assert _nginx_unquote(quote(value)) == value


@given(st.text())
def test_pcre_literal_matches_exactly_itself(value: str) -> None:
    assert re.fullmatch(pcre_literal(value), value, flags=re.DOTALL)


@pytest.mark.parametrize(
    ("match", "yes", "no"),
    [
        (StringMatch(exact="a.b"), "a.b", ["axb", "a.bc", "A.B"]),
        (StringMatch(prefix="/api("), "/api(x", ["/ap", "x/api("]),
        (StringMatch(regex="fire(fox|bird)"), "firebird", ["firefox2", "a firefox"]),
    ],
)
def test_match_regex_is_anchored_and_case_sensitive(match: StringMatch, yes: str, no: list[str]) -> None:
    assert re.search(match_regex(match), yes)
    assert not any(re.search(match_regex(match), value) for value in no)


def test_experiment_sets_take_their_share_out_of_the_stables() -> None:
    extra = (WeightedDestination(revision="v1-base", weight=10, name="base"),)
    routing = routing_for(
        desired(20, additional=extra),
        endpoints(v1=["10.0.0.1:80", "10.0.0.3:80"], v2=["10.0.0.2:80"], **{"v1-base": ["10.0.0.4:80"]}),
    )
    assert [(s.address, s.weight, s.revision, s.role) for s in routing.split] == [
        ("10.0.0.1:80", 7, "v1", "stable"),
        ("10.0.0.3:80", 7, "v1", "stable"),
        ("10.0.0.2:80", 4, "v2", "canary"),
        ("10.0.0.4:80", 2, "v1-base", "experiment:base"),
    ]
    with pytest.raises(NotReady, match="experiment's replica set v1-base"):
        routing_for(desired(20, additional=extra), ONE_EACH)
