"""The workspace on a real DuckDB file: versions, atomic writes, concurrent processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import polars as pl
import pytest
from conftest import ROOT

from workbench.errors import NotFoundError, SchemaError, WorkbenchError
from workbench.schema import MESSAGES, user
from workbench.store.catalog import SCHEMA_VERSION, Catalog, schema_version
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
    while max(seen, default=0) < 15:  # a version published between two polls may be missed
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
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code, not an installed one
    readers = [subprocess.Popen([sys.executable, str(tmp_path / "reader.py"), str(root)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for _ in range(2)]
    writer = subprocess.run([sys.executable, str(tmp_path / "writer.py"), str(root)],
                            capture_output=True, text=True, timeout=300, env=env)
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


def test_threads_of_one_process_read_and_write_the_catalog_together(ws: Workspace):
    """A Streamlit server's sessions are threads of one process: reads and writes interleave."""
    ws.write_dataset("p", prefs(3), "preference")
    errors: list[BaseException] = []
    stop = threading.Event()

    def guarded(work):
        def run():
            try:
                work()
            except BaseException as exc:  # every failure is reported below
                errors.append(exc)
        return threading.Thread(target=run)

    def read():
        while not stop.is_set():
            assert ws.list_datasets()[0].name == "p"
            ws.latest_labels("p")
            assert ws.resolve("p@1").rows == 3

    def label(annotator: str):
        for i in range(15):
            ws.add_label("p", f"row{i}", annotator, "a", a_is_chosen=bool(i % 2))

    def publish():
        for _ in range(3):
            ws.write_dataset("q", prefs(4), "preference")

    readers = [guarded(read) for _ in range(4)]
    writers = [guarded(lambda a=f"ann{n}": label(a)) for n in range(3)] + [guarded(publish)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=240)
    stop.set()
    for thread in readers:
        thread.join(timeout=240)
    assert not errors, errors[:3]
    labels = ws.latest_labels("p")
    assert labels.height == 45
    assert sorted(set(labels["annotator"])) == ["ann0", "ann1", "ann2"]
    assert [v.version for v in ws.list_datasets(all_versions=True) if v.name == "q"] == [1, 2, 3]


def test_reading_an_existing_workspace_never_opens_the_catalog_read_write(tmp_path: Path,
                                                                           monkeypatch):
    root = tmp_path / "ws"
    writer = Workspace(root)
    writer.write_dataset("p", prefs(2), "preference")
    writer.add_label("p", "row1", "ann", "a", a_is_chosen=True)
    catalog_file = root / "workbench.duckdb"
    before = catalog_file.read_bytes()
    modes: list[bool] = []
    original = Catalog.connect

    def counting(self, read_only: bool = False):
        modes.append(read_only)
        return original(self, read_only=read_only)

    monkeypatch.setattr(Catalog, "connect", counting)
    reader = Workspace(root)
    assert [v.ref for v in reader.list_datasets(all_versions=True)] == ["p@1"]
    assert reader.resolve("p").rows == 2 and reader.read("p@1").height == 2
    assert reader.latest_labels("p")["choice"].to_list() == ["a"]
    assert reader.runs() == [] and reader.has_dataset("p")
    assert modes and all(modes), modes  # every connection was read-only
    assert catalog_file.read_bytes() == before
    reader.add_label("p", "row2", "ann", "b", a_is_chosen=False)  # a write opens it read-write
    assert modes[-1] is False


def test_an_old_catalog_without_a_schema_version_is_upgraded_once(tmp_path: Path):
    import duckdb

    root = tmp_path / "ws"
    Workspace(root).write_dataset("p", prefs(2), "preference")
    with duckdb.connect(str(root / "workbench.duckdb")) as con:
        con.execute("DROP TABLE catalog_meta")
    assert Workspace(root).resolve("p").rows == 2  # upgraded in place, data kept
    with duckdb.connect(str(root / "workbench.duckdb"), read_only=True) as con:
        assert schema_version(con) == SCHEMA_VERSION
        con.execute("SELECT 1").fetchall()


def test_a_catalog_from_a_newer_workbench_is_refused(tmp_path: Path):
    import duckdb

    root = tmp_path / "ws"
    Workspace(root)
    with duckdb.connect(str(root / "workbench.duckdb")) as con:
        con.execute("UPDATE catalog_meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(WorkbenchError, match="schema version 999, newer"):
        Workspace(root)
