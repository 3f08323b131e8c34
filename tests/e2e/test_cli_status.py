"""`rollouts status` against a real stack (embedded nats-server, the four services as processes):
a Healthy rollout exits 0; `--watch` follows a rollout through its steps and a short pause and exits 0
once Healthy, printing each change of status; an aborted rollout is Degraded (exit 1, also when
watched); `--watch --timeout 1` on a paused rollout exits 1 with "timed out"; an unknown rollout
exits 1. And `rollouts plan` needs no NATS at all."""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.embedded_server import free_port
from tests.e2e.harness import Harness, rollout

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SPECS = Path(__file__).resolve().parent.parent / "fixtures" / "specs"


async def first_version(stack: Harness, name: str, steps: list[dict[str, Any]]) -> int:
    port = free_port()
    await stack.apply(rollout(name, version=1, port=port, steps=steps))
    await stack.wait(name, lambda s: s["phase"] == "Healthy")
    return port


async def test_status_of_a_healthy_rollout_and_an_unknown_one(stack: Harness) -> None:
    await first_version(stack, "web", [{"setWeight": 50}, {"pause": {}}])
    code, out, err = await stack.cli("status", "web")
    assert (code, out.strip()) == (0, "Healthy"), err
    code, out, err = await stack.cli("status", "web", "--watch", "--timeout", "10")
    assert (code, out.strip()) == (0, "Healthy"), err

    code, out, err = await stack.cli("status", "nope")
    assert code == 1 and out == "" and err.startswith("error: ") and "not found" in err
    code, _, err = await stack.cli("status", "bad.name")
    assert code == 1 and "not a valid name" in err


async def test_watch_follows_the_steps_until_healthy(stack: Harness) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": 3}}, {"setWeight": 100}]
    port = await first_version(stack, "web", steps)
    # spec.paused holds the update before step 1 until the watcher runs (a new Python process can be
    # slow to start on a loaded machine), then `resume` lets it go through its steps.
    v2 = rollout("web", version=2, port=port, steps=steps)
    v2["spec"]["paused"] = True
    await stack.apply(v2)
    watch = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "status",
        "web",
        "--watch",
        "--timeout",
        "30",
        "--nats",
        stack.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert watch.stdout is not None
        first = await asyncio.wait_for(watch.stdout.readline(), timeout=30)
        assert first.decode().strip() == "Paused - manually paused"
        reply = await stack.client.command("default", "web", "resume")
        assert reply.ok, reply.error
        rest, err = await asyncio.wait_for(watch.communicate(), timeout=45)
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()
    out = first.decode() + rest.decode()
    assert watch.returncode == 0, out + err.decode() + stack.logs()
    lines = out.splitlines()
    assert "Paused - CanaryPauseStep" in lines, out  # the 3 s pause step, on the way
    assert lines[-1] == "Healthy", out
    assert all(line.split(" - ")[0] in ("Progressing", "Paused", "Healthy") for line in lines), out
    assert all(a != b for a, b in itertools.pairwise(lines)), "each change printed once"
    st = await stack.status("web")
    assert st["stableRevision"] == 2 and st["currentStepIndex"] == len(steps)


async def test_aborted_rollout_is_degraded(stack: Harness) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]
    port = await first_version(stack, "web", steps)
    await stack.apply(rollout("web", version=2, port=port, steps=steps))
    await stack.wait("web", lambda s: s["phase"] == "Paused")

    # A watcher started before the abort stops with exit 1 once the rollout is Degraded.
    watch = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "status",
        "web",
        "--watch",
        "--timeout",
        "60",
        "--nats",
        stack.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert watch.stdout is not None
        first = await asyncio.wait_for(watch.stdout.readline(), timeout=20)
        assert first.decode().strip() == "Paused - CanaryPauseStep"
        code, out, err = await stack.cli("abort", "web")
        assert code == 0, err
        rest, werr = await asyncio.wait_for(watch.communicate(), timeout=30)
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()
    assert watch.returncode == 1, werr.decode()
    assert rest.decode().splitlines()[-1].startswith("Degraded - RolloutAborted: ")

    code, out, err = await stack.cli("status", "web")
    assert code == 1, err
    assert out.strip() == "Degraded - RolloutAborted: Rollout aborted update to revision 2"


async def test_watch_times_out_on_a_paused_rollout(stack: Harness) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]
    port = await first_version(stack, "web", steps)
    await stack.apply(rollout("web", version=2, port=port, steps=steps))
    await stack.wait("web", lambda s: s["phase"] == "Paused")

    code, out, err = await stack.cli("status", "web")
    assert (code, out.strip()) == (0, "Paused - CanaryPauseStep"), err

    code, out, err = await asyncio.wait_for(
        stack.cli("status", "web", "--watch", "--timeout", "1"), timeout=20
    )
    assert code == 1
    assert out.strip() == "Paused - CanaryPauseStep"
    assert err.startswith("error: ") and "timed out" in err


async def test_plan_needs_no_nats(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "plan",
        "-f",
        str(SPECS / "seed-rollout.yaml"),
        "--nats",
        f"nats://127.0.0.1:{free_port()}",  # nothing listens there
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    assert "promote: canary scaled to 10, becomes stable" in out.decode()
