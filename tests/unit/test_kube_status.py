"""Unit tests of services.planner.status (and kube_bridge.status.merge_patch): the planner's state as Argo's RolloutStatus JSON.

States come from the planner's own decide() (with every scale and traffic change confirmed at once):
a Healthy rollout, one paused at a pause step (pauseConditions, canary.weights), an aborted one, a
blue-green one; plus a rejected spec (InvalidSpec), condition times kept while unchanged, the
label-selector format and the merge patch between two statuses.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from services.kube_bridge.status import merge_patch
from services.planner.decide import decide, iso
from services.planner.plan import compile_plan, step_hash
from services.planner.state import (
    Abort,
    Apply,
    Input,
    Promote,
    PublishScale,
    PublishTraffic,
    Resume,
    RolloutState,
    ScaleReported,
    TrafficApplied,
)
from services.planner.status import argo_status, format_selector
from shared.specs import parse_rollout

T0 = 1_760_000_000.0
STEPS = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]

# Every field of Argo's RolloutStatus (pkg/apis/rollouts/v1alpha1/types.go), by its JSON name.
ARGO_FIELDS = {
    "abort",
    "pauseConditions",
    "controllerPause",
    "abortedAt",
    "currentPodHash",
    "currentStepHash",
    "replicas",
    "updatedReplicas",
    "readyReplicas",
    "availableReplicas",
    "currentStepIndex",
    "collisionCount",
    "observedGeneration",
    "conditions",
    "canary",
    "blueGreen",
    "HPAReplicas",
    "selector",
    "stableRS",
    "restartedAt",
    "promoteFull",
    "phase",
    "message",
    "workloadObservedGeneration",
    "alb",
    "albs",
}


def canary_doc(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web", "tier": "front"}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "front"}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
            "strategy": {
                "canary": {
                    "canaryService": "web-canary",
                    "stableService": "web-stable",
                    "trafficRouting": {"istio": {"virtualService": {"name": "web", "routes": ["primary"]}}},
                    "steps": copy.deepcopy(STEPS),
                }
            },
        },
    }


def blue_green_doc(image: str) -> dict[str, Any]:
    doc = canary_doc(image)
    doc["spec"]["strategy"] = {
        "blueGreen": {
            "activeService": "web-active",
            "previewService": "web-preview",
            "autoPromotionEnabled": False,
        }
    }
    return doc


def apply(doc: dict[str, Any]) -> Apply:
    return Apply(plan=compile_plan(parse_rollout(doc)), spec=doc)


def run(state: RolloutState | None, event: Input, now: float) -> RolloutState:
    """decide() on `event`, then on the confirmations of every scale and traffic change, until quiet."""
    queue: list[Input] = [event]
    while queue:
        state, cmds = decide(state, queue.pop(0), now, namespace="shop", name="web")
        for c in cmds:
            if isinstance(c, PublishScale):
                ready = {rs.revision: rs.replicas for rs in c.desired.sets}
                queue.append(ScaleReported(generation=c.desired.generation, ready=ready))
            if isinstance(c, PublishTraffic):
                queue.append(
                    TrafficApplied(generation=c.desired.generation, canary_weight=c.desired.canary_weight)
                )
    assert state is not None
    return state


def healthy() -> RolloutState:
    return run(None, apply(canary_doc("web:1")), T0)


def paused_at_step() -> RolloutState:
    return run(healthy(), apply(canary_doc("web:2")), T0 + 10)


def status(state: RolloutState | None, **kw: Any) -> dict[str, Any]:
    kw.setdefault("observed_generation", 1)
    kw.setdefault("now", T0 + 100)
    out = argo_status(state, **kw)
    assert msgspec.json.decode(msgspec.json.encode(out)) == out  # plain JSON
    return out


def conditions(st: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in st["conditions"]}


# --- shapes -----------------------------------------------------------------------------------------


def test_a_healthy_rollout_has_argos_fields_and_values() -> None:
    s = healthy()
    st = status(s, observed_generation=3)
    assert set(st) <= ARGO_FIELDS
    assert st["phase"] == "Healthy" and "message" not in st
    assert st["observedGeneration"] == "3"  # a string, as Argo has it
    assert st["currentPodHash"] == st["stableRS"] == s.current_hash
    assert st["currentStepIndex"] == len(STEPS)
    assert st["currentStepHash"] == step_hash(STEPS)
    assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"], st["availableReplicas"]) == (
        4,
        4,
        4,
        4,
    )
    assert st["HPAReplicas"] == 4
    assert st["selector"] == "app=web,tier=front"
    assert st["canary"]["weights"] == {
        "canary": {"weight": 0, "serviceName": "web-canary", "podTemplateHash": s.current_hash},
        "stable": {"weight": 100, "serviceName": "web-stable", "podTemplateHash": s.stable_hash},
    }
    # omitempty: nothing false or empty is written
    for absent in ("abort", "pauseConditions", "controllerPause", "promoteFull", "abortedAt", "blueGreen"):
        assert absent not in st
    assert conditions(st) == {
        "Progressing": (
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "web-{s.current_hash}" has successfully progressed.',
        ),
        "Available": ("True", "AvailableReason", "Rollout has minimum availability"),
        "Healthy": ("True", "RolloutHealthy", "Rollout is healthy"),
        "Completed": ("True", "RolloutCompleted", "RolloutCompleted"),
    }
    for c in st["conditions"]:
        assert c["lastUpdateTime"] == c["lastTransitionTime"] == iso(T0 + 100)


def test_a_rollout_at_a_pause_step_is_paused_with_pause_conditions_and_weights() -> None:
    s = paused_at_step()
    assert s.step_index == 1
    st = status(s, observed_generation=2)
    assert (st["phase"], st["message"]) == ("Paused", "CanaryPauseStep")
    assert st["pauseConditions"] == [{"reason": "CanaryPauseStep", "startTime": iso(T0 + 10)}]
    assert st["controllerPause"] is True
    assert st["currentStepIndex"] == 1
    assert st["currentPodHash"] == s.current_hash != st["stableRS"]
    assert st["canary"]["weights"]["canary"] == {
        "weight": 20,
        "serviceName": "web-canary",
        "podTemplateHash": s.current_hash,
    }
    assert st["canary"]["weights"]["stable"]["weight"] == 80
    assert st["updatedReplicas"] == 1  # ceil(4 * 20%) canary pods
    cond = conditions(st)
    assert cond["Paused"] == ("True", "RolloutPaused", "Rollout is paused")
    assert cond["Progressing"] == ("Unknown", "RolloutPaused", "Rollout is paused")
    assert cond["Healthy"][0] == "False" and cond["Completed"][0] == "False"


def test_an_aborted_rollout_is_degraded_with_abort_and_aborted_at() -> None:
    s = run(paused_at_step(), Abort(), T0 + 20)
    st = status(s)
    assert st["phase"] == "Degraded"
    assert st["message"] == "RolloutAborted: Rollout aborted update to revision 2"
    assert st["abort"] is True and st["abortedAt"] == iso(T0 + 20)
    assert "pauseConditions" not in st and st["currentStepIndex"] == 0
    assert st["canary"]["weights"]["canary"]["weight"] == 0
    assert conditions(st)["Progressing"] == (
        "False",
        "RolloutAborted",
        "Rollout aborted update to revision 2",
    )


def test_a_blue_green_rollout_has_selectors_and_no_canary_fields() -> None:
    first = run(None, apply(blue_green_doc("web:1")), T0)
    s = run(first, apply(blue_green_doc("web:2")), T0 + 10)
    st = status(s)
    assert (st["phase"], st["message"]) == ("Paused", "BlueGreenPause")
    assert st["blueGreen"] == {"activeSelector": first.current_hash, "previewSelector": s.current_hash}
    assert st["selector"] == f"app=web,tier=front,rollouts-pod-template-hash={first.current_hash}"
    assert "canary" not in st and "currentStepIndex" not in st
    done = run(s, Promote(), T0 + 20)
    st = status(done)
    assert st["phase"] == "Healthy"
    assert st["blueGreen"] == {"activeSelector": done.current_hash, "previewSelector": done.current_hash}


def test_a_rejected_spec_is_degraded_with_an_invalid_spec_condition() -> None:
    st = status(None, observed_generation=5, invalid_spec="spec.replicas: expected int, got str")
    assert st == {
        "phase": "Degraded",
        "message": "InvalidSpec: spec.replicas: expected int, got str",
        "observedGeneration": "5",
        "conditions": [
            {
                "type": "InvalidSpec",
                "status": "True",
                "reason": "InvalidSpec",
                "message": "spec.replicas: expected int, got str",
                "lastUpdateTime": iso(T0 + 100),
                "lastTransitionTime": iso(T0 + 100),
            }
        ],
    }
    # An earlier, valid spec keeps running: its fields stay, the phase says the new one is invalid.
    st = status(healthy(), observed_generation=6, invalid_spec="bad")
    assert (st["phase"], st["message"], st["observedGeneration"]) == ("Degraded", "InvalidSpec: bad", "6")
    assert st["conditions"][0]["type"] == "InvalidSpec" and st["currentPodHash"]


# --- conditions over time ---------------------------------------------------------------------------


def test_conditions_keep_their_times_until_their_status_or_reason_changes() -> None:
    s = paused_at_step()
    first = status(s, now=T0 + 100)
    again = status(s, now=T0 + 200, previous=first)
    assert again == first  # nothing changed: the very same status, so nothing to write
    resumed = run(s, Promote(), T0 + 300)
    later = status(resumed, now=T0 + 300, previous=first)
    times = {c["type"]: (c["lastTransitionTime"], c["lastUpdateTime"]) for c in later["conditions"]}
    assert times["Paused"] == (iso(T0 + 300), iso(T0 + 300))  # True -> False
    assert conditions(later)["Paused"] == ("False", "RolloutResumed", "Rollout is resumed")
    assert times["Available"] == (iso(T0 + 100), iso(T0 + 100))  # unchanged
    assert resumed.phase == "Healthy"  # the remaining steps ran through at once
    assert times["Healthy"] == (iso(T0 + 300), iso(T0 + 300))  # False -> True


def test_no_paused_condition_before_the_first_pause() -> None:
    assert "Paused" not in conditions(status(healthy()))
    manually = run(healthy(), Resume(), T0 + 1)  # resuming what was not paused changes nothing
    assert "Paused" not in conditions(status(manually))


# --- helpers ------------------------------------------------------------------------------------------


def test_format_selector_follows_format_label_selector() -> None:
    sel = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "dev"]},
            {"key": "zone", "operator": "NotIn", "values": ["x"]},
            {"key": "canary", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    assert format_selector(sel) == "a=1,b=2,env in (dev,prod),zone notin (x),canary,!legacy"
    assert format_selector(None) == ""


def test_step_hash_is_stable_and_changes_with_the_steps() -> None:
    assert step_hash(STEPS) == step_hash(copy.deepcopy(STEPS))
    assert step_hash(STEPS) != step_hash([*STEPS, {"pause": {}}])
    assert set(step_hash(STEPS)) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_merge_patch_sets_changes_and_nulls_what_is_gone() -> None:
    old = {
        "phase": "Paused",
        "pauseConditions": [{"reason": "CanaryPauseStep"}],
        "canary": {"weights": {"canary": {"weight": 20}}},
        "abort": True,
    }
    new = {"phase": "Progressing", "canary": {"weights": {"canary": {"weight": 50}}}, "currentStepIndex": 2}
    assert merge_patch(old, new) == {
        "phase": "Progressing",
        "canary": {"weights": {"canary": {"weight": 50}}},
        "currentStepIndex": 2,
        "pauseConditions": None,
        "abort": None,
    }
    assert merge_patch(new, new) == {}
    assert merge_patch(None, new) == new


def test_status_written_then_patched_gives_the_new_status() -> None:
    """merge_patch(old, new) applied to old (RFC 7386) is new, for two real statuses."""
    a, b = status(paused_at_step()), status(run(paused_at_step(), Abort(), T0 + 20), previous=None)

    def apply_patch(target: Any, patch: Any) -> Any:
        if not isinstance(patch, dict):
            return patch
        out = dict(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = apply_patch(out.get(k), v)
        return out

    assert apply_patch(a, merge_patch(a, b)) == b
    assert apply_patch(b, merge_patch(b, a)) == a


def test_the_plan_carries_the_step_hash_of_the_applied_steps() -> None:
    """Computed once at compile time (the status of a rollout with hundreds of steps is built on
    every command reply and status write), equal to hashing the applied document's steps."""
    doc = canary_doc("web:1")
    plan = compile_plan(parse_rollout(doc))
    assert plan.steps_hash == step_hash(doc["spec"]["strategy"]["canary"]["steps"])
    assert compile_plan(parse_rollout(blue_green_doc("web:1"))).steps_hash == ""
