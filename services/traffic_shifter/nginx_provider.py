"""NginxProvider: serves every rollout through one local nginx that it starts, reconfigures and stops.

Each change renders the whole configuration (services.traffic_shifter.nginx_config), has ``nginx -t`` check
it as a candidate file, renames it over the live file and reloads; apply returns only once new connections
are served by the new generation: the control endpoint answers it and every worker of an older
generation has stopped accepting (read from /proc on Linux). A rejected candidate leaves the live file and
the running configuration untouched. check_drift puts back hand edits of the file, of the running
configuration, or a dead nginx.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Final

import aiohttp

from services.traffic_shifter.nginx_config import (
    CONTROL_HOST,
    GENERATION_PATH,
    NginxSettings,
    RolloutRouting,
    render_config,
    routing_for,
    section_of,
)
from services.traffic_shifter.proxy import ProxyStats
from shared.embedded_server import free_port
from shared.messages import Endpoints, TrafficDesired

log = logging.getLogger(__name__)

# A reload normally shows in tens of milliseconds; a failed bind() is retried by nginx for 2.5 s first.
CONFIRM_TIMEOUT: Final = 15.0  # seconds
CONFIRM_POLL: Final = 0.02  # seconds between checks while waiting for a generation
TEST_TIMEOUT: Final = 30.0  # seconds for `nginx -t`
STOP_TIMEOUT: Final = 15.0  # seconds for a graceful stop (the config's worker_shutdown_timeout is 10 s)
# Where Debian and most distributions put nginx, often outside an unprivileged user's PATH.
_SBIN_PATH: Final = os.pathsep.join(("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/local/nginx/sbin"))
_LOG_LINE: Final = re.compile(r"\[(?P<level>emerg|alert|crit|error|warn)\] \d+#\d+: (?P<message>.*)")
# nginx retries a bind() that failed with "address in use" five times, then gives up with
# "still could not bind()"; other bind() failures are final at once.
_RETRIED: Final = re.compile(rf"bind\(\) to .* failed \({errno.EADDRINUSE}: ")


class NginxError(Exception):
    """The provider's nginx could not be brought to the desired configuration."""


class NginxRejected(NginxError):
    """``nginx -t`` refused the rendered configuration; the running one stays live."""


class NginxReloadFailed(NginxError):
    """nginx did not take the new configuration (e.g. a listen port in use); the running one stays live."""


class NginxNotRunning(NginxError):
    """The nginx master process failed to start or exited."""


class NginxProvider:
    """TrafficProvider over a plain nginx outside Kubernetes: one upstream and listener per rollout."""

    def __init__(self, *, state_dir: Path, host: str = "127.0.0.1", nginx_binary: str = "nginx") -> None:
        self.state_dir = state_dir.absolute()
        self.host = host
        self.nginx_binary = nginx_binary
        self.config_path = self.state_dir / "nginx.conf"
        self.error_log = self.state_dir / "error.log"
        self.pid_path = self.state_dir / "nginx.pid"
        self._candidate = self.state_dir / "nginx.conf.candidate"
        self._output = self.state_dir / "nginx.out"
        self._routings: dict[str, RolloutRouting] = {}  # accepted (served) routing per rollout
        self._text: str | None = None  # what was last written and confirmed
        self._live: str = ""  # the generation nginx serves
        self._token = secrets.token_hex(4)  # tells this provider's generations from a stale nginx's
        self._counter = 0
        self._control_port: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    @staticmethod
    def available(nginx_binary: str = "nginx") -> str | None:
        """The path of the nginx binary, or None when it is not installed."""
        return shutil.which(nginx_binary) or shutil.which(nginx_binary, path=_SBIN_PATH)

    @property
    def pid(self) -> int | None:
        """The nginx master's process id while it runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def control_url(self) -> str | None:
        return f"http://{CONTROL_HOST}:{self._control_port}" if self._control_port else None

    @property
    def generation(self) -> str:
        """The generation nginx serves ("" before the first apply)."""
        return self._live

    # --- TrafficProvider --------------------------------------------------------------------------

    async def apply(self, desired: TrafficDesired, endpoints: Endpoints | None) -> None:
        routing = routing_for(desired, endpoints)  # NotReady or NginxConfigError, before touching nginx
        async with self._lock:
            routings = {**self._routings, routing.key: routing}
            await self._converge(routings, culprit=routing.key)
            self._routings = routings

    def stats(self) -> dict[str, ProxyStats]:
        return {}  # nginx keeps no per-revision counters without its commercial API

    async def close(self) -> None:
        async with self._lock:
            process, self._process = self._process, None
            if process is None:
                return
            if process.returncode is None:
                # Graceful: workers finish their requests (bounded by worker_shutdown_timeout).
                process.send_signal(signal.SIGQUIT)
                try:
                    await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    log.warning("nginx %d did not stop within %gs: killing it", process.pid, STOP_TIMEOUT)
                    process.kill()
                    await process.wait()
            _kill_leftovers(process.pid)
            self._text = None  # nothing to keep serving: check_drift must not start it again
            log.info("nginx %d stopped", process.pid)

    # --- drift ---------------------------------------------------------------------------------------

    async def check_drift(self) -> bool:
        """Restore the written configuration if it was edited or reloaded by hand, or nginx died.

        Returns True when something was corrected; the shifter calls this periodically.
        """
        async with self._lock:
            if self._text is None:
                return False
            reason: str | None = None
            if self._process is None or self._process.returncode is not None:
                reason = "nginx is not running"
            else:
                try:
                    on_disk: str | None = self.config_path.read_text()
                except OSError:
                    on_disk = None
                if on_disk != self._text:
                    reason = f"{self.config_path} was edited"
                else:
                    served = await _served_generation(self._control_port)
                    if served != self._live:
                        reason = f"nginx serves generation {served!r}, not {self._live!r}"
            if reason is None:
                return False
            log.warning("nginx drift: %s; restoring the desired configuration", reason)
            await self._converge(self._routings, culprit=None, force=True)
            return True

    # --- write, test, reload, confirm ----------------------------------------------------------------

    def _settings(self) -> NginxSettings:
        if self._control_port is None:
            self._control_port = free_port(CONTROL_HOST)
        worker_user: str | None = None
        if os.geteuid() == 0:
            # Workers as the provider's own user, so they can use the temp directories under state_dir.
            worker_user = f"{pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name}"
        return NginxSettings(
            state_dir=str(self.state_dir),
            host=self.host,
            control_port=self._control_port,
            worker_user=worker_user,
        )

    def _binary(self) -> str:
        binary = self.available(self.nginx_binary)
        if binary is None:
            raise NginxNotRunning(f"nginx binary {self.nginx_binary!r} not found (apt-get install nginx)")
        return binary

    async def _converge(
        self, routings: dict[str, RolloutRouting], *, culprit: str | None, force: bool = False
    ) -> None:
        settings = self._settings()
        running = self._process is not None and self._process.returncode is None
        if self._process is not None and not running:
            _kill_leftovers(self._process.pid)  # they would still hold the listen ports
            self._process = None
        if not force and running and self._text is not None:
            if render_config(routings.values(), settings, self._live) == self._text:
                return  # nginx already serves exactly this
        self._counter += 1
        generation = f"{self._token}-{self._counter}"
        text = render_config(routings.values(), settings, generation)
        binary = self._binary()
        await self._test(binary, text, culprit)
        previous = self._text
        os.replace(self._candidate, self.config_path)
        try:
            if running:
                await self._reload(generation)
            else:
                await self._start(binary, generation)
        except NginxError as e:
            if previous is not None:
                _write_atomically(self.config_path, previous)  # the file again says what nginx serves
            raise type(e)(f"{_whose(culprit)}{e}") from e
        self._text = text
        self._live = generation
        log.info(
            "nginx serves generation %s (%s)", generation, f"rollout {culprit}" if culprit else "restored"
        )

    async def _test(self, binary: str, text: str, culprit: str | None) -> None:
        (self.state_dir / "tmp").mkdir(parents=True, exist_ok=True)
        _write_atomically(self._candidate, text)
        process = await asyncio.create_subprocess_exec(
            binary, "-t", "-q", "-p", f"{self.state_dir}/", "-c", str(self._candidate), "-e", "stderr",
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), TEST_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise NginxRejected(
                f"{_whose(culprit)}nginx -t did not finish within {TEST_TIMEOUT:g}s"
            ) from None
        if process.returncode == 0:
            return
        output = (stderr + stdout).decode(errors="replace")
        problems = [_described(m, text, self._candidate) for m in _problems(output)] or [output.strip()]
        raise NginxRejected(f"{_whose(culprit)}nginx rejected the configuration: {'; '.join(problems)}")

    async def _start(self, binary: str, generation: str) -> None:
        await self._stop_stale()
        offset = _size(self.error_log)
        with self._output.open("ab") as output:
            self._process = await asyncio.create_subprocess_exec(
                binary, "-p", f"{self.state_dir}/", "-c", str(self.config_path), "-e", str(self.error_log),
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        log.info("nginx master %d started (%s)", self._process.pid, self.config_path)
        try:
            await self._confirm(generation, old_workers=set(), offset=offset, action="start")
        except NginxError:
            process, self._process = self._process, None
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise

    async def _reload(self, generation: str) -> None:
        process = self._process
        assert process is not None
        old_workers = set(_children(process.pid))
        offset = _size(self.error_log)
        process.send_signal(signal.SIGHUP)
        await self._confirm(generation, old_workers=old_workers, offset=offset, action="reload")

    async def _confirm(self, generation: str, *, old_workers: set[int], offset: int, action: str) -> None:
        """Until new connections are served by ``generation``: it answers on the control port, and every
        worker of an older generation has closed its listeners (its title then says "shutting down")."""
        process = self._process
        assert process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIRM_TIMEOUT
        # A fresh connection per poll: a kept-alive one could stay with an old worker.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                if process.returncode is not None:
                    raise NginxNotRunning(
                        f"nginx exited with code {process.returncode} during {action}: "
                        f"{self._failure_details(offset)}"
                    )
                problems = _problems(_read_from(self.error_log, offset))
                if any(not _RETRIED.search(m) for m in problems):
                    raise NginxReloadFailed(f"nginx {action} failed: {'; '.join(dict.fromkeys(problems))}")
                if await _served_generation(self._control_port, session) == generation and _retired(
                    process.pid, old_workers
                ):
                    return
                if loop.time() > deadline:
                    raise NginxReloadFailed(
                        f"nginx {action}: generation {generation} not served within {CONFIRM_TIMEOUT:g}s; "
                        f"see {self.error_log}"
                    )
                await asyncio.sleep(CONFIRM_POLL)

    def _failure_details(self, offset: int) -> str:
        problems = _problems(_read_from(self.error_log, offset) + _read_from(self._output, 0))
        return "; ".join(problems) or f"see {self.error_log}"

    async def _stop_stale(self) -> None:
        """Stop an nginx left running on this state directory by a provider that crashed."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        if str(self.config_path) not in _cmdline(pid):
            return  # a stale pid file, or not our nginx
        log.warning("stopping nginx %d left running on %s", pid, self.state_dir)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT
        while _cmdline(pid):
            if loop.time() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            await asyncio.sleep(CONFIRM_POLL)


# --- helpers (file system and /proc) ------------------------------------------------------------------


def _whose(culprit: str | None) -> str:
    return f"rollout {culprit}: " if culprit else ""


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            if f.seek(0, os.SEEK_END) < offset:
                offset = 0  # truncated or rotated meanwhile
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _problems(log_text: str) -> list[str]:
    """The emerg/alert/crit messages of an nginx log or of `nginx -t` output."""
    return [
        m.group("message")
        for m in _LOG_LINE.finditer(log_text)
        if m.group("level") in {"emerg", "alert", "crit"}
    ]


def _described(message: str, text: str, path: Path) -> str:
    """Point a message's "in <file>:<line>" at the line and at the rollout whose section holds it."""
    suffix = f" in {path}:"
    head, found, line = message.rpartition(suffix)
    if not found or not line.isdigit():
        return message
    number = int(line)
    lines = text.splitlines()
    content = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    owner = section_of(text, number)
    where = f"line {number}" + (f" of rollout {owner}" if owner else "")
    return f"{head} ({where}: {content})"


async def _served_generation(port: int | None, session: aiohttp.ClientSession | None = None) -> str | None:
    """The generation nginx answers on a fresh connection, or None when it does not answer."""
    if port is None:
        return None
    url = f"http://{CONTROL_HOST}:{port}{GENERATION_PATH}"
    timeout = aiohttp.ClientTimeout(total=2.0)
    try:
        if session is None:
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as own,
                own.get(url, timeout=timeout) as response,
            ):
                return (await response.text()).strip() if response.status == 200 else None
        async with session.get(url, timeout=timeout) as response:
            return (await response.text()).strip() if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


def _cmdline(pid: int) -> str:
    """A process's command line (nginx rewrites it to its title), or "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stat_fields(pid: str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


def _processes() -> list[str]:
    try:
        return [entry.name for entry in os.scandir("/proc") if entry.name.isdigit()]
    except OSError:
        return []  # no /proc (not Linux): the control endpoint is the only confirmation


def _children(parent: int) -> dict[int, str]:
    """Live child process ids of ``parent`` with their titles ("nginx: worker process ...")."""
    found: dict[int, str] = {}
    for pid in _processes():
        fields = _stat_fields(pid)
        # A zombie has exited already; it only waits for the master to reap it.
        if fields is not None and len(fields) > 1 and fields[1] == str(parent) and fields[0] != "Z":
            found[int(pid)] = _cmdline(int(pid))
    return found


def _retired(master: int, old_workers: set[int]) -> bool:
    """True when no worker of an older generation still accepts connections."""
    if not old_workers:
        return True
    current = _children(master)
    return all(pid not in current or "shutting down" in current[pid] for pid in old_workers)


def _kill_leftovers(master: int) -> None:
    """Kill workers that outlived their master (killed); they keep its process group (start_new_session)."""
    for pid in _group_members(master):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _group_members(group: int) -> list[int]:
    """nginx processes still in the process group led by the (gone) master."""
    members: list[int] = []
    for pid in _processes():
        fields = _stat_fields(pid)
        if fields is not None and len(fields) > 2 and fields[2] == str(group) and fields[0] != "Z":
            if _cmdline(int(pid)).startswith("nginx"):
                members.append(int(pid))
    return members


__all__ = ["NginxError", "NginxNotRunning", "NginxProvider", "NginxRejected", "NginxReloadFailed"]
