"""Tests for the Kayenta-style canary judge: per-metric classification, scoring and the judge entry point.

Covers a clear latency regression (High; score 0 when the metric is
critical), equal distributions (Pass), the decrease and increase directions,
effect-size gates, muted metrics, NaN strategies, IQR outlier removal,
missing data (Nodata, NodataFailed, critical Nodata, the half-without-data
rule, the replace-strategy quirk), constant series, group weights, threshold
classification and JSON round trips of the result Structs.
"""

from __future__ import annotations

import math
import random

import msgspec
import pytest

from services.analyzer.judge import (
    JudgeResult,
    MetricConfig,
    MetricVerdict,
    classify_metric,
    judge,
    score,
)

pytestmark = pytest.mark.timeout(60)


def _latencies(seed: int, n: int = 60, centre: float = 100.0, spread: float = 8.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(centre, spread) for _ in range(n)]


def _verdict(name: str, classification: str, **extra: object) -> MetricVerdict:
    fields: dict[str, object] = {
        "reason": "",
        "group": "default",
        "weight": 1.0,
        "critical": False,
        "critical_failure": False,
        "muted": False,
    }
    fields.update(extra)
    return msgspec.convert({"name": name, "classification": classification, **fields}, MetricVerdict)


BASELINE = _latencies(1)
SAME = _latencies(2)
REGRESSED = [v * 1.5 for v in _latencies(3)]
IMPROVED = [v * 0.6 for v in _latencies(4)]


# --- classification ---------------------------------------------------------------------------


def test_clear_regression_is_high() -> None:
    verdict = classify_metric(MetricConfig(name="latency"), BASELINE, REGRESSED)
    assert verdict.classification == "High"
    assert verdict.lower is not None and verdict.estimate is not None
    assert verdict.lower > 0.25 * verdict.estimate > 0
    assert verdict.effect_size == pytest.approx(verdict.canary_mean / verdict.baseline_mean)  # type: ignore[operator]
    assert verdict.effect_size == pytest.approx(1.5, rel=0.05)
    assert verdict.p_value is not None and verdict.p_value < 1e-15
    assert (verdict.baseline_n, verdict.canary_n) == (60, 60)
    assert not verdict.critical_failure


def test_critical_regression_zeroes_the_score() -> None:
    configs = [
        MetricConfig(name="latency", critical=True),
        MetricConfig(name="cpu"),
        MetricConfig(name="memory"),
    ]
    result = judge(
        {"latency": BASELINE, "cpu": BASELINE, "memory": BASELINE},
        {"latency": REGRESSED, "cpu": SAME, "memory": SAME},
        configs,
    )
    assert [v.classification for v in result.verdicts] == ["High", "Pass", "Pass"]
    assert result.verdicts[0].critical_failure
    assert "(Critical)" in result.verdicts[0].reason
    assert result.score == 0.0
    assert result.classification == "Fail"
    assert "critical metric failed: latency" in result.reason
    # Not critical: one failing metric out of three.
    relaxed = judge(
        {"latency": BASELINE, "cpu": BASELINE, "memory": BASELINE},
        {"latency": REGRESSED, "cpu": SAME, "memory": SAME},
        [MetricConfig(name=c.name) for c in configs],
    )
    assert relaxed.score == pytest.approx(200 / 3)
    assert relaxed.classification == "Fail"


def test_equal_distributions_pass() -> None:
    for seed in range(10, 20):
        verdict = classify_metric(MetricConfig(name="latency"), BASELINE, _latencies(seed))
        assert verdict.classification == "Pass", verdict.reason
    result = judge({"latency": BASELINE}, {"latency": SAME}, [MetricConfig(name="latency", critical=True)])
    assert (result.score, result.classification) == (100.0, "Pass")


def test_directions() -> None:
    decrease = MetricConfig(name="throughput", direction="decrease")
    increase = MetricConfig(name="latency", direction="increase")
    either = MetricConfig(name="any")
    assert classify_metric(decrease, BASELINE, IMPROVED).classification == "Low"
    assert classify_metric(decrease, BASELINE, REGRESSED).classification == "Pass"
    assert classify_metric(increase, BASELINE, IMPROVED).classification == "Pass"
    assert classify_metric(increase, BASELINE, REGRESSED).classification == "High"
    assert classify_metric(either, BASELINE, IMPROVED).classification == "Low"
    low = classify_metric(either, BASELINE, IMPROVED)
    assert low.upper is not None and low.estimate is not None
    assert low.upper < -0.25 * abs(low.estimate)


def test_effect_size_thresholds() -> None:
    # +50% is significant, but not High when only 1.6x counts; likewise for a 0.6x drop below 0.5x.
    assert (
        classify_metric(MetricConfig(name="m", allowed_increase=1.6), BASELINE, REGRESSED).classification
        == "Pass"
    )
    assert (
        classify_metric(MetricConfig(name="m", allowed_increase=1.4), BASELINE, REGRESSED).classification
        == "High"
    )
    assert (
        classify_metric(MetricConfig(name="m", allowed_decrease=0.5), BASELINE, IMPROVED).classification
        == "Pass"
    )
    # A critical High below critical_increase still fails the metric but not the whole canary.
    mild = classify_metric(MetricConfig(name="m", critical=True, critical_increase=2.0), BASELINE, REGRESSED)
    assert mild.classification == "High" and not mild.critical_failure


def test_muted_metric_is_ignored() -> None:
    result = judge(
        {"latency": BASELINE, "debug": BASELINE},
        {"latency": SAME, "debug": REGRESSED},
        [MetricConfig(name="latency"), MetricConfig(name="debug", muted=True, critical=True)],
    )
    debug = result.verdicts[1]
    assert debug.classification == "High" and debug.muted
    assert (result.score, result.classification) == (100.0, "Pass")
    assert [v.name for v in result.verdicts] == ["latency", "debug"]


def test_nan_strategies() -> None:
    canary = [v if i % 3 == 0 else math.nan for i, v in enumerate(SAME)]
    removed = classify_metric(MetricConfig(name="m", nan_strategy="remove"), BASELINE, canary)
    assert removed.classification == "Pass"
    assert removed.canary_n == 20
    # Replacing NaN with 0 turns two thirds of the canary into zeros: significantly lower.
    replaced = classify_metric(MetricConfig(name="m", nan_strategy="replace"), BASELINE, canary)
    assert replaced.canary_n == 60
    assert replaced.classification == "Low"
    # All NaN: no data when removed, zeros when replaced.
    all_nan = [math.nan] * 10
    assert classify_metric(MetricConfig(name="m"), BASELINE, all_nan).classification == "Nodata"
    replaced_all = classify_metric(MetricConfig(name="m", nan_strategy="replace"), BASELINE, all_nan)
    # ... but a canary mean of 0 leaves Kayenta's mean ratio undefined (NaN), which blocks Low.
    assert replaced_all.effect_size is None
    assert replaced_all.classification == "Pass"


def test_zero_means_follow_kayenta() -> None:
    # Baseline mean 0: effect size 1.0, which meets the default allowed_increase of 1.0.
    errors = classify_metric(MetricConfig(name="errors"), [0.0] * 30, [0.0] * 20 + [1.0] * 10)
    assert errors.effect_size == 1.0
    # Two thirds of the differences are 0, so the shift estimate and the interval's lower end are 0.
    assert (errors.classification, errors.estimate, errors.lower) == ("Pass", 0.0, 0.0)
    spiking = classify_metric(MetricConfig(name="errors"), [0.0] * 30, [1.0] * 30)
    assert (spiking.classification, spiking.effect_size) == ("High", 1.0)
    # Canary mean 0 with a positive baseline: the ratio is undefined and blocks Low.
    verdict = classify_metric(MetricConfig(name="m"), [1.0] * 20 + [2.0] * 20, [0.0] * 40)
    assert verdict.effect_size is None
    assert verdict.classification == "Pass"


def test_outlier_removal_changes_the_effect_size() -> None:
    rng = random.Random(42)
    base = [rng.gauss(100, 2) for _ in range(60)]
    canary = [rng.gauss(110, 2) for _ in range(59)] + [20000.0]
    config = MetricConfig(name="latency", allowed_increase=1.2)
    kept = classify_metric(config, base, canary)
    assert kept.classification == "High"  # one spike pushes the mean ratio to ~4.4
    assert kept.effect_size is not None and kept.effect_size > 4
    trimmed = classify_metric(msgspec.structs.replace(config, remove_outliers=True), base, canary)
    # The fence is the larger of Q3 + 3 IQR and the 99th percentile (~8300 here), so the spike goes.
    assert trimmed.canary_n == 59
    assert trimmed.effect_size == pytest.approx(1.1, rel=0.02)
    assert trimmed.classification == "Pass"  # significant shift, but only ~10%


def test_nodata() -> None:
    plain = classify_metric(MetricConfig(name="m"), BASELINE, [])
    assert (plain.classification, plain.critical_failure) == ("Nodata", False)
    assert plain.reason == "missing canary data for m"
    assert classify_metric(MetricConfig(name="m"), [], []).reason == "missing baseline and canary data for m"
    required = classify_metric(MetricConfig(name="m", must_have_data=True), BASELINE, [])
    assert (required.classification, required.critical_failure) == ("NodataFailed", False)
    critical = classify_metric(MetricConfig(name="m", critical=True, must_have_data=True), [], BASELINE)
    assert (critical.classification, critical.critical_failure) == ("Nodata", True)
    # Kayenta's quirk: with the replace strategy a metric without data passes.
    assert (
        classify_metric(MetricConfig(name="m", nan_strategy="replace"), BASELINE, []).classification == "Pass"
    )
    # Outlier removal never empties a sample.
    assert classify_metric(MetricConfig(name="m", remove_outliers=True), [1.0], [2.0]).canary_n == 1


def test_nodata_in_the_score() -> None:
    configs = [MetricConfig(name=n) for n in ("a", "b", "c", "d")]
    # One of four without data: not counted, the rest pass.
    one = judge({"a": BASELINE, "b": BASELINE, "c": BASELINE}, {"a": SAME, "b": SAME, "c": SAME}, configs)
    assert one.verdicts[3].classification == "Nodata"
    assert (one.score, one.classification) == (100.0, "Pass")
    # Half without data: forced to 0.
    half = judge({"a": BASELINE, "b": BASELINE}, {"a": SAME, "b": SAME}, configs)
    assert (half.score, half.classification) == (0.0, "Fail")
    assert "2 of 4 metrics have no data" in half.reason
    # A critical metric without data fails the canary.
    critical = judge(
        {"a": BASELINE},
        {"a": SAME},
        [MetricConfig(name="a"), MetricConfig(name="b", critical=True), *configs[2:]],
    )
    assert critical.score == 0.0 and "critical metric failed: b" in critical.reason
    # NodataFailed counts as a failing metric in its group.
    failed = judge(
        {"a": BASELINE, "b": BASELINE, "c": BASELINE},
        {"a": SAME, "b": SAME, "c": SAME},
        [*configs[:3], MetricConfig(name="d", must_have_data=True)],
    )
    assert failed.verdicts[3].classification == "NodataFailed"
    assert failed.score == pytest.approx(75.0)
    assert failed.classification == "Marginal"


def test_constant_series() -> None:
    same = classify_metric(MetricConfig(name="m"), [3.0] * 10, [3.0] * 5)
    assert same.classification == "Pass" and same.effect_size == 1.0
    identical = classify_metric(MetricConfig(name="m"), [1.0, 2.0, 3.0], [3.0, 1.0, 2.0])
    assert identical.classification == "Pass" and "identical" in identical.reason
    # Two different constants: the shift interval is exactly [1, 1] (Kayenta needs noise for this).
    stepped = classify_metric(MetricConfig(name="m"), [2.0] * 10, [3.0] * 10)
    assert (stepped.classification, stepped.lower, stepped.upper, stepped.estimate) == ("High", 1.0, 1.0, 1.0)


def test_non_finite_samples_are_errors() -> None:
    verdict = classify_metric(MetricConfig(name="m", critical=True), BASELINE, [*SAME, math.inf])
    assert (verdict.classification, verdict.critical_failure) == ("Error", True)
    result = score([verdict, _verdict("ok", "Pass")])
    assert result.score == 0.0


# --- scoring ----------------------------------------------------------------------------------


def test_group_weights_follow_kayenta() -> None:
    verdicts = [
        _verdict("lat1", "Pass", group="latency"),
        _verdict("lat2", "High", group="latency"),
        _verdict("err1", "Pass", group="errors"),
        _verdict("cpu1", "Low", group="saturation"),
        _verdict("cpu2", "Pass", group="saturation", weight=3.0),
    ]
    # Unweighted: each group a third; latency 50, errors 100, saturation 75.
    equal = score(verdicts)
    assert equal.groups == {"latency": 50.0, "errors": 100.0, "saturation": 75.0}
    assert equal.score == pytest.approx((50 + 100 + 75) / 3)
    # latency 60%, the other two share the remaining 40% equally.
    weighted = score(verdicts, group_weights={"latency": 60})
    assert weighted.score == pytest.approx(0.6 * 50 + 0.2 * 100 + 0.2 * 75)
    # A group without data keeps its weight: it just contributes nothing.
    with_gap = score([*verdicts, _verdict("mem1", "Nodata", group="memory")], group_weights={"latency": 60})
    assert with_gap.groups["memory"] == 0.0
    assert with_gap.score == pytest.approx(0.6 * 50 + (40 / 3) * (1 + 0.75))
    with pytest.raises(ValueError, match="percentages"):
        score(verdicts, group_weights={"latency": 80, "errors": 30})


def test_thresholds() -> None:
    verdicts = [_verdict(f"m{i}", "Pass") for i in range(9)] + [_verdict("bad", "High")]
    assert score(verdicts).classification == "Marginal"  # 90: below 95, at least 75
    assert score(verdicts, pass_threshold=90).classification == "Pass"
    assert score(verdicts, pass_threshold=99, marginal_threshold=91).classification == "Fail"
    assert score([_verdict("only", "Pass", muted=True)]).classification == "Fail"  # nothing scored
    with pytest.raises(ValueError):
        score(verdicts, pass_threshold=70, marginal_threshold=80)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        MetricConfig(name="m", confidence=1.0)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"name": "m", "weight": -1}, MetricConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"name": "m", "direction": "sideways"}, MetricConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"name": "m", "unknown": 1}, MetricConfig)
    with pytest.raises(ValueError, match="unique"):
        judge({}, {}, [MetricConfig(name="m"), MetricConfig(name="m")])


def test_result_round_trips_as_json() -> None:
    result = judge(
        {"latency": BASELINE, "errors": [0.0, math.nan, 1.0]},
        {"latency": REGRESSED, "errors": [math.nan, math.nan]},
        [MetricConfig(name="latency", group="latency"), MetricConfig(name="errors", group="errors")],
        pass_threshold=90,
        marginal_threshold=75,
        group_weights={"latency": 70, "errors": 30},
    )
    encoded = msgspec.json.encode(result)
    assert msgspec.json.decode(encoded, type=JudgeResult) == result
    assert b"NaN" not in encoded
