"""KubernetesTrafficProvider against the HTTP-level API emulator (tests.support.kube_api): the exact objects
stored and the exact requests sent (GET then a PUT carrying the resourceVersion read, a POST for the objects
it owns, application/json) for Istio (DestinationRule subsets, VirtualService weights, a header route), the
NGINX canary Ingress (created, owned by the Rollout, then updated), the SMI TrafficSplit and a Gateway API
HTTPRoute; no write when nothing changed; drift from a hand edit restored by check_drift and by
watch_drift (also after 410 Gone); a missing object named in the error; a write racing another writer (409)
redone from a fresh read, and reported when the other writer always wins; routers we do not support refused
before any write."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from services.traffic_shifter.kube import ObjectNotFound, RouterError
from services.traffic_shifter.kube.gateway_api import MANAGED_RULES
from services.traffic_shifter.kube.provider import KubernetesTrafficProvider
from shared.messages import TrafficDesired, WeightedDestination
from shared.routes import HeaderMatch, HeaderRoute, StringMatch
from tests.support.kube_api import KubeEmulator

Obj = dict[str, Any]
NS = "default"
ISTIO = "networking.istio.io/v1alpha3"
VS_PATH = f"/apis/networking.istio.io/v1alpha3/namespaces/{NS}/virtualservices/app-vs"
DR_PATH = f"/apis/networking.istio.io/v1alpha3/namespaces/{NS}/destinationrules/app-dr"
INGRESSES = f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses"
ISTIO_ROUTING: Obj = {
    "istio": {
        "virtualService": {"name": "app-vs", "routes": ["primary"]},
        "destinationRule": {"name": "app-dr", "canarySubsetName": "canary", "stableSubsetName": "stable"},
    },
    "managedRoutes": [{"name": "beta"}],
}


class RacingEmulator(KubeEmulator):
    """An API server where another client writes an object just before our write of it arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.races: dict[tuple[str, str], Callable[[], None]] = {}  # (method, path) -> the other writer

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        race = self.races.pop((request.method, request.path), None)
        if race is not None:
            race()
        return await super()._handle(request)


@pytest.fixture
async def kube() -> AsyncIterator[RacingEmulator]:
    async with RacingEmulator() as emulator:
        yield emulator


@pytest.fixture
async def provider(kube: KubeEmulator) -> AsyncIterator[KubernetesTrafficProvider]:
    async with kube.api_client() as api:
        shifter = KubernetesTrafficProvider(api)
        yield shifter
        await shifter.close()


def _desired(weight: int, routing: Obj | None, **kw: Any) -> TrafficDesired:
    fields: dict[str, Any] = {
        "namespace": NS,
        "name": "app",
        "generation": 1,
        "stable_revision": "s1",
        "canary_revision": "c1",
        "canary_weight": weight,
        "stable_service": "app-stable",
        "canary_service": "app-canary",
        "routing": routing,
    }
    return TrafficDesired(**{**fields, **kw})


def _route(host: str, subset: str, weight: int) -> Obj:
    return {"destination": {"host": host, "subset": subset, "port": {"number": 80}}, "weight": weight}


def _seed_istio(kube: KubeEmulator) -> None:
    kube.seed(
        {
            "apiVersion": ISTIO,
            "kind": "DestinationRule",
            "metadata": {"name": "app-dr", "namespace": NS},
            "spec": {
                "host": "app",
                "subsets": [
                    {"name": "stable", "labels": {"app": "app"}},
                    {"name": "canary", "labels": {"app": "app"}},
                ],
            },
        }
    )
    kube.seed(
        {
            "apiVersion": ISTIO,
            "kind": "VirtualService",
            "metadata": {"name": "app-vs", "namespace": NS},
            "spec": {
                "hosts": ["app.example.com"],
                "http": [
                    {"name": "primary", "route": [_route("app", "stable", 100), _route("app", "canary", 0)]},
                    {"name": "fallback", "route": [{"destination": {"host": "maintenance"}}]},
                ],
            },
        }
    )


def _writes(kube: KubeEmulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in kube.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]


def _vs_weights(kube: KubeEmulator) -> list[int]:
    vs = kube.get(ISTIO, "virtualservices", NS, "app-vs")
    assert vs is not None
    primary = next(r for r in vs["spec"]["http"] if r.get("name") == "primary")
    return [d["weight"] for d in primary["route"]]


async def test_istio_weights_subsets_and_header_route(
    kube: RacingEmulator, provider: KubernetesTrafficProvider
) -> None:
    _seed_istio(kube)
    dr_before = kube.get(ISTIO, "destinationrules", NS, "app-dr")
    vs_before = kube.get(ISTIO, "virtualservices", NS, "app-vs")
    assert dr_before is not None and vs_before is not None
    beta = HeaderRoute(
        name="beta", match=(HeaderMatch(header_name="x-beta", header_value=StringMatch(exact="1")),)
    )
    await provider.apply(_desired(20, ISTIO_ROUTING, header_routes=(beta,)), None)

    assert [(r.method, r.path) for r in kube.requests] == [
        ("GET", DR_PATH),
        ("PUT", DR_PATH),
        ("GET", VS_PATH),
        ("PUT", VS_PATH),
    ]
    dr_put, vs_put = kube.requests[1], kube.requests[3]
    expected_dr = copy.deepcopy(dr_before)
    expected_dr["metadata"]["annotations"] = {"argo-rollouts.argoproj.io/managed-by-rollouts": "app"}
    expected_dr["spec"]["subsets"] = [
        {"name": "stable", "labels": {"app": "app", "rollouts-pod-template-hash": "s1"}},
        {"name": "canary", "labels": {"app": "app", "rollouts-pod-template-hash": "c1"}},
    ]
    assert (dr_put.content_type, dr_put.body) == ("application/json", expected_dr)  # resourceVersion as read
    expected_vs = copy.deepcopy(vs_before)
    expected_vs["spec"]["http"] = [
        {
            "name": "beta",
            "match": [{"headers": {"x-beta": {"exact": "1"}}}],
            "route": [
                {"destination": {"host": "app", "port": {"number": 80}, "subset": "canary"}, "weight": 100}
            ],
        },
        {"name": "primary", "route": [_route("app", "stable", 80), _route("app", "canary", 20)]},
        {"name": "fallback", "route": [{"destination": {"host": "maintenance"}}]},
    ]
    assert (vs_put.content_type, vs_put.body) == ("application/json", expected_vs)
    stored_vs = kube.get(ISTIO, "virtualservices", NS, "app-vs")
    assert stored_vs is not None
    assert stored_vs["spec"] == expected_vs["spec"]
    assert int(stored_vs["metadata"]["resourceVersion"]) > int(vs_before["metadata"]["resourceVersion"])
    stored_dr = kube.get(ISTIO, "destinationrules", NS, "app-dr")
    assert stored_dr is not None and stored_dr["spec"] == expected_dr["spec"]

    # The same desired state again: read, compare, no write.
    kube.requests.clear()
    await provider.apply(_desired(20, ISTIO_ROUTING, header_routes=(beta,)), None)
    assert [r.method for r in kube.requests] == ["GET", "GET"]

    # The header route goes away and the weight moves: one write of the VirtualService only.
    kube.requests.clear()
    await provider.apply(_desired(50, ISTIO_ROUTING, generation=2), None)
    assert _writes(kube) == [("PUT", VS_PATH)]
    stored_vs = kube.get(ISTIO, "virtualservices", NS, "app-vs")
    assert stored_vs is not None
    assert [r.get("name") for r in stored_vs["spec"]["http"]] == ["primary", "fallback"]
    assert _vs_weights(kube) == [50, 50]


async def test_missing_object_is_named_with_its_field(
    kube: RacingEmulator, provider: KubernetesTrafficProvider
) -> None:
    routing = {"istio": {"virtualService": {"name": "x"}}}
    with pytest.raises(ObjectNotFound) as caught:
        await provider.apply(_desired(10, routing), None)
    assert str(caught.value) == (
        "istio VirtualService default/x not found (spec.strategy.canary.trafficRouting.istio.virtualService.name)"
    )
    with pytest.raises(
        ObjectNotFound, match=r"^nginx Ingress default/web not found \(.*nginx\.stableIngress\)$"
    ):
        await provider.apply(_desired(10, {"nginx": {"stableIngress": "web"}}), None)
    assert _writes(kube) == []


async def test_unsupported_routers_are_refused_before_any_write(
    kube: RacingEmulator, provider: KubernetesTrafficProvider
) -> None:
    _seed_istio(kube)
    routing = {**ISTIO_ROUTING, "alb": {"ingress": "i", "servicePort": 80}}
    with pytest.raises(RouterError, match=r"trafficRouting\.alb: not supported"):
        await provider.apply(_desired(10, routing), None)
    with pytest.raises(RouterError, match=r"plugins\.example/router: not supported"):
        await provider.apply(_desired(10, {**ISTIO_ROUTING, "plugins": {"example/router": {}}}), None)
    assert kube.requests == []
    await provider.apply(_desired(10, None), None)  # no routing: nothing to do
    assert kube.requests == []
    # Experiment weights (additionalDestinations) are the built-in proxy's only, so far.
    extra = (WeightedDestination(revision="s1-baseline", weight=10, name="baseline"),)
    with pytest.raises(ValueError, match=r"experiment traffic weights \(templates baseline\)"):
        await provider.apply(_desired(10, ISTIO_ROUTING, additional=extra), None)
    assert kube.requests == []


async def test_conflicting_write_is_redone_from_a_fresh_read(
    kube: RacingEmulator, provider: KubernetesTrafficProvider
) -> None:
    _seed_istio(kube)

    def someone_else() -> None:  # e.g. a GitOps sync adding a host between our read and our write
        kube.edit(ISTIO, "virtualservices", NS, "app-vs", lambda o: o["spec"]["hosts"].append("app.internal"))

    kube.races[("PUT", VS_PATH)] = someone_else
    await provider.apply(_desired(30, ISTIO_ROUTING), None)
    vs_requests = [(r.method, r.path) for r in kube.requests if r.path == VS_PATH]
    assert vs_requests == [("GET", VS_PATH), ("PUT", VS_PATH), ("GET", VS_PATH), ("PUT", VS_PATH)]
    stored = kube.get(ISTIO, "virtualservices", NS, "app-vs")
    assert stored is not None
    assert stored["spec"]["hosts"] == ["app.example.com", "app.internal"]  # their change kept
    assert _vs_weights(kube) == [70, 30]  # ours applied on top
    first_put, second_put = [r for r in kube.requests if r.method == "PUT" and r.path == VS_PATH]
    assert int(second_put.body["metadata"]["resourceVersion"]) > int(
        first_put.body["metadata"]["resourceVersion"]
    )


async def test_a_writer_that_always_wins_is_reported(kube: RacingEmulator) -> None:
    _seed_istio(kube)

    def keep_racing() -> None:
        kube.edit(ISTIO, "virtualservices", NS, "app-vs", lambda o: o["spec"]["hosts"].append("x"))
        kube.races[("PUT", VS_PATH)] = keep_racing

    kube.races[("PUT", VS_PATH)] = keep_racing
    async with kube.api_client() as api:
        provider = KubernetesTrafficProvider(api, max_attempts=2)
        with pytest.raises(
            RouterError, match=r"^istio VirtualService default/app-vs: still conflicting after 2 writes"
        ):
            await provider.apply(_desired(30, ISTIO_ROUTING), None)
    assert [r.method for r in kube.requests if r.path == VS_PATH] == ["GET", "PUT", "GET", "PUT"]
    assert _vs_weights(kube) == [100, 0]


async def test_check_drift_restores_a_hand_edit(
    kube: RacingEmulator, provider: KubernetesTrafficProvider
) -> None:
    _seed_istio(kube)
    await provider.apply(_desired(40, ISTIO_ROUTING), None)
    assert await provider.check_drift() == 0

    def hand_edit(obj: Obj) -> None:
        obj["spec"]["http"][0]["route"][0]["weight"] = 100
        obj["spec"]["http"][0]["route"][1]["weight"] = 0

    kube.edit(ISTIO, "virtualservices", NS, "app-vs", hand_edit)
    assert _vs_weights(kube) == [100, 0]
    kube.requests.clear()
    assert await provider.check_drift() == 1
    assert _writes(kube) == [("PUT", VS_PATH)]
    assert _vs_weights(kube) == [60, 40]
    assert await provider.check_drift() == 0


async def test_watch_drift_restores_a_hand_edit_promptly(
    kube: RacingEmulator, provider: KubernetesTrafficProvider
) -> None:
    _seed_istio(kube)
    await provider.apply(_desired(25, ISTIO_ROUTING), None)
    stop = asyncio.Event()
    watching = asyncio.create_task(provider.watch_drift(stop))
    try:
        await _until(
            lambda: any(r.query.get("watch") for r in kube.requests if r.path.endswith("/virtualservices"))
        )
        kube.edit(
            ISTIO,
            "virtualservices",
            NS,
            "app-vs",
            lambda o: o["spec"]["http"][0]["route"][1].update(weight=99),
        )
        await _until(lambda: _vs_weights(kube) == [75, 25])
    finally:
        stop.set()
        await asyncio.wait_for(watching, 5)
    assert watching.exception() is None


async def test_watch_drift_lists_again_after_410_gone(kube: RacingEmulator) -> None:
    _seed_istio(kube)
    async with kube.api_client() as api:
        provider = KubernetesTrafficProvider(api, watch_seconds=1)
        await provider.apply(_desired(25, ISTIO_ROUTING), None)
        stop = asyncio.Event()
        watching = asyncio.create_task(provider.watch_drift(stop))

        def vs_lists() -> list[bool]:  # True for a watch, False for a plain list
            return [bool(r.query.get("watch")) for r in kube.requests if r.path.endswith("/virtualservices")]

        try:
            await _until(lambda: vs_lists() == [False, True])
            kube.seed(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "noise", "namespace": NS}}
            )
            kube.compact()  # the watch's resourceVersion is now too old: re-opening it gets 410 Gone
            await _until(lambda: vs_lists()[:4] == [False, True, True, False], timeout=10)
            kube.edit(
                ISTIO,
                "virtualservices",
                NS,
                "app-vs",
                lambda o: o["spec"]["http"][0]["route"][1].update(weight=99),
            )
            await _until(lambda: _vs_weights(kube) == [75, 25])
        finally:
            stop.set()
            await asyncio.wait_for(watching, 5)
            await provider.close()


async def test_nginx_canary_ingress_created_owned_and_updated(
    kube: RacingEmulator, provider: KubernetesTrafficProvider
) -> None:
    rollout = kube.seed(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "app", "namespace": NS},
            "spec": {},
        }
    )
    kube.seed(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": "web",
                "namespace": NS,
                "annotations": {"kubernetes.io/ingress.class": "nginx"},
            },
            "spec": {
                "rules": [
                    {
                        "host": "app.example.com",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "app-stable", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ]
            },
        }
    )
    routing = {
        "nginx": {"stableIngress": "web", "additionalIngressAnnotations": {"canary-by-cookie": "beta"}}
    }
    await provider.apply(_desired(10, routing), None)
    created = [r for r in kube.requests if r.method == "POST"]
    assert [(r.path, r.content_type) for r in created] == [(INGRESSES, "application/json")]
    owner = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "name": "app",
        "uid": rollout["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    annotations = {
        "kubernetes.io/ingress.class": "nginx",
        "nginx.ingress.kubernetes.io/canary-by-cookie": "beta",
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "10",
    }
    canary_spec = {
        "rules": [
            {
                "host": "app.example.com",
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "app-canary", "port": {"number": 80}}},
                        }
                    ]
                },
            }
        ]
    }
    assert created[0].body == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "app-web-canary",
            "namespace": NS,
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": canary_spec,
    }
    stored = kube.get("networking.k8s.io/v1", "ingresses", NS, "app-web-canary")
    assert stored is not None
    assert (stored["metadata"]["annotations"], stored["metadata"]["ownerReferences"], stored["spec"]) == (
        annotations,
        [owner],
        canary_spec,
    )

    kube.requests.clear()
    beta = HeaderRoute(
        name="beta", match=(HeaderMatch(header_name="X-Beta", header_value=StringMatch(exact="yes")),)
    )
    await provider.apply(_desired(35, routing, generation=2, header_routes=(beta,)), None)
    puts = [r for r in kube.requests if r.method in ("PUT", "POST", "PATCH")]
    assert [(r.method, r.path, r.content_type) for r in puts] == [
        ("PUT", f"{INGRESSES}/app-web-canary", "application/json")
    ]
    assert puts[0].body["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    updated = kube.get("networking.k8s.io/v1", "ingresses", NS, "app-web-canary")
    assert updated is not None
    assert updated["metadata"]["annotations"] == {
        **annotations,
        "nginx.ingress.kubernetes.io/canary-weight": "35",
        "nginx.ingress.kubernetes.io/canary-by-header": "X-Beta",
        "nginx.ingress.kubernetes.io/canary-by-header-value": "yes",
    }

    # Someone sets the weight by hand: the drift check puts it back.
    kube.edit(
        "networking.k8s.io/v1",
        "ingresses",
        NS,
        "app-web-canary",
        lambda o: o["metadata"]["annotations"].update({"nginx.ingress.kubernetes.io/canary-weight": "100"}),
    )
    assert await provider.check_drift() == 1
    restored = kube.get("networking.k8s.io/v1", "ingresses", NS, "app-web-canary")
    assert restored is not None
    assert restored["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] == "35"


async def test_nginx_canary_created_concurrently_is_read_and_updated(
    kube: RacingEmulator, provider: KubernetesTrafficProvider
) -> None:
    kube.seed(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "rules": [
                    {
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "app-stable", "port": {"number": 80}}},
                                }
                            ]
                        }
                    }
                ]
            },
        }
    )

    def other_instance_creates_it() -> None:
        kube.seed(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": "app-web-canary", "namespace": NS, "annotations": {"x": "y"}},
                "spec": {"rules": []},
            }
        )

    kube.races[("POST", INGRESSES)] = other_instance_creates_it
    await provider.apply(_desired(5, {"nginx": {"stableIngress": "web"}}), None)
    assert [
        (r.method, r.path)
        for r in kube.requests
        if r.path.startswith(f"{INGRESSES}/app-web-canary") or r.method == "POST"
    ] == [
        ("GET", f"{INGRESSES}/app-web-canary"),
        ("POST", INGRESSES),  # 409 AlreadyExists
        ("GET", f"{INGRESSES}/app-web-canary"),
        ("PUT", f"{INGRESSES}/app-web-canary"),
    ]
    stored = kube.get("networking.k8s.io/v1", "ingresses", NS, "app-web-canary")
    assert stored is not None
    assert stored["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "5",
    }
    assert stored["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "app-canary"


async def test_smi_traffic_split_created_then_patched(
    kube: RacingEmulator, provider: KubernetesTrafficProvider
) -> None:
    rollout = kube.seed(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "app", "namespace": NS},
            "spec": {},
        }
    )
    routing = {"smi": {"rootService": "app-root"}}
    await provider.apply(_desired(30, routing), None)
    path = f"/apis/split.smi-spec.io/v1alpha1/namespaces/{NS}/trafficsplits"
    posts = [r for r in kube.requests if r.method == "POST"]
    assert [(r.path, r.content_type) for r in posts] == [(path, "application/json")]
    spec = {
        "service": "app-root",
        "backends": [{"service": "app-canary", "weight": "30"}, {"service": "app-stable", "weight": "70"}],
    }
    owner = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "name": "app",
        "uid": rollout["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert posts[0].body == {
        "apiVersion": "split.smi-spec.io/v1alpha1",
        "kind": "TrafficSplit",
        "metadata": {"name": "app", "namespace": NS, "ownerReferences": [owner]},
        "spec": spec,
    }
    kube.requests.clear()
    await provider.apply(_desired(100, routing, generation=2), None)
    assert _writes(kube) == [("PUT", f"{path}/app")]
    stored = kube.get("split.smi-spec.io/v1alpha1", "trafficsplits", NS, "app")
    assert stored is not None
    assert stored["spec"]["backends"] == [
        {"service": "app-canary", "weight": "100"},
        {"service": "app-stable", "weight": "0"},
    ]


async def test_gateway_api_http_route_weights_and_header_rule(
    kube: RacingEmulator, provider: KubernetesTrafficProvider
) -> None:
    kube.seed(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "app-route", "namespace": "edge"},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [
                            {"name": "app-stable", "port": 80, "weight": 100},
                            {"name": "app-canary", "port": 80, "weight": 0},
                        ],
                    }
                ],
            },
        }
    )
    routing = {
        "plugins": {"argoproj-labs/gatewayAPI": {"httpRoute": "app-route", "namespace": "edge"}},
        "managedRoutes": [{"name": "beta"}],
    }
    beta = HeaderRoute(
        name="beta", match=(HeaderMatch(header_name="x-beta", header_value=StringMatch(regex="on|yes")),)
    )
    await provider.apply(_desired(15, routing, header_routes=(beta,)), None)
    path = "/apis/gateway.networking.k8s.io/v1/namespaces/edge/httproutes/app-route"
    assert [(r.method, r.path) for r in kube.requests] == [("GET", path), ("PUT", path)]
    assert kube.requests[1].content_type == "application/json"
    stored = kube.get("gateway.networking.k8s.io/v1", "httproutes", "edge", "app-route")
    assert stored is not None
    assert stored["metadata"]["annotations"] == {MANAGED_RULES: '{"beta":1}'}
    assert stored["spec"]["rules"] == [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [
                {"name": "app-stable", "port": 80, "weight": 85},
                {"name": "app-canary", "port": 80, "weight": 15},
            ],
        },
        {
            "matches": [
                {
                    "path": {"type": "PathPrefix", "value": "/"},
                    "headers": [{"name": "x-beta", "type": "RegularExpression", "value": "on|yes"}],
                }
            ],
            "backendRefs": [{"group": "", "kind": "Service", "name": "app-canary", "port": 80}],
        },
    ]
    await provider.apply(_desired(15, routing, generation=2), None)
    stored = kube.get("gateway.networking.k8s.io/v1", "httproutes", "edge", "app-route")
    assert stored is not None
    assert len(stored["spec"]["rules"]) == 1 and stored["metadata"]["annotations"] == {}


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
