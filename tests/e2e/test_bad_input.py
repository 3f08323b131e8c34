"""Bad input, end to end: invalid Rollouts are rejected by `lint`, `apply` and the apply subject with the
field path named and nothing stored; malformed messages on every subject leave every service running."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import KeyNotFoundError

from services.cli.processes import wait_ready
from shared import subjects
from shared.embedded_server import free_port
from tests.e2e.harness import Harness, rollout

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _base() -> dict[str, Any]:
    return rollout("bad", version=1, port=18080, steps=[{"setWeight": 10}, {"pause": {}}])


def _canary(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["strategy"]["canary"]  # type: ignore[no-any-return]


def _unknown_field() -> dict[str, Any]:
    d = _base()
    _canary(d)["steps"][0]["setWieght"] = 10
    return d


def _both_zero() -> dict[str, Any]:
    d = _base()
    del _canary(d)["trafficRouting"]
    del _canary(d)["scaleDownDelaySeconds"]
    del _canary(d)["abortScaleDownDelaySeconds"]
    _canary(d).update({"maxSurge": 0, "maxUnavailable": 0})
    return d


def _weight(w: int) -> dict[str, Any]:
    d = _base()
    _canary(d)["steps"][0] = {"setWeight": w}
    return d


def _unknown_step() -> dict[str, Any]:
    d = _base()
    _canary(d)["steps"].append({"teleport": {}})
    return d


def _no_selector() -> dict[str, Any]:
    d = _base()
    del d["spec"]["selector"]
    return d


def _bad_duration() -> dict[str, Any]:
    d = _base()
    _canary(d)["steps"][1] = {"pause": {"duration": "5 minutes"}}
    return d


CASES = [
    ("unknown field", _unknown_field, "spec.strategy.canary.steps[0].setWieght"),
    ("maxSurge and maxUnavailable both zero", _both_zero, "spec.strategy.canary.max"),
    ("setWeight above 100", lambda: _weight(101), "spec.strategy.canary.steps[0].setWeight"),
    ("setWeight below 0", lambda: _weight(-1), "spec.strategy.canary.steps[0].setWeight"),
    ("unknown step kind", _unknown_step, "spec.strategy.canary.steps[2]"),
    ("missing selector", _no_selector, "spec.selector"),
    ("unparseable duration", _bad_duration, "spec.strategy.canary.steps[1].pause.duration"),
]


@pytest.mark.parametrize(("case", "make", "path"), CASES, ids=[c[0] for c in CASES])
async def test_invalid_rollout_rejected_everywhere(
    stack: Harness, tmp_path: Path, case: str, make: Any, path: str
) -> None:
    doc = make()
    f = tmp_path / "bad.yaml"
    f.write_text(json.dumps(doc))
    code, out, err = await stack.cli("lint", "-f", str(f))
    assert code == 1 and path in err, (out, err)
    code, out, err = await stack.cli("apply", "-f", str(f))
    assert code == 1 and path in err, (out, err)
    # The apply subject, as any NATS client would use it, answers with the same error.
    nc = await nats.connect(stack.url)
    try:
        msg = await nc.request("rollouts.cmd.default.bad.apply", json.dumps(doc).encode(), timeout=10)
    finally:
        await nc.close()
    reply = json.loads(msg.data)
    assert reply["ok"] is False and path in reply["error"]
    kv = await stack.client.c.kv(subjects.ROLLOUTS_BUCKET)
    with pytest.raises(KeyNotFoundError):
        await kv.get("default.bad")  # nothing of it is stored


async def test_seed_plan_lints(stack: Harness, tmp_path: Path) -> None:
    seed = Path(__file__).parents[1] / "fixtures" / "specs" / "seed-rollout.yaml"
    code, out, err = await stack.cli("lint", "-f", str(seed))
    assert code == 0, err
    assert "Rollout/my-app-rollout: valid" in out


async def test_usage_errors_exit_2(stack: Harness) -> None:
    code, _, err = await stack.cli("promote")
    assert code == 2 and "usage" in err
    code, _, err = await stack.cli("frobnicate", "x")
    assert code == 2


async def test_unknown_rollout_and_bad_names(stack: Harness) -> None:
    code, _, err = await stack.cli("promote", "nope")
    assert code == 1 and "default/nope not found" in err
    code, _, err = await stack.cli("get", "nope")
    assert code == 1 and "not found" in err
    code, _, err = await stack.cli("abort", "bad.name")
    assert code == 1 and "bad.name" in err


async def test_malformed_messages_never_crash_a_service(stack: Harness) -> None:
    nc = await nats.connect(stack.url)
    js = nc.jetstream()
    garbage = [b"\xff\xfe not json", b"{", b"[]", b'{"type": "nope"}', b'{"namespace": 1}']
    try:
        for payload in garbage:
            for verb in ("promote", "abort", "apply", "retry", "pause"):
                await nc.publish(f"rollouts.cmd.default.x.{verb}", payload)
            await nc.publish("rollouts.cmd.default.x.explode", payload)  # unknown verb
            await nc.publish("rollouts.cmd.too.many.tokens.here.promote", payload)
            for kind in ("traffic", "scale", "analysis"):
                await js.publish(subjects.feedback(kind, "default", "x"), payload)
            await js.publish(subjects.traffic_desired("default", "x"), payload)
            await js.publish(subjects.scale_desired("default", "x"), payload)
            await js.publish(subjects.endpoints("default", "x"), payload)
            await js.publish(subjects.analysis_work("start", "default", "x"), payload)
            await js.publish(subjects.analysis_work("measure", "default", "x"), payload)
        # With a reply subject, a malformed command is answered with an error naming what is wrong.
        msg = await nc.request("rollouts.cmd.default.x.promote", b"{not json", timeout=10)
        reply = json.loads(msg.data)
        assert reply["ok"] is False and "payload" in reply["error"]
        msg = await nc.request("rollouts.cmd.default.x.apply", b"kind: [", timeout=10)
        assert json.loads(msg.data)["ok"] is False
    finally:
        await nc.close()
    await wait_ready(stack.url, timeout=10)
    assert stack.stack.dead() == []
    # ...and they still work.
    port = free_port()
    await stack.apply(rollout("ok", version=1, port=port, steps=[{"setWeight": 50}]))
    await stack.wait("ok", lambda s: s["phase"] == "Healthy")
