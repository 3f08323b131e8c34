"""Per-metric canary verdicts, following Kayenta's ``MannWhitneyClassifier`` (NetflixACAJudge-v1.0).

For one metric: apply the NaN strategy, optionally drop IQR outliers, then
compare canary against baseline.  The metric is **High** when the whole
confidence interval of the Hodges-Lehmann shift (canary - baseline) lies above
``+tolerance * |estimate|``, the direction allows an increase and the effect
size (canary mean / baseline mean) reaches ``allowed_increase``; **Low**
mirrors it; otherwise **Pass**.  Significance is carried by the interval: it
excludes zero exactly when the (asymptotic, continuity-corrected) rank test
rejects at ``1 - confidence``, which is why Kayenta gates on the interval and
not on the p-value; the p-value is reported for humans.

Kayenta details kept on purpose:

* the interval comes from the normal approximation (Kayenta's
  ``MannWhitney.scala`` always uses it), with a 0.25 tolerance band;
* when the baseline mean is 0 the effect size is 1.0; when only the canary
  mean is 0 it is undefined (NaN in Kayenta, ``None`` here) and blocks High/Low;
* identical samples, or samples that all share one value, Pass outright;
* an empty sample after cleaning is Nodata with the ``remove`` strategy
  (NodataFailed when ``must_have_data`` and not critical; a critical Nodata
  fails the canary), but Pass with the ``replace`` strategy;
* a critical metric fails the whole canary when it is High with effect size
  at least ``critical_increase`` (Low: at most ``critical_decrease``), or on
  Nodata / Error.

Both samples of two constant but different series tie everywhere; Kayenta
adds Gaussian noise to get an interval, whereas here the interval is exact
(every pairwise difference is the same), which gives the verdict the noise
was approximating without randomness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal

import msgspec

from services.analyzer.judge.statistics import (
    NanStrategy,
    handle_nans,
    hodges_lehmann,
    iqr_outliers_removed,
    mann_whitney_u,
    mean,
)

__all__ = [
    "KAYENTA_CONFIDENCE",
    "KAYENTA_IQR_FACTOR",
    "KAYENTA_TOLERANCE",
    "Classification",
    "Direction",
    "MetricConfig",
    "MetricVerdict",
    "classify_metric",
]

Direction = Literal["increase", "decrease", "either"]
Classification = Literal["Pass", "High", "Low", "NodataFailed", "Nodata", "Error"]

# NetflixACAJudge: MannWhitneyClassifier(tolerance = 0.25, confLevel = 0.98), IQRDetector(factor = 3.0).
KAYENTA_CONFIDENCE: Final = 0.98
KAYENTA_TOLERANCE: Final = 0.25
KAYENTA_IQR_FACTOR: Final = 3.0


class MetricConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one metric is judged; the Kayenta ``analysisConfigurations.canary`` knobs."""

    name: str
    direction: Direction = "either"  # which change is a failure
    nan_strategy: NanStrategy = "remove"
    remove_outliers: bool = False  # Kayenta's outliers.strategy: keep (default) or remove
    confidence: float = KAYENTA_CONFIDENCE  # two-sided level of the shift interval
    allowed_increase: float = 1.0  # High needs canary_mean / baseline_mean >= this
    allowed_decrease: float = 1.0  # Low needs canary_mean / baseline_mean <= this
    critical_increase: float = 1.0  # a critical High fails the canary from this ratio up
    critical_decrease: float = 1.0  # a critical Low fails the canary from this ratio down
    critical: bool = False  # a failure of this metric fails the whole canary
    must_have_data: bool = False  # missing data is a failure (NodataFailed) instead of Nodata
    muted: bool = False  # report only: never scored (Kayenta's "report-only" criticality)
    weight: float = 1.0  # weight within its group
    group: str = "default"
    tolerance: float = KAYENTA_TOLERANCE  # dead band around 0, as a fraction of |estimate|

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"metric {self.name}: confidence must be strictly between 0 and 1")
        if self.weight < 0 or not math.isfinite(self.weight):
            raise ValueError(f"metric {self.name}: weight must be a finite number >= 0")
        if self.tolerance < 0 or not math.isfinite(self.tolerance):
            raise ValueError(f"metric {self.name}: tolerance must be a finite number >= 0")
        for field in ("allowed_increase", "allowed_decrease", "critical_increase", "critical_decrease"):
            if not math.isfinite(getattr(self, field)):
                raise ValueError(f"metric {self.name}: {field} must be finite")


class MetricVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome for one metric; statistics are None where they were not computed."""

    name: str
    classification: Classification
    reason: str
    group: str
    weight: float
    critical: bool  # as configured
    critical_failure: bool  # Kayenta's result.critical: this verdict alone zeroes the score
    muted: bool
    p_value: float | None = None  # two-sided Mann-Whitney p-value (scipy's auto method)
    estimate: float | None = None  # Hodges-Lehmann shift, canary - baseline
    lower: float | None = None
    upper: float | None = None
    effect_size: float | None = None  # canary_mean / baseline_mean (1.0 when baseline_mean is 0)
    baseline_mean: float | None = None
    canary_mean: float | None = None
    baseline_n: int = 0  # samples left after NaN handling and outlier removal
    canary_n: int = 0


def _clean(values: Sequence[float], config: MetricConfig) -> list[float]:
    cleaned = handle_nans(values, config.nan_strategy)
    if config.remove_outliers:
        cleaned = iqr_outliers_removed(cleaned, KAYENTA_IQR_FACTOR, reduce_sensitivity=True)
    return cleaned


def _effect_size(baseline: Sequence[float], canary: Sequence[float]) -> float | None:
    """Kayenta's calculateDeviation: 1.0 on a zero baseline mean, undefined on a zero canary mean."""
    baseline_mean, canary_mean = mean(baseline), mean(canary)
    if baseline_mean == 0.0:
        return 1.0
    if canary_mean == 0.0:
        return None
    return canary_mean / baseline_mean


class _Shift(msgspec.Struct, frozen=True, kw_only=True):
    p_value: float
    estimate: float
    lower: float
    upper: float
    effect_size: float | None


def _verdict(
    config: MetricConfig,
    classification: Classification,
    reason: str,
    *,
    critical_failure: bool,
    baseline: Sequence[float] = (),
    canary: Sequence[float] = (),
    effect_size: float | None = None,
    shift: _Shift | None = None,
) -> MetricVerdict:
    return MetricVerdict(
        name=config.name,
        classification=classification,
        reason=reason,
        group=config.group,
        weight=config.weight,
        critical=config.critical,
        critical_failure=critical_failure,
        muted=config.muted,
        p_value=shift.p_value if shift else None,
        estimate=shift.estimate if shift else None,
        lower=shift.lower if shift else None,
        upper=shift.upper if shift else None,
        effect_size=shift.effect_size if shift else effect_size,
        baseline_mean=mean(baseline) if baseline else None,
        canary_mean=mean(canary) if canary else None,
        baseline_n=len(baseline),
        canary_n=len(canary),
    )


def classify_metric(
    config: MetricConfig, baseline: Sequence[float], canary: Sequence[float]
) -> MetricVerdict:
    """Judge one metric's canary samples against its baseline samples."""
    try:
        base = _clean(baseline, config)
        can = _clean(canary, config)
    except (TypeError, ValueError) as exc:
        return _verdict(config, "Error", f"{config.name}: {exc}", critical_failure=config.critical)

    if not base or not can:
        missing = " and ".join(label for label, values in (("baseline", base), ("canary", can)) if not values)
        if config.nan_strategy == "replace":
            reason = f"no {missing} data for {config.name}; the replace NaN strategy passes it"
            return _verdict(config, "Pass", reason, critical_failure=False, baseline=base, canary=can)
        reason = f"missing {missing} data for {config.name}"
        if config.must_have_data and not config.critical:
            return _verdict(config, "NodataFailed", reason, critical_failure=False, baseline=base, canary=can)
        return _verdict(config, "Nodata", reason, critical_failure=config.critical, baseline=base, canary=can)

    if not all(math.isfinite(v) for v in (*base, *can)):
        reason = f"{config.name}: samples must be finite numbers"
        return _verdict(config, "Error", reason, critical_failure=config.critical)
    if sorted(base) == sorted(can) or len(set(base) | set(can)) == 1:
        what = "are identical" if sorted(base) == sorted(can) else "all have the same value"
        reason = f"the canary and baseline samples of {config.name} {what}"
        return _verdict(
            config, "Pass", reason, critical_failure=False, baseline=base, canary=can, effect_size=1.0
        )

    try:
        test = mann_whitney_u(can, base)
        interval = hodges_lehmann(can, base, config.confidence, method="asymptotic")
    except (ValueError, ArithmeticError) as exc:
        return _verdict(config, "Error", f"{config.name}: {exc}", critical_failure=config.critical)
    effect = _effect_size(base, can)
    shift = _Shift(
        p_value=test.p_value,
        estimate=interval.estimate,
        lower=interval.lower,
        upper=interval.upper,
        effect_size=effect,
    )
    band = config.tolerance * abs(shift.estimate)
    described = f"{config.confidence:.0%} interval [{shift.lower:.6g}, {shift.upper:.6g}] of the shift {shift.estimate:.6g}"
    ratio = "undefined" if effect is None else f"{effect:.4g}"

    if (
        config.direction in ("increase", "either")
        and shift.lower > band
        and effect is not None
        and effect >= config.allowed_increase
    ):
        failed = config.critical and effect >= config.critical_increase
        reason = (
            f"{config.name} was classified as High{' (Critical)' if failed else ''}: {described} lies above "
            f"+{band:.6g} and the effect size {ratio} >= {config.allowed_increase:g}"
        )
        return _verdict(
            config, "High", reason, critical_failure=failed, baseline=base, canary=can, shift=shift
        )
    if (
        config.direction in ("decrease", "either")
        and shift.upper < -band
        and effect is not None
        and effect <= config.allowed_decrease
    ):
        failed = config.critical and effect <= config.critical_decrease
        reason = (
            f"{config.name} was classified as Low{' (Critical)' if failed else ''}: {described} lies below "
            f"-{band:.6g} and the effect size {ratio} <= {config.allowed_decrease:g}"
        )
        return _verdict(
            config, "Low", reason, critical_failure=failed, baseline=base, canary=can, shift=shift
        )
    reason = f"{config.name} passed: {described}, effect size {ratio}, direction {config.direction}"
    return _verdict(config, "Pass", reason, critical_failure=False, baseline=base, canary=can, shift=shift)
