"""Benchmark: how many concurrent rollouts one planner process drives.

Runs an embedded nats-server and the planner, traffic-shifter, scaler (and an idle analyzer) as
separate processes, the shifter and scaler in no-op mode (they confirm everything at once), so
what is measured is the control plane itself: the planner's decide() + publishes + KV writes,
the JetStream hops and the two no-op services.

N rollouts are applied at version 1 (a first version becomes stable directly), then at version 2,
whose canary walks a 6-step plan that needs no human promote:

    setWeight 10, pause {duration: <--pause>}, setWeight 25, setWeight 50, setWeight 75, setWeight 100

Commands are plain publishes on rollouts.cmd.default.<name>.apply (the commands stream stores
them; only the first of each version is a request, so that a rejected document fails at once)
and progress is watched on a core subscription to rollouts.events.> (a lean tap, bench/event_tap.py: the
observer shares the two cores with what it measures). A rollout counts as done
when a PhaseChanged event says Healthy on the version's revision.

Reported (JSON on stdout, a human line on stderr):

* transitions: step transitions of version 2 = `StepCompleted` (setWeight steps) + `PauseEnded`
  (pause steps) events, i.e. 6 per rollout; `events` counts every event of the phase as well;
* transitions_per_s / events_per_s over the busy period (first v2 publish -> last rollout
  Healthy on revision 2);
* wall time until all N are Healthy on revision 2 (and the same for version 1);
* the planner's peak RSS (VmHWM of the planner child process), and CPU seconds per process
  during the busy period (which process is the bottleneck on a small machine); `others` is the
  CPU the rest of the machine used meanwhile (on a shared machine the numbers are pessimistic);
* how often the planner (re)started and lost its lease (from its log).

A phase ends as done, timeout (--timeout) or stalled (no event at all for --stall seconds).

    .venv/bin/python bench/planner_scale.py [--rollouts 10000] [--pause 1s] [--timeout 900]
        [--profile /tmp/planner.raw]   # py-spy record of the planner during version 2

Targets (issue): >= 1,000 transitions/s and < 300 MB planner RSS for 10,000 rollouts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import nats
from bench_rollouts import bench_rollout
from event_tap import EventTap

from services.cli.client import Client
from services.cli.processes import Stack, wait_ready
from shared import subjects
from shared.embedded_server import free_port
from shared.settings import Settings

NAMESPACE = "default"
TRANSITION_EVENTS = ("StepCompleted", "PauseEnded")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class _Event(msgspec.Struct):
    """The few fields of a RolloutEvent the bench needs (the rest is skipped by the decoder)."""

    type: str
    name: str
    revision: int
    phase: str


_decode_event = msgspec.json.Decoder(_Event).decode
_TYPE = re.compile(rb'"type":"([A-Za-z]+)"')


def steps(pause: str) -> list[dict[str, Any]]:
    pause_step: dict[str, Any] = {"pause": {"duration": pause}}
    return [
        {"setWeight": 10},
        pause_step,
        {"setWeight": 25},
        {"setWeight": 50},
        {"setWeight": 75},
        {"setWeight": 100},
    ]


def rollout(name: str, version: int, pause: str) -> bytes:
    doc = bench_rollout(name, version, steps(pause))
    return json.dumps(doc, separators=(",", ":")).encode()


# --- /proc sampling ----------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in kB."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


class Watch:
    """Counts events per type and phase, and knows which rollouts are Healthy on which revision."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.total = 0
        self.healthy: dict[int, set[str]] = collections.defaultdict(set)
        self.done: dict[int, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.target = 0
        self.last_at = 0.0

    def on_event(self, data: bytes) -> None:
        # Only a PhaseChanged is decoded in full; the rest are counted by their type field.
        found = _TYPE.search(data)
        kind = found.group(1).decode() if found else "?"
        self.total += 1
        self.counts[kind] += 1
        self.last_at = time.perf_counter()
        if kind == "PhaseChanged" and (ev := _decode_event(data)).phase == "Healthy":
            healthy = self.healthy[ev.revision]
            healthy.add(ev.name)
            if len(healthy) >= self.target:
                self.done[ev.revision].set()

    def snapshot(self) -> tuple[int, collections.Counter[str]]:
        return self.total, collections.Counter(self.counts)


async def until_done(watch: Watch, version: int, timeout: float, stall: float) -> str:
    """done, timeout, or stalled (no event at all for `stall` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    watch.last_at = time.perf_counter()
    while not watch.done[version].is_set():
        if loop.time() > deadline:
            return "timeout"
        if time.perf_counter() - watch.last_at > stall:
            return "stalled"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.done[version].wait(), timeout=1.0)
    return "done"


def log_count(path: Path, text: str) -> int:
    try:
        with open(path, errors="replace") as f:
            return sum(text in line for line in f)
    except OSError:
        return 0


def pids(stack: Stack) -> dict[str, int]:
    out = {name: p.pid for name, p in stack.children.items()}
    if stack.nats is not None and stack.nats.proc is not None:
        out["nats-server"] = stack.nats.proc.pid
    out["bench"] = os.getpid()
    return out


def summarize_profile(raw: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Top functions by own and total time from py-spy's collapsed-stack (raw) output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    if not samples:
        return {"own": [], "total": []}
    return {
        "own": [(f, round(100 * n / samples, 1)) for f, n in own.most_common(top)],
        "total": [(f, round(100 * n / samples, 1)) for f, n in total.most_common(top)],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    n = args.rollouts
    names = [f"r{i:05d}" for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="rollouts-scale-") as tmp:
        settings = Settings(
            nats_url=f"nats://127.0.0.1:{free_port()}", state_dir=Path(tmp), admin_port=free_port()
        )
        stack = Stack(settings, embedded_nats=True, platform="noop", log_dir=Path(tmp) / "logs")
        await asyncio.to_thread(stack.start)
        profiler: subprocess.Popen[bytes] | None = None
        result: dict[str, Any] = {"rollouts": n, "pause": args.pause}
        try:
            await wait_ready(settings.nats_url, ("planner", "traffic-shifter", "scaler"))
            planner_pid = stack.children["planner"].pid
            procs = pids(stack)
            nc = await nats.connect(settings.nats_url, pending_size=64 * 1024 * 1024)
            watch = Watch()
            watch.target = n
            # Every event, through a lean tap rather than nats-py (see event_tap.py): the observer
            # shares the two cores with what it measures.
            tap = EventTap(settings.nats_url, subjects.EVENTS_WILDCARD, watch.on_event)
            await tap.start()
            rss_samples: list[int] = []
            stop_sampling = asyncio.Event()

            async def sample() -> None:
                t0 = time.perf_counter()
                while not stop_sampling.is_set():
                    st = proc_status(planner_pid)
                    if "VmRSS" in st:
                        rss_samples.append(st["VmRSS"])
                    if args.verbose:
                        total, counts = watch.snapshot()
                        print(
                            f"[{time.perf_counter() - t0:7.1f}s] events {total} "
                            f"healthy r1 {len(watch.healthy[1])} r2 {len(watch.healthy[2])} "
                            f"steps {counts['StepCompleted']} planner rss {st.get('VmRSS', 0) // 1024} MB "
                            f"cpu {cpu_seconds(planner_pid):.1f}s",
                            file=sys.stderr,
                        )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop_sampling.wait(), timeout=args.sample_every)

            sampler = asyncio.create_task(sample())

            async def phase(version: int) -> dict[str, Any]:
                nonlocal profiler
                if version == 2 and args.profile:
                    profiler = start_profiler(planner_pid, Path(args.profile))
                total0, counts0 = watch.snapshot()
                cpu0 = {name: cpu_seconds(pid) for name, pid in procs.items()}
                planner0 = cpu_times(planner_pid)
                machine0 = machine_busy_seconds()
                t0 = time.perf_counter()
                # The first one as a request, so that a rejected document fails the bench at once.
                async with Client(settings.nats_url) as client:
                    reply = await client.command(
                        NAMESPACE, names[0], "apply", rollout(names[0], version, args.pause), timeout=60
                    )
                if not reply.ok:
                    raise SystemExit(f"apply rejected: {reply.error}")
                for i, name in enumerate(names[1:], 1):
                    await nc.publish(
                        subjects.command(NAMESPACE, name, "apply"), rollout(name, version, args.pause)
                    )
                    if i % 1000 == 999:
                        await nc.flush()
                await nc.flush()
                published = time.perf_counter() - t0
                finished = await until_done(watch, version, args.timeout, args.stall)
                t1 = time.perf_counter()
                if version == 2 and profiler is not None:
                    stop_profiler(profiler)
                    profiler = None
                total1, counts1 = watch.snapshot()
                counts = counts1 - counts0
                events = total1 - total0
                transitions = sum(counts[t] for t in TRANSITION_EVENTS)
                busy = t1 - t0
                cpu = {name: round(cpu_seconds(pid) - cpu0[name], 1) for name, pid in procs.items()}
                planner1 = cpu_times(planner_pid)
                # CPU used by processes that are not the bench's (other work on a shared machine).
                cpu["others"] = round(machine_busy_seconds() - machine0 - sum(cpu.values()), 1)
                return {
                    "finished": finished == "done",
                    "outcome": finished,
                    "healthy": len(watch.healthy[version]),
                    "publish_s": round(published, 3),
                    "wall_s": round(busy, 3),
                    "transitions": transitions,
                    "transitions_per_s": round(transitions / busy, 1),
                    "events": events,
                    "events_per_s": round(events / busy, 1),
                    "rollouts_per_s": round(len(watch.healthy[version]) / busy, 1),
                    "event_types": dict(sorted(counts.items())),
                    "cpu_s": cpu,
                    "planner_cpu_user_sys_s": [
                        round(planner1[0] - planner0[0], 1),
                        round(planner1[1] - planner0[1], 1),
                    ],
                }

            result["v1"] = await phase(1)
            if args.verbose:
                print(f"v1: {json.dumps(result['v1'])}", file=sys.stderr)
            if result["v1"]["finished"]:
                result["v2"] = await phase(2)
            stop_sampling.set()
            await sampler
            status = proc_status(planner_pid)
            result["planner_peak_rss_mb"] = round(status.get("VmHWM", 0) / 1024, 1)
            result["planner_rss_end_mb"] = round(status.get("VmRSS", 0) / 1024, 1)
            result["state_bytes_per_rollout"] = await state_size(nc, names[0])
            planner_log = Path(tmp) / "logs" / "planner.log"
            result["planner_starts"] = await asyncio.to_thread(log_count, planner_log, "planner started with")
            result["lease_losses"] = await asyncio.to_thread(log_count, planner_log, "lost the lease")
            tap.close()
            await nc.close()
        finally:
            if profiler is not None:
                stop_profiler(profiler)
            await asyncio.to_thread(stack.stop)
    return result


async def state_size(nc: Any, name: str) -> int:
    try:
        kv = await nc.jetstream().key_value(subjects.ROLLOUTS_BUCKET)
        entry = await kv.get(subjects.rollout_key(NAMESPACE, name))
        return len(entry.value or b"")
    except Exception:
        return -1


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy not found: no profile (.venv/bin/pip install py-spy)", file=sys.stderr)
        return None
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--nonblocking",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profiler(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def human(result: dict[str, Any]) -> str:
    v2 = result.get("v2")
    if not v2:
        return (
            f"planner_scale: version 1 did not finish: {result['v1']['healthy']}/{result['rollouts']} healthy"
        )
    ok = "" if v2["finished"] else f" ({v2['outcome'].upper()}: {v2['healthy']}/{result['rollouts']} healthy)"
    return (
        f"{result['rollouts']} rollouts, 6-step canary: all Healthy on revision 2 in {v2['wall_s']:.1f} s{ok}; "
        f"{v2['transitions']} step transitions = {v2['transitions_per_s']:.0f}/s "
        f"({v2['events']} events = {v2['events_per_s']:.0f}/s); "
        f"v1 (create) {result['v1']['wall_s']:.1f} s; planner peak RSS {result['planner_peak_rss_mb']:.0f} MB "
        f"(targets: >= 1000 transitions/s, < 300 MB at 10k); planner lost its lease {result['lease_losses']} time(s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=int, default=10_000)
    parser.add_argument("--pause", default="1s", help="duration of the pause step (0s: skipped at once)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each version may take")
    parser.add_argument("--stall", type=float, default=90.0, help="give up after this long without events")
    parser.add_argument("--profile", default="", help="py-spy raw (collapsed stacks) output for version 2")
    parser.add_argument("--sample-every", type=float, default=2.0)
    parser.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args()
    res = asyncio.run(main(args))
    if args.profile and Path(args.profile).exists():
        res["profile"] = {"raw": args.profile, **summarize_profile(Path(args.profile))}
    print(json.dumps(res))
    print(human(res), file=sys.stderr)
    sys.exit(0 if res.get("v2", {}).get("finished") else 1)
