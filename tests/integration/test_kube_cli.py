"""`rollouts run <service> --platform kubernetes` without any way to reach a cluster fails at once,
saying which sources it tried (before waiting on NATS)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("service", ["planner", "scaler"])
async def test_no_cluster_config_is_a_clear_start_up_error(service: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "ROLLOUTS_KUBE_URL")}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(tmp_path / "missing"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "run", service, "--platform", "kubernetes",
        "--nats", "nats://127.0.0.1:1",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 2
    assert b"Kubernetes mode: no API server configured (ROLLOUTS_KUBE_URL unset, not in a pod" in out
