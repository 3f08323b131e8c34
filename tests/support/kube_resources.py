"""The emulator's table of resource types: one line per kind, as data, so a test can add a kind with one call."""

from __future__ import annotations

from dataclasses import dataclass, field

# Groups whose kinds are compiled into a real API server (strategic merge patch works, kind/apiVersion default
# from the URL); every other group is served from a CustomResourceDefinition.
BUILTIN_GROUPS = frozenset(
    {
        "",
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "coordination.k8s.io",
        "networking.k8s.io",
        "apiextensions.k8s.io",
        "events.k8s.io",
        "rbac.authorization.k8s.io",
        "discovery.k8s.io",
    }
)

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class ResourceType:
    """One kind the emulator serves, under every version in `versions` (all versions share one storage)."""

    group: str
    plural: str
    kind: str
    versions: list[str] = field(default_factory=list)
    namespaced: bool = True
    status: bool = True
    scale: bool = False
    custom: bool = False
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    # Where the scale subresource reads its numbers (the CRD's scale paths; built-ins read spec.selector).
    spec_replicas_path: str = "spec.replicas"
    status_replicas_path: str = "status.replicas"
    label_selector_path: str | None = None
    # A DELETE answers with the deleted object (pods, serviceaccounts) instead of a Status (ReturnDeletedObject).
    return_deleted: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def group_resource(self) -> str:
        """`plural.group` as the API server spells it in messages (`rollouts.argoproj.io`, `pods`)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version


# (group, versions (preferred first), plural, kind, namespaced, status, scale)
_DEFAULTS: list[tuple[str, tuple[str, ...], str, str, bool, bool, bool]] = [
    ("", ("v1",), "namespaces", "Namespace", False, True, False),
    ("", ("v1",), "pods", "Pod", True, True, False),
    ("", ("v1",), "services", "Service", True, True, False),
    ("", ("v1",), "endpoints", "Endpoints", True, False, False),
    ("", ("v1",), "secrets", "Secret", True, False, False),
    ("", ("v1",), "configmaps", "ConfigMap", True, False, False),
    ("", ("v1",), "events", "Event", True, False, False),
    ("", ("v1",), "serviceaccounts", "ServiceAccount", True, False, False),
    ("events.k8s.io", ("v1",), "events", "Event", True, False, False),
    ("apps", ("v1",), "replicasets", "ReplicaSet", True, True, True),
    ("apps", ("v1",), "deployments", "Deployment", True, True, True),
    ("apps", ("v1",), "statefulsets", "StatefulSet", True, True, True),
    ("batch", ("v1",), "jobs", "Job", True, True, False),
    ("coordination.k8s.io", ("v1",), "leases", "Lease", True, False, False),
    ("networking.k8s.io", ("v1",), "ingresses", "Ingress", True, True, False),
    (
        "apiextensions.k8s.io",
        ("v1",),
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        True,
        False,
    ),
    ("argoproj.io", ("v1alpha1",), "rollouts", "Rollout", True, True, True),
    ("argoproj.io", ("v1alpha1",), "analysistemplates", "AnalysisTemplate", True, False, False),
    (
        "argoproj.io",
        ("v1alpha1",),
        "clusteranalysistemplates",
        "ClusterAnalysisTemplate",
        False,
        False,
        False,
    ),
    ("argoproj.io", ("v1alpha1",), "analysisruns", "AnalysisRun", True, True, False),
    ("argoproj.io", ("v1alpha1",), "experiments", "Experiment", True, True, False),
    (
        "networking.istio.io",
        ("v1", "v1beta1", "v1alpha3"),
        "virtualservices",
        "VirtualService",
        True,
        True,
        False,
    ),
    (
        "networking.istio.io",
        ("v1", "v1beta1", "v1alpha3"),
        "destinationrules",
        "DestinationRule",
        True,
        True,
        False,
    ),
    ("gateway.networking.k8s.io", ("v1", "v1beta1"), "httproutes", "HTTPRoute", True, True, False),
    ("gateway.networking.k8s.io", ("v1", "v1beta1"), "gateways", "Gateway", True, True, False),
    (
        "split.smi-spec.io",
        ("v1alpha3", "v1alpha2", "v1alpha1"),
        "trafficsplits",
        "TrafficSplit",
        True,
        False,
        False,
    ),
]

_RETURN_DELETED = {("", "pods"), ("", "serviceaccounts")}
# The Argo Rollout CRD's scale subresource reads the selector from status.selector (labelSelectorPath).
_SELECTOR_PATHS = {("argoproj.io", "rollouts"): "status.selector"}


class ResourceTable:
    """Kinds by (group, plural), and the lookups the router needs."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], ResourceType] = {}

    @classmethod
    def with_defaults(cls) -> ResourceTable:
        table = cls()
        for group, versions, plural, kind, namespaced, status, scale in _DEFAULTS:
            for version in versions:
                table.register(
                    group, version, plural, kind, namespaced=namespaced, status=status, scale=scale
                )
            table._by_key[(group, plural)].return_deleted = (group, plural) in _RETURN_DELETED
            if (group, plural) in _SELECTOR_PATHS:
                table._by_key[(group, plural)].label_selector_path = _SELECTOR_PATHS[(group, plural)]
        return table

    def register(
        self,
        group: str,
        version: str,
        plural: str,
        kind: str,
        *,
        namespaced: bool = True,
        status: bool = True,
        scale: bool = False,
        custom: bool | None = None,
    ) -> ResourceType:
        """Add a kind (or one more version of a known kind); `custom` defaults from the group."""
        existing = self._by_key.get((group, plural))
        if existing is None:
            existing = ResourceType(
                group=group,
                plural=plural,
                kind=kind,
                namespaced=namespaced,
                status=status,
                scale=scale,
                custom=(group not in BUILTIN_GROUPS) if custom is None else custom,
                singular=kind.lower(),
            )
            self._by_key[(group, plural)] = existing
        else:
            existing.namespaced, existing.status, existing.scale = namespaced, status, scale
        if version not in existing.versions:
            existing.versions.append(version)
        return existing

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        rt = self._by_key.get((group, plural))
        return rt if rt is not None and version in rt.versions else None

    def find_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self._by_key.values():
            if rt.group == group and rt.kind == kind and version in rt.versions:
                return rt
        return None

    def all(self) -> list[ResourceType]:
        return list(self._by_key.values())

    def groups(self) -> dict[str, list[str]]:
        """Group name → versions, in registration order (the first version is the preferred one)."""
        out: dict[str, list[str]] = {}
        for rt in self._by_key.values():
            versions = out.setdefault(rt.group, [])
            versions.extend(v for v in rt.versions if v not in versions)
        return out
