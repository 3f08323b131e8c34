"""Semantic validation of decoded specs, mirroring Argo Rollouts' ValidateRollout and metric checks."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shared.durations import parse_go_duration, parse_pause_duration
from shared.specs.analysis import (
    AnalysisTemplate,
    AnalysisTemplateSpec,
    ClusterAnalysisTemplate,
    Metric,
    MetricProvider,
)
from shared.specs.errors import SpecError, SpecErrors
from shared.specs.meta import IntOrString, LabelSelector
from shared.specs.pods import Container, PodTemplateSpec, Probe
from shared.specs.rollouts import (
    STEP_KINDS,
    AnalysisRunArgument,
    AntiAffinity,
    BlueGreenStrategy,
    CanaryStep,
    CanaryStrategy,
    ReplicaProgressThreshold,
    Rollout,
    RolloutAnalysis,
    RolloutExperimentStep,
    RolloutTrafficRouting,
    StringMatch,
)

__all__ = [
    "ConditionChecker",
    "analysis_template_errors",
    "int_or_percent",
    "int_value",
    "rollout_errors",
    "selector_matches",
    "validate_analysis_template",
    "validate_rollout",
]

# Returns an error message for a bad successCondition/failureCondition, or None when it is fine.
ConditionChecker = Callable[[str], "str | None"]

# Argo's defaults, needed because several rules compare against defaulted values.
DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
DEFAULT_MAX_SURGE: IntOrString = "25%"
DEFAULT_MAX_UNAVAILABLE: IntOrString = "25%"
DEFAULT_MAX_TRAFFIC_WEIGHT = 100

_PERCENT = re.compile(r"(\d+)%")
_INT_STR = re.compile(r"[+-]?\d+")
_PLACEHOLDER = re.compile(r"\{\{.+?\}\}")
_PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SELECTOR_OPS = {"In", "NotIn", "Exists", "DoesNotExist"}
# resource.Quantity syntax: number with an optional binary/decimal SI suffix or exponent.
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?")


class _Collector:
    """Accumulates errors so every problem can be reported, not just the first."""

    def __init__(self) -> None:
        self.errors: list[SpecError] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append(SpecError(path, message))

    def non_negative(self, value: int | None, path: str) -> None:
        if value is not None and value < 0:
            self.add(path, f"must be greater than or equal to 0, got {value}")


def _raise_first(errors: list[SpecError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        # SpecErrors keeps the full list; its str() lists every problem.
        raise SpecErrors(errors)


# --- IntOrString helpers ------------------------------------------------------------------------


def int_value(value: IntOrString | None) -> int | None:
    """Integer value of an IntOrString; None when absent or a `{{args.*}}` placeholder."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = value.strip()
    return int(text) if _INT_STR.fullmatch(text) else None


def int_or_percent(value: IntOrString) -> tuple[int, bool] | None:
    """(number, is_percent) for `5` or `"25%"`; None for any other string."""
    if isinstance(value, int):
        return value, False
    # Like intstr.GetScaledValueFromIntOrPercent, a string must be a percentage: "1" is invalid.
    match = _PERCENT.fullmatch(value.strip())
    return (int(match.group(1)), True) if match else None


# --- label selectors ----------------------------------------------------------------------------


def selector_matches(selector: LabelSelector, labels: dict[str, str]) -> bool:
    """Whether `labels` satisfy the selector (matchLabels and matchExpressions)."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions or []:
        present = req.key in labels
        values = req.values or []
        if req.operator == "In" and (not present or labels[req.key] not in values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def _check_selector(selector: LabelSelector, path: str, out: _Collector) -> None:
    if not selector.match_labels and not selector.match_expressions:
        out.add(path, "empty selector is invalid: set matchLabels or matchExpressions")
    for i, req in enumerate(selector.match_expressions or []):
        rpath = f"{path}.matchExpressions[{i}]"
        if req.operator not in _SELECTOR_OPS:
            out.add(
                f"{rpath}.operator", f"must be one of In, NotIn, Exists, DoesNotExist, got {req.operator!r}"
            )
        elif req.operator in ("In", "NotIn") and not req.values:
            out.add(f"{rpath}.values", f"must be non-empty for operator {req.operator}")
        elif req.operator in ("Exists", "DoesNotExist") and req.values:
            out.add(f"{rpath}.values", f"must be empty for operator {req.operator}")


# --- rollout ------------------------------------------------------------------------------------


def rollout_errors(rollout: Rollout) -> list[SpecError]:
    """Every validation problem of a Rollout (empty when valid)."""
    out = _Collector()
    spec = rollout.spec
    out.non_negative(spec.replicas, "spec.replicas")
    if spec.workload_ref is None:
        if spec.selector is None:
            out.add("spec.selector", "missing field: a selector is required (unless workloadRef is set)")
        else:
            _check_selector(spec.selector, "spec.selector", out)
        if spec.template is None:
            out.add("spec.template", "missing field: template or workloadRef is required")
        else:
            _check_template(spec.template, spec.selector, "spec.template", out)
    else:
        if not spec.workload_ref.name:
            out.add("spec.workloadRef.name", "missing field: name is required")
        meta = spec.template.metadata if spec.template is not None else None
        if meta is not None and (meta.labels or meta.annotations):
            out.add("spec.template", "template must be empty for a workloadRef rollout")
        if spec.selector is not None:
            _check_selector(spec.selector, "spec.selector", out)
    out.non_negative(spec.min_ready_seconds, "spec.minReadySeconds")
    out.non_negative(spec.revision_history_limit, "spec.revisionHistoryLimit")
    out.non_negative(spec.progress_deadline_seconds, "spec.progressDeadlineSeconds")
    deadline = (
        spec.progress_deadline_seconds
        if spec.progress_deadline_seconds is not None
        else DEFAULT_PROGRESS_DEADLINE_SECONDS
    )
    if deadline <= (spec.min_ready_seconds or 0):
        out.add("spec.progressDeadlineSeconds", "must be greater than minReadySeconds")
    if spec.rollback_window is not None:
        out.non_negative(spec.rollback_window.revisions, "spec.rollbackWindow.revisions")
    if spec.analysis is not None:
        out.non_negative(
            spec.analysis.successful_run_history_limit, "spec.analysis.successfulRunHistoryLimit"
        )
        out.non_negative(
            spec.analysis.unsuccessful_run_history_limit, "spec.analysis.unsuccessfulRunHistoryLimit"
        )
    strategy = spec.strategy
    if strategy.canary is None and strategy.blue_green is None:
        out.add("spec.strategy", "missing field: one of canary or blueGreen is required")
    elif strategy.canary is not None and strategy.blue_green is not None:
        out.add("spec.strategy", "multiple strategies can not be listed: set only one of canary or blueGreen")
    elif strategy.blue_green is not None:
        _check_blue_green(rollout, strategy.blue_green, out)
    elif strategy.canary is not None:
        _check_canary(strategy.canary, out)
    return out.errors


def validate_rollout(rollout: Rollout) -> None:
    """Raise the SpecError (or SpecErrors when several) describing what is wrong with the Rollout."""
    _raise_first(rollout_errors(rollout))


def _check_template(
    template: PodTemplateSpec, selector: LabelSelector | None, path: str, out: _Collector
) -> None:
    labels = template.metadata.labels or {}
    if selector is not None and (selector.match_labels or selector.match_expressions):
        if not selector_matches(selector, labels):
            out.add(f"{path}.metadata.labels", "`selector` does not match template `labels`")
    pod = template.spec
    if pod.restart_policy not in (None, "Always"):
        out.add(f"{path}.spec.restartPolicy", f"only 'Always' is supported, got {pod.restart_policy!r}")
    if not pod.containers:
        out.add(f"{path}.spec.containers", "at least one container is required")
    seen: set[str] = set()
    groups = (("containers", pod.containers), ("initContainers", pod.init_containers or []))
    for group, containers in groups:
        for i, container in enumerate(containers):
            cpath = f"{path}.spec.{group}[{i}]"
            if container.name in seen:
                out.add(f"{cpath}.name", f"duplicate container name {container.name!r}")
            seen.add(container.name)
            _check_container(container, cpath, out, probes=group == "containers")


def _check_container(container: Container, path: str, out: _Collector, *, probes: bool) -> None:
    if not container.name:
        out.add(f"{path}.name", "missing field: name is required")
    port_names: set[str] = set()
    for i, port in enumerate(container.ports or []):
        ppath = f"{path}.ports[{i}]"
        if not 1 <= port.container_port <= 65535:
            out.add(f"{ppath}.containerPort", f"must be between 1 and 65535, got {port.container_port}")
        if port.host_port is not None and not 0 <= port.host_port <= 65535:
            out.add(f"{ppath}.hostPort", f"must be between 0 and 65535, got {port.host_port}")
        if port.protocol is not None and port.protocol not in ("TCP", "UDP", "SCTP"):
            out.add(f"{ppath}.protocol", f"must be TCP, UDP or SCTP, got {port.protocol!r}")
        if port.name is not None:
            if port.name in port_names:
                out.add(f"{ppath}.name", f"duplicate port name {port.name!r}")
            port_names.add(port.name)
    if container.resources is not None:
        _check_resources(container.resources.limits, f"{path}.resources.limits", out)
        _check_resources(container.resources.requests, f"{path}.resources.requests", out)
    for i, env in enumerate(container.env or []):
        if not env.name:
            out.add(f"{path}.env[{i}].name", "missing field: name is required")
        if env.value is not None and env.value_from is not None:
            out.add(f"{path}.env[{i}].valueFrom", "may not be specified when `value` is not empty")
    if probes:
        for name, probe in (
            ("livenessProbe", container.liveness_probe),
            ("readinessProbe", container.readiness_probe),
            ("startupProbe", container.startup_probe),
        ):
            if probe is not None:
                _check_probe(probe, f"{path}.{name}", out)


def _check_resources(values: Mapping[str, object] | None, path: str, out: _Collector) -> None:
    for name, quantity in (values or {}).items():
        if isinstance(quantity, bool) or not isinstance(quantity, int | float | str):
            out.add(f"{path}.{name}", f"invalid quantity {quantity!r}")
        elif isinstance(quantity, str) and not _QUANTITY.fullmatch(quantity.strip()):
            out.add(f"{path}.{name}", f"invalid quantity {quantity!r}, expected e.g. '500m', '128Mi', '1'")
        elif not isinstance(quantity, str) and quantity < 0:
            out.add(f"{path}.{name}", f"must be greater than or equal to 0, got {quantity}")


def _check_probe(probe: Probe, path: str, out: _Collector) -> None:
    handlers = [h for h in (probe.exec, probe.http_get, probe.tcp_socket, probe.grpc) if h is not None]
    if not handlers:
        out.add(path, "must specify a handler type (exec, httpGet, tcpSocket or grpc)")
    elif len(handlers) > 1:
        out.add(path, "may not specify more than 1 handler type")
    for attr, name in (
        ("initial_delay_seconds", "initialDelaySeconds"),
        ("timeout_seconds", "timeoutSeconds"),
        ("period_seconds", "periodSeconds"),
        ("success_threshold", "successThreshold"),
        ("failure_threshold", "failureThreshold"),
    ):
        out.non_negative(getattr(probe, attr), f"{path}.{name}")
    if probe.http_get is not None:
        _check_port(probe.http_get.port, f"{path}.httpGet.port", out)
    if probe.tcp_socket is not None:
        _check_port(probe.tcp_socket.port, f"{path}.tcpSocket.port", out)


def _check_port(port: IntOrString, path: str, out: _Collector) -> None:
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            out.add(path, f"must be between 1 and 65535, got {port}")
    elif not (len(port) <= 15 and _PORT_NAME.fullmatch(port)):
        out.add(path, f"must be a port number or an IANA port name, got {port!r}")


def _check_anti_affinity(aa: AntiAffinity | None, path: str, out: _Collector) -> None:
    if aa is None:
        return
    preferred = aa.preferred_during_scheduling_ignored_during_execution
    required = aa.required_during_scheduling_ignored_during_execution
    if (preferred is None) == (required is None):
        out.add(path, "antiAffinity must have exactly one strategy listed")
    if preferred is not None and not 1 <= preferred.weight <= 100:
        out.add(f"{path}.preferredDuringSchedulingIgnoredDuringExecution.weight", "must be between 1 and 100")


def _check_int_or_percent(value: IntOrString | None, path: str, out: _Collector) -> None:
    if value is None:
        return
    parsed = int_or_percent(value)
    if parsed is None:
        out.add(path, f"must be an integer or a percentage such as '25%', got {value!r}")
    elif parsed[0] < 0:
        out.add(path, f"must be greater than or equal to 0, got {value!r}")


def _check_args(args: Iterable[AnalysisRunArgument], path: str, out: _Collector) -> None:
    for i, arg in enumerate(args):
        apath = f"{path}[{i}]"
        if not arg.name:
            out.add(f"{apath}.name", "missing field: name is required")
        if arg.value is not None and arg.value_from is not None:
            out.add(apath, "value and valueFrom are mutually exclusive")
        vf = arg.value_from
        if vf is not None:
            if (vf.pod_template_hash_value is None) == (vf.field_ref is None):
                out.add(f"{apath}.valueFrom", "must set exactly one of podTemplateHashValue or fieldRef")
            if vf.pod_template_hash_value not in (None, "Stable", "Latest"):
                out.add(f"{apath}.valueFrom.podTemplateHashValue", "must be 'Stable' or 'Latest'")


def _check_analysis(analysis: RolloutAnalysis, path: str, out: _Collector) -> None:
    if not analysis.templates:
        out.add(f"{path}.templates", "at least one analysis template is required")
    for i, tmpl in enumerate(analysis.templates or []):
        if not tmpl.template_name:
            out.add(f"{path}.templates[{i}].templateName", "missing field: templateName is required")
    _check_args(analysis.args or [], f"{path}.args", out)
    for i, mr in enumerate(analysis.measurement_retention or []):
        out.non_negative(mr.limit, f"{path}.measurementRetention[{i}].limit")


def _check_blue_green(rollout: Rollout, bg: BlueGreenStrategy, out: _Collector) -> None:
    path = "spec.strategy.blueGreen"
    if not bg.active_service:
        out.add(f"{path}.activeService", "missing field: activeService is required")
    elif bg.active_service == bg.preview_service:
        out.add(f"{path}.activeService", "activeService and previewService must be two different services")
    limit = rollout.spec.revision_history_limit
    limit = DEFAULT_REVISION_HISTORY_LIMIT if limit is None else limit
    if bg.scale_down_delay_revision_limit is not None and limit < bg.scale_down_delay_revision_limit:
        out.add(
            f"{path}.scaleDownDelayRevisionLimit",
            "revisionHistoryLimit can not be smaller than scaleDownDelayRevisionLimit",
        )
    for attr, name in (
        ("preview_replica_count", "previewReplicaCount"),
        ("auto_promotion_seconds", "autoPromotionSeconds"),
        ("scale_down_delay_seconds", "scaleDownDelaySeconds"),
        ("scale_down_delay_revision_limit", "scaleDownDelayRevisionLimit"),
        ("abort_scale_down_delay_seconds", "abortScaleDownDelaySeconds"),
    ):
        out.non_negative(getattr(bg, attr), f"{path}.{name}")
    _check_int_or_percent(bg.max_unavailable, f"{path}.maxUnavailable", out)
    if bg.pre_promotion_analysis is not None:
        _check_analysis(bg.pre_promotion_analysis, f"{path}.prePromotionAnalysis", out)
    if bg.post_promotion_analysis is not None:
        _check_analysis(bg.post_promotion_analysis, f"{path}.postPromotionAnalysis", out)
    _check_anti_affinity(bg.anti_affinity, f"{path}.antiAffinity", out)


def _requires_services(canary: CanaryStrategy) -> bool:
    """Argo's requireCanaryStableServices: routers that split between two Services."""
    tr = canary.traffic_routing
    if tr is None:
        return False
    return bool(
        (tr.alb is not None and canary.ping_pong is None)
        or (tr.istio is not None and tr.istio.destination_rule is None and canary.ping_pong is None)
        or tr.smi is not None
        or tr.apisix is not None
        or tr.ambassador is not None
        or tr.nginx is not None
        or tr.app_mesh is not None
        or tr.traefik is not None
    )


def _check_canary(canary: CanaryStrategy, out: _Collector) -> None:
    path = "spec.strategy.canary"
    _check_int_or_percent(canary.max_surge, f"{path}.maxSurge", out)
    _check_int_or_percent(canary.max_unavailable, f"{path}.maxUnavailable", out)
    surge = int_or_percent(canary.max_surge if canary.max_surge is not None else DEFAULT_MAX_SURGE)
    unavailable = int_or_percent(
        canary.max_unavailable if canary.max_unavailable is not None else DEFAULT_MAX_UNAVAILABLE
    )
    if surge is not None and unavailable is not None and surge[0] == 0 and unavailable[0] == 0:
        out.add(f"{path}.maxSurge", "maxSurge and maxUnavailable can not both be zero")
    if canary.canary_service and canary.canary_service == canary.stable_service:
        out.add(f"{path}.stableService", "canaryService and stableService must be two different services")
    tr = canary.traffic_routing
    pp = canary.ping_pong
    if pp is not None:
        if tr is not None and tr.alb is None and tr.istio is None:
            out.add(
                f"{path}.trafficRouting", "the ping-pong feature works with ALB or Istio traffic routing only"
            )
        if not pp.ping_service:
            out.add(f"{path}.pingPong.pingService", "missing field: pingService is required")
        if not pp.pong_service:
            out.add(f"{path}.pingPong.pongService", "missing field: pongService is required")
        if pp.ping_service and pp.ping_service == pp.pong_service:
            out.add(
                f"{path}.pingPong.pingService", "pingService and pongService must be two different services"
            )
        if tr is not None and tr.alb is not None and not tr.alb.root_service:
            out.add(
                f"{path}.trafficRouting.alb.rootService", "rootService is required with ALB and ping-pong"
            )
    if _requires_services(canary):
        if not canary.stable_service:
            out.add(
                f"{path}.stableService", "canaryService and stableService must be set to use trafficRouting"
            )
        if not canary.canary_service:
            out.add(
                f"{path}.canaryService", "canaryService and stableService must be set to use trafficRouting"
            )
    if tr is None:
        if canary.scale_down_delay_seconds is not None:
            out.add(f"{path}.scaleDownDelaySeconds", "can only be used with trafficRouting")
        if canary.dynamic_stable_scale:
            out.add(f"{path}.dynamicStableScale", "can only be used with trafficRouting")
    else:
        if canary.scale_down_delay_seconds is not None and canary.dynamic_stable_scale:
            out.add(f"{path}.dynamicStableScale", "cannot be used together with scaleDownDelaySeconds")
        if tr.max_traffic_weight is not None:
            if tr.max_traffic_weight <= 0:
                out.add(f"{path}.trafficRouting.maxTrafficWeight", "must be greater than 0")
            elif tr.nginx is None and not tr.plugins:
                out.add(f"{path}.trafficRouting.maxTrafficWeight", "is only supported with nginx and plugins")
    for attr, name in (
        ("scale_down_delay_seconds", "scaleDownDelaySeconds"),
        ("scale_down_delay_revision_limit", "scaleDownDelayRevisionLimit"),
        ("abort_scale_down_delay_seconds", "abortScaleDownDelaySeconds"),
        ("min_pods_per_replica_set", "minPodsPerReplicaSet"),
    ):
        out.non_negative(getattr(canary, attr), f"{path}.{name}")
    if canary.analysis is not None:
        _check_analysis(canary.analysis, f"{path}.analysis", out)
        out.non_negative(canary.analysis.starting_step, f"{path}.analysis.startingStep")
    if canary.replica_progress_threshold is not None:
        _check_threshold(canary.replica_progress_threshold, f"{path}.replicaProgressThreshold", out)
    _check_anti_affinity(canary.anti_affinity, f"{path}.antiAffinity", out)
    max_weight = (
        tr.max_traffic_weight if tr is not None and tr.max_traffic_weight else DEFAULT_MAX_TRAFFIC_WEIGHT
    )
    for i, step in enumerate(canary.steps or []):
        _check_step(step, tr, max_weight, f"{path}.steps[{i}]", out)


def _check_threshold(threshold: ReplicaProgressThreshold, path: str, out: _Collector) -> None:
    if threshold.type not in ("Percent", "Pod"):
        out.add(f"{path}.type", f"must be 'Percent' or 'Pod', got {threshold.type!r}")
    if threshold.value < 0 or (threshold.type == "Percent" and threshold.value > 100):
        out.add(f"{path}.value", f"out of range: {threshold.value}")


def _check_string_match(
    match: StringMatch | None, path: str, out: _Collector, *, exact_only: bool = False
) -> None:
    if match is None:
        out.add(path, "match value missing: set one of exact, prefix, regex")
        return
    set_ = [v for v in (match.exact, match.prefix, match.regex) if v]
    if exact_only and (not match.exact or len(set_) > 1):
        out.add(path, "ALB supports only the 'exact' match value")
    elif len(set_) != 1:
        out.add(path, "match value must have exactly one of exact, prefix, regex")


def _check_step(
    step: CanaryStep, tr: RolloutTrafficRouting | None, max_weight: int, path: str, out: _Collector
) -> None:
    kinds = step.kinds()
    if len(kinds) != 1:
        found = f" (found {', '.join(kinds)})" if kinds else ""
        out.add(path, f"step must have exactly one of {', '.join(STEP_KINDS)}{found}")
    if step.set_weight is not None and not 0 <= step.set_weight <= max_weight:
        out.add(f"{path}.setWeight", f"setWeight must be between 0 and {max_weight}, got {step.set_weight}")
    if step.pause is not None and step.pause.duration is not None:
        try:
            seconds = parse_pause_duration(step.pause.duration)
        except ValueError as exc:
            out.add(f"{path}.pause.duration", str(exc))
        else:
            if seconds < 0:
                out.add(f"{path}.pause.duration", f"must not be negative, got {step.pause.duration!r}")
    if step.set_canary_scale is not None:
        scale = step.set_canary_scale
        chosen = [n for n, v in (("replicas", scale.replicas), ("weight", scale.weight)) if v is not None]
        if scale.match_traffic_weight:
            chosen.append("matchTrafficWeight")
        if len(chosen) != 1:
            out.add(f"{path}.setCanaryScale", "must set exactly one of replicas, weight, matchTrafficWeight")
        out.non_negative(scale.replicas, f"{path}.setCanaryScale.replicas")
        if scale.weight is not None and not 0 <= scale.weight <= 100:
            out.add(f"{path}.setCanaryScale.weight", f"must be between 0 and 100, got {scale.weight}")
        if tr is None:
            out.add(f"{path}.setCanaryScale", "setCanaryScale requires trafficRouting to be set")
    if step.set_header_route is not None:
        hr = step.set_header_route
        if tr is None or (tr.istio is None and tr.alb is None and tr.apisix is None and not tr.plugins):
            out.add(
                f"{path}.setHeaderRoute",
                "setHeaderRoute requires trafficRouting (istio, alb, apisix or plugins)",
            )
        else:
            for j, m in enumerate(hr.match or []):
                _check_string_match(
                    m.header_value,
                    f"{path}.setHeaderRoute.match[{j}].headerValue",
                    out,
                    exact_only=tr.alb is not None,
                )
        _check_managed_route(hr.name, tr, f"{path}.setHeaderRoute", out)
    if step.set_mirror_route is not None:
        mr = step.set_mirror_route
        if tr is None or tr.istio is None:
            out.add(f"{path}.setMirrorRoute", "setMirrorRoute requires istio trafficRouting")
        for j, rm in enumerate(mr.match or []):
            mpath = f"{path}.setMirrorRoute.match[{j}]"
            if rm.method is not None:
                _check_string_match(rm.method, f"{mpath}.method", out)
            if rm.path is not None:
                _check_string_match(rm.path, f"{mpath}.path", out)
            for header, value in (rm.headers or {}).items():
                _check_string_match(value, f"{mpath}.headers.{header}", out)
        if mr.percentage is not None and not 0 <= mr.percentage <= 100:
            out.add(f"{path}.setMirrorRoute.percentage", f"must be between 0 and 100, got {mr.percentage}")
        _check_managed_route(mr.name, tr, f"{path}.setMirrorRoute", out)
    if step.analysis is not None:
        _check_analysis(step.analysis, f"{path}.analysis", out)
    if step.experiment is not None:
        _check_experiment(step.experiment, tr, f"{path}.experiment", out)
    if step.plugin is not None and not step.plugin.name:
        out.add(f"{path}.plugin.name", "missing field: name is required")
    if step.replica_progress_threshold is not None:
        _check_threshold(step.replica_progress_threshold, f"{path}.replicaProgressThreshold", out)


def _check_managed_route(
    name: str | None, tr: RolloutTrafficRouting | None, path: str, out: _Collector
) -> None:
    if tr is None:
        return
    if tr.managed_routes is None:
        out.add(
            "spec.strategy.canary.trafficRouting.managedRoutes",
            "missing field: required by header/mirror steps",
        )
    elif name not in {r.name for r in tr.managed_routes}:
        out.add(f"{path}.name", f"route {name!r} is not listed in trafficRouting.managedRoutes")


def _check_experiment(
    exp: RolloutExperimentStep, tr: RolloutTrafficRouting | None, path: str, out: _Collector
) -> None:
    if not exp.templates:
        out.add(f"{path}.templates", "at least one template is required")
    if exp.duration is not None:
        try:
            if parse_go_duration(exp.duration) < 0:
                out.add(f"{path}.duration", "must not be negative")
        except ValueError as exc:
            out.add(f"{path}.duration", str(exc))
    names: set[str] = set()
    for i, tmpl in enumerate(exp.templates):
        tpath = f"{path}.templates[{i}]"
        if tmpl.name in names:
            out.add(f"{tpath}.name", f"duplicate template name {tmpl.name!r}")
        names.add(tmpl.name)
        if tmpl.spec_ref not in ("canary", "stable"):
            out.add(f"{tpath}.specRef", f"must be 'canary' or 'stable', got {tmpl.spec_ref!r}")
        out.non_negative(tmpl.replicas, f"{tpath}.replicas")
        if tmpl.weight is not None:
            if tr is None:
                out.add(f"{tpath}.weight", "experiment template weight requires trafficRouting")
            elif tr.alb is None and tr.smi is None and tr.istio is None:
                out.add(
                    f"{tpath}.weight", "experiment template weight needs SMI, ALB or Istio traffic routing"
                )
    for i, analysis in enumerate(exp.analyses or []):
        apath = f"{path}.analyses[{i}]"
        if not analysis.template_name:
            out.add(f"{apath}.templateName", "missing field: templateName is required")
        _check_args(analysis.args or [], f"{apath}.args", out)


# --- analysis templates -------------------------------------------------------------------------


def analysis_template_errors(
    template: AnalysisTemplate | ClusterAnalysisTemplate,
    *,
    check_condition: ConditionChecker | None = None,
) -> list[SpecError]:
    """Every validation problem of an (Cluster)AnalysisTemplate (empty when valid)."""
    out = _Collector()
    _check_template_spec(template.spec, "spec", out, check_condition)
    return out.errors


def validate_analysis_template(
    template: AnalysisTemplate | ClusterAnalysisTemplate,
    *,
    check_condition: ConditionChecker | None = None,
) -> None:
    """Raise the SpecError (or SpecErrors) describing what is wrong with the template.

    `check_condition` validates successCondition/failureCondition expressions; it returns an
    error message or None. Expression syntax is not checked without it.
    """
    _raise_first(analysis_template_errors(template, check_condition=check_condition))


def _check_template_spec(
    spec: AnalysisTemplateSpec, path: str, out: _Collector, check_condition: ConditionChecker | None
) -> None:
    if not spec.metrics and not spec.templates:
        out.add(f"{path}.metrics", "at least one metric is required")
    seen: set[str] = set()
    for i, metric in enumerate(spec.metrics or []):
        mpath = f"{path}.metrics[{i}]"
        if metric.name in seen:
            out.add(f"{mpath}.name", f"duplicate metric name {metric.name!r}")
        seen.add(metric.name)
        _check_metric(metric, mpath, out, check_condition)
    arg_names: set[str] = set()
    for i, arg in enumerate(spec.args or []):
        apath = f"{path}.args[{i}]"
        if not arg.name:
            out.add(f"{apath}.name", "missing field: name is required")
        elif arg.name in arg_names:
            out.add(f"{apath}.name", f"duplicate argument name {arg.name!r}")
        arg_names.add(arg.name)
        if arg.value is not None and arg.value_from is not None:
            out.add(apath, "value and valueFrom are mutually exclusive")
        vf = arg.value_from
        if vf is not None and (vf.secret_key_ref is None) == (vf.field_ref is None):
            out.add(f"{apath}.valueFrom", "must set exactly one of secretKeyRef or fieldRef")
    for i, dry in enumerate(spec.dry_run or []):
        if not dry.metric_name:
            out.add(f"{path}.dryRun[{i}].metricName", "missing field: metricName is required")
    for i, mr in enumerate(spec.measurement_retention or []):
        if not mr.metric_name:
            out.add(f"{path}.measurementRetention[{i}].metricName", "missing field: metricName is required")
        out.non_negative(mr.limit, f"{path}.measurementRetention[{i}].limit")
    for i, ref in enumerate(spec.templates or []):
        if not ref.template_name:
            out.add(f"{path}.templates[{i}].templateName", "missing field: templateName is required")


def _limit(value: IntOrString | None, path: str, minimum: int, out: _Collector) -> int | None:
    """Integer value of a count/limit, reporting junk strings and values below `minimum`."""
    if value is None:
        return None
    number = int_value(value)
    if number is None:
        if not (isinstance(value, str) and _PLACEHOLDER.search(value)):
            out.add(path, f"must be an integer or an {{{{args.*}}}} placeholder, got {value!r}")
        return None
    if number < minimum:
        out.add(path, f"must be greater than or equal to {minimum}, got {number}")
    return number


def _check_metric(
    metric: Metric, path: str, out: _Collector, check_condition: ConditionChecker | None
) -> None:
    if not metric.name:
        out.add(f"{path}.name", "missing field: name is required")
    for value, name in ((metric.interval, "interval"), (metric.initial_delay, "initialDelay")):
        if value is None or _PLACEHOLDER.search(value):
            continue
        try:
            if parse_go_duration(value) < 0:
                out.add(f"{path}.{name}", f"must not be negative, got {value!r}")
        except ValueError as exc:
            out.add(f"{path}.{name}", str(exc))
    count = _limit(metric.count, f"{path}.count", 0, out)
    # failureLimit -1 disables failure counting (used together with consecutiveSuccessLimit).
    failure_limit = _limit(metric.failure_limit, f"{path}.failureLimit", -1, out)
    inconclusive_limit = _limit(metric.inconclusive_limit, f"{path}.inconclusiveLimit", 0, out)
    _limit(metric.consecutive_error_limit, f"{path}.consecutiveErrorLimit", 0, out)
    _limit(metric.consecutive_success_limit, f"{path}.consecutiveSuccessLimit", 0, out)
    if count is not None and count > 0:
        if failure_limit is not None and count < failure_limit:
            out.add(f"{path}.count", "count must be >= failureLimit")
        if inconclusive_limit is not None and count < inconclusive_limit:
            out.add(f"{path}.count", "count must be >= inconclusiveLimit")
    if count is not None and count > 1 and not metric.interval:
        out.add(f"{path}.interval", "interval must be specified when count > 1")
    if check_condition is not None:
        for cond, name in (
            (metric.success_condition, "successCondition"),
            (metric.failure_condition, "failureCondition"),
        ):
            if cond:
                problem = check_condition(cond)
                if problem is not None:
                    out.add(f"{path}.{name}", problem)
    if metric.provider is None:
        out.add(f"{path}.provider", "missing field: exactly one provider is required")
    else:
        _check_provider(metric.provider, f"{path}.provider", out)


def _check_provider(provider: MetricProvider, path: str, out: _Collector) -> None:
    names = provider.names()
    if not names:
        out.add(path, "exactly one provider is required")
    elif len(names) > 1:
        out.add(path, f"multiple providers specified ({', '.join(names)}); exactly one is allowed")
    if provider.prometheus is not None and not provider.prometheus.query:
        out.add(f"{path}.prometheus.query", "missing field: query is required")
    web = provider.web
    if web is not None:
        if not web.url:
            out.add(f"{path}.web.url", "missing field: url is required")
        if web.body is not None and web.json_body is not None:
            out.add(f"{path}.web", "use either body or jsonBody, not both")
        out.non_negative(web.timeout_seconds, f"{path}.web.timeoutSeconds")
    if provider.job is not None:
        _check_job(provider.job.spec, f"{path}.job.spec", out)


def _check_job(spec: dict[str, Any], path: str, out: _Collector) -> None:
    """The JobSpec is free-form; check only what would make every Job creation fail."""
    template = spec.get("template")
    if not isinstance(template, dict):
        out.add(f"{path}.template", "missing field: a job pod template is required")
        return
    pod = template.get("spec")
    containers = pod.get("containers") if isinstance(pod, dict) else None
    if not isinstance(containers, list) or not containers:
        out.add(f"{path}.template.spec.containers", "at least one container is required")
        return
    for i, container in enumerate(containers):
        resources = container.get("resources") if isinstance(container, dict) else None
        if isinstance(resources, dict):
            for kind in ("limits", "requests"):
                values = resources.get(kind)
                if isinstance(values, dict):
                    _check_resources(values, f"{path}.template.spec.containers[{i}].resources.{kind}", out)
