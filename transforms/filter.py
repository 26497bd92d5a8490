"""`filter`: keep rows matching a polars expression or simple per-column conditions."""

from __future__ import annotations

from typing import Any

import polars as pl
from pydantic import Field, field_validator, model_validator

from workbench.query.polars_expr import UnsafeExpression, mentions_pl, parse_polars_expr
from workbench.query.sql_expression import BadSQL, UnsafeSQL, check_sql_expression
from workbench.transform import DROP, Context, StepConfig, transform


class Condition(StepConfig):
    """Per-column checks; `*_chars` apply to text (message lists are rendered to text)."""

    min_chars: int | None = None
    max_chars: int | None = None
    min: float | None = None
    max: float | None = None
    eq: Any = None
    ne: Any = None
    isin: list[Any] | None = Field(None, alias="in")
    not_in: list[Any] | None = None
    contains: str | None = None
    not_contains: str | None = None
    regex: str | None = None
    not_null: bool | None = None


class FilterConfig(StepConfig):
    expr: str | None = Field(
        None,
        description="a polars expression ('pl.col(\"x\") > 1', no eval: an allow-listed "
                    "surface) or a SQL expression ('length(x) > 1')",
    )
    where: dict[str, Condition] | None = Field(None, description="{column: conditions}")
    reason: str | None = Field(None, description="drop reason recorded in the run log")

    @field_validator("expr")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_expression(value)
        return value

    @model_validator(mode="after")
    def _one_of(self) -> FilterConfig:
        if self.expr is None and not self.where:
            raise ValueError("give `expr` or `where`")
        return self


def parse_expression(text: str) -> pl.Expr:
    """Text that uses `pl` is a polars expression, interpreted over an allow-list and never
    passed to eval (`workbench.query.polars_expr`); anything else is a SQL expression for polars,
    parsed and checked first (`workbench.query.sql_expression`: no subquery, nothing read)."""
    if mentions_pl(text):
        try:
            return parse_polars_expr(text)
        except UnsafeExpression as exc:
            raise ValueError(f"polars expression {text!r} refused: {exc}") from None
    try:
        check_sql_expression(text)
    except BadSQL as exc:
        raise ValueError(f"bad SQL expression {text!r}: {exc}") from None
    except UnsafeSQL as exc:
        raise ValueError(f"SQL expression {text!r} refused: {exc}") from None
    try:
        return pl.sql_expr(text)
    except Exception as exc:
        raise ValueError(f"bad SQL expression {text!r}: {str(exc).splitlines()[0]}") from exc


def _text(schema: pl.Schema, column: str) -> pl.Expr:
    from workbench.schema import as_text

    return as_text(schema, column)


def _checks(schema: pl.Schema, column: str, cond: Condition) -> list[tuple[str, pl.Expr]]:
    if column not in schema:
        raise ValueError(f"filter: no column {column!r} (columns: {', '.join(schema.names())})")
    col = pl.col(column)
    checks: list[tuple[str, pl.Expr]] = []
    if cond.min_chars is not None:
        checks.append((f"{column} shorter than {cond.min_chars} chars",
                       _text(schema, column).str.len_chars() >= cond.min_chars))
    if cond.max_chars is not None:
        checks.append((f"{column} longer than {cond.max_chars} chars",
                       _text(schema, column).str.len_chars() <= cond.max_chars))
    pairs = [("min", lambda v: col >= v), ("max", lambda v: col <= v), ("eq", lambda v: col == v),
             ("ne", lambda v: col != v), ("isin", lambda v: col.is_in(v)),
             ("not_in", lambda v: ~col.is_in(v)),
             ("contains", lambda v: _text(schema, column).str.contains(v, literal=True)),
             ("not_contains", lambda v: ~_text(schema, column).str.contains(v, literal=True)),
             ("regex", lambda v: _text(schema, column).str.contains(v))]
    for key, make in pairs:
        value = getattr(cond, key)
        if value is not None:
            checks.append((f"{column} fails {key}={value!r}", make(value)))
    if cond.not_null:
        checks.append((f"{column} is null", col.is_not_null()))
    return checks


@transform("filter", scope="row", keeps_content=True, stateless=True)
def filter_rows(frame: pl.LazyFrame, config: FilterConfig, ctx: Context) -> pl.LazyFrame:
    """Keep rows where every condition holds; a null result counts as failing."""
    schema = frame.collect_schema()
    checks: list[tuple[str, pl.Expr]] = []
    if config.expr is not None:
        checks.append((config.reason or f"filter: {config.expr}", parse_expression(config.expr)))
    for column, cond in (config.where or {}).items():
        checks.extend((config.reason or reason, expr) for reason, expr in _checks(schema, column, cond))
    reason = pl.lit(None, dtype=pl.String)
    for text, keep in reversed(checks):  # the first failing check names the reason
        reason = pl.when(keep.fill_null(False).not_()).then(pl.lit(text)).otherwise(reason)
    return frame.with_columns(reason.alias(DROP))
