"""Benchmark: analysis measurements per second with 1, 2 and 4 analyzer processes.

For each process count N: a fresh embedded nats-server, N processes of
`rollouts run analyzer --concurrency C` (the same C each), and a fake web metric answering
`{"value": 1}` after 20 ms, served by its own process(es) (`--server-procs`, SO_REUSEPORT) so
that it is not the bottleneck (its CPU use is reported). The bench publishes `--runs`
AnalysisStart work items directly on the work queue (no planner), each naming a template of one
web metric with `count: --count`, `interval: 0s`; it times from the first publish to the last
MeasurementTaken seen on `rollouts.feedback.analysis.bench.>` (core NATS subscription).

CPU seconds of the analyzers, nats-server and the fake metric server are read from /proc (Linux)
over the timed window, so a CPU-bound result shows as such: on a machine with K cores, N
analyzer processes cannot go faster than K cores' worth of Python.

    .venv/bin/python bench/analyzer_scaling.py [--processes 1 2 4] [--concurrency 32]
        [--runs 200] [--count 10] [--delay 0.02] [--server-procs 1]

Prints one JSON object on stdout and a human summary on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import nats

from services.cli.processes import service_command, service_env
from shared import subjects
from shared.embedded_server import EmbeddedNats, free_port
from shared.jetstream import connect
from shared.messages import AnalysisStart, MeasurementTaken, TemplateRef, encoder, feedback_decoder
from shared.settings import Settings

NS = "bench"
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from the first line of /proc/stat."""
    try:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


# --- the fake metric server (run as `--serve PORT`, in its own process) -------------------------


def serve(port: int, delay: float) -> None:
    from aiohttp import web

    async def handle(_: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.json_response({"value": 1})

    app = web.Application()
    app.router.add_get("/", handle)
    web.run_app(app, host="127.0.0.1", port=port, reuse_port=True, print=None, access_log=None)


def start_metric_servers(port: int, delay: float, procs: int) -> list[subprocess.Popen[bytes]]:
    cmd = [sys.executable, __file__, "--serve", str(port), "--delay", str(delay)]
    return [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for _ in range(procs)]


async def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


# --- one trial ----------------------------------------------------------------------------------


def template(metric_port: int, count: int) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "bench"},
        "spec": {
            "metrics": [
                {
                    "name": "m",
                    "count": count,
                    "interval": "0s",
                    "successCondition": "result == 1",
                    "provider": {"web": {"url": f"http://127.0.0.1:{metric_port}/", "jsonPath": "{$.value}"}},
                }
            ]
        },
    }


async def trial(
    processes: int,
    *,
    concurrency: int,
    runs: int,
    count: int,
    metric_port: int,
    server_pids: list[int],
    tmp: Path,
    delay_s: float,
) -> dict[str, Any]:
    settings = Settings(
        nats_url=f"nats://127.0.0.1:{free_port()}",
        state_dir=tmp / f"n{processes}",
        admin_port=free_port(),
        analyzer_concurrency=concurrency,
    )
    server = EmbeddedNats(url=settings.nats_url, store_dir=settings.state_dir / "js")
    server.start()
    analyzers: list[subprocess.Popen[bytes]] = []
    try:
        conn = await connect(settings.nats_url, name="bench")  # declares the streams and buckets
        kv = await conn.js.key_value(subjects.TEMPLATES_BUCKET)
        await kv.put(subjects.template_key(NS, "bench"), msgspec.json.encode(template(metric_port, count)))
        cmd = [*service_command("analyzer", settings), "--concurrency", str(concurrency)]
        log_dir = settings.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)

        def spawn(i: int) -> subprocess.Popen[bytes]:
            with open(log_dir / f"analyzer-{i + 1}.log", "ab") as out:
                return subprocess.Popen(cmd, env=service_env(settings), stdout=out, stderr=subprocess.STDOUT)

        for i in range(processes):
            analyzers.append(await asyncio.to_thread(spawn, i))
        # Ready when every process has a pull request waiting on the shared consumer.
        deadline = time.monotonic() + 30
        while True:
            try:
                info = await conn.js.consumer_info(subjects.ANALYSIS_WORK_STREAM, subjects.ANALYZER_CONSUMER)
                if info.num_waiting >= processes:
                    break
            except Exception:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in analyzers):
                raise RuntimeError(f"analyzers not ready; see {log_dir}")
            await asyncio.sleep(0.05)

        total = runs * count
        seen = 0
        per_worker: dict[str, int] = {}
        done = asyncio.Event()
        last = 0.0

        async def on_feedback(msg: Any) -> None:
            nonlocal seen, last
            ev = feedback_decoder.decode(msg.data)
            if isinstance(ev, MeasurementTaken):
                seen += 1
                per_worker[ev.worker] = per_worker.get(ev.worker, 0) + 1
                if seen >= total:
                    last = time.perf_counter()
                    done.set()

        nc = await nats.connect(settings.nats_url)
        await nc.subscribe(f"{subjects.PREFIX}.feedback.analysis.{NS}.>", cb=on_feedback)
        await nc.flush()

        watched = {"analyzers": [p.pid for p in analyzers], "nats": [server.proc.pid], "metric": server_pids}  # type: ignore[union-attr]
        cpu0 = {k: sum(cpu_seconds(p) for p in pids) for k, pids in watched.items()}
        busy0, total0 = machine_ticks()
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        for i in range(runs):
            start = AnalysisStart(
                namespace=NS,
                name=f"r{i}",
                run_id=f"bench-{uuid.uuid4().hex[:12]}",
                templates=(TemplateRef("bench"),),
            )
            await conn.js.publish(
                subjects.analysis_work("start", NS, f"r{i}"),
                encoder.encode(start),
                headers={"Nats-Msg-Id": f"an.{start.run_id}"},
            )
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = last - t0
        cpu = {k: sum(cpu_seconds(p) for p in pids) - cpu0[k] for k, pids in watched.items()}
        busy1, total1 = machine_ticks()
        await nc.close()
        await conn.close()
        return {
            "processes": processes,
            "concurrency": concurrency,
            "measurements": seen,
            "seconds": round(elapsed, 3),
            "per_second": round(seen / elapsed, 1),
            # CPU use over the timed window, in cores (1.0 = one core busy the whole time).
            "cpu_cores_analyzers": round(cpu["analyzers"] / elapsed, 2),
            "cpu_cores_nats": round(cpu["nats"] / elapsed, 2),
            "cpu_cores_metric_server": round(cpu["metric"] / elapsed, 2),
            "analyzer_cpu_ms_per_measurement": round(cpu["analyzers"] * 1000 / seen, 3),
            "per_worker": sorted(per_worker.values(), reverse=True),
            # The whole machine (every process, not only ours) over the window: 1.0 = all cores busy.
            "machine_busy": round((busy1 - busy0) / max(1, total1 - total0), 2),
            "loadavg_1m_before": round(load_before, 2),
            # What C slots per process allow if only the metric's latency counted.
            "latency_bound_per_second": round(processes * concurrency / (delay_s + 0.005)),
        }
    finally:
        for p in analyzers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in analyzers:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        server.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    metric_port = free_port()
    servers = start_metric_servers(metric_port, args.delay, args.server_procs)
    try:
        await wait_port(metric_port)
        results = []
        with tempfile.TemporaryDirectory(prefix="rollouts-bench-") as tmp:
            for n in args.processes:
                r = await trial(
                    n,
                    concurrency=args.concurrency,
                    runs=args.runs,
                    count=args.count,
                    metric_port=metric_port,
                    server_pids=[s.pid for s in servers],
                    tmp=Path(tmp),
                    delay_s=args.delay,
                )
                print(
                    f"  {n} analyzer process(es): {r['per_second']:.0f} measurements/s  {json.dumps(r)}",
                    file=sys.stderr,
                )
                results.append(r)
    finally:
        for s in servers:
            s.send_signal(signal.SIGINT)
        for s in servers:
            try:
                s.wait(timeout=10)
            except subprocess.TimeoutExpired:
                s.kill()
    by_n = {r["processes"]: r["per_second"] for r in results}
    lo, hi = min(by_n), max(by_n)
    return {
        "cores": os.cpu_count(),
        "metric_delay_ms": args.delay * 1000,
        "runs": args.runs,
        "count": args.count,
        "results": results,
        f"ratio_{hi}_over_{lo}": round(by_n[hi] / by_n[lo], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds the fake metric takes to answer")
    parser.add_argument("--server-procs", type=int, default=1, help="processes serving the fake metric")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.delay)
        sys.exit(0)
    result = asyncio.run(main(args))
    print(json.dumps(result))
    ratio_key = next(k for k in result if k.startswith("ratio_"))
    print(
        "measurements/s by analyzer processes: "
        + ", ".join(f"{r['processes']}: {r['per_second']:.0f}" for r in result["results"])
        + f"; {ratio_key} = {result[ratio_key]} on {result['cores']} cores",
        file=sys.stderr,
    )
