"""A safe evaluator for Argo Rollouts' metric condition language.

Argo evaluates ``successCondition``/``failureCondition`` with expr-lang
(github.com/expr-lang/expr).  This module is a hand-written, sandboxed
re-implementation of the subset those conditions use: a tokenizer, a Pratt
parser producing a small AST, and a tree-walking evaluator.  Python's
``eval``/``exec``/``compile`` are never used, so a condition can only reach
the values it is given.

Every evaluation is bounded: source length, AST size and nesting depth are
capped at compile time, and a step budget plus caps on string/list growth
and regex subject length bound the work at evaluation time.  All failures
surface as :class:`ExpressionError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

__all__ = [
    "Expression",
    "ExpressionError",
    "compile_expression",
    "evaluate_condition",
]

MAX_SOURCE_LENGTH: Final = 4096
MAX_AST_NODES: Final = 2000
MAX_DEPTH: Final = 64
MAX_AST_DEPTH: Final = 200
MAX_STEPS: Final = 100_000
MAX_STRING_LENGTH: Final = 100_000
MAX_LIST_LENGTH: Final = 10_000
MAX_REGEX_SUBJECT: Final = 10_000
MAX_REGEX_PATTERN: Final = 1000
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class ExpressionError(ValueError):
    """A condition failed to parse or to evaluate.

    ``column`` is the 1-based column in the source when known.
    """

    def __init__(self, message: str, column: int | None = None) -> None:
        self.column = column
        self.reason = message
        super().__init__(message if column is None else f"{message} (at column {column})")


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "num" | "str" | "ident" | "op" | "ptr" | "eof"
    value: Any
    col: int  # 1-based


# Longest first so "**" wins over "*", "?." over "?", etc.
_OPERATORS: Final = (
    "??", "?.", "..", "**", "==", "!=", "<=", ">=", "&&", "||",
    "+", "-", "*", "/", "%", "^", "<", ">", "!", "?", ":", ".", ",",
    "(", ")", "[", "]", "{", "}", "|",
)  # fmt: skip
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0",
                   "a": "\a", "b": "\b", "f": "\f", "v": "\v"}  # fmt: skip
_NUMBER_RE: Final = re.compile(
    r"0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+"
    r"|(?:[0-9][0-9_]*(?:\.(?!\.)[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?"
)
_IDENT_RE: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_DIGITS: Final = frozenset("0123456789")


def _tokenize(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        col = i + 1
        if ch.isspace():
            i += 1
            continue
        if src.startswith("//", i):
            nl = src.find("\n", i)
            i = n if nl < 0 else nl
            continue
        if src.startswith("/*", i):
            end = src.find("*/", i + 2)
            if end < 0:
                raise ExpressionError("unterminated comment", col)
            i = end + 2
            continue
        if ch in _DIGITS or (ch == "." and i + 1 < n and src[i + 1] in _DIGITS):
            m = _NUMBER_RE.match(src, i)
            assert m is not None  # the pattern always matches a leading ASCII digit
            toks.append(_Tok("num", _parse_number(m.group(), col), col))
            i = m.end()
            if i < n and (src[i].isalnum() or src[i] == "_"):
                raise ExpressionError(f"invalid number literal {src[col - 1 : i + 1]!r}", col)
            continue
        if ch in "'\"`":
            value, i = _read_string(src, i)
            toks.append(_Tok("str", value, col))
            continue
        if ch == "#":
            m = _IDENT_RE.match(src, i + 1)
            name = m.group() if m else ""
            toks.append(_Tok("ptr", name, col))
            i = m.end() if m else i + 1
            continue
        m = _IDENT_RE.match(src, i)
        if m:
            toks.append(_Tok("ident", m.group(), col))
            i = m.end()
            continue
        for op in _OPERATORS:
            if src.startswith(op, i):
                # "a ? .5 : 1" is a ternary with a float, not optional chaining.
                if op == "?." and i + 2 < n and src[i + 2] in _DIGITS:
                    op = "?"
                toks.append(_Tok("op", op, col))
                i += len(op)
                break
        else:
            raise ExpressionError(f"unexpected character {ch!r}", col)
    toks.append(_Tok("eof", None, n + 1))
    return toks


def _parse_number(text: str, col: int) -> int | float:
    clean = text.replace("_", "")
    try:
        if clean[:2].lower() in ("0x", "0b", "0o"):
            return int(clean, 0)
        if any(c in clean for c in ".eE"):
            return float(clean)
        return int(clean, 10)
    except ValueError:
        raise ExpressionError(f"invalid number literal {text!r}", col) from None


def _read_string(src: str, start: int) -> tuple[str, int]:
    quote = src[start]
    out: list[str] = []
    i = start + 1
    while i < len(src):
        ch = src[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\" and quote != "`":
            i += 1
            if i >= len(src):
                break
            esc = src[i]
            if esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                i += 1
            elif esc in "uUx":
                width = {"u": 4, "U": 8, "x": 2}[esc]
                digits = src[i + 1 : i + 1 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise ExpressionError("invalid escape sequence", i)
                code = int(digits, 16)
                if code > 0x10FFFF:
                    raise ExpressionError("invalid escape sequence", i)
                out.append(chr(code))
                i += 1 + width
            else:
                raise ExpressionError(f"invalid escape sequence \\{esc}", i)
            continue
        out.append(ch)
        i += 1
    raise ExpressionError("unterminated string literal", start + 1)


# --------------------------------------------------------------------------- runtime context


class _ShortCircuit(Exception):
    """Raised by ``?.`` on nil; caught by the enclosing :class:`_Chain`."""


@dataclass(slots=True)
class _Scope:
    item: Any
    index: int


@dataclass(slots=True)
class _Ctx:
    env: Mapping[str, Any]
    steps: int = 0
    scopes: list[_Scope] = field(default_factory=list)

    def tick(self, col: int, n: int = 1) -> None:
        self.steps += n
        if self.steps > MAX_STEPS:
            raise ExpressionError(f"evaluation exceeded the step budget of {MAX_STEPS}", col)


# --------------------------------------------------------------------------- value helpers


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _type_name(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        return "array"
    if isinstance(v, Mapping):
        return "map"
    return type(v).__name__


def _equal(a: Any, b: Any) -> bool:
    if _is_num(a) and _is_num(b):
        return bool(a == b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    return bool(a == b)


def _check_int(v: int, col: int) -> int:
    # expr works on int64; Python ints are unbounded, so overflow would grow silently.
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise ExpressionError("integer overflow", col)
    return v


def _check_size(v: Any, col: int) -> Any:
    if isinstance(v, str) and len(v) > MAX_STRING_LENGTH:
        raise ExpressionError(f"string longer than {MAX_STRING_LENGTH} characters", col)
    if isinstance(v, list) and len(v) > MAX_LIST_LENGTH:
        raise ExpressionError(f"array longer than {MAX_LIST_LENGTH} elements", col)
    return v


def _as_list(v: Any, what: str, col: int) -> list[Any]:
    if isinstance(v, list | tuple):
        return list(v)
    raise ExpressionError(f"{what} expects an array, got {_type_name(v)}", col)


def _num(v: Any, what: str, col: int) -> int | float:
    if not _is_num(v):
        raise ExpressionError(f"{what} expects a number, got {_type_name(v)}", col)
    return v  # type: ignore[no-any-return]


def _bool(v: Any, what: str, col: int) -> bool:
    if not isinstance(v, bool):
        raise ExpressionError(f"{what} expects a bool, got {_type_name(v)}", col)
    return v


def _go_float(f: float) -> str:
    """Format like Go's ``%v`` for float64 (what expr's ``string()`` produces).

    Go prints the shortest round-trip digits and switches to exponent form when
    the decimal exponent is < -4 or >= 21.
    """
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign_bit, digit_tuple, exponent = Decimal(repr(f)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    exp10 = len(digits) + exponent - 1
    sign = "-" if sign_bit else ""
    if exp10 < -4 or exp10 >= 21:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"
    return sign + format(Decimal(digits).scaleb(exponent), "f")


def _to_string(v: Any) -> str:
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, list | tuple):
        return "[" + " ".join(_to_string(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "map[" + " ".join(f"{_to_string(k)}:{_to_string(x)}" for k, x in sorted(v.items())) + "]"
    return str(v)


# --------------------------------------------------------------------------- AST


class _Node:
    __slots__ = ("col",)
    col: int

    def eval(self, ctx: _Ctx) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def children(self) -> Iterator[_Node]:
        return iter(())

    def run(self, ctx: _Ctx) -> Any:
        ctx.tick(self.col)
        return self.eval(ctx)


class _Literal(_Node):
    __slots__ = ("value",)

    def __init__(self, value: Any, col: int) -> None:
        self.value, self.col = value, col

    def eval(self, ctx: _Ctx) -> Any:
        return self.value


class _Name(_Node):
    __slots__ = ("name",)

    def __init__(self, name: str, col: int) -> None:
        self.name, self.col = name, col

    def eval(self, ctx: _Ctx) -> Any:
        try:
            return ctx.env[self.name]
        except KeyError:
            raise ExpressionError(f"unknown name {self.name}", self.col) from None


class _Pointer(_Node):
    """``#`` (current element) or ``#index`` inside a closure."""

    __slots__ = ("name",)

    def __init__(self, name: str, col: int) -> None:
        self.name, self.col = name, col

    def eval(self, ctx: _Ctx) -> Any:
        scope = ctx.scopes[-1]
        return scope.index if self.name == "index" else scope.item


class _ArrayLit(_Node):
    __slots__ = ("items",)

    def __init__(self, items: list[_Node], col: int) -> None:
        self.items, self.col = items, col

    def children(self) -> Iterator[_Node]:
        return iter(self.items)

    def eval(self, ctx: _Ctx) -> Any:
        return [item.run(ctx) for item in self.items]


class _MapLit(_Node):
    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[_Node, _Node]], col: int) -> None:
        self.pairs, self.col = pairs, col

    def children(self) -> Iterator[_Node]:
        for k, v in self.pairs:
            yield k
            yield v

    def eval(self, ctx: _Ctx) -> Any:
        out: dict[Any, Any] = {}
        for k, v in self.pairs:
            key = k.run(ctx)
            if isinstance(key, list | dict):
                raise ExpressionError(f"map key cannot be {_type_name(key)}", k.col)
            out[key] = v.run(ctx)
        return out


class _Unary(_Node):
    __slots__ = ("op", "operand")

    def __init__(self, op: str, operand: _Node, col: int) -> None:
        self.op, self.operand, self.col = op, operand, col

    def children(self) -> Iterator[_Node]:
        yield self.operand

    def eval(self, ctx: _Ctx) -> Any:
        v = self.operand.run(ctx)
        if self.op in ("!", "not"):
            return not _bool(v, f"operator {self.op}", self.col)
        n = _num(v, f"unary {self.op}", self.col)
        if self.op == "+":
            return n
        return _check_int(-n, self.col) if isinstance(n, int) else -n


class _Logical(_Node):
    __slots__ = ("left", "op", "right")

    def __init__(self, op: str, left: _Node, right: _Node, col: int) -> None:
        self.op, self.left, self.right, self.col = op, left, right, col

    def children(self) -> Iterator[_Node]:
        yield self.left
        yield self.right

    def eval(self, ctx: _Ctx) -> Any:
        is_and = self.op in ("&&", "and")
        left = _bool(self.left.run(ctx), f"operator {self.op}", self.col)
        if left is not is_and:  # false && … / true || … short-circuit
            return left
        return _bool(self.right.run(ctx), f"operator {self.op}", self.col)


class _Coalesce(_Node):
    __slots__ = ("left", "right")

    def __init__(self, left: _Node, right: _Node, col: int) -> None:
        self.left, self.right, self.col = left, right, col

    def children(self) -> Iterator[_Node]:
        yield self.left
        yield self.right

    def eval(self, ctx: _Ctx) -> Any:
        left = self.left.run(ctx)
        return self.right.run(ctx) if left is None else left


class _Conditional(_Node):
    __slots__ = ("cond", "otherwise", "then")

    def __init__(self, cond: _Node, then: _Node, otherwise: _Node, col: int) -> None:
        self.cond, self.then, self.otherwise, self.col = cond, then, otherwise, col

    def children(self) -> Iterator[_Node]:
        yield self.cond
        yield self.then
        yield self.otherwise

    def eval(self, ctx: _Ctx) -> Any:
        if _bool(self.cond.run(ctx), "ternary condition", self.col):
            return self.then.run(ctx)
        return self.otherwise.run(ctx)


def _compare(op: str, a: Any, b: Any, col: int) -> bool:
    if (_is_num(a) and _is_num(b)) or (isinstance(a, str) and isinstance(b, str)):
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        return bool(a >= b)
    raise ExpressionError(f"invalid operation: {_type_name(a)} {op} {_type_name(b)}", col)


def _arith(op: str, a: Any, b: Any, col: int) -> Any:
    if op == "+":
        if isinstance(a, str) and isinstance(b, str):
            return _check_size(a + b, col)
        if isinstance(a, list | tuple) and isinstance(b, list | tuple):
            return _check_size([*a, *b], col)
    if not (_is_num(a) and _is_num(b)):
        raise ExpressionError(f"invalid operation: {_type_name(a)} {op} {_type_name(b)}", col)
    both_int = isinstance(a, int) and isinstance(b, int)
    if op == "+":
        return _check_int(a + b, col) if both_int else a + b
    if op == "-":
        return _check_int(a - b, col) if both_int else a - b
    if op == "*":
        return _check_int(a * b, col) if both_int else a * b
    if op == "/":
        # expr always divides as float64, so x/0 is ±Inf or NaN rather than an error.
        fa, fb = float(a), float(b)
        if fb == 0:
            if fa == 0 or math.isnan(fa):
                return math.nan
            return math.copysign(math.inf, fa) * math.copysign(1.0, fb)
        return fa / fb
    if op == "%":
        if not both_int:
            raise ExpressionError(f"invalid operation: {_type_name(a)} % {_type_name(b)}", col)
        if b == 0:
            raise ExpressionError("integer divide by zero", col)
        # Go's % truncates toward zero, so the sign follows the dividend.
        quotient = abs(a) // abs(b)
        if (a < 0) != (b < 0):
            quotient = -quotient
        return a - b * quotient
    # "**" / "^": expr uses math.Pow, always float64.
    return _pow(float(a), float(b))


def _pow(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except OverflowError:
        return math.inf if a > 0 or b % 2 == 0 else -math.inf
    except ValueError:
        if a == 0:  # 0 ** negative → +Inf as in Go
            return math.inf
        return math.nan


def _contains(container: Any, item: Any, col: int) -> bool:
    if isinstance(container, list | tuple):
        return any(_equal(item, x) for x in container)
    if isinstance(container, Mapping):
        try:
            return item in container
        except TypeError:
            return False
    raise ExpressionError(f"operator in not defined on {_type_name(container)}", col)


def _string_op(op: str, a: Any, b: Any, col: int) -> bool:
    if not (isinstance(a, str) and isinstance(b, str)):
        raise ExpressionError(f"operator {op} expects strings, got {_type_name(a)} and {_type_name(b)}", col)
    if op == "contains":
        return b in a
    if op == "startsWith":
        return a.startswith(b)
    if op == "endsWith":
        return a.endswith(b)
    return _regex_search(b, a, col)


# Nested quantifiers such as (a+)+ make backtracking regexes exponential; Go's RE2
# (which Argo uses) is linear-time and does not support backreferences or lookaround.
_QUANT_AFTER_GROUP = re.compile(r"\)(?:[*+]|\{\d*,\d*\}|\{\d+\})")


def _check_pattern(pattern: str, col: int) -> re.Pattern[str]:
    if len(pattern) > MAX_REGEX_PATTERN:
        raise ExpressionError(f"regular expression longer than {MAX_REGEX_PATTERN} characters", col)
    if re.search(r"\\[1-9]|\(\?<?[=!]|\(\?P=", pattern):
        raise ExpressionError("backreferences and lookaround are not supported in regular expressions", col)
    stack: list[bool] = []  # per open group: does it contain a quantifier?
    i = 0
    in_class = False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if pattern.startswith("[]", i) or pattern.startswith("[^]", i):
                i += 2 if pattern[i + 1] == "]" else 3
                continue
        elif ch == "(":
            stack.append(False)
        elif ch == ")" and stack:
            inner = stack.pop()
            if inner and _QUANT_AFTER_GROUP.match(pattern, i):
                raise ExpressionError("nested quantifiers are not allowed in regular expressions", col)
            if stack:
                stack[-1] = stack[-1] or inner or bool(_QUANT_AFTER_GROUP.match(pattern, i))
        elif ch in "*+{" and stack:
            stack[-1] = True
        i += 1
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ExpressionError(f"invalid regular expression: {exc}", col) from None


_PATTERN_CACHE: dict[str, re.Pattern[str]] = {}


def _regex_search(pattern: str, subject: str, col: int) -> bool:
    if len(subject) > MAX_REGEX_SUBJECT:
        raise ExpressionError(f"matches subject longer than {MAX_REGEX_SUBJECT} characters", col)
    compiled = _PATTERN_CACHE.get(pattern)
    if compiled is None:
        compiled = _check_pattern(pattern, col)
        if len(_PATTERN_CACHE) < 256:
            _PATTERN_CACHE[pattern] = compiled
    return compiled.search(subject) is not None


class _Binary(_Node):
    __slots__ = ("left", "negate", "op", "right")

    def __init__(self, op: str, left: _Node, right: _Node, col: int, negate: bool = False) -> None:
        self.op, self.left, self.right, self.col, self.negate = op, left, right, col, negate

    def children(self) -> Iterator[_Node]:
        yield self.left
        yield self.right

    def eval(self, ctx: _Ctx) -> Any:
        a = self.left.run(ctx)
        b = self.right.run(ctx)
        op = self.op
        result: Any
        if op == "==":
            result = _equal(a, b)
        elif op == "!=":
            result = not _equal(a, b)
        elif op in ("<", "<=", ">", ">="):
            result = _compare(op, a, b, self.col)
        elif op == "in":
            result = _contains(b, a, self.col)
        elif op in ("contains", "startsWith", "endsWith", "matches"):
            result = _string_op(op, a, b, self.col)
        elif op == "..":
            if not (isinstance(a, int) and isinstance(b, int)) or isinstance(a, bool) or isinstance(b, bool):
                raise ExpressionError("operator .. expects integers", self.col)
            if b - a + 1 > MAX_LIST_LENGTH:
                raise ExpressionError(f"array longer than {MAX_LIST_LENGTH} elements", self.col)
            ctx.tick(self.col, max(0, b - a + 1))
            result = list(range(a, b + 1))
        else:
            result = _arith(op, a, b, self.col)
        return (not result) if self.negate else result


class _Member(_Node):
    """``obj.name`` / ``obj?.name`` / ``obj[index]`` / ``obj?.[index]``."""

    __slots__ = ("key", "obj", "optional")

    def __init__(self, obj: _Node, key: _Node, optional: bool, col: int) -> None:
        self.obj, self.key, self.optional, self.col = obj, key, optional, col

    def children(self) -> Iterator[_Node]:
        yield self.obj
        yield self.key

    def eval(self, ctx: _Ctx) -> Any:
        obj = self.obj.run(ctx)
        if obj is None and self.optional:
            raise _ShortCircuit
        key = self.key.run(ctx)
        return _fetch(obj, key, self.col)


def _fetch(obj: Any, key: Any, col: int) -> Any:
    if isinstance(obj, Mapping):
        if isinstance(key, list | dict):
            raise ExpressionError(f"cannot use {_type_name(key)} as map key", col)
        return obj.get(key)  # expr yields nil for a missing map key
    if isinstance(obj, list | tuple | str):
        if not isinstance(key, int) or isinstance(key, bool):
            raise ExpressionError(f"cannot index {_type_name(obj)} with {_type_name(key)}", col)
        idx = key + len(obj) if key < 0 else key
        if not 0 <= idx < len(obj):
            raise ExpressionError(f"index out of range: {key} (array length is {len(obj)})", col)
        return obj[idx]
    if obj is None:
        raise ExpressionError(f"cannot fetch {_to_string(key)} from nil", col)
    raise ExpressionError(f"cannot fetch {_to_string(key)} from {_type_name(obj)}", col)


class _Slice(_Node):
    __slots__ = ("hi", "lo", "obj")

    def __init__(self, obj: _Node, lo: _Node | None, hi: _Node | None, col: int) -> None:
        self.obj, self.lo, self.hi, self.col = obj, lo, hi, col

    def children(self) -> Iterator[_Node]:
        yield self.obj
        if self.lo is not None:
            yield self.lo
        if self.hi is not None:
            yield self.hi

    def eval(self, ctx: _Ctx) -> Any:
        obj = self.obj.run(ctx)
        if not isinstance(obj, list | tuple | str):
            raise ExpressionError(f"cannot slice {_type_name(obj)}", self.col)
        bounds = []
        for node in (self.lo, self.hi):
            v = None if node is None else node.run(ctx)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise ExpressionError(f"slice index must be an integer, got {_type_name(v)}", self.col)
            bounds.append(v)
        result = obj[bounds[0] : bounds[1]]
        return list(result) if isinstance(result, tuple) else result


class _Chain(_Node):
    """Root of a member chain containing ``?.``: a nil link yields nil for the whole chain."""

    __slots__ = ("inner",)

    def __init__(self, inner: _Node) -> None:
        self.inner, self.col = inner, inner.col

    def children(self) -> Iterator[_Node]:
        yield self.inner

    def eval(self, ctx: _Ctx) -> Any:
        try:
            return self.inner.run(ctx)
        except _ShortCircuit:
            return None


class _Closure(_Node):
    __slots__ = ("body",)

    def __init__(self, body: _Node, col: int) -> None:
        self.body, self.col = body, col

    def children(self) -> Iterator[_Node]:
        yield self.body

    def eval(self, ctx: _Ctx) -> Any:  # pragma: no cover - closures are applied, never evaluated
        raise ExpressionError("closure used outside of a builtin", self.col)

    def call(self, ctx: _Ctx, item: Any, index: int) -> Any:
        # Push/pop per element (not across a generator suspension) so an early exit
        # in any()/all() can never leave a stale scope behind.
        ctx.scopes.append(_Scope(item, index))
        try:
            return self.body.run(ctx)
        finally:
            ctx.scopes.pop()

    def apply(self, ctx: _Ctx, items: list[Any]) -> Iterator[tuple[Any, Any]]:
        for index, item in enumerate(items):
            yield item, self.call(ctx, item, index)


class _Call(_Node):
    __slots__ = ("args", "name")

    def __init__(self, name: str, args: list[_Node], col: int) -> None:
        self.name, self.args, self.col = name, args, col

    def children(self) -> Iterator[_Node]:
        return iter(self.args)

    def eval(self, ctx: _Ctx) -> Any:
        spec = _BUILTINS[self.name]
        if spec.closure:
            items = _as_list(self.args[0].run(ctx), self.name, self.col)
            closure = self.args[1] if len(self.args) > 1 else None
            assert closure is None or isinstance(closure, _Closure)
            return _check_size(spec.fn(ctx, self, items, closure), self.col)
        values = [a.run(ctx) for a in self.args]
        return _check_size(spec.fn(ctx, self, *values), self.col)


# --------------------------------------------------------------------------- builtins


@dataclass(frozen=True, slots=True)
class _Builtin:
    fn: Callable[..., Any]
    min_args: int
    max_args: int | None
    closure: bool = False  # second argument is a predicate/closure


def _pred_results(ctx: _Ctx, call: _Call, items: list[Any], closure: _Closure | None) -> Iterator[bool]:
    if closure is None:
        for item in items:
            yield _bool(item, call.name, call.col)
        return
    for _, value in closure.apply(ctx, items):
        yield _bool(value, f"predicate of {call.name}", call.col)


def _b_all(ctx: _Ctx, call: _Call, items: list[Any], c: _Closure | None) -> bool:
    return all(_pred_results(ctx, call, items, c))


def _b_any(ctx: _Ctx, call: _Call, items: list[Any], c: _Closure | None) -> bool:
    return any(_pred_results(ctx, call, items, c))


def _b_none(ctx: _Ctx, call: _Call, items: list[Any], c: _Closure | None) -> bool:
    return not any(_pred_results(ctx, call, items, c))


def _b_one(ctx: _Ctx, call: _Call, items: list[Any], c: _Closure | None) -> bool:
    return sum(1 for ok in _pred_results(ctx, call, items, c) if ok) == 1


def _b_count(ctx: _Ctx, call: _Call, items: list[Any], c: _Closure | None) -> int:
    return sum(1 for ok in _pred_results(ctx, call, items, c) if ok)


def _b_filter(ctx: _Ctx, call: _Call, items: list[Any], c: _Closure | None) -> list[Any]:
    assert c is not None
    return [item for item, v in c.apply(ctx, items) if _bool(v, "predicate of filter", call.col)]


def _b_map(ctx: _Ctx, call: _Call, items: list[Any], c: _Closure | None) -> list[Any]:
    assert c is not None
    return [v for _, v in c.apply(ctx, items)]


def _numbers(values: list[Any], name: str, col: int) -> list[int | float]:
    return [_num(v, name, col) for v in values]


def _b_sum(ctx: _Ctx, call: _Call, items: list[Any], c: _Closure | None) -> Any:
    values = items if c is None else [v for _, v in c.apply(ctx, items)]
    nums = _numbers(values, "sum", call.col)
    total: int | float = 0
    for n in nums:
        total = _arith("+", total, n, call.col)
    return total


def _spread(call: _Call, args: tuple[Any, ...]) -> list[int | float]:
    values = list(args[0]) if len(args) == 1 and isinstance(args[0], list | tuple) else list(args)
    if not values:
        raise ExpressionError(f"{call.name} of an empty array", call.col)
    return _numbers(values, call.name, call.col)


def _b_max(ctx: _Ctx, call: _Call, *args: Any) -> Any:
    return max(_spread(call, args))


def _b_min(ctx: _Ctx, call: _Call, *args: Any) -> Any:
    return min(_spread(call, args))


def _b_mean(ctx: _Ctx, call: _Call, *args: Any) -> float:
    values = _spread(call, args)
    return float(math.fsum(values)) / len(values)


def _b_median(ctx: _Ctx, call: _Call, *args: Any) -> float:
    values = sorted(_spread(call, args))
    mid = len(values) // 2
    if len(values) % 2:
        return float(values[mid])
    return (values[mid - 1] + values[mid]) / 2.0


def _b_len(ctx: _Ctx, call: _Call, v: Any) -> int:
    if isinstance(v, str | list | tuple | Mapping):
        return len(v)
    raise ExpressionError(f"invalid argument for len (type {_type_name(v)})", call.col)


def _b_abs(ctx: _Ctx, call: _Call, v: Any) -> Any:
    return abs(_num(v, "abs", call.col))


def _round_half_away(f: float) -> float:
    if math.isnan(f) or math.isinf(f):
        return f
    return float(math.copysign(math.floor(abs(f) + 0.5), f))


def _float_fn(fn: Callable[[float], float], name: str) -> Callable[..., float]:
    def impl(ctx: _Ctx, call: _Call, v: Any) -> float:
        f = float(_num(v, name, call.col))
        if math.isnan(f) or math.isinf(f):
            return f
        return float(fn(f))

    return impl


_INT_RE: Final = re.compile(r"[+-]?[0-9]+")


def _parse_go_int(s: str, name: str, col: int) -> int:
    # strconv.ParseInt(s, 10, 64): no whitespace, no underscores, no decimals.
    if not _INT_RE.fullmatch(s):
        raise ExpressionError(f'{name}: strconv.ParseInt: parsing "{s}": invalid syntax', col)
    value = int(s, 10)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ExpressionError(f'{name}: strconv.ParseInt: parsing "{s}": value out of range', col)
    return value


def _parse_go_float(s: str, name: str, col: int) -> float:
    # strconv.ParseFloat accepts Inf/NaN spellings but, unlike float(), no whitespace or "_".
    if s != s.strip() or "_" in s or not s:
        raise ExpressionError(f'{name}: strconv.ParseFloat: parsing "{s}": invalid syntax', col)
    try:
        return float(s)
    except ValueError:
        raise ExpressionError(f'{name}: strconv.ParseFloat: parsing "{s}": invalid syntax', col) from None


def _float_to_int(f: float, name: str, col: int) -> int:
    if math.isnan(f) or math.isinf(f):
        raise ExpressionError(f"{name}: cannot convert {_go_float(f)} to int", col)
    return _check_int(int(f), col)


def _b_as_int(ctx: _Ctx, call: _Call, v: Any) -> int:
    """Argo's ``asInt``: numbers truncate, strings must be base-10 integers."""
    if isinstance(v, str):
        return _parse_go_int(v, call.name, call.col)
    if isinstance(v, float):
        return _float_to_int(v, call.name, call.col)
    if isinstance(v, int) and not isinstance(v, bool):
        return _check_int(v, call.col)
    raise ExpressionError(f"{call.name}() not supported on {_type_name(v)} {_to_string(v)}", call.col)


def _b_as_float(ctx: _Ctx, call: _Call, v: Any) -> float:
    if isinstance(v, str):
        return _parse_go_float(v, call.name, call.col)
    if _is_num(v):
        return float(v)
    raise ExpressionError(f"{call.name}() not supported on {_type_name(v)} {_to_string(v)}", call.col)


def _b_string(ctx: _Ctx, call: _Call, v: Any) -> str:
    return _to_string(v)


def _b_is_nan(ctx: _Ctx, call: _Call, v: Any) -> bool:
    return math.isnan(_num(v, "isNaN", call.col))


def _b_is_inf(ctx: _Ctx, call: _Call, v: Any) -> bool:
    return math.isinf(_num(v, "isInf", call.col))


def _b_is_nil(ctx: _Ctx, call: _Call, v: Any) -> bool:
    return v is None


def _b_default(ctx: _Ctx, call: _Call, v: Any, d: Any) -> Any:
    # Argo's default() returns d only when the value is nil (NaN is kept).
    return d if v is None else v


def _b_first(ctx: _Ctx, call: _Call, v: Any) -> Any:
    items = _as_list(v, "first", call.col)
    return items[0] if items else None


def _b_last(ctx: _Ctx, call: _Call, v: Any) -> Any:
    items = _as_list(v, "last", call.col)
    return items[-1] if items else None


def _str_arg(v: Any, name: str, col: int) -> str:
    if not isinstance(v, str):
        raise ExpressionError(f"{name} expects a string, got {_type_name(v)}", col)
    return v


def _b_upper(ctx: _Ctx, call: _Call, v: Any) -> str:
    return _str_arg(v, "upper", call.col).upper()


def _b_lower(ctx: _Ctx, call: _Call, v: Any) -> str:
    return _str_arg(v, "lower", call.col).lower()


def _b_trim(ctx: _Ctx, call: _Call, v: Any, chars: Any = None) -> str:
    s = _str_arg(v, "trim", call.col)
    return s.strip() if chars is None else s.strip(_str_arg(chars, "trim", call.col))


def _map_arg(v: Any, name: str, col: int) -> Mapping[Any, Any]:
    if not isinstance(v, Mapping):
        raise ExpressionError(f"{name} expects a map, got {_type_name(v)}", col)
    return v


def _b_keys(ctx: _Ctx, call: _Call, v: Any) -> list[Any]:
    return list(_map_arg(v, "keys", call.col).keys())


def _b_values(ctx: _Ctx, call: _Call, v: Any) -> list[Any]:
    return list(_map_arg(v, "values", call.col).values())


def _b_int(ctx: _Ctx, call: _Call, v: Any) -> int:
    return _b_as_int(ctx, call, v)


def _b_float(ctx: _Ctx, call: _Call, v: Any) -> float:
    return _b_as_float(ctx, call, v)


_BUILTINS: Final[dict[str, _Builtin]] = {
    "all": _Builtin(_b_all, 2, 2, closure=True),
    "any": _Builtin(_b_any, 2, 2, closure=True),
    "none": _Builtin(_b_none, 2, 2, closure=True),
    "one": _Builtin(_b_one, 2, 2, closure=True),
    "filter": _Builtin(_b_filter, 2, 2, closure=True),
    "map": _Builtin(_b_map, 2, 2, closure=True),
    "count": _Builtin(_b_count, 1, 2, closure=True),
    "sum": _Builtin(_b_sum, 1, 2, closure=True),
    "max": _Builtin(_b_max, 1, None),
    "min": _Builtin(_b_min, 1, None),
    "mean": _Builtin(_b_mean, 1, None),
    "median": _Builtin(_b_median, 1, None),
    "len": _Builtin(_b_len, 1, 1),
    "abs": _Builtin(_b_abs, 1, 1),
    "ceil": _Builtin(_float_fn(math.ceil, "ceil"), 1, 1),
    "floor": _Builtin(_float_fn(math.floor, "floor"), 1, 1),
    "round": _Builtin(_float_fn(_round_half_away, "round"), 1, 1),
    "int": _Builtin(_b_int, 1, 1),
    "float": _Builtin(_b_float, 1, 1),
    "string": _Builtin(_b_string, 1, 1),
    "asInt": _Builtin(_b_as_int, 1, 1),
    "asFloat": _Builtin(_b_as_float, 1, 1),
    "isNaN": _Builtin(_b_is_nan, 1, 1),
    "isInf": _Builtin(_b_is_inf, 1, 1),
    "isNil": _Builtin(_b_is_nil, 1, 1),
    "default": _Builtin(_b_default, 2, 2),
    "first": _Builtin(_b_first, 1, 1),
    "last": _Builtin(_b_last, 1, 1),
    "upper": _Builtin(_b_upper, 1, 1),
    "lower": _Builtin(_b_lower, 1, 1),
    "trim": _Builtin(_b_trim, 1, 2),
    "keys": _Builtin(_b_keys, 1, 1),
    "values": _Builtin(_b_values, 1, 1),
}

BUILTIN_NAMES: Final = frozenset(_BUILTINS)


# --------------------------------------------------------------------------- parser

_BINARY: Final = {
    "or": 10, "||": 10, "and": 15, "&&": 15,
    "==": 20, "!=": 20, "<": 20, ">": 20, ">=": 20, "<=": 20,
    "in": 20, "matches": 20, "contains": 20, "startsWith": 20, "endsWith": 20,
    "..": 25, "+": 30, "-": 30, "*": 60, "/": 60, "%": 60,
    "**": 100, "^": 100, "??": 500,
}  # fmt: skip
_RIGHT_ASSOC: Final = frozenset({"**", "^"})
_UNARY: Final = {"not": 50, "!": 50, "-": 90, "+": 90}
_NEGATABLE: Final = frozenset({"in", "matches", "contains", "startsWith", "endsWith"})
_WORD_OPS: Final = frozenset({"and", "or", "not", "in", "matches", "contains", "startsWith", "endsWith"})
_RESERVED: Final = frozenset({"let", "if", "else"})


class _Parser:
    def __init__(self, src: str, variables: Collection[str] | None) -> None:
        self.toks = _tokenize(src)
        self.pos = 0
        self.depth = 0
        self.closure_depth = 0
        self.variables = variables

    # -- token helpers
    @property
    def tok(self) -> _Tok:
        return self.toks[self.pos]

    def advance(self) -> _Tok:
        tok = self.toks[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def is_op(self, *values: str) -> bool:
        return self.tok.kind == "op" and self.tok.value in values

    def expect(self, value: str) -> _Tok:
        if not self.is_op(value):
            raise ExpressionError(f"expected {value!r} but found {self._describe(self.tok)}", self.tok.col)
        return self.advance()

    @staticmethod
    def _describe(tok: _Tok) -> str:
        if tok.kind == "eof":
            return "end of input"
        return repr(tok.value) if tok.kind != "ptr" else "'#'"

    def _binary_op(self) -> str | None:
        tok = self.tok
        if tok.kind == "op" and tok.value in _BINARY:
            return str(tok.value)
        if tok.kind == "ident" and tok.value in _BINARY:
            return str(tok.value)
        if tok.kind == "ident" and tok.value == "not":
            nxt = self.toks[self.pos + 1]
            if nxt.kind == "ident" and nxt.value in _NEGATABLE:
                return "not"
        return None

    # -- grammar
    def parse(self) -> _Node:
        node = self.expression(0)
        if self.tok.kind != "eof":
            raise ExpressionError(f"unexpected token {self._describe(self.tok)}", self.tok.col)
        return node

    def expression(self, min_prec: int) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested deeper than {MAX_DEPTH} levels", self.tok.col)
        try:
            left = self.unary()
            while True:
                op = self._binary_op()
                if op is None:
                    break
                negate = op == "not"
                prec = _BINARY["in"] if negate else _BINARY[op]
                if prec < min_prec:
                    break
                op_tok = self.advance()
                if negate:
                    op = str(self.advance().value)
                right = self.expression(prec if op in _RIGHT_ASSOC else prec + 1)
                left = self._make_binary(op, left, right, op_tok.col, negate)
            if min_prec == 0 and self.is_op("?"):
                q = self.advance()
                then = self.expression(0)
                self.expect(":")
                otherwise = self.expression(0)
                left = _Conditional(left, then, otherwise, q.col)
            return left
        finally:
            self.depth -= 1

    @staticmethod
    def _make_binary(op: str, left: _Node, right: _Node, col: int, negate: bool) -> _Node:
        if op in ("&&", "||", "and", "or"):
            return _Logical(op, left, right, col)
        if op == "??":
            return _Coalesce(left, right, col)
        if op == "matches" and isinstance(right, _Literal) and isinstance(right.value, str):
            _check_pattern(right.value, right.col)  # reject bad literal patterns at compile time
        return _Binary(op, left, right, col, negate)

    def unary(self) -> _Node:
        tok = self.tok
        if (tok.kind == "op" and tok.value in ("!", "-", "+")) or (
            tok.kind == "ident" and tok.value == "not"
        ):
            self.advance()
            operand = self.expression(_UNARY[tok.value])
            return _Unary(str(tok.value), operand, tok.col)
        return self.postfix(self.primary())

    def primary(self) -> _Node:
        tok = self.advance()
        if tok.kind in ("num", "str"):
            return _Literal(tok.value, tok.col)
        if tok.kind == "ptr":
            if self.closure_depth == 0:
                raise ExpressionError("'#' can only be used inside a closure", tok.col)
            if tok.value not in ("", "index"):
                raise ExpressionError(f"unknown pointer #{tok.value}", tok.col)
            return _Pointer(str(tok.value), tok.col)
        if tok.kind == "ident":
            return self.identifier(tok)
        if tok.kind == "op":
            if tok.value == "(":
                node = self.expression(0)
                self.expect(")")
                return node
            if tok.value == "[":
                return self.array(tok)
            if tok.value == "{":
                return self.map_literal(tok)
            if tok.value == "." and self.closure_depth > 0 and self.tok.kind == "ident":
                # ".field" is shorthand for "#.field" inside a closure.
                name = self.advance()
                return _Member(_Pointer("", tok.col), _Literal(name.value, name.col), False, tok.col)
        raise ExpressionError(f"unexpected token {self._describe(tok)}", tok.col)

    def identifier(self, tok: _Tok) -> _Node:
        name = str(tok.value)
        if name == "true":
            return _Literal(True, tok.col)
        if name == "false":
            return _Literal(False, tok.col)
        if name in ("nil", "null"):
            return _Literal(None, tok.col)
        if name in _RESERVED or name in _WORD_OPS:
            raise ExpressionError(f"unexpected token {name!r}", tok.col)
        if self.is_op("("):
            return self.call(tok)
        if self.variables is not None and name not in self.variables:
            raise ExpressionError(f"unknown name {name}", tok.col)
        return _Name(name, tok.col)

    def call(self, tok: _Tok) -> _Node:
        name = str(tok.value)
        spec = _BUILTINS.get(name)
        if spec is None:
            raise ExpressionError(f"unknown function {name}", tok.col)
        self.expect("(")
        args: list[_Node] = []
        while not self.is_op(")"):
            if args:
                self.expect(",")
                if self.is_op(")"):  # trailing comma
                    break
            if spec.closure and len(args) == 1:
                args.append(self.closure())
            else:
                args.append(self.expression(0))
        self.expect(")")
        if len(args) < spec.min_args or (spec.max_args is not None and len(args) > spec.max_args):
            expected = (
                str(spec.min_args) if spec.min_args == spec.max_args
                else f"at least {spec.min_args}" if spec.max_args is None
                else f"{spec.min_args} to {spec.max_args}"
            )  # fmt: skip
            raise ExpressionError(f"{name}() takes {expected} argument(s), got {len(args)}", tok.col)
        return _Call(name, args, tok.col)

    def closure(self) -> _Closure:
        start = self.tok
        self.closure_depth += 1
        try:
            if self.is_op("{"):
                self.advance()
                body = self.expression(0)
                self.expect("}")
            else:
                body = self.expression(0)
        finally:
            self.closure_depth -= 1
        return _Closure(body, start.col)

    def array(self, open_tok: _Tok) -> _Node:
        items: list[_Node] = []
        while not self.is_op("]"):
            if items:
                self.expect(",")
                if self.is_op("]"):
                    break
            items.append(self.expression(0))
        self.expect("]")
        return _ArrayLit(items, open_tok.col)

    def map_literal(self, open_tok: _Tok) -> _Node:
        pairs: list[tuple[_Node, _Node]] = []
        while not self.is_op("}"):
            if pairs:
                self.expect(",")
                if self.is_op("}"):
                    break
            key_tok = self.tok
            key: _Node
            if key_tok.kind in ("ident", "str", "num"):
                self.advance()
                key = _Literal(key_tok.value, key_tok.col)
            elif self.is_op("("):
                self.advance()
                key = self.expression(0)
                self.expect(")")
            else:
                raise ExpressionError(f"a map key must be a name, string or number, found {self._describe(key_tok)}",
                                      key_tok.col)  # fmt: skip
            self.expect(":")
            pairs.append((key, self.expression(0)))
        self.expect("}")
        return _MapLit(pairs, open_tok.col)

    def postfix(self, node: _Node) -> _Node:
        optional_seen = False
        while True:
            tok = self.tok
            if self.is_op(".", "?."):
                self.advance()
                optional = tok.value == "?."
                optional_seen = optional_seen or optional
                if optional and self.is_op("["):
                    node = self.index(node, optional=True)
                    continue
                name = self.advance()
                if name.kind != "ident":
                    raise ExpressionError(f"expected a field name after {tok.value!r}", name.col)
                if self.is_op("("):
                    raise ExpressionError("method calls are not supported", name.col)
                node = _Member(node, _Literal(name.value, name.col), optional, tok.col)
            elif self.is_op("["):
                node = self.index(node, optional=False)
            else:
                break
        return _Chain(node) if optional_seen else node

    def index(self, obj: _Node, optional: bool) -> _Node:
        open_tok = self.expect("[")
        lo: _Node | None = None
        if not self.is_op(":"):
            lo = self.expression(0)
            if not self.is_op(":"):
                self.expect("]")
                return _Member(obj, lo, optional, open_tok.col)
        self.expect(":")
        hi = None if self.is_op("]") else self.expression(0)
        self.expect("]")
        return _Slice(obj, lo, hi, open_tok.col)


def _measure(root: _Node) -> tuple[int, int]:
    """Node count and depth, computed iteratively so huge trees cannot overflow the stack."""
    count, depth, stack = 0, 0, [(root, 1)]
    while stack:
        node, level = stack.pop()
        count += 1
        depth = max(depth, level)
        stack.extend((child, level + 1) for child in node.children())
    return count, depth


# --------------------------------------------------------------------------- public API


class Expression:
    """A compiled condition; immutable and safe to share between evaluations."""

    __slots__ = ("_root", "source")

    def __init__(self, source: str, root: _Node) -> None:
        self.source = source
        self._root = root

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """Evaluate against ``env``; raises :class:`ExpressionError` on any failure."""
        ctx = _Ctx(env)
        try:
            return self._root.run(ctx)
        except ExpressionError:
            raise
        except RecursionError:
            raise ExpressionError("expression too deeply nested") from None
        except (TypeError, ValueError, ArithmeticError, KeyError, IndexError) as exc:
            # Defensive: any gap in the type checks above must still surface as ExpressionError.
            raise ExpressionError(f"evaluation failed: {exc}") from None


def compile_expression(source: str, variables: Collection[str] | None = None) -> Expression:
    """Parse ``source``; raises :class:`ExpressionError` on syntax errors or unknown functions.

    When ``variables`` is given, names outside it are rejected at compile time too.
    """
    if not isinstance(source, str):
        raise ExpressionError(f"expression must be a string, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_SOURCE_LENGTH} characters")
    if not source.strip():
        raise ExpressionError("empty expression", 1)
    try:
        root = _Parser(source, variables).parse()
    except RecursionError:
        raise ExpressionError("expression too deeply nested") from None
    count, depth = _measure(root)
    if count > MAX_AST_NODES:
        raise ExpressionError(f"expression has more than {MAX_AST_NODES} nodes")
    if depth > MAX_AST_DEPTH:
        # Evaluation recurses once per level; long operator chains such as 1+1+…+1 nest
        # without going through the parser's own depth guard.
        raise ExpressionError(f"expression nested deeper than {MAX_AST_DEPTH} levels")
    return Expression(source, root)


def evaluate_condition(source_or_expr: str | Expression, result: Any) -> bool:
    """Evaluate an Argo success/failure condition with ``result`` bound; must yield a bool."""
    expr = (
        source_or_expr
        if isinstance(source_or_expr, Expression)
        else compile_expression(source_or_expr, variables=("result",))
    )
    value = expr.evaluate({"result": result})
    if not isinstance(value, bool):
        raise ExpressionError(f"expected bool, but got {_type_name(value)}")
    return value
