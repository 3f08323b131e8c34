"""Rollout-side analysis arguments resolved by the planner when a run starts: podTemplateHashValue
(Stable / Latest) and fieldRef into the Rollout, as Argo does."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.planner.decide import decide
from services.planner.plan import compile_plan
from services.planner.state import Apply, StartAnalysis
from shared.specs import SpecError, parse_rollout, to_builtins

pytestmark = pytest.mark.timeout(30)

DOC: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "r", "labels": {"team": "payments"}},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "r"}},
        "template": {
            "metadata": {"labels": {"app": "r"}},
            "spec": {"containers": [{"name": "c", "image": "r:1"}]},
        },
        "strategy": {
            "canary": {
                "steps": [
                    {
                        "analysis": {
                            "templates": [{"templateName": "t"}],
                            "args": [
                                {"name": "stable", "valueFrom": {"podTemplateHashValue": "Stable"}},
                                {"name": "latest", "valueFrom": {"podTemplateHashValue": "Latest"}},
                                {
                                    "name": "team",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}},
                                },
                                {"name": "name", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "plain", "value": "x"},
                            ],
                        }
                    }
                ]
            }
        },
    },
}


def apply(doc: dict[str, Any]) -> Apply:
    r = parse_rollout(doc)
    return Apply(plan=compile_plan(r), spec=to_builtins(r))


def test_pod_template_hash_and_field_ref_arguments() -> None:
    v1 = apply(DOC)
    doc2 = copy.deepcopy(DOC)
    doc2["spec"]["template"]["spec"]["containers"][0]["image"] = "r:2"
    v2 = apply(doc2)
    s, _ = decide(None, v1, 1.0, namespace="ns", name="r")
    s, cmds = decide(s, v2, 2.0, namespace="ns", name="r")
    start = next(c for c in cmds if isinstance(c, StartAnalysis))
    args = {a.name: a.value for a in start.args}
    assert args == {
        "stable": v1.plan.template_hash,
        "latest": v2.plan.template_hash,
        "team": "payments",
        "name": "r",
        "plain": "x",
    }


def test_bad_pod_template_hash_value_is_rejected() -> None:
    doc = copy.deepcopy(DOC)
    doc["spec"]["strategy"]["canary"]["steps"][0]["analysis"]["args"][0]["valueFrom"][
        "podTemplateHashValue"
    ] = "Old"
    with pytest.raises(SpecError, match="podTemplateHashValue"):
        compile_plan(parse_rollout(doc))
