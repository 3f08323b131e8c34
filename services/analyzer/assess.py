"""Pure metric and run phase rules, mirroring Argo Rollouts' ``analysis/analysis.go``.

* :func:`measurement_phase` is ``evaluate.EvaluateResult``: one measured
  value → Successful / Failed / Inconclusive / Error.
* :func:`tally` is the counter bookkeeping of ``runMeasurements`` followed by
  ``assessMetricStatus`` (failure/inconclusive/error limits, count,
  consecutiveSuccessLimit).
* :func:`next_due` is ``calculateNextReconcileTime`` for one metric.
* :func:`run_phase` is ``assessRunStatus``: worst completed phase wins, dry-run
  metrics never decide, and a Failed/Error/Inconclusive metric terminates the
  run early (``IsTerminating``).

No I/O and no clocks: callers pass ``now``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final

import msgspec

from services.analyzer.expressions import Expression, ExpressionError, compile_expression, evaluate_condition

__all__ = [
    "DEFAULT_ERROR_RETRY_SECONDS",
    "MetricPolicy",
    "MetricTally",
    "Phase",
    "effective_count",
    "is_metric_done",
    "measurement_phase",
    "next_due",
    "run_phase",
    "tally",
]

# Argo retries an errored measurement after 10s regardless of the metric's interval.
DEFAULT_ERROR_RETRY_SECONDS: Final = 10.0


class Phase(StrEnum):
    """Argo's AnalysisPhase values (a str subclass, so it serialises as the plain string)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    ERROR = "Error"
    INCONCLUSIVE = "Inconclusive"

    @property
    def completed(self) -> bool:
        return self in _COMPLETED


_COMPLETED: Final = frozenset({Phase.SUCCESSFUL, Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE})
# analysisStatusOrder in utils/analysis/helpers.go, best to worst.
_ORDER: Final = (
    Phase.SUCCESSFUL,
    Phase.RUNNING,
    Phase.PENDING,
    Phase.INCONCLUSIVE,
    Phase.ERROR,
    Phase.FAILED,
)
_TERMINATING: Final = frozenset({Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE})


class MetricPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The parts of an Argo ``Metric`` that decide phases and scheduling."""

    name: str
    success_condition: str | None = None
    failure_condition: str | None = None
    count: int | None = None  # None/0: unbounded with an interval, 1 without one
    interval_seconds: float | None = None
    failure_limit: int = 0  # -1 disables the failure limit
    inconclusive_limit: int = 0
    consecutive_error_limit: int = 4
    consecutive_success_limit: int | None = None
    dry_run: bool = False


class MetricTally(msgspec.Struct, frozen=True, kw_only=True):
    """Argo's ``MetricResult`` counters (without the measurement history)."""

    phase: Phase = Phase.PENDING
    count: int = 0  # completed non-error measurements
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    consecutive_success: int = 0
    message: str = ""


def effective_count(policy: MetricPolicy) -> int | None:
    """``Metric.EffectiveCount``: the measurements wanted, or None for "until stopped"."""
    if not policy.count:
        return 1 if not policy.interval_seconds else None
    return policy.count


@lru_cache(maxsize=512)
def _compiled(source: str) -> Expression:
    return compile_expression(source, variables=("result",))


def measurement_phase(policy: MetricPolicy, result: Any) -> tuple[Phase, str]:
    """Classify one measured value with the metric's conditions (Argo's ``EvaluateResult``)."""
    success = failure = False
    try:
        if policy.success_condition:
            success = evaluate_condition(_compiled(policy.success_condition), result)
        if policy.failure_condition:
            failure = evaluate_condition(_compiled(policy.failure_condition), result)
    except ExpressionError as exc:
        return Phase.ERROR, str(exc)
    if not policy.success_condition and not policy.failure_condition:
        return Phase.SUCCESSFUL, ""  # no conditions: always successful unless the provider errored
    if not policy.failure_condition:
        failure = not success
    elif not policy.success_condition:
        success = not failure
    if failure:
        return Phase.FAILED, ""
    if not success:
        return Phase.INCONCLUSIVE, ""
    return Phase.SUCCESSFUL, ""


def _limit_breach(policy: MetricPolicy, t: MetricTally) -> tuple[Phase | None, str]:
    """``assessMetricFailureInconclusiveOrError``: later checks override earlier ones, as in Argo."""
    phase: Phase | None = None
    reason = ""
    if policy.failure_limit != -1 and t.failed > policy.failure_limit:
        phase, reason = Phase.FAILED, f"failed ({t.failed}) > failureLimit ({policy.failure_limit})"
    if t.inconclusive > policy.inconclusive_limit:
        phase = Phase.INCONCLUSIVE
        reason = f"inconclusive ({t.inconclusive}) > inconclusiveLimit ({policy.inconclusive_limit})"
    if t.consecutive_error > policy.consecutive_error_limit:
        phase = Phase.ERROR
        reason = f"consecutiveErrors ({t.consecutive_error}) > consecutiveErrorLimit ({policy.consecutive_error_limit})"
    return phase, reason


def _assess(policy: MetricPolicy, t: MetricTally) -> tuple[Phase, str]:
    """``assessMetricStatus`` for a metric whose last measurement has completed."""
    breach, reason = _limit_breach(policy, t)
    if breach is not None:
        return breach, reason
    csl = policy.consecutive_success_limit or 0
    if csl > 0 and t.consecutive_success >= csl:
        return Phase.SUCCESSFUL, f"consecutiveSuccessLimit ({csl}) reached"
    wanted = effective_count(policy)
    if wanted is not None and t.count >= wanted:
        failure_applicable = policy.failure_limit >= 0
        if failure_applicable and csl > 0:
            return Phase.INCONCLUSIVE, (
                f"consecutiveSuccessLimit ({csl}) not reached and failureLimit ({policy.failure_limit}) not violated"
            )
        if csl > 0:
            return Phase.FAILED, f"consecutiveSuccessLimit ({csl}) not reached"
        return Phase.SUCCESSFUL, ""
    return Phase.RUNNING, ""


def tally(policy: MetricPolicy, tally: MetricTally, phase: Phase, message: str = "") -> MetricTally:
    """Record one completed measurement and re-assess the metric.

    ``phase`` is the measurement's phase (:data:`Phase.ERROR` for a provider
    error).  A metric that has already completed is returned unchanged: Argo
    takes no further measurements of it.
    """
    if tally.phase.completed:
        return tally
    if not phase.completed:
        raise ValueError(f"a measurement must be completed, got {phase.value}")
    counts = msgspec.structs.asdict(tally)
    if phase is Phase.ERROR:
        counts["error"] += 1
        counts["consecutive_error"] += 1
        counts["consecutive_success"] = 0
    else:
        counts["count"] += 1
        counts["consecutive_error"] = 0
        key = {Phase.SUCCESSFUL: "successful", Phase.FAILED: "failed", Phase.INCONCLUSIVE: "inconclusive"}[
            phase
        ]
        counts[key] += 1
        counts["consecutive_success"] = counts["consecutive_success"] + 1 if phase is Phase.SUCCESSFUL else 0
    updated = MetricTally(**counts)
    new_phase, reason = _assess(policy, updated)
    text = f"{reason}: {message}" if reason and message else reason or message
    return msgspec.structs.replace(updated, phase=new_phase, message=text)


def is_metric_done(tally: MetricTally) -> bool:
    """True once the metric reached a completed phase; no more measurements are taken."""
    return tally.phase.completed


def next_due(policy: MetricPolicy, tally: MetricTally, now: float) -> float | None:
    """When the next measurement is due, given the last one finished at ``now``.

    Returns ``now`` before the first measurement, None when no more are needed.
    """
    if is_metric_done(tally):
        return None
    if tally.count == 0 and tally.error == 0:
        return now
    wanted = effective_count(policy)
    if wanted is not None and tally.count >= wanted:
        return None
    if tally.consecutive_error > 0:  # the last measurement errored: retry on Argo's fixed delay
        return now + DEFAULT_ERROR_RETRY_SECONDS
    if policy.interval_seconds:
        return now + policy.interval_seconds
    return None


def _worse(current: Phase | None, new: Phase) -> Phase:
    if current is None or _ORDER.index(new) > _ORDER.index(current):
        return new
    return current


def run_phase(metric_phases: Mapping[str, Phase], dry_run: Collection[str] = frozenset()) -> Phase:
    """Combine metric phases into the run phase (Argo's ``assessRunStatus``).

    A non-dry-run metric that is Failed, Error or Inconclusive terminates the
    run at once with the worst completed phase; otherwise the run is Running
    until every metric completes, then takes the worst non-dry-run phase
    (Successful if only dry-run metrics exist).
    """
    if not metric_phases:
        raise ValueError("an analysis needs at least one metric")
    terminating = any(p in _TERMINATING for name, p in metric_phases.items() if name not in dry_run)
    worst: Phase | None = None
    everything_completed = True
    for name, phase in metric_phases.items():
        if not phase.completed:
            everything_completed = False
            continue
        worst = (worst or Phase.SUCCESSFUL) if name in dry_run else _worse(worst, phase)
    if terminating:
        assert worst is not None
        return worst
    if not everything_completed or worst is None:
        return Phase.RUNNING
    return worst
