"""End to end on Kubernetes: the four services as processes (`run <service> --platform kubernetes`)
over a real nats-server, against the HTTP-level API emulator (tests/support/kube_api.py).

A Rollout resource is applied → its ReplicaSet is created and scaled → a new template steps the
Istio VirtualService's weights → the status subresource is written with Argo's field names →
promoted the way `kubectl argo rollouts promote` does it (clearing pauseConditions) → Healthy, with
the Services pointed at the new pod-template-hash. Then an abort written as Argo's CLI writes it
(`status.abort: true`) sends all traffic back to stable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from services.cli.client import CliError
from tests.e2e.harness import Harness
from tests.support.kube_api import KubeEmulator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

NS = "default"
ARGO = "argoproj.io/v1alpha1"
ISTIO = "networking.istio.io/v1alpha3"


def rollout(image: str) -> dict[str, Any]:
    return {
        "apiVersion": ARGO,
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 8080}]}]},
            },
            "strategy": {
                "canary": {
                    "stableService": "web-stable",
                    "canaryService": "web-canary",
                    "scaleDownDelaySeconds": 1,
                    "trafficRouting": {
                        "istio": {"virtualService": {"name": "web-vsvc", "routes": ["primary"]}}
                    },
                    "steps": [
                        {"setWeight": 20},
                        {"pause": {}},
                        {"setWeight": 60},
                        {"pause": {"duration": "1s"}},
                    ],
                }
            },
        },
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


VIRTUAL_SERVICE = {
    "apiVersion": ISTIO,
    "kind": "VirtualService",
    "metadata": {"name": "web-vsvc", "namespace": NS},
    "spec": {
        "hosts": ["web.example.com"],
        "http": [
            {
                "name": "primary",
                "route": [
                    {"destination": {"host": "web-stable"}, "weight": 100},
                    {"destination": {"host": "web-canary"}, "weight": 0},
                ],
            }
        ],
    },
}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[KubeEmulator, Harness]]:
    async with KubeEmulator() as kube:
        for name in ("web-stable", "web-canary"):
            kube.seed(service(name))
        kube.seed(VIRTUAL_SERVICE)
        h = Harness(tmp_path, platform="kubernetes", kube_url=kube.url)
        await h.start()
        try:
            yield kube, h
        finally:
            await h.stop()


async def until(what: str, probe: Callable[[], Any], h: Harness, timeout: float = 30.0) -> Any:
    """Poll the emulator's state (it has no event to await from outside) until `probe` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{h.logs()}")
        await asyncio.sleep(0.05)


def status(kube: KubeEmulator) -> dict[str, Any]:
    obj = kube.get(ARGO, "rollouts", NS, "web") or {}
    return dict(obj.get("status") or {})


def weights(kube: KubeEmulator) -> dict[str, int]:
    vs = kube.get(ISTIO, "virtualservices", NS, "web-vsvc") or {}
    route = vs["spec"]["http"][0]["route"]
    return {d["destination"]["host"]: d.get("weight", 0) for d in route}


def canary_weight_history(kube: KubeEmulator) -> list[int]:
    out: list[int] = []
    for r in kube.requests_to(
        "PUT", f"/apis/networking.istio.io/v1alpha3/namespaces/{NS}/virtualservices/web-vsvc"
    ):
        route = r.body["spec"]["http"][0]["route"]
        out.append(next(d.get("weight", 0) for d in route if d["destination"]["host"] == "web-canary"))
    return out


def replica_sets(kube: KubeEmulator) -> dict[str, dict[str, Any]]:
    return {
        rs["metadata"]["labels"]["rollouts-pod-template-hash"]: rs
        for rs in kube.list("apps/v1", "replicasets", NS)
    }


def selector_hash(kube: KubeEmulator, name: str) -> str | None:
    svc = kube.get("v1", "services", NS, name) or {}
    return (svc.get("spec", {}).get("selector") or {}).get("rollouts-pod-template-hash")


def set_image(image: str) -> Callable[[dict[str, Any]], None]:
    def edit(obj: dict[str, Any]) -> None:
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = image

    return edit


async def test_rollout_resource_canary_promoted_then_aborted(cluster: tuple[KubeEmulator, Harness]) -> None:
    kube, h = cluster
    kube.seed(rollout("web:1"))

    # First revision: stable at once, its ReplicaSet created and scaled to 3, status written.
    st = await until("revision 1 Healthy", lambda: status(kube).get("phase") == "Healthy" and status(kube), h)
    stable = st["stableRS"]
    assert st["currentPodHash"] == stable
    assert st["observedGeneration"] == "1"  # a string, as in Argo's RolloutStatus
    rs1 = await until("revision 1 ReplicaSet", lambda: replica_sets(kube).get(stable), h)
    assert rs1["metadata"]["name"] == f"web-{stable}"
    assert rs1["spec"]["replicas"] == 3
    assert rs1["spec"]["selector"]["matchLabels"] == {"app": "web", "rollouts-pod-template-hash": stable}
    assert rs1["metadata"]["ownerReferences"][0]["kind"] == "Rollout"
    await until("stable Service selects revision 1", lambda: selector_hash(kube, "web-stable") == stable, h)

    # Second revision: the canary gets 20% of the traffic and one of three replicas, then pauses.
    kube.edit(ARGO, "rollouts", NS, "web", set_image("web:2"))
    st = await until(
        "paused at step 1",
        lambda: (
            status(kube).get("phase") == "Paused" and status(kube)["currentStepIndex"] == 1 and status(kube)
        ),
        h,
    )
    canary = st["currentPodHash"]
    assert canary != stable and st["stableRS"] == stable
    assert [c["reason"] for c in st["pauseConditions"]] == ["CanaryPauseStep"]
    assert st["canary"]["weights"] == {
        "canary": {"weight": 20, "serviceName": "web-canary", "podTemplateHash": canary},
        "stable": {"weight": 80, "serviceName": "web-stable", "podTemplateHash": stable},
    }
    assert weights(kube) == {"web-stable": 80, "web-canary": 20}
    assert replica_sets(kube)[canary]["spec"]["replicas"] == 1
    await until("canary Service selects revision 2", lambda: selector_hash(kube, "web-canary") == canary, h)
    assert selector_hash(kube, "web-stable") == stable

    # `kubectl argo rollouts promote`: clears the pause conditions; the rest runs on its own.
    kube.edit(
        ARGO, "rollouts", NS, "web", lambda o: o["status"].update(pauseConditions=None, controllerPause=False)
    )
    st = await until(
        "revision 2 Healthy",
        lambda: (
            status(kube).get("phase") == "Healthy" and status(kube)["stableRS"] == canary and status(kube)
        ),
        h,
    )
    assert weights(kube) == {"web-stable": 100, "web-canary": 0}
    history = canary_weight_history(kube)
    assert [w for w in history if w in (20, 60)] == [20, 60], history  # stepped in order, once each
    await until(
        "both Services select revision 2",
        lambda: selector_hash(kube, "web-stable") == selector_hash(kube, "web-canary") == canary,
        h,
    )
    await until("revision 1 scaled down", lambda: replica_sets(kube)[stable]["spec"]["replicas"] == 0, h)
    assert replica_sets(kube)[canary]["spec"]["replicas"] == 3

    # Someone edits the VirtualService by hand: the traffic-shifter puts the desired weights back.
    def meddle(vs: dict[str, Any]) -> None:
        for d in vs["spec"]["http"][0]["route"]:
            d["weight"] = 50

    kube.edit(ISTIO, "virtualservices", NS, "web-vsvc", meddle)
    await until("drift corrected", lambda: weights(kube) == {"web-stable": 100, "web-canary": 0}, h)

    # Third revision, aborted the way Argo's CLI does it: all traffic back to the stable revision.
    kube.edit(ARGO, "rollouts", NS, "web", set_image("web:3"))
    st = await until(
        "revision 3 paused",
        lambda: (
            status(kube).get("phase") == "Paused"
            and status(kube)["currentPodHash"] != canary
            and status(kube)
        ),
        h,
    )
    assert weights(kube) == {"web-stable": 80, "web-canary": 20}
    kube.edit(ARGO, "rollouts", NS, "web", lambda o: o["status"].update(abort=True))
    st = await until("aborted", lambda: status(kube).get("phase") == "Degraded" and status(kube), h)
    assert st["abort"] is True and st["stableRS"] == canary
    await until("weights back on stable", lambda: weights(kube) == {"web-stable": 100, "web-canary": 0}, h)

    # `kubectl delete rollout web`: the planner forgets it (its ReplicaSets go by owner reference).
    kube.delete(ARGO, "rollouts", NS, "web")

    async def gone() -> bool:
        try:
            await h.client.state(NS, "web")
        except CliError:
            return True
        return False

    deadline = time.monotonic() + 30
    while not await gone():
        assert time.monotonic() < deadline, f"the planner still has rollout web\n{h.logs()}"
        await asyncio.sleep(0.05)


def blue_green(image: str) -> dict[str, Any]:
    doc = rollout(image)
    doc["metadata"]["name"] = "bg"
    doc["spec"]["selector"] = {"matchLabels": {"app": "bg"}}
    doc["spec"]["template"]["metadata"]["labels"] = {"app": "bg"}
    doc["spec"]["strategy"] = {
        "blueGreen": {
            "activeService": "bg-active",
            "previewService": "bg-preview",
            "autoPromotionEnabled": False,
            "scaleDownDelaySeconds": 1,
        }
    }
    return doc


async def test_blue_green_resource_switches_active_and_preview_services(
    cluster: tuple[KubeEmulator, Harness],
) -> None:
    kube, h = cluster
    for name in ("bg-active", "bg-preview"):
        kube.seed(service(name) | {"metadata": {"name": name, "namespace": NS}})

    def st() -> dict[str, Any]:
        obj = kube.get(ARGO, "rollouts", NS, "bg") or {}
        return dict(obj.get("status") or {})

    kube.seed(blue_green("web:1"))
    blue = (await until("blue Healthy", lambda: st().get("phase") == "Healthy" and st(), h))["stableRS"]
    await until("active on blue", lambda: selector_hash(kube, "bg-active") == blue, h)

    kube.edit(ARGO, "rollouts", NS, "bg", set_image("web:2"))
    s = await until("green previewed, paused", lambda: st().get("phase") == "Paused" and st(), h)
    green = s["currentPodHash"]
    assert green != blue
    assert [c["reason"] for c in s["pauseConditions"]] == ["BlueGreenPause"]
    assert s["blueGreen"] == {"activeSelector": blue, "previewSelector": green}
    await until("preview on green", lambda: selector_hash(kube, "bg-preview") == green, h)
    assert selector_hash(kube, "bg-active") == blue  # users still on blue
    assert replica_sets(kube)[green]["spec"]["replicas"] == 3

    # `kubectl argo rollouts promote`: the active Service switches to green, blue scales down.
    kube.edit(
        ARGO, "rollouts", NS, "bg", lambda o: o["status"].update(pauseConditions=None, controllerPause=False)
    )
    s = await until(
        "green Healthy", lambda: st().get("phase") == "Healthy" and st()["stableRS"] == green and st(), h
    )
    await until("active on green", lambda: selector_hash(kube, "bg-active") == green, h)
    await until("blue scaled down", lambda: replica_sets(kube)[blue]["spec"]["replicas"] == 0, h)


SMOKE_TEMPLATE = {
    "apiVersion": ARGO,
    "kind": "AnalysisTemplate",
    "metadata": {"name": "smoke", "namespace": NS},
    "spec": {
        "args": [{"name": "result"}],
        "metrics": [
            {
                "name": "smoke",
                "provider": {
                    "job": {
                        # the emulator's Job controller fails a Job annotated emulator/result: fail
                        "metadata": {"annotations": {"emulator/result": "{{args.result}}"}},
                        "spec": {
                            "backoffLimit": 0,
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "containers": [
                                        {"name": "smoke", "image": "busybox", "command": ["true"]}
                                    ],
                                }
                            },
                        },
                    }
                },
            }
        ],
    },
}


def with_analysis(image: str, result: str) -> dict[str, Any]:
    doc = rollout(image)
    doc["metadata"]["name"] = "job"
    doc["spec"]["selector"] = {"matchLabels": {"app": "job"}}
    doc["spec"]["template"]["metadata"]["labels"] = {"app": "job"}
    canary = doc["spec"]["strategy"]["canary"]
    canary.pop("trafficRouting")  # a basic canary: the replica counts carry the split
    canary.pop("stableService")
    canary.pop("canaryService")
    canary.pop("scaleDownDelaySeconds")  # only allowed with trafficRouting
    canary["steps"] = [
        {"setWeight": 34},
        {
            "analysis": {
                "templates": [{"templateName": "smoke"}],
                "args": [{"name": "result", "value": result}],
            }
        },
    ]
    return doc


async def test_job_analysis_runs_kubernetes_jobs_and_a_failing_one_aborts(
    cluster: tuple[KubeEmulator, Harness],
) -> None:
    kube, h = cluster
    kube.seed(SMOKE_TEMPLATE)

    def st() -> dict[str, Any]:
        obj = kube.get(ARGO, "rollouts", NS, "job") or {}
        return dict(obj.get("status") or {})

    kube.seed(with_analysis("web:1", "ok"))
    first = (await until("revision 1 Healthy", lambda: st().get("phase") == "Healthy" and st(), h))[
        "stableRS"
    ]

    kube.edit(ARGO, "rollouts", NS, "job", set_image("web:2"))
    await until(
        "revision 2 Healthy after its analysis",
        lambda: st().get("phase") == "Healthy" and st()["stableRS"] not in (None, first),
        h,
        timeout=60,
    )
    jobs = kube.list("batch/v1", "jobs", NS)
    assert len(jobs) == 1 and jobs[0]["status"]["succeeded"] == 1, h.logs()
    assert jobs[0]["metadata"]["annotations"]["analysisrun.argoproj.io/metric-name"] == "smoke"

    kube.edit(
        ARGO,
        "rollouts",
        NS,
        "job",
        lambda o: (set_image("web:3")(o), o["spec"].update(with_analysis("web:3", "fail")["spec"])),
    )
    s = await until(
        "revision 3 aborted by its failed Job",
        lambda: st().get("phase") == "Degraded" and st(),
        h,
        timeout=60,
    )
    assert s["abort"] is True
    failed = [j for j in kube.list("batch/v1", "jobs", NS) if j["status"].get("failed")]
    assert len(failed) == 1
