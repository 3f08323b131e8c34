"""KubernetesTrafficProvider: applies desired weights to Istio, NGINX Ingress, Gateway API and SMI objects.

The I/O shell around the pure routers of this package. For every object a rollout's trafficRouting
names it reads the live object, computes the object to store, and writes only when they differ:
a PUT carrying the resourceVersion it read (a create for the objects it owns: the canary Ingress,
the TrafficSplit), so a write that races another writer fails with 409 Conflict and is redone from
a fresh read. Custom resources reject strategic-merge patches and kubernetes_asyncio picks the
patch content type from the body's Python type, so whole-object writes also keep us clear of that
trap. ``apply`` returns only after every write succeeded; that is when the shifter confirms.

Drift: the last desired state of every rollout is kept; ``check_drift`` re-reads every managed
object and re-applies where a hand edit changed it; ``watch_drift`` does the same as soon as a
watch reports a change. The caller owns (and closes) the ApiClient.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable
from typing import Any, cast

import aiohttp
import msgspec
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from services.traffic_shifter.kube import (
    ROLLOUT_API_VERSION,
    ObjectNotFound,
    RouterError,
    gateway_api,
    istio,
    nginx_ingress,
    smi,
)
from services.traffic_shifter.providers import refuse_additional
from services.traffic_shifter.proxy import ProxyStats
from shared.messages import Endpoints, TrafficDesired
from shared.specs.rollouts import RolloutTrafficRouting, SMITrafficRouting

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ROUTING_FIELD = "spec.strategy.canary.trafficRouting"
UNSUPPORTED = ("alb", "ambassador", "app_mesh", "traefik", "apisix")
MAX_ATTEMPTS = 5  # writes redone after a 409 Conflict before giving up (each from a fresh read)
WATCH_SECONDS = 60  # a watch is re-opened (from its last resourceVersion) after this long
WATCH_RETRY_SECONDS = 1.0  # pause before re-opening a watch that failed


class Kind(msgspec.Struct, frozen=True):
    """One API resource the routers write, e.g. networking.istio.io/v1alpha3 virtualservices."""

    label: str  # how errors name it: "istio VirtualService"
    group: str
    version: str
    plural: str


class ManagedObject(msgspec.Struct, frozen=True):
    kind: Kind
    namespace: str
    name: str
    field: str  # the spec field that names it, for errors

    def __str__(self) -> str:
        return f"{self.kind.label} {self.namespace}/{self.name}"


Compute = Callable[[Obj | None], Obj]


class KubernetesTrafficProvider:
    """A TrafficProvider (see services.traffic_shifter.providers) for Kubernetes traffic routers."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        istio_version: str = "v1alpha3",  # Argo's default Istio API version
        gateway_version: str = "v1",  # the gatewayAPI plugin's client (GatewayV1)
        smi_version: str = smi.DEFAULT_VERSION,
        max_attempts: int = MAX_ATTEMPTS,
        watch_seconds: int = WATCH_SECONDS,
        rollout_group: str = "argoproj.io",  # ROLLOUTS_API_GROUP: where the Rollout objects live
    ) -> None:
        self.api_client = api_client
        self.rollout_api_version = f"{rollout_group}/{ROLLOUT_API_VERSION.split('/')[1]}"
        self.custom = client.CustomObjectsApi(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.virtual_services = Kind(
            "istio VirtualService", "networking.istio.io", istio_version, "virtualservices"
        )
        self.destination_rules = Kind(
            "istio DestinationRule", "networking.istio.io", istio_version, "destinationrules"
        )
        self.ingresses = Kind("nginx Ingress", "networking.k8s.io", "v1", "ingresses")
        self.http_routes = Kind(
            "Gateway API HTTPRoute", "gateway.networking.k8s.io", gateway_version, "httproutes"
        )
        self.traffic_splits = Kind("SMI TrafficSplit", smi.GROUP, smi_version, "trafficsplits")
        self.smi_version = smi_version
        self.max_attempts = max_attempts
        self.watch_seconds = watch_seconds
        self.desired: dict[str, TrafficDesired] = {}
        self.managed: dict[str, tuple[ManagedObject, ...]] = {}  # rollout key -> objects it writes
        self._locks: dict[str, asyncio.Lock] = {}
        self._managed_changed = asyncio.Event()

    # --- TrafficProvider -----------------------------------------------------------------------------

    async def apply(self, desired: TrafficDesired, endpoints: Endpoints | None) -> None:
        refuse_additional(desired, "Kubernetes traffic routing")
        key = f"{desired.namespace}/{desired.name}"
        if not desired.routing:
            self.desired.pop(key, None)
            self._set_managed(key, ())
            return
        self.desired[key] = desired
        async with self._lock(key):
            await self._reconcile(desired)

    def stats(self) -> dict[str, ProxyStats]:
        return {}

    async def close(self) -> None:
        self.desired.clear()
        self._set_managed_all({})

    # --- drift ---------------------------------------------------------------------------------------

    async def check_drift(self) -> int:
        """Re-read every managed object and re-apply the last desired state; returns how many objects were rewritten."""
        corrected = 0
        for key in list(self.desired):
            corrected += await self._resync(key)
        return corrected

    async def watch_drift(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: watch the managed objects' kinds and re-apply as soon as one changes."""
        watchers: dict[tuple[Kind, str], asyncio.Task[None]] = {}
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                wanted = {(o.kind, o.namespace) for objects in self.managed.values() for o in objects}
                for target in wanted - watchers.keys():
                    watchers[target] = asyncio.create_task(self._watch(*target), name=f"watch {target}")
                for target in watchers.keys() - wanted:
                    watchers.pop(target).cancel()
                self._managed_changed.clear()
                changed = asyncio.create_task(self._managed_changed.wait())
                await asyncio.wait(
                    {stopping, changed, *watchers.values()}, return_when=asyncio.FIRST_COMPLETED
                )
                changed.cancel()
                for target, task in list(watchers.items()):
                    if task.done():  # a watch died: log it, pause, and let the loop open it again
                        watchers.pop(target)
                        if not task.cancelled() and task.exception() is not None:
                            log.warning(
                                "watch of %s in %s failed: %r", target[0].label, target[1], task.exception()
                            )
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(asyncio.shield(stopping), WATCH_RETRY_SECONDS)
        finally:
            stopping.cancel()
            for task in watchers.values():
                task.cancel()
            await asyncio.gather(*watchers.values(), return_exceptions=True)

    async def _watch(self, kind: Kind, namespace: str) -> None:
        resource_version: str | None = None
        while True:
            if resource_version is None:
                listed = await self._list(kind, namespace)
                resource_version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
                # Changes made while no watch was open are only visible by comparing.
                for key in self._owners(kind, namespace, None):
                    await self._resync(key)
            try:
                async with watch.Watch().stream(
                    *self._list_call(kind, namespace),
                    resource_version=resource_version,
                    timeout_seconds=self.watch_seconds,
                ) as stream:
                    async for event in stream:
                        obj = event["raw_object"]
                        meta = obj.get("metadata") or {}
                        resource_version = meta.get("resourceVersion") or resource_version
                        for key in self._owners(kind, namespace, meta.get("name")):
                            await self._resync(key)
            except ApiException as e:
                if e.status != 410:
                    raise
                resource_version = None  # history compacted: list again

    def _owners(self, kind: Kind, namespace: str, name: str | None) -> list[str]:
        return [
            key
            for key, objects in self.managed.items()
            if any(o.kind == kind and o.namespace == namespace and name in (None, o.name) for o in objects)
        ]

    async def _resync(self, key: str) -> int:
        """Re-apply a rollout's last desired state; errors are logged (the next change or check retries)."""
        desired = self.desired.get(key)
        if desired is None:
            return 0
        async with self._lock(key):
            if self.desired.get(key) is not desired:
                return 0  # superseded while we waited; apply() took care of it
            try:
                written = await self._reconcile(desired)
            except (RouterError, aiohttp.ClientError, TimeoutError) as e:
                log.warning("%s: re-applying weight %d failed: %s", key, desired.canary_weight, e)
                return 0
        if written:
            log.info("%s: drift corrected (%d object(s) rewritten)", key, written)
        return written

    # --- reconcile -----------------------------------------------------------------------------------

    async def _reconcile(self, desired: TrafficDesired) -> int:
        routing = _routing(desired)
        key = f"{desired.namespace}/{desired.name}"
        for router in UNSUPPORTED:
            if getattr(routing, router) is not None:
                raise RouterError(
                    f"{ROUTING_FIELD}.{_camel(router)}: not supported by the Kubernetes traffic provider"
                )
        for plugin in routing.plugins or {}:
            if plugin != gateway_api.PLUGIN:
                raise RouterError(
                    f"{ROUTING_FIELD}.plugins.{plugin}: not supported (only {gateway_api.PLUGIN})"
                )
        if not desired.canary_service or not desired.stable_service:
            raise RouterError(
                f"rollout {key}: spec.strategy.canary.canaryService and stableService are required for traffic routing"
            )
        objects: list[ManagedObject] = []
        written = 0
        owner_uid = await self._owner_uid(desired) if (routing.nginx or routing.smi) else None
        if routing.istio is not None:
            written += await self._istio(desired, routing, objects)
        if routing.nginx is not None:
            written += await self._nginx(desired, routing, owner_uid, objects)
        if routing.smi is not None:
            written += await self._smi(desired, routing.smi, owner_uid, objects)
        if routing.plugins and gateway_api.PLUGIN in routing.plugins:
            written += await self._gateway(desired, routing, objects)
        self._set_managed(key, tuple(objects))
        return written

    async def _istio(
        self, desired: TrafficDesired, routing: RolloutTrafficRouting, objects: list[ManagedObject]
    ) -> int:
        spec = routing.istio
        assert spec is not None
        field = f"{ROUTING_FIELD}.istio"
        written = 0
        host = ""
        rule = spec.destination_rule
        if rule is not None:
            ref = ManagedObject(
                self.destination_rules, desired.namespace, rule.name, f"{field}.destinationRule.name"
            )
            compute = functools.partial(
                _required,
                ref,
                functools.partial(
                    istio.destination_rule,
                    spec=rule,
                    rollout=desired.name,
                    canary_hash=desired.canary_revision or desired.stable_revision,
                    stable_hash=desired.stable_revision,
                ),
            )
            stored, changed = await self._converge(desired, ref, compute)
            objects.append(ref)
            written += changed
            host = str((stored.get("spec") or {}).get("host") or "")
        want = istio.IstioWeights(
            canary_service=desired.canary_service or "",
            stable_service=desired.stable_service or "",
            canary_weight=desired.canary_weight,
            canary_subset=rule.canary_subset_name if rule else "",
            stable_subset=rule.stable_subset_name if rule else "",
            destination_host=host,
            managed_routes=tuple(r.name for r in routing.managed_routes or ()),
            header_routes=desired.header_routes,
            mirror_routes=desired.mirror_routes,
        )
        if spec.virtual_services:
            services = [(vs, f"{field}.virtualServices[{i}]") for i, vs in enumerate(spec.virtual_services)]
        elif spec.virtual_service is not None:
            services = [(spec.virtual_service, f"{field}.virtualService")]
        else:
            raise RouterError(f"{field}: virtualService or virtualServices is required")
        for vs, vs_field in services:
            namespace, name = istio.virtual_service_address(vs.name, desired.namespace)
            ref = ManagedObject(self.virtual_services, namespace, name, f"{vs_field}.name")
            compute = functools.partial(
                _required, ref, functools.partial(istio.virtual_service, spec=vs, want=want, field=vs_field)
            )
            written += (await self._converge(desired, ref, compute))[1]
            objects.append(ref)
        return written

    async def _nginx(
        self,
        desired: TrafficDesired,
        routing: RolloutTrafficRouting,
        owner_uid: str | None,
        objects: list[ManagedObject],
    ) -> int:
        spec = routing.nginx
        assert spec is not None
        want = nginx_ingress.NginxWeights(
            rollout=desired.name,
            canary_service=desired.canary_service or "",
            stable_service=desired.stable_service or "",
            canary_weight=desired.canary_weight,
            max_weight=routing.max_traffic_weight,
            header_routes=desired.header_routes,
            owner_uid=owner_uid,
            owner_api_version=self.rollout_api_version,
        )
        written = 0
        for stable_name, field in nginx_ingress.stable_ingresses(spec):
            stable_ref = ManagedObject(self.ingresses, desired.namespace, stable_name, field)
            stable = await self._get(stable_ref)
            if stable is None:
                raise ObjectNotFound(f"{stable_ref} not found ({field})")
            canary_name = nginx_ingress.canary_ingress_name(desired.name, stable_name)
            ref = ManagedObject(
                self.ingresses, desired.namespace, canary_name, f"{field} (its canary Ingress)"
            )

            def compute(live: Obj | None, stable: Obj = stable) -> Obj:
                return nginx_ingress.canary_ingress(stable, live, spec, want)

            written += (await self._converge(desired, ref, compute))[1]
            objects.extend((stable_ref, ref))
        return written

    async def _smi(
        self,
        desired: TrafficDesired,
        spec: SMITrafficRouting,
        owner_uid: str | None,
        objects: list[ManagedObject],
    ) -> int:
        want = smi.SmiWeights(
            rollout=desired.name,
            namespace=desired.namespace,
            canary_service=desired.canary_service or "",
            stable_service=desired.stable_service or "",
            canary_weight=desired.canary_weight,
            owner_uid=owner_uid,
            owner_api_version=self.rollout_api_version,
        )
        name = smi.traffic_split_name(spec, desired.name)
        ref = ManagedObject(
            self.traffic_splits, desired.namespace, name, f"{ROUTING_FIELD}.smi.trafficSplitName"
        )
        compute = functools.partial(smi.traffic_split, spec=spec, want=want, api_version=self.smi_version)
        objects.append(ref)
        return (await self._converge(desired, ref, compute))[1]

    async def _gateway(
        self, desired: TrafficDesired, routing: RolloutTrafficRouting, objects: list[ManagedObject]
    ) -> int:
        config = gateway_api.gateway_config((routing.plugins or {})[gateway_api.PLUGIN])
        want = gateway_api.GatewayWeights(
            canary_service=desired.canary_service or "",
            stable_service=desired.stable_service or "",
            canary_weight=desired.canary_weight,
            managed_routes=tuple(r.name for r in routing.managed_routes or ()),
            header_routes=desired.header_routes,
        )
        written = 0
        for name, use_header_routes, field in gateway_api.http_routes(config):
            ref = ManagedObject(self.http_routes, config.namespace or desired.namespace, name, field)
            compute = functools.partial(
                _required,
                ref,
                functools.partial(gateway_api.http_route, want=want, use_header_routes=use_header_routes),
            )
            written += (await self._converge(desired, ref, compute))[1]
            objects.append(ref)
        return written

    async def _converge(
        self, desired: TrafficDesired, ref: ManagedObject, compute: Compute
    ) -> tuple[Obj, bool]:
        """Read, compute, write if different; redo from a fresh read on 409. Returns (stored object, written)."""
        key = f"{desired.namespace}/{desired.name}"
        for attempt in range(1, self.max_attempts + 1):
            live = await self._get(ref)
            new = compute(live)
            if new == live:
                return new, False
            try:
                if live is None:
                    await self._create(ref, new)
                else:
                    await self._replace(ref, new)
            except ApiException as e:
                if e.status == 409 or (e.status == 404 and live is not None):
                    log.info(
                        "%s: %s: write %d conflicted (%s), reading it again", key, ref, attempt, _message(e)
                    )
                    continue
                raise _api_error(ref, e) from e
            log.info(
                "%s: %s %s (canary weight %d)",
                key,
                ref,
                "created" if live is None else "updated",
                desired.canary_weight,
            )
            return new, True
        raise RouterError(
            f"{ref}: still conflicting after {self.max_attempts} writes; someone else keeps writing it"
        )

    # --- API calls -----------------------------------------------------------------------------------

    def _is_ingress(self, kind: Kind) -> bool:
        return kind == self.ingresses

    async def _get(self, ref: ManagedObject) -> Obj | None:
        try:
            if self._is_ingress(ref.kind):
                model = await self.networking.read_namespaced_ingress(ref.name, ref.namespace)
                obj: Obj = self.api_client.sanitize_for_serialization(model)
                return obj
            found: Obj = await self.custom.get_namespaced_custom_object(
                ref.kind.group, ref.kind.version, ref.namespace, ref.kind.plural, ref.name
            )
            return found
        except ApiException as e:
            if e.status == 404:
                return None
            raise _api_error(ref, e) from e

    async def _create(self, ref: ManagedObject, body: Obj) -> None:
        if self._is_ingress(ref.kind):
            # The typed method takes a V1Ingress; a dict is sent as is, without a lossy model round trip.
            await self.networking.create_namespaced_ingress(ref.namespace, cast(Any, body))
        else:
            await self.custom.create_namespaced_custom_object(
                ref.kind.group, ref.kind.version, ref.namespace, ref.kind.plural, body
            )

    async def _replace(self, ref: ManagedObject, body: Obj) -> None:
        if self._is_ingress(ref.kind):
            await self.networking.replace_namespaced_ingress(ref.name, ref.namespace, cast(Any, body))
        else:
            await self.custom.replace_namespaced_custom_object(
                ref.kind.group, ref.kind.version, ref.namespace, ref.kind.plural, ref.name, body
            )

    def _list_call(self, kind: Kind, namespace: str) -> tuple[Any, ...]:
        if self._is_ingress(kind):
            return (self.networking.list_namespaced_ingress, namespace)
        return (self.custom.list_namespaced_custom_object, kind.group, kind.version, namespace, kind.plural)

    async def _list(self, kind: Kind, namespace: str) -> Obj:
        if self._is_ingress(kind):
            listed: Obj = self.api_client.sanitize_for_serialization(
                await self.networking.list_namespaced_ingress(namespace)
            )
            return listed
        found: Obj = await self.custom.list_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural
        )
        return found

    async def _owner_uid(self, desired: TrafficDesired) -> str | None:
        """The Rollout's uid, for ownerReferences; None when the Rollout is not stored in this cluster."""
        group, version = self.rollout_api_version.split("/")
        try:
            rollout = await self.custom.get_namespaced_custom_object(
                group, version, desired.namespace, "rollouts", desired.name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise RouterError(
                f"Rollout {desired.namespace}/{desired.name}: reading its uid failed: {_message(e)}"
            ) from e
        uid = (rollout.get("metadata") or {}).get("uid")
        return str(uid) if uid else None

    # --- bookkeeping ---------------------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _set_managed(self, key: str, objects: tuple[ManagedObject, ...]) -> None:
        managed = dict(self.managed)
        if objects:
            managed[key] = objects
        else:
            managed.pop(key, None)
        self._set_managed_all(managed)

    def _set_managed_all(self, managed: dict[str, tuple[ManagedObject, ...]]) -> None:
        if managed != self.managed:
            self.managed = managed
            self._managed_changed.set()


def _required(ref: ManagedObject, compute: Callable[[Obj], Obj], live: Obj | None) -> Obj:
    """For objects the rollout names but does not own: a missing one is an error naming the field."""
    if live is None:
        raise ObjectNotFound(f"{ref} not found ({ref.field})")
    return compute(live)


def _routing(desired: TrafficDesired) -> RolloutTrafficRouting:
    try:
        return msgspec.convert(desired.routing, RolloutTrafficRouting)
    except msgspec.ValidationError as e:
        raise RouterError(f"{ROUTING_FIELD}: {e}") from None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _message(e: ApiException) -> str:
    try:
        body = json.loads(e.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"{e.status} {e.reason}"


def _api_error(ref: ManagedObject, e: ApiException) -> RouterError:
    return RouterError(f"{ref}: the Kubernetes API answered {e.status}: {_message(e)}")


__all__ = ["Kind", "KubernetesTrafficProvider", "ManagedObject"]
