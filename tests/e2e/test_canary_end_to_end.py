"""End to end, with the four services as real processes over a real nats-server and real HTTP traffic:
the happy path (promote as a plain NATS publish), a failing canary rolled back automatically, and a
planner killed with SIGKILL mid-rollout that continues where it was when restarted."""

from __future__ import annotations

import nats
import pytest

from shared.embedded_server import free_port
from tests.e2e.harness import Harness, rollout, template, versions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


SEED_STEPS = [
    {"setWeight": 10},
    {"pause": {}},
    {"setWeight": 25},
    {"pause": {"duration": 1}},
    {"setWeight": 50},
    {
        "analysis": {
            "templates": [{"templateName": "http-error-rate"}],
            "args": [
                {"name": "service-name", "value": "web-canary"},
                {"name": "error-threshold", "value": "1"},
            ],
        }
    },
]


async def test_happy_path_promote_by_plain_publish(stack: Harness) -> None:
    port = free_port()
    await stack.apply(template("http-error-rate", admin_port=stack.settings.admin_port))
    await stack.apply(rollout("web", version=1, port=port, steps=SEED_STEPS))
    st = await stack.wait("web", lambda s: s["phase"] == "Healthy")
    assert st["stableRevision"] == 1 and st["currentStepIndex"] == len(SEED_STEPS)  # first version: no steps

    await stack.apply(rollout("web", version=2, port=port, steps=SEED_STEPS))
    st = await stack.wait("web", lambda s: s["phase"] == "Paused")
    assert st["setWeight"] == 10 and st["actualWeight"] == 10 and st["currentStepIndex"] == 1
    assert st["pauseConditions"][0]["reason"] == "CanaryPauseStep"
    seen = await versions(port, 200)
    assert seen == {"1": 180, "2": 20}  # smooth weighted round robin: exactly 10%

    # Any NATS client can promote: a plain publish, no reply subject.
    nc = await nats.connect(stack.url)
    await nc.publish("rollouts.cmd.default.web.promote", b"")
    await nc.flush()
    await nc.close()

    st = await stack.wait("web", lambda s: s["phase"] == "Healthy" and s["stableRevision"] == 2, timeout=60)
    assert st["currentStepIndex"] == len(SEED_STEPS)
    assert st["setWeight"] == 100 and st["actualWeight"] == 100 and st["abort"] is False
    assert st["currentAnalysisRun"]["phase"] == "Successful"
    assert await versions(port, 50) == {"2": 50}

    events = [e.type for e in await stack.client.history("default", "web")]
    for expected in (
        "RevisionStarted",
        "WeightConfirmed",
        "RolloutPaused",
        "Promoted",
        "AnalysisRunCompleted",
        "RolloutPromoted",
    ):
        assert expected in events


async def test_failing_canary_is_rolled_back(stack: Harness) -> None:
    port = free_port()
    steps = [{"setWeight": 50}, SEED_STEPS[-1]]
    await stack.apply(template("http-error-rate", admin_port=stack.settings.admin_port, count=2))
    await stack.apply(rollout("web", version=1, port=port, steps=steps))
    await stack.wait("web", lambda s: s["phase"] == "Healthy")
    await stack.apply(rollout("web", version=2, port=port, steps=steps, error_rate=1.0))
    await stack.wait("web", lambda s: s["actualWeight"] == 50)
    await versions(port, 40)  # traffic for the analysis to see: half of it fails
    st = await stack.wait("web", lambda s: s["phase"] == "Degraded" and s["actualWeight"] == 0, timeout=60)
    assert st["abort"] is True and st["setWeight"] == 0 and st["stableRevision"] == 1
    assert "error-rate" in st["message"] and "Failed" in st["message"]
    assert await versions(port, 40) == {"1": 40}
    # the canary is scaled down after abortScaleDownDelaySeconds (1 s here)
    st = await stack.wait(
        "web", lambda s: all(r["replicas"] == 0 for r in s["revisions"] if r["revision"] == 2)
    )
    code, out, err = await stack.cli("get", "web", "-o", "json")
    assert code == 0 and '"phase": "Degraded"' in out


async def test_planner_killed_mid_rollout_continues_after_restart(stack: Harness) -> None:
    port = free_port()
    steps = [{"setWeight": 20}, {"pause": {"duration": 2}}, {"setWeight": 60}, {"pause": {"duration": 1}}]
    await stack.apply(rollout("web", version=1, port=port, steps=steps))
    await stack.wait("web", lambda s: s["phase"] == "Healthy")
    await stack.apply(rollout("web", version=2, port=port, steps=steps))
    await stack.wait("web", lambda s: s["phase"] == "Paused" and s["currentStepIndex"] == 1)
    stack.kill("planner")
    # A command sent while the planner is down is kept and takes effect once it is back.
    nc = await nats.connect(stack.url)
    await nc.publish("rollouts.cmd.default.web.pause", b"")
    await nc.flush()
    await nc.close()
    stack.restart("planner")
    st = await stack.wait("web", lambda s: s["paused"] is True, timeout=30)
    assert st["phase"] == "Paused" and st["message"] == "manually paused"
    code, out, err = await stack.cli("promote", "web")  # unpauses
    assert code == 0, err
    st = await stack.wait("web", lambda s: s["phase"] == "Healthy" and s["stableRevision"] == 2, timeout=60)
    assert await versions(port, 20) == {"2": 20}
    history = await stack.client.history("default", "web")
    weights = [e.actual_weight for e in history if e.type == "WeightConfirmed" and e.revision == 2]
    assert weights == [20, 60, 100]  # no step skipped, none applied twice
    seqs = [e.seq for e in history]
    assert seqs == sorted(set(seqs))  # no event published twice
