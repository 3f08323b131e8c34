"""Canary sizing in the pure core: setCanaryScale (replicas, weight, matchTrafficWeight),
minPodsPerReplicaSet, dynamicStableScale (stable shrinks after traffic moves, grows back before it
returns on abort) and rollbackWindow (a recent revision skips the steps)."""

from __future__ import annotations

from typing import Any

import pytest

from services.planner.state import Abort, Promote, PublishScale
from tests.unit.test_decide import World, apply

pytestmark = pytest.mark.timeout(30)


def sizes(w: World) -> dict[str, int]:
    last = [c for c in w.log if isinstance(c, PublishScale)][-1]
    return {s.revision: s.replicas for s in last.desired.sets}


def run(steps: list[dict[str, Any]], **canary: Any) -> World:
    w = World()
    w.send(apply("my-app:1.0.0", steps=steps, **canary))
    w.send(apply("my-app:2.0.0", steps=steps, **canary))
    return w


def test_set_canary_scale_replicas_weight_and_match() -> None:
    steps = [
        {"setCanaryScale": {"replicas": 2}},
        {"setWeight": 50},
        {"pause": {}},
        {"setCanaryScale": {"weight": 30}},
        {"pause": {}},
        {"setCanaryScale": {"matchTrafficWeight": True}},
        {"pause": {}},
    ]
    w = run(steps)
    new = w.s.current_hash
    assert w.s.phase == "Paused" and sizes(w)[new] == 2 and w.s.actual_weight == 50  # 2 pods take 50%
    w.send(Promote())
    assert sizes(w)[new] == 3  # 30% of 10
    w.send(Promote())
    assert sizes(w)[new] == 5  # back to matching weight 50


def test_min_pods_per_replica_set() -> None:
    w = run([{"setWeight": 5}, {"pause": {}}], minPodsPerReplicaSet=2)
    assert sizes(w)[w.s.current_hash] == 2  # ceil(10 * 5%) = 1, raised to 2


def test_dynamic_stable_scale_shrinks_after_shift_and_grows_before_abort() -> None:
    w = run([{"setWeight": 40}, {"pause": {}}], dynamicStableScale=True)
    old, new = w.s.stable_hash, w.s.current_hash
    assert w.s.phase == "Paused" and sizes(w) == {old: 6, new: 4}
    w.answer_traffic = False
    w.send(Abort())
    assert sizes(w)[old] == 10 and w.s.set_weight == 0
    w.answer_traffic = True
    w.confirm_traffic()
    assert w.s.actual_weight == 0 and w.s.phase == "Degraded"


def test_rollback_window_skips_steps_for_a_recent_revision() -> None:
    steps = [{"setWeight": 20}, {"pause": {}}]
    w = World()
    w.send(apply("my-app:1.0.0", steps=steps))
    w.send(apply("my-app:2.0.0", steps=steps))
    w.send(Promote())
    assert w.s.phase == "Healthy" and w.s.revision == 2
    doc_v1 = apply("my-app:1.0.0", steps=steps)
    windowed = doc_v1.__class__(
        plan=doc_v1.plan.__class__(
            **{**{f: getattr(doc_v1.plan, f) for f in doc_v1.plan.__struct_fields__}, "rollback_window": 2}
        ),
        spec=doc_v1.spec,
    )
    w.send(windowed)
    assert w.s.phase == "Healthy" and w.s.revision == 3 and w.s.step_index == len(steps)
