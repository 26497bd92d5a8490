"""Generation throughput of the transformers backend vs calling `model.generate` directly.

Same model object, same prompts, same settings, same process; the two are alternated over
several repeats so drift (thermal, other load) hits both alike. Prints tokens/s of each and
the ratio; the backend's overhead target is under 10% on CPU.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/generation_throughput.py [--sampling]
"""

from __future__ import annotations

import argparse
import statistics
import time

from workbench.models.base import SamplingParams
from workbench.models.transformers_backend import TransformersBackend

QUESTIONS = [
    "What is the capital of France?",
    "Give me three tips for learning a new language.",
    "Explain photosynthesis to a ten-year-old.",
    "Write a short poem about autumn leaves.",
    "How do I make a cup of green tea?",
    "What are the benefits of regular exercise?",
    "Describe a cat in two sentences.",
    "Why is the sky blue?",
    "Suggest a name for a small bakery.",
    "What is the difference between weather and climate?",
    "List four fruits that are rich in vitamin C.",
    "How does a bicycle stay upright?",
    "Summarize the plot of Cinderella in one paragraph.",
    "What should I pack for a weekend hiking trip?",
    "Explain what a prime number is.",
    "Give an example of a polite way to decline an invitation.",
]


def run_backend(backend: TransformersBackend, prompts: list, params: SamplingParams) -> int:
    outs = backend.generate(prompts, params)
    return sum(g.completion_tokens for sample in outs for g in sample)


def run_direct(
    backend: TransformersBackend, prompts: list, params: SamplingParams, collect: list | None = None
) -> int:
    """What a user would write with transformers alone, on the backend's own model object."""
    import torch

    tok, model = backend.tokenizer, backend.model
    side, tok.padding_side = tok.padding_side, "left"
    eos = tok.eos_token_id
    total = 0
    for start in range(0, len(prompts), backend.batch_size):
        chunk = prompts[start : start + backend.batch_size]
        texts = [
            tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in chunk
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        kwargs = {"do_sample": False}
        if params.temperature > 0:
            kwargs = {
                "do_sample": True,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "top_k": 0,
            }
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=params.max_new_tokens, pad_token_id=eos, **kwargs
            )
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            total += row.index(eos) + 1 if eos in row else len(row)
        decoded = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        if collect is not None:
            collect.extend(decoded)
    tok.padding_side = side
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sampling", action="store_true", help="temperature 0.8, top_p 0.95")
    args = parser.parse_args()

    backend = TransformersBackend("embedded", batch_size=args.batch_size)
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS[: args.prompts]]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    if args.sampling:
        params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.8, top_p=0.95)

    # warm-up both paths; greedy outputs must be identical, or the comparison is meaningless
    ours = [s[0].text for s in backend.generate(prompts, params)]
    theirs: list[str] = []
    run_direct(backend, prompts, params, theirs)
    if not args.sampling and ours != theirs:
        raise SystemExit("backend and direct generate disagree on greedy outputs")
    rates: dict[str, list[float]] = {"backend": [], "direct": []}
    for repeat in range(args.repeats):
        order = [("backend", run_backend), ("direct", run_direct)]
        for name, fn in order if repeat % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            tokens = fn(backend, prompts, params)
            rates[name].append(tokens / (time.perf_counter() - t0))

    mode = "sampling" if args.sampling else "greedy"
    print(
        f"{len(prompts)} prompts, batch {args.batch_size}, max_new_tokens "
        f"{args.max_new_tokens}, {mode}, {args.repeats} repeats (median tokens/s)"
    )
    med = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in med.items():
        spread = ", ".join(f"{v:.1f}" for v in rates[name])
        print(f"  {name:8s} {value:8.1f} tok/s   [{spread}]")
    print(f"  ratio backend/direct = {med['backend'] / med['direct']:.3f}")


if __name__ == "__main__":
    main()
