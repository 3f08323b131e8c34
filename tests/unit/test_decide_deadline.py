"""progressDeadlineSeconds: a rollout waiting on replicas or traffic without progress for that long is
Degraded (ProgressDeadlineExceeded), and aborted with progressDeadlineAbort; progress clears it;
pauses and analyses do not count against it."""

from __future__ import annotations

import pytest

from services.planner.decide import next_wakeup
from tests.unit.test_decide import T0, World, apply

pytestmark = pytest.mark.timeout(30)

STEPS = [{"setWeight": 20}, {"pause": {}}]


def stuck_world(**spec: object) -> World:
    w = World()
    w.send(apply("my-app:1.0.0", steps=STEPS))
    w.answer_scale = False  # the canary never becomes ready
    w.send(apply("my-app:2.0.0", steps=STEPS, **spec))
    return w


def test_deadline_exceeded_degrades_and_progress_clears_it() -> None:
    w = stuck_world()
    assert next_wakeup(w.s) == pytest.approx(T0 + 600)
    w.tick(T0 + 599)
    assert w.s.phase == "Progressing"
    w.tick(T0 + 600)
    assert w.s.phase == "Degraded" and w.s.message.startswith("ProgressDeadlineExceeded")
    assert not w.s.abort
    w.answer_scale = True
    w.report_ready()
    assert w.s.phase == "Paused"  # progress resumed: weight 20 applied, now at the pause step


def test_deadline_abort() -> None:
    w = stuck_world()
    w.s.plan = w.s.plan.__class__(
        **{**{f: getattr(w.s.plan, f) for f in w.s.plan.__struct_fields__}, "progress_deadline_abort": True}
    )
    w.tick(T0 + 601)
    assert w.s.abort and w.s.phase == "Degraded" and "ProgressDeadlineExceeded" in w.s.message


def test_indefinite_pause_never_times_out() -> None:
    w = World()
    w.send(apply("my-app:1.0.0", steps=STEPS))
    w.send(apply("my-app:2.0.0", steps=STEPS))
    assert w.s.phase == "Paused" and next_wakeup(w.s) is None
    w.tick(T0 + 100_000)
    assert w.s.phase == "Paused"
