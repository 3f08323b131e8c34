"""Local-mode platform: replicas are supervised OS processes with readiness probes and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Final

import msgspec

from services.scaler.changes import OnChange, notify
from shared.embedded_server import free_port
from shared.local_commands import local_argv

log = logging.getLogger(__name__)


_PR_SET_PDEATHSIG: Final = 1
_START_ATTEMPTS: Final = 3
_PROBE_TIMEOUT: Final = 1.0  # kubelet's default timeoutSeconds
# A replica that stayed up this long is considered healthy again and its backoff resets.
_BACKOFF_RESET_AFTER: Final = 10.0
_ADDR_IN_USE = re.compile(r"address already in use|eaddrinuse|errno 98|errno 48", re.IGNORECASE)


class ReplicaStartError(RuntimeError):
    """A replica exited or never became ready while being started."""

    def __init__(self, message: str, *, command: tuple[str, ...], log_tail: str) -> None:
        super().__init__(f"{message}\ncommand: {' '.join(command)}\nlast log lines:\n{log_tail}")
        self.command = command
        self.log_tail = log_tail


class ReplicaTemplate(msgspec.Struct, frozen=True):
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    readiness_path: str | None = None  # httpGet path; None means a TCP connect check
    readiness_scheme: str = "HTTP"
    readiness_initial_delay: float = 0
    readiness_period: float = 0.1
    readiness_timeout: float = 30.0
    cwd: str | None = None


class Replica(msgspec.Struct, frozen=True):
    """Point-in-time view of one replica process."""

    id: str
    revision: str
    port: int
    pid: int
    ready: bool

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion: '$$' -> '$', unknown or unterminated references stay as written."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 == n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close == -1:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : close]
                out.append(variables.get(name, f"$({name})"))
                i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def build_environment(template: ReplicaTemplate, port: int) -> dict[str, str]:
    """The template's env (each value expanded against the ones before it, as Kubernetes does) plus PORT."""
    variables: dict[str, str] = {"PORT": str(port)}
    for name, value in template.env:
        variables[name] = expand(value, variables)
    # PORT is assigned by the platform; the proxy routes to it, so a template value cannot win.
    variables["PORT"] = str(port)
    return variables


def build_argv(template: ReplicaTemplate, variables: Mapping[str, str]) -> list[str]:
    argv = [expand(part, variables) for part in (*template.command, *template.args)]
    if not argv:
        raise ValueError("replica template needs a command (there is no image entrypoint locally)")
    return local_argv(argv)


async def probe(
    port: int, path: str | None, scheme: str = "HTTP", probe_timeout: float = _PROBE_TIMEOUT
) -> bool:
    """One readiness check: HTTP GET answering 2xx/3xx (as kubelet counts it), or a TCP connect."""
    context: ssl.SSLContext | None = None
    if path is not None and scheme.upper() == "HTTPS":
        # kubelet does not verify probe certificates either.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(probe_timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            try:
                if path is None:
                    return True
                target = path if path.startswith("/") else f"/{path}"
                writer.write(
                    f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "User-Agent: nats-rollouts-probe\r\nConnection: close\r\n\r\n".encode()
                )
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    parts = status_line.split()
    return (
        len(parts) >= 2
        and parts[0].startswith(b"HTTP/")
        and parts[1].isdigit()
        and 200 <= int(parts[1]) < 400
    )


def _preexec_factory() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    # Resolve libc in the parent: dlopen after fork is not async-signal-safe.
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def preexec() -> None:
        # Kill the replica if we die; note the kernel ties this to the forking thread.
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # parent died between fork and prctl
            os._exit(1)

    return preexec


def _tail(path: Path | None, lines: int = 20) -> str:
    if path is None:
        return "(no log: LocalProcessPlatform has no log_dir)"
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            data = fh.read().decode(errors="replace")
    except OSError as exc:
        return f"(log unavailable: {exc})"
    return "\n".join(data.splitlines()[-lines:]) or "(log empty)"


class _Exited(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"exited with code {code} before becoming ready")
        self.code = code


class _NotReady(Exception):
    pass


class _Proc:
    """Mutable supervisor state for one replica; survives restarts of the underlying process."""

    def __init__(
        self, rid: str, key: str, revision: str, template: ReplicaTemplate, log_path: Path | None
    ) -> None:
        self.id = rid
        self.key = key
        self.revision = revision
        self.template = template
        self.log_path = log_path
        self.port = 0
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False
        self.stopping = False
        self.restarts = 0
        self.created_at = time.time()  # `restart` replaces replicas created before a given time
        self.supervisor: asyncio.Task[None] | None = None

    def snapshot(self) -> Replica:
        pid = self.process.pid if self.process is not None else 0
        return Replica(id=self.id, revision=self.revision, port=self.port, pid=pid, ready=self.ready)


class LocalProcessPlatform:
    """Starts, stops, probes and restarts replica processes keyed by (key, revision)."""

    def __init__(
        self,
        *,
        log_dir: Path | None = None,
        on_change: OnChange | None = None,
        grace_period: float = 2.0,
        drain_seconds: float = 1.0,
        restart_backoff: float = 0.5,
        max_restart_backoff: float = 30.0,
    ) -> None:
        self._log_dir = log_dir
        self._on_change = on_change
        self._grace = grace_period
        self._drain = drain_seconds
        self._backoff = restart_backoff
        self._max_backoff = max_restart_backoff
        self._groups: dict[tuple[str, str], list[_Proc]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._seq = itertools.count(1)
        self._preexec = _preexec_factory()
        self._closed = False
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)

    # ---- queries -------------------------------------------------------------------------------

    def replicas(self, key: str, revision: str | None = None) -> list[Replica]:
        return [p.snapshot() for p in self._procs(key, revision)]

    def endpoints(self, key: str, revision: str) -> list[str]:
        return [f"127.0.0.1:{p.port}" for p in self._procs(key, revision) if p.ready]

    def _procs(self, key: str, revision: str | None) -> Iterable[_Proc]:
        for (k, rev), procs in self._groups.items():
            if k == key and (revision is None or rev == revision):
                yield from list(procs)

    # ---- scaling -------------------------------------------------------------------------------

    async def scale(self, key: str, revision: str, template: ReplicaTemplate, replicas: int) -> list[Replica]:
        """Converge (key, revision) to exactly `replicas` processes and return the ready ones.

        New replicas start in parallel and are awaited until ready; existing replicas keep the
        template they were started with. Raises ReplicaStartError if any new replica fails.
        """
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        if self._closed:
            raise RuntimeError("platform is stopped")
        group_key = (key, revision)
        lock = self._locks.setdefault(group_key, asyncio.Lock())
        async with lock:
            procs = self._groups.setdefault(group_key, [])
            if len(procs) < replicas:
                await self._scale_up(key, revision, template, replicas - len(procs))
            elif len(procs) > replicas:
                # Newest first: the oldest replicas are the ones most likely warmed up.
                victims = procs[replicas:][::-1]
                del procs[replicas:]
                await self._drain_then_stop(key, revision, victims)
            if not procs:
                self._groups.pop(group_key, None)
            return [p.snapshot() for p in procs if p.ready]

    async def _scale_up(self, key: str, revision: str, template: ReplicaTemplate, count: int) -> None:
        procs = self._groups[(key, revision)]
        loop = asyncio.get_running_loop()
        started: list[tuple[_Proc, asyncio.Future[None]]] = []
        for _ in range(count):
            seq = next(self._seq)
            rid = f"{key}-{revision}-{seq}"
            log_path = self._log_dir / f"{_safe(rid)}.log" if self._log_dir is not None else None
            proc = _Proc(rid, key, revision, template, log_path)
            first_ready: asyncio.Future[None] = loop.create_future()
            proc.supervisor = asyncio.create_task(self._supervise(proc, first_ready), name=f"replica {rid}")
            procs.append(proc)
            started.append((proc, first_ready))
        results = await asyncio.gather(*(f for _, f in started), return_exceptions=True)
        errors: list[BaseException] = []
        for (proc, _), result in zip(started, results, strict=True):
            if isinstance(result, BaseException):
                errors.append(result)
                with contextlib.suppress(ValueError):
                    procs.remove(proc)
                await self._stop(proc)
        if errors:
            raise errors[0]

    async def restart(self, key: str, revision: str, template: ReplicaTemplate, *, before: float) -> int:
        """Replace the replicas of (key, revision) created before `before`, one at a time: a new one
        is started and ready before an old one stops, so capacity never drops. Returns how many."""
        if self._closed:
            raise RuntimeError("platform is stopped")
        group_key = (key, revision)
        lock = self._locks.setdefault(group_key, asyncio.Lock())
        replaced = 0
        async with lock:
            procs = self._groups.get(group_key, [])
            for old in [p for p in procs if p.created_at < before]:
                await self._scale_up(key, revision, template, 1)
                await self._notify(key, revision)  # the new one is in the endpoints first
                with contextlib.suppress(ValueError):
                    procs.remove(old)
                await self._drain_then_stop(key, revision, [old])
                replaced += 1
        return replaced

    async def _drain_then_stop(self, key: str, revision: str, victims: list[_Proc]) -> None:
        """Out of the endpoints first, stopped `drain` seconds later: the proxy stops sending them
        requests before they go away (as Kubernetes removes endpoints before SIGTERM)."""
        for p in victims:
            p.ready = False
        await self._notify(key, revision)
        if self._drain > 0 and any(p.process is not None for p in victims):
            await asyncio.sleep(self._drain)
        await asyncio.gather(*(self._stop(p) for p in victims))
        await self._notify(key, revision)

    async def stop_all(self) -> None:
        """Stop every replica (SIGTERM, then SIGKILL after the grace period); the platform stays closed."""
        self._closed = True
        procs = [p for group in self._groups.values() for p in group]
        self._groups.clear()
        await asyncio.gather(*(self._stop(p) for p in procs), return_exceptions=True)

    # ---- supervision ---------------------------------------------------------------------------

    async def _supervise(self, proc: _Proc, first_ready: asyncio.Future[None]) -> None:
        """Start the replica, then keep restarting it with backoff whenever it exits unexpectedly."""
        try:
            await self._start_until_ready(proc)
        except BaseException as exc:
            if not first_ready.done():
                first_ready.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        first_ready.set_result(None)
        await self._notify(proc.key, proc.revision)

        backoff = self._backoff
        loop = asyncio.get_running_loop()
        while not proc.stopping:
            assert proc.process is not None
            up_since = loop.time()
            code = await proc.process.wait()
            if proc.stopping:
                return
            proc.ready = False
            log.warning(
                "replica %s (pid %s) exited with code %s; restarting", proc.id, proc.process.pid, code
            )
            await self._notify(proc.key, proc.revision)
            if loop.time() - up_since >= _BACKOFF_RESET_AFTER:
                backoff = self._backoff
            while not proc.stopping:
                await asyncio.sleep(backoff)  # crash-loop backoff, not synchronisation
                backoff = min(backoff * 2, self._max_backoff)
                proc.restarts += 1
                try:
                    await self._start_until_ready(proc, keep_port=True)
                except (ReplicaStartError, OSError) as exc:
                    log.warning("replica %s restart %d failed: %s", proc.id, proc.restarts, exc)
                    continue
                await self._notify(proc.key, proc.revision)
                break

    async def _start_until_ready(self, proc: _Proc, *, keep_port: bool = False) -> None:
        """Launch and wait for readiness, retrying early exits that look like a lost port race."""
        template = proc.template
        for attempt in range(1, _START_ATTEMPTS + 1):
            if not (keep_port and attempt == 1 and proc.port):
                proc.port = free_port()
            argv = await self._launch(proc)
            try:
                await self._await_ready(proc)
                return
            except _Exited as exc:
                tail = _tail(proc.log_path)
                if attempt < _START_ATTEMPTS and (proc.log_path is None or _ADDR_IN_USE.search(tail)):
                    log.info("replica %s exited early (code %s), retrying on a new port", proc.id, exc.code)
                    continue
                raise ReplicaStartError(
                    f"replica {proc.id} {exc}", command=tuple(argv), log_tail=tail
                ) from None
            except _NotReady:
                await self._kill(proc)
                raise ReplicaStartError(
                    f"replica {proc.id} not ready within {template.readiness_timeout}s",
                    command=tuple(argv),
                    log_tail=_tail(proc.log_path),
                ) from None
        raise AssertionError("unreachable")

    async def _launch(self, proc: _Proc) -> list[str]:
        variables = build_environment(proc.template, proc.port)
        argv = build_argv(proc.template, variables)
        env = {**os.environ, **variables}
        out: IO[bytes] | int
        if proc.log_path is not None:
            out = proc.log_path.open("ab")
        else:
            out = subprocess.DEVNULL
        try:
            proc.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=proc.template.cwd,
                start_new_session=True,  # own process group, so killpg reaches grandchildren
                preexec_fn=self._preexec,
            )
        except OSError as exc:
            raise ReplicaStartError(
                f"replica {proc.id} could not be started: {exc}", command=tuple(argv), log_tail=""
            ) from exc
        finally:
            if not isinstance(out, int):
                out.close()  # the child holds its own descriptor
        log.info("replica %s started: pid %d port %d", proc.id, proc.process.pid, proc.port)
        return argv

    async def _await_ready(self, proc: _Proc) -> None:
        template = proc.template
        process = proc.process
        assert process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + template.readiness_timeout
        exited = asyncio.ensure_future(process.wait())
        try:
            if template.readiness_initial_delay > 0:
                await asyncio.wait({exited}, timeout=template.readiness_initial_delay)
            while True:
                if exited.done():
                    raise _Exited(process.returncode)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _NotReady
                timeout = min(_PROBE_TIMEOUT, remaining)
                if await probe(proc.port, template.readiness_path, template.readiness_scheme, timeout):
                    if exited.done():
                        raise _Exited(process.returncode)
                    proc.ready = True
                    return
                await asyncio.wait(
                    {exited}, timeout=max(0.0, min(template.readiness_period, deadline - loop.time()))
                )
        finally:
            exited.cancel()

    async def _stop(self, proc: _Proc) -> None:
        proc.stopping = True
        proc.ready = False
        supervisor = proc.supervisor
        if supervisor is not None and supervisor is not asyncio.current_task():
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        await self._kill(proc, grace=self._grace)

    async def _kill(self, proc: _Proc, *, grace: float = 0.0) -> None:
        process = proc.process
        if process is None:
            return
        if process.returncode is None and grace > 0:
            _signal_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), grace)
        # SIGKILL the whole group even if the leader is gone: grandchildren may linger.
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()
        log.info("replica %s (pid %d) stopped", proc.id, process.pid)

    async def _notify(self, key: str, revision: str) -> None:
        await notify(self._on_change, key, revision)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


__all__ = [
    "LocalProcessPlatform",
    "OnChange",
    "Replica",
    "ReplicaStartError",
    "ReplicaTemplate",
    "build_argv",
    "build_environment",
    "expand",
    "free_port",
    "probe",
]
