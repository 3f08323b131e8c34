"""Load Argo Rollouts YAML/JSON into typed specs, translating decode errors into SpecError paths."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import msgspec
import yaml

from shared.specs.analysis import AnalysisTemplate, ClusterAnalysisTemplate
from shared.specs.errors import SpecError
from shared.specs.rollouts import Rollout
from shared.specs.validation import ConditionChecker, validate_analysis_template, validate_rollout

__all__ = [
    "ARGO_GROUP",
    "ARGO_VERSION",
    "Document",
    "OtherObject",
    "decode",
    "encode",
    "load_documents",
    "parse_analysis_template",
    "parse_cluster_analysis_template",
    "parse_rollout",
    "to_builtins",
]

ARGO_GROUP = "argoproj.io"
ARGO_VERSION = "v1alpha1"


class OtherObject(msgspec.Struct, frozen=True):
    """Any Kubernetes object that is not one of ours (Service, Ingress, VirtualService...)."""

    api_version: str
    kind: str
    name: str | None = None


Document = Rollout | AnalysisTemplate | ClusterAnalysisTemplate | OtherObject
Spec = Rollout | AnalysisTemplate | ClusterAnalysisTemplate
_KINDS: dict[str, type[Spec]] = {
    "Rollout": Rollout,
    "AnalysisTemplate": AnalysisTemplate,
    "ClusterAnalysisTemplate": ClusterAnalysisTemplate,
}
T = TypeVar("T", Rollout, AnalysisTemplate, ClusterAnalysisTemplate)


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings, as Kubernetes does (metav1.Time is RFC 3339 text)."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in _Loader.yaml_implicit_resolvers.copy().items()
}

_MSGSPEC_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]*)`")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]*)`")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")


def _spec_error(exc: msgspec.ValidationError) -> SpecError:
    """Turn msgspec's "... - at `$.a.b[0]`" into a SpecError with a dotted path and a short message."""
    match = _MSGSPEC_AT.match(str(exc))
    assert match is not None  # the pattern matches any string
    message, path = match.group("msg"), (match.group("path") or "").lstrip(".")
    if m := _UNKNOWN.fullmatch(message):
        return SpecError(_join(path, m.group("field")), "unknown field")
    if m := _MISSING.fullmatch(message):
        return SpecError(_join(path, m.group("field")), "missing required field")
    if m := _EXPECTED.fullmatch(message):
        want = m.group("want").replace(" | null", "").replace("null | ", "")
        return SpecError(path, f"expected {want}, got {m.group('got')}")
    return SpecError(path, message[:1].lower() + message[1:])


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


def _label(data: dict[str, Any]) -> str:
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{data.get('kind')}/{name or '<unnamed>'}"


def decode(data: dict[str, Any], kind: type[T]) -> T:
    """Decode one object (already YAML/JSON-parsed) into `kind`, without semantic validation."""
    result: T = _convert(data, kind)
    return result


def _convert(data: dict[str, Any], kind: type[Spec]) -> Any:
    try:
        # strict=True keeps YAML 1 and "1" distinct for IntOrString fields and rejects
        # "10" for integer fields, exactly like the Kubernetes API server does.
        return msgspec.convert(data, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise _spec_error(exc).with_obj(_label(data)) from None


def _validate(doc: Spec, label: str, check_condition: ConditionChecker | None) -> None:
    try:
        if isinstance(doc, Rollout):
            validate_rollout(doc)
        else:
            validate_analysis_template(doc, check_condition=check_condition)
    except SpecError as exc:
        raise exc.with_obj(label) from None


def _document(data: Any, check_condition: ConditionChecker | None) -> Document:
    if not isinstance(data, dict):
        raise SpecError("", f"expected a Kubernetes object (mapping), got {type(data).__name__}")
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        raise SpecError("kind", "missing field: every document needs a kind")
    group = api_version.split("/", 1)[0] if isinstance(api_version, str) else None
    spec_type = _KINDS.get(kind)
    if spec_type is None or (group is not None and group != ARGO_GROUP):
        meta = data.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        return OtherObject(
            api_version=str(api_version or ""), kind=kind, name=name if isinstance(name, str) else None
        )
    if api_version != f"{ARGO_GROUP}/{ARGO_VERSION}":
        raise SpecError(
            "apiVersion",
            f"unsupported apiVersion {api_version!r}, expected '{ARGO_GROUP}/{ARGO_VERSION}'",
            _label(data),
        )
    doc: Spec = _convert(data, spec_type)
    _validate(doc, _label(data), check_condition)
    return doc


def _parse_text(text: str | bytes) -> list[Any]:
    """Parse JSON or (multi-document) YAML into plain Python values."""
    if isinstance(text, bytes):
        text = text.decode("utf-8-sig")
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return [json.loads(stripped)]
        except json.JSONDecodeError:
            pass  # flow-style YAML also starts with "{"; let the YAML parser decide.
    try:
        return list(yaml.load_all(text, Loader=_Loader))  # _Loader derives from SafeLoader
    except yaml.YAMLError as exc:
        raise SpecError("", f"invalid YAML: {exc}") from None


def _flatten(values: list[Any]) -> list[Any]:
    """Skip empty documents and expand `kind: List` (or `FooList`) objects and JSON arrays."""
    out: list[Any] = []
    for value in values:
        if value is None or value == {}:
            continue
        if isinstance(value, list):
            out.extend(_flatten(value))
        elif isinstance(value, dict) and str(value.get("kind", "")).endswith("List") and "items" in value:
            out.extend(_flatten(list(value.get("items") or [])))
        else:
            out.append(value)
    return out


def load_documents(text: str | bytes, *, check_condition: ConditionChecker | None = None) -> list[Document]:
    """Load every object from YAML or JSON text; ours are decoded and validated, others become OtherObject."""
    return [_document(value, check_condition) for value in _flatten(_parse_text(text))]


def _parse_one(
    data: dict[str, Any] | str | bytes, kind: type[T], check_condition: ConditionChecker | None
) -> T:
    if isinstance(data, dict):
        docs = [_document(data, check_condition)]
    else:
        docs = load_documents(data, check_condition=check_condition)
    found = [d for d in docs if isinstance(d, kind)]
    if len(found) != 1:
        raise SpecError("", f"expected exactly one {kind.__name__}, found {len(found)}")
    return found[0]


def parse_rollout(data: dict[str, Any] | str | bytes) -> Rollout:
    """Decode and validate a single Rollout from a dict, YAML or JSON."""
    return _parse_one(data, Rollout, None)


def parse_analysis_template(
    data: dict[str, Any] | str | bytes, *, check_condition: ConditionChecker | None = None
) -> AnalysisTemplate:
    """Decode and validate a single AnalysisTemplate from a dict, YAML or JSON."""
    return _parse_one(data, AnalysisTemplate, check_condition)


def parse_cluster_analysis_template(
    data: dict[str, Any] | str | bytes, *, check_condition: ConditionChecker | None = None
) -> ClusterAnalysisTemplate:
    """Decode and validate a single ClusterAnalysisTemplate from a dict, YAML or JSON."""
    return _parse_one(data, ClusterAnalysisTemplate, check_condition)


def to_builtins(obj: Spec) -> dict[str, Any]:
    """camelCase builtins with defaults omitted; apiVersion and kind always present and first."""
    body = msgspec.to_builtins(obj)
    assert isinstance(body, dict)
    head = {"apiVersion": obj.api_version, "kind": obj.kind}
    return head | {k: v for k, v in body.items() if k not in head}


def encode(obj: Spec) -> bytes:
    """JSON bytes that load_documents() turns back into an equal object."""
    return msgspec.json.encode(to_builtins(obj))
