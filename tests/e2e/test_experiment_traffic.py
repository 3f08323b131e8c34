"""An experiment step with weighted templates, end to end through the built-in proxy: the baseline
(stable spec) and candidate (canary spec) replica sets come up beside the rollout, take their share
of the traffic out of the stable's while the experiment runs, and give it back when it ends."""

from __future__ import annotations

import pytest

from shared.embedded_server import free_port
from tests.e2e.harness import Harness, rollout, versions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

STEPS = [
    {"setWeight": 20},
    {
        "experiment": {
            "duration": "1h",
            "templates": [
                {"name": "baseline", "specRef": "stable", "replicas": 1, "weight": 20},
                {"name": "candidate", "specRef": "canary", "replicas": 1, "weight": 20},
            ],
        }
    },
    {"pause": {}},
]


def _additional(status: dict[str, object]) -> list[dict[str, object]]:
    weights = (status.get("canary") or {}).get("weights") or {}  # type: ignore[attr-defined]
    return list(weights.get("additional") or [])


async def test_experiment_sets_take_their_weight_then_give_it_back(stack: Harness) -> None:
    port = free_port()
    await stack.apply(rollout("exp", version=1, port=port, steps=STEPS, replicas=1))
    await stack.wait("exp", lambda s: s["phase"] == "Healthy")
    await stack.apply(rollout("exp", version=2, port=port, steps=STEPS, replicas=1))
    st = await stack.wait("exp", lambda s: len(_additional(s)) == 2, timeout=60)
    assert st["currentStepIndex"] == 1
    assert st["canary"]["weights"]["stable"]["weight"] == 40
    # stable 40 + baseline 20 answer as version 1, canary 20 + candidate 20 as version 2.
    assert await versions(port, 100) == {"1": 60, "2": 40}

    code, _, err = await stack.cli("promote", "exp")  # ends the experiment: on to the pause
    assert code == 0, err
    st = await stack.wait("exp", lambda s: s["currentStepIndex"] == 2 and not _additional(s), timeout=60)
    assert st["canary"]["weights"]["stable"]["weight"] == 80
    assert await versions(port, 100) == {"1": 80, "2": 20}
