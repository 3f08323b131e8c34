"""The `job` provider in local mode: the Job's first container runs as a local process; success = exit 0.

Here `activeDeadlineSeconds` (default 600 s) bounds it, and the process group is killed when it is
exceeded. In Kubernetes mode the entry point configures a runner (`use_runner`, e.g.
services.analyzer.providers.kube_job.KubeJobRunner) and every job metric runs as a real Job.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any, Protocol

import msgspec

from services.analyzer.providers.errors import MeasurementError
from shared.local_commands import local_argv

DEFAULT_DEADLINE = 600.0


class JobResult:
    def __init__(self, succeeded: bool, exit_code: int | None, message: str) -> None:
        self.succeeded = succeeded
        self.exit_code = exit_code
        self.message = message


class JobContext(msgspec.Struct, frozen=True, kw_only=True):
    """The measurement a Job runs for: names and labels a Kubernetes Job."""

    namespace: str
    run_id: str  # the AnalysisRun's name
    metric: str
    index: int


class JobRunner(Protocol):
    async def run(
        self, job_spec: dict[str, Any], *, metadata: dict[str, Any] | None, context: JobContext | None
    ) -> JobResult: ...


_runner: JobRunner | None = None


def use_runner(runner: JobRunner | None) -> None:
    """Run every job metric through `runner` from now on (None: back to local processes)."""
    global _runner
    _runner = runner


def job_command(job_spec: dict[str, Any]) -> tuple[list[str], dict[str, str], float]:
    template = (job_spec.get("template") or {}).get("spec") or {}
    containers = template.get("containers") or []
    if not containers:
        raise MeasurementError("job.spec.template.spec.containers: at least one container is required")
    c = containers[0]
    argv = [str(x) for x in (c.get("command") or [])] + [str(x) for x in (c.get("args") or [])]
    if not argv:
        raise MeasurementError("job.spec.template.spec.containers[0]: command or args required in local mode")
    argv = local_argv(argv)  # as for replicas: `python` is the interpreter running the service
    env = {str(e["name"]): str(e.get("value", "")) for e in c.get("env") or [] if "name" in e}
    deadline = float(job_spec.get("activeDeadlineSeconds") or DEFAULT_DEADLINE)
    return argv, env, deadline


async def run_job(
    job_spec: dict[str, Any], *, metadata: dict[str, Any] | None = None, context: JobContext | None = None
) -> JobResult:
    if _runner is not None:
        return await _runner.run(job_spec, metadata=metadata, context=context)
    argv, env, deadline = job_command(job_spec)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as e:
        raise MeasurementError(f"job: cannot start {argv[0]!r}: {e.strerror}") from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=deadline)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return JobResult(False, None, f"job exceeded its deadline of {deadline:g}s")
    tail = out.decode(errors="replace").strip().splitlines()[-3:]
    code = proc.returncode
    message = f"job exited with {code}" + (f": {' | '.join(tail)}" if tail else "")
    return JobResult(code == 0, code, message)
