"""The pure Kubernetes traffic routers: Istio VirtualService weights, TLS/TCP route selection, managed
header/mirror routes (insertion order, removal), DestinationRule subsets; the NGINX canary Ingress
(clone, annotations, header annotations, ownership); the SMI TrafficSplit per API version; Gateway
API HTTPRoute weights and header rules. Every case compares the exact object Argo would store."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.traffic_shifter.kube import RouterError, owner_reference
from services.traffic_shifter.kube.gateway_api import (
    MANAGED_RULES,
    GatewayWeights,
    gateway_config,
    http_route,
    http_routes,
)
from services.traffic_shifter.kube.istio import (
    IstioWeights,
    destination_rule,
    virtual_service,
    virtual_service_address,
)
from services.traffic_shifter.kube.nginx_ingress import (
    NginxWeights,
    canary_ingress,
    canary_ingress_name,
    stable_ingresses,
)
from services.traffic_shifter.kube.smi import SmiWeights, traffic_split
from shared.routes import HeaderMatch, HeaderRoute, MirrorRoute, RouteMatch, StringMatch
from shared.specs.rollouts import (
    IstioDestinationRule,
    IstioVirtualService,
    NginxTrafficRouting,
    SMITrafficRouting,
    TCPRoute,
    TLSRoute,
)

Obj = dict[str, Any]
VS_FIELD = "spec.strategy.canary.trafficRouting.istio.virtualService"


def _dest(host: str, weight: int | None = None, *, subset: str = "", port: int = 0) -> Obj:
    destination: Obj = {"host": host}
    if subset:
        destination["subset"] = subset
    if port:
        destination["port"] = {"number": port}
    out: Obj = {"destination": destination}
    if weight is not None:
        out["weight"] = weight
    return out


def _vs(**spec: Any) -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "VirtualService",
        "metadata": {"name": "vs", "namespace": "default", "resourceVersion": "7"},
        "spec": {"hosts": ["app"], **spec},
    }


def _want(weight: int, **kw: Any) -> IstioWeights:
    return IstioWeights(canary_service="canary", stable_service="stable", canary_weight=weight, **kw)


def _header(name: str, header: str = "x-canary", value: StringMatch | None = None) -> HeaderRoute:
    return HeaderRoute(
        name=name, match=(HeaderMatch(header_name=header, header_value=value or StringMatch(exact="yes")),)
    )


# --- Istio VirtualService ------------------------------------------------------------------------


def test_istio_sets_canary_and_stable_weights_on_the_only_route() -> None:
    live = _vs(
        http=[
            {
                "route": [
                    _dest("stable.default.svc.cluster.local", 100),
                    _dest("canary.default.svc.cluster.local", 0),
                ]
            }
        ]
    )
    new = virtual_service(live, IstioVirtualService(name="vs"), _want(30), field=VS_FIELD)
    assert new == _vs(
        http=[
            {
                "route": [
                    _dest("stable.default.svc.cluster.local", 70),
                    _dest("canary.default.svc.cluster.local", 30),
                ]
            }
        ]
    )
    assert live["spec"]["http"][0]["route"][0]["weight"] == 100  # the input is not mutated


def test_istio_leaves_right_weights_alone_and_an_absent_weight_counts_as_zero() -> None:
    live = _vs(http=[{"route": [_dest("stable", 100), _dest("canary")]}])
    assert virtual_service(live, IstioVirtualService(name="vs"), _want(0), field=VS_FIELD) == live


def test_istio_selects_named_http_routes_only() -> None:
    live = _vs(
        http=[
            {"name": "primary", "route": [_dest("stable", 100), _dest("canary", 0)]},
            {"name": "secondary", "route": [_dest("stable", 100), _dest("canary", 0)]},
            {"name": "other", "route": [_dest("stable", 100), _dest("canary", 0)]},
        ]
    )
    spec = IstioVirtualService(name="vs", routes=["secondary", "primary"])
    new = virtual_service(live, spec, _want(10), field=VS_FIELD)
    assert [[d.get("weight") for d in r["route"]] for r in new["spec"]["http"]] == [
        [90, 10],
        [90, 10],
        [100, 0],
    ]


def test_istio_errors_name_the_object_and_the_field() -> None:
    live = _vs(http=[{"name": "primary", "route": [_dest("stable", 100), _dest("canary", 0)]}])
    with pytest.raises(
        RouterError,
        match=r"istio VirtualService default/vs: HTTP route 'missing' not found \("
        + VS_FIELD.replace(".", r"\.")
        + r"\.routes\)",
    ):
        virtual_service(live, IstioVirtualService(name="vs", routes=["missing"]), _want(10), field=VS_FIELD)
    with pytest.raises(RouterError, match=r"named 'primary': list it in .*virtualService\.routes"):
        virtual_service(live, IstioVirtualService(name="vs"), _want(10), field=VS_FIELD)
    two = _vs(
        http=[{"route": [_dest("stable"), _dest("canary")]}, {"route": [_dest("stable"), _dest("canary")]}]
    )
    with pytest.raises(RouterError, match=r"exactly one route .* it has 2"):
        virtual_service(two, IstioVirtualService(name="vs"), _want(10), field=VS_FIELD)
    no_canary = _vs(http=[{"route": [_dest("stable", 100)]}])
    with pytest.raises(RouterError, match=r"canary Service 'canary' not found in http\[0\]"):
        virtual_service(no_canary, IstioVirtualService(name="vs"), _want(10), field=VS_FIELD)


def test_istio_drops_foreign_destinations_that_carry_traffic() -> None:
    live = _vs(
        http=[{"route": [_dest("stable", 80), _dest("canary", 10), _dest("legacy", 10), _dest("spare", 0)]}]
    )
    new = virtual_service(live, IstioVirtualService(name="vs"), _want(50), field=VS_FIELD)
    assert new["spec"]["http"] == [{"route": [_dest("stable", 50), _dest("canary", 50), _dest("spare", 0)]}]


def test_istio_weights_subsets_when_a_destination_rule_is_configured() -> None:
    live = _vs(http=[{"route": [_dest("app", 100, subset="stable"), _dest("app", 0, subset="canary")]}])
    want = _want(25, canary_subset="canary", stable_subset="stable", destination_host="app")
    new = virtual_service(live, IstioVirtualService(name="vs"), want, field=VS_FIELD)
    assert new["spec"]["http"] == [
        {"route": [_dest("app", 75, subset="stable"), _dest("app", 25, subset="canary")]}
    ]
    missing = _vs(http=[{"route": [_dest("app", 100, subset="stable")]}])
    with pytest.raises(RouterError, match="canary DestinationRule subset 'canary' not found"):
        virtual_service(missing, IstioVirtualService(name="vs"), want, field=VS_FIELD)


def test_istio_tls_routes_selected_by_port_and_sni_hosts() -> None:
    tls = [
        {
            "match": [{"port": 443, "sniHosts": ["a.example.com"]}],
            "route": [_dest("stable", 100), _dest("canary", 0)],
        },
        {
            "match": [{"port": 443, "sniHosts": ["b.example.com", "c.example.com"]}],
            "route": [_dest("stable", 100), _dest("canary", 0)],
        },
        {"match": [{"port": 8443}], "route": [_dest("stable", 100), _dest("canary", 0)]},
    ]
    live = _vs(tls=tls)
    spec = IstioVirtualService(
        name="vs", tls_routes=[TLSRoute(port=443, sni_hosts=["c.example.com", "b.example.com"])]
    )
    new = virtual_service(live, spec, _want(40), field=VS_FIELD)
    assert [[d["weight"] for d in r["route"]] for r in new["spec"]["tls"]] == [[100, 0], [60, 40], [100, 0]]
    spec = IstioVirtualService(name="vs", tls_routes=[TLSRoute(port=8443)])
    new = virtual_service(live, spec, _want(40), field=VS_FIELD)
    assert [[d["weight"] for d in r["route"]] for r in new["spec"]["tls"]] == [[100, 0], [100, 0], [60, 40]]
    with pytest.raises(
        RouterError, match=r"no TLS route matches port 443 and sniHosts \['z'\] \(.*tlsRoutes\)"
    ):
        virtual_service(
            live,
            IstioVirtualService(name="vs", tls_routes=[TLSRoute(port=443, sni_hosts=["z"])]),
            _want(1),
            field=VS_FIELD,
        )
    with pytest.raises(RouterError, match=r"spec\.tls must have exactly one route"):
        virtual_service(live, IstioVirtualService(name="vs"), _want(1), field=VS_FIELD)


def test_istio_tcp_routes_selected_by_port_and_the_only_one_without_selector() -> None:
    live = _vs(
        tcp=[
            {"match": [{"port": 3000}], "route": [_dest("stable", 100), _dest("canary", 0)]},
            {"match": [{"port": 3001}, {"port": 3002}], "route": [_dest("stable", 100), _dest("canary", 0)]},
        ]
    )
    new = virtual_service(
        live, IstioVirtualService(name="vs", tcp_routes=[TCPRoute(port=3000)]), _want(5), field=VS_FIELD
    )
    assert new["spec"]["tcp"][0]["route"] == [_dest("stable", 95), _dest("canary", 5)]
    assert new["spec"]["tcp"][1] == live["spec"]["tcp"][1]
    with pytest.raises(
        RouterError, match=r"no TCP route matches port 3001"
    ):  # a route naming two ports never matches
        virtual_service(
            live, IstioVirtualService(name="vs", tcp_routes=[TCPRoute(port=3001)]), _want(5), field=VS_FIELD
        )
    single = _vs(tcp=[{"route": [_dest("stable", 100), _dest("canary", 0)]}])
    assert virtual_service(single, IstioVirtualService(name="vs"), _want(60), field=VS_FIELD)["spec"][
        "tcp"
    ] == [{"route": [_dest("stable", 40), _dest("canary", 60)]}]


def test_istio_header_and_mirror_routes_go_on_top_in_managed_routes_order() -> None:
    live = _vs(
        http=[
            {"name": "primary", "route": [_dest("stable", 100, port=8080), _dest("canary", 0, port=8080)]},
            {"name": "static", "route": [_dest("files", 100)]},
        ]
    )
    mirror = MirrorRoute(
        name="mirror-1",
        percentage=35,
        match=(
            RouteMatch(
                method=StringMatch(exact="GET"),
                path=StringMatch(prefix="/api"),
                headers={"x-user": StringMatch(regex="qa-.*")},
            ),
        ),
    )
    header = HeaderRoute(
        name="header-1",
        match=(
            HeaderMatch(header_name="x-canary", header_value=StringMatch(exact="yes")),
            HeaderMatch(header_name="user-agent", header_value=StringMatch(prefix="Firefox")),
        ),
    )
    want = _want(
        20, managed_routes=("mirror-1", "header-1"), header_routes=(header,), mirror_routes=(mirror,)
    )
    new = virtual_service(live, IstioVirtualService(name="vs", routes=["primary"]), want, field=VS_FIELD)
    assert new["spec"]["http"] == [
        {
            "name": "mirror-1",
            "match": [
                {
                    "method": {"exact": "GET"},
                    "uri": {"prefix": "/api"},
                    "headers": {"x-user": {"regex": "qa-.*"}},
                }
            ],
            "route": [_dest("stable", 80, port=8080), _dest("canary", 20, port=8080)],
            "mirror": {"host": "canary", "port": {"number": 8080}},
            "mirrorPercentage": {"value": 35},
        },
        {
            "name": "header-1",
            "match": [
                {"headers": {"x-canary": {"exact": "yes"}}},
                {"headers": {"user-agent": {"prefix": "Firefox"}}},
            ],
            "route": [_dest("canary", 100, port=8080)],
        },
        {"name": "primary", "route": [_dest("stable", 80, port=8080), _dest("canary", 20, port=8080)]},
        {"name": "static", "route": [_dest("files", 100)]},
    ]
    # Applying again changes nothing; a later weight also moves the mirror route's copy of the weights.
    assert (
        virtual_service(new, IstioVirtualService(name="vs", routes=["primary"]), want, field=VS_FIELD) == new
    )
    later = virtual_service(
        new,
        IstioVirtualService(name="vs", routes=["primary"]),
        _want(50, managed_routes=want.managed_routes, header_routes=(header,), mirror_routes=(mirror,)),
        field=VS_FIELD,
    )
    assert later["spec"]["http"][0]["route"] == [
        _dest("stable", 50, port=8080),
        _dest("canary", 50, port=8080),
    ]


def test_istio_managed_routes_use_the_destination_rule_host_and_canary_subset() -> None:
    live = _vs(http=[{"route": [_dest("app", 100, subset="stable"), _dest("app", 0, subset="canary")]}])
    want = _want(
        0,
        canary_subset="canary",
        stable_subset="stable",
        destination_host="app.default.svc.cluster.local",
        managed_routes=("h",),
        header_routes=(_header("h"),),
    )
    new = virtual_service(live, IstioVirtualService(name="vs"), want, field=VS_FIELD)
    assert new["spec"]["http"][0] == {
        "name": "h",
        "match": [{"headers": {"x-canary": {"exact": "yes"}}}],
        "route": [_dest("app.default.svc.cluster.local", 100, subset="canary")],
    }


def test_istio_managed_routes_no_longer_in_effect_are_removed() -> None:
    live = _vs(
        http=[
            {"name": "h1", "match": [{"headers": {"a": {"exact": "1"}}}], "route": [_dest("canary", 100)]},
            {"name": "h2", "match": [{"headers": {"b": {"exact": "2"}}}], "route": [_dest("canary", 100)]},
            {"route": [_dest("stable", 100), _dest("canary", 0)]},
        ]
    )
    # h1 is gone from the desired state; h2 was "removed" by a setHeaderRoute without match.
    want = _want(0, managed_routes=("h1", "h2"), header_routes=(HeaderRoute(name="h2"),))
    new = virtual_service(live, IstioVirtualService(name="vs"), want, field=VS_FIELD)
    assert new["spec"]["http"] == [{"route": [_dest("stable", 100), _dest("canary", 0)]}]


def test_istio_managed_route_must_be_declared() -> None:
    live = _vs(http=[{"route": [_dest("stable", 100), _dest("canary", 0)]}])
    with pytest.raises(RouterError, match=r"managed route 'h' is not listed in .*managedRoutes"):
        virtual_service(
            live, IstioVirtualService(name="vs"), _want(0, header_routes=(_header("h"),)), field=VS_FIELD
        )
    tls_only = _vs(tls=[{"route": [_dest("stable", 100), _dest("canary", 0)]}])
    with pytest.raises(RouterError, match=r"spec\.http not found"):
        virtual_service(
            tls_only,
            IstioVirtualService(name="vs"),
            _want(0, managed_routes=("h",), header_routes=(_header("h"),)),
            field=VS_FIELD,
        )


@given(
    weights=st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=4),
    with_header=st.booleans(),
    with_mirror=st.booleans(),
)
def test_istio_is_idempotent_and_weights_sum_to_100(
    weights: list[int], with_header: bool, with_mirror: bool
) -> None:
    obj = _vs(
        http=[
            {"name": "p", "route": [_dest("stable", 100), _dest("canary", 0)]},
            {"name": "x", "route": [_dest("x")]},
        ]
    )
    spec = IstioVirtualService(name="vs", routes=["p"])
    for weight in weights:
        want = _want(
            weight,
            managed_routes=("m", "h"),
            header_routes=(_header("h"),) if with_header else (),
            mirror_routes=(MirrorRoute(name="m", match=(RouteMatch(path=StringMatch(exact="/")),)),)
            if with_mirror
            else (),
        )
        obj = virtual_service(obj, spec, want, field=VS_FIELD)
        assert virtual_service(obj, spec, want, field=VS_FIELD) == obj
        names = [r.get("name") for r in obj["spec"]["http"]]
        assert names == [
            n for n in ("m", "h") if (n == "m" and with_mirror) or (n == "h" and with_header)
        ] + ["p", "x"]
        primary = obj["spec"]["http"][names.index("p")]
        assert sum(d.get("weight", 0) for d in primary["route"]) == 100
        assert primary["route"][1].get("weight", 0) == weight


def test_virtual_service_address_accepts_name_dot_namespace() -> None:
    assert virtual_service_address("vs", "default") == ("default", "vs")
    assert virtual_service_address("vs.mesh", "default") == ("mesh", "vs")


# --- Istio DestinationRule -----------------------------------------------------------------------


def _dr(subsets: list[Obj]) -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "DestinationRule",
        "metadata": {"name": "dr", "namespace": "default", "annotations": {"team": "a"}},
        "spec": {"host": "app", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}, "subsets": subsets},
    }


def test_destination_rule_subsets_select_revisions() -> None:
    live = _dr(
        [
            {"name": "canary", "labels": {"app": "x"}},
            {
                "name": "stable",
                "labels": {"app": "x", "rollouts-pod-template-hash": "old"},
                "trafficPolicy": {"x": 1},
            },
            {"name": "exp", "labels": {"app": "x"}},
            {"name": "stray"},
        ]
    )
    spec = IstioDestinationRule(
        name="dr", canary_subset_name="canary", stable_subset_name="stable", additional_subset_names=["exp"]
    )
    new = destination_rule(live, spec, rollout="app", canary_hash="c1", stable_hash="s1")
    expected = _dr(
        [
            {"name": "canary", "labels": {"app": "x", "rollouts-pod-template-hash": "c1"}},
            {
                "name": "stable",
                "labels": {"app": "x", "rollouts-pod-template-hash": "s1"},
                "trafficPolicy": {"x": 1},
            },
            {"name": "exp", "labels": {"app": "x"}},
        ]
    )
    expected["metadata"]["annotations"]["argo-rollouts.argoproj.io/managed-by-rollouts"] = "app"
    assert new == expected
    cleared = destination_rule(new, spec, rollout="app", canary_hash=None, stable_hash="s1")
    assert cleared["spec"]["subsets"][0] == {"name": "canary", "labels": {"app": "x"}}


# --- NGINX ---------------------------------------------------------------------------------------


def _stable_ingress() -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "annotations": {
                "kubernetes.io/ingress.class": "nginx",
                "nginx.ingress.kubernetes.io/rewrite-target": "/",
            },
            "labels": {"app": "web"},
        },
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["shop.example.com"], "secretName": "tls"}],
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web-stable", "port": {"number": 80}}},
                            },
                            {
                                "path": "/img",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "images", "port": {"number": 80}}},
                            },
                        ]
                    },
                },
                {
                    "host": "static.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "images", "port": {"number": 80}}},
                            }
                        ]
                    },
                },
            ],
        },
    }


def _nginx_want(weight: int, **kw: Any) -> NginxWeights:
    return NginxWeights(
        rollout="web", canary_service="web-canary", stable_service="web-stable", canary_weight=weight, **kw
    )


def test_nginx_canary_ingress_is_cloned_from_the_stable_one() -> None:
    new = canary_ingress(
        _stable_ingress(), None, NginxTrafficRouting(stable_ingress="web"), _nginx_want(15, owner_uid="u-1")
    )
    assert new == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "web-web-canary",
            "namespace": "shop",
            "annotations": {
                "kubernetes.io/ingress.class": "nginx",
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "15",
            },
            "ownerReferences": [owner_reference("web", "u-1")],
        },
        "spec": {
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web-canary", "port": {"number": 80}}},
                            },
                            {
                                "path": "/img",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "images", "port": {"number": 80}}},
                            },
                        ]
                    },
                }
            ],
            "tls": [{"hosts": ["shop.example.com"], "secretName": "tls"}],
            "ingressClassName": "nginx",
        },
    }
    assert owner_reference("web", "u-1") == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "name": "web",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_nginx_annotations_prefix_total_and_verbatim_canary_annotations() -> None:
    spec = NginxTrafficRouting(
        stable_ingress="web",
        annotation_prefix="custom.nginx.io",
        additional_ingress_annotations={"canary-by-cookie": "beta", "custom.nginx.io/load-balance": "ewma"},
        canary_ingress_annotations={"example.com/owner": "team-a"},
    )
    new = canary_ingress(_stable_ingress(), None, spec, _nginx_want(3, max_weight=1000))
    assert new["metadata"]["annotations"] == {
        "kubernetes.io/ingress.class": "nginx",
        "custom.nginx.io/canary-by-cookie": "beta",
        "custom.nginx.io/load-balance": "ewma",
        "example.com/owner": "team-a",
        "custom.nginx.io/canary": "true",
        "custom.nginx.io/canary-weight": "3",
        "custom.nginx.io/canary-weight-total": "1000",
    }
    assert "ownerReferences" not in new["metadata"]  # no Rollout uid known


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (StringMatch(exact="always"), {"nginx.ingress.kubernetes.io/canary-by-header-value": "always"}),
        (
            StringMatch(regex="qa-[0-9]+"),
            {"nginx.ingress.kubernetes.io/canary-by-header-pattern": "qa-[0-9]+"},
        ),
        (StringMatch(prefix="v1.2"), {"nginx.ingress.kubernetes.io/canary-by-header-pattern": r"^v1\.2.*"}),
    ],
)
def test_nginx_header_route_becomes_canary_by_header(value: StringMatch, expected: dict[str, str]) -> None:
    spec = NginxTrafficRouting(
        stable_ingress="web", additional_ingress_annotations={"canary-by-header-value": "from-spec"}
    )
    new = canary_ingress(
        _stable_ingress(), None, spec, _nginx_want(0, header_routes=(_header("h", "X-Canary", value),))
    )
    assert new["metadata"]["annotations"] == {
        "kubernetes.io/ingress.class": "nginx",
        "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary",
        **expected,
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "0",
    }


def test_nginx_rejects_header_routes_it_cannot_express_and_ignores_removed_ones() -> None:
    spec = NginxTrafficRouting(stable_ingress="web")
    with pytest.raises(RouterError, match=r"one header condition; the header routes in effect are a .*, b "):
        canary_ingress(
            _stable_ingress(), None, spec, _nginx_want(0, header_routes=(_header("a"), _header("b")))
        )
    removed = canary_ingress(
        _stable_ingress(), None, spec, _nginx_want(0, header_routes=(HeaderRoute(name="a"),))
    )
    assert "nginx.ingress.kubernetes.io/canary-by-header" not in removed["metadata"]["annotations"]


def test_nginx_updates_an_existing_canary_ingress_it_controls() -> None:
    spec = NginxTrafficRouting(stable_ingress="web")
    created = canary_ingress(_stable_ingress(), None, spec, _nginx_want(10, owner_uid="u-1"))
    live = copy.deepcopy(created)
    live["metadata"].update(
        resourceVersion="42",
        uid="i-1",
        labels={"stray": "x"},
        annotations={"nginx.ingress.kubernetes.io/canary-weight": "99"},
    )
    live["status"] = {"loadBalancer": {}}
    new = canary_ingress(_stable_ingress(), live, spec, _nginx_want(20, owner_uid="u-1"))
    expected = copy.deepcopy(live)
    expected["metadata"].pop("labels")
    expected["metadata"]["annotations"] = {
        **created["metadata"]["annotations"],
        "nginx.ingress.kubernetes.io/canary-weight": "20",
    }
    assert new == expected
    with pytest.raises(
        RouterError, match="nginx canary Ingress shop/web-web-canary is controlled by another object"
    ):
        canary_ingress(_stable_ingress(), live, spec, _nginx_want(20, owner_uid="someone-else"))


def test_nginx_stable_ingress_must_route_to_the_stable_service() -> None:
    stable = _stable_ingress()
    with pytest.raises(RouterError, match="nginx Ingress shop/web has no rules using service other backend"):
        canary_ingress(
            stable,
            None,
            NginxTrafficRouting(stable_ingress="web"),
            NginxWeights(rollout="web", canary_service="c", stable_service="other", canary_weight=0),
        )


def test_nginx_names() -> None:
    assert canary_ingress_name("web", "main") == "web-main-canary"
    long = canary_ingress_name("r" * 200, "i" * 100)
    assert len(long) == 253 and long.endswith("-canary")
    assert stable_ingresses(NginxTrafficRouting(stable_ingresses=["a", "b"])) == [
        ("a", "spec.strategy.canary.trafficRouting.nginx.stableIngresses[0]"),
        ("b", "spec.strategy.canary.trafficRouting.nginx.stableIngresses[1]"),
    ]
    with pytest.raises(RouterError, match="stableIngress or stableIngresses is required"):
        stable_ingresses(NginxTrafficRouting())


# --- SMI -----------------------------------------------------------------------------------------


def _smi_want(weight: int, owner_uid: str | None = "u-1") -> SmiWeights:
    return SmiWeights(
        rollout="app",
        namespace="default",
        canary_service="app-canary",
        stable_service="app-stable",
        canary_weight=weight,
        owner_uid=owner_uid,
    )


def test_smi_traffic_split_per_api_version() -> None:
    assert traffic_split(None, SMITrafficRouting(), _smi_want(30), api_version="v1alpha1") == {
        "apiVersion": "split.smi-spec.io/v1alpha1",
        "kind": "TrafficSplit",
        "metadata": {
            "name": "app",
            "namespace": "default",
            "ownerReferences": [owner_reference("app", "u-1")],
        },
        "spec": {
            "service": "app-stable",
            "backends": [
                {"service": "app-canary", "weight": "30"},
                {"service": "app-stable", "weight": "70"},
            ],
        },
    }
    split = traffic_split(
        None,
        SMITrafficRouting(root_service="app", traffic_split_name="split"),
        _smi_want(30, None),
        api_version="v1alpha3",
    )
    assert split == {
        "apiVersion": "split.smi-spec.io/v1alpha3",
        "kind": "TrafficSplit",
        "metadata": {"name": "split", "namespace": "default"},
        "spec": {
            "service": "app",
            "backends": [{"service": "app-canary", "weight": 30}, {"service": "app-stable", "weight": 70}],
        },
    }
    with pytest.raises(RouterError, match="API version 'v2' is not one of v1alpha1, v1alpha2, v1alpha3"):
        traffic_split(None, SMITrafficRouting(), _smi_want(1), api_version="v2")


def test_smi_existing_split_gets_the_spec_if_the_rollout_controls_it() -> None:
    live = traffic_split(None, SMITrafficRouting(), _smi_want(30), api_version="v1alpha2")
    live["metadata"]["resourceVersion"] = "9"
    live["spec"]["matches"] = [{"kind": "HTTPRouteGroup", "name": "x"}]
    new = traffic_split(live, SMITrafficRouting(), _smi_want(60), api_version="v1alpha2")
    assert new["metadata"] == live["metadata"]
    assert new["spec"] == {
        "service": "app-stable",
        "backends": [{"service": "app-canary", "weight": 60}, {"service": "app-stable", "weight": 40}],
    }
    with pytest.raises(
        RouterError, match=r"SMI TrafficSplit default/app is not controlled by Rollout default/app"
    ):
        traffic_split(live, SMITrafficRouting(), _smi_want(60, owner_uid="other"), api_version="v1alpha2")


# --- Gateway API ---------------------------------------------------------------------------------


def _route(rules: list[Obj], annotations: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": "web", "namespace": "default", "resourceVersion": "3"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": meta,
        "spec": {"parentRefs": [{"name": "gw"}], "rules": rules},
    }


def _ref(name: str, weight: int | None = None) -> Obj:
    out: Obj = {"group": "", "kind": "Service", "name": name, "port": 80}
    if weight is not None:
        out["weight"] = weight
    return out


def _gw_want(weight: int, **kw: Any) -> GatewayWeights:
    return GatewayWeights(
        canary_service="web-canary", stable_service="web-stable", canary_weight=weight, **kw
    )


MAIN_RULE: Obj = {
    "matches": [{"path": {"type": "PathPrefix", "value": "/"}, "queryParams": [{"name": "v", "value": "2"}]}],
    "filters": [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x", "value": "1"}]}}
    ],
    "backendRefs": [_ref("web-stable", 100), _ref("web-canary", 0)],
}


def test_gateway_sets_backend_ref_weights_in_every_rule() -> None:
    live = _route([MAIN_RULE, {"backendRefs": [_ref("web-stable"), _ref("web-canary"), _ref("legacy", 5)]}])
    new = http_route(live, _gw_want(30), use_header_routes=True)
    assert new == _route(
        [
            {**MAIN_RULE, "backendRefs": [_ref("web-stable", 70), _ref("web-canary", 30)]},
            {"backendRefs": [_ref("web-stable", 70), _ref("web-canary", 30), _ref("legacy", 5)]},
        ]
    )
    with pytest.raises(
        RouterError, match=r"HTTPRoute default/web: no backendRef names the canary Service 'web-canary'"
    ):
        http_route(_route([{"backendRefs": [_ref("web-stable", 100)]}]), _gw_want(30), use_header_routes=True)


def test_gateway_header_rule_is_appended_recorded_and_removed() -> None:
    live = _route([MAIN_RULE])
    headers = HeaderRoute(
        name="beta",
        match=(
            HeaderMatch(header_name="x-beta", header_value=StringMatch(exact="1")),
            HeaderMatch(header_name="user-agent", header_value=StringMatch(prefix="Mozilla")),
        ),
    )
    want = _gw_want(10, managed_routes=("beta",), header_routes=(headers,))
    new = http_route(live, want, use_header_routes=True)
    header_rule = {
        "matches": [
            {
                "path": {"type": "PathPrefix", "value": "/"},
                "headers": [
                    {"name": "x-beta", "type": "Exact", "value": "1"},
                    {"name": "user-agent", "type": "RegularExpression", "value": "Mozilla.*"},
                ],
                "queryParams": [{"name": "v", "value": "2"}],
            }
        ],
        "backendRefs": [{"group": "", "kind": "Service", "name": "web-canary", "port": 80}],
        "filters": MAIN_RULE["filters"],
    }
    assert new == _route(
        [{**MAIN_RULE, "backendRefs": [_ref("web-stable", 90), _ref("web-canary", 10)]}, header_rule],
        annotations={MANAGED_RULES: '{"beta":1}'},
    )
    assert http_route(new, want, use_header_routes=True) == new  # rebuilt in place, not appended twice
    # The managed rule's lone canary backendRef keeps no weight when the weight moves.
    moved = http_route(
        new, _gw_want(40, managed_routes=("beta",), header_routes=(headers,)), use_header_routes=True
    )
    assert moved["spec"]["rules"][1] == header_rule
    removed = http_route(new, _gw_want(10, managed_routes=("beta",)), use_header_routes=True)
    assert removed == _route(
        [{**MAIN_RULE, "backendRefs": [_ref("web-stable", 90), _ref("web-canary", 10)]}], annotations={}
    )
    assert http_route(live, want, use_header_routes=False)["spec"]["rules"] == [
        {**MAIN_RULE, "backendRefs": [_ref("web-stable", 90), _ref("web-canary", 10)]}
    ]


def test_gateway_keeps_a_recorded_index_that_no_longer_holds_a_managed_rule() -> None:
    live = _route([MAIN_RULE, {"backendRefs": [_ref("other", 1)]}], annotations={MANAGED_RULES: '{"beta":1}'})
    new = http_route(live, _gw_want(10, managed_routes=("beta",)), use_header_routes=True)
    assert new["spec"]["rules"][1] == {"backendRefs": [_ref("other", 1)]}
    assert new["metadata"]["annotations"] == {}


def test_gateway_config_parsing() -> None:
    config = gateway_config(
        {"httpRoutes": [{"name": "a"}, {"name": "b", "useHeaderRoutes": True}], "httpRoute": "c"}
    )
    field = "spec.strategy.canary.trafficRouting.plugins.argoproj-labs/gatewayAPI"
    assert http_routes(config) == [
        ("a", False, f"{field}.httpRoutes[0].name"),
        ("b", True, f"{field}.httpRoutes[1].name"),
        ("c", True, f"{field}.httpRoute"),
    ]
    with pytest.raises(RouterError, match=r"unknown field `grpcRoute`.*supported: httpRoute"):
        gateway_config({"grpcRoute": "x"})
    with pytest.raises(RouterError, match="httpRoute or httpRoutes is required"):
        http_routes(gateway_config({"namespace": "x"}))
