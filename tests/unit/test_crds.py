"""The CRDs generated from the msgspec spec model (shared/specs/crds.py).

Covers: the committed deploy/crds/*.yaml are current; every schema is structural (walked here with
the API server's rules); the CRDs pass kubernetes-validate's strict apiextensions/v1 schema; the
Rollout's subresources, printer columns and names match Argo's; every Rollout/AnalysisTemplate the
loader accepts (deploy/examples, tests/fixtures/specs) is also accepted by the CRD schema, checked
the way the API server does (nulls pruned, unknown fields reported, then OpenAPI validation); and
the generator's errors name the type or argument at fault.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import msgspec
import pytest
import yaml

from shared.specs import (
    AnalysisTemplate,
    CanaryStrategy,
    ClusterAnalysisTemplate,
    PodSpec,
    Rollout,
    SpecError,
)
from shared.specs.crds import DEFAULT_GROUP, CrdError, crds, main, render, structural_schema
from shared.specs.loading import OtherObject, load_documents, to_builtins

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = {
    "argoproj.io": ROOT / "deploy" / "crds" / "argoproj.io.yaml",
    "rollouts.nats.io": ROOT / "deploy" / "crds" / "rollouts.nats.io.yaml",
}
SPEC_FILES = sorted((ROOT / "deploy" / "examples").glob("*.yaml")) + sorted(
    p for p in (ROOT / "tests" / "fixtures" / "specs").iterdir() if p.suffix in (".yaml", ".yml", ".json")
)
KUBERNETES_VERSION = "1.30"
PRESERVE = "x-kubernetes-preserve-unknown-fields"
INT_OR_STRING = "x-kubernetes-int-or-string"
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")


@functools.cache
def by_kind(group: str = DEFAULT_GROUP) -> dict[str, dict[str, Any]]:
    """The generated CRDs by kind (generated once; tests only read them)."""
    return {crd["spec"]["names"]["kind"]: crd for crd in crds(group)}


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


# --- structural schema rules (k8s.io/apiextensions-apiserver: "Specifying a structural schema") ----


def structural_violations(node: Any, path: str = "", *, root: bool = True) -> list[str]:
    """Every rule a structural schema breaks, with the path of the node at fault."""
    if not isinstance(node, dict):
        return [f"{path}: schema node is {type(node).__name__}, not an object"]
    errors: list[str] = []
    here = path or "<root>"
    preserve = node.get(PRESERVE) is True
    int_or_string = node.get(INT_OR_STRING) is True
    if "$ref" in node:
        errors.append(f"{here}: $ref is not allowed")
    if not node.get("type") and not (preserve or int_or_string):
        errors.append(f"{here}: no type (needed unless int-or-string or preserve-unknown-fields)")
    if preserve and node.get("type") not in (None, "object"):
        errors.append(f"{here}: preserve-unknown-fields on a non-object type {node.get('type')!r}")
    if "properties" in node and "additionalProperties" in node:
        errors.append(f"{here}: properties and additionalProperties together")
    if node.get("additionalProperties") is False or node.get("additionalProperties") is True:
        errors.append(f"{here}: additionalProperties must be a schema, not a boolean")
    if node.get("type") == "array" and "items" not in node:
        errors.append(f"{here}: array without items")
    if int_or_string:
        if "type" in node:
            errors.append(f"{here}: int-or-string node must not set type")
        if node.get("anyOf", [{"type": "integer"}, {"type": "string"}]) != [
            {"type": "integer"},
            {"type": "string"},
        ]:
            errors.append(f"{here}: int-or-string anyOf must be [integer, string]")
    else:
        for junctor in JUNCTORS:
            if junctor in node:
                errors.append(f"{here}: {junctor} outside the int-or-string pattern")
    for name, prop in node.get("properties", {}).items():
        sub = f"{path}.{name}" if path else name
        if root and name == "metadata":
            if prop != {"type": "object"}:
                errors.append(f"{sub}: root metadata may only be `type: object`")
            continue
        errors += structural_violations(prop, sub, root=False)
    if isinstance(node.get("additionalProperties"), dict):
        errors += structural_violations(node["additionalProperties"], f"{path}.*", root=False)
    if "items" in node:
        errors += structural_violations(node["items"], f"{path}[]", root=False)
    return errors


# --- validating an object the way the API server does -------------------------------------------


def without_nulls(value: Any) -> Any:
    """The API server prunes null values of non-nullable fields before validation."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the API server would prune (and `kubectl apply` reports as unknown)."""
    found: list[str] = []
    if (isinstance(value, dict) and schema.get("type") == "object") or PRESERVE in schema:
        if not isinstance(value, dict):
            return found
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            if key in props:
                if not (path == "" and key == "metadata"):  # ObjectMeta is checked by the server itself
                    found += unknown_fields(item, props[key], sub)
            elif isinstance(extra, dict):
                found += unknown_fields(item, extra, sub)
            elif not schema.get(PRESERVE):
                found.append(sub)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def crd_errors(obj: dict[str, Any], crd: dict[str, Any]) -> list[str]:
    schema = schema_of(crd)
    pruned = without_nulls(obj)
    errors = [f"{p}: unknown field" for p in unknown_fields(pruned, schema)]
    validator = jsonschema.Draft4Validator(schema)
    errors += [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(pruned)
    ]
    return errors


def objects(value: Any) -> list[dict[str, Any]]:
    """Objects of a parsed file as the loader sees them: lists and `kind: List` expanded, empties skipped."""
    if isinstance(value, list):
        return [obj for item in value for obj in objects(item)]
    if isinstance(value, dict) and str(value.get("kind", "")).endswith("List") and "items" in value:
        return objects(value["items"])
    return [value] if value else []


def spec_documents() -> list[tuple[str, dict[str, Any]]]:
    """(label, raw object) of every Rollout/AnalysisTemplate the loader accepts in the spec files."""
    found: list[tuple[str, dict[str, Any]]] = []
    for path in SPEC_FILES:
        text = path.read_text()
        try:
            loaded = load_documents(text)
        except SpecError:
            continue  # a fixture of a rejected spec: nothing the CRD must accept
        raw = objects(list(yaml.safe_load_all(text)))  # JSON is YAML too
        assert len(loaded) == len(raw), path
        for doc, spec in zip(raw, loaded, strict=True):
            if not isinstance(spec, OtherObject):
                found.append((f"{path.relative_to(ROOT)}:{doc['kind']}/{doc['metadata'].get('name')}", doc))
    return found


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", sorted(COMMITTED))
def test_committed_crds_are_current(group: str) -> None:
    assert COMMITTED[group].read_text() == render(group), (
        f"{COMMITTED[group].relative_to(ROOT)} is stale: "
        f"run `python -m shared.specs.crds{'' if group == DEFAULT_GROUP else ' --group ' + group}` to regenerate"
    )


def test_every_schema_is_structural() -> None:
    for crd in crds():
        assert structural_violations(schema_of(crd)) == [], crd["metadata"]["name"]


def test_the_structural_walker_catches_violations() -> None:
    bad = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
            "a": {"properties": {"b": {"type": "string"}}},
            "c": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "d": {"type": "array"},
            "e": {"anyOf": [{"type": "string"}, {"type": "boolean"}]},
            "f": {"$ref": "#/$defs/X"},
            "g": {"type": "string", PRESERVE: True},
        },
    }
    paths = sorted(v.split(":")[0] for v in structural_violations(bad))
    assert paths == ["a", "c", "d", "e", "e", "f", "f", "g", "metadata"]


@pytest.mark.parametrize("group", ["argoproj.io", "rollouts.nats.io"])
def test_crds_pass_the_kubernetes_apiextensions_schema(group: str) -> None:
    for crd in crds(group):
        assert kubernetes_validate.validate(crd, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_rollout_crd_matches_argo() -> None:
    crd = by_kind()["Rollout"]
    assert crd["metadata"]["name"] == "rollouts.argoproj.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": "Rollout",
        "listKind": "RolloutList",
        "plural": "rollouts",
        "singular": "rollout",
        "shortNames": ["ro"],
    }
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.HPAReplicas",  # Argo's rollout-crd.yaml
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Desired", "integer", ".spec.replicas"),
        ("Current", "integer", ".status.replicas"),
        ("Up-to-date", "integer", ".status.updatedReplicas"),
        ("Available", "integer", ".status.availableReplicas"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


def test_other_kinds_names_scope_and_columns() -> None:
    kinds = by_kind()
    expected = {
        "AnalysisTemplate": ("analysistemplates", ["at"], "Namespaced", ["Age"]),
        "ClusterAnalysisTemplate": ("clusteranalysistemplates", ["cat"], "Cluster", ["Age"]),
        "AnalysisRun": ("analysisruns", ["ar"], "Namespaced", ["Status", "Age"]),
        "Experiment": ("experiments", ["exp"], "Namespaced", ["Status", "Age"]),
    }
    for kind, (plural, short, scope, columns) in expected.items():
        crd = kinds[kind]
        (version,) = crd["spec"]["versions"]
        assert crd["metadata"]["name"] == f"{plural}.argoproj.io"
        assert crd["spec"]["names"]["shortNames"] == short
        assert crd["spec"]["scope"] == scope
        assert [c["name"] for c in version["additionalPrinterColumns"]] == columns
        assert "subresources" not in version  # as Argo's: runs are written whole, status included
    for kind in ("AnalysisRun", "Experiment"):
        props = schema_of(kinds[kind])["properties"]
        assert props["spec"] == {"type": "object", PRESERVE: True}
        assert props["status"] == {"type": "object", PRESERVE: True}


def test_group_parameter_renames_every_crd() -> None:
    for crd in crds("rollouts.nats.io"):
        assert crd["spec"]["group"] == "rollouts.nats.io"
        assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.rollouts.nats.io"
        assert crd["metadata"]["labels"] == {"app.kubernetes.io/part-of": "nats-rollouts"}


@pytest.mark.parametrize("group", ["Rollouts.io", "nodot", "-a.io", "a..io", ""])
def test_bad_group_is_rejected_naming_the_flag(group: str) -> None:
    with pytest.raises(CrdError, match="--group") as info:
        crds(group)
    assert repr(group) in str(info.value)


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--group", "rollouts.nats.io"]) == 0
    out = capsys.readouterr().out
    assert out == render("rollouts.nats.io")
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert [d["metadata"]["name"] for d in docs] == [
        "rollouts.rollouts.nats.io",
        "analysistemplates.rollouts.nats.io",
        "clusteranalysistemplates.rollouts.nats.io",
        "analysisruns.rollouts.nats.io",
        "experiments.rollouts.nats.io",
    ]
    assert main(["--group", "BAD"]) == 1
    assert "--group: 'BAD' is not a valid API group" in capsys.readouterr().err


def test_rollout_fields_are_typed_and_described() -> None:
    spec = schema_of(by_kind()["Rollout"])["properties"]["spec"]
    canary = spec["properties"]["strategy"]["properties"]["canary"]
    assert canary["description"] == CanaryStrategy.__doc__
    assert canary["properties"]["maxSurge"] == {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        INT_OR_STRING: True,
    }
    step = canary["properties"]["steps"]["items"]
    assert step["properties"]["setWeight"] == {"type": "integer"}
    assert step["properties"]["pause"]["properties"]["duration"][INT_OR_STRING] is True
    assert step["properties"]["plugin"]["properties"]["config"] == {PRESERVE: True}  # Any
    assert step["properties"]["plugin"]["required"] == ["name"]
    assert spec["properties"]["replicas"] == {"type": "integer"}
    # The pod template is typed, but keeps fields newer than the model (see the module docstring).
    pod = spec["properties"]["template"]["properties"]["spec"]
    assert pod["description"] == PodSpec.__doc__ and pod[PRESERVE] is True
    assert pod["properties"]["containers"]["items"]["required"] == ["name"]
    assert PRESERVE not in spec and PRESERVE not in canary  # Rollout's own fields are never preserved


def test_web_metric_method_is_an_enum() -> None:
    metric = schema_of(by_kind()["AnalysisTemplate"])["properties"]["spec"]["properties"]["metrics"]["items"]
    web = metric["properties"]["provider"]["properties"]["web"]
    assert web["properties"]["method"] == {"type": "string", "enum": ["GET", "POST", "PUT"]}
    assert web["properties"]["jsonBody"] == {PRESERVE: True}


def test_cluster_template_schema_equals_namespaced_one_but_for_descriptions() -> None:
    namespaced = structural_schema(AnalysisTemplate)
    cluster = structural_schema(ClusterAnalysisTemplate)
    assert namespaced["properties"]["spec"] == cluster["properties"]["spec"]


def test_spec_files_are_found() -> None:
    labels = [label for label, _ in spec_documents()]
    assert any(label.startswith("deploy/examples/canary-rollout.yaml:Rollout/") for label in labels)
    assert any(":AnalysisTemplate/" in label for label in labels)
    assert any(":ClusterAnalysisTemplate/" in label for label in labels)
    assert len(labels) >= 6


@pytest.mark.parametrize("label,doc", spec_documents(), ids=lambda v: v if isinstance(v, str) else "")
def test_loader_valid_specs_validate_against_the_crd(label: str, doc: dict[str, Any]) -> None:
    assert crd_errors(doc, by_kind()[doc["kind"]]) == [], label


def test_crd_validation_rejects_what_the_api_server_rejects() -> None:
    (_, rollout) = next((label, d) for label, d in spec_documents() if d["kind"] == "Rollout")
    crd = by_kind()["Rollout"]
    bad = copy.deepcopy(rollout)
    bad["spec"]["replicas"] = "3"
    bad["spec"]["strategy"]["bogus"] = True
    bad["spec"]["template"]["spec"]["futureField"] = {"x": 1}  # kept: PodSpec preserves unknown fields
    errors = crd_errors(bad, crd)
    assert errors == ["spec.strategy.bogus: unknown field", "spec.replicas: '3' is not of type 'integer'"]
    bad = copy.deepcopy(rollout)
    bad["spec"]["template"]["spec"]["containers"][0].pop("name")
    assert crd_errors(bad, crd) == ["spec.template.spec.containers.0: 'name' is a required property"]
    assert crd_errors({**rollout, "spec": {**rollout["spec"], "paused": None}}, crd) == []  # null pruned


class _Node(msgspec.Struct):
    """A recursive type: no structural schema can inline it."""

    children: list[_Node] = []


class _Union(msgspec.Struct):
    """A union a structural schema cannot express."""

    value: str | list[str]


class _Spec(msgspec.Struct):
    """Wrapper whose field path shows up in errors."""

    spec: _Union


def test_untranslatable_types_name_the_field() -> None:
    with pytest.raises(CrdError, match="recursive type _Node"):
        structural_schema(_Node)
    with pytest.raises(CrdError, match=r"^_Spec\.spec\.value: union .* has no structural schema"):
        structural_schema(_Spec)


def test_rollout_model_round_trip_is_accepted() -> None:
    """A Rollout built from the model, encoded as the planner would send it, validates too."""
    doc = yaml.safe_load(
        """
        apiVersion: argoproj.io/v1alpha1
        kind: Rollout
        metadata: {name: r}
        spec:
          selector: {matchLabels: {app: r}}
          template:
            metadata: {labels: {app: r}}
            spec: {containers: [{name: app, image: nginx, resources: {limits: {cpu: 1, memory: 1Gi}}}]}
          strategy:
            blueGreen: {activeService: a, antiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {}}}
        """
    )
    rollout = msgspec.convert(doc, Rollout, strict=True)
    body = to_builtins(rollout)
    assert body["apiVersion"] == "argoproj.io/v1alpha1"
    assert crd_errors(body, by_kind()["Rollout"]) == []
