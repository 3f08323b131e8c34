"""Settings shared by every service, loaded once at the entry point from the environment and flags."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class Settings:
    nats_url: str = DEFAULT_NATS_URL
    # Where local mode keeps replica logs and the embedded server's store.
    state_dir: Path = field(default_factory=lambda: Path(".rollouts-state"))
    # Host the traffic-shifter's per-rollout proxies listen on (local mode).
    proxy_host: str = "127.0.0.1"
    # Port of the traffic-shifter's admin/metrics HTTP server; 0 picks a free one.
    admin_port: int = 9465
    # Analysis: measurements one analyzer process takes at once.
    analyzer_concurrency: int = 16
    # Analysis: seconds a work item may stay unacknowledged before JetStream redelivers it.
    analyzer_ack_wait: float = 30.0
    # Scaler: seconds a new replica has to become ready before it counts as failed.
    readiness_timeout: float = 60.0
    # Kubernetes mode: the API group of the Rollout resources (argoproj.io, or e.g. rollouts.nats.io
    # next to Argo Rollouts), the one namespace to watch (None: all), and the API server's URL
    # (None: in-cluster config, else ~/.kube/config).
    api_group: str = "argoproj.io"
    watch_namespace: str | None = None
    kube_url: str | None = None
    # Kubernetes mode: status writes per second to the API server, and the burst above it.
    kube_qps: float = 40.0
    kube_burst: int = 80
    # Traffic-shifter: seconds between checks that the router still has the desired weights.
    drift_interval: float = 30.0
    # Traffic-shifter: proxy | nginx | kubernetes | noop (None: the platform's own).
    router: str | None = None

    @staticmethod
    def from_env(**overrides: object) -> Settings:
        env = os.environ
        values: dict[str, object] = {
            "nats_url": env.get("NATS_URL", DEFAULT_NATS_URL),
            "state_dir": Path(env.get("ROLLOUTS_STATE_DIR", ".rollouts-state")),
            "proxy_host": env.get("ROLLOUTS_PROXY_HOST", "127.0.0.1"),
            "admin_port": int(env.get("ROLLOUTS_ADMIN_PORT", "9465")),
            "analyzer_concurrency": int(env.get("ROLLOUTS_ANALYZER_CONCURRENCY", "16")),
            "analyzer_ack_wait": float(env.get("ROLLOUTS_ANALYZER_ACK_WAIT", "30")),
            "readiness_timeout": float(env.get("ROLLOUTS_READINESS_TIMEOUT", "60")),
            "api_group": env.get("ROLLOUTS_API_GROUP", "argoproj.io"),
            "watch_namespace": env.get("ROLLOUTS_WATCH_NAMESPACE") or None,
            "kube_url": env.get("ROLLOUTS_KUBE_URL") or None,
            "drift_interval": float(env.get("ROLLOUTS_DRIFT_INTERVAL", "30")),
            "router": env.get("ROLLOUTS_ROUTER") or None,
            "kube_qps": float(env.get("ROLLOUTS_KUBE_QPS", "40")),
            "kube_burst": int(env.get("ROLLOUTS_KUBE_BURST", "80")),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return Settings(**values)  # type: ignore[arg-type]


def setup_logging(service: str, level: str | None = None) -> None:
    """One line per record with the service name; services never print."""
    lvl = (level or os.environ.get("ROLLOUTS_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=lvl,
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("nats").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
