"""LocalProcessPlatform with the demo app as replica: scaling, readiness, expansion, restarts, failures."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from services.scaler.local_platform import (
    LocalProcessPlatform,
    Replica,
    ReplicaStartError,
    ReplicaTemplate,
    build_environment,
    expand,
)

DEMO = (sys.executable, "-m", "services.demo_app")


class Changes:
    """Records on_change calls and lets tests await a condition instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._cond = asyncio.Condition()

    async def __call__(self, key: str, revision: str) -> None:
        async with self._cond:
            self.calls.append((key, revision))
            self._cond.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            async with self._cond:
                await self._cond.wait_for(predicate)


@pytest.fixture
def changes() -> Changes:
    return Changes()


@pytest.fixture
async def platform(tmp_path: Path, changes: Changes) -> AsyncIterator[LocalProcessPlatform]:
    p = LocalProcessPlatform(log_dir=tmp_path / "logs", on_change=changes, restart_backoff=0.1)
    yield p
    await p.stop_all()


def demo(
    *, readiness_path: str | None = "/healthz", env: tuple[tuple[str, str], ...] = (), **kw: float
) -> ReplicaTemplate:
    return ReplicaTemplate(
        command=DEMO,
        args=("--message", "$(GREETING)"),
        env=(("GREETING", "hello"), *env),
        readiness_path=readiness_path,
        readiness_period=0.05,
        readiness_timeout=kw.get("readiness_timeout", 20.0),
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def get_json(replica: Replica) -> dict[str, object]:
    async with aiohttp.ClientSession() as session, session.get(f"http://{replica.address}/") as resp:
        assert resp.status == 200
        data: dict[str, object] = await resp.json()
        return data


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "x", "PORT": "8080"}
    assert expand("$(A)-$(PORT)", env) == "x-8080"
    assert expand("$$(A)", env) == "$(A)"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$", env) == "$"
    assert expand("cost $5 $(A", env) == "cost $5 $(A"
    assert expand("$", env) == "$"
    assert expand("$$$(A)", env) == "$x"
    template = ReplicaTemplate(
        command=("x",), env=(("LATER", "$(EARLY)"), ("EARLY", "e"), ("URL", "http://h:$(PORT)/$(EARLY)"))
    )
    variables = build_environment(template, 1234)
    # Only previously defined variables expand, as in Kubernetes.
    assert variables["LATER"] == "$(EARLY)"
    assert variables["URL"] == "http://h:1234/e"
    assert variables["PORT"] == "1234"


@pytest.mark.timeout(60)
async def test_scale_up_and_down(platform: LocalProcessPlatform, changes: Changes) -> None:
    template = demo()
    up = await platform.scale("web", "r1", template, 3)
    assert len(up) == 3 and all(r.ready for r in up)
    assert len({r.port for r in up}) == 3
    assert sorted(platform.endpoints("web", "r1")) == sorted(r.address for r in up)
    for replica in up:
        body = await get_json(replica)
        assert body["pid"] == replica.pid
        assert body["message"] == "hello"
    await changes.wait_for(lambda: changes.calls.count(("web", "r1")) >= 3)

    again = await platform.scale("web", "r1", template, 3)
    assert [r.pid for r in again] == [r.pid for r in up]  # idempotent

    down = await platform.scale("web", "r1", template, 1)
    assert [r.id for r in down] == [up[0].id]  # newest are stopped first
    assert not pid_alive(up[1].pid) and not pid_alive(up[2].pid)
    assert pid_alive(up[0].pid)
    assert changes.calls.count(("web", "r1")) >= 5

    assert await platform.scale("web", "r1", template, 0) == []
    assert platform.replicas("web") == []
    assert platform.endpoints("web", "r1") == []
    assert not pid_alive(up[0].pid)


@pytest.mark.timeout(60)
async def test_tcp_readiness_and_revisions(platform: LocalProcessPlatform) -> None:
    a = await platform.scale("web", "r1", demo(readiness_path=None, env=(("VERSION", "1"),)), 1)
    b = await platform.scale("web", "r2", demo(readiness_path=None, env=(("VERSION", "2"),)), 2)
    assert (await get_json(a[0]))["version"] == "1"
    assert {str((await get_json(r))["version"]) for r in b} == {"2"}
    assert len(platform.replicas("web")) == 3
    assert [r.revision for r in platform.replicas("web", "r2")] == ["r2", "r2"]
    assert platform.replicas("other") == []


@pytest.mark.timeout(60)
async def test_variable_expansion_in_args(platform: LocalProcessPlatform) -> None:
    template = ReplicaTemplate(
        command=DEMO,
        args=("--message", "$(GREETING) on $(PORT), $$(GREETING), $(NOPE)"),
        env=(("NAME", "world"), ("GREETING", "hi $(NAME)")),
        readiness_path="/healthz",
        readiness_period=0.05,
    )
    [replica] = await platform.scale("web", "r1", template, 1)
    body = await get_json(replica)
    assert body["message"] == f"hi world on {replica.port}, $(GREETING), $(NOPE)"


@pytest.mark.timeout(60)
async def test_crashed_replica_is_restarted(platform: LocalProcessPlatform, changes: Changes) -> None:
    [before] = await platform.scale("web", "r1", demo(), 1)
    await changes.wait_for(lambda: len(changes.calls) >= 1)
    os.kill(before.pid, signal.SIGKILL)

    def restarted() -> bool:
        current = platform.replicas("web", "r1")
        return len(current) == 1 and current[0].ready and current[0].pid != before.pid

    # ready -> exited -> ready again: three notifications in total.
    await changes.wait_for(lambda: len(changes.calls) >= 3 and restarted())
    [after] = platform.replicas("web", "r1")
    assert after.id == before.id
    assert (await get_json(after))["pid"] == after.pid


@pytest.mark.timeout(30)
async def test_never_ready_fails_fast(platform: LocalProcessPlatform) -> None:
    template = ReplicaTemplate(
        command=(sys.executable, "-c", "import time; print('booting', flush=True); time.sleep(60)"),
        args=(),
        env=(),
        readiness_path=None,
        readiness_period=0.05,
        readiness_timeout=1.0,
    )
    started = time.monotonic()
    with pytest.raises(ReplicaStartError) as info:
        await platform.scale("web", "r1", template, 1)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "not ready within 1.0s" in message
    assert "time.sleep(60)" in message
    assert "booting" in message
    assert platform.replicas("web") == []


@pytest.mark.timeout(30)
async def test_early_exit_reports_log_tail(platform: LocalProcessPlatform) -> None:
    template = ReplicaTemplate(
        command=(sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"),
        args=(),
        env=(),
        readiness_timeout=20.0,
    )
    started = time.monotonic()
    with pytest.raises(ReplicaStartError, match="code 3") as info:
        await platform.scale("web", "r1", template, 2)
    assert time.monotonic() - started < 10
    assert "bad config" in str(info.value)
    assert platform.replicas("web") == []


@pytest.mark.timeout(60)
async def test_stop_all_leaves_no_process(tmp_path: Path) -> None:
    platform = LocalProcessPlatform(log_dir=None)
    a = await platform.scale("web", "r1", demo(), 2)
    b = await platform.scale("api", "r9", demo(readiness_path=None), 1)
    pids = [r.pid for r in (*a, *b)]
    assert all(pid_alive(pid) for pid in pids)
    await platform.stop_all()
    assert not any(pid_alive(pid) for pid in pids)
    assert platform.replicas("web") == [] and platform.replicas("api") == []
    with pytest.raises(RuntimeError):
        await platform.scale("web", "r1", demo(), 1)
