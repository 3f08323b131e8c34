"""Kubernetes-style JSONPath, as Argo's web metric provider applies it.

Argo parses ``jsonPath`` with ``k8s.io/client-go/util/jsonpath`` (default
``{$}``) and keeps only the *first* value it finds (``getValue`` in
``metricproviders/webmetric/webmetric.go``).  :func:`extract` mirrors that;
:func:`extract_all` returns every match.

Supported: ``{$}``, ``{.a.b}``, ``{$.a[0].b}``, ``[-1]``, ``[1:3]``, ``[*]``,
``.*``, ``..name`` (recursive descent), ``['quoted key']``, and the same
paths without braces.  Filters and templates with surrounding text are
rejected with :class:`JsonPathError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["JsonPathError", "extract", "extract_all"]

_FIELD_RE: Final = re.compile(r"[^.\[\]{}\s'\"]+")
_INT_RE: Final = re.compile(r"\s*(-?\d+)?\s*")


class JsonPathError(ValueError):
    """The path is malformed, or the document does not contain it."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str  # "*" means every child
    recursive: bool = False


@dataclass(frozen=True, slots=True)
class _Index:
    start: int | None
    stop: int | None
    is_slice: bool
    wildcard: bool = False


_Step = _Field | _Index


def _strip_template(path: str) -> str:
    text = path.strip()
    if not text:
        return "$"
    if text.startswith("{"):
        if not text.endswith("}") or text.count("{") != 1 or text.count("}") != 1:
            raise JsonPathError(f"unsupported JSONPath template {path!r}: use a single {{...}} expression")
        text = text[1:-1].strip()
    elif "{" in text or "}" in text:
        raise JsonPathError(f"unsupported JSONPath template {path!r}: use a single {{...}} expression")
    return text or "$"


def _parse(path: str) -> list[_Step]:
    text = _strip_template(path)
    i = 1 if text.startswith("$") else 0
    steps: list[_Step] = []
    while i < len(text):
        if text.startswith("..", i):
            m = _FIELD_RE.match(text, i + 2)
            if not m:
                raise JsonPathError(f"invalid JSONPath {path!r}: expected a field name after '..'")
            steps.append(_Field(m.group(), recursive=True))
            i = m.end()
        elif text[i] == ".":
            m = _FIELD_RE.match(text, i + 1)
            if not m:
                raise JsonPathError(f"invalid JSONPath {path!r}: expected a field name at offset {i + 1}")
            steps.append(_Field(m.group()))
            i = m.end()
        elif text[i] == "[":
            end = text.find("]", i)
            if end < 0:
                raise JsonPathError(f"invalid JSONPath {path!r}: unterminated '['")
            steps.append(_parse_bracket(text[i + 1 : end], path))
            i = end + 1
        elif not steps and i == 0:
            # k8s allows a leading bare field ("{data.ok}" behaves like "{.data.ok}").
            m = _FIELD_RE.match(text, i)
            if not m:
                raise JsonPathError(f"invalid JSONPath {path!r}")
            steps.append(_Field(m.group()))
            i = m.end()
        else:
            raise JsonPathError(f"invalid JSONPath {path!r}: unexpected {text[i]!r} at offset {i}")
    return steps


def _parse_bracket(inner: str, path: str) -> _Step:
    body = inner.strip()
    if body == "*":
        return _Index(None, None, is_slice=True, wildcard=True)
    if len(body) >= 2 and body[0] == body[-1] and body[0] in "'\"":
        return _Field(body[1:-1])
    if body.startswith("?"):
        raise JsonPathError(f"unsupported JSONPath {path!r}: filter expressions are not supported")
    parts = body.split(":")
    if len(parts) > 3 or not all(_INT_RE.fullmatch(p) for p in parts):
        raise JsonPathError(f"invalid JSONPath {path!r}: bad index [{inner}]")
    numbers = [int(p) if p.strip() else None for p in parts]
    if len(parts) == 1:
        if numbers[0] is None:
            raise JsonPathError(f"invalid JSONPath {path!r}: empty index []")
        return _Index(numbers[0], None, is_slice=False)
    if len(parts) == 3 and numbers[2] not in (None, 1):
        raise JsonPathError(f"unsupported JSONPath {path!r}: slice steps are not supported")
    return _Index(numbers[0], numbers[1], is_slice=True)


def _children(value: Any) -> Iterator[Any]:
    if isinstance(value, Mapping):
        yield from value.values()
    elif isinstance(value, list | tuple):
        yield from value


def _descend(value: Any) -> Iterator[Any]:
    """``value`` and every nested value, depth-first (for ``..name``)."""
    stack = [value]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(list(_children(current))))


def _apply(step: _Step, values: list[Any], path: str) -> list[Any]:
    out: list[Any] = []
    if isinstance(step, _Field):
        if step.name == "*" and not step.recursive:
            for v in values:
                out.extend(_children(v))
            return out
        sources = [d for v in values for d in _descend(v)] if step.recursive else values
        for v in sources:
            if isinstance(v, Mapping) and step.name in v:
                out.append(v[step.name])
        if not out and values and not step.recursive:
            # k8s reports a missing key only when no input had it (allowMissingKeys=false).
            raise JsonPathError(f"JSONPath {path!r}: {step.name} is not found")
        return out
    for v in values:
        if not isinstance(v, Sequence) or isinstance(v, str):
            raise JsonPathError(f"JSONPath {path!r}: cannot index {type(v).__name__}")
        if step.wildcard:
            out.extend(v)
        elif step.is_slice:
            out.extend(v[step.start : step.stop])
        else:
            assert step.start is not None
            idx = step.start + len(v) if step.start < 0 else step.start
            if not 0 <= idx < len(v):
                raise JsonPathError(
                    f"JSONPath {path!r}: array index out of bounds: index {step.start}, length {len(v)}"
                )
            out.append(v[idx])
    return out


def extract_all(document: Any, path: str) -> list[Any]:
    """Every value ``path`` selects in ``document``, in document order."""
    values = [document]
    for step in _parse(path):
        values = _apply(step, values, path)
    return values


def extract(document: Any, path: str = "{$}") -> Any:
    """The first value ``path`` selects, as Argo's web provider uses it.

    Raises :class:`JsonPathError` (naming the path) when a key is missing, an
    index is out of range, or the path selects nothing.
    """
    values = extract_all(document, path)
    if not values:
        raise JsonPathError(f"JSONPath {path!r}: result of web metric produced no value")
    return values[0]
