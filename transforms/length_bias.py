"""`length_bias`: how strongly a preference dataset rewards length (docs/methods.md §7.6).

Fits AlpacaEval's length-controlled GLM on the pairs, both ways round (no intercept):
logit P(A preferred) = φ · tanh((len_A − len_B) / sd), and reports φ with a bootstrap
interval over prompts, the share of pairs whose chosen response is longer, and the preference
probability at a +1 SD length advantage. Nothing is dropped; the report goes to the run log
and the dataset card (`workbench report length-bias NAME` prints it for any dataset).
"""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import Field

from workbench.algorithms.length_bias import report
from workbench.transform import Context, StepConfig, transform


class LengthBiasConfig(StepConfig):
    unit: Literal["chars", "words"] = Field("chars", description="length in characters "
                                            "(AlpacaEval) or whitespace-separated words")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples of the prompts")
    include_reasoning: bool = Field(False, description="fit on answer plus reasoning trace "
                                    "length (default: the answer; traces are reported apart)")


@transform("length_bias", scope="global", consumes="preference", keeps_content=True)
def length_bias(frame: pl.LazyFrame, config: LengthBiasConfig, ctx: Context) -> pl.LazyFrame:
    """Rows pass through unchanged; the fit is the step's report."""
    data = frame.collect()
    ctx.report(report(data, config.unit, config.bootstrap, ctx.seed,
                      config.include_reasoning))
    return data.lazy()
