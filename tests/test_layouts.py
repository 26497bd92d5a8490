"""Public dataset layouts: rows written as each dataset card / README documents them, read
through the real importer (some through the real CLI), and their content checked."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import cli

from workbench.errors import InputError
from workbench.io import layouts
from workbench.io.importer import import_path, load


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pl.from_dicts(rows, infer_schema_length=None).write_parquet(path)
    return path


def msgs(*pairs: tuple[str, str]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in pairs]


def roles(prompt: list[dict]) -> list[str]:
    return [m["role"] for m in prompt]


# LLaMA-Factory --------------------------------------------------------------------------------
def test_alpaca_system_and_history_become_earlier_turns(tmp_path: Path):
    rows = [
        {"instruction": "And in French?", "input": "", "output": "Bonjour",
         "system": "You translate.", "history": [["Say hello", "Hello"], ["In German?", "Hallo"]]},
        {"instruction": "Sum these", "input": "2 3", "output": "5", "system": "", "history": []},
    ]
    frame, kind, lineage = load(write_json(tmp_path / "alpaca.json", rows))
    assert (kind, lineage["layout"], frame.height) == ("sft", "alpaca", 2)
    first, second = frame.to_dicts()
    assert first["prompt"] == msgs(("system", "You translate."), ("user", "Say hello"),
                                   ("assistant", "Hello"), ("user", "In German?"),
                                   ("assistant", "Hallo"), ("user", "And in French?"))
    assert first["response"] == "Bonjour"
    assert second["prompt"] == msgs(("user", "Sum these\n2 3"))  # no system, no history


def test_alpaca_preference_and_kto(tmp_path: Path):
    pref = [{"instruction": "Name a prime", "input": "under 10", "chosen": "7", "rejected": "9"},
            {"instruction": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"}]
    frame, kind, lineage = load(write_json(tmp_path / "pref.json", pref))
    assert (kind, lineage["layout"], frame.height) == ("preference", "alpaca-preference", 2)
    assert frame["prompt"][0].to_list() == msgs(("user", "Name a prime\nunder 10"))
    assert frame["chosen"].to_list() == ["7", "Paris"]
    kto = [{"instruction": "2+2?", "input": "", "output": "4", "kto_tag": True},
           {"instruction": "2+2?", "input": "", "output": "5", "kto_tag": False}]
    frame, kind, lineage = load(write_json(tmp_path / "kto.json", kto))
    assert (kind, lineage["layout"]) == ("sft", "alpaca-kto")
    assert frame.select("response", "label").rows() == [("4", True), ("5", False)]
    assert "kto_tag" not in frame.columns


def test_sharegpt_with_system_tools_and_many_turns(tmp_path: Path):
    tools = json.dumps([{"name": "weather", "parameters": {"city": "string"}}])
    rows = [
        {"conversations": [{"from": "human", "value": "Weather in Oslo?"},
                           {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
                           {"from": "observation", "value": '{"temp": -3}'},
                           {"from": "gpt", "value": "It is -3 degrees."}],
         "system": "You can call tools.", "tools": tools},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                           {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Goodbye!"}],
         "system": "", "tools": ""},
    ]
    frame, kind, lineage = load(write_json(tmp_path / "sharegpt.json", rows))
    assert (kind, lineage["layout"], frame.height) == ("sft", "sharegpt", 2)
    tool_row, chat_row = frame.to_dicts()
    assert tool_row["prompt"] == msgs(("system", "You can call tools."), ("user", "Weather in Oslo?"))
    assert roles(tool_row["tool_turns"]) == ["assistant", "tool"]
    assert tool_row["tool_turns"][1]["content"] == '{"temp": -3}'
    assert tool_row["response"] == "It is -3 degrees."
    assert tool_row["tools"] == tools and "tool_turns" in tool_row["import_warning"]
    assert chat_row["prompt"] == msgs(("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye"))
    assert chat_row["response"] == "Goodbye!" and chat_row["tool_turns"] is None


def test_sharegpt_preference_and_kto(tmp_path: Path):
    rows = [{"conversations": [{"from": "human", "value": "Tell a joke"},
                               {"from": "gpt", "value": "Why did..."},
                               {"from": "human", "value": "Another one"}],
             "chosen": {"from": "gpt", "value": "A pun"},
             "rejected": {"from": "gpt", "value": "No."},
             "system": "Be funny."}]
    frame, kind, lineage = load(write_json(tmp_path / "pref.json", rows))
    assert (kind, lineage["layout"]) == ("preference", "sharegpt-preference")
    row = frame.row(0, named=True)
    assert row["prompt"] == msgs(("system", "Be funny."), ("user", "Tell a joke"),
                                 ("assistant", "Why did..."), ("user", "Another one"))
    assert (row["chosen"], row["rejected"]) == ("A pun", "No.")
    kto = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Go away"}],
            "kto_tag": False}]
    frame, kind, lineage = load(write_json(tmp_path / "kto.json", kto))
    assert (kind, lineage["layout"], frame["label"].to_list()) == ("sft", "sharegpt-kto", [False])


def test_openai_messages_by_name_through_cli(tmp_path: Path):
    rows = [{"messages": msgs(("system", "Terse."), ("user", "2+2?"), ("assistant", "4"))},
            {"messages": msgs(("user", "Hi"), ("assistant", "Hey"), ("user", "Name?"),
                              ("assistant", "Bot"))}]
    path = write_jsonl(tmp_path / "openai.jsonl", rows)
    result = cli("import", str(path), "--name", "chat", "--layout", "openai",
                 workspace=tmp_path / "ws")
    assert result.returncode == 0, result.stderr
    assert "2 sft rows" in result.stdout and "layout: messages" in result.stdout
    from workbench.workspace import Workspace

    frame = Workspace(tmp_path / "ws").read("chat")
    assert roles(frame["prompt"][0].to_list()) == ["system", "user"]
    assert roles(frame["prompt"][1].to_list()) == ["user", "assistant", "user"]
    assert frame["response"].to_list() == ["4", "Bot"]


def test_real_kto_demo_keeps_boolean_labels(shared: Path):
    raw = json.loads((shared / "llama_factory/kto_en_demo.json").read_text())
    frame, kind, lineage = load(shared / "llama_factory/kto_en_demo.json")
    assert (kind, lineage["layout"], frame.height) == ("sft", "kto", len(raw))
    assert frame.schema["label"] == pl.Boolean
    assert frame["label"].to_list() == [r["label"] for r in raw]
    multi = next(i for i, r in enumerate(raw) if len(r["messages"]) > 2)
    assert frame["prompt"][multi].to_list() == raw[multi]["messages"][:-1]
    assert frame["response"][multi] == raw[multi]["messages"][-1]["content"]


def test_trl_unpaired_standard_and_conversational(tmp_path: Path):
    standard = [{"prompt": "The sky is", "completion": " blue.", "label": True},
                {"prompt": "The sky is", "completion": " green.", "label": False}]
    frame, kind, lineage = load(write_jsonl(tmp_path / "std.jsonl", standard))
    assert (kind, lineage["layout"]) == ("sft", "kto")
    assert frame.select("response", "label").rows() == [(" blue.", True), (" green.", False)]
    conversational = [{"prompt": msgs(("system", "Be kind."), ("user", "Hi")),
                       "completion": msgs(("assistant", "Hello!")), "label": True}]
    frame, _, lineage = load(write_parquet(tmp_path / "conv.parquet", conversational))
    assert lineage["layout"] == "kto"
    assert frame.row(0, named=True)["prompt"] == msgs(("system", "Be kind."), ("user", "Hi"))
    assert frame["response"].to_list() == ["Hello!"]


# UltraFeedback ----------------------------------------------------------------------------------
def _uf_completion(model: str, response: str, overall: float, fine: float) -> dict:
    rating = {"Rating": "4", "Rationale": "fine"}
    return {"model": model, "principle": "helpfulness",
            "custom_system_prompt": f"As {model}, be helpful.", "response": response,
            "annotations": {"instruction_following": rating, "honesty": rating,
                            "truthfulness": {**rating, "Type": ["0"], "Rationale For Rating": "ok"},
                            "helpfulness": {**rating, "Type": ["1"], "Rationale For Rating": "ok"}},
            "critique": f"critique of {model}", "overall_score": overall, "fine-grained_score": fine}


def test_ultrafeedback_raw_becomes_candidates(tmp_path: Path):
    rows = [{"source": "evol_instruct", "instruction": "Explain recursion.",
             "models": ["gpt-4", "alpaca-7b"],
             "completions": [_uf_completion("gpt-4", "A function calling itself.", 8.5, 4.75),
                             _uf_completion("alpaca-7b", "Loops.", 3.0, 2.0)],
             "correct_answers": ["None"], "incorrect_answers": ["None"]}]
    frame, kind, lineage = load(write_jsonl(tmp_path / "uf.jsonl", rows))
    assert (kind, lineage["layout"], frame.height) == ("candidates", "ultrafeedback", 1)
    row = frame.row(0, named=True)
    assert row["prompt"] == msgs(("user", "Explain recursion."))
    assert row["responses"] == ["A function calling itself.", "Loops."]
    assert row["scores"] == [8.5, 3.0] and row["fine_grained_scores"] == [4.75, 2.0]
    assert row["models"] == ["gpt-4", "alpaca-7b"]
    assert row["system_prompts"] == ["As gpt-4, be helpful.", "As alpaca-7b, be helpful."]
    assert row["annotations"][0]["honesty"]["Rating"] == "4"
    assert row["source"] == "evol_instruct" and "completions" not in frame.columns
    # the same rows as a Hugging Face save_to_disk folder convert the same way
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "uf_hf"))
    from_hf, _, hf_lineage = load(tmp_path / "uf_hf")
    assert hf_lineage["layout"] == "ultrafeedback"
    assert from_hf.select("id", "responses", "scores", "fine_grained_scores").rows() == \
        frame.select("id", "responses", "scores", "fine_grained_scores").rows()


def test_ultrafeedback_binarized_keeps_scores(tmp_path: Path):
    rows = [{"prompt": "Explain recursion.", "prompt_id": "p1",
             "chosen": msgs(("user", "Explain recursion."), ("assistant", "Self-reference.")),
             "rejected": msgs(("user", "Explain recursion."), ("assistant", "Loops.")),
             "messages": msgs(("user", "Explain recursion."), ("assistant", "Self-reference.")),
             "score_chosen": 8.5, "score_rejected": 3.0}]
    frame, kind, lineage = load(write_parquet(tmp_path / "ufb.parquet", rows))
    assert (kind, lineage["layout"]) == ("preference", "trl-preference")
    row = frame.row(0, named=True)
    assert row["prompt"] == msgs(("user", "Explain recursion."))
    assert (row["chosen"], row["rejected"]) == ("Self-reference.", "Loops.")
    assert (row["chosen_score"], row["rejected_score"]) == (8.5, 3.0)
    assert "score_chosen" not in frame.columns


# HelpSteer2 -------------------------------------------------------------------------------------
HS_MULTI = "What is 2+2?\n<extra_id_1>Assistant\n4\n<extra_id_1>User\nAnd times 3?"


def test_helpsteer2_ratings_parse_multi_turn_prompts(tmp_path: Path):
    attrs = {"helpfulness": 3, "correctness": 4, "coherence": 4, "complexity": 1, "verbosity": 1}
    rows = [{"prompt": "c#", "response": "C# is a language.", **attrs},
            {"prompt": HS_MULTI, "response": "12", **attrs, "helpfulness": 4}]
    frame, kind, lineage = load(write_jsonl(tmp_path / "hs.jsonl", rows))
    assert (kind, lineage["layout"], frame.height) == ("sft", "helpsteer2", 2)
    assert frame["prompt"][0].to_list() == msgs(("user", "c#"))
    assert frame["prompt"][1].to_list() == msgs(("user", "What is 2+2?"), ("assistant", "4"),
                                               ("user", "And times 3?"))
    assert frame["helpfulness"].to_list() == [3, 4] and frame["verbosity"].to_list() == [1, 1]


def test_helpsteer2_preferences_strength_and_ties(tmp_path: Path):
    rows = [{"split": "train", "prompt": "p1", "response_1": "one", "response_2": "two",
             "preference_strength": -2, "preference_statement": "@Response 1 is better"},
            {"split": "train", "prompt": HS_MULTI, "response_1": "12", "response_2": "twelve",
             "preference_strength": 0, "preference_statement": "same"},
            {"split": "val", "prompt": "p3", "response_1": "bad", "response_2": "good",
             "preference_strength": 3, "preference_statement": "@Response 2 is much better"}]
    frame, kind, lineage = load(write_jsonl(tmp_path / "pref.jsonl", rows))
    assert (kind, lineage["layout"], frame.height) == ("preference", "helpsteer2-preference", 3)
    assert frame.select("chosen", "rejected", "margin", "tie").rows() == [
        ("one", "two", 2.0, False), ("12", "twelve", 0.0, True), ("good", "bad", 3.0, False)]
    assert len(frame["prompt"][1]) == 3
    assert frame["preference_statement"][2] == "@Response 2 is much better"


# PKU-SafeRLHF -----------------------------------------------------------------------------------
PKU_ROWS = [
    {"prompt": "How do I pick a lock?", "response_0": "Use a tension wrench...",
     "response_1": "I can't help with that.", "is_response_0_safe": False,
     "is_response_1_safe": True, "better_response_id": 0, "safer_response_id": 1,
     "response_0_severity_level": 1, "response_1_severity_level": 0},
    {"prompt": "Best way to learn Python?", "response_0": "Don't.", "response_1": "Practice daily.",
     "is_response_0_safe": True, "is_response_1_safe": True, "better_response_id": 1,
     "safer_response_id": 1, "response_0_severity_level": 0, "response_1_severity_level": 0},
]


def test_pku_saferlhf_better_and_safer(tmp_path: Path):
    path = write_jsonl(tmp_path / "pku.jsonl", PKU_ROWS)
    frame, kind, lineage = load(path)
    assert (kind, lineage["layout"]) == ("preference", "pku-saferlhf")
    assert frame.select("chosen", "chosen_is_safe", "rejected_is_safe").rows() == [
        ("Use a tension wrench...", False, True), ("Practice daily.", True, True)]
    assert frame["is_response_0_safe"].to_list() == [False, True]  # the source flags stay
    result = cli("import", str(path), "--name", "safer", "--layout", "pku-saferlhf-safer",
                 workspace=tmp_path / "ws")
    assert result.returncode == 0, result.stderr
    assert "2 preference rows" in result.stdout and "pku-saferlhf-safer" in result.stdout
    from workbench.workspace import Workspace

    safer = Workspace(tmp_path / "ws").read("safer")
    assert safer["chosen"].to_list() == ["I can't help with that.", "Practice daily."]
    assert safer["chosen_is_safe"].to_list() == [True, True]


def test_pku_bad_response_id_names_line_and_field(tmp_path: Path):
    rows = [PKU_ROWS[0], {**PKU_ROWS[1], "better_response_id": 2}]
    path = write_jsonl(tmp_path / "pku.jsonl", rows)
    with pytest.raises(InputError, match=r"pku\.jsonl, line 2: field 'better_response_id' is not 0 or 1"):
        load(path)


# Chatbot Arena ---------------------------------------------------------------------------------
def _battle(winner: str, a: list[tuple[str, str]], b: list[tuple[str, str]], **extra) -> dict:
    return {"question_id": f"q-{winner}", "model_a": "vicuna-13b", "model_b": "koala-13b",
            "winner": winner, "judge": "arena_user_1", "conversation_a": msgs(*a),
            "conversation_b": msgs(*b), "turn": sum(r == "user" for r, _ in a),
            "anony": True, "language": "English", "tstamp": 1682351591.1322, **extra}


def test_chatbot_arena_winner_ties_and_multi_turn(tmp_path: Path):
    q = ("user", "What is the capital of Peru?")
    rows = [
        _battle("model_a", [q, ("assistant", "Lima.")], [q, ("assistant", "Cusco.")]),
        _battle("model_b", [q, ("assistant", "Paris?")], [q, ("assistant", "Lima, Peru.")]),
        _battle("tie", [q, ("assistant", "Lima")], [q, ("assistant", "It's Lima")]),
        _battle("tie (bothbad)", [q, ("assistant", "Quito")], [q, ("assistant", "Bogota")]),
        _battle("model_b",
                [("user", "Hi"), ("assistant", "Hello from A"), ("user", "Tell a joke")],
                [("user", "Hi"), ("assistant", "Hello from B"), ("user", "Tell a joke")]),
    ]
    rows[4]["conversation_a"].append({"role": "assistant", "content": "A's joke"})
    rows[4]["conversation_b"].append({"role": "assistant", "content": "B's joke"})
    path = write_json(tmp_path / "arena.json", rows)
    frame, kind, lineage = load(path)
    assert (kind, lineage["layout"], frame.height) == ("preference", "chatbot-arena", 5)
    got = frame.select("chosen", "rejected", "chosen_model", "rejected_model", "tie", "both_bad").rows()
    assert got == [
        ("Lima.", "Cusco.", "vicuna-13b", "koala-13b", False, False),
        ("Lima, Peru.", "Paris?", "koala-13b", "vicuna-13b", False, False),
        ("Lima", "It's Lima", "vicuna-13b", "koala-13b", True, False),
        ("Quito", "Bogota", "vicuna-13b", "koala-13b", True, True),
        ("B's joke", "A's joke", "koala-13b", "vicuna-13b", False, False),
    ]
    assert frame["prompt"][0].to_list() == msgs(q)
    # multi-turn: a's history is the prompt, and the differing histories are flagged
    assert frame["prompt"][4].to_list() == msgs(("user", "Hi"), ("assistant", "Hello from A"),
                                               ("user", "Tell a joke"))
    assert frame["import_warning"].to_list()[:4] == [None] * 4
    assert "differ" in frame["import_warning"][4]
    assert frame["turn"].to_list() == [1, 1, 1, 1, 2]


def test_chatbot_arena_unknown_winner_is_an_error(tmp_path: Path):
    q = ("user", "Hi")
    rows = [_battle("model_a", [q, ("assistant", "a")], [q, ("assistant", "b")]),
            _battle("draw", [q, ("assistant", "a")], [q, ("assistant", "b")])]
    result = cli("import", str(write_json(tmp_path / "arena.json", rows)), "--name", "a",
                 "--layout", "chatbot-arena", workspace=tmp_path / "ws")
    assert result.returncode == 1
    assert "arena.json, record 1: field 'winner' is not model_a, model_b, tie" in result.stderr


# SHP ---------------------------------------------------------------------------------------------
def test_shp_labels_pick_the_preferred_comment(tmp_path: Path):
    rows = [{"post_id": "qt3nxl", "domain": "askculinary_train", "upvote_ratio": 0.98,
             "history": "Best way to disassemble raspberries?", "c_root_id_A": "hkh25sc",
             "c_root_id_B": "hkh25lp", "created_at_utc_A": 1636822112,
             "created_at_utc_B": 1636822110, "score_A": 340, "score_B": 166,
             "human_ref_A": "Pectinex!", "human_ref_B": "Freeze them.", "labels": 1,
             "seconds_difference": 2.0, "score_ratio": 2.048},
            {"post_id": "x2", "domain": "askculinary_train", "upvote_ratio": 0.9,
             "history": "Salt pasta water?", "c_root_id_A": "a", "c_root_id_B": "b",
             "created_at_utc_A": 1, "created_at_utc_B": 2, "score_A": 3, "score_B": 10,
             "human_ref_A": "No.", "human_ref_B": "Yes, generously.", "labels": 0,
             "seconds_difference": 1.0, "score_ratio": 3.33}]
    frame, kind, lineage = load(write_jsonl(tmp_path / "shp.jsonl", rows))
    assert (kind, lineage["layout"]) == ("preference", "shp")
    assert frame.select("chosen", "rejected", "chosen_score", "rejected_score").rows() == [
        ("Pectinex!", "Freeze them.", 340.0, 166.0), ("Yes, generously.", "No.", 10.0, 3.0)]
    assert frame["prompt"][1].to_list() == msgs(("user", "Salt pasta water?"))
    assert frame["c_root_id_A"].to_list() == ["hkh25sc", "a"]  # other columns keep their case


# Nectar ------------------------------------------------------------------------------------------
def test_nectar_ranked_answers_become_scored_candidates(tmp_path: Path):
    rows = [{"prompt": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Name three fruits\n\nAssistant:",
             "answers": [{"answer": "Apple, pear, plum", "model": "gpt-4", "rank": 1.0},
                         {"answer": "Carrot", "model": "llama-2-7b-chat", "rank": 3.0},
                         {"answer": "Apple", "model": "gpt-3.5-turbo", "rank": 2.0}],
             "turns": 2, "num_responses": 3, "source": ["sharegpt"], "good_natured": True}]
    frame, kind, lineage = load(write_parquet(tmp_path / "nectar.parquet", rows))
    assert (kind, lineage["layout"]) == ("candidates", "nectar")
    row = frame.row(0, named=True)
    assert row["prompt"] == msgs(("user", "Hi there"), ("assistant", "Hello!"),
                                 ("user", "Name three fruits"))
    assert row["responses"] == ["Apple, pear, plum", "Carrot", "Apple"]
    assert row["models"] == ["gpt-4", "llama-2-7b-chat", "gpt-3.5-turbo"]
    assert row["ranks"] == [1, 3, 2] and row["scores"] == [3.0, 1.0, 2.0]
    assert row["good_natured"] is True


# column names in any case ----------------------------------------------------------------------
def test_column_names_match_case_insensitively(tmp_path: Path, ws):
    alpaca = [{"Instruction": "Add", "Input": "1 and 2", "Output": "3"}]
    frame, kind, lineage = load(write_json(tmp_path / "a.json", alpaca))
    assert (kind, lineage["layout"]) == ("sft", "alpaca")
    assert frame["prompt"][0].to_list() == msgs(("user", "Add\n1 and 2"))
    pref = [{"Prompt": "Q?", "Chosen": "good", "REJECTED": "bad", "Source": "x"}]
    version = import_path(ws, write_jsonl(tmp_path / "p.jsonl", pref), "p")
    assert (version.kind, version.lineage["import"]["layout"]) == ("preference", "trl-preference")
    assert ws.read("p").select("chosen", "rejected", "Source").rows() == [("good", "bad", "x")]


def test_columns_differing_only_by_case_are_an_error(tmp_path: Path):
    rows = [{"prompt": "Q?", "chosen": "a", "Chosen": "b", "rejected": "c"}]
    path = write_jsonl(tmp_path / "clash.jsonl", rows)
    with pytest.raises(InputError, match="'chosen' and 'Chosen' differ only by case"):
        load(path)
    # --map resolves it: the other spelling moves aside, nothing is merged
    frame, _, _ = load(path, mapping={"chosen_alt": "Chosen"})
    assert frame.select("chosen", "chosen_alt").rows() == [("a", "b")]


def test_map_finds_a_column_in_another_case(tmp_path: Path):
    rows = [{"Question": "2+2?", "Reply": "4", "Prompt": "ignored"}]
    frame, kind, _ = load(write_jsonl(tmp_path / "q.jsonl", rows),
                          mapping={"prompt": "question", "response": "REPLY"})
    assert kind == "sft"
    assert frame["prompt"][0].to_list() == msgs(("user", "2+2?"))
    assert frame.select("response", "prompt_original").rows() == [("4", "ignored")]


# names and errors --------------------------------------------------------------------------------
def test_every_layout_is_nameable():
    names = layouts.names()
    for name in ("alpaca", "alpaca-preference", "alpaca-kto", "sharegpt", "sharegpt-preference",
                 "sharegpt-kto", "messages", "kto", "ultrafeedback", "helpsteer2",
                 "helpsteer2-preference", "pku-saferlhf", "pku-saferlhf-safer", "chatbot-arena",
                 "shp", "nectar", "trl-preference", "hh-rlhf", "candidates"):
        assert name in names
        assert layouts.by_name(name).name == name
    assert layouts.by_name("openai").name == "messages"
    with pytest.raises(InputError, match="unknown layout 'nope'"):
        layouts.by_name("nope")


def test_named_layout_reports_missing_columns(tmp_path: Path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "a", "response": "b"}])
    with pytest.raises(InputError, match="layout shp needs the column.*history"):
        load(path, layout="shp")


def test_kto_label_that_is_not_boolean_names_the_record(tmp_path: Path):
    rows = [{"prompt": "a", "completion": "b", "label": "true"},
            {"prompt": "c", "completion": "d", "label": "maybe"}]
    path = write_json(tmp_path / "kto.json", rows)
    with pytest.raises(InputError, match=r"kto\.json, record 1: field 'label' is null or not a boolean"):
        load(path, layout="kto")
