"""ReplyMatcher: `nats req` answers go to the right requester whatever the order of the two copies,
plain publishes take their turn without an inbox, and stale entries expire."""

from __future__ import annotations

import pytest

from services.planner.replies import ReplyMatcher

pytestmark = pytest.mark.timeout(10)

K = ("rollouts.cmd.default.a.promote", b"")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_core_copy_first_then_handled_answers_the_requester() -> None:
    m = ReplyMatcher()
    assert m.on_core(K, "inbox-1") is None
    assert m.on_handled(K, b"answer") == "inbox-1"


def test_handled_first_then_core_copy_gets_the_stored_answer() -> None:
    m = ReplyMatcher()
    assert m.on_handled(K, b"answer") is None
    assert m.on_core(K, "inbox-1") == ("inbox-1", b"answer")


def test_plain_publish_takes_its_turn_so_a_later_request_gets_its_own_answer() -> None:
    m = ReplyMatcher()
    assert m.on_core(K, None) is None  # nats pub
    assert m.on_core(K, "inbox-2") is None  # nats req with the same payload
    assert m.on_handled(K, b"first") is None  # the plain publish's answer goes nowhere
    assert m.on_handled(K, b"second") == "inbox-2"


def test_answers_of_commands_sent_while_no_planner_listened_expire() -> None:
    clock = Clock()
    m = ReplyMatcher(done_ttl=2.0, clock=clock)
    m.on_handled(K, b"old")  # handled from the stream after a restart: no core copy exists
    clock.t = 5.0
    assert m.on_core(K, "inbox") is None  # not answered with the stale result
    assert m.on_handled(K, b"fresh") == "inbox"


def test_different_payloads_do_not_mix() -> None:
    m = ReplyMatcher()
    full = ("rollouts.cmd.default.a.promote", b'{"full": true}')
    m.on_core(K, "plain")
    m.on_core(full, "full")
    assert m.on_handled(full, b"x") == "full"
    assert m.on_handled(K, b"y") == "plain"
