"""`workbench loop`: a bad loop file names its field; data/loops/spin_tiny.yaml runs two SPIN
rounds on the tiny model (round 2's rejected answers are round 1's trained policy's, by
lineage and by the call cache's model fingerprint); the same loop SIGKILLed during round 2's
generation and again during its training ends with the same datasets and policies as an
uninterrupted run, repeating no finished model call; the Datasets page shows the rounds."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import DATA, ROOT, cache_entries, cli

from workbench.errors import LoopError
from workbench.loops.loop_config import build_loop, load_loop

SPIN = DATA / "loops" / "spin_tiny.yaml"
ENV = {"OMP_NUM_THREADS": "1"}  # two busy processes on two cores slow each other badly
STEPS = [{"generate": {"model": "policy", "into": "generated", "temperature": 1.0,
                       "max_new_tokens": 8}},
         {"pairs": {"method": "sft_vs_generated"}}]


def loop(**changes) -> dict:
    base = {"name": "l", "policy": "tiny:embedded", "input": "rows.jsonl", "rounds": 2,
            "pipeline": {"steps": STEPS}, "train": {"dpo": {"max_steps": 1}}}
    return {**base, **changes}


# validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "wants"), [
    (loop(round=2), "field 'round': Extra inputs are not permitted"),
    (loop(rounds=0), "field 'rounds': Input should be greater than or equal to 1"),
    (loop(train={"dpo": {"beta": -1}}), "field 'train.dpo.beta': Input should be greater than 0"),
    (loop(train={"dpo": {"betta": 0.2}}), "field 'train.dpo.betta': Extra inputs"),
    (loop(train={"dpo": {}, "command": "x {output}"}), "give exactly one of `dpo"),
    (loop(train={"command": "python train.py {export}"}), "names no {output}"),
    (loop(train={"dpo": {"lora": {"r": 8}}}), "field 'train.dpo.lora': LoRA training needs the "
                                              "peft package"),
    (loop(name="bad name"), "field 'name': String should match pattern"),
    (loop(pipeline={"steps": STEPS, "output": "x"}), "field 'pipeline.output': the loop sets it"),
    (loop(pipeline={"steps": [{"generate": {"model": "policy", "temperatur": 1.0}}]}),
     "pipeline (round 1): step 1 (generate): field 'temperatur': Extra inputs"),
    (loop(pipeline={"steps": [{"sample": {"n": 2}}]}), "no step uses the model 'policy'"),
    (loop(pipeline={"steps": [{"generate": {"model": "policy", "into": "generated", "n": 2,
                                            "temperature": 1.0}}]}),
     "step 1 (generate): into: 'generated' holds one answer; n=2 samples make candidates"),
    (loop(pipeline={"steps": [{"generate": {"model": "policy", "into": "prompt"}}]}),
     "into: 'prompt' is a column rows already have a meaning for"),
    (loop(pipeline="missing.yaml"), "field 'pipeline': no such pipeline file"),
    (loop(input=None), "field 'input': give the rows"),
])
def test_a_bad_loop_names_the_field(data: dict, wants: str, tmp_path: Path, monkeypatch):
    if "lora" in json.dumps(data):  # as on a machine without peft (the dev extra brings it)
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(LoopError) as err:
        build_loop(data, source="loop.yaml", base_dir=tmp_path)
    assert str(err.value).startswith("loop.yaml")
    assert wants in str(err.value)


@pytest.mark.slow
def test_a_lora_round_trains_adapters_and_saves_a_merged_policy(tmp_path: Path):
    """One SPIN round with `lora:`: peft's adapters are trained through TRL and merged, so the
    policy folder is a plain model the next round (or vLLM) loads."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = yaml.safe_load(SPIN.read_text())
    spec.update(rounds=1, name="spin_lora", input=str(SPIN.parent / spec["input"]))
    spec["train"]["dpo"]["lora"] = {"r": 4, "alpha": 8}
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(spec))
    root = tmp_path / "ws"
    result = cli("loop", str(path), "--no-progress", workspace=root, env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr
    folder = root / "loops" / "spin_lora" / "r1" / "policy"
    assert (folder / "model.safetensors").is_file()
    assert not (folder / "adapter_config.json").exists()  # merged, not an adapter folder
    lineage = json.loads((folder / "workbench-lineage.json").read_text())
    assert json.dumps(lineage).count('"lora"') >= 1
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_built_in_training_without_trl_is_refused_before_round_one(tmp_path: Path, monkeypatch):
    """TRL is the `train` extra: without it a loop that trains with `dpo` is refused when it
    is read, not after its first round was generated; a `command` trainer needs no TRL."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "trl" else real(name, *a))
    with pytest.raises(LoopError, match=r"field 'train.dpo'.*needs TRL.*\[train\]"):
        build_loop(loop(), source="loop.yaml", base_dir=tmp_path)
    build_loop(loop(train={"command": "python train.py {export} {output}"}), base_dir=tmp_path)


def test_a_round_pipeline_that_writes_its_own_prompts_needs_no_input(tmp_path: Path):
    steps = [{"magpie": {"model": "policy", "n": 4}},
             {"sample_responses": {"model": "policy", "n": 2}},
             {"judge": {"model": "policy"}}, {"pairs": {}}]
    spec = build_loop(loop(input=None, pipeline={"steps": steps}), base_dir=tmp_path)
    assert spec.round_pipeline(1, "x").spec.input is None


def test_a_round_pipeline_from_a_file_keeps_its_input_models_and_folder(tmp_path: Path):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "round.yaml").write_text(yaml.safe_dump({
        "name": "mine", "seed": 7, "input": "../rows.jsonl", "output": "mine",
        "models": {"policy": {"backend": "transformers", "model": "ignored",
                              "options": {"batch_size": 2}}},
        "steps": STEPS}))
    spec = build_loop(loop(input=None, pipeline="pipelines/round.yaml"), base_dir=tmp_path)
    pipeline = spec.round_pipeline(3, "/policies/r2")
    assert (pipeline.spec.name, pipeline.spec.output) == ("l-r3", "l-r3")
    assert pipeline.spec.input == "../rows.jsonl" and pipeline.base_dir == folder
    assert pipeline.spec.seed == 7  # the loop gives none: the file's
    assert pipeline.spec.models["policy"].model == "/policies/r2"
    assert pipeline.spec.models["policy"].options == {"batch_size": 2}
    (tmp_path / "rows.jsonl").write_text("")
    given = build_loop(loop(seed=1, pipeline="pipelines/round.yaml"), base_dir=tmp_path)
    assert given.round_pipeline(1, "p").spec.input == str(tmp_path / "rows.jsonl")
    assert given.round_pipeline(1, "p").spec.seed == 1


def test_the_cli_refuses_a_bad_loop_file_with_its_line_or_field(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(loop(train={"dpo": {"learning_rate": "fast"}})))
    result = cli("loop", str(bad), workspace=tmp_path / "ws")
    assert result.returncode == 1
    assert "field 'train.dpo.learning_rate'" in result.stderr and "Traceback" not in result.stderr
    twice = tmp_path / "twice.yaml"
    twice.write_text("name: a\nrounds: 1\nrounds: 2\n")
    with pytest.raises(LoopError, match=r"twice.yaml, line 3: invalid YAML \(duplicate key "):
        load_loop(twice)
    assert not (tmp_path / "ws" / "loops").exists()  # refused before anything ran


def test_the_example_loops_validate():
    for path in sorted((DATA / "loops").glob("*.yaml")):
        spec = load_loop(path)
        pipeline = spec.round_pipeline(2, "/some/policy")
        assert pipeline.spec.output == f"{spec.name}-r2"
        assert pipeline.spec.models["policy"].model == "/some/policy"


def test_rounds_table_reads_each_rounds_latest_version(ws):
    """Margins, side lengths and pass rates per round, from the rows (a verifier's
    `pass_rate` or `chosen_passed`), and only the rounds of the loop asked for."""
    from workbench.loops.loop_report import rounds_table

    user = [{"role": "user", "content": "q"}]

    def pairs(chosen: list[str], margins: list[float], **extra) -> pl.DataFrame:
        return pl.DataFrame({"prompt": [user] * len(chosen), "chosen": chosen,
                             "rejected": ["no"] * len(chosen), "margin": margins, **extra})

    def lineage(number: int, name: str = "v") -> dict:
        return {"loop": {"name": name, "round": number,
                         "policy": {"model": f"/ws/loops/{name}/r{number - 1}/policy",
                                    "weights": {"folder_sha256": f"abcdef12{number}"}}},
                "steps": [{"rows_in": 4, "dropped": {"tie": 1}}, {"dropped": {"x": 2}}]}

    ws.write_dataset("v-r2", pairs(["aaaa", "bb"], [1.0, 3.0],
                                   pass_rate=[0.5, 1.0]), "preference", lineage(2))
    ws.write_dataset("v-r1", pairs(["a"], [9.0], chosen_passed=[True]), "preference",
                     lineage(1))
    ws.write_dataset("v-r1", pairs(["abc", "a"], [0.5, 1.5], chosen_passed=[True, False]),
                     "preference", lineage(1))  # a later version of round 1 counts
    ws.write_dataset("other-r1", pairs(["z"], [0.0]), "preference", lineage(1, "other"))
    table = rounds_table(ws, "v")
    assert table["dataset"].to_list() == ["v-r1@2", "v-r2@1"]
    assert table["pairs"].to_list() == [2, 2] and table["rows_in"].to_list() == [4, 4]
    assert table["dropped"].to_list() == [3, 3]
    assert table["margin_mean"].to_list() == [1.0, 2.0]
    assert table["chosen_chars"].to_list() == [2.0, 3.0]
    assert table["pass_rate"].to_list() == [0.5, 0.75]
    assert table["policy"].to_list() == ["r0/policy@abcdef12", "r1/policy@abcdef12"]
    assert table["train_loss"].is_null().all()  # no state file: no training known
    assert rounds_table(ws, "none").height == 0
    # a round judged by llm_pairwise and paired without a margin column: the judge's margin
    judged = pairs(["x", "y"], [0.0, 0.0]).drop("margin").with_columns(
        pl.Series("p_chosen", [0.9, 0.3]), pl.Series("position_flip", [False, True]))
    ws.write_dataset("j-r1", judged, "preference", lineage(1, "j"))
    assert rounds_table(ws, "j")["margin_mean"].to_list() == [pytest.approx(0.1)]


# two SPIN rounds on the tiny model ----------------------------------------------------------
def spin_numbers() -> tuple[int, int, int]:
    """(rows, model-call batches committed per round, training steps) of spin_tiny.yaml."""
    spec = yaml.safe_load(SPIN.read_text())
    rows = sum(1 for _ in (SPIN.parent / spec["input"]).open())
    per_batch = spec["pipeline"]["batch_size"]
    generate = spec["pipeline"]["steps"][0]["generate"]
    commits = math.ceil(rows / per_batch) * math.ceil(per_batch / generate["batch_size"])
    return rows, commits, spec["train"]["dpo"]["max_steps"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`workbench loop data/loops/spin_tiny.yaml`, uninterrupted, through the CLI."""
    root = tmp_path_factory.mktemp("loop-ref") / "ws"
    result = cli("loop", str(SPIN), "--no-progress", workspace=root, env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "round 2: spin_tiny-r2@1" in result.stdout
    return root


def state(root: Path) -> dict:
    return json.loads((root / "loops" / "spin_tiny" / "state.json").read_text())


def rows_of(root: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(root / "datasets" / name / "v1" / "data.parquet")


@pytest.mark.slow
def test_spin_loop_makes_two_rounds_the_second_from_the_first_policy(reference: Path):
    from workbench.models.base import SamplingParams
    from workbench.models.cache import CallCache, cached_call
    from workbench.models.transformers_backend import TransformersBackend
    from workbench.workspace import Workspace

    rows, _, steps = spin_numbers()
    ws = Workspace(reference)
    first, second = ws.resolve("spin_tiny-r1"), ws.resolve("spin_tiny-r2")
    assert first.kind == second.kind == "preference" and first.rows == second.rows == rows
    folders = [reference / "loops" / "spin_tiny" / f"r{r}" / "policy" for r in (1, 2)]
    policies = [json.loads((f / "workbench-lineage.json").read_text()) for f in folders]
    assert all((f / "model.safetensors").is_file() for f in folders)
    # lineage: round 2 was generated by round 1's trained policy, which was trained on round 1
    made_by = second.lineage["loop"]["policy"]
    assert made_by["model"] == str(folders[0])
    assert made_by["weights"] == policies[0]["weights"]
    assert second.lineage["models"]["policy"]["model"] == str(folders[0])
    assert policies[0]["dataset"] == first.ref and policies[1]["dataset"] == second.ref
    assert policies[1]["base"] == {"model": str(folders[0]), "weights": policies[0]["weights"]}
    assert policies[0]["base"]["weights"] == first.lineage["loop"]["policy"]["weights"]
    assert policies[0]["metrics"]["steps"] == steps and policies[0]["weights"] != (
        policies[1]["weights"])
    # the call cache: round 2's rejected answers are stored under round 1's policy's
    # fingerprint (all hits, nothing computed), round 1's under the starting policy's
    spec = yaml.safe_load(SPIN.read_text())["pipeline"]["steps"][0]["generate"]
    params = SamplingParams(temperature=spec["temperature"], max_new_tokens=spec["max_new_tokens"],
                            seed=0)
    cache = CallCache(reference / "cache" / "calls.sqlite")
    for version, model in ((second, folders[0]), (first, first.lineage["loop"]["policy"]["model"])):
        backend = TransformersBackend(str(model), device="cpu")
        assert backend.fingerprint()["weights"] == version.lineage["loop"]["policy"]["weights"]
        frame = ws.read(version.ref)
        texts, stats = cached_call(cache, backend, "generate", frame["prompt"].to_list(), params,
                                   sample_ids=frame["parent_id"].to_list())
        assert (stats.hits, stats.computed) == (rows, 0)
        assert [t[0].text for t in texts] == frame["rejected"].to_list()
    assert ws.read(first.ref)["chosen"].to_list() == ws.read(second.ref)["chosen"].to_list()
    assert ws.read(first.ref)["rejected"].to_list() != ws.read(second.ref)["rejected"].to_list()

    # run again: every round is done, nothing runs; another configuration is refused
    from workbench.loops.loop import run_loop

    runs = len(ws.runs(100))
    again = run_loop(load_loop(SPIN), ws)
    assert again.state["rounds"] == state(reference)["rounds"] and len(ws.runs(100)) == runs
    changed = yaml.safe_load(SPIN.read_text())
    changed["train"]["dpo"]["beta"] = 0.2
    with pytest.raises(LoopError, match="was started from another configuration"):
        run_loop(build_loop(changed, base_dir=SPIN.parent), ws)


@pytest.mark.slow
def test_spin_loop_killed_in_round_two_resumes_to_the_same_datasets(reference: Path,
                                                                    tmp_path: Path):
    rows, commits, steps = spin_numbers()
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "workbench.cli", "--workspace", str(killed), "loop",
               str(SPIN), "--no-progress"]

    def run(crash_at: str | None) -> subprocess.CompletedProcess:
        env = {**os.environ, **ENV}
        env.pop("WORKBENCH_CRASH_AT", None)
        if crash_at:
            env["WORKBENCH_CRASH_AT"] = crash_at
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=900)

    # 1. killed in round 2's generation, after its first batch of calls was committed
    first = run(f"call.batch_committed#{commits + 1}")
    assert first.returncode == -signal.SIGKILL, first.stderr
    at_kill = state(killed)
    assert at_kill["rounds"]["1"]["stage"] == "trained"
    assert at_kill["rounds"]["2"]["stage"] == "started"
    assert not (killed / "datasets" / "spin_tiny-r2").exists()
    calls_at_kill = cache_entries(killed)
    # 2. resumed, killed again between two optimizer steps of round 2's training
    second = run(f"loop.train_step#{steps - 1}")
    assert second.returncode == -signal.SIGKILL, second.stderr
    assert "round 1/2: done earlier" in second.stdout
    assert state(killed)["rounds"]["2"]["stage"] == "exported"
    round_two = killed / "loops" / "spin_tiny" / "r2"
    assert not (round_two / "policy").exists()
    assert list(round_two.glob(".tmp-policy-*"))  # the killed training's unfinished folder
    # 3. resumed to the end
    third = run(None)
    assert third.returncode == 0, third.stderr
    assert not list(round_two.glob(".tmp-policy-*"))

    # the same datasets (ids and rows) and, trained again from scratch, the same policy
    for name in ("spin_tiny-r1", "spin_tiny-r2"):
        assert rows_of(killed, name).equals(rows_of(reference, name)), name
    done, ref = state(killed), state(reference)
    for number in ("1", "2"):
        assert done["rounds"][number]["trained"]["weights"] == (
            ref["rounds"][number]["trained"]["weights"])
    # no finished model call was made again: round 2's finished run found the calls the
    # killed one had committed and computed only the rest; round 1 never ran again
    from workbench.workspace import Workspace

    ws = Workspace(killed)
    runs = {p: [r for r in ws.runs(100) if r["pipeline"] == p]
            for p in ("spin_tiny-r1", "spin_tiny-r2")}
    assert [r["status"] for r in runs["spin_tiny-r1"]] == ["finished"]
    assert sorted(r["status"] for r in runs["spin_tiny-r2"]) == ["finished", "interrupted"]
    finished = next(r for r in runs["spin_tiny-r2"] if r["status"] == "finished")
    generate = ws.step_logs(finished["run_id"])[0]
    calls = generate["detail"]["model_calls"]
    made_before = calls_at_kill - rows  # round 1 made one call per row
    assert 0 < made_before < rows
    assert calls["hits"] == made_before and calls["computed"] == rows - made_before
    assert cache_entries(killed) == cache_entries(reference) == 2 * rows


@pytest.mark.slow
def test_the_datasets_page_shows_the_rounds_side_by_side(reference: Path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from workbench.loops.loop_report import rounds_table
    from workbench.workspace import Workspace

    ws = Workspace(reference)
    table = rounds_table(ws, "spin_tiny")
    assert table["round"].to_list() == [1, 2]
    assert table["dataset"].to_list() == ["spin_tiny-r1@1", "spin_tiny-r2@1"]
    expected = [ws.read(f"spin_tiny-r{r}")["rejected"].str.len_chars().mean() for r in (1, 2)]
    assert table["rejected_chars"].to_list() == pytest.approx(expected)
    assert table["pairs"].to_list() == [ws.resolve(f"spin_tiny-r{r}").rows for r in (1, 2)]
    assert table["margin_mean"].is_null().all()  # SPIN pairs carry no judge margin
    assert table["policy"][1].startswith("r1/policy@")
    assert (table["train_loss"] > 0).all() and (table["seconds"] > 0).all()

    monkeypatch.setenv("WORKBENCH_HOME", str(reference))
    app = AppTest.from_file(str(ROOT / "ui" / "pages" / "1_Datasets.py"), default_timeout=60)
    app.run()
    app.selectbox(key="dataset_name").set_value("spin_tiny-r2").run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("Loop spin_tiny: its rounds" in h.value for h in app.subheader)
    shown = next(d.value for d in app.dataframe if "train_loss" in d.value.columns)
    assert list(shown["dataset"]) == ["spin_tiny-r1@1", "spin_tiny-r2@1"]


# a command of the user's as the trainer, on the self-rewarding example -------------------------
TRAINER = """
import shutil, sys
from pathlib import Path
export, policy, output = map(Path, sys.argv[1:])
assert (export / "train").is_dir(), export          # the round's export, as TRL loads it
shutil.copytree(policy, output, dirs_exist_ok=True)  # "training": the policy, plus a note
(output / "trained-from.txt").write_text(str(policy))
print("trained", export.name)
"""


@pytest.mark.slow
def test_a_command_trains_between_self_rewarding_rounds(tmp_path: Path):
    from workbench.loops.loop import run_loop
    from workbench.loops.loop_report import rounds_table
    from workbench.workspace import Workspace

    script = tmp_path / "train.py"
    script.write_text(TRAINER)
    data = yaml.safe_load((DATA / "loops" / "self_reward_tiny.yaml").read_text())
    data["train"] = {"command": [sys.executable, str(script), "{export}", "{policy}",
                                 "{output}"]}
    ws = Workspace(tmp_path / "ws")
    result = run_loop(build_loop(data, source="self_reward.yaml", base_dir=DATA / "loops"), ws)
    assert [r["dataset"] for r in result.rounds] == ["self_reward_tiny-r1@1",
                                                     "self_reward_tiny-r2@1"]
    first, second = (Path(r["trained"]["model"]) for r in result.rounds)
    assert (second / "trained-from.txt").read_text() == str(first)
    lineage = json.loads((second / "workbench-lineage.json").read_text())
    assert lineage["trainer"]["command"][-1] == "{output}"
    assert lineage["base"]["model"] == str(first)
    assert "trained self_reward_tiny-r2" in (second.parent / "train.log").read_text()
    # the policy judged its own samples: best against worst, by its own ratings
    for ref in ("self_reward_tiny-r1", "self_reward_tiny-r2"):
        rows = ws.read(ref)
        assert (rows["chosen_score"] > rows["rejected_score"]).all()
        assert rows["margin"].to_list() == pytest.approx(
            (rows["chosen_score"] - rows["rejected_score"]).to_list())
    table = rounds_table(ws, "self_reward_tiny")
    assert table["margin_mean"].to_list() == pytest.approx(
        [ws.read(f"self_reward_tiny-r{r}")["margin"].mean() for r in (1, 2)])
    assert table["train_loss"].is_null().all()  # a command reports no loss

    # a command that fails stops the loop at its training, showing what it printed
    data.update(name="fails", rounds=1, train={"command": [
        sys.executable, "-c", "import sys; print('out of memory, say'); sys.exit(3)",
        "{output}"]})
    with pytest.raises(LoopError, match=r"exited with status 3(.|\n)*out of memory, say"):
        run_loop(build_loop(data, source="fails.yaml", base_dir=DATA / "loops"), ws)
    assert json.loads((ws.root / "loops" / "fails" / "state.json").read_text())[
        "rounds"]["1"]["stage"] == "exported"
    assert not (ws.root / "loops" / "fails" / "r1" / "policy").exists()
