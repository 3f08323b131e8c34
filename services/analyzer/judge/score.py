"""The canary score, following Kayenta's ``WeightedSumScorer`` and ``ThresholdScoreClassifier``.

* Muted metrics are left out entirely (Kayenta's "report-only" criticality).
* Group score: the weighted share of passing metrics among those that were
  classified Pass, High, Low or NodataFailed, times 100.  Nodata and Error
  metrics are not counted; a group with nothing counted has no data.
* Summary score: the sum of group scores times group weight / 100.  Group
  weights are percentages (Kayenta's ``classifier.groupWeights``); groups
  without an explicit weight share what is left of 100 equally.  A group with
  no data contributes nothing and its weight is not redistributed, as in
  Kayenta.
* The score is forced to 0 when a metric failed critically (see
  :class:`~services.analyzer.judge.classify.MetricVerdict`) or when at least
  half of the scored metrics have no data (Nodata or NodataFailed), the
  project's rule from ``shared/ANCHORS.md``.
* Classification: ``score >= pass_threshold`` is Pass, ``score >=
  marginal_threshold`` is Marginal, anything lower is Fail.

Default thresholds are Spinnaker's canary stage defaults, pass 95 and marginal
75 (Deck's ``scoreThresholds: {marginal: 75, pass: 95}``).  Argo Rollouts'
kayenta provider has no defaults (``thresholds`` is required; its docs use
pass 90 / marginal 75) and maps Pass/Marginal/Fail to
Successful/Inconclusive/Failed after truncating the score to an integer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import msgspec

from services.analyzer.judge.classify import MetricVerdict

__all__ = [
    "DEFAULT_MARGINAL_THRESHOLD",
    "DEFAULT_PASS_THRESHOLD",
    "NODATA_FRACTION_LIMIT",
    "JudgeResult",
    "ScoreClassification",
    "score",
]

ScoreClassification = Literal["Pass", "Marginal", "Fail"]

DEFAULT_PASS_THRESHOLD: Final = 95.0
DEFAULT_MARGINAL_THRESHOLD: Final = 75.0
# At least this share of scored metrics without data forces the score to 0.
NODATA_FRACTION_LIMIT: Final = 0.5

_COUNTED: Final = frozenset({"Pass", "High", "Low", "NodataFailed"})
_NO_DATA: Final = frozenset({"Nodata", "NodataFailed"})


class JudgeResult(msgspec.Struct, frozen=True, kw_only=True):
    """The judge's verdict on one canary interval."""

    score: float  # 0..100
    classification: ScoreClassification
    reason: str
    groups: dict[str, float]  # group score 0..100 (0 for a group without data); muted-only groups absent
    verdicts: tuple[MetricVerdict, ...]


def _group_scores(verdicts: Sequence[MetricVerdict]) -> dict[str, float | None]:
    """Each group's pass share in percent, or None when nothing in it was counted."""
    passed: dict[str, float] = {}
    counted: dict[str, float] = {}
    for verdict in verdicts:
        passed.setdefault(verdict.group, 0.0)
        counted.setdefault(verdict.group, 0.0)
        if verdict.classification in _COUNTED:
            counted[verdict.group] += verdict.weight
            if verdict.classification == "Pass":
                passed[verdict.group] += verdict.weight
    return {group: (passed[group] / total * 100 if total > 0 else None) for group, total in counted.items()}


def _group_weights(groups: Sequence[str], explicit: Mapping[str, float]) -> dict[str, float]:
    """Kayenta's calculateSummaryScore weights: explicit percentages, the rest of 100 split evenly."""
    for name, weight in explicit.items():
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"group weight of {name} must be a finite number >= 0")
    declared = math.fsum(explicit.values())
    if declared > 100 + 1e-9:
        raise ValueError(
            f"group weights are percentages and must not add up to more than 100, got {declared:g}"
        )
    implicit = [group for group in groups if group not in explicit]
    share = (100 - declared) / len(implicit) if implicit else 0.0
    return {group: explicit.get(group, share) for group in groups}


def _classify(value: float, pass_threshold: float, marginal_threshold: float) -> ScoreClassification:
    if value >= pass_threshold:
        return "Pass"
    if value >= marginal_threshold:
        return "Marginal"
    return "Fail"


def score(
    verdicts: Sequence[MetricVerdict],
    *,
    group_weights: Mapping[str, float] | None = None,
    pass_threshold: float = DEFAULT_PASS_THRESHOLD,
    marginal_threshold: float = DEFAULT_MARGINAL_THRESHOLD,
) -> JudgeResult:
    """Combine metric verdicts into a 0..100 score and classify it against the thresholds."""
    if not 0 <= marginal_threshold <= pass_threshold <= 100:
        raise ValueError(
            f"thresholds must satisfy 0 <= marginal ({marginal_threshold:g}) <= pass ({pass_threshold:g}) <= 100"
        )
    scored = [v for v in verdicts if not v.muted]
    by_group = _group_scores(scored)
    weights = _group_weights(list(by_group), group_weights or {})
    summary = math.fsum(s * weights[g] / 100 for g, s in by_group.items() if s is not None)
    summary = min(max(summary, 0.0), 100.0)
    groups = {group: (value if value is not None else 0.0) for group, value in by_group.items()}

    critical = [v.name for v in scored if v.critical_failure]
    without_data = [v.name for v in scored if v.classification in _NO_DATA]
    if critical:
        summary = 0.0
        reason = f"critical metric failed: {', '.join(critical)}"
    elif not scored:
        summary = 0.0
        reason = "no metrics to score"
    elif len(without_data) >= NODATA_FRACTION_LIMIT * len(scored):
        summary = 0.0
        reason = f"{len(without_data)} of {len(scored)} metrics have no data: {', '.join(without_data)}"
    else:
        failing = [
            f"{v.name} ({v.classification})" for v in scored if v.classification not in ("Pass", "Nodata")
        ]
        reason = f"score {summary:.2f}" + (f"; not passing: {', '.join(failing)}" if failing else "")
    classification = _classify(summary, pass_threshold, marginal_threshold)
    return JudgeResult(
        score=summary,
        classification=classification,
        reason=f"{classification}: {reason} (pass >= {pass_threshold:g}, marginal >= {marginal_threshold:g})",
        groups=groups,
        verdicts=tuple(verdicts),
    )
