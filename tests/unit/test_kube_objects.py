"""Unit tests of the scaler's pure Kubernetes core (services.scaler.kube_objects): reading ReplicaSets,
Rollouts and pods off the wire, building a revision's ReplicaSet as Argo does, planning scale-ups,
scale-downs and history pruning, gating Service selector switches, and planning pod restarts."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scaler.kube_objects import (
    DESIRED_REPLICAS_ANNOTATION,
    MANAGED_BY_ANNOTATION,
    POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION,
    KubeObjectError,
    PodObject,
    PodView,
    ReplicaSetObject,
    ReplicaSetView,
    RolloutObject,
    ServiceObject,
    build_replica_set,
    history_to_prune,
    is_available,
    max_unavailable,
    may_select,
    parse_time,
    plan_replica_sets,
    plan_restart,
    pod_view,
    replica_set_view,
    rollout_info,
    service_patch,
)
from shared.messages import ReplicaSetDesired, ScaleDesired

TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "web:1"}]},
}

ROLLOUT_JSON = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {
        "name": "web",
        "namespace": "shop",
        "uid": "u-1",
        "annotations": {
            "team": "payments",
            REVISION_ANNOTATION: "7",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
    },
    "spec": {
        "replicas": 4,
        "minReadySeconds": 5,
        "revisionHistoryLimit": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"canary": {"canaryService": "web-canary", "stableService": "web-stable", "maxSurge": 0}},
    },
    "status": {"phase": "Healthy"},
}


def rollout(**spec: Any) -> Any:
    doc = msgspec.json.decode(msgspec.json.encode(ROLLOUT_JSON))
    doc["spec"].update(spec)
    return rollout_info(msgspec.convert(doc, RolloutObject))


def view(revision: str, spec: int, available: int | None = None, **kw: Any) -> ReplicaSetView:
    base: dict[str, Any] = {
        "name": f"web-{revision}",
        "namespace": "shop",
        "uid": f"uid-{revision}",
        "rollout": "web",
        "revision": revision,
        "spec_replicas": spec,
        "replicas": spec,
        "ready": spec if available is None else available,
        "available": spec if available is None else available,
        "generation": 1,
        "observed_generation": 1,
        "created_at": 100.0,
        "revision_number": 1,
        "desired_replicas": 4,
    }
    base.update(kw)
    return ReplicaSetView(**base)


def desired(*sets: tuple[str, int], restart_at: float | None = None) -> ScaleDesired:
    return ScaleDesired(
        namespace="shop",
        name="web",
        generation=3,
        sets=tuple(
            ReplicaSetDesired(revision=r, replicas=n, template=TEMPLATE, restart_at=restart_at)
            for r, n in sets
        ),
    )


# --- reading objects -----------------------------------------------------------------------------


def test_replica_set_view_reads_counts_revision_and_annotations() -> None:
    raw = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "web-abc123",
            "namespace": "shop",
            "uid": "x",
            "generation": 3,
            "creationTimestamp": "2024-05-01T12:00:00Z",
            "labels": {"app": "web", POD_TEMPLATE_HASH_LABEL: "abc123"},
            "annotations": {REVISION_ANNOTATION: "4", DESIRED_REPLICAS_ANNOTATION: "5"},
            "unknownField": True,
        },
        "spec": {"replicas": 3},
        "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 1, "observedGeneration": 2},
    }
    v = replica_set_view(msgspec.convert(raw, ReplicaSetObject))
    assert v is not None
    assert (v.rollout, v.revision, v.spec_replicas, v.ready, v.available) == ("web", "abc123", 3, 2, 1)
    assert (v.revision_number, v.desired_replicas, v.generation, v.observed_generation) == (4, 5, 3, 2)
    assert v.created_at == parse_time("2024-05-01T12:00:00+00:00")


def test_replica_set_view_prefers_the_controlling_rollout_and_ignores_foreign_sets() -> None:
    owned = {
        "metadata": {
            "name": "renamed",
            "labels": {POD_TEMPLATE_HASH_LABEL: "h1"},
            "ownerReferences": [{"kind": "Rollout", "name": "api", "uid": "u", "controller": True}],
        }
    }
    v = replica_set_view(msgspec.convert(owned, ReplicaSetObject))
    assert v is not None and v.rollout == "api"
    no_hash = {"metadata": {"name": "web-h1", "labels": {"app": "web"}}}
    assert replica_set_view(msgspec.convert(no_hash, ReplicaSetObject)) is None
    other_name = {"metadata": {"name": "something", "labels": {POD_TEMPLATE_HASH_LABEL: "h1"}}}
    assert replica_set_view(msgspec.convert(other_name, ReplicaSetObject)) is None


def test_rollout_info_takes_services_sizes_and_owner_fields() -> None:
    info = rollout()
    assert info.name == "web" and info.uid == "u-1" and info.api_version == "argoproj.io/v1alpha1"
    assert info.replicas == 4 and info.min_ready_seconds == 5 and info.revision_history_limit == 2
    assert info.services == {"web-canary": "canary", "web-stable": "stable"}
    bg = rollout(strategy={"blueGreen": {"activeService": "a", "previewService": "p"}})
    assert bg.strategy == "blueGreen" and bg.services == {"a": "active", "p": "preview"}


def test_pod_view_reads_readiness_and_deletion() -> None:
    raw = {
        "metadata": {
            "name": "p",
            "creationTimestamp": "2024-05-01T12:00:00Z",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-h", "uid": "rs-uid"}],
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-01T12:00:10Z"}]
        },
    }
    p = pod_view(msgspec.convert(raw, PodObject))
    assert p.owner_uids == ("rs-uid",) and not p.deleting
    assert p.ready_since == p.created_at + 10


def test_bad_timestamp_names_the_value() -> None:
    with pytest.raises(KubeObjectError, match="'yesterday'"):
        parse_time("yesterday")


# --- building a revision's ReplicaSet ------------------------------------------------------------


def test_replica_set_without_a_rollout_object_selects_on_template_labels() -> None:
    body = build_replica_set(
        namespace="shop",
        rollout_name="web",
        want=ReplicaSetDesired(revision="abc", replicas=3, template=TEMPLATE),
        revision_number=1,
        desired_replicas=3,
        rollout=None,
    )
    assert body == {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "web-abc",
            "namespace": "shop",
            "labels": {"app": "web", POD_TEMPLATE_HASH_LABEL: "abc"},
            "annotations": {REVISION_ANNOTATION: "1", DESIRED_REPLICAS_ANNOTATION: "3"},
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web", POD_TEMPLATE_HASH_LABEL: "abc"}},
            "template": {
                "metadata": {"labels": {"app": "web", POD_TEMPLATE_HASH_LABEL: "abc"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]},
            },
        },
    }
    assert TEMPLATE["metadata"]["labels"] == {"app": "web"}, "the desired template must not be mutated"


def test_replica_set_of_a_rollout_object_is_owned_and_copies_its_annotations() -> None:
    body = build_replica_set(
        namespace="shop",
        rollout_name="web",
        want=ReplicaSetDesired(revision="abc", replicas=1, template=TEMPLATE),
        revision_number=8,
        desired_replicas=4,
        rollout=rollout(
            selector={
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "Exists"}],
            }
        ),
    )
    meta = body["metadata"]
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "name": "web",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["annotations"] == {
        "team": "payments",
        REVISION_ANNOTATION: "8",
        DESIRED_REPLICAS_ANNOTATION: "4",
    }
    assert body["spec"]["selector"] == {
        "matchLabels": {"app": "web", POD_TEMPLATE_HASH_LABEL: "abc"},
        "matchExpressions": [{"key": "tier", "operator": "Exists"}],
    }
    assert body["spec"]["minReadySeconds"] == 5


# --- planning sizes -------------------------------------------------------------------------------


def test_a_new_revision_is_created_at_zero_then_scaled_up() -> None:
    plan = plan_replica_sets(
        desired(("aaa", 4), ("bbb", 1)), {"aaa": view("aaa", 4, revision_number=3)}, None
    )
    assert [c["metadata"]["name"] for c in plan.creates] == ["web-bbb"]
    assert plan.creates[0]["metadata"]["annotations"][REVISION_ANNOTATION] == "4"
    assert plan.creates[0]["spec"]["replicas"] == 0
    assert [(s.name, s.replicas) for s in plan.ups] == [("web-bbb", 1)]
    assert plan.ups[0].patch == {
        "metadata": {"annotations": {DESIRED_REPLICAS_ANNOTATION: "4"}},
        "spec": {"replicas": 1},
    }
    assert plan.downs == () and plan.deletes == ()


def test_sizes_already_right_need_no_request() -> None:
    plan = plan_replica_sets(desired(("aaa", 4)), {"aaa": view("aaa", 4)}, None)
    assert plan == type(plan)()


def test_a_stale_desired_replicas_annotation_is_rewritten() -> None:
    plan = plan_replica_sets(desired(("aaa", 4)), {"aaa": view("aaa", 4, desired_replicas=2)}, None)
    assert [(s.name, s.replicas) for s in plan.ups] == [("web-aaa", 4)]


def test_revisions_left_out_go_to_zero_unless_a_service_still_selects_them() -> None:
    existing = {"aaa": view("aaa", 4), "bbb": view("bbb", 2), "ccc": view("ccc", 0)}
    plan = plan_replica_sets(desired(("aaa", 4)), existing, None)
    assert [(s.name, s.replicas) for s in plan.downs] == [("web-bbb", 0)]
    held = plan_replica_sets(desired(("aaa", 4)), existing, None, selected={"bbb"})
    assert held.downs == () and held.held == ("bbb",)


def test_scale_downs_of_wanted_revisions_come_after_scale_ups() -> None:
    plan = plan_replica_sets(
        desired(("aaa", 2), ("bbb", 3)), {"aaa": view("aaa", 4), "bbb": view("bbb", 1)}, None
    )
    assert [(s.name, s.replicas) for s in plan.ups] == [("web-bbb", 3)]
    assert [(s.name, s.replicas) for s in plan.downs] == [("web-aaa", 2)]


def test_negative_replicas_are_refused_naming_the_revision() -> None:
    with pytest.raises(KubeObjectError, match="revision aaa"):
        plan_replica_sets(desired(("aaa", -1)), {}, None)


def test_history_beyond_the_limit_is_pruned_oldest_first() -> None:
    old = [view(f"h{i:02d}", 0, created_at=float(i)) for i in range(12)]
    assert history_to_prune(old, 10) == ["web-h00", "web-h01"]
    busy = [view("h00", 0, created_at=0.0, replicas=1), *old[1:]]
    assert history_to_prune(busy, 10) == ["web-h01"], "a set whose pods are still going is kept"
    unobserved = [view("h00", 0, created_at=0.0, generation=2), *old[1:]]
    assert history_to_prune(unobserved, 10) == ["web-h01"]


def test_the_rollouts_history_limit_applies() -> None:
    existing = {f"h{i}": view(f"h{i}", 0, created_at=float(i)) for i in range(4)}
    existing["cur"] = view("cur", 4, created_at=10.0)
    plan = plan_replica_sets(desired(("cur", 4)), existing, rollout())
    assert plan.deletes == ("web-h0", "web-h1")


# --- Service selectors ----------------------------------------------------------------------------


def test_a_service_waits_for_a_fully_available_replica_set() -> None:
    assert not is_available(None, 3)
    assert not is_available(view("a", 3, available=2), 3)
    assert is_available(view("a", 3, available=3), 3)
    assert not is_available(view("a", 1, available=1), 3), "our scale-up not yet seen: not available"
    assert not is_available(view("a", 0, available=0), 0)
    assert not may_select("canary", view("a", 3, available=2), 3)
    assert may_select("preview", view("a", 3, available=0), 3), "preview follows the new revision at once"
    assert not may_select("preview", None, 3)


def test_service_patch_switches_the_hash_and_marks_it_managed_once() -> None:
    fresh = msgspec.convert(
        {"metadata": {"name": "svc"}, "spec": {"selector": {"app": "web"}}}, ServiceObject
    )
    assert service_patch(fresh, "abc", "web") == {
        "spec": {"selector": {POD_TEMPLATE_HASH_LABEL: "abc"}},
        "metadata": {"annotations": {MANAGED_BY_ANNOTATION: "web"}},
    }
    managed = msgspec.convert(
        {
            "metadata": {"name": "svc", "annotations": {MANAGED_BY_ANNOTATION: "web"}},
            "spec": {"selector": {"app": "web", POD_TEMPLATE_HASH_LABEL: "old"}},
        },
        ServiceObject,
    )
    assert service_patch(managed, "abc", "web") == {"spec": {"selector": {POD_TEMPLATE_HASH_LABEL: "abc"}}}
    assert service_patch(managed, "old", "web") is None


# --- restarts -------------------------------------------------------------------------------------


def test_max_unavailable_follows_argo_fenceposts() -> None:
    assert max_unavailable(None, 4) == 1  # 25% of 4
    assert max_unavailable(None, 3) == 0  # 25% of 3 rounds down; maxSurge rounds up to 1
    assert max_unavailable(rollout(), 3) == 1  # maxSurge 0 and maxUnavailable 0: 1
    assert max_unavailable(rollout(strategy={"canary": {"maxUnavailable": "50%"}}), 4) == 2
    assert max_unavailable(rollout(strategy={"blueGreen": {"activeService": "a"}}), 4) == 0


def pod(name: str, created: float, *, ready: bool = True, deleting: bool = False) -> PodView:
    return PodView(
        name=name,
        owner_uids=("rs",),
        created_at=created,
        ready_since=created if ready else None,
        deleting=deleting,
    )


def test_restart_replaces_one_pod_at_a_time_by_default() -> None:
    pods = [pod("a", 1), pod("b", 2), pod("c", 3)]
    plan = plan_restart(
        pods, 10, replicas=3, total_replicas=3, max_unavailable=0, min_ready_seconds=0, now=20
    )
    assert plan.delete == ("a",) and plan.remaining == 3
    after = [pod("b", 2), pod("c", 3), pod("a2", 11, ready=False)]
    plan = plan_restart(
        after, 10, replicas=3, total_replicas=3, max_unavailable=0, min_ready_seconds=0, now=20
    )
    assert plan.delete == () and plan.remaining == 2, "the replacement is not ready yet"
    done = [pod("x", 11), pod("y", 12), pod("z", 13)]
    plan = plan_restart(
        done, 10, replicas=3, total_replicas=3, max_unavailable=0, min_ready_seconds=0, now=20
    )
    assert plan == type(plan)()


def test_restart_respects_max_unavailable_and_terminating_pods() -> None:
    pods = [pod(n, i) for i, n in enumerate("abcd")]
    plan = plan_restart(
        pods, 10, replicas=4, total_replicas=4, max_unavailable=2, min_ready_seconds=0, now=20
    )
    assert plan.delete == ("a", "b")
    going = [pod("a", 0, deleting=True), *pods[1:]]
    plan = plan_restart(
        going, 10, replicas=4, total_replicas=4, max_unavailable=2, min_ready_seconds=0, now=20
    )
    assert plan.delete == ("b",)


@given(
    created=st.lists(st.floats(min_value=0, max_value=20), min_size=0, max_size=8),
    ready=st.lists(st.booleans(), min_size=8, max_size=8),
    replicas=st.integers(min_value=0, max_value=8),
    max_unavailable=st.integers(min_value=0, max_value=4),
)
def test_restart_never_takes_availability_below_the_floor(
    created: list[float], ready: list[bool], replicas: int, max_unavailable: int
) -> None:
    pods = [pod(f"p{i}", c, ready=ready[i]) for i, c in enumerate(created)]
    plan = plan_restart(
        pods,
        10,
        replicas=replicas,
        total_replicas=len(pods),
        max_unavailable=max_unavailable,
        min_ready_seconds=0,
        now=30,
    )
    available = sum(1 for p in pods if p.ready_since is not None)
    floor = max(replicas, len(pods)) - max(max_unavailable, 1)
    assert len(plan.delete) <= max(0, available - floor)
    assert all(p.created_at < 10 for p in pods if p.name in plan.delete)
    assert plan.remaining == sum(1 for p in pods if p.created_at < 10)
