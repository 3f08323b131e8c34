"""The planner's batches (services/planner/service.py) against a real nats-server: inputs queued
together are decided in arrival order per rollout, answered only once their state is stored, and a
rollout whose state cannot be stored fails its own inputs only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.planner.plan import compile_plan
from services.planner.service import NotLeader, Planner, state_decoder
from services.planner.state import Apply, Delete, Pause, Resume
from shared import subjects
from shared.jetstream import Connection
from shared.messages import encoder
from shared.specs import Rollout, load_documents, to_builtins

pytestmark = pytest.mark.timeout(60)


def _apply(name: str) -> Apply:
    doc: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "web:1", "ports": [{"containerPort": 1}]}]},
            },
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
        },
    }
    [rollout] = load_documents(encoder.encode(doc))
    assert isinstance(rollout, Rollout)
    return Apply(plan=compile_plan(rollout), spec=to_builtins(rollout))


@pytest.fixture
async def planner(nats_conn: Connection) -> AsyncIterator[Planner]:
    p = Planner(nats_conn)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def _stored(conn: Connection, name: str) -> Any:
    kv = await conn.js.key_value(subjects.ROLLOUTS_BUCKET)
    entry = await kv.get(subjects.rollout_key("default", name))
    return state_decoder.decode(entry.value or b"")


async def test_a_rollouts_inputs_queued_together_are_decided_in_arrival_order(planner: Planner) -> None:
    await planner.handle("default", "web", _apply("web"), time.time())
    now = time.time()
    # Queued in one go: they land in one batch, decided one after another on the newest state.
    replies = await asyncio.gather(
        planner.handle("default", "web", Pause(), now),
        planner.handle("default", "web", Resume(), now),
        planner.handle("default", "web", Pause(), now),
    )
    assert [r.ok for r in replies] == [True, True, True]
    assert [(r.status or {}).get("paused") for r in replies] == [True, False, True]
    assert planner.states[subjects.rollout_key("default", "web")].paused is True


async def test_an_input_is_answered_only_once_its_state_and_outputs_are_stored(
    planner: Planner, nats_conn: Connection
) -> None:
    await planner.handle("default", "web", _apply("web"), time.time())
    reply = await planner.handle("default", "web", Pause(), time.time())
    assert reply.ok
    stored = await _stored(nats_conn, "web")
    assert stored.paused is True
    assert stored.outbox, "the decision's outputs travel with its state"
    # ...and the outbox's last event is already in the events stream.
    last = await nats_conn.js.get_last_msg(subjects.EVENTS_STREAM, subjects.events("default", "web"))
    assert encoder.encode(stored.outbox[-1].event) == last.data


async def test_a_rollout_whose_state_cannot_be_stored_fails_only_its_own_inputs(
    planner: Planner, nats_conn: Connection
) -> None:
    await planner.handle("default", "a", _apply("a"), time.time())
    await planner.handle("default", "b", _apply("b"), time.time())
    # Another writer (a successor planner) replaces a's state behind this planner's back.
    kv = await nats_conn.js.key_value(subjects.ROLLOUTS_BUCKET)
    key_a = subjects.rollout_key("default", "a")
    entry = await kv.get(key_a)
    await kv.put(key_a, entry.value or b"")
    now = time.time()
    results = await asyncio.gather(
        planner.handle("default", "a", Pause(), now),
        planner.handle("default", "b", Pause(), now),
        return_exceptions=True,
    )
    assert isinstance(results[0], NotLeader)
    assert not isinstance(results[1], BaseException) and results[1].ok
    assert (await _stored(nats_conn, "b")).paused is True
    assert (await _stored(nats_conn, "a")).paused is False


async def test_rollouts_created_in_one_batch_are_all_stored(planner: Planner, nats_conn: Connection) -> None:
    names = [f"web-{i}" for i in range(20)]
    replies = await asyncio.gather(*(planner.handle("default", n, _apply(n), time.time()) for n in names))
    assert all(r.ok for r in replies)
    for n in names:
        assert (await _stored(nats_conn, n)).name == n


async def test_a_deleted_rollout_applied_again_is_created_over_its_tombstone(
    planner: Planner, nats_conn: Connection
) -> None:
    await planner.handle("default", "web", _apply("web"), time.time())
    await planner.handle("default", "web", Delete(), time.time())
    assert subjects.rollout_key("default", "web") not in planner.states
    reply = await planner.handle("default", "web", _apply("web"), time.time() + 1)
    assert reply.ok
    assert (await _stored(nats_conn, "web")).name == "web"
