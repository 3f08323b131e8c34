"""The planner's Kubernetes bridge against the HTTP-level API emulator and a real nats-server.

A real nats-server, the planner (run_planner, in-process) with the no-op scaler and traffic-shifter,
and a KubeBridge on the emulator: a seeded Rollout gets a planner state and an Argo status written
through the status subresource (merge patches, Argo's field names); a template change walks to the
pause step (phase Paused, pauseConditions); clearing pauseConditions by hand promotes; `status.abort`
set by hand aborts (Degraded) and unset retries; a rejected spec shows InvalidSpec; templates reach
the planner's bucket; an inactive bridge does nothing; a dropped watch whose version was compacted
away relists and the planner hears of every change once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError

from services.kube_bridge.bridge import KubeBridge
from services.kube_bridge.translate import ROLLOUT
from services.planner.service import run_planner, state_decoder
from services.planner.state import RolloutState
from services.scaler.service import run_scaler
from services.traffic_shifter.providers import NoopProvider
from services.traffic_shifter.service import run_traffic_shifter
from shared import subjects
from shared.embedded_server import EmbeddedNats, free_port
from shared.jetstream import Connection, connect
from tests.support.kube_api import KubeEmulator

pytestmark = pytest.mark.timeout(60)

NS = "default"
API = "argoproj.io/v1alpha1"
STEPS = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]


def rollout_obj(name: str, *, image: str = "web:1", steps: Any = None) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            "strategy": {
                "canary": {
                    "canaryService": f"{name}-canary",
                    "stableService": f"{name}-stable",
                    "trafficRouting": {"istio": {"virtualService": {"name": name, "routes": ["primary"]}}},
                    "steps": copy.deepcopy(STEPS if steps is None else steps),
                }
            },
        },
    }


@dataclass
class Stack:
    kube: KubeEmulator
    bridge: KubeBridge
    conn: Connection
    commands: list[tuple[str, str]] = field(default_factory=list)  # (subject, Nats-Msg-Id) as sent

    async def on_command(self, msg: Msg) -> None:
        self.commands.append((msg.subject, (msg.headers or {}).get("Nats-Msg-Id", "")))

    def sent(self, name: str, verb: str) -> list[str]:
        """Message ids of the commands `verb` sent for rollout `name`."""
        return [mid for subj, mid in self.commands if subj == subjects.command(NS, name, verb)]

    async def state(self, name: str) -> RolloutState | None:
        kv = await self.conn.kv(subjects.ROLLOUTS_BUCKET)
        try:
            entry = await kv.get(subjects.rollout_key(NS, name))
        except KeyNotFoundError:
            return None
        return state_decoder.decode(entry.value) if entry.value else None

    def status(self, name: str) -> dict[str, Any]:
        obj = self.kube.get(API, "rollouts", NS, name)
        return dict((obj or {}).get("status") or {})

    def edit(self, name: str, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        return self.kube.edit(API, "rollouts", NS, name, fn)

    def status_patches(self, name: str) -> list[Any]:
        return [r for r in self.kube.requests if r.method == "PATCH" and f"/rollouts/{name}/" in r.path + "/"]


async def until(cond: Callable[[], Any], what: str, *, timeout: float = 10.0) -> Any:
    """Poll `cond` (sync or async) until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def services(url: str, tmp: Path) -> AsyncIterator[None]:
    """The planner, the no-op scaler and the no-op traffic-shifter, each on its own connection."""
    conns = [await connect(url, name=n) for n in ("planner", "scaler", "traffic-shifter")]
    stop = asyncio.Event()
    ready = [asyncio.Event() for _ in conns]
    tasks = [
        asyncio.create_task(run_planner(conns[0], stop, ready[0])),
        asyncio.create_task(
            run_scaler(
                conns[1], stop, ready[1], platform="noop", log_dir=tmp / "replicas", readiness_timeout=5
            )
        ),
        asyncio.create_task(
            run_traffic_shifter(
                conns[2], NoopProvider(), stop, ready[2], admin_host="127.0.0.1", admin_port=free_port()
            )
        ),
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), timeout=15)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=15)
        for c in conns:
            await c.nc.close()


@contextlib.asynccontextmanager
async def bridged(nats_server: EmbeddedNats, tmp: Path, *, active: bool = True) -> AsyncIterator[Stack]:
    async with services(nats_server.url, tmp), KubeEmulator() as kube, kube.api_client() as api:
        test_conn = await connect(nats_server.url, name="test")
        bridge_conn = await connect(nats_server.url, name="kube-bridge")
        stack = Stack(kube, KubeBridge(api, bridge_conn, active=active), test_conn)
        await test_conn.nc.subscribe(subjects.COMMANDS_WILDCARD, cb=stack.on_command)
        stop = asyncio.Event()
        task = asyncio.create_task(stack.bridge.run(stop))
        try:
            yield stack
            assert not task.done(), "the bridge stopped"
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)
            await bridge_conn.nc.close()
            await test_conn.nc.close()


@pytest.fixture
async def stack(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Stack]:
    async with bridged(nats_server, tmp_path) as s:
        yield s


async def healthy(stack: Stack, name: str) -> dict[str, Any]:
    return dict(
        await until(
            lambda: stack.status(name).get("phase") == "Healthy" and stack.status(name), f"{name} Healthy"
        )
    )


# --- tests ----------------------------------------------------------------------------------------


async def test_a_seeded_rollout_gets_a_planner_state_and_argo_status_through_the_status_subresource(
    stack: Stack,
) -> None:
    stack.kube.seed(rollout_obj("web"))
    state = await until(lambda: stack.state("web"), "the planner's state of web")
    st = await healthy(stack, "web")
    assert st["observedGeneration"] == "1"
    assert st["stableRS"] == st["currentPodHash"] == state.current_hash
    assert st["currentStepIndex"] == len(STEPS)
    assert st["canary"]["weights"]["stable"] == {
        "weight": 100,
        "serviceName": "web-stable",
        "podTemplateHash": state.current_hash,
    }
    assert {c["type"] for c in st["conditions"]} >= {"Progressing", "Available", "Healthy", "Completed"}
    patches = stack.status_patches("web")
    assert patches, "no status written"
    for p in patches:
        assert p.path == f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/web/status"
        assert p.content_type.startswith("application/merge-patch+json")
        assert set(p.body) == {"status"} and p.body["status"]
    assert len(stack.sent("web", "apply")) == 1  # its own status writes asked for nothing more
    assert stack.commands == [(subjects.command(NS, "web", "apply"), stack.sent("web", "apply")[0])]
    obj = stack.kube.get(API, "rollouts", NS, "web")
    assert obj is not None and obj["metadata"]["generation"] == 1  # status writes never bump it


async def test_a_template_change_walks_to_the_pause_step_and_clearing_pause_conditions_promotes(
    stack: Stack,
) -> None:
    stack.kube.seed(rollout_obj("web"))
    first = await healthy(stack, "web")

    def new_image(obj: dict[str, Any]) -> None:
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = "web:2"

    stack.edit("web", new_image)
    st = await until(lambda: stack.status("web").get("phase") == "Paused" and stack.status("web"), "Paused")
    assert st["message"] == "CanaryPauseStep"
    assert [p["reason"] for p in st["pauseConditions"]] == ["CanaryPauseStep"]
    assert st["pauseConditions"][0]["startTime"].endswith("Z")
    assert st["controllerPause"] is True
    assert st["currentStepIndex"] == 1
    assert st["observedGeneration"] == "2"
    assert st["currentPodHash"] != st["stableRS"] == first["stableRS"]
    assert st["canary"]["weights"]["canary"]["weight"] == 20
    assert len(stack.sent("web", "apply")) == 2

    # `kubectl argo rollouts promote`: {"status":{"pauseConditions":null}} through the status subresource.
    stack.edit("web", lambda obj: obj["status"].update(pauseConditions=None))
    done = await healthy(stack, "web")
    assert done["stableRS"] == st["currentPodHash"]
    assert len(stack.sent("web", "promote")) == 1
    assert len(stack.sent("web", "apply")) == 2  # no generation change, no apply


async def test_status_abort_written_by_hand_aborts_and_unsetting_it_retries(stack: Stack) -> None:
    stack.kube.seed(rollout_obj("web"))
    await healthy(stack, "web")
    stack.edit("web", lambda obj: obj["spec"]["template"]["spec"]["containers"][0].update(image="web:2"))
    await until(lambda: stack.status("web").get("phase") == "Paused", "Paused at the pause step")

    stack.edit("web", lambda obj: obj["status"].update(abort=True))  # `kubectl argo rollouts abort`
    st = await until(
        lambda: stack.status("web").get("phase") == "Degraded" and stack.status("web"), "Degraded"
    )
    assert st["message"].startswith("RolloutAborted: Rollout aborted update to revision 2")
    assert st["abort"] is True and st["abortedAt"]
    assert st["currentStepIndex"] == 0 and "pauseConditions" not in st
    assert len(stack.sent("web", "abort")) == 1
    state = await stack.state("web")
    assert state is not None and state.abort

    stack.edit("web", lambda obj: obj["status"].update(abort=False))  # `kubectl argo rollouts retry`
    st = await until(lambda: stack.status("web").get("phase") == "Paused" and stack.status("web"), "retried")
    assert "abort" not in st and st["currentStepIndex"] == 1
    assert len(stack.sent("web", "retry")) == 1
    assert len(stack.sent("web", "abort")) == 1  # the bridge's own abort:true write was not read back


async def test_a_spec_the_planner_rejects_is_degraded_with_invalid_spec(stack: Stack) -> None:
    bad = rollout_obj("web", steps=[{"setWeight": 150}])
    stack.kube.seed(bad)
    st = await until(
        lambda: stack.status("web").get("phase") == "Degraded" and stack.status("web"), "Degraded"
    )
    assert st["message"].startswith("InvalidSpec: ")
    assert st["observedGeneration"] == "1"
    [cond] = [c for c in st["conditions"] if c["type"] == "InvalidSpec"]
    assert cond["status"] == "True" and cond["message"] == st["message"].removeprefix("InvalidSpec: ")
    assert await stack.state("web") is None
    # Fixing the spec clears it.
    stack.edit("web", lambda obj: obj["spec"]["strategy"]["canary"].update(steps=STEPS))
    st = await healthy(stack, "web")
    assert st["observedGeneration"] == "2" and all(c["type"] != "InvalidSpec" for c in st["conditions"])


async def test_templates_reach_the_planners_bucket(stack: Stack) -> None:
    spec = {
        "metrics": [
            {
                "name": "errors",
                "successCondition": "result < 1",
                "provider": {"web": {"url": "http://127.0.0.1:1/x", "jsonPath": "{$.v}"}},
            }
        ]
    }
    stack.kube.seed(
        {
            "apiVersion": API,
            "kind": "AnalysisTemplate",
            "metadata": {"name": "errs", "namespace": NS},
            "spec": spec,
        }
    )
    stack.kube.seed(
        {"apiVersion": API, "kind": "ClusterAnalysisTemplate", "metadata": {"name": "errs"}, "spec": spec}
    )
    kv = await stack.conn.kv(subjects.TEMPLATES_BUCKET)

    async def stored(key: str) -> bool:
        with contextlib.suppress(KeyNotFoundError):
            return bool((await kv.get(key)).value)
        return False

    await until(lambda: stored(subjects.template_key(NS, "errs")), "the namespaced template")
    await until(lambda: stored(subjects.template_key(None, "errs")), "the cluster template")
    assert sorted(s for s, _ in stack.commands) == sorted(
        [subjects.command(NS, "errs", "apply"), subjects.command("_cluster", "errs", "apply")]
    )


async def test_an_inactive_bridge_sends_and_writes_nothing_until_activated(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with bridged(nats_server, tmp_path, active=False) as stack:
        stack.kube.seed(rollout_obj("web"))
        stack.kube.seed(rollout_obj("api"))
        # Nothing to await on a bridge that does nothing: give it the time a write would take.
        await asyncio.sleep(0.5)
        assert stack.commands == [] and stack.status_patches("web") == []
        assert await stack.state("web") is None
        stack.bridge.set_active(True)
        await healthy(stack, "web")
        await healthy(stack, "api")
        assert len(stack.sent("web", "apply")) == 1


async def test_a_dropped_watch_whose_version_was_compacted_relists_without_loss_or_duplicates(
    stack: Stack,
) -> None:
    for name in ("a", "b", "c"):
        stack.kube.seed(rollout_obj(name))
    for name in ("a", "b", "c"):
        await healthy(stack, name)
    await until(lambda: stack.bridge.synced.is_set(), "the bridge's first list")
    watch = stack.bridge.watches[ROLLOUT]
    assert watch.lists == 1
    applies_before = {n: len(stack.sent(n, "apply")) for n in ("a", "b", "c")}
    assert applies_before == {"a": 1, "b": 1, "c": 1}
    lists_before = len(
        [
            r
            for r in stack.kube.requests
            if r.method == "GET" and r.path.endswith("/rollouts") and "watch" not in r.query
        ]
    )

    # All at once, with no await in between: the watch ends, then changes it cannot see, then the
    # history it would resume from is compacted away.
    stack.kube.store.close_watchers()
    stack.kube.seed(rollout_obj("d"))
    stack.kube.delete(API, "rollouts", NS, "b")
    stack.kube.edit(
        API,
        "rollouts",
        NS,
        "c",
        lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="web:2"),
    )
    stack.kube.compact()

    await until(lambda: stack.state("d"), "the planner's state of d (created while the watch was down)")
    await healthy(stack, "d")
    st = await until(
        lambda: stack.status("c").get("phase") == "Paused" and stack.status("c"), "c paused at step 1"
    )
    assert st["observedGeneration"] == "2"
    assert watch.lists == 2  # 410 Gone -> one relist
    lists_after = len(
        [
            r
            for r in stack.kube.requests
            if r.method == "GET" and r.path.endswith("/rollouts") and "watch" not in r.query
        ]
    )
    assert lists_after == lists_before + 1
    # Every change heard once, nothing replayed: a unchanged, c re-applied once, d applied once.
    assert {n: len(stack.sent(n, "apply")) for n in ("a", "b", "c", "d")} == {"a": 1, "b": 1, "c": 2, "d": 1}
    ids = [mid for _, mid in stack.commands]
    assert len(ids) == len(set(ids))
    assert "b" not in {k[1] for k in stack.bridge.rollouts}  # the deleted one is forgotten, no crash
    # The bridge goes on: a later change still arrives.
    stack.edit("c", lambda obj: obj["status"].update(pauseConditions=None))
    await healthy(stack, "c")


async def test_the_api_group_is_configurable(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    group = "rollouts.example.com"
    async with services(nats_server.url, tmp_path), KubeEmulator() as kube, kube.api_client() as api:
        kube.register(group, "v1alpha1", "rollouts", "Rollout", scale=True)
        kube.register(group, "v1alpha1", "analysistemplates", "AnalysisTemplate", status=False)
        kube.register(
            group,
            "v1alpha1",
            "clusteranalysistemplates",
            "ClusterAnalysisTemplate",
            namespaced=False,
            status=False,
        )
        conn = await connect(nats_server.url, name="kube-bridge")
        bridge = KubeBridge(api, conn, group=group, namespace=NS)
        stop = asyncio.Event()
        task = asyncio.create_task(bridge.run(stop))
        try:
            obj = rollout_obj("web") | {"apiVersion": f"{group}/v1alpha1"}
            kube.seed(obj)
            kube.seed(
                rollout_obj("elsewhere")
                | {"apiVersion": f"{group}/v1alpha1", "metadata": {"name": "elsewhere", "namespace": "other"}}
            )

            def status() -> dict[str, Any]:
                return dict((kube.get(f"{group}/v1alpha1", "rollouts", NS, "web") or {}).get("status") or {})

            await until(lambda: status().get("phase") == "Healthy", "web Healthy under the custom group")
            paths = {r.path for r in kube.requests if r.method == "PATCH"}
            assert paths == {f"/apis/{group}/v1alpha1/namespaces/{NS}/rollouts/web/status"}
            # Only the bridge's namespace is watched.
            assert not (kube.get(f"{group}/v1alpha1", "rollouts", "other", "elsewhere") or {}).get("status")
            assert any(r.path == f"/apis/{group}/v1alpha1/namespaces/{NS}/rollouts" for r in kube.requests)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)
            await conn.nc.close()


async def test_resumable_watch_over_any_resource_resumes_and_relists_with_differences() -> None:
    """ResumableWatch over core v1 ConfigMaps: the first list, a normal end (timeoutSeconds) resumed
    from the last version without a relist, then a dropped watch whose version was compacted away
    relisted with exactly the differences (ADDED, MODIFIED, a synthesized DELETED)."""
    from functools import partial

    from kubernetes_asyncio.client import CoreV1Api

    from services.kube_bridge.watch import ResumableWatch, WatchSettings

    def cm(name: str, value: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NS},
            "data": {"v": value},
        }

    def set_value(value: str) -> Callable[[dict[str, Any]], None]:
        return lambda o: o["data"].update(v=value)

    async with KubeEmulator() as kube, kube.api_client() as api:
        kube.seed(cm("a", "1"))
        kube.seed(cm("b", "1"))
        watch = ResumableWatch(
            partial(CoreV1Api(api).list_namespaced_config_map, NS),
            what="configmaps",
            settings=WatchSettings(timeout_seconds=1),
        )
        seen: list[tuple[str, str, str]] = []

        async def consume() -> None:
            async for kind, obj in watch.events():
                seen.append((kind, obj["metadata"]["name"], obj["data"]["v"]))

        task = asyncio.create_task(consume())
        try:
            await until(lambda: len(seen) == 2, "the first list")
            assert sorted(seen) == [("ADDED", "a", "1"), ("ADDED", "b", "1")]

            def watches() -> int:
                return len([r for r in kube.requests if r.method == "GET" and r.query.get("watch")])

            first_watch = next(r for r in kube.requests if r.method == "GET" and r.query.get("watch"))
            assert (
                first_watch.query["resourceVersion"] == "2"
            )  # the list's version: nothing in between is lost
            assert first_watch.query["allowWatchBookmarks"].lower() == "true"
            started = watches()
            await until(lambda: watches() > started, "a watch resumed after its timeoutSeconds", timeout=5)
            kube.edit("v1", "configmaps", NS, "a", set_value("2"))
            await until(lambda: len(seen) == 3, "the change after the resume")
            assert seen[2] == ("MODIFIED", "a", "2")
            assert watch.lists == 1  # resumed, not relisted

            kube.store.close_watchers()
            kube.seed(cm("c", "1"))
            kube.delete("v1", "configmaps", NS, "b")
            kube.edit("v1", "configmaps", NS, "a", set_value("3"))
            kube.compact()
            await until(lambda: len(seen) == 6, "the relist's differences")
            assert sorted(seen[3:]) == [("ADDED", "c", "1"), ("DELETED", "b", "1"), ("MODIFIED", "a", "3")]
            assert watch.lists == 2
            kube.edit("v1", "configmaps", NS, "c", set_value("2"))
            await until(lambda: len(seen) == 7, "a change after the relist")
            assert seen[6] == ("MODIFIED", "c", "2")
            assert len(set(seen)) == len(seen)  # nothing twice
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
