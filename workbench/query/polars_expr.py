"""Polars expressions written as text (`pl.col("x").str.len_chars() > 20`), without eval.

The text is parsed with Python's `ast` and interpreted node by node over a small, explicit
surface: constants, lists/tuples/dicts of them, the name `pl` (and no other), allow-listed
`pl.<function>`s and data types, public methods of expressions and their namespaces except
those that take a Python callable or do I/O, operators mapped to polars operators, keyword
arguments. Anything else (dunder attributes, other names, lambdas, comprehensions,
subscripts, f-strings, `**kwargs`, ...) is refused with a message naming it, so a pipeline
with such a filter fails validation before it runs.
"""

from __future__ import annotations

import ast
import datetime as dt
import decimal
import operator
from typing import Any

import polars as pl

PL_FUNCTIONS = frozenset({
    "col", "lit", "when", "len", "all", "any", "element", "field", "exclude", "nth", "first",
    "last", "count", "sum", "min", "max", "mean", "median", "n_unique", "std", "var", "quantile",
    "approx_n_unique", "all_horizontal", "any_horizontal", "sum_horizontal", "min_horizontal",
    "max_horizontal", "mean_horizontal", "cum_sum_horizontal", "concat_str", "concat_list",
    "concat_arr", "coalesce", "struct", "format", "int_range", "int_ranges", "date", "datetime",
    "duration", "time", "repeat", "arg_where", "corr", "cov",
})
PL_DTYPES = frozenset({
    "String", "Utf8", "Boolean", "Int8", "Int16", "Int32", "Int64", "Int128", "UInt8", "UInt16",
    "UInt32", "UInt64", "UInt128", "Float16", "Float32", "Float64", "Decimal", "Date", "Datetime",
    "Duration", "Time", "List", "Array", "Struct", "Field", "Categorical", "Enum", "Null",
    "Binary",
})
NAMESPACES = frozenset({"str", "list", "arr", "dt", "struct", "name", "cat", "bin"})
# Methods that take a Python callable, run Python per row, print, or read or write files.
REFUSED_METHODS = frozenset({
    "map_elements", "map_batches", "map_groups", "map", "apply", "pipe", "pipe_with_dtype",
    "rolling_map", "map_fields", "inspect", "deserialize", "serialize", "write_json",
    "from_json", "show_graph", "register_plugin", "meta", "ext", "plugin",
})
REFUSED_WHY = "no Python functions, printing or I/O"
BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
}
COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}
PLAIN = (str, int, float, bool, bytes, type(None), dt.date, dt.datetime, dt.time, dt.timedelta,
         decimal.Decimal)
MAX_LENGTH = 10_000


class UnsafeExpression(ValueError):
    """The text uses something outside the allowed polars surface, or is not an expression."""


def mentions_pl(text: str) -> bool:
    """Whether `text` is meant as a polars expression: Python that uses the name `pl`."""
    if text.strip().startswith("pl."):
        return True
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(isinstance(node, ast.Name) and node.id == "pl" for node in ast.walk(tree))


def parse_polars_expr(text: str) -> pl.Expr:
    """The polars expression that `text` spells, built without eval."""
    if len(text) > MAX_LENGTH:
        raise UnsafeExpression(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
        problems = static_problems(tree)
        if problems:
            raise UnsafeExpression("; ".join(problems))
        value = _Interpreter().eval(tree.body)
    except UnsafeExpression:
        raise
    except SyntaxError as exc:
        raise UnsafeExpression(f"not a Python expression: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise UnsafeExpression("expression nested too deeply") from None
    except Exception as exc:  # e.g. an operator polars rejects for these operand types
        raise UnsafeExpression(f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if isinstance(value, _Bound):
        raise UnsafeExpression(f"{value.name} must be called")
    if not isinstance(value, pl.Expr):
        raise UnsafeExpression(f"the result is a {type(value).__name__}, not a polars expression")
    return value


def static_problems(tree: ast.AST) -> list[str]:
    """Everything refused that can be seen without running anything, in reading order, so
    `pl.col("x").__class__.__init__...` is refused naming `__class__` and the rest."""
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        where = (getattr(node, "end_lineno", 0) or 0, getattr(node, "end_col_offset", 0) or 0)
        problem = None
        if isinstance(node, ast.Name) and node.id != "pl":
            problem = f"name {node.id!r} is not allowed (only 'pl')"
        elif isinstance(node, ast.Attribute):
            problem = _attribute_problem(node)
        elif isinstance(node, ast.expr) and not hasattr(_Interpreter, f"_{type(node).__name__}"):
            problem = f"{_describe(node)} is not allowed"
        if problem:
            found.append((*where, problem))
    problems: list[str] = []
    for *_, problem in sorted(found):
        if problem not in problems:
            problems.append(problem)
    return problems


def _attribute_problem(node: ast.Attribute) -> str | None:
    name = node.attr
    if name.startswith("_"):
        return f"attribute {name!r} is not allowed (no private or dunder names)"
    if isinstance(node.value, ast.Name) and node.value.id == "pl":
        if name in PL_DTYPES | PL_FUNCTIONS and hasattr(pl, name):
            return None
        return f"pl.{name} is not allowed"
    if name in REFUSED_METHODS:
        return f".{name} is not allowed ({REFUSED_WHY})"
    return None


class _Pl:
    """Stands for the module `pl` while interpreting; only its allow-listed names resolve."""


_PL = _Pl()


class _Interpreter:
    def eval(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise UnsafeExpression(f"{_describe(node)} is not allowed")
        return method(node)

    def _Constant(self, node: ast.Constant) -> Any:
        if not isinstance(node.value, PLAIN):
            raise UnsafeExpression(f"constant {node.value!r} is not allowed")
        return node.value

    def _List(self, node: ast.List) -> list[Any]:
        return [self.eval(item) for item in node.elts]

    def _Tuple(self, node: ast.Tuple) -> tuple[Any, ...]:
        return tuple(self.eval(item) for item in node.elts)

    def _Dict(self, node: ast.Dict) -> dict[Any, Any]:
        if any(key is None for key in node.keys):
            raise UnsafeExpression("'**' in a dict is not allowed")
        return {self._plain(key): self.eval(value)  # type: ignore[arg-type]
                for key, value in zip(node.keys, node.values, strict=True)}

    def _Name(self, node: ast.Name) -> Any:
        if node.id != "pl":
            raise UnsafeExpression(f"name {node.id!r} is not allowed (only 'pl')")
        return _PL

    def _Attribute(self, node: ast.Attribute) -> Any:
        owner = self.eval(node.value)
        name = node.attr
        problem = _attribute_problem(node)
        if problem:
            raise UnsafeExpression(problem)
        if owner is _PL:
            if name in PL_DTYPES:
                return getattr(pl, name)
            return _Bound(getattr(pl, name), f"pl.{name}")
        if not _is_receiver(owner):
            raise UnsafeExpression(f".{name} on a {type(owner).__name__} is not allowed")
        if name in NAMESPACES and isinstance(owner, pl.Expr):
            return getattr(owner, name)
        if not callable(getattr(type(owner), name, None)):
            raise UnsafeExpression(f".{name} is not a method of {type(owner).__name__}")
        return _Bound(getattr(owner, name), f".{name}")

    def _Call(self, node: ast.Call) -> Any:
        function = self.eval(node.func)
        if not isinstance(function, _Bound) and not _is_dtype_class(function):
            raise UnsafeExpression(f"calling {_describe(node.func)} is not allowed")
        args = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise UnsafeExpression("'*'-unpacking is not allowed")
            args.append(self._argument(arg))
        kwargs = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                raise UnsafeExpression("'**'-unpacking is not allowed")
            kwargs[keyword.arg] = self._argument(keyword.value)
        target = function.function if isinstance(function, _Bound) else function
        try:
            return target(*args, **kwargs)
        except Exception as exc:
            name = function.name if isinstance(function, _Bound) else function.__name__
            raise UnsafeExpression(f"{name}(...) failed: {str(exc).splitlines()[0]}") from None

    def _BinOp(self, node: ast.BinOp) -> Any:
        apply = BINARY.get(type(node.op))
        if apply is None:
            raise UnsafeExpression(f"operator {type(node.op).__name__} is not allowed")
        left, right = self._argument(node.left), self._argument(node.right)
        if not isinstance(left, pl.Expr) and not isinstance(right, pl.Expr):
            _check_constant_arithmetic(type(node.op), left, right)
        return apply(left, right)

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        operand = self._argument(node.operand)
        if isinstance(node.op, ast.Not):
            if isinstance(operand, pl.Expr):
                return ~operand
            return not operand
        ops = {ast.Invert: operator.invert, ast.USub: operator.neg, ast.UAdd: operator.pos}
        return ops[type(node.op)](operand)

    def _BoolOp(self, node: ast.BoolOp) -> Any:
        values = [self._argument(value) for value in node.values]
        combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result

    def _Compare(self, node: ast.Compare) -> Any:
        """`a < b < c` is `(a < b) & (b < c)`; `x in [..]` is `x.is_in([..])`."""
        left = self._argument(node.left)
        result = None
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self._argument(right_node)
            if isinstance(op, ast.In | ast.NotIn):
                if not isinstance(left, pl.Expr):
                    raise UnsafeExpression("'in' needs a polars expression on its left")
                part = left.is_in(right)
                part = ~part if isinstance(op, ast.NotIn) else part
            elif type(op) in COMPARE:
                part = COMPARE[type(op)](left, right)
            else:
                raise UnsafeExpression(
                    f"comparison {type(op).__name__} is not allowed (use .is_null() for None)")
            result = part if result is None else result & part
            left = right
        return result

    def _argument(self, node: ast.AST) -> Any:
        value = self.eval(node)
        _check_value(value, _describe(node))
        return value

    def _plain(self, node: ast.AST) -> Any:
        value = self.eval(node)
        if not isinstance(value, PLAIN):
            raise UnsafeExpression("dict keys must be constants")
        return value


class _Bound:
    """A resolved, allowed function or method, callable only from a Call node."""

    def __init__(self, function: Any, name: str) -> None:
        self.function = function
        self.name = name


def _is_receiver(value: Any) -> bool:
    """Expressions, their namespaces and when/then chains: nothing else has methods here."""
    if isinstance(value, pl.Expr):
        return True
    kind = type(value)
    return kind.__module__.startswith("polars.") and (
        kind.__name__.endswith("NameSpace") or kind.__name__ in ("When", "ChainedWhen"))


def _is_dtype_class(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, pl.DataType)


def _check_value(value: Any, where: str) -> None:
    """Arguments are data, expressions or data types: never a function or other object."""
    if isinstance(value, (*PLAIN, pl.Expr, pl.DataType)) or _is_dtype_class(value):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_value(item, where)
        return
    if isinstance(value, dict):
        for item in value.values():
            _check_value(item, where)
        return
    if isinstance(value, _Bound):
        raise UnsafeExpression(f"{value.name} must be called, not passed as a value")
    raise UnsafeExpression(f"{where} gives a {type(value).__name__}, which is not allowed here")


def _check_constant_arithmetic(op: type, left: Any, right: Any) -> None:
    """Keep constant folding cheap: no huge powers, no repeated strings or lists."""
    numbers = (int, float, decimal.Decimal)
    sequences = (str, bytes, list, tuple, dict)
    if op is ast.Mult and (isinstance(left, sequences) or isinstance(right, sequences)):
        raise UnsafeExpression("repeating a string or list with '*' is not allowed")
    if op is ast.Pow and isinstance(left, numbers) and isinstance(right, numbers) and (
            abs(right) > 64 or abs(left) > 2**64):
        raise UnsafeExpression("constant power too large")


def _describe(node: ast.AST) -> str:
    """A short name for a node in messages: `__import__`, `open(...)`, `lambda`, ..."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_describe(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return f"{_describe(node.func)}(...)"
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return f"subscript [{node.slice.value!r}]"
    kinds = {
        "Lambda": "lambda", "ListComp": "a list comprehension", "SetComp": "a set comprehension",
        "DictComp": "a dict comprehension", "GeneratorExp": "a generator expression",
        "JoinedStr": "an f-string", "Subscript": "subscript [...]", "IfExp": "'x if c else y'",
        "NamedExpr": "':='", "Await": "await", "Yield": "yield", "YieldFrom": "yield",
        "Set": "a set", "Starred": "'*'-unpacking", "Slice": "a slice",
        "FormattedValue": "an f-string",
    }
    return kinds.get(type(node).__name__, type(node).__name__)
