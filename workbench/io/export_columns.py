"""The method columns a preference export keeps, and the RDPO layout.

A method's output is only useful if it reaches the trainer: the rationale of a rationale-
augmented pair is RDPO's whole point, Curry-DPO trains iteration k on each prompt's k-th
easiest pair. So preference exports keep an explicit allow-list of method columns by default
(not every column: ids, finish reasons and generation prompts are the workbench's own), and
`columns="minimal"` keeps prompt/chosen/rejected only.
"""

from __future__ import annotations

import polars as pl

from workbench.errors import WorkbenchError

COLUMN_MODES = ("method", "minimal")

# name -> what a trainer reads it as (listed in the export's card)
METHOD_COLUMNS: dict[str, str] = {
    "chosen_score": "score of the chosen response (pairing step: judge, reward model, density ratio)",
    "rejected_score": "score of the rejected response",
    "margin": "chosen_score - rejected_score",
    "pair_method": "how the pair was made (best_worst, all_pairs:best, ...)",
    "pair_rank": "the pair's rank among its prompt's pairs, 1 = largest margin = easiest",
    "curriculum_iteration": "Curry-DPO: the iteration that trains on this pair (= pair_rank: "
                            "iteration k takes each prompt's k-th easiest pair)",
    "rationale": "why the chosen response is better (rationale step; RDPO's r)",
    "rationale_prompt": "the conditioning text x_rat the rationale is scored under (RDPO)",
    "rationale_chosen_above": "whether x_rat shows the chosen response above the rejected one",
    "ches_score": "CHES similarity of chosen and rejected (higher: likelihood displacement risk)",
    "ln_ches_score": "length-normalised CHES",
    "chosen_passed": "whether the chosen response passed its checker (verify; verified pairs: true)",
    "rejected_passed": "whether the rejected response passed its checker (verified pairs: false)",
    "pass_rate": "share of the prompt's sampled responses that passed (verify; pass@k difficulty)",
    "step_index": "Step-DPO: how many correct steps the prefix holds (the wrong step's 0-based "
                  "index)",
    "prefix": "Step-DPO: the correct steps so far, which chosen and rejected both start with",
}
# columns whose meaning depends on which side is chosen: a human label that swaps the pair
# makes them wrong, so the swap clears them (scores swap with their side; margin flips sign)
SIDE_BOUND = ("rationale", "rationale_prompt", "rationale_chosen_above", "ches_score",
              "ln_ches_score")


def method_columns(frame: pl.DataFrame) -> list[pl.Expr]:
    """The allow-listed method columns `frame` holds, in allow-list order, with
    `curriculum_iteration` derived from `pair_rank`."""
    present = set(frame.columns)
    out = []
    for name in METHOD_COLUMNS:
        if name == "curriculum_iteration":
            if "pair_rank" in present:
                out.append(pl.col("pair_rank").alias(name))
        elif name in present:
            out.append(pl.col(name))
    return out


def cleared_on_swap(columns: list[str], swap: pl.Expr) -> list[pl.Expr]:
    """For pairs a human label swaps: side-bound method columns become null, margin flips."""
    out = [pl.when(swap).then(None).otherwise(pl.col(c)).alias(c)
           for c in SIDE_BOUND if c in columns]
    if "margin" in columns:
        out.append(pl.when(swap).then(-pl.col("margin")).otherwise(pl.col("margin"))
                   .alias("margin"))
    return out


def check_columns_mode(mode: str) -> str:
    if mode not in COLUMN_MODES:
        raise WorkbenchError(f"unknown --columns {mode!r} (choices: {', '.join(COLUMN_MODES)})")
    return mode


def rdpo_rationale(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The rows RDPO can train on (a rationale and its conditioning prompt), and how many
    were left out (e.g. pairs a human label swapped, whose rationale was cleared)."""
    missing = [c for c in ("rationale", "rationale_prompt") if c not in frame.columns]
    if missing:
        raise WorkbenchError(f"--trl rdpo needs the {' and '.join(f'`{c}`' for c in missing)} "
                             "column(s) a `rationale` step writes; this dataset has none")
    kept = frame.filter(pl.col("rationale").is_not_null() & pl.col("rationale_prompt").is_not_null())
    return kept, frame.height - kept.height


def card_lines(columns: list[str]) -> list[str]:
    """The card's section naming each method column the export holds."""
    held = [c for c in columns if c in METHOD_COLUMNS]
    if not held:
        return []
    return ["## Method columns", "",
            *[f"- `{c}`: {METHOD_COLUMNS[c]}" for c in held],
            "", "TRL's DPOTrainer ignores these columns; `--columns minimal` leaves them out.", ""]
