"""`magpie`: instructions from nothing, by letting an aligned chat model continue the bare
pre-query template of its own chat format (docs/methods.md §1).

1. Each of `n` rows samples the template on its own (own cache key and seed), stopping at the
   family's template tokens, at "assistant" and (unless `early_stop: false`) at the first
   newline, as the reference does; the text is stripped and, where the family's scripts did,
   sanitized with the class recorded.
2. With `responses: true` each instruction is answered through the chat template (greedy by
   default, §1.4); a reasoning trace in an answer is kept in `reasoning` (of the last
   answer), and only the answer enters the conversation's later turns.
3. With `turns: T > 1` the conversation grows (§1.5): the next user turn is sampled after the
   rendered history (with Magpie's multi-turn system prompt) plus the family's user header,
   then answered without that system prompt.

Rows carry their provenance: template family, pre-query template, sampling configs and the
generator. Empty instructions are dropped with a reason; the run log counts them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field, model_validator

from transforms._support.magpie_sanitize import sanitize
from transforms._support.magpie_templates import (
    PROBE,
    Family,
    builtin_digest,
    detect_family,
    load_registry,
)
from transforms.generate import answers
from workbench.transform import (
    DROP,
    QUARANTINED,
    Context,
    ModelStep,
    transform,
)

# Magpie's multi-turn system prompt, verbatim with its typos ("Al", "thorough,relevant").
MT_SYSTEM = ("You are a helpful Al assistant. The user will engage in a multi-round conversation "
             "with you, asking initial questions and following up with additional related "
             "questions. Your goal is to provide thorough,relevant and insightful responses to "
             "help the user with their queries.")
FIRST_TOKEN = {"de_markdown": {"first_token_ban": ("#", "##", "###", "####")},
               "flaming": {"first_token_temperature": 1.2}, "none": {}}


class MagpieConfig(ModelStep):
    n: int = Field(ge=1, description="instructions wanted (rows before drops)")
    turns: int = Field(1, ge=1, description="user turns per conversation (> 1 implies responses)")
    template: str | None = Field(None, description="family (llama3, qwen2.5, smollm2, ...); "
                                 "default: detected from the model's chat template")
    templates_file: str | None = Field(None, description="YAML file of extra/overriding families")
    variant: Literal["system_prompt", "math", "code", "translation"] | None = Field(
        None, description="pre-query template variant: Vicuna system prompt or a control task")
    temperature: float | None = Field(None, gt=0, description="default: the family's scripts")
    top_p: float | None = Field(None, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1, description="instruction length cap; "
                                       "default: the family's scripts (2,048; Llama-3.1/3.3 "
                                       "1,024; Gemma-2 512)")
    early_stop: bool | None = Field(None, description='stop at the first "\\n" (reference '
                                    "default on; Llama-3.1/3.3/Gemma-2 scripts turn it off)")
    assistant_stop: bool = Field(True, description='stop at the word "assistant" (reference)')
    sanitize: Literal["auto", "llama3", "gemma2", "off"] = Field(
        "auto", description="Magpie's sanitizer; auto = as the family's scripts ran it")
    first_token: Literal["auto", "none", "de_markdown", "flaming"] = Field(
        "auto", description="first-token logits processor; auto = the family's scripts")
    responses: bool = Field(False, description="also answer each instruction (sft rows)")
    response_temperature: float | None = Field(None, ge=0)
    response_top_p: float | None = Field(None, gt=0, le=1)
    response_max_new_tokens: int | None = Field(None, ge=1, description="answer length cap; "
                                                "default: the family's scripts (4,096; "
                                                "Gemma-2 2,048)")
    followup_max_new_tokens: int = Field(4096, ge=1, description="cap of each later user turn "
                                         "(turns > 1; reference gen_mt.py: 4,096)")
    followup_early_stop: bool = Field(True, description='stop later user turns at the first '
                                      '"\\n" (reference gen_mt.py default)')

    @model_validator(mode="after")
    def _known_template(self) -> MagpieConfig:
        if self.template is not None and self.templates_file is None:
            families = load_registry()
            if self.template not in families:
                raise ValueError(f"unknown template {self.template!r} "
                                 f"(known: {', '.join(sorted(families))})")
        return self

    def output_kind(self, input_kind: str) -> str:
        return "sft" if self.responses or self.turns > 1 else "instruction"


@transform("magpie", scope="global", consumes="none", produces="instruction",
           needs=("generate",), version=f"templates:{builtin_digest()}")
def magpie(frame: pl.LazyFrame, config: MagpieConfig, ctx: Context) -> pl.LazyFrame:
    """Magpie self-synthesis: sample instructions from the bare pre-query template."""
    from workbench.models.base import SamplingParams

    backend = ctx.model(config.model)
    family = _family(config, ctx, backend)
    prefix = family.prefix(config.variant)
    defaults = family.defaults
    shaping = FIRST_TOKEN[_pick(config.first_token, defaults.get("first_token", "none"))]
    if shaping and backend.backend not in ("transformers", "vllm"):
        raise ValueError(f"first_token processors run on the transformers and vllm backends, "
                         f"not {backend.backend!r}; set first_token: none")
    stops = list(family.stop_tokens) + (list(family.assistant_stops) if config.assistant_stop else [])
    early = defaults.get("early_stop", True) if config.early_stop is None else config.early_stop
    if early:
        stops.append("\n")
    ins = SamplingParams(
        temperature=_pick(config.temperature, defaults.get("temperature", 1.0)),
        top_p=_pick(config.top_p, defaults.get("top_p", 1.0)),
        max_new_tokens=_pick(config.max_new_tokens, defaults.get("max_new_tokens", 2048)),
        stop=tuple(stops), seed=ctx.seed, **shaping)
    rows = [f"magpie:{family.name}:{i}" for i in range(config.n)]
    results = ctx.call(config.model, "generate", [prefix] * config.n, ins, row_ids=rows,
                       sample_ids=rows, batch_size=config.batch_size)
    failed = [r is None for r in results]
    raw = [r[0].text.strip() if r else "" for r in results]
    style = _pick(config.sanitize, defaults.get("sanitize", "off"))
    cleaned = [sanitize(text, style) for text in raw]
    generator = str(backend.fingerprint().get("model"))
    out = pl.DataFrame({
        "magpie_index": list(range(config.n)),
        "instruction": [c[0] for c in cleaned],
        "raw_instruction": raw,
        "instruction_sanitize_class_num": [float(c[1]) for c in cleaned],
        "instruction_finish_reason": [r[0].finish_reason if r else None for r in results],
        "template": family.name,
        "pre_query_template": prefix,
    }).with_columns(pl.struct(
        pl.lit(ins.temperature).alias("temperature"), pl.lit(ins.top_p).alias("top_p"),
        pl.lit(ins.max_new_tokens).alias("max_tokens"),
        pl.lit(generator).alias("input_generator"), pl.lit(ins.seed).alias("seed"),
        pl.lit(style).alias("sanitize"),
        pl.lit(_pick(config.first_token, defaults.get("first_token", "none"))).alias(
            "first_token")).alias("gen_input_configs"))
    reason = (pl.when(pl.Series(failed)).then(pl.lit(f"{QUARANTINED} (quarantined)"))
              .when(pl.col("instruction").str.strip_chars() == "")
              .then(pl.lit("magpie: empty instruction")))
    out = out.with_columns(reason.alias(DROP))
    if config.output_kind("none") == "instruction":
        return out.with_columns(_user(pl.col("instruction")).alias("prompt")).lazy()
    return _conversations(out, config, ctx, family, defaults, generator).lazy()


def _conversations(out: pl.DataFrame, config: MagpieConfig, ctx: Context, family: Family,
                   defaults: dict[str, Any], generator: str) -> pl.DataFrame:
    """Answer the instructions, then grow each conversation to `turns` user turns (§1.4-1.5)."""
    from workbench.models.base import SamplingParams

    answer = SamplingParams(
        temperature=_pick(config.response_temperature, defaults.get("response_temperature", 0.0)),
        top_p=_pick(config.response_top_p, defaults.get("response_top_p", 1.0)),
        max_new_tokens=_pick(config.response_max_new_tokens,
                             defaults.get("response_max_new_tokens", 4096)), seed=ctx.seed)
    newline = ("\n",) if config.followup_early_stop else ()
    follow = SamplingParams(temperature=1.0, top_p=1.0,
                            max_new_tokens=config.followup_max_new_tokens,
                            stop=(*family.stop_tokens, *newline), seed=ctx.seed)
    alive = out[DROP].is_null().to_list()
    ids = [f"magpie:{family.name}:{i}" for i in out["magpie_index"]]
    chats: list[list[dict[str, str]]] = [[{"role": "user", "content": text}]
                                         for text in out["instruction"]]
    reasons: list[str | None] = list(out[DROP])
    traces: list[str | None] = [None] * out.height  # of each conversation's latest answer
    # why each generated turn ended (user turns after the first, and answers), in order
    finishes: list[list[str | None]] = [[] for _ in range(out.height)]
    backend = ctx.model(config.model)

    def add_turn(role: str, turn: int, params: SamplingParams, render: Any, empty: str) -> None:
        """One model call per live conversation; its text becomes the next `role` turn, an
        empty answer (or a failed call) ends the conversation with the reason."""
        todo = [i for i, ok in enumerate(alive) if ok]
        keys = [f"{ids[i]}:{role}{turn}" for i in todo]
        got = ctx.call(config.model, "generate", [render(chats[i]) for i in todo], params,
                       row_ids=keys, sample_ids=keys, batch_size=config.batch_size)
        split = answers([r[0] for r in got if r]) if role == "assistant" else []
        parts = iter(split)
        for i, result in zip(todo, got, strict=True):
            text = result[0].text.strip() if result else ""
            finishes[i].append(result[0].finish_reason if result else None)
            if result and role == "assistant":  # the answer goes on; its trace is kept apart
                traces[i], text = next(parts)
                text = text.strip()
            if text:
                chats[i].append({"role": role, "content": text})
            else:
                alive[i], reasons[i] = False, (f"{QUARANTINED} (quarantined)" if result is None
                                               else f"magpie: {empty}")

    def history(chat: list[dict[str, str]]) -> str:
        return backend.render([{"role": "system", "content": MT_SYSTEM}, *chat],
                              add_generation_prompt=False) + family.mt_append_template

    for turn in range(1, config.turns + 1):
        if turn > 1:  # sample the next user turn after the rendered history (§1.5)
            add_turn("user", turn, follow, history, f"empty user turn {turn}")
        add_turn("assistant", turn, answer, lambda chat: chat, f"empty response in turn {turn}")
    prompts = [chat[:-1] if chat and chat[-1]["role"] == "assistant" else chat for chat in chats]
    responses = [chat[-1]["content"] if chat and chat[-1]["role"] == "assistant" else None
                 for chat in chats]
    if any(t is not None for t in traces):
        out = out.with_columns(pl.Series("reasoning", traces, dtype=pl.String))
    if config.turns > 1:  # every generated turn's, so a turn cut off anywhere shows
        out = out.with_columns(pl.Series("turns_finish_reason", finishes,
                                         dtype=pl.List(pl.String)))
    return out.with_columns(
        pl.Series("prompt", prompts, dtype=pl.List(pl.Struct({"role": pl.String,
                                                               "content": pl.String}))),
        pl.Series("response", responses, dtype=pl.String),
        pl.Series("finish_reason", [f[-1] if f and r is not None else None
                                    for f, r in zip(finishes, responses, strict=True)],
                  dtype=pl.String),
        pl.Series(DROP, reasons, dtype=pl.String),
        pl.struct(pl.lit(answer.temperature).alias("temperature"),
                  pl.lit(answer.top_p).alias("top_p"),
                  pl.lit(answer.max_new_tokens).alias("max_tokens"),
                  pl.lit(generator).alias("output_generator")).alias("gen_response_configs"),
    )


def _family(config: MagpieConfig, ctx: Context, backend: Any) -> Family:
    extra = ctx.path(config.templates_file) if config.templates_file else None
    families = load_registry(Path(extra) if extra else None)
    if config.template is not None:
        if config.template not in families:
            raise ValueError(f"unknown template {config.template!r} "
                             f"(known: {', '.join(sorted(families))})")
        return families[config.template]
    if not hasattr(backend, "render"):
        raise ValueError(f"backend {backend.backend!r} cannot render chats to detect the "
                         "template family; set `template:`")
    rendered = backend.render([{"role": "user", "content": PROBE}])
    return detect_family(rendered, families)


def _pick(value: Any, default: Any) -> Any:
    return default if value is None or value == "auto" else value


def _user(text: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit("user").alias("role"), text.alias("content")))
