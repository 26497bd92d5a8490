"""Export writes only inside its folder, whatever the data says, and `--overwrite` replaces
only an earlier export of this tool: never the workspace, a folder above it, $HOME or `/`.
Split names come from the data, so a `split` column is as untrusted as any other column."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import datasets
import polars as pl
import pytest
from conftest import cli

from workbench.errors import WorkbenchError
from workbench.io.export import export_dataset
from workbench.io.importer import import_path
from workbench.workspace import Workspace

FORMATS = ("jsonl", "parquet", "hf")
MARKER = "workbench_export.json"
FIXED_BAD = ["../../x", ".", "..", "a/b", "a\x00b"]


def _import(ws: Workspace, name: str, splits: list[str], folder: Path) -> None:
    """A preference dataset whose rows carry these `split` values, through the real importer."""
    rows = [{"prompt": f"question {i}?", "chosen": f"good answer {i}", "rejected": f"bad {i}",
             "split": split} for i, split in enumerate(splits)]
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import_path(ws, path, name)


def snapshot(root: Path) -> dict[str, str]:
    """Every folder and file under root (file contents hashed); the catalogs' own files are
    left out, since opening a workspace may touch them."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            if name.startswith("workbench.duckdb"):
                continue
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return found


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-")))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A workspace holding one dataset per bad split value (`bad0`...), one holding all of
    them (`mixed`), and a second workspace whose version file is the absolute-path target."""
    root = tmp_path_factory.mktemp("export-safety")
    files = root / "files"
    files.mkdir()
    other = Workspace(root / "other")
    _import(other, "victim", ["train"] * 3, files)
    victim = other.resolve("victim")
    absolute = str(victim.path / "data")  # a split here would write .../v1/data.parquet
    ws = Workspace(root / "ws")
    bad = [*FIXED_BAD, absolute]
    for i, value in enumerate(bad):
        _import(ws, f"bad{i}", ["train", value, "train"], files)
    _import(ws, "mixed", ["train", *bad, *bad[:2]], files)
    return {"root": root, "ws": ws, "bad": bad, "victim": victim}


def _assert_nothing_written(site: dict, before: dict[str, str]) -> None:
    assert snapshot(site["root"]) == before
    victim = site["victim"]
    assert pl.read_parquet(victim.path / "data.parquet").height == victim.rows == 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_split_names_are_refused_in_every_format(site: dict, fmt: str):
    """The library entry point the app's Export page calls: each bad value on its own."""
    ws, root = site["ws"], site["root"]
    before = snapshot(root)
    for i, value in enumerate(site["bad"]):
        out = root / "deep" / "er" / f"out-{fmt}-{i}"
        with pytest.raises(WorkbenchError) as caught:
            export_dataset(ws, f"bad{i}", out, fmt=fmt)
        message = str(caught.value)
        assert f"{value!r} (1 row)" in message and "split" in message, message
        assert not out.exists()
        _assert_nothing_written(site, before)


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_names_every_bad_split_with_its_row_count(site: dict, fmt: str):
    ws, root = site["ws"], site["root"]
    before = snapshot(root)
    out = root / "deep" / "er" / "out"
    result = cli("export", "mixed", "--format", fmt, "--out", str(out), workspace=ws.root)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    bad = site["bad"]
    for value in bad:
        count = 2 if value in bad[:2] else 1
        assert f"{value!r} ({count} row{'s' if count > 1 else ''})" in result.stderr, result.stderr
    assert not out.exists()
    _assert_nothing_written(site, before)


def test_cli_refuses_each_bad_split_as_hf(site: dict):
    """hf is the format that wrote whole Arrow folders at the split's path."""
    ws, root = site["ws"], site["root"]
    before = snapshot(root)
    for i, value in enumerate(site["bad"]):
        out = root / "deep" / "er" / "out"
        result = cli("export", f"bad{i}", "--format", "hf", "--out", str(out), workspace=ws.root)
        assert result.returncode == 1 and f"{value!r} (1 row)" in result.stderr, result.stderr
        assert not out.exists()
        _assert_nothing_written(site, before)


@pytest.mark.parametrize("fmt", FORMATS)
def test_plain_split_names_export_load_and_stay_inside(ws: Workspace, tmp_path: Path, fmt: str):
    """Names `datasets` accepts still export; the card's data_files and every file written
    lie inside the folder, which the marker lists."""
    _import(ws, "ok", ["train", "test", "dev_2", "valid.v2", "train"], tmp_path)
    out = tmp_path / "out"
    result = export_dataset(ws, "ok", out, fmt=fmt)
    assert result["splits"] == {"train": 2, "test": 1, "dev_2": 1, "valid.v2": 1}
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert {k: v.num_rows for k, v in loaded.items()} == result["splits"]
    card = (out / "README.md").read_text()
    paths = [line.split("path:", 1)[1].strip() for line in card.splitlines() if "path:" in line]
    assert len(paths) == 4
    assert all((out / p).resolve().is_relative_to(out.resolve()) for p in paths)
    marker = json.loads((out / MARKER).read_text())
    assert (marker["dataset"], marker["format"], marker["folder"]) == ("ok@1", fmt, "out")
    assert marker["created_at"]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert sorted([*marker["files"], MARKER]) == written
    assert leftovers(tmp_path) == []


# --overwrite -----------------------------------------------------------------------------------
@pytest.fixture
def good(ws: Workspace, tmp_path: Path) -> Workspace:
    _import(ws, "good", ["train", "train", "test"], tmp_path)
    return ws


def _refused(result, reason: str) -> None:
    assert result.returncode == 1, result.stdout
    assert reason in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_overwrite_refuses_the_workspace_and_its_parent(good: Workspace, tmp_path: Path):
    before = snapshot(tmp_path)
    for target, reason in ((good.root, "is the workspace"),
                           (tmp_path, "contains the workspace")):
        for fmt in ("jsonl", "hf"):
            result = cli("export", "good", "--format", fmt, "--out", str(target), "--overwrite",
                         workspace=good.root)
            _refused(result, reason)
            assert snapshot(tmp_path) == before
    assert good.read("good").height == 3 and good.resolve("good").rows == 3


def test_overwrite_refuses_folders_inside_the_workspace(good: Workspace, tmp_path: Path):
    before = snapshot(tmp_path)
    version = good.resolve("good").path
    for target in (good.datasets_dir, version, good.root / "exports"):
        result = cli("export", "good", "--out", str(target), "--overwrite", workspace=good.root)
        _refused(result, "inside the workspace")
        assert snapshot(tmp_path) == before
    # a fresh folder inside it (an orphan version folder in the making) is refused as well
    result = cli("export", "good", "--out", str(good.datasets_dir / "good" / "v2"),
                 workspace=good.root)
    _refused(result, "inside the workspace")
    assert not (good.datasets_dir / "good" / "v2").exists()
    # its exports/ subfolders are where exports belong
    exported = good.root / "exports" / "good"
    for _ in range(2):
        result = cli("export", "good", "--out", str(exported), "--overwrite", workspace=good.root)
        assert result.returncode == 0, result.stderr
    assert json.loads((exported / MARKER).read_text())["dataset"] == "good@1"


def test_overwrite_refuses_home(good: Workspace, tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("export PATH=$PATH:~/bin\n")
    before = snapshot(tmp_path)
    result = cli("export", "good", "--format", "parquet", "--out", str(home), "--overwrite",
                 workspace=good.root, env={"HOME": str(home)})
    _refused(result, "home folder")
    assert snapshot(tmp_path) == before


def test_overwrite_refuses_the_filesystem_root(good: Workspace):
    """Checked on the target alone: nothing here may try to write at `/`."""
    from workbench.io.export_folder import export_target

    with pytest.raises(WorkbenchError, match="filesystem root"):
        export_target(Path("/"), good.root, overwrite=True)


def test_overwrite_refuses_a_folder_with_user_files(good: Workspace, tmp_path: Path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path)
    result = cli("export", "good", "--out", str(mine), "--overwrite", workspace=good.root)
    _refused(result, f"no {MARKER}")
    assert (mine / "notes.txt").read_text() == "my notes"
    assert snapshot(tmp_path) == before
    (mine / MARKER).write_text("not ours")  # a marker of some other kind does not count
    result = cli("export", "good", "--out", str(mine), "--overwrite", workspace=good.root)
    _refused(result, MARKER)
    assert (mine / "notes.txt").read_text() == "my notes"


def test_overwrite_replaces_an_earlier_export(good: Workspace, tmp_path: Path):
    out = tmp_path / "exports" / "good"
    first = cli("export", "good", "--format", "jsonl", "--out", str(out), workspace=good.root)
    assert first.returncode == 0, first.stderr
    assert (out / "train.jsonl").exists()
    again = cli("export", "good", "--format", "hf", "--out", str(out), "--overwrite",
                workspace=good.root)
    assert again.returncode == 0, again.stderr
    marker = json.loads((out / MARKER).read_text())
    assert marker["format"] == "hf" and not (out / "train.jsonl").exists()
    assert datasets.load_from_disk(str(out))["train"].num_rows == 2
    assert leftovers(out.parent) == []
    # a file the user put into the export since is not the tool's to delete
    (out / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path)
    refused = cli("export", "good", "--format", "jsonl", "--out", str(out), "--overwrite",
                  workspace=good.root)
    _refused(refused, "notes.txt")
    assert snapshot(tmp_path) == before


def test_overwrite_tolerates_the_cache_a_trainer_left(good: Workspace, tmp_path: Path):
    """`load_from_disk(EXPORT)` then `.map` (TRL's trainers do) writes `cache-*.arrow` into
    the split folder: that is the export's own derivative, so --overwrite still replaces it."""
    out = tmp_path / "exports" / "good"
    assert cli("export", "good", "--format", "hf", "--out", str(out),
               workspace=good.root).returncode == 0
    loaded = datasets.load_from_disk(str(out))["train"]
    loaded.map(lambda row: {"n": len(row["prompt"])})
    assert any(p.name.startswith("cache-") for p in (out / "train").iterdir())
    again = cli("export", "good", "--format", "hf", "--out", str(out), "--overwrite",
                workspace=good.root)
    assert again.returncode == 0, again.stderr
    assert not any(p.name.startswith("cache-") for p in (out / "train").iterdir())


def test_failed_swap_keeps_the_earlier_export(good: Workspace, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch):
    """If moving the new export into place fails, the earlier one is put back, and neither a
    staging nor an old copy is left beside it."""
    out = tmp_path / "exports" / "good"
    export_dataset(good, "good", out, fmt="jsonl")
    before = snapshot(tmp_path)
    rename = os.rename

    def failing(src, dst, *args, **kwargs):
        if Path(dst) == out and Path(src).name.startswith(".tmp-"):
            raise OSError(28, "No space left on device")
        return rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError, match="No space left"):
        export_dataset(good, "good", out, fmt="parquet", overwrite=True)
    assert snapshot(tmp_path) == before
    assert leftovers(out.parent) == []


def test_staging_folders_are_named_for_gc(good: Workspace, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch):
    """`.tmp-export-<pid>-<hex>` and `.old-export-<pid>-<hex>`: gc can tell whose they are."""
    seen: list[str] = []
    rename = os.rename

    def spy(src, dst, *args, **kwargs):
        seen.extend([Path(src).name, Path(dst).name])
        return rename(src, dst, *args, **kwargs)

    out = tmp_path / "out"
    export_dataset(good, "good", out, fmt="jsonl")
    monkeypatch.setattr(os, "rename", spy)
    export_dataset(good, "good", out, fmt="jsonl", overwrite=True)
    staged = [n for n in seen if n.startswith((".tmp-", ".old-"))]
    assert {n.rsplit("-", 2)[0] for n in staged} == {".tmp-export", ".old-export"}
    assert all(n.split("-")[-2] == str(os.getpid()) for n in staged), staged
    assert leftovers(tmp_path) == []
