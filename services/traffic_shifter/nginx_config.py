"""Pure nginx configuration for the nginx traffic provider: what each rollout's traffic needs, as config text.

Decisions live here (which servers with which integer weights, which requests a managed route takes);
services.traffic_shifter.nginx_provider writes the text, has nginx test it, reloads and confirms.

How Argo's semantics map onto stock nginx (no njs/lua):

* Weights: one ``upstream`` per rollout with every ready address of the stable and canary revisions;
  a revision's share is split evenly over its addresses with integer weights (``server_weights``).
  nginx's smooth weighted round robin is deterministic, so with one worker process (the rendered
  ``worker_processes 1``) the split is exact over every cycle of the total weight.
* Header routes (setHeaderRoute): a ``map`` per header match on ``$http_<name>`` yields 0/1, maps over the
  concatenated digits AND and OR them, and a last map picks the canary-only upstream for
  ``proxy_pass http://$<upstream variable>``. Exact and prefix matches become anchored, escaped,
  case-sensitive regexes (plain map strings compare case-insensitively); regexes are full matches as in
  services.traffic_shifter.matching. nginx cannot tell an absent header from an empty one, so an empty
  value never matches (a pattern matching "" would otherwise take every request without the header);
  with a repeated header nginx 1.22 sees the first value (1.23+: all values joined with ", ").
* Mirror routes (setMirrorRoute): the ``mirror`` directive sends every request to an internal location
  that returns 204 unless the first matching route (not already header-routed) picks one; the copy is
  then proxied to a per-route sampler upstream holding the canary addresses and the provider's control
  port as a sink, weighted percentage : 100 - percentage. Smooth round robin makes the sampled share
  exact and evenly interleaved (as the built-in proxy's sampler) where split_clients would hash
  ``$request_id`` at random.
* The control server (``control_port``, always 127.0.0.1) answers ``/_rollouts/generation`` with the
  generation this text was rendered as, so the provider can tell when new connections see new config.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from services.traffic_shifter.providers import NotReady
from services.traffic_shifter.proxy import (
    CANARY,
    EXPERIMENT_PREFIX,
    MIRROR_HEADER,
    REVISION_HEADER,
    ROLE_HEADER,
    STABLE,
)
from shared.messages import Endpoints, TrafficDesired
from shared.routes import HeaderRoute, MirrorRoute, StringMatch

GENERATION_PATH: Final = "/_rollouts/generation"
# Internal location the mirror directive targets; real requests for it get a 404 from nginx.
MIRROR_LOCATION: Final = "/_rollouts_mirror"
CONTROL_HOST: Final = "127.0.0.1"
# Idle connections kept per upstream and worker, so proxying does not open one TCP connection per request.
UPSTREAM_KEEPALIVE: Final = 16

_HEADER_NAME: Final = re.compile(r"[A-Za-z0-9-]+")
_ADDRESS: Final = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")
# nginx expands "$name" inside any value, and offers no escape for "$".
_UNSAFE_VALUE: Final = re.compile(r"[$\x00-\x1f\x7f]")
_INDENT: Final = "    "
_PCRE_SPECIAL: Final = frozenset("\\^$.|?*+()[]{}")


class NginxConfigError(ValueError):
    """A rollout's traffic cannot be written as nginx configuration; the message names rollout and field."""


class Server(msgspec.Struct, frozen=True):
    """One ``server`` line of a weighted upstream."""

    address: str
    weight: int
    revision: str
    role: str  # STABLE, CANARY or experiment:<template name>


class RolloutRouting(msgspec.Struct, frozen=True):
    """Everything nginx needs to serve one rollout, decided from its TrafficDesired and Endpoints."""

    key: str  # "<namespace>/<name>"
    port: int
    split: tuple[Server, ...] = ()  # the weighted upstream; empty: answer 503
    canary_revision: str | None = None
    canary: tuple[str, ...] = ()  # canary addresses for managed routes; empty: routes are inert
    header_routes: tuple[HeaderRoute, ...] = ()
    mirror_routes: tuple[MirrorRoute, ...] = ()
    preview_port: int | None = None
    preview_revision: str | None = None
    preview: tuple[str, ...] = ()


class NginxSettings(msgspec.Struct, frozen=True):
    """Where the provider's nginx keeps its files and listens."""

    state_dir: str  # absolute; pid, error log and temp directories live here
    host: str  # the rollouts' listeners bind this address
    control_port: int  # generation endpoint and mirror sink, on 127.0.0.1
    # "user group" for the worker processes; only set when the provider runs as root, so that workers
    # can use the temp directories under state_dir (nginx would otherwise switch them to nobody).
    worker_user: str | None = None


# --- decisions ----------------------------------------------------------------------------------


def server_weights(shares: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """Integer weight per address for each side, given (share, number of addresses) per side.

    Every address of a side gets the same weight and the sides' totals keep exactly the ratio of their
    shares: side i's address weight is share_i * L / n_i with L the lcm of the live sides' counts,
    reduced by the common divisor. Sides with share 0 or no addresses get 0 (nginx has no weight 0).
    """
    live = [(share, count) for share, count in shares if share > 0 and count > 0]
    if not live:
        return tuple(0 for _ in shares)
    common = math.lcm(*(count for _, count in live))
    raw = [share * common // count if share > 0 and count > 0 else 0 for share, count in shares]
    divisor = math.gcd(*raw)
    return tuple(weight // divisor for weight in raw)


def routing_for(desired: TrafficDesired, endpoints: Endpoints | None) -> RolloutRouting:
    """What nginx must serve for one rollout; NotReady while a needed revision has no ready address.

    Readiness rules follow LocalProxyProvider, so both providers confirm the same weights at the same time.
    """
    key = f"{desired.namespace}/{desired.name}"
    if desired.port is None:
        raise NginxConfigError(
            f"rollout {key}: spec.template.spec.containers[0].ports: nginx mode serves a rollout on its "
            "first containerPort; none is declared"
        )
    revisions = endpoints.revisions if endpoints else {}
    stable = _addresses(key, desired.stable_revision, revisions)
    # One revision in both roles (e.g. a rollback to stable): all of its traffic is stable traffic.
    same = bool(desired.canary_revision) and desired.canary_revision == desired.stable_revision
    canary_revision = None if same else desired.canary_revision
    canary = _addresses(key, canary_revision, revisions)
    weight = desired.canary_weight
    if not 0 <= weight <= 100:
        raise NginxConfigError(f"rollout {key}: canary weight must be within 0..100, got {weight}")
    if desired.stable_revision and not stable and (weight < 100 or same):
        raise NotReady(f"no ready endpoints for the stable revision {desired.stable_revision}")
    if weight > 0 and not same and not canary:
        raise NotReady(f"no ready endpoints for the canary revision {desired.canary_revision}")
    if (desired.header_routes or desired.mirror_routes) and canary_revision and not canary:
        raise NotReady(f"no ready endpoints for the canary revision {canary_revision} (managed routes)")
    preview: tuple[str, ...] = ()
    if desired.preview_revision:
        preview = _addresses(key, desired.preview_revision, revisions)
        if not preview or desired.preview_port is None:
            raise NotReady(
                f"no ready endpoints (or port) for the preview revision {desired.preview_revision}"
            )
    # An experiment's weighted replica sets (additionalDestinations) take their share from the stable's.
    extra = [(d, _addresses(key, d.revision, revisions)) for d in desired.additional]
    for d, found in extra:
        if not found:
            raise NotReady(f"no ready endpoints for the experiment's replica set {d.revision}")
    extra_share = sum(d.weight for d in desired.additional)
    # An empty side hands its share to the other side instead of failing requests.
    if not canary:
        weight = 0
    elif not stable:
        weight = 100
    stable_share = max(0, 100 - weight - extra_share) if stable else 0
    stable_weight, canary_weight, *extra_weights = server_weights(
        ((stable_share, len(stable)), (weight, len(canary)), *((d.weight, len(a)) for d, a in extra))
    )
    split: list[Server] = []
    if stable_weight:
        split += [Server(a, stable_weight, desired.stable_revision or "", STABLE) for a in stable]
    if canary_weight:
        split += [Server(a, canary_weight, canary_revision or "", CANARY) for a in canary]
    for (d, found), server_weight in zip(extra, extra_weights, strict=True):
        if server_weight:
            split += [Server(a, server_weight, d.revision, f"{EXPERIMENT_PREFIX}{d.name}") for a in found]
    routing = RolloutRouting(
        key=key,
        port=desired.port,
        split=tuple(split),
        canary_revision=canary_revision if canary else None,
        canary=canary,
        header_routes=desired.header_routes if canary else (),
        mirror_routes=desired.mirror_routes if canary else (),
        preview_port=desired.preview_port if preview else None,
        preview_revision=desired.preview_revision if preview else None,
        preview=preview,
    )
    _check_values(routing)
    return routing


def _addresses(key: str, revision: str | None, revisions: dict[str, list[str]]) -> tuple[str, ...]:
    if not revision:
        return ()
    addresses = tuple(revisions.get(revision) or ())
    for address in addresses:
        if not _ADDRESS.fullmatch(address):
            raise NginxConfigError(
                f"rollout {key}: endpoints of revision {revision}: {address!r} is not a host:port address"
            )
    return addresses


def _check_values(routing: RolloutRouting) -> None:
    """Reject names nginx would read as variables or that could end a directive early."""
    key = routing.key
    named = [("rollout", key), ("canary revision", routing.canary_revision or "")]
    named += [("revision", s.revision) for s in routing.split]
    named += [("preview revision", routing.preview_revision or "")]
    named += [("mirror route name", r.name) for r in routing.mirror_routes]
    for what, value in named:
        if _UNSAFE_VALUE.search(value):
            raise NginxConfigError(f"rollout {key}: {what} {value!r} contains '$' or a control character")
    for hr in routing.header_routes:
        for hm in hr.match:
            _header_variable(key, f"header route {hr.name!r}", hm.header_name)
    for mr in routing.mirror_routes:
        for entry in mr.match:
            for name in entry.headers or {}:
                _header_variable(key, f"mirror route {mr.name!r}", name)


def _header_variable(key: str, where: str, name: str) -> str:
    if not _HEADER_NAME.fullmatch(name):
        raise NginxConfigError(
            f"rollout {key}: {where}: header name {name!r} must consist of letters, digits and '-' "
            "(nginx reads headers through $http_<name> variables)"
        )
    return "$http_" + name.lower().replace("-", "_")


# --- text ---------------------------------------------------------------------------------------


def quote(value: str) -> str:
    """A double-quoted nginx token that reads back as ``value`` (the parser unescapes \\\\ and \\")."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pcre_literal(value: str) -> str:
    """``value`` as a PCRE pattern matching exactly itself (its metacharacters escaped)."""
    return "".join("\\" + c if c in _PCRE_SPECIAL else c for c in value)


def match_regex(match: StringMatch) -> str:
    """The anchored, case-sensitive PCRE equivalent of an Argo StringMatch (regexes match in full)."""
    if match.exact:
        return f"^{pcre_literal(match.exact)}$"
    if match.prefix:
        return f"^{pcre_literal(match.prefix)}"
    return f"^(?:{match.regex})$"


def slug(key: str) -> str:
    """A name for a rollout's upstreams and variables: readable, and unique thanks to a hash of the key."""
    readable = re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")[:40]
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"rr_{readable}_{digest}"


def section_of(text: str, line: int) -> str | None:
    """The rollout whose section holds 1-based ``line`` of a rendered config, if any."""
    owner: str | None = None
    for number, content in enumerate(text.splitlines(), start=1):
        if number > line:
            break
        stripped = content.strip()
        if stripped.startswith("# rollout "):
            owner = stripped.removeprefix("# rollout ")
        elif stripped.startswith("# end rollout "):
            owner = None
    return owner


class _Text:
    """Indented lines; the renderer's only mutable state."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def line(self, text: str = "") -> None:
        self.lines.append(_INDENT * self.depth + text if text else "")

    def open(self, head: str) -> None:
        self.line(head + " {")
        self.depth += 1

    def close(self) -> None:
        self.depth -= 1
        self.line("}")


class _Maps:
    """Boolean maps over one rollout's request: atoms are "0", "1" or a "${variable}" of 0/1."""

    def __init__(self, out: _Text, prefix: str) -> None:
        self.out = out
        self.prefix = prefix

    def match(self, name: str, source: str, match: StringMatch) -> str:
        var = f"{self.prefix}_{name}"
        # Exact strings are looked up before regexes: an empty (or absent) value never matches.
        self.out.line(f'map {source} ${var} {{ "" 0; {quote("~" + match_regex(match))} 1; default 0; }}')
        return f"${{{var}}}"

    def all(self, name: str, atoms: Sequence[str]) -> str:
        if "0" in atoms:
            return "0"
        rest = [a for a in atoms if a != "1"]
        if not rest:
            return "1"
        if len(rest) == 1:
            return rest[0]
        var = f"{self.prefix}_{name}"
        self.out.line(f'map "{"".join(rest)}" ${var} {{ "{"1" * len(rest)}" 1; default 0; }}')
        return f"${{{var}}}"

    def any(self, name: str, atoms: Sequence[str]) -> str:
        if "1" in atoms:
            return "1"
        rest = [a for a in atoms if a != "0"]
        if not rest:
            return "0"
        if len(rest) == 1:
            return rest[0]
        var = f"{self.prefix}_{name}"
        self.out.line(f'map "{"".join(rest)}" ${var} {{ "~1" 1; default 0; }}')
        return f"${{{var}}}"


_PROXY_HEADERS: Final = (
    # HTTP/1.1 with an empty Connection header keeps upstream connections alive (see keepalive).
    ("Connection", '""'),
    ("Host", "$rollouts_host"),
    ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
    ("X-Forwarded-Host", "$rollouts_host"),
    ("X-Forwarded-Proto", "$scheme"),
)


def render_config(routings: Iterable[RolloutRouting], settings: NginxSettings, generation: str) -> str:
    """The whole nginx.conf for these rollouts (sorted by key, so equal input renders equal text)."""
    ordered = sorted(routings, key=lambda r: r.key)
    _check_ports(ordered, settings.control_port)
    if _UNSAFE_VALUE.search(generation) or '"' in generation or "\\" in generation:
        raise NginxConfigError(f"generation {generation!r} must be plain text")
    state = settings.state_dir.rstrip("/")
    out = _Text()
    out.line("# Written by nats-rollouts' NginxProvider: hand edits are overwritten (drift correction).")
    out.line(f"# generation {generation}")
    out.line("daemon off;")
    out.line("# One worker: smooth weighted round robin is kept per worker, and one worker splits exactly.")
    out.line("worker_processes 1;")
    if settings.worker_user:
        out.line(f"user {settings.worker_user};")
    out.line(f"pid {quote(state + '/nginx.pid')};")
    out.line(f"error_log {quote(state + '/error.log')} notice;")
    out.line("worker_shutdown_timeout 10s;")
    out.open("events")
    out.line("worker_connections 1024;")
    out.close()
    out.open("http")
    out.line("access_log off;")
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        out.line(f"{kind}_temp_path {quote(f'{state}/tmp/{kind}')};")
    out.line("client_max_body_size 0;")
    out.line("proxy_http_version 1.1;")
    out.line(
        "# One revision per request, as the built-in proxy: a failing canary must not hide behind retries."
    )
    out.line("proxy_next_upstream off;")
    for name, value in _PROXY_HEADERS:
        out.line(f"proxy_set_header {name} {value};")
    out.line('map $http_host $rollouts_host { "" $host; default $http_host; }')
    out.line('map $request_uri $rollouts_path { "~^(?<rollouts_path_only>[^?]*)" $rollouts_path_only; }')
    out.line()
    out.line("# control: the generation of this file, and the sink for mirror copies sampled out")
    out.open("server")
    out.line(f"listen {CONTROL_HOST}:{settings.control_port};")
    out.line(f'location = {GENERATION_PATH} {{ return 200 "{generation}\\n"; }}')
    out.line("location / { return 204; }")
    out.close()
    for routing in ordered:
        out.line()
        _render_rollout(out, routing, settings)
    out.close()
    return "\n".join(out.lines) + "\n"


def _check_ports(routings: Sequence[RolloutRouting], control_port: int) -> None:
    owners: dict[int, str] = {control_port: "the nginx provider's control port"}
    for routing in routings:
        listeners = [(routing.port, f"rollout {routing.key}")]
        if routing.preview_port is not None:
            listeners.append((routing.preview_port, f"rollout {routing.key} (preview)"))
        for port, owner in listeners:
            if port in owners:
                raise NginxConfigError(f"{owner}: port {port} is already taken by {owners[port]}")
            owners[port] = owner


def _listen(host: str, port: int) -> str:
    return f"listen [{host}]:{port};" if ":" in host else f"listen {host}:{port};"


def _upstream(out: _Text, name: str, servers: Iterable[tuple[str, int | None, str]]) -> None:
    out.open(f"upstream {name}")
    for address, weight, comment in servers:
        weighted = f" weight={weight}" if weight is not None else ""
        # max_fails=0: a failing address keeps its share, so its errors reach the analysis.
        out.line(f"server {address}{weighted} max_fails=0;  # {comment}")
    out.line(f"keepalive {UPSTREAM_KEEPALIVE};")
    out.close()


def _render_rollout(out: _Text, routing: RolloutRouting, settings: NginxSettings) -> None:
    name = slug(routing.key)
    out.line(f"# rollout {routing.key}")
    if routing.split:
        _upstream(
            out, f"{name}_split", ((s.address, s.weight, f"{s.role} {s.revision}") for s in routing.split)
        )
    maps = _Maps(out, name)
    routed = _header_routing(maps, routing)
    if routed != "0":
        _upstream(
            out, f"{name}_canary", ((a, None, f"canary {routing.canary_revision}") for a in routing.canary)
        )
        out.line(f'map "{routed}" ${name}_upstream {{ 1 {name}_canary; default {name}_split; }}')
    mirrors = _mirror_routing(out, maps, routing, routed, settings)
    revisions: dict[str, str] = {}
    roles: dict[str, str] = {}
    for s in routing.split:
        revisions.setdefault(s.address, s.revision)
        roles.setdefault(s.address, s.role)
    for address in routing.canary:
        revisions.setdefault(address, routing.canary_revision or "")
        roles.setdefault(address, CANARY)
    if revisions:
        _value_map(out, "$upstream_addr", f"{name}_revision", revisions)
        _value_map(out, "$upstream_addr", f"{name}_role", roles)
    out.open("server")
    out.line(_listen(settings.host, routing.port))
    out.open("location /")
    if not routing.split:
        out.line(f'return 503 "nginx: rollout {routing.key} has no backends available\\n";')
    else:
        if mirrors:
            out.line(f"mirror {MIRROR_LOCATION};")
        target = f"${name}_upstream" if routed != "0" else f"{name}_split"
        out.line(f"proxy_pass http://{target};")
        out.line(f"add_header {REVISION_HEADER} ${name}_revision always;")
        out.line(f"add_header {ROLE_HEADER} ${name}_role always;")
    out.close()
    if mirrors:
        out.open(f"location = {MIRROR_LOCATION}")
        out.line("internal;")
        out.line(f'if (${name}_mirror = "") {{ return 204; }}')
        for header, value in _PROXY_HEADERS:
            out.line(f"proxy_set_header {header} {value};")
        out.line(f"proxy_set_header {MIRROR_HEADER} ${name}_mirror_name;")
        out.line(f"proxy_pass http://${name}_mirror$request_uri;")
        out.close()
    out.close()
    if routing.preview and routing.preview_port is not None:
        revision = routing.preview_revision or ""
        _upstream(out, f"{name}_preview", ((a, None, f"preview {revision}") for a in routing.preview))
        out.open("server")
        out.line(_listen(settings.host, routing.preview_port))
        out.open("location /")
        out.line(f"proxy_pass http://{name}_preview;")
        out.line(f"add_header {REVISION_HEADER} {quote(revision)} always;")
        # The preview listener routes its revision as its stable one, as the built-in proxy does.
        out.line(f"add_header {ROLE_HEADER} {STABLE} always;")
        out.close()
        out.close()
    out.line(f"# end rollout {routing.key}")


def _value_map(out: _Text, source: str, var: str, values: dict[str, str]) -> None:
    out.open(f"map {source} ${var}")
    out.line('default "";')
    for key, value in values.items():
        out.line(f"{quote(key)} {quote(value)};")
    out.close()


def _header_routing(maps: _Maps, routing: RolloutRouting) -> str:
    """The atom telling whether a request takes a header route to the canary."""
    routes: list[str] = []
    for i, route in enumerate(routing.header_routes):
        atoms = [
            maps.match(f"h{i}_{j}", _header_variable(routing.key, route.name, m.header_name), m.header_value)
            for j, m in enumerate(route.match)
        ]
        # A route without matches is how Argo removes it: it matches nothing.
        routes.append(maps.all(f"h{i}", atoms) if atoms else "0")
    return maps.any("routed", routes)


def _mirror_routing(
    out: _Text, maps: _Maps, routing: RolloutRouting, routed: str, settings: NginxSettings
) -> bool:
    """Maps choosing the sampler upstream of the first matching mirror route; False when none can match."""
    name = maps.prefix
    atoms: list[str] = []
    for i, route in enumerate(routing.mirror_routes):
        entries: list[str] = []
        for e, entry in enumerate(route.match):
            fields: list[str] = []
            if entry.method is not None:
                fields.append(maps.match(f"m{i}_{e}_method", "$request_method", entry.method))
            if entry.path is not None:
                fields.append(maps.match(f"m{i}_{e}_path", "$rollouts_path", entry.path))
            for k, (header, match) in enumerate((entry.headers or {}).items()):
                source = _header_variable(routing.key, route.name, header)
                fields.append(maps.match(f"m{i}_{e}_h{k}", source, match))
            entries.append(maps.all(f"m{i}_{e}", fields))
        atoms.append(maps.any(f"m{i}", entries))
    live = [
        i for i, (atom, route) in enumerate(zip(atoms, routing.mirror_routes, strict=True))
        if atom != "0" and route.percentage > 0
    ]  # fmt: skip
    if routed == "1" or not live:
        return False
    for i in live:
        share = routing.mirror_routes[i].percentage
        canary_weight, sink_weight = server_weights(((share, len(routing.canary)), (100 - share, 1)))
        servers = [(a, canary_weight, f"canary {routing.canary_revision}") for a in routing.canary]
        if sink_weight:
            servers.append((f"{CONTROL_HOST}:{settings.control_port}", sink_weight, "sink: not copied"))
        _upstream(out, f"{name}_mirror{i}", servers)
    # Header-routed requests are not copied; among the rest, the first matching route decides
    # (a 0% route still shadows the routes after it, as in the built-in proxy).
    digits = "".join([routed, *atoms])
    out.open(f'map "{digits}" ${name}_mirror')
    out.line('default "";')
    for i in live:
        out.line(f'"~^0{{{i + 1}}}1" {name}_mirror{i};')
    out.close()
    names = {f"{name}_mirror{i}": routing.mirror_routes[i].name for i in live}
    _value_map(out, f"${name}_mirror", f"{name}_mirror_name", names)
    return True


__all__ = [
    "GENERATION_PATH",
    "MIRROR_LOCATION",
    "NginxConfigError",
    "NginxSettings",
    "RolloutRouting",
    "Server",
    "match_regex",
    "pcre_literal",
    "quote",
    "render_config",
    "routing_for",
    "section_of",
    "server_weights",
    "slug",
]
