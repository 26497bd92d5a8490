"""The workspace on a real DuckDB file: versions, atomic writes, concurrent processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from workbench.errors import NotFoundError, SchemaError, WorkbenchError
from workbench.schema import MESSAGES, user
from workbench.workspace import Workspace


def prefs(n: int, tag: str = "") -> pl.DataFrame:
    return pl.DataFrame({"q": [f"question {i}{tag}" for i in range(n)]}).select(
        user("q").alias("prompt"), pl.format("good {}", "q").alias("chosen"),
        pl.format("bad {}", "q").alias("rejected"))


def test_versions_are_immutable_and_resolvable(ws: Workspace):
    v1 = ws.write_dataset("p", prefs(3), "preference")
    v2 = ws.write_dataset("p", prefs(5), "preference")
    assert (v1.version, v2.version) == (1, 2)
    assert ws.resolve("p").version == 2 and ws.read("p@1").height == 3
    assert ws.read("p").schema["prompt"] == MESSAGES
    assert [d.version for d in ws.list_datasets(all_versions=True)] == [1, 2]
    with pytest.raises(NotFoundError, match="no dataset 'nope'"):
        ws.resolve("nope")


def test_validation_names_missing_and_mistyped_columns(ws: Workspace):
    with pytest.raises(SchemaError, match="column 'rejected' is missing"):
        ws.write_dataset("bad", prefs(2).drop("rejected"), "preference")
    with pytest.raises(SchemaError, match="column 'prompt' has type String"):
        ws.write_dataset("bad", prefs(2).with_columns(pl.lit("x").alias("prompt")), "preference")
    assert_turn = prefs(1).with_columns(
        pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), pl.lit("hi").alias("content")))
        .alias("prompt"))
    with pytest.raises(SchemaError, match="does not end with a user turn"):
        ws.write_dataset("bad", assert_turn, "preference")
    with pytest.raises(WorkbenchError, match="invalid dataset name"):
        ws.write_dataset("../evil", prefs(1), "preference")
    assert ws.list_datasets() == [] and not any(ws.datasets_dir.iterdir())


def test_failed_write_leaves_no_version(ws: Workspace, monkeypatch):
    def explode(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", explode)
    with pytest.raises(OSError, match="disk full"):
        ws.write_dataset("p", prefs(2), "preference")
    monkeypatch.undo()
    assert ws.list_datasets() == []
    assert list((ws.datasets_dir / "p").iterdir()) == []


WRITER = textwrap.dedent("""
    import sys, polars as pl
    from workbench.workspace import Workspace
    from workbench.schema import user
    ws = Workspace(sys.argv[1])
    for n in range(1, 16):
        frame = pl.DataFrame({"q": [f"q{i}" for i in range(n * 400)]}).select(
            user("q").alias("prompt"), pl.col("q").alias("chosen"), pl.lit("r").alias("rejected"))
        ws.write_dataset("grow", frame, "preference")
""")
READER = textwrap.dedent("""
    import sys, json, polars as pl
    from workbench.workspace import Workspace
    from workbench.errors import NotFoundError
    ws = Workspace(sys.argv[1])
    seen = set()
    while len(seen) < 15:
        try:
            version = ws.resolve("grow")
        except NotFoundError:
            continue
        frame = ws.read(version.ref)
        assert frame.height == version.rows == version.version * 400, (version, frame.height)
        assert frame["id"].n_unique() == frame.height
        seen.add(version.version)
    print(json.dumps(sorted(seen)))
""")


def test_two_readers_never_see_a_half_written_version(tmp_path: Path):
    root = tmp_path / "ws"
    Workspace(root)
    (tmp_path / "writer.py").write_text(WRITER)
    (tmp_path / "reader.py").write_text(READER)
    readers = [subprocess.Popen([sys.executable, str(tmp_path / "reader.py"), str(root)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    writer = subprocess.run([sys.executable, str(tmp_path / "writer.py"), str(root)],
                            capture_output=True, text=True, timeout=300)
    assert writer.returncode == 0, writer.stderr
    for reader in readers:
        out, err = reader.communicate(timeout=300)
        assert reader.returncode == 0, err
        assert json.loads(out)[-1] == 15  # readers saw the final version, and every read was whole


def test_labels_append_and_latest_wins(ws: Workspace):
    ws.add_label("p", "row1", "ann", "a", a_is_chosen=True)
    ws.add_label("p", "row1", "ann", "b", a_is_chosen=True, note="changed my mind")
    ws.add_label("p", "row1", "other", "tie", a_is_chosen=False)
    latest = ws.latest_labels("p").sort("annotator")
    assert latest["choice"].to_list() == ["b", "tie"]
    assert latest["note"].to_list() == ["changed my mind", None]
    with pytest.raises(WorkbenchError, match="a, b, tie or both_bad"):
        ws.add_label("p", "row1", "ann", "maybe", a_is_chosen=True)
