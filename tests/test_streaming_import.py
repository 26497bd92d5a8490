"""Streaming import: a file read in chunks gives the dataset the whole-file read gives, errors
in later chunks name their real line, chunks may disagree on optional columns' types, and a
failure leaves neither a version nor a scratch folder behind."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
from conftest import DATA, cli

from workbench.engine import parts
from workbench.engine.finalize import DATA_DIR, finalize
from workbench.errors import InputError, WorkbenchError
from workbench.io import read
from workbench.io.importer import import_path, iter_load, load, stage

# real files in every layout family the importer reads: JSONL, gzip, JSON, structs, CSV
REAL_FILES = [
    ("hh_rlhf/harmless-base/test.jsonl.gz", None, {}),
    ("llama_factory/alpaca_en_demo.json", None, {}),
    ("llama_factory/kto_en_demo.json", None, {}),
    ("fastchat/dummy_conversation.json", None, {}),
    ("magpie/data_po/example_instructions_5res_armorm.json", None, {}),
    ("open_instruct/eval_instances_tulu_1.jsonl", None, {}),
    ("alpaca/seed_tasks.jsonl", None, {}),
    ("gsm8k/test.jsonl", None, {}),
    ("ifeval/input_data.jsonl", None, {}),
    ("mmlu/test/anatomy_test.csv", ["question", "A", "B", "C", "D", "answer"],
     {"prompt": "question"}),
]


def assert_same_dataset(streamed: pl.DataFrame, whole: pl.DataFrame) -> None:
    """Same columns, ids and rows. A nested struct's fields, and extra columns whose key first
    appears in a later chunk, may come in another order."""
    assert streamed.columns[:4] == whole.columns[:4]
    assert sorted(streamed.columns) == sorted(whole.columns)
    assert streamed["id"].to_list() == whole["id"].to_list()
    assert streamed.to_dicts() == whole.to_dicts()


def preference_rows(n: int, at: dict[int, dict] | None = None) -> list[dict]:
    """n distinct preference rows; `at` changes some of them by index."""
    rows = [{"prompt": f"question {i}?", "chosen": f"good {i}", "rejected": f"bad {i}"}
            for i in range(n)]
    for index, change in (at or {}).items():
        rows[index].update(change)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def leftovers(ws) -> list[Path]:
    """What an import could leave behind: version folders (finished or not), scratch folders."""
    scratch = ws.cache_dir / "tmp"
    return [*ws.datasets_dir.glob("*/*"), *(scratch.iterdir() if scratch.exists() else [])]


# chunk boundaries ---------------------------------------------------------------------------
def test_the_bundled_hh_file_in_chunks_of_7_is_the_whole_file_dataset(ws):
    path = DATA / "hh_rlhf_harmless_test_600.jsonl.gz"
    version = import_path(ws, path, "hh", chunk_rows=7)
    whole, kind, lineage = load(path, chunk_rows=None)
    assert_same_dataset(ws.read("hh"), whole)
    assert (version.kind, version.rows) == (kind, whole.height) == ("preference", 600)
    assert version.lineage["import"] == lineage
    assert set(lineage) == {"source", "format", "layout", "sha256", "mapping", "rows"}
    assert lineage["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # hashed on a thread
    assert leftovers(ws) == [version.path]


@pytest.mark.parametrize(("relpath", "csv_columns", "mapping"), REAL_FILES)
def test_real_files_in_chunks_of_7_give_the_same_dataset(shared: Path, ws, relpath, csv_columns,
                                                         mapping):
    path = shared / relpath
    import_path(ws, path, "d", mapping, None, csv_columns, chunk_rows=7)
    whole, _, _ = load(path, mapping, None, csv_columns, chunk_rows=None)
    assert_same_dataset(ws.read("d"), whole)


@pytest.mark.parametrize("relpath", ["gsm8k/test.jsonl", "hh_rlhf/harmless-base/test.jsonl.gz",
                                     "ifeval/input_data.jsonl"])
def test_polars_and_the_line_parser_read_jsonl_alike(shared: Path, monkeypatch, relpath):
    fast = read.read_raw(shared / relpath)
    chunks = list(read.iter_raw(shared / relpath, chunk_rows=7))
    assert max(c.height for c in chunks) == 7
    assert pl.concat(chunks, how="diagonal_relaxed")["_line"].to_list() == fast["_line"].to_list()
    monkeypatch.setattr(read, "NDJSON_FAST_PATH", False)
    slow = read.read_raw(shared / relpath)
    assert slow.to_dicts() == fast.to_dicts()


def test_chunks_are_also_bounded_by_bytes(tmp_path: Path):
    path = write_jsonl(tmp_path / "p.jsonl", preference_rows(100))
    chunks = list(read.iter_raw(path, chunk_rows=1000, chunk_bytes=500))
    assert len(chunks) > 5 and sum(c.height for c in chunks) == 100
    assert pl.concat(chunks)["_line"].to_list() == list(range(1, 101))


def test_blank_lines_crlf_and_a_byte_order_mark_keep_line_numbers(tmp_path: Path):
    rows = [json.dumps(r) for r in preference_rows(20)]
    text = "\r\n".join(rows[:10]) + "\r\n\r\n   \r\n" + "\r\n".join(rows[10:]) + "\r\n"
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    for rows_per_chunk in (7, None):
        frame = read.read_raw(path) if rows_per_chunk is None else pl.concat(
            read.iter_raw(path, chunk_rows=rows_per_chunk))
        assert frame["_line"].to_list() == [*range(1, 11), *range(13, 23)]
        assert frame["prompt"].to_list() == [f"question {i}?" for i in range(20)]


def test_csv_and_parquet_chunks_keep_absolute_locations(tmp_path: Path):
    frame = pl.DataFrame(preference_rows(30))
    frame.write_csv(tmp_path / "p.csv")
    frame.write_parquet(tmp_path / "p.parquet")
    csv = pl.concat(read.iter_raw(tmp_path / "p.csv", chunk_rows=7))
    assert csv["_line"].to_list() == list(range(2, 32))
    parquet = list(read.iter_raw(tmp_path / "p.parquet", chunk_rows=7))
    assert pl.concat(parquet)["_record"].to_list() == list(range(30))
    assert max(c.height for c in parquet) <= 7


# errors in later chunks ---------------------------------------------------------------------
def test_invalid_json_in_a_later_chunk_names_its_line(tmp_path: Path, ws):
    lines = [json.dumps(r) for r in preference_rows(40)]
    lines[22] = lines[22][:30]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"broken\.jsonl, line 23: invalid JSON"):
        import_path(ws, path, "bad", chunk_rows=7)
    assert leftovers(ws) == []


def test_bad_utf8_in_a_later_gzip_chunk_names_line_and_file_offset(tmp_path: Path):
    data = "".join(json.dumps(r) + "\n" for r in preference_rows(30)).encode()
    cut = data.index(b"good 25")
    data = data[:cut] + b"\xe9" + data[cut:]
    path = tmp_path / "latin1.jsonl.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(InputError, match=rf"line 26: invalid UTF-8 at byte offset {cut} \(byte 0xe9\)"):
        load(path, chunk_rows=7)


def test_a_null_field_in_a_later_chunk_names_its_line_and_says_the_count_is_partial(tmp_path: Path):
    rows = preference_rows(40, at={19: {"chosen": None}, 20: {"chosen": None}})
    path = write_jsonl(tmp_path / "nulls.jsonl", rows)
    with pytest.raises(InputError, match=r"nulls\.jsonl, line 20: field 'chosen' is null "
                                         r"\(2 rows so far\)$"):
        load(path, chunk_rows=7)
    with pytest.raises(InputError, match=r"line 20: field 'chosen' is null \(2 rows\)$"):
        load(path, chunk_rows=None)
    # in the last chunk the count is the file's, worded as the whole-file read words it
    rows = preference_rows(40, at={35: {"chosen": None}, 37: {"chosen": None}})
    path = write_jsonl(tmp_path / "late_nulls.jsonl", rows)
    with pytest.raises(InputError, match=r"line 36: field 'chosen' is null \(2 rows\)$"):
        load(path, chunk_rows=7)


def test_a_layout_check_in_a_later_chunk_names_its_record(tmp_path: Path):
    rows = [{"prompt": "p", "response_0": "a", "response_1": "b", "better_response_id": i % 2}
            for i in range(30)]
    rows[17]["better_response_id"] = 5
    path = tmp_path / "pku.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(InputError, match=r"pku\.json, record 17: field 'better_response_id' "
                                         r"is not 0 or 1 \(1 row so far\)"):
        load(path, chunk_rows=7)


def test_the_cli_reports_a_later_chunk_error_in_one_line(tmp_path: Path):
    rows = preference_rows(30_000, at={25_000: {"chosen": None}})
    path = write_jsonl(tmp_path / "late.jsonl", rows)
    result = cli("import", str(path), "--name", "late", workspace=tmp_path / "ws")
    assert result.returncode != 0
    message = result.stderr.strip()
    assert message == f"error: {path}, line 25001: field 'chosen' is null"
    assert not any((tmp_path / "ws" / "datasets").iterdir())


# chunks that disagree on columns --------------------------------------------------------------
def test_a_column_null_in_the_first_chunk_and_text_later(tmp_path: Path, ws):
    rows = [{"instruction": f"task {i}", "output": f"done {i}",
             "system": None if i < 10 else "Be brief.",  # null, then text
             "history": [] if i < 12 else [["hi", "hello"]],
             **({"note": f"n{i}"} if i >= 15 else {}),  # absent, then text
             "meta": {} if 7 <= i < 14 else {"source": "x", "score": i}}  # fields, {}, fields
            for i in range(30)]
    path = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    version = import_path(ws, path, "a", chunk_rows=7)
    frame = ws.read("a")
    whole, _, _ = load(path, chunk_rows=None)
    assert_same_dataset(frame, whole)
    assert version.rows == 30
    assert frame["note"].to_list() == [None] * 15 + [f"n{i}" for i in range(15, 30)]
    assert frame["prompt"][0].to_list() == [{"role": "user", "content": "task 0"}]
    assert frame["prompt"][12].to_list()[0] == {"role": "system", "content": "Be brief."}
    assert frame["meta"][8] == {"source": None, "score": None}


def test_an_object_empty_in_every_row_so_far_is_null(tmp_path: Path, ws):
    """Parquet cannot store `{}` before any row has given the object a field; the whole-file
    read knows the fields from later rows and gives them as nulls instead."""
    rows = [{**r, "meta": {} if i < 7 else {"source": "x"}, "tags": [{}] if i < 7 else [{"a": 1}],
             "nested": {"n": i, "more": {} if i < 7 else {"c": 1}}}
            for i, r in enumerate(preference_rows(20))]
    path = write_jsonl(tmp_path / "meta.jsonl", rows)
    import_path(ws, path, "m", chunk_rows=7)
    frame = ws.read("m")
    assert frame["meta"].to_list() == [None] * 7 + [{"source": "x"}] * 13
    assert frame["tags"].to_list() == [None] * 7 + [[{"a": 1}]] * 13
    assert frame["nested"][0] == {"n": 0, "more": None}  # the object's other fields stay
    assert frame["nested"][7] == {"n": 7, "more": {"c": 1}}
    whole, _, _ = load(path, chunk_rows=None)
    assert whole["meta"][0] == {"source": None}
    assert whole["nested"][0] == {"n": 0, "more": {"c": None}}
    others = ["meta", "tags", "nested"]
    assert frame.drop(others).to_dicts() == whole.drop(others).to_dicts()


def test_a_required_column_missing_from_a_later_chunk_is_a_null_on_its_line(tmp_path: Path):
    rows = preference_rows(20)
    for row in rows[14:]:
        del row["rejected"]
    path = write_jsonl(tmp_path / "gap.jsonl", rows)
    with pytest.raises(InputError, match=r"line 15: field 'rejected' is null \(6 rows\)"):
        load(path, chunk_rows=7)


def test_chunks_with_clashing_types_are_refused_with_where_it_starts(tmp_path: Path):
    rows = [{**r, "extra": [1]} for r in preference_rows(20)]
    for row in rows[7:]:
        row["extra"] = {"a": 1}
    path = write_jsonl(tmp_path / "clash.jsonl", rows)
    with pytest.raises(InputError, match=r"records do not share a consistent schema "
                                         r"\(in the rows from line 8 on"):
        load(path, chunk_rows=7)


# all or nothing -----------------------------------------------------------------------------
def test_a_failure_after_staging_leaves_no_version_and_no_scratch_folder(tmp_path: Path, ws,
                                                                         monkeypatch):
    path = write_jsonl(tmp_path / "p.jsonl", preference_rows(30))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(parts, "concat_to_file", broken)
    with pytest.raises(OSError, match="disk full"):
        import_path(ws, path, "p", chunk_rows=7)
    assert leftovers(ws) == []
    assert ws.list_datasets() == []


def test_a_bad_name_is_refused_before_reading(tmp_path: Path, ws):
    with pytest.raises(WorkbenchError, match="invalid dataset name"):
        import_path(ws, tmp_path / "does-not-matter.jsonl", "no spaces allowed")


# the library API ----------------------------------------------------------------------------
def test_stage_then_finalize_gives_the_ids_load_gives(tmp_path: Path):
    path = DATA / "hh_rlhf_harmless_test_600.jsonl.gz"
    staged = stage(path, tmp_path / "staged", chunk_rows=100)
    assert staged.kind == "preference" and len(staged.files) == 6
    assert staged.lineage["rows"] == 600 and staged.lineage["layout"] == "hh-rlhf"
    done = finalize(staged.files, staged.kind, tmp_path / "out", where=str(path))
    assert done.rows_out == 600
    streamed = parts.scan(tmp_path / "out" / DATA_DIR).collect()
    whole, _, _ = load(path, chunk_rows=None)
    assert_same_dataset(streamed, whole)


def test_iter_load_knows_the_kind_first_and_can_stop_early():
    loading = iter_load(DATA / "hh_rlhf_harmless_test_600.jsonl.gz", chunk_rows=50, limit=120)
    assert (loading.kind, loading.layout.name, loading.rows) == ("preference", "hh-rlhf", 0)
    heights = [chunk.height for chunk in loading]
    assert heights == [50, 50, 20]
    assert loading.lineage()["rows"] == 120


def test_publish_parts_registers_rows_and_columns(tmp_path: Path, ws):
    path = write_jsonl(tmp_path / "p.jsonl", preference_rows(25))
    staged = stage(path, tmp_path / "staged", chunk_rows=10)
    finalize(staged.files, staged.kind, tmp_path / "out", where="p", batch_rows=10)
    version = ws.publish_parts("p", tmp_path / "out" / DATA_DIR, staged.kind,
                               lineage={"import": staged.lineage}, run_key="k1")
    assert (version.ref, version.rows, version.kind) == ("p@1", 25, "preference")
    assert version.columns == ["id", "prompt", "chosen", "rejected"]
    assert ws.find_by_run_key("p", "k1") == version
    assert ws.read("p").height == 25
