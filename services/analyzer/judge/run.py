"""One canary judgement: classify every configured metric, then score the verdicts (Kayenta's NetflixACAJudge)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.analyzer.judge.classify import MetricConfig, classify_metric
from services.analyzer.judge.score import (
    DEFAULT_MARGINAL_THRESHOLD,
    DEFAULT_PASS_THRESHOLD,
    JudgeResult,
    score,
)

__all__ = ["judge"]


def judge(
    baseline: Mapping[str, Sequence[float]],
    canary: Mapping[str, Sequence[float]],
    configs: Sequence[MetricConfig],
    *,
    pass_threshold: float = DEFAULT_PASS_THRESHOLD,
    marginal_threshold: float = DEFAULT_MARGINAL_THRESHOLD,
    group_weights: Mapping[str, float] | None = None,
) -> JudgeResult:
    """Judge the canary series against the baseline series, metric by metric, in ``configs`` order.

    A metric missing from either mapping has no data for that side; series
    without a config are ignored.  Raises ValueError on duplicate metric names
    or invalid thresholds or group weights.
    """
    names = [config.name for config in configs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"metric names must be unique, repeated: {', '.join(duplicates)}")
    verdicts = [classify_metric(c, baseline.get(c.name, ()), canary.get(c.name, ())) for c in configs]
    return score(
        verdicts,
        group_weights=group_weights,
        pass_threshold=pass_threshold,
        marginal_threshold=marginal_threshold,
    )
