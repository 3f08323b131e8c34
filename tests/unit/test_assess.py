"""Tests for the pure Argo phase rules in services.analyzer.assess.

Covers measurement classification for every combination of success/failure
conditions (and evaluation errors), counter bookkeeping, every metric limit
(failureLimit incl. -1, inconclusiveLimit, consecutiveErrorLimit, count,
consecutiveSuccessLimit), effective count, scheduling via next_due, and the
run-level combination rules (worst phase, early termination, dry-run) with
hand-worked measurement sequences.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import pytest

from services.analyzer.assess import (
    DEFAULT_ERROR_RETRY_SECONDS,
    MetricPolicy,
    MetricTally,
    Phase,
    effective_count,
    is_metric_done,
    measurement_phase,
    next_due,
    run_phase,
    tally,
)

S, F, INC, E = Phase.SUCCESSFUL, Phase.FAILED, Phase.INCONCLUSIVE, Phase.ERROR


def policy(**kw: Any) -> MetricPolicy:
    return MetricPolicy(name="m", **kw)


def feed(p: MetricPolicy, phases: Iterable[Phase]) -> list[MetricTally]:
    """Apply measurements in order, returning the tally after each."""
    t = MetricTally()
    out = []
    for ph in phases:
        t = tally(p, t, ph, "" if ph is not E else "boom")
        out.append(t)
    return out


# --------------------------------------------------------------------------- measurement_phase


@pytest.mark.parametrize(
    ("success", "failure", "result", "expected"),
    [
        (None, None, 123, S),  # no conditions: always successful
        ("result > 1", None, 2, S),
        ("result > 1", None, 0, F),  # only success: not-success is a failure
        (None, "result > 1", 2, F),
        (None, "result > 1", 0, S),  # only failure: not-failure is a success
        ("result > 10", "result < 0", 5, INC),  # both set, neither true
        ("result > 10", "result < 0", 11, S),
        ("result > 10", "result < 0", -1, F),
        ("result > 0", "result > 0", 1, F),  # both true: failure wins
    ],
)
def test_measurement_phase(success: str | None, failure: str | None, result: Any, expected: Phase) -> None:
    phase, message = measurement_phase(policy(success_condition=success, failure_condition=failure), result)
    assert phase is expected
    assert message == ""


@pytest.mark.parametrize(
    ("kw", "result"),
    [
        ({"success_condition": "result < 1"}, None),
        ({"failure_condition": "result < 1"}, "text"),
        ({"success_condition": "result"}, 5),  # non-bool
        ({"success_condition": "nosuchfn(result)"}, 1),
        ({"success_condition": "result >"}, 1),
    ],
)
def test_measurement_phase_error(kw: dict[str, str], result: Any) -> None:
    phase, message = measurement_phase(policy(**kw), result)
    assert phase is E
    assert message


# --------------------------------------------------------------------------- tally bookkeeping


def test_counters_follow_argo() -> None:
    p = policy(interval_seconds=1, failure_limit=5, inconclusive_limit=5)
    t = feed(p, [S, S, E, F, E, E, INC, S])[-1]
    assert (t.count, t.successful, t.failed, t.inconclusive, t.error) == (5, 3, 1, 1, 3)
    assert t.consecutive_error == 0
    assert t.consecutive_success == 1
    assert t.phase is Phase.RUNNING


def test_error_resets_consecutive_success_and_counts_do_not_include_errors() -> None:
    p = policy(interval_seconds=1)
    t = feed(p, [S, S, E])[-1]
    assert t.consecutive_success == 0
    assert t.consecutive_error == 1
    assert t.count == 2


def test_invalid_measurement_phase_rejected() -> None:
    with pytest.raises(ValueError):
        tally(policy(), MetricTally(), Phase.RUNNING)


def test_completed_metric_ignores_further_measurements() -> None:
    p = policy()
    done = feed(p, [S])[-1]
    assert done.phase is S
    assert tally(p, done, F) is done


# --------------------------------------------------------------------------- limits


def test_single_measurement_without_interval() -> None:
    assert [t.phase for t in feed(policy(), [S])] == [S]
    assert [t.phase for t in feed(policy(), [F])] == [F]
    assert [t.phase for t in feed(policy(), [INC])] == [INC]


def test_failure_limit() -> None:
    p = policy(interval_seconds=60, failure_limit=2)
    phases = [t.phase for t in feed(p, [F, S, F, F])]
    assert phases == [Phase.RUNNING, Phase.RUNNING, Phase.RUNNING, F]  # 3 failures > 2
    last = feed(p, [F, S, F, F])[-1]
    assert last.message == "failed (3) > failureLimit (2)"


def test_failure_limit_minus_one_disables_failures() -> None:
    p = policy(count=3, interval_seconds=1, failure_limit=-1, consecutive_success_limit=2)
    assert [t.phase for t in feed(p, [F, F, F])][-1] is F  # count reached, successes never reached 2
    assert [t.phase for t in feed(p, [F, S, S])][-1] is S


def test_inconclusive_limit() -> None:
    p = policy(interval_seconds=1, inconclusive_limit=1)
    assert [t.phase for t in feed(p, [INC, S, INC])] == [Phase.RUNNING, Phase.RUNNING, INC]


def test_consecutive_error_limit() -> None:
    p = policy(interval_seconds=1)  # default limit 4: the 5th consecutive error fails it
    phases = [t.phase for t in feed(p, [E, E, E, E, E])]
    assert phases == [Phase.RUNNING] * 4 + [E]
    # A good measurement resets the streak.
    assert feed(p, [E, E, E, E, S, E, E, E, E])[-1].phase is Phase.RUNNING


def test_errors_do_not_complete_a_single_measurement_metric() -> None:
    p = policy(consecutive_error_limit=1)
    assert [t.phase for t in feed(p, [E, E])] == [Phase.RUNNING, E]
    assert feed(p, [E, S])[-1].phase is S


def test_later_limit_checks_override_earlier_ones() -> None:
    # Argo checks failed, then inconclusive, then errors; the last breach wins.
    p = policy(interval_seconds=1, failure_limit=0, inconclusive_limit=0, consecutive_error_limit=0)
    t = tally(p, MetricTally(failed=1, inconclusive=1, count=2), E, "x")
    assert t.phase is E


def test_count_reached_with_tolerated_failures_is_successful() -> None:
    p = policy(count=3, interval_seconds=1, failure_limit=1)
    assert [t.phase for t in feed(p, [S, F, S])] == [Phase.RUNNING, Phase.RUNNING, S]


def test_unbounded_metric_keeps_running() -> None:
    p = policy(interval_seconds=1, failure_limit=3)
    assert all(t.phase is Phase.RUNNING for t in feed(p, [S] * 50))


def test_consecutive_success_limit_reached_early() -> None:
    p = policy(count=10, interval_seconds=1, consecutive_success_limit=2, failure_limit=3)
    assert [t.phase for t in feed(p, [S, F, S, S])] == [Phase.RUNNING] * 3 + [S]


def test_consecutive_success_limit_not_reached_with_failure_limit_is_inconclusive() -> None:
    p = policy(count=3, interval_seconds=1, consecutive_success_limit=3, failure_limit=2)
    last = feed(p, [S, F, S])[-1]
    assert last.phase is INC
    assert "consecutiveSuccessLimit (3) not reached" in last.message


def test_consecutive_success_limit_alone_not_reached_is_failed() -> None:
    p = policy(count=2, interval_seconds=1, consecutive_success_limit=2, failure_limit=-1)
    assert feed(p, [F, S])[-1].phase is F


def test_effective_count() -> None:
    assert effective_count(policy()) == 1
    assert effective_count(policy(count=0)) == 1
    assert effective_count(policy(interval_seconds=5)) is None
    assert effective_count(policy(count=3, interval_seconds=5)) == 3
    assert effective_count(policy(count=3)) == 3


# --------------------------------------------------------------------------- scheduling


def test_next_due() -> None:
    p = policy(count=3, interval_seconds=30)
    assert next_due(p, MetricTally(), 100.0) == 100.0  # first measurement: now
    t1 = feed(p, [S])[-1]
    assert next_due(p, t1, 100.0) == 130.0
    t_err = feed(p, [S, E])[-1]
    assert next_due(p, t_err, 100.0) == 100.0 + DEFAULT_ERROR_RETRY_SECONDS
    t_done = feed(p, [S, S, S])[-1]
    assert is_metric_done(t_done)
    assert next_due(p, t_done, 100.0) is None


def test_next_due_without_interval_retries_errors_only() -> None:
    p = policy()
    assert next_due(p, feed(p, [E])[-1], 5.0) == 5.0 + DEFAULT_ERROR_RETRY_SECONDS
    assert next_due(p, feed(p, [S])[-1], 5.0) is None


def test_is_metric_done() -> None:
    assert not is_metric_done(MetricTally())
    assert not is_metric_done(MetricTally(phase=Phase.RUNNING))
    for ph in (S, F, INC, E):
        assert is_metric_done(MetricTally(phase=ph))


# --------------------------------------------------------------------------- run_phase


R, P = Phase.RUNNING, Phase.PENDING


@pytest.mark.parametrize(
    ("phases", "dry", "expected"),
    [
        ({"a": S}, set(), S),
        ({"a": S, "b": S}, set(), S),
        ({"a": S, "b": R}, set(), R),
        ({"a": P}, set(), R),
        ({"a": S, "b": INC}, set(), INC),
        ({"a": E, "b": INC}, set(), E),
        ({"a": E, "b": F}, set(), F),  # Failed is worst
        ({"a": R, "b": F}, set(), F),  # a failure ends the run early
        ({"a": R, "b": INC}, set(), INC),  # inconclusive terminates too
        ({"a": R, "b": F}, {"b"}, R),  # dry-run failures never decide
        ({"a": S, "b": F}, {"b"}, S),
        ({"a": F}, {"a"}, S),  # only dry-run metrics: Successful
        ({"a": R}, {"a"}, R),
        ({"a": E, "b": F, "c": R}, {"b"}, E),
    ],
)
def test_run_phase(phases: dict[str, Phase], dry: set[str], expected: Phase) -> None:
    assert run_phase(phases, dry) is expected


def test_run_phase_needs_metrics() -> None:
    with pytest.raises(ValueError):
        run_phase({}, set())


def test_hand_worked_analysis() -> None:
    """Two metrics, one dry-run, walked measurement by measurement."""
    latency = policy(success_condition="result < 100", count=3, interval_seconds=10, failure_limit=1)
    errors = MetricPolicy(name="errors", failure_condition="result > 0", interval_seconds=10, dry_run=True)
    lt, et = MetricTally(), MetricTally()
    for lat_value, err_value, expected in [(50, 1, R), (150, 2, R), (40, 0, S)]:
        ph, msg = measurement_phase(latency, lat_value)
        lt = tally(latency, lt, ph, msg)
        ph, msg = measurement_phase(errors, err_value)
        et = tally(errors, et, ph, msg)
        assert run_phase({"latency": lt.phase, "errors": et.phase}, {"errors"}) is expected
    assert et.phase is F  # the dry-run metric failed but did not decide the run
    assert (lt.successful, lt.failed) == (2, 1)


def test_structs_roundtrip_through_msgspec() -> None:
    t = feed(policy(interval_seconds=1), [S, E])[-1]
    raw = msgspec.json.encode(t)
    assert msgspec.json.decode(raw, type=MetricTally) == t
    assert b'"phase":"Running"' in raw
