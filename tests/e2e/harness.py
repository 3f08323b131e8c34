"""An end-to-end stack for tests: embedded nats-server, the four services as real processes, a CLI client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from services.cli.client import Client
from services.cli.processes import Stack, service_command, service_env, wait_ready
from shared.embedded_server import free_port
from shared.settings import Settings

NS = "default"


def template(name: str, *, admin_port: int, count: int = 2, interval: str = "0.3s") -> dict[str, Any]:
    """An AnalysisTemplate reading the canary service's 5xx percentage from the traffic-shifter."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {
            "args": [{"name": "service-name"}, {"name": "error-threshold", "value": "1"}],
            "metrics": [
                {
                    "name": "error-rate",
                    "interval": interval,
                    "count": count,
                    "successCondition": "result <= {{args.error-threshold}}",
                    "provider": {
                        "web": {
                            "url": f"http://127.0.0.1:{admin_port}/api/v1/services/{{{{args.service-name}}}}",
                            "jsonPath": "{$.errorPercent}",
                        }
                    },
                }
            ],
        },
    }


def rollout(
    name: str,
    *,
    version: int,
    port: int,
    steps: list[dict[str, Any]],
    replicas: int = 2,
    error_rate: float = 0.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    canary: dict[str, Any] = {
        "canaryService": f"{name}-canary",
        "stableService": f"{name}-stable",
        "scaleDownDelaySeconds": 1,
        "abortScaleDownDelaySeconds": 1,
        "trafficRouting": {"istio": {"virtualService": {"name": f"{name}-vsvc", "routes": ["primary"]}}},
        "steps": steps,
    }
    canary.update(extra or {})
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": f"{name}:{version}",
                            "command": ["python", "-m", "services.demo_app"],
                            "env": [
                                {"name": "VERSION", "value": str(version)},
                                {"name": "ERROR_RATE", "value": str(error_rate)},
                            ],
                            "ports": [{"containerPort": port}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}},
                        }
                    ]
                },
            },
            "strategy": {"canary": canary},
        },
    }


class Harness:
    def __init__(
        self,
        tmp: Path,
        *,
        analyzers: int = 1,
        planners: int = 1,
        platform: str = "local",
        kube_url: str | None = None,
        router: str | None = None,
    ) -> None:
        self.tmp = tmp
        self.settings = Settings(
            nats_url=f"nats://127.0.0.1:{free_port()}",
            state_dir=tmp / "state",
            admin_port=free_port(),
            kube_url=kube_url,
            router=router,
            drift_interval=2.0,
        )
        self.stack = Stack(
            self.settings,
            embedded_nats=True,
            log_dir=tmp / "logs",
            analyzers=analyzers,
            planners=planners,
            platform=platform,
        )
        self.client = Client(self.settings.nats_url)
        self.extra: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return self.settings.nats_url

    async def start(self) -> None:
        await asyncio.to_thread(self.stack.start)
        await wait_ready(self.url)
        await self.client.__aenter__()

    async def stop(self) -> None:
        await self.client.__aexit__()
        for p in self.extra:
            if p.poll() is None:
                p.kill()
                p.wait()
        await asyncio.to_thread(self.stack.stop)

    def logs(self) -> str:
        out = []
        for f in sorted((self.tmp / "logs").glob("*.log")):
            out.append(f"===== {f.name}\n" + f.read_text(errors="replace")[-4000:])
        return "\n".join(out)

    # --- services ---------------------------------------------------------------------------

    def kill(self, service: str) -> None:
        proc = self.stack.children[service]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def restart(self, service: str) -> None:
        log = open(self.tmp / "logs" / f"{service}.log", "ab")
        kind = service.rsplit("-", 1)[0] if service[-1].isdigit() else service
        self.stack.children[service] = subprocess.Popen(
            service_command(kind, self.settings, platform=self.stack.platform),
            env=service_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    # --- rollouts ---------------------------------------------------------------------------

    async def apply(self, doc: dict[str, Any]) -> Any:
        ns = "_cluster" if doc["kind"] == "ClusterAnalysisTemplate" else NS
        reply = await self.client.command(
            ns, doc["metadata"]["name"], "apply", json.dumps(doc).encode(), timeout=20
        )
        assert reply.ok, reply.error
        return reply

    async def status(self, name: str) -> dict[str, Any]:
        return dict((await self.client.document(NS, name))["status"])

    async def wait(
        self, name: str, cond: Callable[[dict[str, Any]], bool], *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Re-read the status on every event of the rollout until `cond` holds."""
        feed = await self.client.feed(NS, name, history=False)
        deadline = time.monotonic() + timeout
        st: dict[str, Any] = {}
        try:
            while True:
                try:
                    st = await self.status(name)
                except Exception:
                    st = {}
                if st and cond(st):
                    return st
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out waiting on {name}; last status {json.dumps(st)}\n{self.logs()}"
                    )
                await feed.get(timeout=min(left, 1.0))
        finally:
            await feed.close()

    async def cli(self, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        """Run the real `rollouts` CLI as a subprocess."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli.main",
            *args,
            "--nats",
            self.url,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NATS_URL": self.url},
        )
        out, err = await proc.communicate(stdin)
        return proc.returncode or 0, out.decode(), err.decode()


async def versions(port: int, n: int) -> dict[str, int]:
    """Send n requests through the proxy; count answers per app version."""
    counts: dict[str, int] = {}
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.get(f"http://127.0.0.1:{port}/") as r:
                body = await r.json()
                key = str(body.get("version"))
                counts[key] = counts.get(key, 0) + 1
    return counts
