"""Traffic providers: the one small interface every traffic router adapter implements."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, runtime_checkable

from services.traffic_shifter.proxy import Backend, ProxyStats, WeightedProxy
from shared.messages import Endpoints, TrafficDesired

log = logging.getLogger(__name__)


PREVIEW_SUFFIX = "#preview"  # the blue-green preview listener's key: "<namespace>/<name>#preview"


class NotReady(Exception):
    """The router cannot honour the weights yet (e.g. no endpoints for a revision); retried on change."""


def refuse_additional(desired: TrafficDesired, router: str) -> None:
    """Routers that cannot split to an experiment's replica sets say so (reported to the planner as
    a traffic error, which the rollout shows) instead of confirming weights they do not serve."""
    if desired.additional:
        names = ", ".join(d.name or d.revision for d in desired.additional)
        raise ValueError(
            f"{router}: experiment traffic weights (templates {names}) are served by the built-in "
            "proxy and nginx only (--router proxy|nginx)"
        )


class TrafficProvider(Protocol):
    async def apply(self, desired: TrafficDesired, endpoints: Endpoints | None) -> None:
        """Apply the weights; return only once the router serves them; raise NotReady to wait."""
        ...

    def stats(self) -> dict[str, ProxyStats]: ...

    async def close(self) -> None: ...


@runtime_checkable
class DriftChecker(Protocol):
    """A router whose live configuration can be compared with the desired one (Kubernetes, nginx)."""

    async def check_drift(self) -> int:
        """Put back whatever was changed by hand; how many objects (or True) were corrected."""
        ...


@runtime_checkable
class DriftWatcher(Protocol):
    """A router that can be watched for hand edits, and corrects them as they happen (Kubernetes)."""

    async def watch_drift(self, stop: asyncio.Event) -> None: ...


class NoopProvider:
    """Confirms every weight at once: for benchmarks of the planner and for dry runs."""

    async def apply(self, desired: TrafficDesired, endpoints: Endpoints | None) -> None:
        return None

    def stats(self) -> dict[str, ProxyStats]:
        return {}

    async def close(self) -> None:
        return None


class LocalProxyProvider:
    """The built-in weighted reverse proxy: one listener per rollout at the template's containerPort."""

    def __init__(self, *, host: str) -> None:
        self.host = host
        self.proxies: dict[str, WeightedProxy] = {}

    async def apply(self, desired: TrafficDesired, endpoints: Endpoints | None) -> None:
        key = f"{desired.namespace}/{desired.name}"
        if desired.stable_revision is None and desired.canary_revision is None:
            # The rollout was deleted: stop serving it.
            for k in (key, f"{key}{PREVIEW_SUFFIX}"):
                if k in self.proxies:
                    await self.proxies.pop(k).stop()
            return
        if desired.port is None:
            raise ValueError(
                "spec.template.spec.containers[0].ports: local mode serves a rollout on its first containerPort; none is declared"
            )
        revisions = endpoints.revisions if endpoints else {}
        stable = _backend(desired.stable_revision, revisions)
        canary = _backend(desired.canary_revision, revisions)
        weight = desired.canary_weight
        if weight < 100 and desired.stable_revision and stable is None:
            raise NotReady(f"no ready endpoints for the stable revision {desired.stable_revision}")
        if weight > 0 and canary is None:
            raise NotReady(f"no ready endpoints for the canary revision {desired.canary_revision}")
        if (desired.header_routes or desired.mirror_routes) and desired.canary_revision and canary is None:
            # Managed routes target the canary; confirming them before it can serve would be a lie.
            raise NotReady(
                f"no ready endpoints for the canary revision {desired.canary_revision} (managed routes)"
            )
        additional = []
        for d in desired.additional:
            backend = _backend(d.revision, revisions)
            if backend is None:
                raise NotReady(f"no ready endpoints for the experiment's replica set {d.revision}")
            additional.append((d.name or d.revision, backend, d.weight))
        preview = _backend(desired.preview_revision, revisions)
        if desired.preview_revision and (preview is None or desired.preview_port is None):
            raise NotReady(
                f"no ready endpoints (or port) for the preview revision {desired.preview_revision}"
            )
        proxy = await self._listener(key, desired.port)
        proxy.set_backends(
            stable=stable,
            canary=canary,
            canary_weight=weight,
            header_routes=desired.header_routes,
            mirror_routes=desired.mirror_routes,
            additional=tuple(additional),
        )
        preview_key = f"{key}{PREVIEW_SUFFIX}"
        if preview is not None and desired.preview_port is not None:
            previewing = await self._listener(preview_key, desired.preview_port)
            previewing.set_backends(stable=preview, canary=None, canary_weight=0)
        elif preview_key in self.proxies:
            await self.proxies.pop(preview_key).stop()

    async def _listener(self, key: str, port: int) -> WeightedProxy:
        proxy = self.proxies.get(key)
        if proxy is None or proxy.port != port:
            if proxy is not None:
                await proxy.stop()
            proxy = WeightedProxy(host=self.host, port=port, name=key)
            await proxy.start()
            self.proxies[key] = proxy
            log.info("%s: serving on %s", key, proxy.url)
        return proxy

    def stats(self) -> dict[str, ProxyStats]:
        return {key: p.stats() for key, p in self.proxies.items()}

    async def close(self) -> None:
        for p in self.proxies.values():
            await p.stop()
        self.proxies.clear()


def _backend(revision: str | None, revisions: dict[str, list[str]]) -> Backend | None:
    if not revision:
        return None
    addresses = revisions.get(revision) or []
    if not addresses:
        return None
    return Backend(revision=revision, addresses=tuple(addresses))
