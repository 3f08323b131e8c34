"""The `rollouts` CLI as a user runs it: `up` starts and stops everything cleanly, `get`/`list`/`history`
show what happened, `get --watch` redraws on events, `promote --full`, and `demo` runs to a clean exit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from services.cli.processes import wait_ready
from shared.embedded_server import free_port
from tests.e2e.harness import Harness, rollout

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


async def test_up_runs_everything_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "up",
        "--embedded-nats",
        "--state-dir",
        str(tmp_path / "s"),
        "--nats",
        url,
        "--admin-port",
        str(free_port()),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "ROLLOUTS_LOG_LEVEL": "INFO"},
    )
    try:
        await wait_ready(url, timeout=30)
        assert (tmp_path / "s" / "jetstream").is_dir()  # JetStream stores under the state dir
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()[-3000:]
    with pytest.raises(TimeoutError):
        await wait_ready(url, ("planner",), timeout=1)


async def test_get_list_history_and_promote_full(stack: Harness) -> None:
    port = free_port()
    steps = [{"setWeight": 30}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]
    await stack.apply(rollout("web", version=1, port=port, steps=steps))
    await stack.wait("web", lambda s: s["phase"] == "Healthy")
    await stack.apply(rollout("web", version=2, port=port, steps=steps))
    await stack.wait("web", lambda s: s["phase"] == "Paused")

    code, out, err = await stack.cli("get", "web")
    assert code == 0, err
    assert "Status:          ॥ Paused" in out and "Step:          1/4" in out
    assert "SetWeight:     30" in out and "ActualWeight:  30" in out
    assert "web:2 (canary)" in out and "web:1 (stable)" in out

    code, out, err = await stack.cli("list", "-o", "json")
    assert code == 0, err
    items = json.loads(out)["items"]
    assert [i["metadata"]["name"] for i in items] == ["web"]
    assert items[0]["status"]["pauseConditions"][0]["reason"] == "CanaryPauseStep"

    watch = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "get",
        "web",
        "--watch",
        "--nats",
        stack.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(1.0)  # let the watcher subscribe; it only shows events from now on
    code, out, err = await stack.cli("promote", "web", "--full")
    assert code == 0 and "promoted" in out, err
    await stack.wait("web", lambda s: s["phase"] == "Healthy" and s["stableRevision"] == 2)
    assert watch.stdout is not None
    seen = b""
    while b"PromotedFull" not in seen:
        seen += await asyncio.wait_for(watch.stdout.readline(), timeout=20)
    watch.kill()
    await watch.wait()

    code, out, err = await stack.cli("history", "web")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[-4:-2] == ["RolloutCreated:", "Rollout"] or "RolloutCreated" in lines[0]
    assert any("PromotedFull" in line for line in lines)
    assert any("WeightConfirmed" in line for line in lines)


async def test_demo_runs_to_a_clean_exit(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "demo",
        "--replicas",
        "3",
        "--time-scale",
        "0.005",
        "--state-dir",
        str(tmp_path / "demo"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=140)
    text = out.decode()
    assert proc.returncode == 0, text[-4000:]
    assert "version 2: Healthy" in text and "version 3: Degraded" in text
    assert "AnalysisMeasurement" in text and "result: OK" in text
