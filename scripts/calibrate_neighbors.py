"""Calibrate `magpie_neighbors`' repeat threshold of one encoder against the reference's.

Magpie flags two instructions as repeats when the squared L2 distance of their
all-mpnet-base-v2 unit embeddings is below 0.05. Another encoder spreads distances
differently, so the same number flags other pairs. This measures, on real instructions,
which threshold of the other encoder flags the same pairs:

- every distinct pair of the texts (exact duplicates after case and whitespace folding are
  removed first: every encoder puts them at 0) gets both encoders' squared L2 distance;
- `quantile`: the threshold under which the encoder finds as many pairs as the reference
  does under 0.05 (the same share of pairs);
- `rows`: the threshold under which as many rows have a repeat (nearest-neighbour distance)
  as under the reference;
- `best_f1`: the threshold whose flagged pairs agree best with the reference's (F1), and
  the agreement at each choice.

Natural instruction sets hold few near-duplicates, so `--perturb N` measures instead on N
real instructions and light edits of each (punctuation, case, a polite prefix, a word
dropped or swapped...), comparing each original with its edits.

Usage (texts: JSONL/JSON files; the first user turn of each record is used):
    python scripts/calibrate_neighbors.py --reference PATH/all-mpnet-base-v2 \\
        --encoder embedded FILE... > calibration.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_THRESHOLD = 0.05


def first_user_turn(record: Any) -> str | None:
    """The instruction of one record in the common layouts (prompt/instruction/question,
    ShareGPT `conversations`, chat `messages`, HH `chosen` transcripts)."""
    if isinstance(record, str):
        return record
    for key in ("instruction", "prompt", "question", "turns"):
        value = record.get(key)
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str) and value.strip():
            return value
    for key in ("conversations", "messages"):
        for turn in record.get(key) or []:
            if turn.get("from", turn.get("role")) in ("human", "user"):
                return turn.get("value", turn.get("content"))
    chosen = record.get("chosen")
    if isinstance(chosen, str) and "\n\nHuman: " in chosen:
        return chosen.split("\n\nHuman: ")[1].split("\n\nAssistant:")[0]
    return None


def read_texts(paths: list[Path]) -> list[str]:
    texts: list[str] = []
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            raw = f.read()
        records = (json.loads(raw) if raw.lstrip().startswith("[")
                   else [json.loads(line) for line in raw.splitlines() if line.strip()])
        texts += [t.strip() for t in map(first_user_turn, records) if t and t.strip()]
    seen: set[str] = set()
    distinct = []
    for text in texts:
        key = " ".join(text.lower().split())
        if key not in seen:
            seen.add(key)
            distinct.append(text)
    return distinct


def pair_distances(vectors: np.ndarray) -> np.ndarray:
    """Squared L2 distances of every distinct pair (upper triangle), unit vectors."""
    sims = vectors @ vectors.T
    upper = np.triu_indices(len(vectors), k=1)
    return np.maximum(2.0 - 2.0 * sims[upper], 0.0).astype(np.float64)


def nearest(vectors: np.ndarray) -> np.ndarray:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return np.maximum(2.0 - 2.0 * sims.max(axis=1), 0.0)


def f1(flagged: np.ndarray, truth: np.ndarray) -> float:
    both = int((flagged & truth).sum())
    return 2 * both / max(int(flagged.sum()) + int(truth.sum()), 1)


def calibrate(ref: np.ndarray, enc: np.ndarray) -> dict[str, Any]:
    """Both encoders' unit vectors of the same texts: every distinct pair is compared."""
    ref_rows = int((nearest(ref) < REFERENCE_THRESHOLD).sum())
    return {"texts": len(ref), **match(pair_distances(ref), pair_distances(enc),
                                       (ref_rows, np.sort(nearest(enc))))}


def match(ref_pairs: np.ndarray, enc_pairs: np.ndarray,
          rows: tuple[int, np.ndarray] | None = None) -> dict[str, Any]:
    """The encoder's thresholds that flag what the reference's 0.05 flags among these pairs
    (by count, by rows with a repeat when `rows` = (reference's count, encoder's sorted
    nearest-neighbour distances) is given, and by agreement), and each one's agreement."""
    truth = ref_pairs < REFERENCE_THRESHOLD
    n_true = int(truth.sum())
    ordered = np.sort(enc_pairs)
    picks: dict[str, float | None] = {
        "reference_0.05": REFERENCE_THRESHOLD,
        "quantile": float((ordered[n_true - 1] + ordered[n_true]) / 2) if n_true else None}
    if rows is not None:
        ref_rows, enc_near = rows
        picks["rows"] = (float((enc_near[ref_rows - 1] + enc_near[ref_rows]) / 2)
                         if ref_rows else None)
    grid = np.round(np.arange(0.01, 0.3001, 0.0025), 4)
    scores = [f1(enc_pairs < t, truth) for t in grid]
    picks["best_f1"] = float(grid[int(np.argmax(scores))])
    at_each = {}
    for name, t in picks.items():
        if t is None:
            continue
        at_each[name] = {"pairs": int((enc_pairs < t).sum()),
                         "f1_vs_reference": round(f1(enc_pairs < t, truth), 4)}
        if rows is not None:
            at_each[name]["rows"] = int((rows[1] < t).sum())
    out: dict[str, Any] = {"pairs": len(ref_pairs), "reference_pairs_under_0.05": n_true}
    if rows is not None:
        out["reference_rows_with_a_repeat"] = rows[0]
    return {**out, "thresholds": picks, "at_each": at_each,
            "f1_curve": {float(t): round(v, 4) for t, v in zip(grid, scores, strict=True)
                         if round(t * 100, 4) % 1 == 0}}


def variants(text: str) -> list[str]:
    """Light edits of one instruction that a dedup should mostly call the same: punctuation,
    case, a polite prefix or suffix, a word dropped, doubled or swapped, the tail cut."""
    words = text.split()
    mid = len(words) // 2
    return [
        text.rstrip(".?!") + ("?" if text.rstrip().endswith(".") else "."),
        text.lower(),
        "Please " + text[0].lower() + text[1:],
        text + " Thanks!",
        text.replace(",", ""),
        " ".join(words[:mid] + words[mid + 1:]),
        " ".join(words[:mid] + [words[mid]] + words[mid:]),
        " ".join(words[:mid - 1] + [words[mid], words[mid - 1]] + words[mid + 1:]),
        " ".join(words[: max(3, int(len(words) * 0.8))]),
    ]


def perturbed(texts: list[str], n: int) -> tuple[list[str], list[tuple[int, int]]]:
    """`n` texts of 6 to 40 words (a fixed, source-mixed pick: by SHA-1 of the text), each
    followed by its variants; the (original, variant) index pairs."""
    import hashlib

    fit = [t for t in texts if 6 <= len(t.split()) <= 40]
    fit.sort(key=lambda t: hashlib.sha1(t.encode()).hexdigest())
    out: list[str] = []
    pairs: list[tuple[int, int]] = []
    for text in fit[:n]:
        base = len(out)
        edits = [v for v in dict.fromkeys(variants(text)) if v != text]
        out += [text, *edits]
        pairs += [(base, base + 1 + k) for k in range(len(edits))]
    return out, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="all-mpnet-base-v2 folder or name")
    parser.add_argument("--encoder", default="embedded", help="the encoder to calibrate")
    parser.add_argument("--perturb", type=int, default=0, help="instead of all pairs: this "
                        "many texts and their light edits (original-edit pairs)")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    from workbench.models.embeddings import embed

    texts = read_texts(args.files)
    result: dict[str, Any] = {"reference": args.reference, "encoder": args.encoder,
                              "files": [str(f) for f in args.files]}
    if args.perturb:
        texts, pairs = perturbed(texts, args.perturb)
        print(f"{args.perturb} texts, {len(pairs)} edited copies", file=sys.stderr)
        ref = embed(texts, model=args.reference, batch_size=32)
        enc = embed(texts, model=args.encoder, batch_size=64)
        a, b = np.array(pairs).T
        distance = lambda v: np.maximum(2.0 - 2.0 * (v[a] * v[b]).sum(axis=1), 0.0)  # noqa: E731
        result |= {"mode": f"perturbed ({args.perturb} texts)",
                   **match(distance(ref), distance(enc))}
    else:
        print(f"{len(texts)} distinct texts", file=sys.stderr)
        ref = embed(texts, model=args.reference, batch_size=32)
        enc = embed(texts, model=args.encoder, batch_size=64)
        result |= {"mode": "all pairs", **calibrate(ref, enc)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
