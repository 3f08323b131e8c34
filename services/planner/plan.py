"""Compile a validated Rollout spec into the Plan that decide() follows (pure)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar

import msgspec

from services.planner.basic_canary import resolve_fenceposts
from services.planner.state import (
    AnalysisStep,
    CanaryScaleStep,
    ExperimentAnalysis,
    ExperimentStep,
    ExperimentTemplate,
    HeaderRouteStep,
    MirrorRouteStep,
    PauseStep,
    Plan,
    SetWeightStep,
    Step,
)
from shared.durations import parse_pause_duration
from shared.messages import ArgValue, TemplateRef
from shared.routes import HeaderRoute, MirrorRoute
from shared.specs import Rollout, SpecError

UNSUPPORTED_STEPS = ("plugin",)


def template_hash(template: dict[str, Any]) -> str:
    """A stable short hash of the pod template, playing the part of Argo's pod-template-hash."""
    canonical = msgspec.json.encode(template, order="sorted")
    return hashlib.sha256(canonical).hexdigest()[:10]


_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery rand.SafeEncodeString's alphabet


def step_hash(steps: Any) -> str:
    """A hash of the canary steps, as Argo's ComputeStepHash: FNV-32a, decimal, safe-encoded."""
    h = 0x811C9DC5
    for byte in json.dumps(steps, sort_keys=True, separators=(",", ":")).encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[ord(ch) % len(_SAFE)] for ch in str(h))


def compile_plan(rollout: Rollout) -> Plan:
    spec = rollout.spec
    if spec.template is None:
        raise SpecError("spec.template", "required (workloadRef is not supported by the local platform yet)")
    canary = spec.strategy.canary
    bg = spec.strategy.blue_green
    template = msgspec.to_builtins(spec.template)
    containers = spec.template.spec.containers if spec.template.spec else []
    images = tuple(c.image for c in containers if c.image)
    port = preview_port = None
    for c in containers[:1]:
        ports = [p.container_port for p in c.ports or []]
        if ports:
            # Local mode serves the active service on the first containerPort and the preview
            # service on the second one, or on the first + 1 when only one is declared.
            port = ports[0]
            preview_port = ports[1] if len(ports) > 1 else ports[0] + 1
    steps: list[Step] = []
    routing: dict[str, Any] | None = None
    max_weight = 100
    scale_down = 30.0
    abort_scale_down = 30.0
    stable_service = canary_service = None
    background: AnalysisStep | None = None
    background_start = 0
    if canary is not None:
        for i, step in enumerate(canary.steps or []):
            steps.append(_compile_step(i, step))
        if canary.traffic_routing is not None:
            routing = msgspec.to_builtins(canary.traffic_routing)
            max_weight = canary.traffic_routing.max_traffic_weight or 100
        else:
            # A basic canary scales the old stable down at once when it is promoted: Argo's
            # scaleDownDelaySeconds applies with trafficRouting only (and is refused without it).
            scale_down = 0.0
        if canary.scale_down_delay_seconds is not None:
            scale_down = float(canary.scale_down_delay_seconds)
        if canary.abort_scale_down_delay_seconds is not None:
            abort_scale_down = float(canary.abort_scale_down_delay_seconds)
        stable_service, canary_service = canary.stable_service, canary.canary_service
        if canary.analysis is not None:
            background = _analysis(canary.analysis, "spec.strategy.canary.analysis")
            background_start = canary.analysis.starting_step or 0
    fields: dict[str, Any] = dict(
        replicas=spec.replicas if spec.replicas is not None else 1,
        steps=tuple(steps),
        # Argo's status.currentStepHash, computed once (it hashes the steps' JSON byte by byte)
        steps_hash=step_hash(msgspec.to_builtins(canary.steps))
        if canary is not None and canary.steps
        else "",
        template=template,
        template_hash=template_hash(template),
        images=images,
        port=port,
        paused=bool(spec.paused),
        stable_service=stable_service,
        canary_service=canary_service,
        routing=routing,
        max_traffic_weight=max_weight,
        scale_down_delay_seconds=scale_down,
        abort_scale_down_delay_seconds=abort_scale_down,
        scale_down_delay_revision_limit=canary.scale_down_delay_revision_limit if canary else None,
        revision_history_limit=spec.revision_history_limit if spec.revision_history_limit is not None else 10,
        background=background,
        background_starting_step=background_start,
        progress_deadline_seconds=float(spec.progress_deadline_seconds or 600),
        progress_deadline_abort=bool(spec.progress_deadline_abort),
        min_pods_per_replica_set=(canary.min_pods_per_replica_set or 1) if canary else 1,
        dynamic_stable_scale=bool(canary.dynamic_stable_scale) if canary else False,
        **_fenceposts(canary, spec.replicas if spec.replicas is not None else 1),
        rollback_window=(spec.rollback_window.revisions or 0) if spec.rollback_window else 0,
    )
    if bg is not None:
        fields.update(_blue_green(bg, preview_port))
    return Plan(**fields)


R = TypeVar("R", HeaderRoute, MirrorRoute)


def _route(spec: Any, kind: type[R], path: str) -> R:
    """A setHeaderRoute / setMirrorRoute step as the route the traffic-shifter is sent."""
    try:
        return msgspec.convert(msgspec.to_builtins(spec), kind)
    except (msgspec.ValidationError, ValueError) as e:
        raise SpecError(path, str(e)) from e


def _compile_step(i: int, step: Any) -> Step:
    path = f"spec.strategy.canary.steps[{i}]"
    if step.set_weight is not None:
        return SetWeightStep(weight=step.set_weight)
    if step.pause is not None:
        duration = step.pause.duration
        if duration is None:
            return PauseStep(seconds=None)
        try:
            return PauseStep(seconds=parse_pause_duration(duration))
        except ValueError as e:
            raise SpecError(f"{path}.pause.duration", str(e)) from e
    if step.analysis is not None:
        return _analysis(step.analysis, f"{path}.analysis")
    if step.experiment is not None:
        return _experiment(step.experiment, f"{path}.experiment")
    if step.set_header_route is not None:
        return HeaderRouteStep(route=_route(step.set_header_route, HeaderRoute, f"{path}.setHeaderRoute"))
    if step.set_mirror_route is not None:
        return MirrorRouteStep(route=_route(step.set_mirror_route, MirrorRoute, f"{path}.setMirrorRoute"))
    if step.set_canary_scale is not None:
        scale = step.set_canary_scale
        if scale.match_traffic_weight:
            return CanaryScaleStep()
        return CanaryScaleStep(replicas=scale.replicas, weight=scale.weight)
    for kind in UNSUPPORTED_STEPS:
        if getattr(step, kind, None) is not None:
            camel = kind.split("_")[0] + "".join(w.title() for w in kind.split("_")[1:])
            raise SpecError(
                f"{path}.{camel}", "this step kind is accepted by lint but not executed by this version yet"
            )
    raise SpecError(path, "step has no kind")


def _experiment(e: Any, path: str) -> ExperimentStep:
    templates = []
    for i, t in enumerate(e.templates or []):
        if t.spec_ref not in ("stable", "canary"):
            raise SpecError(f"{path}.templates[{i}].specRef", "must be stable or canary")
        if t.weight is not None and not 0 <= t.weight <= 100:
            raise SpecError(f"{path}.templates[{i}].weight", "must be within 0..100")
        templates.append(
            ExperimentTemplate(
                name=t.name, spec_ref=t.spec_ref, replicas=t.replicas or 1, weight=t.weight or 0
            )
        )
    analyses = tuple(
        ExperimentAnalysis(
            name=a.name,
            templates=(TemplateRef(template_name=a.template_name, cluster_scope=bool(a.cluster_scope)),),
            args=tuple(_arg(arg, f"{path}.analyses[{i}].args[{j}]") for j, arg in enumerate(a.args or [])),
            required_for_completion=bool(a.required_for_completion),
        )
        for i, a in enumerate(e.analyses or [])
    )
    seconds = None
    if e.duration:
        try:
            seconds = parse_pause_duration(e.duration)
        except ValueError as err:
            raise SpecError(f"{path}.duration", str(err)) from err
    if seconds is None and analyses and not any(a.required_for_completion for a in analyses):
        raise SpecError(f"{path}.duration", "required unless an analysis has requiredForCompletion")
    if sum(t.weight for t in templates) > 100:
        raise SpecError(f"{path}.templates", "the templates' weights add up to more than 100")
    dry_run = tuple(d.metric_name for d in e.dry_run or [])
    return ExperimentStep(templates=tuple(templates), analyses=analyses, seconds=seconds, dry_run=dry_run)


def _fenceposts(canary: Any, replicas: int) -> dict[str, int]:
    """maxSurge / maxUnavailable resolved to pod counts (only a canary without trafficRouting uses them)."""
    if canary is None:
        return {}
    surge, unavailable = resolve_fenceposts(canary.max_surge, canary.max_unavailable, replicas)
    return {"max_surge": surge, "max_unavailable": unavailable}


def _blue_green(bg: Any, preview_port: int | None) -> dict[str, Any]:
    path = "spec.strategy.blueGreen"
    return {
        "strategy": "blueGreen",
        "stable_service": bg.active_service,
        "preview_service": bg.preview_service,
        "preview_port": preview_port if bg.preview_service else None,
        "preview_replica_count": bg.preview_replica_count,
        "scale_down_delay_revision_limit": bg.scale_down_delay_revision_limit,
        "auto_promotion_enabled": bg.auto_promotion_enabled is not False,
        "auto_promotion_seconds": float(bg.auto_promotion_seconds) if bg.auto_promotion_seconds else None,
        "pre_promotion": _analysis(bg.pre_promotion_analysis, f"{path}.prePromotionAnalysis")
        if bg.pre_promotion_analysis
        else None,
        "post_promotion": _analysis(bg.post_promotion_analysis, f"{path}.postPromotionAnalysis")
        if bg.post_promotion_analysis
        else None,
        "scale_down_delay_seconds": float(
            bg.scale_down_delay_seconds if bg.scale_down_delay_seconds is not None else 30
        ),
        "abort_scale_down_delay_seconds": float(
            bg.abort_scale_down_delay_seconds if bg.abort_scale_down_delay_seconds is not None else 30
        ),
    }


def _analysis(a: Any, path: str) -> AnalysisStep:
    templates = tuple(
        TemplateRef(template_name=t.template_name or "", cluster_scope=bool(t.cluster_scope))
        for t in a.templates or []
    )
    args = tuple(_arg(arg, f"{path}.args[{j}]") for j, arg in enumerate(a.args or []))
    dry_run = tuple(d.metric_name for d in a.dry_run or [])
    retention = {r.metric_name: r.limit for r in a.measurement_retention or []}
    return AnalysisStep(templates=templates, args=args, dry_run=dry_run, retention=retention)


def _arg(arg: Any, path: str) -> ArgValue:
    vf = arg.value_from
    if arg.value is not None or vf is None:
        return ArgValue(name=arg.name, value=arg.value)
    if vf.pod_template_hash_value is not None:
        if vf.pod_template_hash_value not in ("Stable", "Latest"):
            raise SpecError(f"{path}.valueFrom.podTemplateHashValue", "must be Stable or Latest")
        return ArgValue(name=arg.name, value_from=f"podTemplateHash:{vf.pod_template_hash_value}")
    if vf.field_ref is not None:
        return ArgValue(name=arg.name, value_from=f"fieldRef:{vf.field_ref.field_path}")
    raise SpecError(f"{path}.valueFrom", "needs podTemplateHashValue or fieldRef")
