"""CustomResourceDefinitions (apiextensions.k8s.io/v1) generated from the msgspec spec model.

For clusters without Argo Rollouts' CRDs, or to install next to Argo under another API group:

    python -m shared.specs.crds [--group rollouts.nats.io] > crds.yaml

The openAPIV3Schema is *structural* (what the API server requires for pruning and defaulting):
every `$ref` inlined, every node typed, `x-kubernetes-int-or-string` for `int | str` unions,
`x-kubernetes-preserve-unknown-fields` for free-form values. Two deliberate departures from a plain
translation of the model:

* `PodSpec` and `Container` keep typed properties AND preserve unknown fields: a Kubernetes field
  newer than the model would otherwise be pruned silently by the API server; kept, it reaches the
  loader, which rejects it naming the field.
* The root `metadata` is only `type: object`, as the API server demands.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
import yaml

from shared.specs.analysis import AnalysisTemplate, ClusterAnalysisTemplate
from shared.specs.rollouts import Rollout

__all__ = [
    "DEFAULT_GROUP",
    "PART_OF_LABEL",
    "VERSION",
    "CrdError",
    "crds",
    "main",
    "render",
    "structural_schema",
]

DEFAULT_GROUP = "argoproj.io"
VERSION = "v1alpha1"
# Marks our CRDs, so a script can tell them from Argo's (same names in argoproj.io).
PART_OF_LABEL = ("app.kubernetes.io/part-of", "nats-rollouts")

# Structs whose unknown fields are kept rather than pruned (see the module docstring).
_OPEN_STRUCTS = frozenset({"PodSpec", "Container"})
# JSON Schema keywords with the same meaning in OpenAPI v3 schemas of CRDs, copied as they are.
_VALUE_KEYWORDS = (
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
)
# Keywords msgspec emits that a CRD schema does not need (titles repeat the kind; defaults would be
# applied by the API server, which Argo's CRDs never do).
_DROPPED_KEYWORDS = frozenset({"title", "default", "examples", "$defs"})
# Keywords that shape the schema; translated one by one below.
_SHAPE_KEYWORDS = frozenset(
    {"type", "description", "properties", "required", "additionalProperties", "items", "enum"}
)
# DNS-1123 subdomain with at least one dot: what the API server accepts as a CRD group.
_GROUP = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+")
_PRESERVE = "x-kubernetes-preserve-unknown-fields"
_INT_OR_STRING = "x-kubernetes-int-or-string"


class CrdError(ValueError):
    """A type in the model has no structural schema, or a bad generator argument; names the path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


# --- schema translation (pure) ------------------------------------------------------------------


def structural_schema(kind: type[msgspec.Struct]) -> dict[str, Any]:
    """The structural openAPIV3Schema of a top-level kind (Rollout, AnalysisTemplate...)."""
    raw = msgspec.json.schema(kind)
    schema = _Translator(raw.get("$defs", {})).node(raw, kind.__name__, ())
    props = schema.get("properties", {})
    if "metadata" in props:
        # The API server only allows restrictions on metadata.name/generateName at the root.
        props["metadata"] = {"type": "object"}
    return schema


class _Translator:
    """Turns msgspec's JSON Schema into a structural OpenAPI v3 schema, inlining `$defs`."""

    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def node(self, src: dict[str, Any], path: str, stack: tuple[str, ...]) -> dict[str, Any]:
        if "$ref" in src:
            return self._ref(src, path, stack)
        if "anyOf" in src:
            return self._union(src, path, stack)
        unknown = set(src) - _DROPPED_KEYWORDS - _SHAPE_KEYWORDS - set(_VALUE_KEYWORDS)
        if unknown:
            raise CrdError(path, f"no structural schema for JSON Schema keyword(s) {sorted(unknown)}")
        out: dict[str, Any] = {}
        if src.get("description"):
            out["description"] = src["description"]
        kind = src.get("type")
        if "enum" in src:
            out |= self._enum(src["enum"], path)
        elif kind is None:
            out[_PRESERVE] = True  # `Any`: any JSON value
        elif kind == "object":
            out |= self._object(src, path, stack)
        elif kind == "array":
            out["type"] = "array"
            items = src.get("items")
            out["items"] = self.node(items, f"{path}[]", stack) if items else {_PRESERVE: True}
        elif kind in ("string", "integer", "number", "boolean"):
            out["type"] = kind
        else:
            raise CrdError(path, f"no structural schema for type {kind!r}")
        out |= {k: src[k] for k in _VALUE_KEYWORDS if k in src}
        return out

    def _ref(self, src: dict[str, Any], path: str, stack: tuple[str, ...]) -> dict[str, Any]:
        name = str(src["$ref"]).rsplit("/", 1)[-1]
        if name in stack:
            raise CrdError(path, f"recursive type {name} cannot be inlined into a structural schema")
        if name not in self.defs:
            raise CrdError(path, f"unresolved $ref {src['$ref']!r}")
        out = self.node(self.defs[name], path, (*stack, name))
        if name in _OPEN_STRUCTS:
            out[_PRESERVE] = True
        return out

    def _union(self, src: dict[str, Any], path: str, stack: tuple[str, ...]) -> dict[str, Any]:
        # `None` members only say the field may be omitted: the API server prunes nulls of
        # non-nullable fields, so they need no schema.
        members = [m for m in src["anyOf"] if m != {"type": "null"}]
        if len(members) == 1:
            out = self.node(members[0], path, stack)
        else:
            kinds = {m.get("type") for m in members if set(m) == {"type"}}
            int_or_string = {"integer", "string"} <= kinds <= {"integer", "number", "string"}
            if len(kinds) != len(members) or not int_or_string:
                raise CrdError(path, f"union {src['anyOf']} has no structural schema (only int | str has)")
            # int | str (and quantities, int | float | str) as controller-gen writes them; a float
            # quantity such as 0.5 must then be written "500m", as with Argo's own CRDs.
            out = {"anyOf": [{"type": "integer"}, {"type": "string"}], _INT_OR_STRING: True}
        if src.get("description"):
            out = {"description": src["description"], **out}
        return out

    def _enum(self, values: list[Any], path: str) -> dict[str, Any]:
        kinds = {type(v) for v in values}
        if kinds == {str}:
            return {"type": "string", "enum": list(values)}
        if kinds == {int}:
            return {"type": "integer", "enum": list(values)}
        raise CrdError(path, f"enum {values} mixes types; a structural schema needs one")

    def _object(self, src: dict[str, Any], path: str, stack: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object"}
        if "properties" in src:  # a Struct; an empty one (no fields) is just `type: object`
            if src["properties"]:
                out["properties"] = {
                    name: self.node(prop, f"{path}.{name}", stack) for name, prop in src["properties"].items()
                }
            if src.get("required"):
                out["required"] = list(src["required"])
            # msgspec's `additionalProperties: false` (forbid_unknown_fields) has no structural form:
            # the API server prunes unknown fields and `kubectl apply` reports them.
            return out
        values = src.get("additionalProperties")
        if isinstance(values, dict) and values:
            out["additionalProperties"] = self.node(values, f"{path}.*", stack)
        else:
            out[_PRESERVE] = True  # dict[str, Any]: free-form
        return out


# --- CustomResourceDefinitions (pure) -----------------------------------------------------------


def _age() -> dict[str, Any]:
    return {
        "name": "Age",
        "type": "date",
        "description": "Time since resource was created",
        "jsonPath": ".metadata.creationTimestamp",
    }


def _column(name: str, kind: str, json_path: str, description: str) -> dict[str, Any]:
    return {"name": name, "type": kind, "description": description, "jsonPath": json_path}


# Same columns as Argo's rollout CRD (`kubectl get ro`).
_ROLLOUT_COLUMNS = [
    _column("Desired", "integer", ".spec.replicas", "Number of desired pods"),
    _column(
        "Current",
        "integer",
        ".status.replicas",
        "Total number of non-terminated pods targeted by this rollout",
    ),
    _column(
        "Up-to-date",
        "integer",
        ".status.updatedReplicas",
        "Total number of non-terminated pods targeted by this rollout that have the desired template spec",
    ),
    _column(
        "Available",
        "integer",
        ".status.availableReplicas",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this rollout",
    ),
    _age(),
]


def _free_form_schema(description: str) -> dict[str, Any]:
    """Kinds the project reads but does not model: typed envelope, free-form spec and status."""
    return {
        "description": description,
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {"type": "object", _PRESERVE: True},
            "status": {"type": "object", _PRESERVE: True},
        },
        "required": ["spec"],
    }


def _crd(
    group: str,
    *,
    kind: str,
    plural: str,
    short_names: Sequence[str],
    scope: str,
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
    subresources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "additionalPrinterColumns": columns,
        "schema": {"openAPIV3Schema": schema},
    }
    if subresources:
        version["subresources"] = subresources
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": {PART_OF_LABEL[0]: PART_OF_LABEL[1]}},
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": list(short_names),
            },
            "scope": scope,
            "versions": [version],
        },
    }


def crds(group: str = DEFAULT_GROUP) -> list[dict[str, Any]]:
    """Rollout, AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun and Experiment CRDs for `group`."""
    if not _GROUP.fullmatch(group) or len(group) > 253:
        raise CrdError(
            "--group",
            f"{group!r} is not a valid API group (a lowercase DNS subdomain with a dot, e.g. rollouts.nats.io)",
        )
    rollout_schema = structural_schema(Rollout)
    # status is written by the planner; left free-form so any Argo-compatible status survives.
    rollout_schema["properties"]["status"] = {"type": "object", _PRESERVE: True}
    return [
        _crd(
            group,
            kind="Rollout",
            plural="rollouts",
            short_names=["ro"],
            scope="Namespaced",
            schema=rollout_schema,
            columns=_ROLLOUT_COLUMNS,
            subresources={
                "status": {},
                # As Argo's CRD: the HPA counts the pods of the revision taking traffic
                # (status.HPAReplicas, written by the kube bridge), not every pod of the rollout.
                "scale": {
                    "specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.HPAReplicas",
                    "labelSelectorPath": ".status.selector",
                },
            },
        ),
        _crd(
            group,
            kind="AnalysisTemplate",
            plural="analysistemplates",
            short_names=["at"],
            scope="Namespaced",
            schema=structural_schema(AnalysisTemplate),
            columns=[_age()],
        ),
        _crd(
            group,
            kind="ClusterAnalysisTemplate",
            plural="clusteranalysistemplates",
            short_names=["cat"],
            scope="Cluster",
            schema=structural_schema(ClusterAnalysisTemplate),
            columns=[_age()],
        ),
        _crd(
            group,
            kind="AnalysisRun",
            plural="analysisruns",
            short_names=["ar"],
            scope="Namespaced",
            schema=_free_form_schema("One run of an analysis: its metrics, arguments and measurements."),
            columns=[_column("Status", "string", ".status.phase", "AnalysisRun status"), _age()],
        ),
        _crd(
            group,
            kind="Experiment",
            plural="experiments",
            short_names=["exp"],
            scope="Namespaced",
            schema=_free_form_schema("ReplicaSets and analyses run side by side for a limited time."),
            columns=[_column("Status", "string", ".status.phase", "Experiment status"), _age()],
        ),
    ]


def render(group: str = DEFAULT_GROUP) -> str:
    """Multi-document YAML of every CRD for `group`, exactly as committed under deploy/crds/."""
    group_flag = "" if group == DEFAULT_GROUP else f" --group {group}"
    header = (
        f"# Generated by `python -m shared.specs.crds{group_flag}` from the msgspec model in shared/specs/.\n"
        "# Do not edit: regenerate instead (tests/unit/test_crds.py checks this file is current).\n"
    )
    docs = [yaml.safe_dump(crd, sort_keys=False, default_flow_style=False, width=100) for crd in crds(group)]
    return header + "---\n" + "---\n".join(docs)


# --- command line (I/O shell) -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.specs.crds",
        description="Print the CRDs generated from the spec model as YAML.",
    )
    parser.add_argument(
        "--group",
        default=DEFAULT_GROUP,
        help="API group of the CRDs (default %(default)s; e.g. rollouts.nats.io to run next to Argo Rollouts)",
    )
    args = parser.parse_args(argv)
    try:
        text = render(args.group)
    except CrdError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
