"""A full disk: one clear error ("no space left on DEVICE while writing PATH"), rc 1, and
nothing half-written left behind, at import (staging and publish), checkpoints and export.

Each test mounts a small tmpfs (root only; skipped elsewhere) where the write goes."""

from __future__ import annotations

import json
import random
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator:
    """mount(path, size): a tmpfs of `size` at `path`, unmounted after the test."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def incompressible(path: Path, rows: int = 1500) -> Path:
    """About 3 MB of random letters (zstd keeps about 2.3 MB of it)."""
    draw = random.Random(0)
    with path.open("w") as out:
        for _ in range(rows):
            text = "".join(draw.choices(string.ascii_letters, k=1000))
            out.write(json.dumps({"prompt": text, "chosen": text[::-1], "rejected": "r"}) + "\n")
    return path


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def assert_no_space(result: subprocess.CompletedProcess, device: Path, path: Path) -> None:
    """rc 1 and the error as the last line (HF's save_to_disk prints progress before it)."""
    assert result.returncode == 1, result.stdout
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: no space left on {device} (tmpfs, tmpfs) while "
                              f"writing {path}"), result.stderr


def test_an_import_into_a_full_workspace(tmp_path: Path, small_disk):
    disk = small_disk(tmp_path / "disk", "2m")
    workspace = disk / "ws"
    source = incompressible(tmp_path / "big.jsonl")
    result = cli("import", str(source), "--name", "big", workspace=workspace)
    assert_no_space(result, disk, workspace)
    assert not any((workspace / "datasets").iterdir())  # no version, no .tmp-* copy
    assert not any((workspace / "cache" / "tmp").iterdir())  # staging removed
    assert json.loads(cli("datasets", "--json", workspace=workspace).stdout) == []
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n")
    again = cli("import", str(small), "--name", "big", workspace=workspace)
    assert again.returncode == 0 and "as big version 1" in again.stdout, again.stderr


def test_an_export_onto_a_full_disk(tmp_path: Path, small_disk):
    workspace = tmp_path / "ws"
    imported = cli("import", str(incompressible(tmp_path / "big.jsonl")), "--name", "big",
                   workspace=workspace)
    assert imported.returncode == 0, imported.stderr
    disk = small_disk(tmp_path / "disk", "1m")
    for fmt in ("parquet", "jsonl", "hf"):
        out = disk / f"export-{fmt}"
        result = cli("export", "big", "--format", fmt, "--out", str(out), workspace=workspace)
        assert_no_space(result, disk, out)
        assert files_under(disk) == [], fmt  # the temporary copy is gone


def test_a_step_checkpoint_on_a_full_disk(tmp_path: Path, small_disk):
    workspace = tmp_path / "ws"
    imported = cli("import", str(incompressible(tmp_path / "big.jsonl")), "--name", "big",
                   workspace=workspace)
    assert imported.returncode == 0, imported.stderr
    disk = small_disk(workspace / "cache" / "checkpoints", "1m")
    pipeline = tmp_path / "copy.yaml"
    # a step that writes its rows in full (`sample` keeps their content: its checkpoint is
    # a view, positions only, which fits; see the next test)
    pipeline.write_text(json.dumps({"name": "copy", "input": "big", "output": "copied",
                                    "steps": [{"sql": {"query": "SELECT * FROM input"}}]}))
    result = cli("run", str(pipeline), "--no-progress", workspace=workspace)
    assert result.returncode == 1
    assert result.stderr.startswith("error: step 1 (sql): no space left on "), result.stderr
    assert f"while writing {disk / 'copy'} (its checkpoint)" in result.stderr
    assert [p.name for p in files_under(disk)] == [".lock"]  # no half-written part
    assert [d["name"] for d in json.loads(cli("datasets", "--json",
                                              workspace=workspace).stdout)] == ["big"]


def test_a_view_checkpoint_needs_little_space(tmp_path: Path, small_disk):
    workspace = tmp_path / "ws"
    imported = cli("import", str(incompressible(tmp_path / "big.jsonl")), "--name", "big",
                   workspace=workspace)
    assert imported.returncode == 0, imported.stderr
    disk = small_disk(workspace / "cache" / "checkpoints", "1m")  # less than the rows
    pipeline = tmp_path / "copy.yaml"
    pipeline.write_text(json.dumps({"name": "copy", "input": "big", "output": "copied",
                                    "steps": [{"sample": {"fraction": 1.0}},
                                              {"split": {"test_size": 0.1}}]}))
    result = cli("run", str(pipeline), "--no-progress", workspace=workspace)
    assert result.returncode == 0, result.stderr
    assert sum(p.stat().st_size for p in files_under(disk)) < 200_000
