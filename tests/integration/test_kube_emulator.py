"""The Kubernetes API emulator (tests/support/kube_api.py) driven through kubernetes_asyncio's real clients.

Covers: create (201, system fields, 409 AlreadyExists, 422, 400 namespace mismatch), get/list/selectors, replace
with a stale resourceVersion (409 Conflict), the patch content types each client sends (merge, JSON, strategic;
415 for strategic merge on custom resources; 422 for a failing JSON-patch test), status and scale subresources,
generation rules, watches (initial state, resume from a resourceVersion, 410 after compaction, label transitions,
timeoutSeconds, shutdown), the ReplicaSet and Job controller emulation, CRD registration and discovery.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.support.kube_api import KubeEmulator
from tests.support.kube_patches import PatchError, json_patch, merge_patch, strategic_merge_patch

ARGO = ("argoproj.io", "v1alpha1")
# CustomObjectsApi sends json-patch for every body unless told otherwise (see the kube_api docstring).
MERGE = {"_content_type": "application/merge-patch+json"}


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator:
        yield emulator


@pytest.fixture
async def api(kube: KubeEmulator) -> AsyncIterator[client.ApiClient]:
    async with kube.api_client() as api_client:
        yield api_client


def rollout(name: str = "demo", replicas: int = 3, image: str = "app:v1") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
        },
    }


def replicaset(name: str = "web", replicas: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "app:v1", "ports": [{"containerPort": 8080}]},
                        {"name": "sidecar", "image": "proxy:v1"},
                    ]
                },
            },
        },
    }


def error_body(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


async def eventually(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    """Poll `check` until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def collect(stream: Callable[[], Awaitable[Any]] | watch.Watch, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async for event in stream:  # type: ignore[union-attr]
        events.append(event)
        if len(events) == count:
            break
    return events


# --- create / read ----------------------------------------------------------------------------------------


async def test_create_answers_201_with_system_fields(kube: KubeEmulator, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    created, status, _ = await custom.create_namespaced_custom_object_with_http_info(
        *ARGO, "team", "rollouts", rollout()
    )
    assert status == 201
    meta = created["metadata"]
    assert meta["namespace"] == "team"
    assert meta["generation"] == 1
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0
    assert kube.get("argoproj.io/v1alpha1", "rollouts", "team", "demo") == created
    recorded = kube.requests[-1]
    assert (recorded.method, recorded.path) == ("POST", "/apis/argoproj.io/v1alpha1/namespaces/team/rollouts")
    assert recorded.content_type == "application/json"
    assert recorded.body["spec"]["replicas"] == 3

    core = client.CoreV1Api(api)
    _, status, _ = await core.create_namespaced_config_map_with_http_info(
        "team", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"k": "v"})
    )
    assert status == 201
    assert kube.get("v1", "configmaps", "team", "cfg")["data"] == {"k": "v"}  # type: ignore[index]


async def test_create_conflicts_and_invalid_bodies(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout())
    with pytest.raises(ApiException) as exists:
        await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout())
    assert exists.value.status == 409
    assert error_body(exists.value)["reason"] == "AlreadyExists"
    assert error_body(exists.value)["message"] == 'rollouts.argoproj.io "demo" already exists'

    nameless = rollout()
    del nameless["metadata"]["name"]
    with pytest.raises(ApiException) as invalid:
        await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", nameless)
    assert invalid.value.status == 422
    assert error_body(invalid.value)["details"]["causes"][0]["field"] == "metadata.name"

    elsewhere = rollout("other")
    elsewhere["metadata"]["namespace"] = "prod"
    with pytest.raises(ApiException) as mismatch:
        await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", elsewhere)
    assert mismatch.value.status == 400
    assert "namespace" in error_body(mismatch.value)["message"]


async def test_not_found_names_the_object_and_unknown_kinds_are_404(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as missing:
        await custom.get_namespaced_custom_object(*ARGO, "default", "rollouts", "nope")
    body = error_body(missing.value)
    assert missing.value.status == 404
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "NotFound", 404)
    assert body["message"] == 'rollouts.argoproj.io "nope" not found'
    with pytest.raises(ApiException) as pod_missing:
        await client.CoreV1Api(api).read_namespaced_pod("p", "default")
    assert error_body(pod_missing.value)["message"] == 'pods "p" not found'
    with pytest.raises(ApiException) as unknown:
        await custom.list_namespaced_custom_object("example.io", "v1", "default", "widgets")
    assert unknown.value.status == 404


async def test_list_filters_by_label_and_field_selector(kube: KubeEmulator, api: client.ApiClient) -> None:
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        kube.seed(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "ns", "labels": {"tier": tier}},
            }
        )
    kube.seed({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "other"}})
    core = client.CoreV1Api(api)
    listed = await core.list_namespaced_service("ns", label_selector="tier=web")
    assert [s.metadata.name for s in listed.items] == ["a", "b"]
    assert listed.metadata.resource_version == kube.resource_version
    assert [
        s.metadata.name
        for s in (await core.list_namespaced_service("ns", label_selector="tier notin (web)")).items
    ] == ["c"]
    by_name = await core.list_service_for_all_namespaces(field_selector="metadata.name=a")
    assert sorted(s.metadata.namespace for s in by_name.items) == ["ns", "other"]
    raw = await client.CustomObjectsApi(api).list_cluster_custom_object(*ARGO, "rollouts")
    assert raw["kind"] == "RolloutList" and raw["items"] == []


# --- replace / generation / status ------------------------------------------------------------------------


async def test_replace_with_stale_resource_version_conflicts(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(api)
    first = await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout())
    first["spec"]["replicas"] = 5
    second = await custom.replace_namespaced_custom_object(*ARGO, "default", "rollouts", "demo", first)
    assert second["metadata"]["generation"] == 2
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])

    first["spec"]["replicas"] = 7  # still carries the old resourceVersion
    with pytest.raises(ApiException) as stale:
        await custom.replace_namespaced_custom_object(*ARGO, "default", "rollouts", "demo", first)
    assert stale.value.status == 409
    body = error_body(stale.value)
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on rollouts.argoproj.io "demo": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )

    del first["metadata"]["resourceVersion"]  # no resourceVersion: an unconditional update
    third = await custom.replace_namespaced_custom_object(*ARGO, "default", "rollouts", "demo", first)
    assert third["spec"]["replicas"] == 7
    assert kube.get("argoproj.io/v1alpha1", "rollouts", "default", "demo")["spec"]["replicas"] == 7  # type: ignore[index]


async def test_generation_moves_only_with_the_spec(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout())
    labelled = await custom.patch_namespaced_custom_object(
        *ARGO, "default", "rollouts", "demo", {"metadata": {"labels": {"x": "y"}}}, **MERGE
    )
    assert labelled["metadata"]["generation"] == 1
    with_status = await custom.patch_namespaced_custom_object_status(
        *ARGO, "default", "rollouts", "demo", {"status": {"phase": "Progressing"}}, **MERGE
    )
    assert with_status["metadata"]["generation"] == 1
    respec = await custom.patch_namespaced_custom_object(
        *ARGO, "default", "rollouts", "demo", {"spec": {"paused": True}}, **MERGE
    )
    assert respec["metadata"]["generation"] == 2
    # A patch that changes nothing is not written: same resourceVersion, no event.
    again = await custom.patch_namespaced_custom_object(
        *ARGO, "default", "rollouts", "demo", {"spec": {"paused": True}}, **MERGE
    )
    assert again["metadata"]["resourceVersion"] == respec["metadata"]["resourceVersion"]


async def test_status_subresource_is_isolated(kube: KubeEmulator, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    created = rollout()
    created["status"] = {"phase": "Healthy"}
    stored = await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", created)
    assert "status" not in stored  # create drops status when the status subresource is on

    via_main = await custom.patch_namespaced_custom_object(
        *ARGO,
        "default",
        "rollouts",
        "demo",
        {"status": {"phase": "Paused"}, "spec": {"replicas": 4}},
        **MERGE,
    )
    assert "status" not in via_main and via_main["spec"]["replicas"] == 4

    via_status = await custom.patch_namespaced_custom_object_status(
        *ARGO,
        "default",
        "rollouts",
        "demo",
        {"status": {"phase": "Paused"}, "spec": {"replicas": 9}},
        **MERGE,
    )
    assert via_status["status"] == {"phase": "Paused"}
    assert via_status["spec"]["replicas"] == 4
    assert kube.requests[-1].path == "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts/demo/status"
    assert kube.requests[-1].content_type == "application/merge-patch+json"

    fetched = await custom.get_namespaced_custom_object_status(*ARGO, "default", "rollouts", "demo")
    fetched["status"]["phase"] = "Healthy"
    replaced = await custom.replace_namespaced_custom_object_status(
        *ARGO, "default", "rollouts", "demo", fetched
    )
    assert replaced["status"]["phase"] == "Healthy"


# --- patches ----------------------------------------------------------------------------------------------


async def test_custom_objects_send_merge_or_json_patch(kube: KubeEmulator, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout())
    merged = await custom.patch_namespaced_custom_object(
        *ARGO,
        "default",
        "rollouts",
        "demo",
        {"spec": {"strategy": {"canary": {"steps": [{"setWeight": 50}]}}, "selector": None}},
        **MERGE,
    )
    assert kube.requests[-1].content_type == "application/merge-patch+json"
    assert merged["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 50}]  # lists replace
    assert "selector" not in merged["spec"]  # null deletes

    patched = await custom.patch_namespaced_custom_object(
        *ARGO,
        "default",
        "rollouts",
        "demo",
        [
            {"op": "test", "path": "/spec/replicas", "value": 3},
            {"op": "replace", "path": "/spec/replicas", "value": 6},
            {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "c"}},
        ],
    )
    assert kube.requests[-1].content_type == "application/json-patch+json"
    assert patched["spec"]["replicas"] == 6 and patched["metadata"]["annotations"] == {"a/b": "c"}

    with pytest.raises(ApiException) as failed_test:
        await custom.patch_namespaced_custom_object(
            *ARGO, "default", "rollouts", "demo", [{"op": "test", "path": "/spec/replicas", "value": 3}]
        )
    assert failed_test.value.status == 422
    assert error_body(failed_test.value)["reason"] == "Invalid"

    with pytest.raises(ApiException) as unforced:
        await custom.patch_namespaced_custom_object(
            *ARGO, "default", "rollouts", "demo", {"spec": {"replicas": 1}}
        )
    assert kube.requests[-1].content_type == "application/json-patch+json"
    assert unforced.value.status == 400

    with pytest.raises(ApiException) as strategic:
        await custom.patch_namespaced_custom_object(
            *ARGO,
            "default",
            "rollouts",
            "demo",
            {"spec": {"replicas": 1}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert strategic.value.status == 415
    assert error_body(strategic.value)["reason"] == "UnsupportedMediaType"
    assert kube.get("argoproj.io/v1alpha1", "rollouts", "default", "demo")["spec"]["replicas"] == 6  # type: ignore[index]


async def test_patch_with_resource_version_is_a_precondition(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    created = await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout())
    await custom.patch_namespaced_custom_object(
        *ARGO, "default", "rollouts", "demo", {"spec": {"replicas": 4}}, **MERGE
    )
    with pytest.raises(ApiException) as stale:
        await custom.patch_namespaced_custom_object(
            *ARGO,
            "default",
            "rollouts",
            "demo",
            {
                "metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
                "spec": {"replicas": 5},
            },
            **MERGE,
        )
    assert stale.value.status == 409


async def test_typed_clients_send_strategic_merge_patch(kube: KubeEmulator, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    await apps.create_namespaced_replica_set("default", replicaset())
    patched = await apps.patch_namespaced_replica_set(
        "web",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:v2"}]}}}},
    )
    assert kube.requests[-1].content_type == "application/strategic-merge-patch+json"
    containers = patched.spec.template.spec.containers
    assert [(c.name, c.image) for c in containers] == [("app", "app:v2"), ("sidecar", "proxy:v1")]
    assert containers[0].ports[0].container_port == 8080  # merged into, not replaced
    assert patched.metadata.generation == 2

    removed = await apps.patch_namespaced_replica_set(
        "web",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}},
    )
    assert [c.name for c in removed.spec.template.spec.containers] == ["app"]

    jsonpatched = await apps.patch_namespaced_replica_set(
        "web", "default", [{"op": "replace", "path": "/spec/replicas", "value": 4}]
    )
    assert kube.requests[-1].content_type == "application/json-patch+json"
    assert jsonpatched.spec.replicas == 4


# --- scale ------------------------------------------------------------------------------------------------


async def test_scale_subresource_for_rollouts_and_replicasets(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(api)
    await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout())
    await custom.patch_namespaced_custom_object_status(
        *ARGO, "default", "rollouts", "demo", {"status": {"replicas": 3, "selector": "app=demo"}}, **MERGE
    )
    scale = await custom.get_namespaced_custom_object_scale(*ARGO, "default", "rollouts", "demo")
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 3}
    assert scale["status"] == {"replicas": 3, "selector": "app=demo"}
    rescaled = await custom.patch_namespaced_custom_object_scale(
        *ARGO, "default", "rollouts", "demo", [{"op": "replace", "path": "/spec/replicas", "value": 5}]
    )
    assert rescaled["spec"]["replicas"] == 5
    stored = kube.get("argoproj.io/v1alpha1", "rollouts", "default", "demo")
    assert stored is not None and stored["spec"]["replicas"] == 5 and stored["metadata"]["generation"] == 2

    apps = client.AppsV1Api(api)
    await apps.create_namespaced_replica_set("default", replicaset())
    rs_scale = await apps.read_namespaced_replica_set_scale("web", "default")
    assert rs_scale.spec.replicas == 2
    rs_scale.spec.replicas = 0
    await apps.replace_namespaced_replica_set_scale("web", "default", rs_scale)
    assert kube.get("apps/v1", "replicasets", "default", "web")["spec"]["replicas"] == 0  # type: ignore[index]
    with pytest.raises(ApiException) as stale:
        await apps.replace_namespaced_replica_set_scale("web", "default", rs_scale)  # old resourceVersion
    assert stale.value.status == 409
    await apps.patch_namespaced_replica_set_scale("web", "default", {"spec": {"replicas": 1}})
    assert kube.requests[-1].content_type == "application/strategic-merge-patch+json"
    assert kube.get("apps/v1", "replicasets", "default", "web")["spec"]["replicas"] == 1  # type: ignore[index]


# --- watches ----------------------------------------------------------------------------------------------


async def test_watch_streams_initial_state_then_changes(kube: KubeEmulator, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout("a"))
    async with watch.Watch() as stream:
        events = stream.stream(
            custom.list_namespaced_custom_object, *ARGO, "default", "rollouts", timeout_seconds=5
        )
        first = await events.__anext__()
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "a")
        await custom.patch_namespaced_custom_object(
            *ARGO, "default", "rollouts", "a", {"spec": {"replicas": 1}}, **MERGE
        )
        await custom.delete_namespaced_custom_object(*ARGO, "default", "rollouts", "a")
        rest = [await events.__anext__(), await events.__anext__()]
    assert [e["type"] for e in rest] == ["MODIFIED", "DELETED"]
    assert rest[0]["object"]["spec"]["replicas"] == 1
    watch_request = next(r for r in kube.requests if r.query.get("watch"))
    assert watch_request.query["watch"] == "True"


async def test_watch_resumes_from_resource_version(kube: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map("default", {"metadata": {"name": "one"}})
    listed = await core.list_namespaced_config_map("default")
    since = listed.metadata.resource_version
    await core.create_namespaced_config_map("default", {"metadata": {"name": "two"}})
    await core.patch_namespaced_config_map("one", "default", {"data": {"k": "v"}})
    async with watch.Watch() as stream:
        events = await collect(
            stream.stream(
                core.list_namespaced_config_map, "default", resource_version=since, timeout_seconds=5
            ),
            2,
        )
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "two"), ("MODIFIED", "one")]
    assert events[1]["object"].data == {"k": "v"}


async def test_watch_from_compacted_history_fails_with_410(kube: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map("default", {"metadata": {"name": "one"}})
    since = (await core.list_namespaced_config_map("default")).metadata.resource_version
    await core.create_namespaced_config_map("default", {"metadata": {"name": "two"}})
    kube.compact()
    async with watch.Watch() as stream:
        with pytest.raises(ApiException) as gone:
            await collect(
                stream.stream(
                    core.list_namespaced_config_map, "default", resource_version=since, timeout_seconds=5
                ),
                1,
            )
    assert gone.value.status == 410
    assert "too old resource version" in str(gone.value.reason)
    # Watching from the current resourceVersion is still fine after compaction.
    async with watch.Watch() as stream:
        events = stream.stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=kube.resource_version,
            timeout_seconds=5,
        )
        await core.delete_namespaced_config_map("two", "default")
        deleted = await events.__anext__()
    assert (deleted["type"], deleted["object"].metadata.name) == ("DELETED", "two")


async def test_watch_with_label_selector_sees_objects_enter_and_leave(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map("default", {"metadata": {"name": "cm", "labels": {"role": "x"}}})
    async with watch.Watch() as stream:
        events = stream.stream(
            core.list_namespaced_config_map, "default", label_selector="role=y", timeout_seconds=5
        )
        await core.patch_namespaced_config_map("cm", "default", {"metadata": {"labels": {"role": "y"}}})
        entered = await events.__anext__()
        await core.patch_namespaced_config_map("cm", "default", {"metadata": {"labels": {"role": "z"}}})
        left = await events.__anext__()
    assert entered["type"] == "ADDED" and left["type"] == "DELETED"


async def test_watch_ends_after_timeout_seconds(kube: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    started = time.monotonic()
    async with watch.Watch() as stream:
        events = [e async for e in stream.stream(core.list_namespaced_pod, "default", timeout_seconds=1)]
    elapsed = time.monotonic() - started
    assert events == []
    assert 0.9 <= elapsed < 3


async def test_shutdown_ends_open_watches() -> None:
    kube = KubeEmulator()
    await kube.start()
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{kube.url}/api/v1/namespaces/default/pods", params={"watch": "1"}
        ) as response:
            assert response.status == 200
            closing = asyncio.create_task(kube.close())
            rest = await asyncio.wait_for(response.content.read(), timeout=5)
            await asyncio.wait_for(closing, timeout=5)
    assert rest == b""


# --- emulated controllers ---------------------------------------------------------------------------------


async def test_replicaset_status_follows_spec(kube: KubeEmulator, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    created = await apps.create_namespaced_replica_set("default", replicaset(replicas=3))
    assert created.status is None or not created.status.ready_replicas  # the reply precedes the controller
    ready = await eventually(
        lambda: (
            (rs := kube.get("apps/v1", "replicasets", "default", "web"))
            and rs.get("status", {}).get("readyReplicas") == 3
        )
    )
    assert ready
    status = kube.get("apps/v1", "replicasets", "default", "web")["status"]  # type: ignore[index]
    assert status == {
        "replicas": 3,
        "fullyLabeledReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "observedGeneration": 1,
    }

    kube.hold_ready("default", "web")
    await apps.patch_namespaced_replica_set_scale("web", "default", {"spec": {"replicas": 5}})
    await eventually(lambda: kube.get("apps/v1", "replicasets", "default", "web")["status"]["replicas"] == 5)  # type: ignore[index]
    assert kube.get("apps/v1", "replicasets", "default", "web")["status"]["readyReplicas"] == 3  # type: ignore[index]
    # With the count held, a hand edit of the status sticks: the way to fake pods going unready.
    kube.edit(
        "apps/v1",
        "replicasets",
        "default",
        "web",
        lambda rs: rs["status"].update(readyReplicas=1, availableReplicas=1),
    )
    await kube.settle()  # the controller reacted to the edit and left it alone
    assert kube.get("apps/v1", "replicasets", "default", "web")["status"]["readyReplicas"] == 1  # type: ignore[index]
    kube.release_ready("default", "web")
    await eventually(
        lambda: kube.get("apps/v1", "replicasets", "default", "web")["status"]["readyReplicas"] == 5
    )  # type: ignore[index]


async def test_replicaset_controller_can_be_switched_off(kube: KubeEmulator, api: client.ApiClient) -> None:
    kube.replicaset_controller = False
    apps = client.AppsV1Api(api)
    async with watch.Watch() as stream:
        events = stream.stream(apps.list_namespaced_replica_set, "default", timeout_seconds=1)
        await apps.create_namespaced_replica_set("default", replicaset())
        seen = [e["type"] async for e in events]
    assert seen == ["ADDED"]


async def test_job_completes_or_fails_by_annotation(kube: KubeEmulator, api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)

    def job(name: str, result: str | None = None) -> dict[str, Any]:
        annotations = {"emulator/result": result} if result else {}
        return {
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}
            },
        }

    async with watch.Watch() as stream:
        events = stream.stream(batch.list_namespaced_job, "default", timeout_seconds=5)
        await batch.create_namespaced_job("default", job("ok"))
        await batch.create_namespaced_job("default", job("bad", "fail"))
        finished: dict[str, Any] = {}
        async for event in events:
            conditions = event["object"].status.conditions if event["object"].status else None
            if conditions:
                finished[event["object"].metadata.name] = event["object"].status
            if len(finished) == 2:
                break
    assert finished["ok"].succeeded == 1 and finished["ok"].completion_time is not None
    assert "Complete" in {c.type for c in finished["ok"].conditions}
    assert finished["bad"].failed == 1
    assert "Failed" in {c.type for c in finished["bad"].conditions}


# --- registration and discovery ---------------------------------------------------------------------------


async def test_registered_kinds_and_crds_are_served(kube: KubeEmulator, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    kube.register("example.io", "v1", "widgets", "Widget")
    widget = {"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}
    assert (await custom.create_namespaced_custom_object("example.io", "v1", "default", "widgets", widget))[
        "spec"
    ] == {"size": 1}

    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.io"},
        "spec": {
            "group": "example.io",
            "scope": "Cluster",
            "names": {"plural": "gadgets", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}}}],
        },
    }
    await client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
    gadget = {"apiVersion": "example.io/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    created = await custom.create_cluster_custom_object("example.io", "v1", "gadgets", gadget)
    assert "namespace" not in created["metadata"]
    assert kube.get("example.io/v1", "gadgets", None, "g") is not None


async def test_discovery_lists_resources(kube: KubeEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{kube.url}/apis") as response:
            groups = {g["name"]: g for g in (await response.json())["groups"]}
        async with session.get(f"{kube.url}/apis/argoproj.io/v1alpha1") as response:
            resources = {r["name"]: r for r in (await response.json())["resources"]}
        async with session.get(f"{kube.url}/api/v1") as response:
            core = {r["name"]: r for r in (await response.json())["resources"]}
    assert groups["networking.istio.io"]["preferredVersion"]["version"] == "v1"
    assert resources["rollouts"]["kind"] == "Rollout" and resources["rollouts"]["namespaced"] is True
    assert "watch" in resources["rollouts"]["verbs"]
    assert resources["rollouts/scale"]["kind"] == "Scale"
    assert resources["clusteranalysistemplates"]["namespaced"] is False
    assert core["pods"]["kind"] == "Pod"


# --- pure patch semantics ---------------------------------------------------------------------------------


def test_merge_patch_follows_rfc_7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }


def test_json_patch_ops_and_failures() -> None:
    doc = {"a": [1, 2], "b": {"c~/": 1}}
    assert json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3}])["a"] == [1, 2, 3]
    assert json_patch(doc, [{"op": "remove", "path": "/b/c~0~1"}])["b"] == {}
    assert json_patch(doc, [{"op": "move", "from": "/a", "path": "/z"}]) == {"b": {"c~/": 1}, "z": [1, 2]}
    assert doc == {"a": [1, 2], "b": {"c~/": 1}}  # the input is never mutated
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "replace", "path": "/missing", "value": 1}])


def test_strategic_merge_patch_merges_keyed_lists() -> None:
    original = {
        "ports": [{"port": 80, "name": "http"}, {"port": 443}],
        "finalizers": ["a"],
        "env": [{"name": "X"}],
    }
    patched = strategic_merge_patch(
        original,
        {
            "ports": [{"port": 80, "targetPort": 8080}],
            "finalizers": ["b"],
            "env": [{"$patch": "replace"}, {"name": "Y"}],
        },
    )
    assert patched["ports"] == [{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443}]
    assert patched["finalizers"] == ["a", "b"]
    assert patched["env"] == [{"name": "Y"}]


# --- deletion ---------------------------------------------------------------------------------------------


async def test_delete_replies_finalizers_and_garbage_collection(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(api)
    owner = await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout())
    owned = replicaset()
    owned["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "name": "demo",
            "uid": owner["metadata"]["uid"],
        }
    ]
    await client.AppsV1Api(api).create_namespaced_replica_set("default", owned)

    reply = await custom.delete_namespaced_custom_object(*ARGO, "default", "rollouts", "demo")
    assert reply["kind"] == "Status" and reply["status"] == "Success"
    assert reply["details"] == {
        "name": "demo",
        "group": "argoproj.io",
        "kind": "rollouts",
        "uid": owner["metadata"]["uid"],
    }
    await eventually(lambda: kube.get("apps/v1", "replicasets", "default", "web") is None)

    core = client.CoreV1Api(api)
    await core.create_namespaced_pod(
        "default", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    )
    deleted_pod = await core.delete_namespaced_pod("p", "default")
    assert deleted_pod.kind == "Pod"  # pods answer with the object (ReturnDeletedObject)

    await core.create_namespaced_config_map("default", {"metadata": {"name": "held", "finalizers": ["x/y"]}})
    _, status, _ = await core.delete_namespaced_config_map_with_http_info("held", "default")
    assert status == 202
    marked = kube.get("v1", "configmaps", "default", "held")
    assert marked is not None and marked["metadata"]["deletionTimestamp"]
    await core.patch_namespaced_config_map("held", "default", {"metadata": {"finalizers": None}})
    assert kube.get("v1", "configmaps", "default", "held") is None
