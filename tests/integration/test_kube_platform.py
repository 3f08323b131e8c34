"""Integration tests of the scaler's Kubernetes platform against the HTTP-level API emulator
(tests.support.kube_api): the exact ReplicaSet a revision gets (POST, owner, labels, selector,
annotations) and the exact scale patch, readiness reported through on_change (and held back with
hold_ready), old revisions scaled to 0 and kept, Service selectors switched only once the revision
is fully available, a missing Service named in the error, the watch relisting after 410 Gone, and
pods restarted one at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.scaler.kube_objects import (
    DESIRED_REPLICAS_ANNOTATION,
    MANAGED_BY_ANNOTATION,
    POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION,
)
from services.scaler.kube_platform import KubePlatform, ServiceNotFoundError
from shared.messages import ReplicaSetDesired, ScaleDesired, ServiceSelector
from tests.support.kube_api import KubeEmulator

NS = "default"
A = "a1b2c3d4e5"
B = "f6e5d4c3b2"
TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "web:1"}]},
}


async def eventually(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def desired(
    *sets: tuple[str, int],
    services: tuple[tuple[str, str], ...] = (),
    generation: int = 1,
    restart_at: float | None = None,
) -> ScaleDesired:
    return ScaleDesired(
        namespace=NS,
        name="web",
        generation=generation,
        sets=tuple(
            ReplicaSetDesired(revision=r, replicas=n, template=TEMPLATE, restart_at=restart_at)
            for r, n in sets
        ),
        services=tuple(ServiceSelector(service=s, revision=r) for s, r in services),
    )


def seed_rollout(kube: KubeEmulator, replicas: int = 3) -> dict[str, Any]:
    return kube.seed(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web", "namespace": NS, "annotations": {"team": "shop"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": TEMPLATE,
                "strategy": {"canary": {"canaryService": "web-canary", "stableService": "web-stable"}},
            },
        }
    )


def seed_service(kube: KubeEmulator, name: str) -> None:
    kube.seed(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }
    )


def rs(kube: KubeEmulator, revision: str) -> dict[str, Any] | None:
    return kube.get("apps/v1", "replicasets", NS, f"web-{revision}")


def service_hash(kube: KubeEmulator, name: str) -> str | None:
    svc = kube.get("v1", "services", NS, name)
    assert svc is not None
    return (svc["spec"].get("selector") or {}).get(POD_TEMPLATE_HASH_LABEL)


class Changes:
    """Records on_change calls; waiters are woken by each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.changed = asyncio.Condition()

    async def __call__(self, key: str, revision: str) -> None:
        async with self.changed:
            self.calls.append((key, revision))
            self.changed.notify_all()

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(cond)


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator:
        yield emulator


@pytest.fixture
async def changes() -> Changes:
    return Changes()


@pytest.fixture
async def platform(kube: KubeEmulator, changes: Changes) -> AsyncIterator[KubePlatform]:
    async with kube.api_client() as api:
        p = KubePlatform(
            api, on_change=changes, watch_timeout=1, retry_delay=0.05, restart_check=0.05, error_retry=0.05
        )
        try:
            yield p
        finally:
            await p.close()


async def test_a_revision_gets_its_replica_set_as_argo_makes_it(
    kube: KubeEmulator, platform: KubePlatform
) -> None:
    rollout = seed_rollout(kube)
    await platform.apply(desired((A, 3)))

    posts = kube.requests_to("POST", f"/apis/apps/v1/namespaces/{NS}/replicasets")
    assert len(posts) == 1
    assert posts[0].content_type == "application/json"
    assert posts[0].body == {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"web-{A}",
            "namespace": NS,
            "labels": {"app": "web", POD_TEMPLATE_HASH_LABEL: A},
            "annotations": {"team": "shop", REVISION_ANNOTATION: "1", DESIRED_REPLICAS_ANNOTATION: "3"},
            "ownerReferences": [
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Rollout",
                    "name": "web",
                    "uid": rollout["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web", POD_TEMPLATE_HASH_LABEL: A}},
            "template": {
                "metadata": {"labels": {"app": "web", POD_TEMPLATE_HASH_LABEL: A}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]},
            },
        },
    }
    patches = kube.requests_to("PATCH", f"/apis/apps/v1/namespaces/{NS}/replicasets/web-{A}")
    assert len(patches) == 1
    assert patches[0].content_type == "application/merge-patch+json"
    assert patches[0].body == {
        "metadata": {"annotations": {DESIRED_REPLICAS_ANNOTATION: "3"}},
        "spec": {"replicas": 3},
    }
    stored = rs(kube, A)
    assert stored is not None and stored["spec"]["replicas"] == 3
    assert stored["metadata"]["creationTimestamp"]

    await platform.apply(desired((A, 3), generation=2))
    assert len(kube.requests_to("PATCH", "/apis/apps/v1")) == 1, "nothing to change: no request"


async def test_without_a_rollout_object_the_replica_set_is_ownerless(
    kube: KubeEmulator, platform: KubePlatform
) -> None:
    await platform.apply(desired((A, 2)))
    stored = rs(kube, A)
    assert stored is not None
    assert "ownerReferences" not in stored["metadata"]
    assert stored["spec"]["selector"] == {"matchLabels": {"app": "web", POD_TEMPLATE_HASH_LABEL: A}}
    assert stored["metadata"]["annotations"][DESIRED_REPLICAS_ANNOTATION] == "2"


async def test_ready_replicas_are_reported_through_on_change(
    kube: KubeEmulator, platform: KubePlatform, changes: Changes
) -> None:
    await platform.apply(desired((A, 3)))
    await changes.wait_for(lambda: platform.ready(NS, "web") == {A: 3})
    assert (f"{NS}/web", A) in changes.calls


async def test_held_replicas_are_not_reported_until_released(
    kube: KubeEmulator, platform: KubePlatform, changes: Changes
) -> None:
    kube.hold_ready(NS, f"web-{A}")
    await platform.apply(desired((A, 2)))
    await eventually(
        lambda: (rs(kube, A) or {}).get("status", {}).get("replicas") == 2, what="status.replicas"
    )
    await eventually(lambda: (v := platform.replica_sets(NS, "web").get(A)) is not None and v.replicas == 2)
    assert platform.ready(NS, "web") == {}
    assert changes.calls == []
    kube.release_ready(NS, f"web-{A}")
    await changes.wait_for(lambda: platform.ready(NS, "web") == {A: 2})
    assert changes.calls == [(f"{NS}/web", A)]


async def test_a_revision_left_out_is_scaled_to_zero_and_kept_as_history(
    kube: KubeEmulator, platform: KubePlatform, changes: Changes
) -> None:
    await platform.apply(desired((A, 2)))
    await changes.wait_for(lambda: platform.ready(NS, "web") == {A: 2})
    await platform.apply(desired((B, 2), generation=2))
    old = rs(kube, A)
    assert old is not None and old["spec"]["replicas"] == 0
    assert old["metadata"]["annotations"][REVISION_ANNOTATION] == "1"
    new = rs(kube, B)
    assert new is not None and new["metadata"]["annotations"][REVISION_ANNOTATION] == "2"
    down = kube.requests_to("PATCH", f"/apis/apps/v1/namespaces/{NS}/replicasets/web-{A}")[-1]
    assert down.body == {
        "metadata": {"annotations": {DESIRED_REPLICAS_ANNOTATION: "2"}},
        "spec": {"replicas": 0},
    }
    await changes.wait_for(lambda: platform.ready(NS, "web") == {B: 2})


async def test_history_beyond_ten_revisions_is_deleted(kube: KubeEmulator, platform: KubePlatform) -> None:
    revisions = [f"{i:010x}" for i in range(12)]
    for i, revision in enumerate(revisions):
        await platform.apply(desired((revision, 1), generation=i + 1))
        await eventually(lambda r=revision: platform.ready(NS, "web") == {r: 1}, what=f"{revision} ready")
    # The newest plus ten old ones; the oldest goes once it is scaled down and observed so.
    await platform.apply(desired((revisions[-1], 1), generation=99))
    names = {o["metadata"]["name"] for o in kube.list("apps/v1", "replicasets", NS)}
    assert names == {f"web-{r}" for r in revisions[1:]}


async def test_services_switch_only_once_the_revision_is_fully_available(
    kube: KubeEmulator, platform: KubePlatform, changes: Changes
) -> None:
    seed_rollout(kube)
    seed_service(kube, "web-stable")
    seed_service(kube, "web-canary")
    await platform.apply(desired((A, 3), services=(("web-stable", A), ("web-canary", A))))
    await eventually(
        lambda: service_hash(kube, "web-stable") == A and service_hash(kube, "web-canary") == A,
        what="both Services on A once its three replicas are available",
    )

    patch = kube.requests_to("PATCH", f"/api/v1/namespaces/{NS}/services/web-stable")[0]
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.body == {
        "spec": {"selector": {POD_TEMPLATE_HASH_LABEL: A}},
        "metadata": {"annotations": {MANAGED_BY_ANNOTATION: "web"}},
    }

    kube.hold_ready(NS, f"web-{B}")
    await platform.apply(
        desired((A, 3), (B, 1), services=(("web-stable", A), ("web-canary", B)), generation=2)
    )
    await eventually(lambda: (rs(kube, B) or {}).get("status", {}).get("replicas") == 1, what="B scaled")
    assert service_hash(kube, "web-canary") == A, "B has no available replica yet"
    kube.release_ready(NS, f"web-{B}")
    await eventually(lambda: service_hash(kube, "web-canary") == B, what="canary on B")
    svc = kube.get("v1", "services", NS, "web-canary")
    assert svc is not None and svc["spec"]["selector"] == {"app": "web", POD_TEMPLATE_HASH_LABEL: B}


async def test_an_old_revision_stays_up_while_a_service_still_selects_it(
    kube: KubeEmulator, platform: KubePlatform, changes: Changes
) -> None:
    seed_service(kube, "web-active")
    await platform.apply(desired((A, 2), services=(("web-active", A),)))
    await eventually(lambda: service_hash(kube, "web-active") == A, what="active on A")

    kube.hold_ready(NS, f"web-{B}")
    await platform.apply(desired((B, 2), services=(("web-active", B),), generation=2))
    old = rs(kube, A)
    assert old is not None and old["spec"]["replicas"] == 2, "A still serves the active Service"
    kube.release_ready(NS, f"web-{B}")
    await eventually(lambda: service_hash(kube, "web-active") == B, what="active on B")
    await eventually(lambda: (rs(kube, A) or {})["spec"]["replicas"] == 0, what="A scaled down")


async def test_a_missing_service_is_a_clear_error_until_it_is_created(
    kube: KubeEmulator, platform: KubePlatform, changes: Changes
) -> None:
    with pytest.raises(ServiceNotFoundError, match=r'Service "default/web-ghost" not found'):
        await platform.apply(desired((A, 1), services=(("web-ghost", A),)))
    assert rs(kube, A) is not None, "the ReplicaSet is still sized"
    await changes.wait_for(lambda: platform.ready(NS, "web") == {A: 1})
    calls = len(changes.calls)
    seed_service(kube, "web-ghost")
    await eventually(lambda: service_hash(kube, "web-ghost") == A, what="the late Service switched")
    await changes.wait_for(lambda: len(changes.calls) > calls)  # so the scaler reports the error gone


async def test_the_watch_lists_again_after_410_gone(
    kube: KubeEmulator, platform: KubePlatform, changes: Changes
) -> None:
    await platform.apply(desired((A, 2)))
    await changes.wait_for(lambda: platform.ready(NS, "web") == {A: 2})
    lists_before = len(
        [
            r
            for r in kube.requests_to("GET", f"/apis/apps/v1/namespaces/{NS}/replicasets")
            if "watch" not in r.query
        ]
    )
    # Other objects move the resourceVersion on; forgetting history makes ours too old to resume from.
    kube.seed(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": NS}, "data": {}}
    )
    kube.compact()
    await eventually(
        lambda: (
            len(
                [
                    r
                    for r in kube.requests_to("GET", f"/apis/apps/v1/namespaces/{NS}/replicasets")
                    if "watch" not in r.query
                ]
            )
            > lists_before
        ),
        what="a relist",
    )
    # The watch goes on after the relist: a hand edit of the status is seen.
    kube.hold_ready(NS, f"web-{A}")

    def one_available(obj: dict[str, Any]) -> None:
        obj["status"]["availableReplicas"] = 1

    kube.edit("apps/v1", "replicasets", NS, f"web-{A}", one_available)
    await changes.wait_for(lambda: platform.ready(NS, "web") == {A: 1})


async def test_pods_are_restarted_one_at_a_time(kube: KubeEmulator, platform: KubePlatform) -> None:
    await platform.apply(desired((A, 3)))
    await eventually(lambda: platform.ready(NS, "web") == {A: 3}, what="A ready")
    owner = rs(kube, A)
    assert owner is not None

    def seed_pod(name: str, created: str) -> None:
        kube.seed(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": NS,
                    "creationTimestamp": created,
                    "labels": {"app": "web", POD_TEMPLATE_HASH_LABEL: A},
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "ReplicaSet",
                            "name": f"web-{A}",
                            "uid": owner["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": {"containers": [{"name": "web", "image": "web:1"}]},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": created}]
                },
            }
        )

    for name in ("p1", "p2", "p3"):
        seed_pod(name, "2024-01-01T00:00:00Z")
    restart_at = time.time()
    await platform.apply(desired((A, 3), generation=2, restart_at=restart_at))

    def pods() -> set[str]:
        return {p["metadata"]["name"] for p in kube.list("v1", "pods", NS)}

    def pod_lists() -> int:
        return len(kube.requests_to("GET", f"/api/v1/namespaces/{NS}/pods"))

    assert pods() == {"p2", "p3"}, "the oldest goes first, and alone (3 replicas allow 1 missing)"
    seen = pod_lists()
    await eventually(lambda: pod_lists() >= seen + 3, what="later restart checks")
    assert pods() == {"p2", "p3"}, "no second pod goes while one is missing"
    # The ReplicaSet controller would replace it; the emulator has none, so the test does.
    seed_pod("p1-new", "2099-01-01T00:00:00Z")
    await eventually(lambda: pods() == {"p3", "p1-new"}, what="p2 restarted")
    seed_pod("p2-new", "2099-01-01T00:00:00Z")
    await eventually(lambda: pods() == {"p1-new", "p2-new"}, what="p3 restarted")
    seed_pod("p3-new", "2099-01-01T00:00:00Z")
    checks = pod_lists()
    await eventually(lambda: pod_lists() > checks, what="a check after the last replacement")
    await platform.apply(desired((A, 3), generation=3, restart_at=restart_at))  # after the check in flight
    assert pods() == {"p1-new", "p2-new", "p3-new"}
    done = pod_lists()
    await platform.apply(desired((A, 3), generation=4, restart_at=restart_at))
    assert pod_lists() == done, "a finished restart is not checked again"
