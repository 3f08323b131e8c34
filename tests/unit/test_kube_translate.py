"""Unit tests of services.kube_bridge.translate: a Rollout / AnalysisTemplate change -> planner commands.

Every patch Argo's CLI writes (pkg/kubectl-argo-rollouts/cmd/{promote,abort,retry,pause,restart,undo})
is applied to a Rollout the way the API server would (status patches through the status subresource
leave metadata.generation alone, spec patches bump it) and must give the planner's verb for it; a
status-only change (the bridge's own writes included) gives nothing; `apply` carries the object
without server-side metadata or status, under Argo's apiVersion; Nats-Msg-Ids are uid+rv+verb.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest

from services.kube_bridge.translate import (
    ANALYSIS_TEMPLATE,
    CLUSTER_ANALYSIS_TEMPLATE,
    ROLLOUT,
    BridgeCommand,
    TranslateError,
    apply_document,
    command_fields,
    commands,
    planner_spec,
)
from shared.specs import load_documents, parse_rollout, to_builtins

UID = "0b6f7c1e-9d7a-4c36-9d0e-3d2b1c7f0a11"
STEPS = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": 10}}]


def rollout(*, group: str = "argoproj.io", rv: int = 100, generation: int = 1) -> dict[str, Any]:
    """A Rollout as the API server returns it: server metadata, a status written by the bridge."""
    return {
        "apiVersion": f"{group}/v1alpha1",
        "kind": "Rollout",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": UID,
            "resourceVersion": str(rv),
            "generation": generation,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"team": "a"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": '{"huge": "copy"}',
                "note": "kept",
            },
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]},
            },
            "strategy": {"canary": {"steps": copy.deepcopy(STEPS)}},
        },
        "status": {
            "phase": "Paused",
            "message": "CanaryPauseStep",
            "currentStepIndex": 1,
            "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-01-01T00:01:00Z"}],
            "controllerPause": True,
            "observedGeneration": "1",
        },
    }


def template(kind: str = ANALYSIS_TEMPLATE, *, rv: int = 7, generation: int = 1) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "error-rate",
        "uid": "t-uid",
        "resourceVersion": str(rv),
        "generation": generation,
    }
    if kind == ANALYSIS_TEMPLATE:
        meta["namespace"] = "shop"
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": kind,
        "metadata": meta,
        "spec": {
            "metrics": [
                {
                    "name": "error-rate",
                    "successCondition": "result < 1",
                    "provider": {"web": {"url": "http://metrics/x", "jsonPath": "{$.value}"}},
                }
            ]
        },
    }


# --- an API server in miniature: what a PATCH does to the stored object ------------------------------


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


def server_patch(
    obj: dict[str, Any], patch: Any, *, status: bool = False, json_patch: bool = False
) -> dict[str, Any]:
    """The object after a PATCH: through /status only .status changes; on the main endpoint .status is
    ignored and a changed spec bumps metadata.generation; every write bumps resourceVersion."""
    if json_patch:
        new = copy.deepcopy(obj)
        for op in patch:
            assert op["op"] == "replace"
            *parents, last = op["path"].strip("/").split("/")
            node = new
            for p in parents:
                node = node[p]
            node[last] = copy.deepcopy(op["value"])
    else:
        new = merge(obj, patch)
    if status:
        new = {**copy.deepcopy(obj), "status": new.get("status")}
    else:
        new["status"] = copy.deepcopy(obj.get("status"))
        if new["spec"] != obj["spec"]:
            new["metadata"]["generation"] = obj["metadata"]["generation"] + 1
    new["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
    return new


def verbs(cmds: list[BridgeCommand]) -> list[tuple[str, bytes]]:
    return [(c.verb, c.payload if c.verb != "apply" else b"<doc>") for c in cmds]


# --- apply --------------------------------------------------------------------------------------------


def test_a_rollout_seen_for_the_first_time_is_applied_without_server_fields_or_status() -> None:
    obj = rollout(group="rollouts.example.com")
    [cmd] = commands(ROLLOUT, None, obj)
    assert (cmd.namespace, cmd.name, cmd.verb) == ("shop", "web", "apply")
    assert cmd.msg_id == f"kube.{UID}.100.apply"
    doc = json.loads(cmd.payload)
    assert doc["apiVersion"] == "argoproj.io/v1alpha1"  # whatever group it is served under
    assert doc["kind"] == "Rollout"
    assert doc["metadata"] == {
        "name": "web",
        "namespace": "shop",
        "labels": {"team": "a"},
        "annotations": {"note": "kept"},
    }
    assert doc["spec"] == obj["spec"]
    assert "status" not in doc
    # The planner's own loader takes it as it is.
    [loaded] = load_documents(cmd.payload)
    assert to_builtins(parse_rollout(doc))["spec"]["strategy"]["canary"]["steps"][0] == {"setWeight": 20}
    assert loaded.metadata is not None and loaded.metadata.name == "web"


def test_templates_are_applied_and_cluster_templates_under_the_cluster_namespace() -> None:
    [cmd] = commands(ANALYSIS_TEMPLATE, None, template())
    assert (cmd.namespace, cmd.name, cmd.verb) == ("shop", "error-rate", "apply")
    [cluster] = commands(CLUSTER_ANALYSIS_TEMPLATE, None, template(CLUSTER_ANALYSIS_TEMPLATE))
    assert (cluster.namespace, cluster.name, cluster.verb) == ("_cluster", "error-rate", "apply")
    doc = json.loads(cluster.payload)
    assert doc["kind"] == "ClusterAnalysisTemplate" and "namespace" not in doc["metadata"]
    assert len(load_documents(cluster.payload)) == 1


def test_a_template_spec_change_is_applied_again_and_a_label_change_is_not() -> None:
    old = template()
    changed = copy.deepcopy(old)
    changed["spec"]["metrics"][0]["successCondition"] = "result < 2"
    changed["metadata"].update(generation=2, resourceVersion="8")
    assert verbs(commands(ANALYSIS_TEMPLATE, old, changed)) == [("apply", b"<doc>")]
    relabelled = copy.deepcopy(old)
    relabelled["metadata"].update(labels={"x": "y"}, resourceVersion="9")
    assert commands(ANALYSIS_TEMPLATE, old, relabelled) == []


def test_planner_spec_is_what_the_planner_stores_and_none_for_a_spec_it_rejects() -> None:
    obj = rollout()
    assert planner_spec(ROLLOUT, obj) == to_builtins(parse_rollout(apply_document(ROLLOUT, obj)))["spec"]
    broken = copy.deepcopy(obj)
    broken["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": "lots"}]
    assert planner_spec(ROLLOUT, broken) is None


# --- Argo's CLI writes --------------------------------------------------------------------------------


def test_abort_writes_status_abort_true_and_maps_to_abort() -> None:
    old = rollout()
    new = server_patch(old, {"status": {"abort": True}}, status=True)
    assert new["metadata"]["generation"] == old["metadata"]["generation"]
    cmds = commands(ROLLOUT, old, new)
    assert verbs(cmds) == [("abort", b"")]
    assert cmds[0].msg_id == f"kube.{UID}.101.abort"


def test_retry_writes_status_abort_false_and_maps_to_retry() -> None:
    aborted = server_patch(rollout(), {"status": {"abort": True, "pauseConditions": None}}, status=True)
    new = server_patch(aborted, {"status": {"abort": False}}, status=True)
    assert verbs(commands(ROLLOUT, aborted, new)) == [("retry", b"")]


def test_promote_of_a_step_pause_clears_pause_conditions_and_maps_to_promote() -> None:
    old = rollout()
    new = server_patch(old, {"status": {"pauseConditions": None}}, status=True)
    assert verbs(commands(ROLLOUT, old, new)) == [("promote", b"")]


def test_promote_of_a_manually_paused_rollout_unpauses_the_spec_which_is_applied() -> None:
    paused = server_patch(rollout(), {"spec": {"paused": True}})
    cmds = commands(ROLLOUT, rollout(), paused)
    assert verbs(cmds) == [("apply", b"<doc>")]
    assert json.loads(cmds[0].payload)["spec"]["paused"] is True  # `pause`
    # `promote`: status first (pause conditions), then the spec.
    cleared = server_patch(paused, {"status": {"pauseConditions": None}}, status=True)
    assert verbs(commands(ROLLOUT, paused, cleared)) == [("promote", b"")]
    unpaused = server_patch(cleared, {"spec": {"paused": False}})
    [apply] = commands(ROLLOUT, cleared, unpaused)
    assert apply.verb == "apply" and json.loads(apply.payload)["spec"]["paused"] is False


def test_promote_while_not_paused_bumps_the_step_index_and_maps_to_promote() -> None:
    running = server_patch(
        rollout(), {"status": {"pauseConditions": None, "currentStepIndex": 2}}, status=True
    )
    bumped = server_patch(running, {"status": {"pauseConditions": None, "currentStepIndex": 3}}, status=True)
    assert verbs(commands(ROLLOUT, running, bumped)) == [("promote", b"")]


def test_skipping_to_the_end_of_the_steps_is_a_full_promotion() -> None:
    running = server_patch(
        rollout(), {"status": {"pauseConditions": None, "currentStepIndex": 0}}, status=True
    )
    skipped = server_patch(running, {"status": {"currentStepIndex": len(STEPS)}}, status=True)
    assert verbs(commands(ROLLOUT, running, skipped)) == [("promote", b'{"full":true}')]


def test_promote_full_writes_promote_full_true_and_maps_to_promote_full() -> None:
    old = rollout()
    new = server_patch(old, {"status": {"promoteFull": True}}, status=True)
    cmds = commands(ROLLOUT, old, new)
    assert verbs(cmds) == [("promote", b'{"full":true}')]
    assert msgspec.json.decode(cmds[0].payload) == {"full": True}


def test_restart_sets_spec_restart_at_which_is_applied_then_restarted() -> None:
    old = rollout()
    new = server_patch(old, {"spec": {"restartAt": "2026-01-01T00:05:00Z"}})
    assert verbs(commands(ROLLOUT, old, new)) == [("apply", b"<doc>"), ("restart", b"")]
    # The same restartAt again (e.g. another spec edit) restarts nothing.
    edited = server_patch(new, {"spec": {"replicas": 4}})
    assert verbs(commands(ROLLOUT, new, edited)) == [("apply", b"<doc>")]


def test_undo_puts_an_older_template_back_which_is_applied() -> None:
    old = server_patch(
        rollout(), {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}}
    )
    older_template = rollout()["spec"]["template"]
    new = server_patch(
        old, [{"op": "replace", "path": "/spec/template", "value": older_template}], json_patch=True
    )
    [cmd] = commands(ROLLOUT, old, new)
    assert cmd.verb == "apply"
    assert json.loads(cmd.payload)["spec"]["template"]["spec"]["containers"][0]["image"] == "web:1"


# --- what asks for nothing ------------------------------------------------------------------------------


def test_status_only_changes_give_no_command() -> None:
    old = rollout()
    new = server_patch(
        old,
        {
            "status": {
                "phase": "Progressing",
                "message": "more replicas need to be updated",
                "observedGeneration": "2",
                "conditions": [{"type": "Progressing", "status": "True"}],
                "canary": {"weights": {"canary": {"weight": 20}, "stable": {"weight": 80}}},
                "currentStepIndex": 1,
            }
        },
        status=True,
    )
    assert commands(ROLLOUT, old, new) == []


def test_the_bridges_own_status_writes_give_no_command() -> None:
    old = rollout()
    # The planner left the pause and aborted: the bridge wrote it; its echo must not read as promote/abort.
    new = server_patch(
        old, {"status": {"pauseConditions": None, "abort": True, "currentStepIndex": 0}}, status=True
    )
    assert commands(ROLLOUT, old, new, own_write=True) == []
    assert verbs(commands(ROLLOUT, old, new)) == [("abort", b""), ("promote", b"")]


def test_the_same_event_twice_gives_the_same_message_ids() -> None:
    old = rollout()
    new = server_patch(old, {"status": {"abort": True}}, status=True)
    assert commands(ROLLOUT, old, new) == commands(ROLLOUT, old, new)
    retried = server_patch(new, {"status": {"abort": False}}, status=True)
    again = server_patch(retried, {"status": {"abort": True}}, status=True)
    [first], [second] = commands(ROLLOUT, old, new), commands(ROLLOUT, retried, again)
    assert (first.verb, second.verb) == ("abort", "abort") and first.msg_id != second.msg_id


def test_unreadable_fields_raise_an_error_naming_the_field_and_the_object() -> None:
    old = rollout()
    new = copy.deepcopy(old)
    new["status"]["abort"] = "yes"
    with pytest.raises(TranslateError, match=r"Rollout shop/web: .*status.abort"):
        commands(ROLLOUT, old, new)
    with pytest.raises(TranslateError, match=r"metadata\.name"):
        commands(ROLLOUT, None, {"metadata": {}})
    with pytest.raises(TranslateError, match="kind 'Deployment'"):
        commands("Deployment", None, old)


def test_command_fields_normalise_absent_and_false() -> None:
    assert command_fields(None) == command_fields({"abort": False, "pauseConditions": []})
    assert command_fields(rollout()["status"]) == (False, False, ("CanaryPauseStep",), 1)
    assert command_fields({"abort": True}) != command_fields({})
