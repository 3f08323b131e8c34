"""The canary judge as a metric provider, configured through Argo's ``plugin`` provider field.

The YAML stays valid for Argo Rollouts (``provider.plugin`` is free-form there)::

    provider:
      plugin:
        rollouts/judge:
          source:                  # exactly one of traffic / prometheus
            traffic: {address: "http://127.0.0.1:9465", namespace: default, rollout: my-app, window: 60s}
            # prometheus:
            #   address: http://prometheus:9090      # default: $ARGO_ROLLOUTS_PROMETHEUS_ADDRESS
            #   rangeQuery: {start: "now() - 5m", end: "now()", step: 10s}
            #   timeout: 30                          # seconds; also insecure, headers [{key, value}]
          thresholds: {pass: 95, marginal: 75}      # Spinnaker's defaults
          groupWeights: {latency: 60, errors: 40}   # optional, percentages (Kayenta groupWeights)
          metrics:
          - name: error-rate
            series: errorRate      # traffic: requests | errorRate | latencyP50 | latencyP99
            # baselineQuery / canaryQuery: PromQL range queries (prometheus source); every value is a sample
            direction: increase    # increase | decrease | either (default)
            critical: true
            nanStrategy: remove    # remove (default) | replace
            removeOutliers: false
            allowedIncrease: 1.1   # also allowedDecrease, criticalIncrease, criticalDecrease
            weight: 1
            group: default
            # also: mustHaveData, muted, confidence (0.98), tolerance (0.25)

The traffic source reads the traffic-shifter's per-second samples of the stable (baseline)
and canary revisions (``GET /api/v1/rollouts/{namespace}/{rollout}/samples?window=<seconds>``,
see :mod:`services.traffic_shifter.samples`); ``null`` samples (no traffic in a second) are
NaN and go through the metric's NaN strategy. The prometheus source runs each metric's two
range queries over ``rangeQuery`` and flattens every series' values into one sample.

The measurement's value is the judgement as JSON (score, classification, per-metric
verdicts); its phase is Successful / Inconclusive / Failed for Pass / Marginal / Fail, as in
Argo's kayenta provider. Bad configuration and unreachable sources are
:class:`MeasurementError`\\s (phase Error).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Final, Literal

import aiohttp
import msgspec
from yarl import URL

from services.analyzer.judge import (
    JudgeResult,
    MetricConfig,
    MetricVerdict,
    judge,
)
from services.analyzer.judge.classify import KAYENTA_CONFIDENCE, KAYENTA_TOLERANCE, Direction
from services.analyzer.judge.score import DEFAULT_MARGINAL_THRESHOLD, DEFAULT_PASS_THRESHOLD
from services.analyzer.judge.statistics import NanStrategy
from services.analyzer.measuring import Measured  # measuring imports this module lazily
from services.analyzer.providers.errors import MeasurementError
from services.analyzer.providers.prometheus import PrometheusQuery, measure_prometheus, resolve_time
from shared.durations import parse_go_duration, parse_pause_duration

__all__ = [
    "PLUGIN_NAME",
    "JudgeConfig",
    "JudgeMetric",
    "JudgeSource",
    "JudgeThresholds",
    "PrometheusSource",
    "TrafficSource",
    "judge_message",
    "judge_value",
    "measure_judge",
    "parse_judge_config",
]

PLUGIN_NAME: Final = "rollouts/judge"
TRAFFIC_SERIES: Final = ("requests", "errorRate", "latencyP50", "latencyP99")
DEFAULT_TRAFFIC_TIMEOUT_SECONDS: Final = 10.0
_PHASES: Final = {"Pass": "Successful", "Marginal": "Inconclusive", "Fail": "Failed"}
_SNIPPET: Final = 200

Series = Literal["requests", "errorRate", "latencyP50", "latencyP99"]


class _Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """camelCase names, unknown fields rejected (a typo must not silently change a judgement)."""


class TrafficSource(_Config):
    address: str  # the traffic-shifter's admin address, e.g. http://127.0.0.1:9465
    namespace: str
    rollout: str
    window: str | int = "60s"  # seconds or a Go duration
    timeout: float = DEFAULT_TRAFFIC_TIMEOUT_SECONDS  # seconds; 0 means the default


class RangeQuery(_Config):
    start: str
    end: str
    step: str


class Header(_Config):
    key: str
    value: str


class PrometheusSource(_Config):
    range_query: RangeQuery
    address: str = ""  # empty: ARGO_ROLLOUTS_PROMETHEUS_ADDRESS, as for the prometheus provider
    timeout: float | None = None  # seconds
    insecure: bool = False
    headers: list[Header] = []


class JudgeSource(_Config):
    traffic: TrafficSource | None = None
    prometheus: PrometheusSource | None = None


class JudgeThresholds(_Config):
    pass_: float = msgspec.field(default=DEFAULT_PASS_THRESHOLD, name="pass")
    marginal: float = DEFAULT_MARGINAL_THRESHOLD


class JudgeMetric(_Config):
    """One judged metric: where its samples come from plus :class:`MetricConfig`'s knobs."""

    name: str
    series: Series | None = None  # traffic source
    baseline_query: str | None = None  # prometheus source
    canary_query: str | None = None
    direction: Direction = "either"
    nan_strategy: NanStrategy = "remove"
    remove_outliers: bool = False
    confidence: float = KAYENTA_CONFIDENCE
    allowed_increase: float = 1.0
    allowed_decrease: float = 1.0
    critical_increase: float = 1.0
    critical_decrease: float = 1.0
    critical: bool = False
    must_have_data: bool = False
    muted: bool = False
    weight: float = 1.0
    group: str = "default"
    tolerance: float = KAYENTA_TOLERANCE

    def metric_config(self) -> MetricConfig:
        return MetricConfig(
            name=self.name,
            direction=self.direction,
            nan_strategy=self.nan_strategy,
            remove_outliers=self.remove_outliers,
            confidence=self.confidence,
            allowed_increase=self.allowed_increase,
            allowed_decrease=self.allowed_decrease,
            critical_increase=self.critical_increase,
            critical_decrease=self.critical_decrease,
            critical=self.critical,
            must_have_data=self.must_have_data,
            muted=self.muted,
            weight=self.weight,
            group=self.group,
            tolerance=self.tolerance,
        )


class JudgeConfig(_Config):
    source: JudgeSource
    metrics: list[JudgeMetric]
    thresholds: JudgeThresholds = msgspec.field(default_factory=JudgeThresholds)
    group_weights: dict[str, float] | None = None


def _fail(where: str, problem: str) -> MeasurementError:
    return MeasurementError(f"plugin {PLUGIN_NAME}: {where}: {problem}")


def _window_seconds(source: TrafficSource) -> float:
    try:
        seconds = parse_pause_duration(source.window)
    except ValueError as exc:
        raise _fail("source.traffic.window", str(exc)) from None
    if not seconds > 0:
        raise _fail("source.traffic.window", f"must be positive, got {source.window!r}")
    return seconds


def _check_url(where: str, address: str) -> None:
    try:
        url = URL(address)
    except (ValueError, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise _fail(where, f"{address!r} is not an http(s) URL")


def _check_source(config: JudgeConfig) -> None:
    source = config.source
    chosen = [
        name for name, value in (("traffic", source.traffic), ("prometheus", source.prometheus)) if value
    ]
    if len(chosen) != 1:
        found = ", ".join(chosen) if chosen else "none"
        raise _fail("source", f"set exactly one of traffic, prometheus (found {found})")
    if source.traffic is not None:
        traffic = source.traffic
        _check_url("source.traffic.address", traffic.address)
        for field, value in (("namespace", traffic.namespace), ("rollout", traffic.rollout)):
            if not value or "/" in value:
                raise _fail(f"source.traffic.{field}", f"must be a non-empty name without '/', got {value!r}")
        _window_seconds(traffic)
        if traffic.timeout < 0 or not math.isfinite(traffic.timeout):
            raise _fail("source.traffic.timeout", "must be a finite number of seconds >= 0")
    if source.prometheus is not None:
        prom = source.prometheus
        if prom.address:
            _check_url("source.prometheus.address", prom.address)
        rng = prom.range_query
        for field, value in (("start", rng.start), ("end", rng.end)):
            try:
                resolve_time(value, now=0.0)
            except ValueError as exc:
                raise _fail(f"source.prometheus.rangeQuery.{field}", str(exc)) from None
        try:
            step = parse_go_duration(rng.step)
        except ValueError as exc:
            raise _fail("source.prometheus.rangeQuery.step", str(exc)) from None
        if not step > 0:
            raise _fail("source.prometheus.rangeQuery.step", f"must be positive, got {rng.step!r}")
        if prom.timeout is not None and (prom.timeout < 0 or not math.isfinite(prom.timeout)):
            raise _fail("source.prometheus.timeout", "must be a finite number of seconds >= 0")


def _check_metrics(config: JudgeConfig) -> None:
    if not config.metrics:
        raise _fail("metrics", "at least one metric is required")
    traffic = config.source.traffic is not None
    seen: set[str] = set()
    for i, metric in enumerate(config.metrics):
        where = f"metrics[{i}]"
        if not metric.name:
            raise _fail(f"{where}.name", "must not be empty")
        if metric.name in seen:
            raise _fail(f"{where}.name", f"{metric.name!r} is repeated; metric names must be unique")
        seen.add(metric.name)
        if traffic:
            if metric.series is None:
                raise _fail(
                    f"{where}.series", f"required with the traffic source: one of {', '.join(TRAFFIC_SERIES)}"
                )
            for field, value in (
                ("baselineQuery", metric.baseline_query),
                ("canaryQuery", metric.canary_query),
            ):
                if value is not None:
                    raise _fail(f"{where}.{field}", "only applies to the prometheus source")
        else:
            if metric.series is not None:
                raise _fail(f"{where}.series", "only applies to the traffic source")
            for field, value in (
                ("baselineQuery", metric.baseline_query),
                ("canaryQuery", metric.canary_query),
            ):
                if not value or not value.strip():
                    raise _fail(f"{where}.{field}", "required with the prometheus source")
        try:
            metric.metric_config()
        except ValueError as exc:
            raise _fail(where, str(exc)) from None


def parse_judge_config(plugin: dict[str, Any] | None) -> JudgeConfig | None:
    """The ``rollouts/judge`` block of ``provider.plugin``; None if absent, MeasurementError if invalid."""
    if not plugin or PLUGIN_NAME not in plugin:
        return None
    raw = plugin[PLUGIN_NAME]
    try:
        # Lax: numbers and booleans substituted from {{args.*}} arrive as strings.
        config = msgspec.convert(raw, JudgeConfig, strict=False)
    except msgspec.ValidationError as exc:
        detail = str(exc).replace("`$", f"`{PLUGIN_NAME}")
        if " - at `" not in detail:
            detail += f" - at `{PLUGIN_NAME}`"
        raise MeasurementError(f"plugin {PLUGIN_NAME}: {detail}") from None
    _check_source(config)
    _check_metrics(config)
    thresholds = config.thresholds
    if not 0 <= thresholds.marginal <= thresholds.pass_ <= 100:
        raise _fail(
            "thresholds",
            f"need 0 <= marginal ({thresholds.marginal:g}) <= pass ({thresholds.pass_:g}) <= 100",
        )
    for group, weight in (config.group_weights or {}).items():
        if weight < 0 or not math.isfinite(weight):
            raise _fail(f"groupWeights.{group}", "must be a finite number >= 0")
    if math.fsum((config.group_weights or {}).values()) > 100 + 1e-9:
        raise _fail("groupWeights", "percentages must not add up to more than 100")
    return config


# --- fetching samples ---------------------------------------------------------------------------


def _floats(values: Any, where: str) -> list[float]:
    if values is None:
        return []
    if not isinstance(values, list):
        raise MeasurementError(f"{where}: expected a list of numbers")
    out: list[float] = []
    for value in values:
        if value is None:
            out.append(math.nan)  # no traffic in that second
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out.append(float(value))
        else:
            raise MeasurementError(f"{where}: expected numbers, got {value!r}")
    return out


async def _traffic_samples(
    config: JudgeConfig, source: TrafficSource, session: aiohttp.ClientSession
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
    window = _window_seconds(source)
    base = URL(source.address)
    prefix = base.path.rstrip("/")
    url = (
        base.with_query(None)
        .with_fragment(None)
        .with_path(f"{prefix}/api/v1/rollouts/{source.namespace}/{source.rollout}/samples")
    )
    shown = f"{source.address} ({source.namespace}/{source.rollout})"
    seconds = source.timeout or DEFAULT_TRAFFIC_TIMEOUT_SECONDS
    try:
        async with session.get(
            url, params={"window": repr(window)}, timeout=aiohttp.ClientTimeout(total=seconds)
        ) as response:
            status, raw = response.status, await response.read()
    except TimeoutError:
        raise MeasurementError(f"{shown}: traffic samples request timed out after {seconds:g}s") from None
    except aiohttp.ClientError as exc:
        raise MeasurementError(
            f"{shown}: traffic samples request failed: {str(exc) or type(exc).__name__}"
        ) from None
    if not 200 <= status < 300:
        snippet = raw[:_SNIPPET].decode("utf-8", errors="replace").strip()
        raise MeasurementError(f"{shown}: traffic samples request answered HTTP {status}: {snippet}")
    try:
        document = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        document = None
    if not isinstance(document, dict):
        raise MeasurementError(f"{shown}: traffic samples answer is not a JSON object")
    baseline: dict[str, list[float]] = {}
    canary: dict[str, list[float]] = {}
    for role, target in (("stable", baseline), ("canary", canary)):
        series = document.get(role)
        if series is None:
            continue  # no revision in that role: every metric gets Nodata for that side
        if not isinstance(series, dict):
            raise MeasurementError(f"{shown}: traffic samples {role!r} is not an object")
        for metric in config.metrics:
            assert metric.series is not None
            target[metric.name] = _floats(series.get(metric.series), f"{shown}: {role}.{metric.series}")
    context = {
        "source": "traffic",
        "window": window,
        "stableRevision": document.get("stableRevision"),
        "canaryRevision": document.get("canaryRevision"),
    }
    return baseline, canary, context


async def _prometheus_samples(
    config: JudgeConfig, source: PrometheusSource, session: aiohttp.ClientSession, now: float
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
    rng = source.range_query

    async def run(query: str) -> list[float]:
        spec = PrometheusQuery(
            address=source.address,
            query=query,
            insecure=source.insecure,
            headers={h.key: h.value for h in source.headers},
            range_start=rng.start,
            range_end=rng.end,
            range_step=rng.step,
        )
        if source.timeout is not None:
            spec.timeout_seconds = source.timeout
        value = await measure_prometheus(spec, session, now=now)
        if isinstance(value, float):
            return [value]
        if isinstance(value, list):
            return [float(v) for v in value]
        raise MeasurementError(f"query {query!r} returned a {type(value).__name__}, not numbers")

    queries: list[str] = []
    for metric in config.metrics:
        assert metric.baseline_query is not None and metric.canary_query is not None
        queries += [metric.baseline_query, metric.canary_query]
    results = await asyncio.gather(*(run(q) for q in queries))
    baseline = {m.name: results[2 * i] for i, m in enumerate(config.metrics)}
    canary = {m.name: results[2 * i + 1] for i, m in enumerate(config.metrics)}
    context = {
        "source": "prometheus",
        "start": resolve_time(rng.start, now=now),
        "end": resolve_time(rng.end, now=now),
        "step": rng.step,
    }
    return baseline, canary, context


# --- the result ---------------------------------------------------------------------------------


def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _verdict_value(verdict: MetricVerdict) -> dict[str, Any]:
    interval = (
        [_number(verdict.lower), _number(verdict.upper)]
        if verdict.lower is not None and verdict.upper is not None
        else None
    )
    return {
        "name": verdict.name,
        "classification": verdict.classification,
        "reason": verdict.reason,
        "group": verdict.group,
        "weight": verdict.weight,
        "critical": verdict.critical,
        "criticalFailure": verdict.critical_failure,
        "muted": verdict.muted,
        "pValue": _number(verdict.p_value),
        "estimate": _number(verdict.estimate),
        "interval": interval,
        "effectSize": _number(verdict.effect_size),
        "baselineMean": _number(verdict.baseline_mean),
        "canaryMean": _number(verdict.canary_mean),
        "baselineCount": verdict.baseline_n,
        "canaryCount": verdict.canary_n,
    }


def judge_value(result: JudgeResult, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The judgement as JSON builtins (the measurement's value); non-finite numbers become null."""
    value: dict[str, Any] = {
        "score": result.score,
        "classification": result.classification,
        "reason": result.reason,
        "groups": dict(result.groups),
        "metrics": [_verdict_value(v) for v in result.verdicts],
    }
    if context:
        value.update(context)
    return value


def _describe(verdict: MetricVerdict) -> str:
    details: list[str] = []
    if verdict.critical_failure:
        details.append("critical")
    if verdict.baseline_mean is not None and verdict.canary_mean is not None:
        details.append(f"canary mean {verdict.canary_mean:.4g} vs baseline {verdict.baseline_mean:.4g}")
    if verdict.effect_size is not None:
        details.append(f"effect size {verdict.effect_size:.3g}")
    if verdict.p_value is not None:
        details.append(f"p={verdict.p_value:.2g}")
    if verdict.classification in ("Nodata", "NodataFailed", "Error") and verdict.reason:
        details.append(verdict.reason)
    return f"{verdict.name} {verdict.classification}" + (f" ({', '.join(details)})" if details else "")


def judge_message(result: JudgeResult) -> str:
    """``score 62.5: error-rate High (critical, ...)``: the metrics that did not pass, or that all did."""
    scored = [v for v in result.verdicts if not v.muted]
    failing = [v for v in scored if v.classification != "Pass"]
    head = f"score {result.score:.4g} ({result.classification})"
    if failing:
        return f"{head}: " + "; ".join(_describe(v) for v in failing)
    return f"{head}: all {len(scored)} metrics passed"


async def measure_judge(config: JudgeConfig, session: aiohttp.ClientSession, *, now: float) -> Measured:
    """Fetch baseline (stable) and canary samples from the configured source and judge them."""
    if config.source.traffic is not None:
        baseline, canary, context = await _traffic_samples(config, config.source.traffic, session)
    elif config.source.prometheus is not None:
        baseline, canary, context = await _prometheus_samples(config, config.source.prometheus, session, now)
    else:  # parse_judge_config guarantees one source
        raise MeasurementError(f"plugin {PLUGIN_NAME}: source: set exactly one of traffic, prometheus")
    try:
        result = judge(
            baseline,
            canary,
            [m.metric_config() for m in config.metrics],
            pass_threshold=config.thresholds.pass_,
            marginal_threshold=config.thresholds.marginal,
            group_weights=config.group_weights,
        )
    except ValueError as exc:
        raise MeasurementError(f"plugin {PLUGIN_NAME}: {exc}") from None
    return Measured(
        value=judge_value(result, context),
        phase=_PHASES[result.classification],
        message=judge_message(result),
    )


def check_template(template: Any) -> None:
    """Lint/apply-time check of every `rollouts/judge` plugin config in an (Cluster)AnalysisTemplate."""
    from shared.specs import SpecError

    for i, metric in enumerate(template.spec.metrics or []):
        plugin = metric.provider.plugin if metric.provider is not None else None
        if not plugin:
            continue
        try:
            parse_judge_config(plugin)
        except MeasurementError as e:
            name = template.metadata.name if template.metadata else "?"
            raise SpecError(f"spec.metrics[{i}].provider.plugin", str(e)).with_obj(
                f"{type(template).__name__}/{name}"
            ) from None
