"""The `filter` step's polars expressions: interpreted over an allow-list, never eval'd.

Refusals are checked where a user meets them (pipeline validation); accepted expressions
must select the same rows as the same expression written in Python against real polars."""

from __future__ import annotations

import polars as pl
import pytest

from workbench.errors import PipelineError
from workbench.pipeline import build_pipeline
from workbench.query.polars_expr import UnsafeExpression, parse_polars_expr
from workbench.registry import get
from workbench.transform import DROP, Context

FRAME = pl.DataFrame({
    "a": [0, 1, 2, 3, None, 5],
    "b": [None, "x", "yy", "zzz", "w", "Zebra"],
    "x": [1, 2, 3, 4, 5, 6],
    "chosen": ["short", "a long enough answer here!", "", "x" * 30, None, "tiny"],
    "tags": [["a"], ["a", "b"], [], ["c"], None, ["b"]],
})


def pipeline(expr: str):
    return build_pipeline({"name": "t", "input": None, "output": "o",
                           "steps": [{"filter": {"expr": expr}}]})


SAME_AS_POLARS = {
    'pl.col("chosen").str.len_chars() > 20': pl.col("chosen").str.len_chars() > 20,
    '(pl.col("a") > 1) & ~pl.col("b").is_null()': (pl.col("a") > 1) & ~pl.col("b").is_null(),
    'pl.col("x").is_in([1, 2])': pl.col("x").is_in([1, 2]),
    '1 < pl.col("x") <= 4': (pl.col("x") > 1) & (pl.col("x") <= 4),
    'pl.col("x") in (1, 6)': pl.col("x").is_in([1, 6]),
    'pl.col("x") not in [1, 6]': ~pl.col("x").is_in([1, 6]),
    'pl.col("a") > 1 and pl.col("x") < 5 or pl.col("b") == "w"':
        ((pl.col("a") > 1) & (pl.col("x") < 5)) | (pl.col("b") == "w"),
    'not pl.col("b").is_null()': ~pl.col("b").is_null(),
    'pl.when(pl.col("a") > 2).then(pl.lit(True)).otherwise(pl.col("x") == 1)':
        pl.when(pl.col("a") > 2).then(pl.lit(True)).otherwise(pl.col("x") == 1),
    'pl.col("tags").list.len() >= 1': pl.col("tags").list.len() >= 1,
    'pl.col("tags").list.eval(pl.element() == "b").list.any()':
        pl.col("tags").list.eval(pl.element() == "b").list.any(),
    'pl.col("x").cast(pl.Float64) / 2 > 1.5': pl.col("x").cast(pl.Float64) / 2 > 1.5,
    'pl.col("b").str.to_lowercase().str.starts_with("z")':
        pl.col("b").str.to_lowercase().str.starts_with("z"),
    'pl.col("b").str.contains("z", literal=True)': pl.col("b").str.contains("z", literal=True),
    'pl.all_horizontal(pl.col("x") > 1, pl.col("a").is_not_null())':
        pl.all_horizontal(pl.col("x") > 1, pl.col("a").is_not_null()),
    'pl.col("x") % 2 == 0': pl.col("x") % 2 == 0,
    '-pl.col("x") ** 2 < -9': -(pl.col("x") ** 2) < -9,
    'pl.col("b").replace({"x": "y"}) == "y"': pl.col("b").replace({"x": "y"}) == "y",
    'pl.col("tags").cast(pl.List(pl.String)).list.contains("a")':
        pl.col("tags").cast(pl.List(pl.String)).list.contains("a"),
}


@pytest.mark.parametrize("text", list(SAME_AS_POLARS))
def test_expressions_select_the_same_rows_as_real_polars(text: str):
    ours = FRAME.filter(parse_polars_expr(text))
    assert ours.equals(FRAME.filter(SAME_AS_POLARS[text]))
    assert 0 < ours.height < FRAME.height, "pick data where the filter matters"


def test_the_filter_step_drops_what_the_expression_rejects():
    step = pipeline('pl.col("chosen").str.len_chars() > 20').steps[0].transform
    out = step(FRAME.lazy(), Context(seed=0)).collect()
    assert out.filter(pl.col(DROP).is_null())["x"].to_list() == [2, 4]


REFUSED = {
    "pl.col('x').__class__.__init__.__globals__['__builtins__']['__import__']('os')":
        "attribute '__class__' is not allowed.*subscript \\['__import__'\\] is not allowed",
    "pl.col('x').__class__": "attribute '__class__' is not allowed",
    "pl.read_csv('/etc/passwd')": "pl.read_csv is not allowed",
    "pl.scan_parquet('/etc/passwd').collect()": "pl.scan_parquet is not allowed",
    "pl.col('a').map_elements(print)": r"\.map_elements is not allowed.*name 'print'",
    "pl.col('a').map_batches(pl.col)": r"\.map_batches is not allowed",
    "pl.col('a').pipe(pl.col)": r"\.pipe is not allowed",
    "pl.col('a').meta.serialize()": r"\.meta is not allowed",
    "pl.col('a').deserialize('/etc/passwd')": r"\.deserialize is not allowed",
    "pl.col('a').inspect()": r"\.inspect is not allowed",
    "pl.col('a').name.map(pl.lit)": r"\.map is not allowed",
    "pl.col(open('/etc/passwd').read())": "name 'open' is not allowed",
    "pl.col('a') > (lambda: 1)()": "lambda is not allowed",
    "pl.col('a').is_in([x for x in (1, 2)])": "a list comprehension is not allowed",
    "pl.col(f'{pl}')": "an f-string is not allowed",
    "pl.col('a')[0] > 1": r"subscript \[0\] is not allowed",
    "pl.col(*['a']) > 1": "'\\*'-unpacking is not allowed",
    "pl.col(**{'name': 'a'}) > 1": "'\\*\\*'-unpacking is not allowed",
    "pl.col('a').sort_by(pl.col('b').str.len_chars).first() > 1": "must be called",
    "pl.col('a').cast(pl.Object)": "pl.Object is not allowed",
    "pl.lit('a' * 10**9) == pl.col('b')": "repeating a string",
    "pl.col('a') > 2 ** 99999999": "constant power too large",
    "pl.col('a') is None": "comparison Is is not allowed",
    "pl.col": "pl.col must be called",
    "pl.col('a') > 1; import os": "not a Python expression",
}


@pytest.mark.parametrize("text", list(REFUSED))
def test_refused_at_pipeline_validation_naming_what(text: str):
    with pytest.raises(PipelineError, match=f"field 'expr': polars expression .* refused: "
                                            f".*{REFUSED[text]}"):
        pipeline(text)


def test_python_that_does_not_use_pl_is_sql_and_fails_there():
    for text, name in (("__import__('os')", "__import__"), ("open('/etc/passwd')", "open")):
        with pytest.raises(PipelineError, match=f"bad SQL expression .*unsupported function "
                                                f"'{name}'"):
            pipeline(text)


def test_sql_expressions_remain_the_other_option():
    step = get("filter")({"expr": "length(chosen) > 20 AND x IN (2, 4, 5)"})
    out = step(FRAME.lazy(), Context(seed=0)).collect()
    assert out.filter(pl.col(DROP).is_null())["x"].to_list() == [2, 4]


def test_refusals_are_value_errors_with_a_reason():
    with pytest.raises(UnsafeExpression, match="name 'os' is not allowed"):
        parse_polars_expr("pl.col('a') > os.getpid()")
    with pytest.raises(UnsafeExpression, match="not a polars expression"):
        parse_polars_expr("pl.String")
