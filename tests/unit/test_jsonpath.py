"""Tests for the Kubernetes-style JSONPath used by the web provider.

Covers the whole document default, dotted and bracketed fields, indexes
(including negative), slices, wildcards, recursive descent, paths without
braces, Argo's first-value rule, and JsonPathError for missing keys,
out-of-range indexes, empty results and unsupported syntax.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.analyzer.jsonpath import JsonPathError, extract, extract_all

DOC: dict[str, Any] = {
    "data": {"ok": True, "rate": 0.99, "my-key": "dash", "items": [{"x": 1}, {"x": 2}, {"y": 3}]},
    "items": [{"value": 10}, {"value": 20}],
    "list": [1, 2, 3, 4],
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("{$}", DOC),
        ("", DOC),
        ("$", DOC),
        ("{$.data.ok}", True),
        ("{.data.ok}", True),
        ("$.data.ok", True),
        (".data.rate", 0.99),
        ("{data.ok}", True),
        ("{$.items[0].value}", 10),
        ("{$.items[-1].value}", 20),
        ("{$['data']['my-key']}", "dash"),
        ("{$.data.my-key}", "dash"),
        ("{$.list[1:3]}", 2),  # first of the slice, as Argo's getValue
        ("{$.data.items[*].x}", 1),
        ("{ $.data.rate }", 0.99),
    ],
)
def test_extract(path: str, expected: Any) -> None:
    assert extract(DOC, path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("{$.list[1:3]}", [2, 3]),
        ("{$.list[:2]}", [1, 2]),
        ("{$.list[*]}", [1, 2, 3, 4]),
        ("{$.items[*].value}", [10, 20]),
        ("{$.data.items[*].x}", [1, 2]),  # elements lacking the key are skipped, as in k8s
        ("{..value}", [10, 20]),
        ("{$.items.*}", [{"value": 10}, {"value": 20}]),
        ("{$.list[0:100]}", [1, 2, 3, 4]),
    ],
)
def test_extract_all(path: str, expected: list[Any]) -> None:
    assert extract_all(DOC, path) == expected


def test_scalar_documents() -> None:
    assert extract(0.5, "{$}") == 0.5
    assert extract("true", "{$}") == "true"
    assert extract([1, 2], "{$[1]}") == 2


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("{$.data.missing}", "missing is not found"),
        ("{$.items[5].value}", "out of bounds"),
        ("{$.data.items[*].z}", "z is not found"),
        ("{$.empty[*]}", "produced no value"),
        ("{$.data.ok[0]}", "cannot index"),
        ("{$.items[?(@.value > 1)]}", "filter expressions"),
        ("value: {$.data}", "unsupported JSONPath template"),
        ("{$.data", "unsupported JSONPath template"),
        ("{$.list[a]}", "bad index"),
        ("{$.list[0}", "unterminated"),
        ("{$.list[::2]}", "slice steps"),
        ("{$.}", "expected a field name"),
    ],
)
def test_errors_name_the_path(path: str, match: str) -> None:
    doc = {**DOC, "empty": []}
    with pytest.raises(JsonPathError, match=match) as info:
        extract(doc, path)
    if "template" not in match:
        assert path in str(info.value)
