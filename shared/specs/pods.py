"""core/v1 pod template structs: PodTemplateSpec, PodSpec, Container, Probe and friends."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.specs.meta import IntOrString, K8sStruct, ObjectMeta

__all__ = [
    "Container",
    "ContainerPort",
    "EnvFromSource",
    "EnvVar",
    "ExecAction",
    "GRPCAction",
    "HTTPGetAction",
    "HTTPHeader",
    "PodSpec",
    "PodTemplateSpec",
    "Probe",
    "ResourceRequirements",
    "TCPSocketAction",
    "VolumeMount",
]

# Resource quantities appear in YAML as `1`, `0.5` or `"128Mi"`.
Quantity = int | float | str


class ContainerPort(K8sStruct, kw_only=True):
    """core/v1 ContainerPort."""

    container_port: int
    name: str | None = None
    protocol: str | None = None
    host_port: int | None = None
    host_ip: str | None = msgspec.field(default=None, name="hostIP")


class EnvVar(K8sStruct, kw_only=True):
    """core/v1 EnvVar; valueFrom (secret/configMap/field/resource refs) kept free-form."""

    name: str
    value: str | None = None
    value_from: dict[str, Any] | None = None


class EnvFromSource(K8sStruct, kw_only=True):
    """core/v1 EnvFromSource."""

    prefix: str | None = None
    config_map_ref: dict[str, Any] | None = None
    secret_ref: dict[str, Any] | None = None


class ResourceRequirements(K8sStruct, kw_only=True):
    """core/v1 ResourceRequirements."""

    limits: dict[str, Quantity] | None = None
    requests: dict[str, Quantity] | None = None
    claims: list[dict[str, Any]] | None = None


class VolumeMount(K8sStruct, kw_only=True):
    """core/v1 VolumeMount."""

    name: str
    mount_path: str
    read_only: bool | None = None
    recursive_read_only: str | None = None
    sub_path: str | None = None
    sub_path_expr: str | None = None
    mount_propagation: str | None = None


class HTTPHeader(K8sStruct, kw_only=True):
    """A header sent by an HTTP probe."""

    name: str
    value: str


class HTTPGetAction(K8sStruct, kw_only=True):
    """core/v1 HTTPGetAction."""

    port: IntOrString
    path: str | None = None
    host: str | None = None
    scheme: str | None = None
    http_headers: list[HTTPHeader] | None = None


class TCPSocketAction(K8sStruct, kw_only=True):
    """core/v1 TCPSocketAction."""

    port: IntOrString
    host: str | None = None


class ExecAction(K8sStruct, kw_only=True):
    """core/v1 ExecAction."""

    command: list[str] | None = None


class GRPCAction(K8sStruct, kw_only=True):
    """core/v1 GRPCAction."""

    port: int
    service: str | None = None


class Probe(K8sStruct, kw_only=True):
    """core/v1 Probe (readiness, liveness, startup)."""

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: int | None = None
    timeout_seconds: int | None = None
    period_seconds: int | None = None
    success_threshold: int | None = None
    failure_threshold: int | None = None
    termination_grace_period_seconds: int | None = None


class Container(K8sStruct, kw_only=True):
    """core/v1 Container."""

    name: str
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    ports: list[ContainerPort] | None = None
    env_from: list[EnvFromSource] | None = None
    env: list[EnvVar] | None = None
    resources: ResourceRequirements | None = None
    resize_policy: list[dict[str, Any]] | None = None
    restart_policy: str | None = None
    volume_mounts: list[VolumeMount] | None = None
    volume_devices: list[dict[str, Any]] | None = None
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    lifecycle: dict[str, Any] | None = None
    termination_message_path: str | None = None
    termination_message_policy: str | None = None
    image_pull_policy: str | None = None
    security_context: dict[str, Any] | None = None
    stdin: bool | None = None
    stdin_once: bool | None = None
    tty: bool | None = None


class PodSpec(K8sStruct, kw_only=True):
    """core/v1 PodSpec; deep scheduling/volume/security sub-objects stay free-form."""

    containers: list[Container] = msgspec.field(default_factory=list)
    init_containers: list[Container] | None = None
    ephemeral_containers: list[dict[str, Any]] | None = None
    volumes: list[dict[str, Any]] | None = None
    restart_policy: str | None = None
    termination_grace_period_seconds: int | None = None
    active_deadline_seconds: int | None = None
    dns_policy: str | None = None
    dns_config: dict[str, Any] | None = None
    node_selector: dict[str, str] | None = None
    service_account_name: str | None = None
    # Deprecated alias of serviceAccountName, still accepted by the API server.
    service_account: str | None = None
    automount_service_account_token: bool | None = None
    node_name: str | None = None
    host_network: bool | None = None
    host_pid: bool | None = msgspec.field(default=None, name="hostPID")
    host_ipc: bool | None = msgspec.field(default=None, name="hostIPC")
    host_users: bool | None = None
    share_process_namespace: bool | None = None
    security_context: dict[str, Any] | None = None
    image_pull_secrets: list[dict[str, Any]] | None = None
    hostname: str | None = None
    subdomain: str | None = None
    set_hostname_as_fqdn: bool | None = msgspec.field(default=None, name="setHostnameAsFQDN")
    affinity: dict[str, Any] | None = None
    scheduler_name: str | None = None
    tolerations: list[dict[str, Any]] | None = None
    host_aliases: list[dict[str, Any]] | None = None
    priority_class_name: str | None = None
    priority: int | None = None
    preemption_policy: str | None = None
    readiness_gates: list[dict[str, Any]] | None = None
    runtime_class_name: str | None = None
    enable_service_links: bool | None = None
    overhead: dict[str, Quantity] | None = None
    topology_spread_constraints: list[dict[str, Any]] | None = None
    os: dict[str, Any] | None = None
    scheduling_gates: list[dict[str, Any]] | None = None
    resource_claims: list[dict[str, Any]] | None = None
    resources: ResourceRequirements | None = None


class PodTemplateSpec(K8sStruct, kw_only=True):
    """core/v1 PodTemplateSpec."""

    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: PodSpec = msgspec.field(default_factory=PodSpec)
