"""The bridge's I/O shell: Argo resources watched in Kubernetes become planner commands over NATS, and
the planner's state (its KV bucket) is written back as each Rollout's Argo status.

Rollouts, AnalysisTemplates and ClusterAnalysisTemplates are watched (ResumableWatch); each change goes
through translate.commands() and every command is a NATS request on the command subject, as the CLI
sends it, with a Nats-Msg-Id so that replays are deduplicated. A spec the planner rejects shows as
phase Degraded with an InvalidSpec condition. The status subresource is merge-patched only when the
computed status changed; the bridge remembers the resourceVersions its own writes produced so that
they are never read back as a user's command. Only the leader planner's bridge is active.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
from kubernetes_asyncio.client import ApiClient, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from services.kube_bridge import translate
from services.kube_bridge.ratelimit import TokenBucket
from services.kube_bridge.status import merge_patch
from services.kube_bridge.translate import (
    ANALYSIS_TEMPLATE,
    CLUSTER_ANALYSIS_TEMPLATE,
    ROLLOUT,
    BridgeCommand,
    TranslateError,
)
from services.kube_bridge.watch import (
    DELETED,
    ResumableWatch,
    WatchSettings,
    from_api_exception,
)
from services.planner.service import state_decoder
from services.planner.state import RolloutState
from services.planner.status import argo_status
from shared import subjects
from shared.jetstream import Connection
from shared.messages import CommandReply, reply_decoder

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
PLURALS = {
    ROLLOUT: "rollouts",
    ANALYSIS_TEMPLATE: "analysistemplates",
    CLUSTER_ANALYSIS_TEMPLATE: "clusteranalysistemplates",
}
OWN_WRITES_KEPT = 32  # resourceVersions of our own status writes remembered per rollout

Key = tuple[str, str]  # (namespace token, name), as in the command subjects


class BridgeError(RuntimeError):
    """One of the bridge's long-lived tasks died: the bridge stops rather than limp on."""


@dataclass(frozen=True)
class BridgeSettings:
    # The API group the Argo kinds are served under (a renamed copy of Argo's CRDs works too).
    group: str = "argoproj.io"
    version: str = "v1alpha1"
    # The namespace whose Rollouts and AnalysisTemplates are watched; None: every namespace.
    namespace: str | None = None
    # Seconds to wait for the planner's answer to one command (the CLI's default); a command that
    # gets none is still stored in the commands stream and takes effect when a planner reads it.
    request_timeout: float = 10.0
    # Seconds before a failed status write is tried again.
    status_retry: float = 2.0
    # Status writes per second to the API server across all rollouts, and the burst above it
    # (Argo's controller defaults: --qps 40 --burst 80); each rollout's changes are folded meanwhile.
    status_qps: float = 40.0
    status_burst: int = 80
    watch: WatchSettings = field(default_factory=WatchSettings)


@dataclass
class _Rollout:
    """What the bridge knows of one Rollout resource."""

    obj: dict[str, Any] | None = None  # the last version seen
    written: dict[str, Any] | None = None  # the last status written (None: not known, diff against obj)
    own: deque[str] = field(default_factory=lambda: deque(maxlen=OWN_WRITES_KEPT))
    unsure: dict[str, Any] | None = None  # a status write whose outcome is unknown (connection lost)
    observed: int | None = None  # the metadata.generation the planner took (or rejected)
    invalid: str | None = None  # why the planner rejected that generation
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class KubeBridge:
    """Bridges one cluster (or one namespace of it) to the planner; `settings`, when given, wins over
    `group` and `namespace`. Start with `await bridge.run(stop)`; flip `set_active()` with leadership."""

    def __init__(
        self,
        api_client: ApiClient,
        conn: Connection,
        *,
        group: str = "argoproj.io",
        namespace: str | None = None,
        active: bool = True,
        settings: BridgeSettings | None = None,
    ) -> None:
        self.settings = settings or BridgeSettings(group=group, namespace=namespace)
        self._writes = TokenBucket(self.settings.status_qps, self.settings.status_burst)
        self.api = CustomObjectsApi(api_client)
        self.conn = conn
        self._active = asyncio.Event()
        if active:
            self._active.set()
        self._inactive = asyncio.Event()
        if not active:
            self._inactive.set()
        self.states: dict[Key, RolloutState] = {}
        self.rollouts: dict[Key, _Rollout] = {}
        self.templates: dict[tuple[str, Key], dict[str, Any]] = {}
        self.watches: dict[str, ResumableWatch] = {}
        self.synced = asyncio.Event()  # the planner's states and every kind listed once
        self._pending: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the flag ---------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._active.is_set()

    def set_active(self, active: bool) -> None:
        """Only the leader planner's bridge sends commands and writes status."""
        if active:
            self._inactive.clear()
            self._active.set()
        else:
            self._active.clear()
            self._inactive.set()

    # --- lifecycle --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Bridge while active, idle while not, until `stop`; raises BridgeError when a task dies."""
        while not stop.is_set():
            if not self.active:
                await _first(stop.wait(), self._active.wait())
                continue
            await self._run_active(stop)

    async def _run_active(self, stop: asyncio.Event) -> None:
        self.rollouts.clear()
        self.states.clear()
        self.templates.clear()
        self.synced.clear()
        s = self.settings
        loaded = asyncio.Event()
        tasks = [asyncio.create_task(self._follow_states(loaded), name="kube-bridge:states")]
        for kind, plural in PLURALS.items():
            if kind == CLUSTER_ANALYSIS_TEMPLATE or s.namespace is None:
                list_fn = functools.partial(self.api.list_cluster_custom_object, s.group, s.version, plural)
                where = "all namespaces" if kind != CLUSTER_ANALYSIS_TEMPLATE else "the cluster"
            else:
                list_fn = functools.partial(
                    self.api.list_namespaced_custom_object, s.group, s.version, s.namespace, plural
                )
                where = f"namespace {s.namespace}"
            self.watches[kind] = ResumableWatch(
                list_fn, what=f"{plural}.{s.group} in {where}", settings=s.watch
            )
        tasks.append(asyncio.create_task(self._consume_all(loaded), name="kube-bridge:watches"))
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._inactive.wait()),
        ]
        try:
            done, _ = await asyncio.wait([*tasks, *waits], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t in done and not t.cancelled() and t.exception() is not None:
                    raise BridgeError(f"task {t.get_name()} died: {t.exception()!r}") from t.exception()
        finally:
            for f in [*tasks, *waits, *self._tasks]:
                f.cancel()
            await asyncio.gather(*tasks, *waits, *self._tasks, return_exceptions=True)
            self._tasks.clear()
            self._pending.clear()

    async def _consume_all(self, loaded: asyncio.Event) -> None:
        # Templates and states first: a Rollout seen at start is compared with what the planner holds.
        await loaded.wait()
        consumers = [
            asyncio.create_task(self._consume(kind, w), name=f"kube-bridge:{kind}")
            for kind, w in self.watches.items()
        ]
        try:
            synced = asyncio.gather(*(w.synced.wait() for w in self.watches.values()))
            await _first(synced, asyncio.wait(consumers, return_when=asyncio.FIRST_COMPLETED))
            if all(w.synced.is_set() for w in self.watches.values()):
                self.synced.set()
            done, _ = await asyncio.wait(consumers, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # a consumer only ends by dying: re-raise its error
        finally:
            for t in consumers:
                t.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)

    async def _consume(self, kind: str, watch: ResumableWatch) -> None:
        async for event_type, obj in watch.events():
            try:
                if kind == ROLLOUT:
                    await self._on_rollout(event_type, obj)
                else:
                    await self._on_template(kind, event_type, obj)
            except TranslateError as e:
                log.warning("%s", e)

    # --- the planner's states ---------------------------------------------------------------------

    async def _follow_states(self, loaded: asyncio.Event) -> None:
        kv = await self.conn.js.key_value(subjects.ROLLOUTS_BUCKET)
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:  # every stored state delivered
                    loaded.set()
                    continue
                namespace, _, name = entry.key.partition(".")
                key = (namespace, name)
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self.states.pop(key, None)
                    continue
                try:
                    self.states[key] = state_decoder.decode(entry.value)
                except msgspec.DecodeError as e:
                    log.error("%s/%s: planner state unreadable, ignored: %s", namespace, name, e)
                    continue
                if loaded.is_set():
                    self._schedule_status(key)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    # --- resources in -----------------------------------------------------------------------------

    async def _on_rollout(self, event_type: str, obj: dict[str, Any]) -> None:
        key = (translate.subject_namespace(ROLLOUT, obj), translate.object_name(obj))
        if event_type == DELETED:
            self.rollouts.pop(key, None)
            meta = obj.get("metadata") or {}
            reply = await self._send(
                BridgeCommand(
                    namespace=key[0],
                    name=key[1],
                    verb="delete",
                    msg_id=translate.msg_id(
                        str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""), "delete"
                    ),
                    reason="the Rollout resource was deleted",
                )
            )
            if reply is not None and not reply.ok:
                log.info("%s/%s: Rollout resource deleted; planner: %s", *key, reply.error)
            return
        r = self.rollouts.setdefault(key, _Rollout())
        async with r.lock:
            prev, r.obj = r.obj, obj
            meta = obj.get("metadata") or {}
            generation = int(meta.get("generation") or 0)
            version = str(meta.get("resourceVersion") or "")
            own = version in r.own or (
                r.unsure is not None
                and translate.command_fields(obj.get("status")) == translate.command_fields(r.unsure)
            )
            commands = translate.commands(ROLLOUT, prev, obj, own_write=own)
            state = self.states.get(key)
            if prev is None and state is not None and commands and commands[0].verb == "apply":
                if translate.planner_spec(ROLLOUT, obj) == state.spec.get("spec"):
                    commands = commands[1:]  # the planner already runs this very spec
                    r.observed, r.invalid = generation, None
            for cmd in commands:
                reply = await self._send(cmd)
                if cmd.verb == "apply" and reply is not None:
                    r.observed = generation
                    r.invalid = None if reply.ok else (reply.error or "rejected")
                elif reply is not None and not reply.ok:
                    log.warning("%s/%s: %s (%s) refused: %s", *key, cmd.verb, cmd.reason, reply.error)
                    r.written = None  # put back what the user's write changed in vain
        self._schedule_status(key)

    async def _on_template(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        key = (translate.subject_namespace(kind, obj), translate.object_name(obj))
        if event_type == DELETED:
            self.templates.pop((kind, key), None)
            log.warning("%s %s/%s deleted; the planner keeps its copy (no delete command)", kind, *key)
            return
        prev = self.templates.get((kind, key))
        self.templates[(kind, key)] = obj
        for cmd in translate.commands(kind, prev, obj):
            reply = await self._send(cmd)
            if reply is not None and not reply.ok:
                log.warning("%s %s/%s: %s refused: %s", kind, *key, cmd.verb, reply.error)

    async def _send(self, cmd: BridgeCommand) -> CommandReply | None:
        """One command as a NATS request, as the CLI sends it; a SubjectError becomes the reply."""
        if not self.active:
            return None
        try:
            subject = subjects.command(
                subjects.check_token(cmd.namespace, "namespace"),
                subjects.check_token(cmd.name, "name"),
                cmd.verb,
            )
        except subjects.SubjectError as e:
            return CommandReply(ok=False, error=str(e))
        log.info("%s/%s: %s (%s)", cmd.namespace, cmd.name, cmd.verb, cmd.reason)
        try:
            msg = await self.conn.nc.request(
                subject,
                cmd.payload,
                timeout=self.settings.request_timeout,
                headers={"Nats-Msg-Id": cmd.msg_id},
            )
        except (NatsTimeout, NoRespondersError):
            # Stored all the same (or a duplicate the stream dropped): the planner takes it when it runs.
            log.warning("%s: no planner answered within %gs", subject, self.settings.request_timeout)
            return None
        except NatsError as e:
            log.warning("%s: not sent: %s", subject, e)
            return None
        try:
            return reply_decoder.decode(msg.data)
        except msgspec.DecodeError as e:
            log.warning("%s: unreadable reply: %s", subject, e)
            return None

    # --- status out -------------------------------------------------------------------------------

    def _schedule_status(self, key: Key, delay: float = 0.0) -> None:
        """Write the rollout's status soon; changes arriving meanwhile are folded into that one write."""
        if key in self._pending or key not in self.rollouts:
            return
        self._pending.add(key)
        task = asyncio.create_task(
            self._write_status(key, delay), name=f"kube-bridge:status:{key[0]}/{key[1]}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._status_done)

    def _status_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("status write died: %r", task.exception(), exc_info=task.exception())

    async def _write_status(self, key: Key, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        await self._writes.acquire()  # still pending meanwhile: later changes fold into this write
        r = self.rollouts.get(key)
        if r is None:
            self._pending.discard(key)
            return
        async with r.lock:
            self._pending.discard(key)
            state = self.states.get(key)
            if r.obj is None or not self.active or (state is None and r.invalid is None):
                return
            generation = int((r.obj.get("metadata") or {}).get("generation") or 0)
            if state is not None and r.observed != generation and r.invalid is None:
                # An apply whose answer was lost: the planner's state says whether it took this spec.
                if translate.planner_spec(ROLLOUT, r.obj) == state.spec.get("spec"):
                    r.observed = generation
            baseline = r.written if r.written is not None else (r.obj.get("status") or {})
            desired = argo_status(
                state,
                observed_generation=r.observed,
                previous=baseline,
                invalid_spec=r.invalid,
                now=time.time(),
            )
            if desired == r.written:
                return
            patch = merge_patch(baseline, desired)
            if not patch:
                r.written = desired
                return
            namespace, name = key
            s = self.settings
            try:
                # Forced: for a dict body kubernetes_asyncio would pick the first type it offers.
                content_type: dict[str, Any] = {"_content_type": MERGE_PATCH}
                reply = await self.api.patch_namespaced_custom_object_status(
                    s.group, s.version, namespace, PLURALS[ROLLOUT], name, {"status": patch}, **content_type
                )
            except ApiException as e:
                err = from_api_exception(e)
                if err.status == 404:
                    log.info("%s/%s: Rollout gone, status not written", namespace, name)
                    return
                log.warning("%s/%s: status not written (%s); retrying", namespace, name, err)
                self._schedule_status(key, s.status_retry)
                return
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                r.unsure = desired  # it may have been written: its echo must not read as a command
                log.warning("%s/%s: status write failed (%s); retrying", namespace, name, e)
                self._schedule_status(key, s.status_retry)
                return
            r.written, r.unsure = desired, None
            written_version = (
                (reply.get("metadata") or {}).get("resourceVersion") if isinstance(reply, dict) else None
            )
            if written_version:
                r.own.append(str(written_version))
            log.debug("%s/%s: status written (%s)", namespace, name, ", ".join(sorted(patch)))


async def _first(*aws: Any) -> None:
    """Wait until the first of these awaitables finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
