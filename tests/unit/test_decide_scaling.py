"""Canary sizing in the pure core: setCanaryScale (replicas, weight, matchTrafficWeight),
minPodsPerReplicaSet, dynamicStableScale (stable shrinks after traffic moves, grows back before it
returns on abort) and rollbackWindow (a recent revision skips the steps)."""

from __future__ import annotations

from typing import Any

import pytest

from services.planner.state import Abort, Promote, PublishScale, Tick
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


def basic(steps: list[dict[str, Any]], **canary: Any) -> World:
    """A rollout without trafficRouting (the seed's routing, services and delays removed)."""
    from services.planner.plan import compile_plan
    from services.planner.state import Apply
    from shared.specs import parse_rollout
    from tests.unit.test_decide import rollout_doc

    def doc(image: str) -> Apply:
        d = rollout_doc(image, steps=steps, **canary)
        c = d["spec"]["strategy"]["canary"]
        for k in ("trafficRouting", "canaryService", "stableService"):
            c.pop(k, None)
        return Apply(plan=compile_plan(parse_rollout(d)), spec=d)

    w = World()
    w.send(doc("my-app:1.0.0"))
    w.send(doc("my-app:2.0.0"))
    return w


def test_basic_canary_replica_counts_carry_the_split() -> None:
    w = basic([{"setWeight": 25}, {"pause": {}}])
    old, new = w.s.stable_hash, w.s.current_hash
    # As Argo: both counts rounded up (ceil 2.5 = 3 canary, ceil 7.5 = 8 stable), one pod of surge.
    assert w.s.phase == "Paused" and sizes(w) == {old: 8, new: 3}
    weights = [
        c.desired.canary_weight
        for c in w.log
        if hasattr(c, "desired") and hasattr(c.desired, "canary_weight")
    ]
    assert weights[-1] == 27  # 3 of 11 pods
    w.send(Abort())
    assert sizes(w)[old] == 10


def test_basic_canary_without_surge_shrinks_the_stable_first() -> None:
    w2 = basic([{"setWeight": 50}, {"pause": {}}], maxSurge=0, maxUnavailable=2)
    assert w2.s.phase == "Paused"
    scales = [c for c in w2.log if isinstance(c, PublishScale)]
    firsts = [{s.revision: s.replicas for s in c.desired.sets} for c in scales]
    old, new = w2.s.stable_hash, w2.s.current_hash
    shrink = next(i for i, f in enumerate(firsts) if f.get(old) == 5)
    grow = next(i for i, f in enumerate(firsts) if f.get(new) == 5)
    assert shrink < grow


@pytest.mark.parametrize(("limit", "kept_old"), [(None, 2), (1, 1), (0, 0)])
def test_scale_down_delay_revision_limit_bounds_old_revisions_left_running(
    limit: int | None, kept_old: int
) -> None:
    """Three revisions promoted within scaleDownDelaySeconds: without a limit both old ones keep
    running until their delay ends; with scaleDownDelayRevisionLimit N only the newest N do."""
    opts: dict[str, Any] = {"steps": [{"setWeight": 50}], "scaleDownDelaySeconds": 300}
    if limit is not None:
        opts["scaleDownDelayRevisionLimit"] = limit
    w = World()
    w.send(apply("my-app:1", **opts))
    v1 = w.s.stable_hash
    w.send(apply("my-app:2", **opts), at=w.now + 1)
    v2 = w.s.stable_hash
    assert v2 != v1 and w.s.phase == "Healthy"
    w.send(apply("my-app:3", **opts), at=w.now + 1)
    v3 = w.s.stable_hash
    assert v3 not in (v1, v2) and w.s.phase == "Healthy"
    old_running = [h for h in (v1, v2) if sizes(w).get(h, 0) > 0]
    assert len(old_running) == kept_old
    if kept_old == 1:
        assert old_running == [v2]  # the newest old revision is the one that waits
    w.send(Tick(), at=w.now + 301)
    assert set(sizes(w)) == {v3}  # every delay over: only the stable revision runs


def test_basic_canary_moves_within_max_surge_and_max_unavailable() -> None:
    """maxSurge 1, maxUnavailable 1 on 10 replicas, setWeight 50: never more than 11 pods, never
    fewer than 9 available, and the step completes at 5 + 5."""
    w = basic([{"setWeight": 50}, {"pause": {}}], maxSurge=1, maxUnavailable=1)
    old, new = w.s.stable_hash, w.s.current_hash
    assert w.s.phase == "Paused" and sizes(w) == {old: 5, new: 5}
    history = [{s.revision: s.replicas for s in c.desired.sets} for c in w.log if isinstance(c, PublishScale)]
    during = [h for h in history if new in h]
    assert len(during) > 2  # several moves, not one jump
    assert all(h.get(old, 0) + h.get(new, 0) <= 11 for h in during)
    assert all(h.get(old, 0) + h.get(new, 0) >= 9 for h in during)  # every pod is ready when asked


def test_basic_canary_scales_the_old_stable_down_at_once_when_promoted() -> None:
    """scaleDownDelaySeconds only applies with trafficRouting (Argo refuses it without): a basic
    canary's old stable goes to zero as soon as the new revision is promoted."""
    w = basic([{"setWeight": 50}])
    new = w.s.current_hash
    assert w.s.phase == "Healthy" and w.s.stable_hash == new
    assert sizes(w) == {new: 10}
