"""Running services: one service in this process (`rollouts run`), or all four as child processes (`rollouts up`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from shared import subjects
from shared.embedded_server import EmbeddedNats
from shared.jetstream import connect
from shared.settings import Settings, setup_logging
from shared.tasks import TaskGroup

log = logging.getLogger(__name__)

SERVICES = ("planner", "traffic-shifter", "analyzer", "scaler")


async def run_service(
    service: str, settings: Settings, *, platform: str = "local", router: str | None = None
) -> int:
    """Run one service until SIGINT/SIGTERM; 0 on a clean stop, 1 when a task died.

    platform: local (processes + built-in proxy), noop (everything confirmed at once: benchmarks),
    kubernetes (ReplicaSets, Services, Jobs, the Rollout resources' status). router: the
    traffic-shifter's provider, by default the platform's own (proxy / noop / kubernetes); `nginx`
    drives a local nginx instead of the built-in proxy."""
    setup_logging(service)
    router = router or settings.router
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    kube_api: Any = None
    if platform == "kubernetes" or router == "kubernetes":
        from shared.kube import KubeConfigError, api_client

        try:  # before NATS: a missing cluster config is a start-up error, not something to wait for
            kube_api = await api_client(settings)
        except KubeConfigError as e:
            log.error("%s", e)
            return 2
    conn = await connect(settings.nats_url, name=f"rollouts-{service}")
    group = TaskGroup(service)
    ready = asyncio.Event()
    if service == "planner":
        from services.planner.service import run_planner

        if kube_api is not None:
            from services.kube_bridge.bridge import BridgeSettings, KubeBridge

            bridge = KubeBridge(
                kube_api,
                conn,
                active=False,
                settings=BridgeSettings(
                    group=settings.api_group,
                    namespace=settings.watch_namespace,
                    status_qps=settings.kube_qps,
                    status_burst=settings.kube_burst,
                ),
            )
            group.spawn(run_planner(conn, stop, ready, on_leading=bridge.set_active), "main")
            group.spawn(bridge.run(stop), "kube-bridge")
        else:
            group.spawn(run_planner(conn, stop, ready), "main")
    elif service == "traffic-shifter":
        from services.traffic_shifter.service import run_traffic_shifter

        provider = _traffic_provider(router or _DEFAULT_ROUTER[platform], settings, kube_api)
        group.spawn(
            run_traffic_shifter(
                conn,
                provider,
                stop,
                ready,
                admin_host=settings.proxy_host,
                admin_port=settings.admin_port,
                drift_interval=settings.drift_interval,
            ),
            "main",
        )
    elif service == "analyzer":
        from services.analyzer.service import run_analyzer

        if kube_api is not None:
            from services.analyzer.kube_secrets import KubeSecretStore
            from services.analyzer.providers import job
            from services.analyzer.providers.kube_job import KubeJobRunner

            job.use_runner(KubeJobRunner(kube_api, None))
        group.spawn(
            run_analyzer(
                conn,
                stop,
                ready,
                concurrency=settings.analyzer_concurrency,
                ack_wait=settings.analyzer_ack_wait,
                secrets=KubeSecretStore(kube_api) if kube_api is not None else None,
            ),
            "main",
        )
    elif service == "scaler":
        from services.scaler.service import run_scaler

        group.spawn(
            run_scaler(
                conn,
                stop,
                ready,
                platform=platform,
                log_dir=settings.state_dir / "replicas",
                readiness_timeout=settings.readiness_timeout,
                kube_api=kube_api,
                api_group=settings.api_group,
            ),
            "main",
        )
    else:
        raise ValueError(f"unknown service {service!r}")

    async def pong(msg: Any) -> None:
        if msg.reply:
            await conn.nc.publish(msg.reply, service.encode())

    # Answer pings only once the service's subscriptions are in place.
    await asyncio.wait(
        {asyncio.ensure_future(ready.wait()), *group.tasks}, return_when=asyncio.FIRST_COMPLETED
    )
    await conn.nc.subscribe(subjects.ping(service), cb=pong)
    failed = asyncio.create_task(group.failed.wait())
    stopping = asyncio.create_task(stop.wait())
    main_done = asyncio.ensure_future(asyncio.gather(*group.tasks, return_exceptions=True))
    await asyncio.wait({failed, stopping, main_done}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    try:
        await asyncio.wait_for(asyncio.gather(*group.tasks, return_exceptions=True), timeout=30)
    except TimeoutError:
        await group.cancel_all()
    for t in (failed, stopping, main_done):
        t.cancel()
    with contextlib.suppress(Exception):
        await conn.close()
    if kube_api is not None:
        with contextlib.suppress(Exception):
            await kube_api.close()
    log.info("%s stopped", service)
    return 1 if group.failed.is_set() else 0


async def wait_ready(url: str, services: tuple[str, ...] = SERVICES, timeout: float = 30.0) -> None:
    """Until every named service answers its ping."""
    from urllib.parse import urlparse

    import nats

    parsed = urlparse(url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:  # a plain TCP probe first: nats-py retries a refused first connect for minutes
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=0.5
            )
            writer.close()
            break
        except (OSError, TimeoutError):
            if loop.time() > deadline:
                raise TimeoutError(f"no NATS server at {url} within {timeout:g}s") from None
            await asyncio.sleep(0.1)

    async def quiet(e: Exception) -> None:
        return None

    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0, error_cb=quiet)
    try:
        for service in services:
            while True:
                try:
                    await nc.request(subjects.ping(service), b"", timeout=0.5)
                    break
                except Exception:
                    if loop.time() > deadline:
                        raise TimeoutError(
                            f"service {service} did not become ready within {timeout:g}s"
                        ) from None
                    await asyncio.sleep(0.1)
    finally:
        await nc.close()


def service_command(service: str, settings: Settings, *, platform: str = "local") -> list[str]:
    return [
        sys.executable,
        "-m",
        "services.cli.main",
        "run",
        service,
        "--nats",
        settings.nats_url,
        "--platform",
        platform,
    ]


def service_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "NATS_URL": settings.nats_url,
            "ROLLOUTS_STATE_DIR": str(settings.state_dir),
            "ROLLOUTS_ADMIN_PORT": str(settings.admin_port),
            "ROLLOUTS_PROXY_HOST": settings.proxy_host,
            "ROLLOUTS_ANALYZER_CONCURRENCY": str(settings.analyzer_concurrency),
            "ROLLOUTS_ANALYZER_ACK_WAIT": str(settings.analyzer_ack_wait),
            "ROLLOUTS_API_GROUP": settings.api_group,
            "ROLLOUTS_DRIFT_INTERVAL": str(settings.drift_interval),
        }
    )
    if settings.kube_url:
        env["ROLLOUTS_KUBE_URL"] = settings.kube_url
    if settings.router:
        env["ROLLOUTS_ROUTER"] = settings.router
    if settings.watch_namespace:
        env["ROLLOUTS_WATCH_NAMESPACE"] = settings.watch_namespace
    return env


class Stack:
    """An optional embedded nats-server plus the four services as child processes."""

    def __init__(
        self,
        settings: Settings,
        *,
        embedded_nats: bool,
        platform: str = "local",
        log_dir: Path | None = None,
        analyzers: int = 1,
        planners: int = 1,
    ) -> None:
        self.settings = settings
        self.platform = platform
        self.log_dir = log_dir
        self.analyzers = analyzers
        self.planners = planners
        self.nats = (
            EmbeddedNats(
                url=settings.nats_url,
                store_dir=settings.state_dir / "jetstream",
                log_file=(log_dir / "nats-server.log") if log_dir else None,
            )
            if embedded_nats
            else None
        )
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        if self.nats is not None:
            self.nats.start()
        env = service_env(self.settings)
        names = (
            [f"planner-{i + 1}" if i else "planner" for i in range(self.planners)]
            + ["traffic-shifter", "scaler"]
            + [f"analyzer-{i + 1}" if i else "analyzer" for i in range(self.analyzers)]
        )
        for name in names:
            service = name.rsplit("-", 1)[0] if name[-1].isdigit() else name
            out: int | object = subprocess.DEVNULL
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                out = open(self.log_dir / f"{name}.log", "ab")
            self.children[name] = subprocess.Popen(
                service_command(service, self.settings, platform=self.platform),
                env=env,
                stdout=out,  # type: ignore[arg-type]
                stderr=subprocess.STDOUT if self.log_dir is not None else None,
            )

    def dead(self) -> list[str]:
        return [n for n, p in self.children.items() if p.poll() is not None]

    def stop(self) -> None:
        for p in self.children.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.children.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.nats is not None:
            self.nats.stop()


async def run_up(
    settings: Settings, *, embedded_nats: bool, platform: str, analyzers: int = 1, planners: int = 1
) -> int:
    setup_logging("up")
    stack = Stack(
        settings, embedded_nats=embedded_nats, platform=platform, analyzers=analyzers, planners=planners
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(stack.start)
    log.info(
        "running %s%s; NATS at %s; Ctrl-C stops everything",
        ", ".join(stack.children),
        " and an embedded nats-server" if embedded_nats else "",
        settings.nats_url,
    )
    code = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        dead = stack.dead()
        if dead:
            log.error("service(s) exited: %s; stopping everything", ", ".join(dead))
            code = 1
            break
    await asyncio.to_thread(stack.stop)
    return code


_DEFAULT_ROUTER = {"local": "proxy", "noop": "noop", "kubernetes": "kubernetes"}


def _traffic_provider(router: str, settings: Settings, kube_api: Any) -> Any:
    if router == "noop":
        from services.traffic_shifter.providers import NoopProvider

        return NoopProvider()
    if router == "nginx":
        from services.traffic_shifter.nginx_provider import NginxProvider

        binary = NginxProvider.available()
        if binary is None:
            raise SystemExit("--router nginx: no nginx binary on the PATH (apt-get install nginx)")
        return NginxProvider(
            state_dir=settings.state_dir / "nginx", host=settings.proxy_host, nginx_binary=binary
        )
    if router == "kubernetes":
        from services.traffic_shifter.kube.provider import KubernetesTrafficProvider

        return KubernetesTrafficProvider(kube_api, rollout_group=settings.api_group)
    from services.traffic_shifter.providers import LocalProxyProvider

    return LocalProxyProvider(host=settings.proxy_host)
