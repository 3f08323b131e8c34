"""A Prometheus server for the demo, when a `prometheus` binary is on the PATH: it scrapes the
traffic-shifter's /metrics every second so the demo's analysis can be an ordinary Prometheus query."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import aiohttp

from shared.embedded_server import free_port


class PrometheusProcess:
    def __init__(self, *, scrape_port: int, data_dir: Path, log_file: Path) -> None:
        self.binary = shutil.which("prometheus")
        self.scrape_port = scrape_port
        self.data_dir = data_dir
        self.log_file = log_file
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def available(self) -> bool:
        return self.binary is not None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        assert self.binary is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "- job_name: rollouts-traffic-shifter\n"
            f"  static_configs: [{{targets: ['127.0.0.1:{self.scrape_port}']}}]\n"
        )
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 (spawning does not block; readiness is awaited below)
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"prometheus exited with {self.proc.returncode}; see {self.log_file}")
                try:
                    async with session.get(f"{self.address}/-/ready") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if loop.time() > deadline:
                    raise RuntimeError(f"prometheus not ready within {timeout:g}s; see {self.log_file}")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
