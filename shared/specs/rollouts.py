"""Argo Rollouts v1alpha1 `Rollout` structs: spec, canary and blue-green strategies, steps, traffic routing."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.specs.analysis import DryRun, MeasurementRetention
from shared.specs.meta import IntOrString, K8sStruct, LabelSelector, ObjectMeta, PodTemplateMetadata
from shared.specs.pods import PodTemplateSpec

__all__ = [
    "ROLLOUT_API_VERSION",
    "STEP_KINDS",
    "ALBTrafficRouting",
    "AmbassadorTrafficRouting",
    "AnalysisRunArgument",
    "AnalysisRunStrategy",
    "AntiAffinity",
    "ApisixRoute",
    "ApisixTrafficRouting",
    "AppMeshTrafficRouting",
    "AppMeshVirtualNodeGroup",
    "AppMeshVirtualNodeReference",
    "AppMeshVirtualService",
    "ArgumentValueFrom",
    "BlueGreenStrategy",
    "CanaryStep",
    "CanaryStrategy",
    "HeaderRoutingMatch",
    "IstioDestinationRule",
    "IstioTrafficRouting",
    "IstioVirtualService",
    "ManagedRoute",
    "NginxTrafficRouting",
    "ObjectRef",
    "PingPongSpec",
    "PluginStep",
    "PreferredDuringSchedulingIgnoredDuringExecution",
    "ReplicaProgressThreshold",
    "RequiredDuringSchedulingIgnoredDuringExecution",
    "RollbackWindowSpec",
    "Rollout",
    "RolloutAnalysis",
    "RolloutAnalysisBackground",
    "RolloutAnalysisTemplate",
    "RolloutExperimentStep",
    "RolloutExperimentStepAnalysisTemplateRef",
    "RolloutExperimentTemplate",
    "RolloutFieldRef",
    "RolloutPause",
    "RolloutSpec",
    "RolloutStrategy",
    "RolloutTrafficRouting",
    "RouteMatch",
    "SMITrafficRouting",
    "SetCanaryScale",
    "SetHeaderRoute",
    "SetMirrorRoute",
    "StickinessConfig",
    "StringMatch",
    "TCPRoute",
    "TLSRoute",
    "TemplateService",
    "TraefikTrafficRouting",
]

ROLLOUT_API_VERSION = "argoproj.io/v1alpha1"


# --- analysis references used by steps and strategies -------------------------------------------


class RolloutFieldRef(K8sStruct, kw_only=True):
    """Field of the Rollout itself used as an argument value (e.g. `metadata.name`)."""

    field_path: str


class ArgumentValueFrom(K8sStruct, kw_only=True):
    """Argument value taken from a ReplicaSet pod-template hash or a Rollout field."""

    pod_template_hash_value: str | None = None
    field_ref: RolloutFieldRef | None = None


class AnalysisRunArgument(K8sStruct, kw_only=True):
    """Argument passed from a Rollout to an AnalysisRun."""

    name: str
    value: str | None = None
    value_from: ArgumentValueFrom | None = None


class RolloutAnalysisTemplate(K8sStruct, kw_only=True):
    """Reference to an AnalysisTemplate (or ClusterAnalysisTemplate when cluster_scope)."""

    template_name: str | None = None
    cluster_scope: bool | None = None


class RolloutAnalysis(K8sStruct, kw_only=True):
    """Analysis step, or blue-green pre/post-promotion analysis."""

    templates: list[RolloutAnalysisTemplate] | None = None
    args: list[AnalysisRunArgument] | None = None
    dry_run: list[DryRun] | None = None
    measurement_retention: list[MeasurementRetention] | None = None
    analysis_run_metadata: PodTemplateMetadata | None = None


class RolloutAnalysisBackground(RolloutAnalysis, kw_only=True):
    """Background analysis running alongside the canary steps."""

    starting_step: int | None = None


# --- experiment step ----------------------------------------------------------------------------


class TemplateService(K8sStruct, kw_only=True):
    """Service generated for an experiment template."""

    name: str | None = None


class RolloutExperimentTemplate(K8sStruct, kw_only=True):
    """A ReplicaSet run by an experiment step, cloned from the canary or stable template."""

    name: str
    spec_ref: str
    replicas: int | None = None
    metadata: PodTemplateMetadata | None = None
    selector: LabelSelector | None = None
    weight: int | None = None
    service: TemplateService | None = None


class RolloutExperimentStepAnalysisTemplateRef(K8sStruct, kw_only=True):
    """An analysis run by an experiment step."""

    name: str
    template_name: str
    cluster_scope: bool | None = None
    args: list[AnalysisRunArgument] | None = None
    required_for_completion: bool | None = None


class RolloutExperimentStep(K8sStruct, kw_only=True):
    """Experiment step."""

    templates: list[RolloutExperimentTemplate]
    duration: str | None = None
    analyses: list[RolloutExperimentStepAnalysisTemplateRef] | None = None
    dry_run: list[DryRun] | None = None
    measurement_retention: list[MeasurementRetention] | None = None
    analysis_run_metadata: PodTemplateMetadata | None = None
    scale_down_delay_seconds: int | None = None


# --- canary steps -------------------------------------------------------------------------------


class RolloutPause(K8sStruct, kw_only=True):
    """Pause step; no duration means pause until promoted."""

    duration: IntOrString | None = None


class SetCanaryScale(K8sStruct, kw_only=True):
    """Scale the canary independently of traffic weight."""

    weight: int | None = None
    replicas: int | None = None
    match_traffic_weight: bool | None = None


class StringMatch(K8sStruct, kw_only=True):
    """Exactly one of exact / prefix / regex."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class HeaderRoutingMatch(K8sStruct, kw_only=True):
    """Header condition of a setHeaderRoute step."""

    header_name: str
    header_value: StringMatch | None = None


class SetHeaderRoute(K8sStruct, kw_only=True):
    """Route requests matching headers to the canary; no match removes the route."""

    name: str | None = None
    match: list[HeaderRoutingMatch] | None = None


class RouteMatch(K8sStruct, kw_only=True):
    """Request condition of a setMirrorRoute step."""

    method: StringMatch | None = None
    path: StringMatch | None = None
    headers: dict[str, StringMatch] | None = None


class SetMirrorRoute(K8sStruct, kw_only=True):
    """Mirror a percentage of matching traffic to the canary."""

    name: str
    match: list[RouteMatch] | None = None
    percentage: int | None = None


class PluginStep(K8sStruct, kw_only=True):
    """Step executed by a step plugin."""

    name: str
    config: Any = None


class ReplicaProgressThreshold(K8sStruct, kw_only=True):
    """Fraction (`Percent`) or count (`Pod`) of ready canary pods needed to advance."""

    type: str
    value: int


class CanaryStep(K8sStruct, kw_only=True):
    """One canary step; exactly one field must be set."""

    set_weight: int | None = None
    pause: RolloutPause | None = None
    experiment: RolloutExperimentStep | None = None
    analysis: RolloutAnalysis | None = None
    set_canary_scale: SetCanaryScale | None = None
    set_header_route: SetHeaderRoute | None = None
    set_mirror_route: SetMirrorRoute | None = None
    plugin: PluginStep | None = None
    # Documented as a step in newer Argo docs (and as a canary field in the CRD); accept both.
    replica_progress_threshold: ReplicaProgressThreshold | None = None

    def kinds(self) -> list[str]:
        """JSON names of the step kinds that are set (valid steps have exactly one)."""
        return [
            name
            for field, name in zip(self.__struct_fields__, self.__struct_encode_fields__, strict=True)
            if getattr(self, field) is not None
        ]


STEP_KINDS: tuple[str, ...] = CanaryStep.__struct_encode_fields__


# --- traffic routing ----------------------------------------------------------------------------


class TLSRoute(K8sStruct, kw_only=True):
    """Istio TLS route selector."""

    port: int | None = None
    sni_hosts: list[str] | None = None


class TCPRoute(K8sStruct, kw_only=True):
    """Istio TCP route selector."""

    port: int | None = None


class IstioVirtualService(K8sStruct, kw_only=True):
    """Istio VirtualService whose route weights the rollout edits."""

    name: str
    routes: list[str] | None = None
    tls_routes: list[TLSRoute] | None = None
    tcp_routes: list[TCPRoute] | None = None


class IstioDestinationRule(K8sStruct, kw_only=True):
    """Istio DestinationRule for subset-based splitting."""

    name: str
    canary_subset_name: str
    stable_subset_name: str
    additional_subset_names: list[str] | None = None


class IstioTrafficRouting(K8sStruct, kw_only=True):
    """Istio traffic routing."""

    virtual_service: IstioVirtualService | None = None
    virtual_services: list[IstioVirtualService] | None = None
    destination_rule: IstioDestinationRule | None = None


class NginxTrafficRouting(K8sStruct, kw_only=True):
    """NGINX ingress traffic routing."""

    stable_ingress: str | None = None
    stable_ingresses: list[str] | None = None
    annotation_prefix: str | None = None
    additional_ingress_annotations: dict[str, str] | None = None
    canary_ingress_annotations: dict[str, str] | None = None


class StickinessConfig(K8sStruct, kw_only=True):
    """ALB target-group stickiness."""

    enabled: bool
    duration_seconds: int


class ALBTrafficRouting(K8sStruct, kw_only=True):
    """AWS ALB ingress traffic routing."""

    service_port: int
    ingress: str | None = None
    ingresses: list[str] | None = None
    root_service: str | None = None
    annotation_prefix: str | None = None
    stickiness_config: StickinessConfig | None = None


class SMITrafficRouting(K8sStruct, kw_only=True):
    """SMI TrafficSplit traffic routing."""

    root_service: str | None = None
    traffic_split_name: str | None = None


class AmbassadorTrafficRouting(K8sStruct, kw_only=True):
    """Ambassador Mapping traffic routing."""

    mappings: list[str]


class AppMeshVirtualService(K8sStruct, kw_only=True):
    """AppMesh virtual service and routes."""

    name: str
    routes: list[str] | None = None


class AppMeshVirtualNodeReference(K8sStruct, kw_only=True):
    """Reference to an AppMesh VirtualNode."""

    name: str


class AppMeshVirtualNodeGroup(K8sStruct, kw_only=True):
    """AppMesh canary/stable virtual nodes."""

    canary_virtual_node_ref: AppMeshVirtualNodeReference
    stable_virtual_node_ref: AppMeshVirtualNodeReference


class AppMeshTrafficRouting(K8sStruct, kw_only=True):
    """AWS AppMesh traffic routing."""

    virtual_service: AppMeshVirtualService | None = None
    virtual_node_group: AppMeshVirtualNodeGroup | None = None


class TraefikTrafficRouting(K8sStruct, kw_only=True):
    """Traefik weighted service traffic routing."""

    weighted_traefik_service_name: str


class ApisixRoute(K8sStruct, kw_only=True):
    """APISIX route and rules to edit."""

    name: str
    rules: list[str] | None = None


class ApisixTrafficRouting(K8sStruct, kw_only=True):
    """APISIX traffic routing."""

    route: ApisixRoute | None = None


class ManagedRoute(K8sStruct, kw_only=True):
    """A route the rollout creates for header/mirror steps."""

    name: str


class RolloutTrafficRouting(K8sStruct, kw_only=True):
    """Traffic routers; `plugins` is free-form per plugin name."""

    istio: IstioTrafficRouting | None = None
    nginx: NginxTrafficRouting | None = None
    alb: ALBTrafficRouting | None = None
    smi: SMITrafficRouting | None = None
    ambassador: AmbassadorTrafficRouting | None = None
    app_mesh: AppMeshTrafficRouting | None = None
    traefik: TraefikTrafficRouting | None = None
    apisix: ApisixTrafficRouting | None = None
    plugins: dict[str, Any] | None = None
    managed_routes: list[ManagedRoute] | None = None
    max_traffic_weight: int | None = None


# --- strategies ---------------------------------------------------------------------------------


class PreferredDuringSchedulingIgnoredDuringExecution(K8sStruct, kw_only=True):
    """Soft anti-affinity with a weight in 1..100."""

    weight: int


class RequiredDuringSchedulingIgnoredDuringExecution(K8sStruct, kw_only=True):
    """Hard anti-affinity (no parameters)."""


class AntiAffinity(K8sStruct, kw_only=True):
    """Anti-affinity between old and new pods; exactly one of the two must be set."""

    preferred_during_scheduling_ignored_during_execution: (
        PreferredDuringSchedulingIgnoredDuringExecution | None
    ) = None
    required_during_scheduling_ignored_during_execution: (
        RequiredDuringSchedulingIgnoredDuringExecution | None
    ) = None


class PingPongSpec(K8sStruct, kw_only=True):
    """Ping-pong services (ALB) replacing canary/stable services."""

    ping_service: str
    pong_service: str


class CanaryStrategy(K8sStruct, kw_only=True):
    """Canary strategy."""

    canary_service: str | None = None
    stable_service: str | None = None
    steps: list[CanaryStep] | None = None
    traffic_routing: RolloutTrafficRouting | None = None
    max_unavailable: IntOrString | None = None
    max_surge: IntOrString | None = None
    analysis: RolloutAnalysisBackground | None = None
    anti_affinity: AntiAffinity | None = None
    canary_metadata: PodTemplateMetadata | None = None
    stable_metadata: PodTemplateMetadata | None = None
    scale_down_delay_seconds: int | None = None
    scale_down_delay_revision_limit: int | None = None
    abort_scale_down_delay_seconds: int | None = None
    dynamic_stable_scale: bool | None = None
    ping_pong: PingPongSpec | None = None
    min_pods_per_replica_set: int | None = None
    replica_progress_threshold: ReplicaProgressThreshold | None = None


class BlueGreenStrategy(K8sStruct, kw_only=True):
    """Blue-green strategy."""

    active_service: str | None = None
    preview_service: str | None = None
    preview_replica_count: int | None = None
    auto_promotion_enabled: bool | None = None
    auto_promotion_seconds: int | None = None
    max_unavailable: IntOrString | None = None
    scale_down_delay_seconds: int | None = None
    scale_down_delay_revision_limit: int | None = None
    abort_scale_down_delay_seconds: int | None = None
    pre_promotion_analysis: RolloutAnalysis | None = None
    post_promotion_analysis: RolloutAnalysis | None = None
    anti_affinity: AntiAffinity | None = None
    preview_metadata: PodTemplateMetadata | None = None
    active_metadata: PodTemplateMetadata | None = None


class RolloutStrategy(K8sStruct, kw_only=True):
    """Exactly one of canary / blueGreen."""

    canary: CanaryStrategy | None = None
    blue_green: BlueGreenStrategy | None = None


# --- rollout ------------------------------------------------------------------------------------


class ObjectRef(K8sStruct, kw_only=True):
    """workloadRef: a Deployment (or similar) providing the pod template."""

    api_version: str | None = None
    kind: str | None = None
    name: str | None = None
    scale_down: str | None = None


class RollbackWindowSpec(K8sStruct, kw_only=True):
    """Rollbacks to one of the last N revisions skip the steps."""

    revisions: int | None = None


class AnalysisRunStrategy(K8sStruct, kw_only=True):
    """How many finished AnalysisRuns/Experiments to keep."""

    successful_run_history_limit: int | None = None
    unsuccessful_run_history_limit: int | None = None


class RolloutSpec(K8sStruct, kw_only=True):
    """Rollout spec."""

    replicas: int | None = None
    selector: LabelSelector | None = None
    template: PodTemplateSpec | None = None
    workload_ref: ObjectRef | None = None
    min_ready_seconds: int | None = None
    rollback_window: RollbackWindowSpec | None = None
    strategy: RolloutStrategy = msgspec.field(default_factory=RolloutStrategy)
    revision_history_limit: int | None = None
    paused: bool | None = None
    progress_deadline_seconds: int | None = None
    progress_deadline_abort: bool | None = None
    restart_at: str | None = None
    analysis: AnalysisRunStrategy | None = None


class Rollout(K8sStruct, kw_only=True):
    """argoproj.io/v1alpha1 Rollout; `status` is accepted but not interpreted."""

    api_version: str = ROLLOUT_API_VERSION
    kind: str = "Rollout"
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: RolloutSpec
    status: dict[str, Any] | None = None
