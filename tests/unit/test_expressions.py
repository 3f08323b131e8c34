"""Tests for the sandboxed expr-lang evaluator (services.analyzer.expressions).

Covers literals, every operator and precedence rule, member/index/slice access
including optional chaining, closures, every builtin, Argo's helper functions
(asInt, asFloat, isNaN, isInf, isNil, default), the common Argo condition
forms, compile-time rejection (syntax errors with column, unknown functions and
names), runtime type errors, resource limits, and hypothesis fuzzing that only
ExpressionError ever escapes.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analyzer.expressions import (
    MAX_STEPS,
    Expression,
    ExpressionError,
    compile_expression,
    evaluate_condition,
)


def ev(src: str, **env: Any) -> Any:
    return compile_expression(src).evaluate(env)


# --------------------------------------------------------------------------- literals


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("1", 1),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        (".5", 0.5),
        ("1_000", 1000),
        ("0x1F", 31),
        ("'single'", "single"),
        ('"double"', "double"),
        ("`raw\\n`", "raw\\n"),
        ('"esc\\t\\"q\\" \\u00e9"', 'esc\t"q" é'),
        ("true", True),
        ("false", False),
        ("nil", None),
        ("[1, 2, 'x']", [1, 2, "x"]),
        ("[]", []),
        ("[1, 2,]", [1, 2]),
        ("{a: 1, 'b c': 2, 3: 4}", {"a": 1, "b c": 2, 3: 4}),
        ("{}", {}),
        ("1 // trailing comment", 1),
        ("/* c */ 2", 2),
    ],
)
def test_literals(src: str, expected: Any) -> None:
    result = ev(src)
    assert result == expected
    assert type(result) is type(expected)


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("1 + 2", 3),
        ("1 + 2.5", 3.5),
        ("5 - 7", -2),
        ("3 * 4", 12),
        ("7 / 2", 3.5),
        ("4 / 2", 2.0),
        ("7 % 3", 1),
        ("-7 % 3", -1),  # Go truncates toward zero
        ("7 % -3", 1),
        ("2 ** 10", 1024.0),
        ("2 ^ 3", 8.0),
        ("2 ** 3 ** 2", 512.0),  # right associative
        ("-2 ** 2", -4.0),  # unary minus binds looser than **
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 2 - 3", 5),
        ("'a' + 'b'", "ab"),
        ("[1] + [2]", [1, 2]),
        ("-(3)", -3),
        ("+3", 3),
        ("!true", False),
        ("not false", True),
        ("!true == false", True),  # ! binds tighter than ==
        ("1 / 0", math.inf),
        ("-1 / 0", -math.inf),
    ],
)
def test_arithmetic_and_unary(src: str, expected: Any) -> None:
    result = ev(src)
    assert result == expected
    assert type(result) is type(expected)


def test_zero_by_zero_is_nan() -> None:
    assert math.isnan(ev("0 / 0"))


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("1 == 1.0", True),
        ("1 != 2", True),
        ("'a' == 'a'", True),
        ("1 == '1'", False),  # different types are unequal, not an error
        ("1 == true", False),
        ("nil == nil", True),
        ("[1, 2] == [1.0, 2]", True),
        ("{a: 1} == {a: 1}", True),
        ("1 < 2", True),
        ("2 <= 2.0", True),
        ("3 > 2.5", True),
        ("3 >= 4", False),
        ("'abc' < 'abd'", True),
        ("true && false", False),
        ("true and true", True),
        ("false || true", True),
        ("false or false", False),
        ("true || false && false", True),  # && binds tighter than ||
        ("2 in [1, 2, 3]", True),
        ("2.0 in [1, 2]", True),
        ("'k' in {k: 1}", True),
        ("5 not in [1, 2]", True),
        ("'x' not in {x: 1}", False),
        ("true ? 1 : 2", 1),
        ("false ? 1 : 2", 2),
        ("false ? 1 : true ? 3 : 4", 3),
        ("nil ?? 5", 5),
        ("0 ?? 5", 0),
        ("1..3", [1, 2, 3]),
        ("'hello' contains 'ell'", True),
        ("'hello' startsWith 'he'", True),
        ("'hello' endsWith 'lo'", True),
        ("'hello' matches '^h.*o$'", True),
        ("'hello' not matches '^x'", True),
        ("'hello' not contains 'z'", True),
    ],
)
def test_comparison_logic_membership(src: str, expected: Any) -> None:
    assert ev(src) == expected


def test_short_circuit_skips_the_right_operand() -> None:
    # The right-hand sides would raise if evaluated.
    assert ev("false && missing > 1") is False
    assert ev("true || 'a' < 1") is True
    assert ev("true ? 1 : nil.x") == 1
    assert ev("1 ?? nil.x") == 1


# --------------------------------------------------------------------------- access


def test_member_index_slice() -> None:
    doc = {"a": {"b": [10, 20, 30]}, "s": "hey"}
    assert ev("r.a.b[0]", r=doc) == 10
    assert ev("r['a']['b'][-1]", r=doc) == 30
    assert ev("r.a.b[1:3]", r=doc) == [20, 30]
    assert ev("r.a.b[:1]", r=doc) == [10]
    assert ev("r.a.b[1:]", r=doc) == [20, 30]
    assert ev("r.s[0]", r=doc) == "h"
    assert ev("r.s[1:]", r=doc) == "ey"
    assert ev("r.missing", r=doc) is None  # missing map keys are nil, as in expr


def test_optional_chaining() -> None:
    assert ev("r?.a?.b", r=None) is None
    assert ev("r?.a.b.c", r=None) is None  # the whole chain short-circuits
    assert ev("r?.[0]", r=None) is None
    assert ev("r?.a", r={"a": 1}) == 1
    assert ev("r?.a ?? 7", r=None) == 7
    with pytest.raises(ExpressionError, match="from nil"):
        ev("r.a", r=None)


# --------------------------------------------------------------------------- closures and builtins


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("all(r, # < 1000)", True),
        ("all(r, {# > 1})", False),
        ("any(r, # == 2)", True),
        ("none(r, # > 5)", True),
        ("one(r, # == 3)", True),
        ("filter(r, # > 1)", [2, 3]),
        ("filter(r, {# > 0 && # < 3})", [1, 2]),
        ("map(r, # * 2)", [2, 4, 6]),
        ("map(r, {#index})", [0, 1, 2]),
        ("count(r, # >= 2)", 2),
        ("count([true, false, true])", 2),
        ("sum(r)", 6),
        ("sum(r, # * 10)", 60),
        ("sum([0.5, 1])", 1.5),
        ("max(r)", 3),
        ("max(1, 5, 2)", 5),
        ("min(r)", 1),
        ("min(4, 2.5)", 2.5),
        ("mean(r)", 2.0),
        ("median([3, 1, 2])", 2.0),
        ("median([4, 1, 2, 3])", 2.5),
        ("len(r)", 3),
        ("len('héllo')", 5),
        ("len({a: 1})", 1),
        ("abs(-2)", 2),
        ("abs(-2.5)", 2.5),
        ("ceil(1.2)", 2.0),
        ("floor(1.8)", 1.0),
        ("round(2.5)", 3.0),
        ("round(-2.5)", -3.0),
        ("int(2.9)", 2),
        ("int('42')", 42),
        ("float(2)", 2.0),
        ("float('1.5')", 1.5),
        ("string(1)", "1"),
        ("string(1.0)", "1"),
        ("string(0.5)", "0.5"),
        ("string(1e21)", "1e+21"),
        ("string(true)", "true"),
        ("string(nil)", "<nil>"),
        ("first(r)", 1),
        ("last(r)", 3),
        ("first([])", None),
        ("upper('ab')", "AB"),
        ("lower('AB')", "ab"),
        ("trim('  x ')", "x"),
        ("trim('--x-', '-')", "x"),
        ("keys({a: 1})", ["a"]),
        ("values({a: 1})", [1]),
        ("map(o, .v)", [1, 2]),
        ("filter(o, .v > 1)", [{"v": 2}]),
        ("all(o, {.v > 0})", True),
        ("any(nested, {any(#, # == 4)})", True),
    ],
)
def test_builtins(src: str, expected: Any) -> None:
    env = {"r": [1, 2, 3], "o": [{"v": 1}, {"v": 2}], "nested": [[1, 2], [3, 4]]}
    result = compile_expression(src).evaluate(env)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("src", "result", "expected"),
    [
        ("asInt(result) == 5", "5", True),
        ("asInt(result) == -5", "-5", True),
        ("asInt(result) == 5", 5.9, True),  # floats truncate, as Go's int64()
        ("asInt(result) == 5", 5, True),
        ("asFloat(result) == 0.25", "0.25", True),
        ("asFloat(result) == 1000", "1e3", True),
        ("asFloat(result) == 3", 3, True),
        ("isNaN(asFloat(result))", "NaN", True),
        ("isInf(asFloat(result))", "+Inf", True),
        ("isNaN(result)", 1.0, False),
        ("isInf(result)", -math.inf, True),
        ("isNil(result)", None, True),
        ("isNil(result)", 0, False),
        ("default(result, 7) == 7", None, True),
        ("default(result, 7) == 0", 0, True),
    ],
)
def test_argo_helpers(src: str, result: Any, expected: bool) -> None:
    assert evaluate_condition(src, result) is expected


@pytest.mark.parametrize(
    ("src", "result"),
    [
        ("asInt(result) > 0", "1.5"),
        ("asInt(result) > 0", " 1"),
        ("asInt(result) > 0", "1_0"),
        ("asInt(result) > 0", "abc"),
        ("asInt(result) > 0", True),
        ("asInt(result) > 0", None),
        ("asInt(result) > 0", "99999999999999999999"),
        ("asFloat(result) > 0", "x"),
        ("asFloat(result) > 0", " 1.0"),
        ("asFloat(result) > 0", [1]),
        ("isNaN(result)", "NaN"),
        ("isInf(result)", None),
    ],
)
def test_argo_helper_errors(src: str, result: Any) -> None:
    with pytest.raises(ExpressionError):
        evaluate_condition(src, result)


# --------------------------------------------------------------------------- the Argo forms


@pytest.mark.parametrize(
    ("src", "result", "expected"),
    [
        ("result < 0.01", 0.001, True),
        ("result < 0.01", 0.5, False),
        ("result[0] >= 0.95", [0.99], True),
        ("result[0] >= 0.95", [0.5, 1.0], False),
        ("len(result) > 0 && result[0] < 0.01", [], False),
        ("len(result) > 0 && result[0] < 0.01", [0.001], True),
        ("result == 'true'", "true", True),
        ("result == 'true'", True, False),
        ("asInt(result) < 5", "4", True),
        ("all(result, # < 1000)", [1.0, 999.9], True),
        ("all(result, # < 1000)", [1.0, 1000.0], False),
        ("isNaN(result) || result >= 0.9", math.nan, True),
        ("isNaN(result) || result >= 0.9", 0.95, True),
        ("isNaN(result) || result >= 0.9", 0.1, False),
        ("result.ok == true", {"ok": True}, True),
        ("result.ok == true", {"ok": False}, False),
        ("default(result, 0) >= 0.95", None, False),
        ("default(result, 0) >= 0.95", 0.99, True),
        ("result <= 1", 1, True),
        ("result <= 1", 1.5, False),
    ],
)
def test_common_argo_conditions(src: str, result: Any, expected: bool) -> None:
    assert evaluate_condition(src, result) is expected


def test_compiled_expression_is_reusable() -> None:
    expr = compile_expression("result > 1")
    assert isinstance(expr, Expression)
    assert evaluate_condition(expr, 2) is True
    assert evaluate_condition(expr, 0) is False


def test_condition_must_be_bool() -> None:
    with pytest.raises(ExpressionError, match="expected bool"):
        evaluate_condition("result + 1", 1)


# --------------------------------------------------------------------------- compile-time errors


@pytest.mark.parametrize(
    ("src", "column"),
    [
        ("result <", 9),
        ("result @ 1", 8),
        ("(1 + 2", 7),
        ("'unterminated", 1),
        ("1 +* 2", 4),
        ("[1, 2", 6),
        ("a.", 3),
        ("1 ? 2", 6),
        ("#", 1),
        ("{a 1}", 4),
        ("12abc", 1),
        ("'bad \\q escape'", 6),
        ("len()", 1),
        ("default(1)", 1),
        ("a.b()", 3),
    ],
)
def test_syntax_errors_report_the_column(src: str, column: int) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(src)
    assert info.value.column == column
    assert f"column {column}" in str(info.value)


def test_unknown_function_rejected_at_compile_time() -> None:
    with pytest.raises(ExpressionError, match="unknown function frobnicate"):
        compile_expression("frobnicate(result) > 1")


def test_unknown_names_rejected_when_variables_given() -> None:
    with pytest.raises(ExpressionError, match="unknown name reslt"):
        compile_expression("reslt < 1", variables=("result",))
    with pytest.raises(ExpressionError, match="unknown name reslt"):
        evaluate_condition("reslt < 1", 0)
    compile_expression("reslt < 1")  # without a variable list it is a runtime matter


def test_invalid_literal_regex_rejected_at_compile_time() -> None:
    with pytest.raises(ExpressionError, match="invalid regular expression"):
        compile_expression("result matches '(unclosed'")
    with pytest.raises(ExpressionError, match="nested quantifiers"):
        compile_expression("result matches '(a+)+$'")
    with pytest.raises(ExpressionError, match="backreferences"):
        compile_expression("result matches '(a)\\\\1'")


@pytest.mark.parametrize("src", ["", "   ", "x" * 5000, "(" * 100 + "1" + ")" * 100, "1" + " + 1" * 500])
def test_oversized_or_empty_sources_rejected(src: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(src)


# --------------------------------------------------------------------------- runtime errors


@pytest.mark.parametrize(
    ("src", "env", "match"),
    [
        ("'a' < 1", {}, "invalid operation"),
        ("nil < 1", {}, "invalid operation"),
        ("result < 0.01", {"result": None}, "invalid operation"),
        ("1 + true", {}, "invalid operation"),
        ("'a' - 'b'", {}, "invalid operation"),
        ("1.5 % 2", {}, "invalid operation"),
        ("1 % 0", {}, "divide by zero"),
        ("1 && true", {}, "expects a bool"),
        ("!1", {}, "expects a bool"),
        ("-'a'", {}, "expects a number"),
        ("1 ? 2 : 3", {}, "expects a bool"),
        ("missing", {}, "unknown name missing"),
        ("r[5]", {"r": [1]}, "index out of range"),
        ("r[-2]", {"r": [1]}, "index out of range"),
        ("r['x']", {"r": [1]}, "cannot index"),
        ("r.x", {"r": 5}, "cannot fetch"),
        ("1 in 5", {}, "not defined"),
        ("len(5)", {}, "invalid argument"),
        ("all(r, # > 1)", {"r": 5}, "expects an array"),
        ("all(r, # + 1)", {"r": [1]}, "expects a bool"),
        ("max([])", {}, "empty"),
        ("sum(['a'])", {}, "expects a number"),
        ("upper(1)", {}, "expects a string"),
        ("keys([])", {}, "expects a map"),
        ("1 contains 'a'", {}, "expects strings"),
        ("9223372036854775807 + 1", {}, "overflow"),
        ("'x' matches r", {"r": "(a*)*"}, "nested quantifiers"),
        ("1..'a'", {}, "integers"),
    ],
)
def test_runtime_errors(src: str, env: dict[str, Any], match: str) -> None:
    expr = compile_expression(src)
    with pytest.raises(ExpressionError, match=match):
        expr.evaluate(env)


def test_step_budget_bounds_work() -> None:
    # 1..10000 squared via nested map would be 10^8 steps; the budget stops it.
    expr = compile_expression("len(map(1..10000, {len(map(1..10000, {#}))})) > 0")
    started = time.monotonic()
    with pytest.raises(ExpressionError, match=f"step budget of {MAX_STEPS}"):
        expr.evaluate({})
    assert time.monotonic() - started < 5


def test_growth_caps() -> None:
    with pytest.raises(ExpressionError, match="array longer"):
        ev("1..1000000")
    with pytest.raises(ExpressionError, match="string longer"):
        ev("s + s", s="x" * 60_000)
    with pytest.raises(ExpressionError, match="subject longer"):
        ev("s matches 'x'", s="x" * 20_000)


# --------------------------------------------------------------------------- fuzzing

_TOKENS = [
    "result", "#", ".", "?.", "(", ")", "[", "]", "{", "}", ",", ":", "?", "??", "+", "-", "*", "/",
    "%", "**", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "!", "not", "in", "and", "or",
    "matches", "contains", "..", "1", "0", "-1", "2.5", "1e3", "'a'", '"b"', "true", "false", "nil",
    "len", "all", "any", "filter", "map", "sum", "max", "asInt", "asFloat", "isNaN", "default",
    "first", "string", "x", "ok", "'(a+)+'", "1..100000",
]  # fmt: skip
_RESULTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.lists(st.floats(allow_nan=True), max_size=5),
    st.dictionaries(st.sampled_from(["ok", "x", "value"]), st.integers() | st.booleans(), max_size=3),
)


def _only_expression_errors(src: str, result: Any) -> None:
    try:
        expr = compile_expression(src)
    except ExpressionError:
        return
    try:
        expr.evaluate({"result": result, "x": [1, 2], "ok": True})
    except ExpressionError:
        pass


@settings(deadline=1000, max_examples=300)
@given(st.text(max_size=80), _RESULTS)
def test_fuzz_random_text(src: str, result: Any) -> None:
    _only_expression_errors(src, result)


@settings(deadline=1000, max_examples=500)
@given(st.lists(st.sampled_from(_TOKENS), max_size=25).map(" ".join), _RESULTS)
def test_fuzz_token_soup(src: str, result: Any) -> None:
    _only_expression_errors(src, result)
