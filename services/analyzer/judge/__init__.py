"""A statistical canary judge after Kayenta's NetflixACAJudge: pure functions, msgspec Structs in and out.

``judge(baseline, canary, configs)`` classifies each metric with a Mann-Whitney
test and a Hodges-Lehmann shift interval (:mod:`.classify`, built on
:mod:`.statistics`) and scores the verdicts by weighted groups (:mod:`.score`).
"""

from services.analyzer.judge.classify import (
    Classification,
    Direction,
    MetricConfig,
    MetricVerdict,
    classify_metric,
)
from services.analyzer.judge.run import judge
from services.analyzer.judge.score import (
    DEFAULT_MARGINAL_THRESHOLD,
    DEFAULT_PASS_THRESHOLD,
    JudgeResult,
    ScoreClassification,
    score,
)
from services.analyzer.judge.statistics import (
    MannWhitneyResult,
    NanStrategy,
    ShiftEstimate,
    handle_nans,
    hodges_lehmann,
    iqr_outliers_removed,
    mann_whitney_u,
)

__all__ = [
    "DEFAULT_MARGINAL_THRESHOLD",
    "DEFAULT_PASS_THRESHOLD",
    "Classification",
    "Direction",
    "JudgeResult",
    "MannWhitneyResult",
    "MetricConfig",
    "MetricVerdict",
    "NanStrategy",
    "ScoreClassification",
    "ShiftEstimate",
    "classify_metric",
    "handle_nans",
    "hodges_lehmann",
    "iqr_outliers_removed",
    "judge",
    "mann_whitney_u",
    "score",
]
