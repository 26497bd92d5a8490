"""Every code sample in docs/writing-a-transform.md runs: the three steps are written into a
package as the guide says, and the guide's own run block runs them on a real workspace."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "writing-a-transform.md"


def samples() -> list[tuple[str, str]]:
    """(language, code) of each fenced block, in order."""
    return re.findall(r"```(\w+)\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_guide_has_its_samples() -> None:
    files = [code.splitlines()[0] for lang, code in samples() if lang == "python"]
    assert files[:3] == ["# my_steps/word_count.py", "# my_steps/length_zscore.py",
                         "# my_steps/title.py"]
    assert [lang for lang, _ in samples()].count("python") == 4


@pytest.mark.slow
def test_guide_samples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    blocks = samples()
    toml = next(code for lang, code in blocks if lang == "toml")
    assert tomllib.loads(toml)["project"]["entry-points"]["workbench.transforms"] == {
        "my_steps": "my_steps"}
    package = tmp_path / "my_steps"
    package.mkdir()
    (package / "__init__.py").write_text("")
    python = [code for lang, code in blocks if lang == "python"]
    for code in python[:3]:  # the step modules, each at the path its first line names
        (tmp_path / code.splitlines()[0].removeprefix("# ")).write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = [
        {"prompt": "Name a prime number.", "response": "Seven is prime."},
        {"prompt": "Say hi.", "response": "Hi"},  # one word: dropped by word_count
        {"prompt": "What is the capital of France?", "response": "Paris is the capital."},
        {"prompt": "Give me a colour.", "response": "Blue, like the sky on a clear day."},
    ]
    input_file = tmp_path / "rows.jsonl"
    input_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scope = {"workspace_root": tmp_path / "ws", "input_file": str(input_file)}
    try:
        exec(compile(python[3], str(GUIDE), "exec"), scope)  # noqa: S102 - the guide's block
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "my_steps"]:
            del sys.modules[name]
    out = scope["rows"]
    assert out.height == 3 and "Hi" not in out["response"].to_list()
    assert out["words"].to_list() == [3, 4, 8]
    chars = [len(r) for r in out["response"].to_list()]
    mean = sum(chars) / 3
    std = (sum((c - mean) ** 2 for c in chars) / 2) ** 0.5
    assert out["length_z"].to_list() == pytest.approx([(c - mean) / std for c in chars])
    assert out["title"].null_count() + out["title"].str.len_chars().gt(0).sum() == 3
    logs = scope["workspace"].step_logs(scope["result"].run_id)
    by_step = {entry["step"]: entry for entry in logs}
    zlog = next(v for k, v in by_step.items() if "length_zscore" in str(k))
    assert json.dumps(zlog).count("mean_chars") == 1
