"""Kubernetes object metadata and label selector structs shared by all specs."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "IntOrString",
    "K8sStruct",
    "LabelSelector",
    "LabelSelectorRequirement",
    "ObjectMeta",
    "OwnerReference",
    "PodTemplateMetadata",
]

# Kubernetes intstr.IntOrString: YAML `1` and `"1"` are distinct and must stay distinct.
IntOrString = int | str


class K8sStruct(
    msgspec.Struct,
    kw_only=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    rename="camel",
):
    """Base for every spec struct: camelCase JSON names, unknown fields rejected, defaults omitted."""


class OwnerReference(K8sStruct, kw_only=True):
    """metav1.OwnerReference."""

    api_version: str | None = None
    kind: str | None = None
    name: str | None = None
    uid: str | None = None
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(K8sStruct, kw_only=True):
    """metav1.ObjectMeta (timestamps kept as RFC 3339 strings, as they appear on the wire)."""

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    self_link: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[OwnerReference] | None = None
    finalizers: list[str] | None = None
    managed_fields: list[dict[str, Any]] | None = None
    # Removed from Kubernetes in 1.24 but still present in older exported manifests.
    cluster_name: str | None = None


class LabelSelectorRequirement(K8sStruct, kw_only=True):
    """One matchExpressions entry of a label selector."""

    key: str
    operator: str
    values: list[str] | None = None


class LabelSelector(K8sStruct, kw_only=True):
    """metav1.LabelSelector."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


class PodTemplateMetadata(K8sStruct, kw_only=True):
    """Extra labels/annotations Argo adds to pods or runs (canaryMetadata, analysisRunMetadata...)."""

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
