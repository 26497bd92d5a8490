"""`rationale`: why the chosen response beats the rejected one, in the model's words (Just et
al., "Data-Centric Human Preference Optimization with Rationales", docs/methods.md §5).

The generation prompt shows both responses in a random order (seeded per row and recorded in
`rationale_shown_first`, so no position cue leaks) and states which one is preferred. The
`rationale_prompt` column is the RDPO loader's conditioning text x_rat: by default as the
reference writes it, chosen always "above" (the position leak of §5.4 is the reference's);
`conditioning_order: random` shuffles it, with `rationale_chosen_above` recorded.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import polars as pl
from pydantic import Field

from transforms._support.garbage import garbage
from workbench.transform import (
    DROP,
    QUARANTINED,
    Context,
    ModelStep,
    transform,
)

ASK = {
    "general": "In two or three sentences, explain at a high level why Response {win} is "
               "better than Response {lose}.",
    "detailed": "Explain in detail, point by point, why Response {win} is better than Response "
                "{lose}: compare correctness, helpfulness, completeness and clarity.",
}
SHOWN = ("Here is a conversation and two candidate responses from an AI assistant.\n\n"
         "[Conversation]\n{conversation}\n\n[Response 1]\n{first}\n\n[Response 2]\n{second}\n\n"
         "Human annotators preferred Response {win}. {ask}")


def conditioning_prompt(prompt: str, above: str, below: str) -> str:
    """The reference's x_rat body (role markers are added by the training loader)."""
    return ("Given the prompt:\n" + prompt + "\nWhich of the following assistant's response is "
            "more preferable and strictly follows with the prompt question?\n"
            f'Response above:"{above}"\nor\nResponse below:"{below}"?\n')


class RationaleConfig(ModelStep):
    style: Literal["general", "detailed"] = Field("general", description="orcaratgen / orcaratspec")
    conditioning_order: Literal["reference", "random"] = Field(
        "reference", description="x_rat with chosen above (reference) or in random order")
    temperature: float = Field(0.0, ge=0)
    max_new_tokens: int = Field(160, ge=8)


@transform("rationale", scope="row", consumes="preference", produces="preference",
           needs=("generate",), keeps_content=True)
def rationale(frame: pl.LazyFrame, config: RationaleConfig, ctx: Context) -> pl.LazyFrame:
    """Generate a rationale per pair; empty or looping ones drop the row with the reason."""
    from workbench.models.base import SamplingParams

    data = frame.collect()
    ids = data["id"].to_list()
    chosen_first = [_coin(ctx.seed, i, "shown") for i in ids]
    chosen_above = [True if config.conditioning_order == "reference" else _coin(ctx.seed, i, "x")
                    for i in ids]
    prompts, conditioning = [], []
    for prompt, chosen, rejected, first, above in zip(
            data["prompt"].to_list(), data["chosen"].to_list(), data["rejected"].to_list(),
            chosen_first, chosen_above, strict=True):
        conversation = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)
        win, lose = (1, 2) if first else (2, 1)
        text = SHOWN.format(conversation=conversation, first=chosen if first else rejected,
                            second=rejected if first else chosen, win=win,
                            ask=ASK[config.style].format(win=win, lose=lose))
        prompts.append([{"role": "user", "content": text}])
        user_text = "\n".join(m["content"] for m in prompt if m["role"] == "user")
        conditioning.append(conditioning_prompt(user_text, *((chosen, rejected) if above
                                                            else (rejected, chosen))))
    params = SamplingParams(temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                            seed=ctx.seed)
    results = ctx.call(config.model, "generate", prompts, params, row_ids=ids, sample_ids=ids,
                       batch_size=config.batch_size)
    texts = [r[0].text.strip() if r else None for r in results]
    reasons = [f"{QUARANTINED} (quarantined)" if r is None else
               (f"rationale: {why}" if (why := garbage(t)) else None)
               for r, t in zip(results, texts, strict=True)]
    return data.with_columns(
        pl.Series("rationale", texts, pl.String),
        pl.Series("rationale_finish_reason", [r[0].finish_reason if r else None
                                              for r in results], pl.String),
        pl.Series("rationale_prompt", conditioning, pl.String),
        pl.Series("rationale_shown_first", ["chosen" if f else "rejected" for f in chosen_first],
                  pl.String),
        pl.Series("rationale_chosen_above", chosen_above, pl.Boolean),
        pl.Series(DROP, reasons, pl.String),
    ).lazy()


def _coin(seed: int, row_id: str, salt: str) -> bool:
    """A fair, reproducible coin per row (no dependence on batch or order)."""
    return hashlib.sha256(f"{seed}\0{salt}\0{row_id}".encode()).digest()[0] < 128
