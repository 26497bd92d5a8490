"""`generate`: the model answers each prompt (SFT responses, or n candidates per prompt)."""

from __future__ import annotations

import polars as pl
from pydantic import Field, model_validator

from workbench.transform import DROP, QUARANTINED, Context, StepConfig, transform


class GenerateConfig(StepConfig):
    model: str = Field("default", description="a name under the pipeline's `models:`")
    n: int = Field(1, ge=1, description="samples per prompt; n > 1 makes candidates")
    temperature: float = Field(0.0, ge=0, description="0 is greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list, description="stop strings")
    seed: int | None = Field(None, description="defaults to the pipeline seed")
    batch_size: int = Field(8, ge=1, description="prompts per model call")

    @model_validator(mode="after")
    def _samples_differ(self) -> GenerateConfig:
        if self.n > 1 and self.temperature == 0:
            raise ValueError(f"n={self.n} samples at temperature 0 would all be the same greedy "
                             "answer: set temperature > 0 (e.g. 0.8) or n: 1")
        return self

    @property
    def kind(self) -> str:
        return "sft" if self.n == 1 else "candidates"


@transform("generate", scope="row", consumes="instruction", produces="sft",
           needs=("generate",))
def generate(frame: pl.LazyFrame, config: GenerateConfig, ctx: Context) -> pl.LazyFrame:
    """Chat-template each prompt, sample n replies; a failed call quarantines its row.

    Rows are sampled independently (keyed by row id), so two rows with the same prompt get
    their own samples at temperature > 0.
    """
    from workbench.models.base import SamplingParams

    data = frame.collect()
    params = SamplingParams(n=config.n, temperature=config.temperature, top_p=config.top_p,
                            max_new_tokens=config.max_new_tokens, stop=tuple(config.stop),
                            seed=ctx.seed if config.seed is None else config.seed)
    ids = data["id"].to_list()
    results = ctx.call(config.model, "generate", data["prompt"].to_list(), params,
                       row_ids=ids, sample_ids=ids, batch_size=config.batch_size)
    ok = [r is not None for r in results]
    samples = [r or [] for r in results]
    texts = [[g.text for g in gens] for gens in samples]
    columns = {
        "finish_reason": [[g.finish_reason for g in gens] for gens in samples],
        "completion_tokens": [[g.completion_tokens for g in gens] for gens in samples],
    }
    if config.n == 1:
        out = data.with_columns(
            pl.Series("response", [t[0] if t else None for t in texts], pl.String),
            *[pl.Series(k, [v[0] if v else None for v in vals]) for k, vals in columns.items()])
    else:
        out = data.with_columns(pl.Series("responses", texts, pl.List(pl.String)),
                                *[pl.Series(k, vals) for k, vals in columns.items()])
    reason = pl.when(~pl.Series(ok)).then(pl.lit(f"{QUARANTINED} (quarantined)"))
    if DROP in out.columns:
        reason = pl.coalesce(pl.col(DROP), reason)
    return out.with_columns(reason.alias(DROP)).lazy()
