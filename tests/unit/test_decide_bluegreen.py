"""Blue-green in the pure core: the preview is scaled and routed first, the rollout pauses
(BlueGreenPause) without autoPromotion, promote switches the active service and only then makes the
new revision stable; autoPromotionSeconds; pre-promotion analysis failing aborts (active unchanged);
post-promotion analysis failing switches the active service back."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.planner.decide import decide
from services.planner.plan import compile_plan
from services.planner.state import (
    AnalysisMeasured,
    AnalysisStarted,
    Apply,
    Input,
    Promote,
    PublishScale,
    PublishTraffic,
    RolloutState,
    ScaleReported,
    StartAnalysis,
    Tick,
    TrafficApplied,
)
from shared.specs import parse_rollout, to_builtins

pytestmark = pytest.mark.timeout(30)

T0 = 1_700_000_000.0
BASE: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "bg"},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "bg"}},
        "template": {
            "metadata": {"labels": {"app": "bg"}},
            "spec": {"containers": [{"name": "c", "image": "bg:1", "ports": [{"containerPort": 8080}]}]},
        },
        "strategy": {"blueGreen": {"activeService": "bg-active", "previewService": "bg-preview"}},
    },
}


def doc(image: str, **bg: Any) -> Apply:
    d = copy.deepcopy(BASE)
    d["spec"]["template"]["spec"]["containers"][0]["image"] = image
    d["spec"]["strategy"]["blueGreen"].update(bg)
    r = parse_rollout(d)
    return Apply(plan=compile_plan(r), spec=to_builtins(r))


class World:
    def __init__(self) -> None:
        self.s: RolloutState | None = None
        self.now = T0
        self.traffic: list[Any] = []
        self.runs: list[StartAnalysis] = []

    def send(self, ev: Input) -> None:
        queue = [ev]
        while queue:
            s, cmds = decide(self.s, queue.pop(0), self.now, namespace="ns", name="bg")
            self.s = s
            for c in cmds:
                if isinstance(c, PublishScale):
                    ready = {x.revision: x.replicas for x in c.desired.sets}
                    queue.append(ScaleReported(generation=c.desired.generation, ready=ready))
                elif isinstance(c, PublishTraffic):
                    self.traffic.append(c.desired)
                    queue.append(TrafficApplied(generation=c.desired.generation, canary_weight=0))
                elif isinstance(c, StartAnalysis):
                    self.runs.append(c)

    @property
    def st(self) -> RolloutState:
        assert self.s is not None
        return self.s

    def verdict(self, phase: str) -> None:
        run = self.runs[-1].run_id
        self.send(AnalysisStarted(run_id=run, metrics=("m",)))
        self.send(AnalysisMeasured(run_id=run, metric="m", index=0, phase=phase, metric_phase=phase))


def started(**bg: Any) -> tuple[World, str, str]:
    w = World()
    w.send(doc("bg:1", **bg))
    old = w.st.stable_hash
    w.send(doc("bg:2", **bg))
    return w, old, w.st.current_hash


def test_manual_promotion_previews_then_switches_active() -> None:
    w, old, new = started(autoPromotionEnabled=False, previewReplicaCount=1)
    assert w.st.phase == "Paused" and w.st.pause_conditions[0].reason == "BlueGreenPause"
    last = w.traffic[-1]
    assert last.stable_revision == old and last.preview_revision == new and last.preview_port == 8081
    assert w.st.replicas == {old: 3, new: 1}
    w.send(Promote())
    last = w.traffic[-1]
    assert last.stable_revision == new and last.preview_revision is None
    assert w.st.phase == "Healthy" and w.st.stable_hash == new and w.st.actual_weight == 100
    assert w.st.replicas[new] == 3


def test_auto_promotion_seconds() -> None:
    w, old, new = started(autoPromotionSeconds=30)
    assert w.st.phase == "Paused"
    w.now = T0 + 29
    w.send(Tick())
    assert w.st.phase == "Paused"
    w.now = T0 + 30
    w.send(Tick())
    assert w.st.phase == "Healthy" and w.st.stable_hash == new


def test_auto_promotion_by_default() -> None:
    w, old, new = started()
    assert w.st.phase == "Healthy" and w.st.stable_hash == new


def test_failing_pre_promotion_analysis_aborts_with_active_unchanged() -> None:
    w, old, new = started(
        autoPromotionEnabled=False, prePromotionAnalysis={"templates": [{"templateName": "t"}]}
    )
    assert w.runs and w.st.phase == "Progressing"
    w.verdict("Failed")
    assert w.st.abort and w.st.phase == "Degraded" and w.st.stable_hash == old
    assert w.traffic[-1].stable_revision == old and w.traffic[-1].preview_revision is None


def test_failing_post_promotion_analysis_switches_back() -> None:
    w, old, new = started(postPromotionAnalysis={"templates": [{"templateName": "t"}]})
    assert w.traffic[-1].stable_revision == new  # switched, under post-promotion analysis
    assert w.st.stable_hash == old
    w.verdict("Failed")
    assert w.st.abort and w.traffic[-1].stable_revision == old and w.st.stable_hash == old


def test_successful_pre_promotion_analysis_then_pause() -> None:
    w, old, new = started(
        autoPromotionEnabled=False, prePromotionAnalysis={"templates": [{"templateName": "t"}]}
    )
    w.verdict("Successful")
    assert w.st.phase == "Paused" and w.st.pause_conditions[0].reason == "BlueGreenPause"


def test_abort_after_the_switch_moves_the_active_service_back() -> None:
    from services.planner.state import Abort

    w, old, new = started(postPromotionAnalysis={"templates": [{"templateName": "t"}]})
    assert w.traffic[-1].stable_revision == new  # switched, post-promotion analysis running
    w.send(Abort())
    assert w.st.abort and w.traffic[-1].stable_revision == old and w.st.stable_hash == old
