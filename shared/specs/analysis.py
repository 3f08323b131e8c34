"""AnalysisTemplate / ClusterAnalysisTemplate structs: metrics, arguments and metric providers."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from shared.specs.meta import IntOrString, K8sStruct, ObjectMeta

__all__ = [
    "ANALYSIS_API_VERSION",
    "AnalysisTemplate",
    "AnalysisTemplateRef",
    "AnalysisTemplateSpec",
    "Argument",
    "ClusterAnalysisTemplate",
    "DryRun",
    "FieldRef",
    "JobMetric",
    "MeasurementRetention",
    "Metric",
    "MetricProvider",
    "OAuth2Config",
    "PrometheusAuth",
    "PrometheusMetric",
    "PrometheusRangeQuery",
    "SecretKeyRef",
    "Sigv4Config",
    "ValueFrom",
    "WebMetric",
    "WebMetricHeader",
]

ANALYSIS_API_VERSION = "argoproj.io/v1alpha1"


class SecretKeyRef(K8sStruct, kw_only=True):
    """Reference to a key of a Secret in the template's namespace."""

    name: str
    key: str


class FieldRef(K8sStruct, kw_only=True):
    """Downward-API style field path (e.g. `metadata.labels['app']`)."""

    field_path: str


class ValueFrom(K8sStruct, kw_only=True):
    """Where an AnalysisTemplate argument takes its value from."""

    secret_key_ref: SecretKeyRef | None = None
    field_ref: FieldRef | None = None


class Argument(K8sStruct, kw_only=True):
    """A template argument; `value` is absent when the caller must supply it."""

    name: str
    value: str | None = None
    value_from: ValueFrom | None = None


class DryRun(K8sStruct, kw_only=True):
    """Metric (name or regex) whose failures do not fail the run."""

    metric_name: str


class MeasurementRetention(K8sStruct, kw_only=True):
    """How many measurements to keep for a metric (name or regex)."""

    metric_name: str
    limit: int


class AnalysisTemplateRef(K8sStruct, kw_only=True):
    """Reference to another (cluster) analysis template whose metrics are merged in."""

    template_name: str
    cluster_scope: bool | None = None


class WebMetricHeader(K8sStruct, kw_only=True):
    """An HTTP header sent by the web or prometheus provider."""

    key: str
    value: str


class Sigv4Config(K8sStruct, kw_only=True):
    """AWS SigV4 signing settings for Prometheus (Amazon Managed Prometheus)."""

    region: str | None = None
    profile: str | None = None
    role_arn: str | None = None


class OAuth2Config(K8sStruct, kw_only=True):
    """OAuth2 client-credentials settings."""

    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    scopes: list[str] | None = None


class PrometheusAuth(K8sStruct, kw_only=True):
    """Authentication for the prometheus / web providers."""

    sigv4: Sigv4Config | None = None
    oauth2: OAuth2Config | None = None


class PrometheusRangeQuery(K8sStruct, kw_only=True):
    """Turns the prometheus query into a range query (expressions such as `now() - 1h`)."""

    start: str | None = None
    end: str | None = None
    step: str | None = None


class PrometheusMetric(K8sStruct, kw_only=True):
    """Prometheus provider."""

    address: str | None = None
    query: str | None = None
    authentication: PrometheusAuth | None = None
    timeout: int | None = None
    insecure: bool | None = None
    headers: list[WebMetricHeader] | None = None
    range_query: PrometheusRangeQuery | None = None


class WebMetric(K8sStruct, kw_only=True):
    """Web (HTTP) provider; `json_body` is any JSON value and excludes `body`."""

    url: str | None = None
    method: Literal["GET", "POST", "PUT"] | None = None
    headers: list[WebMetricHeader] | None = None
    body: str | None = None
    json_body: Any = None
    timeout_seconds: int | None = None
    json_path: str | None = None
    insecure: bool | None = None
    authentication: PrometheusAuth | None = None


class JobMetric(K8sStruct, kw_only=True):
    """Job provider: a batch/v1 Job whose success is the measurement (JobSpec kept free-form)."""

    spec: dict[str, Any]
    metadata: ObjectMeta | None = None


class MetricProvider(K8sStruct, kw_only=True):
    """Exactly one provider must be set; less common providers are kept free-form."""

    prometheus: PrometheusMetric | None = None
    web: WebMetric | None = None
    job: JobMetric | None = None
    kayenta: dict[str, Any] | None = None
    datadog: dict[str, Any] | None = None
    new_relic: dict[str, Any] | None = None
    wavefront: dict[str, Any] | None = None
    cloud_watch: dict[str, Any] | None = None
    graphite: dict[str, Any] | None = None
    influxdb: dict[str, Any] | None = None
    skywalking: dict[str, Any] | None = None
    plugin: dict[str, Any] | None = None

    def names(self) -> list[str]:
        """JSON names of the providers that are set."""
        return [
            name
            for field, name in zip(self.__struct_fields__, self.__struct_encode_fields__, strict=True)
            if getattr(self, field) is not None
        ]


class Metric(K8sStruct, kw_only=True):
    """One metric of an analysis; limits/count are IntOrString so `{{args.x}}` placeholders work."""

    name: str
    provider: MetricProvider | None = None
    interval: str | None = None
    initial_delay: str | None = None
    count: IntOrString | None = None
    success_condition: str | None = None
    failure_condition: str | None = None
    failure_limit: IntOrString | None = None
    inconclusive_limit: IntOrString | None = None
    consecutive_error_limit: IntOrString | None = None
    consecutive_success_limit: IntOrString | None = None


class AnalysisTemplateSpec(K8sStruct, kw_only=True):
    """Spec shared by AnalysisTemplate and ClusterAnalysisTemplate."""

    metrics: list[Metric] | None = None
    args: list[Argument] | None = None
    dry_run: list[DryRun] | None = None
    measurement_retention: list[MeasurementRetention] | None = None
    templates: list[AnalysisTemplateRef] | None = None


class AnalysisTemplate(K8sStruct, kw_only=True):
    """Namespaced analysis template."""

    api_version: str = ANALYSIS_API_VERSION
    kind: str = "AnalysisTemplate"
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: AnalysisTemplateSpec


class ClusterAnalysisTemplate(K8sStruct, kw_only=True):
    """Cluster-scoped analysis template."""

    api_version: str = ANALYSIS_API_VERSION
    kind: str = "ClusterAnalysisTemplate"
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: AnalysisTemplateSpec
