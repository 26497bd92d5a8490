"""LongPO's training records (docs/methods.md §6.2): `short_to_long` rows grouped per long
context into what the reference's trainer reads, and the message lists it tokenizes."""

from __future__ import annotations

from typing import Any

import polars as pl

from workbench.errors import WorkbenchError

TURN_COLUMNS = ("context_id", "turn", "long_prompt", "short_prompt", "question")
RECORD_FIELDS = ("prompt", "short_prompts", "questions", "chosens", "rejecteds")


def longpo_records(pairs: pl.DataFrame) -> pl.DataFrame:
    """The reference's pre-tokenization records, one per long context: `prompt` (the long
    document), `short_prompts`, `questions`, `chosens`, `rejecteds`, turns in `turn` order.
    A `split` column, if any, follows the context's first turn."""
    extra = [pl.col("split").first()] if "split" in pairs.columns else []
    return (pairs.sort("context_id", "turn", maintain_order=True)
            .group_by("context_id", maintain_order=True)
            .agg(pl.col("long_prompt").first().alias("prompt"),
                 pl.col("short_prompt").alias("short_prompts"),
                 pl.col("question").alias("questions"),
                 pl.col("chosen").alias("chosens"),
                 pl.col("rejected").alias("rejecteds"), *extra))


def to_longpo(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """`--trl longpo`: one record per long context (context_id + RECORD_FIELDS), refused
    with the missing columns named unless the rows come from `short_to_long`."""
    require_step_rows(frame, kind, "longpo", "short_to_long", TURN_COLUMNS)
    return longpo_records(frame)


def require_step_rows(frame: pl.DataFrame, kind: str, layout: str, step: str,
                      needed: tuple[str, ...] | list[str]) -> None:
    """Refuse a `--trl LAYOUT` export of rows that the method's step did not make, naming
    what is missing (the kind, or the columns)."""
    missing = [c for c in needed if c not in frame.columns]
    if kind != "preference" or missing:
        what = f"a {kind} dataset" if kind != "preference" else \
            f"no {', '.join(f'`{c}`' for c in missing)} column"
        raise WorkbenchError(f"--trl {layout} needs the preference rows a `{step}` step writes "
                             f"(columns {', '.join(needed)}); this is {what}")


def longpo_messages(record: dict[str, Any]) -> dict[str, Any]:
    """The chat message lists postprocess_longpo_pair.py tokenizes, for one record.

    `chosen`/`rejected`: one multi-turn long conversation (turn 1's user message is the long
    document + "\\n\\n" + question, later turns the question only), each side's own answers
    as the history. `ref_chosen`/`ref_rejected`: one single-turn short conversation per turn
    (short chunk + "\\n\\n" + question)."""
    out: dict[str, Any] = {"chosen": [], "rejected": [], "ref_chosen": [], "ref_rejected": []}
    for i, question in enumerate(record["questions"]):
        long_user = record["prompt"] + "\n\n" + question if i == 0 else question
        short_user = record["short_prompts"][i] + "\n\n" + question
        for side, answers in (("chosen", record["chosens"]), ("rejected", record["rejecteds"])):
            reply = {"role": "assistant", "content": answers[i]}
            out[side] += [{"role": "user", "content": long_user}, reply]
            out[f"ref_{side}"].append([{"role": "user", "content": short_user}, reply])
    return out
