"""The workspace: one folder with the DuckDB catalog, immutable Parquet versions and caches."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from workbench import schema
from workbench.engine.crashpoints import crashpoint
from workbench.engine.diskfull import writing
from workbench.errors import NotFoundError, WorkbenchError
from workbench.labeling import annotators
from workbench.store.atomic import file_lock, fsync_dir, owned_dir
from workbench.store.catalog import Catalog

if TYPE_CHECKING:
    from workbench.engine.source import Source

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # always fullmatch: `$` matches before "\n"
DATA_FILE = "data.parquet"
STRENGTHS = ("slightly", "clearly")


@dataclass(frozen=True)
class DatasetVersion:
    name: str
    version: int
    kind: str
    rows: int
    created_at: datetime
    path: Path
    columns: list[str]
    lineage: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "rows": self.rows,
            "created_at": self.created_at.isoformat(timespec="seconds"),
        }


def default_root() -> Path:
    return Path(os.environ.get("WORKBENCH_HOME", "workspace"))


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise WorkbenchError(
            f"invalid dataset name {name!r}: use letters, digits, '_', '-', '.' (max 128)"
        )
    return name


CATALOG_FILE = "workbench.duckdb"


def is_workspace(root: str | Path) -> bool:
    """Whether `root` holds a workspace (its catalog file)."""
    return (Path(root) / CATALOG_FILE).is_file()


def no_workspace(root: str | Path) -> NotFoundError:
    return NotFoundError(f"no workspace at {root}; `workbench init {root}` or any write "
                         "command creates one")


class Workspace:
    """A workspace folder. `create=True` (the default) makes it when it is missing, as every
    write does; `create=False` opens an existing one and changes nothing on disk, so reading
    needs no write access, and a mistyped path is an error instead of a new empty workspace."""

    def __init__(self, root: str | Path | None = None, *, create: bool = True) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.datasets_dir = self.root / "datasets"
        self.cache_dir = self.root / "cache"
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
            self.datasets_dir.mkdir(exist_ok=True)
            self.cache_dir.mkdir(exist_ok=True)
        elif not is_workspace(self.root):
            raise no_workspace(self.root)
        self.catalog = Catalog(self.root / CATALOG_FILE)
        self._call_cache: Any = None

    @classmethod
    def open(cls, root: str | Path | None = None) -> Workspace:
        """An existing workspace, for reading: nothing is created (see `create`)."""
        return cls(root, create=False)

    def call_cache(self) -> Any:
        """The model-call cache (SQLite, WAL) in cache/calls.sqlite, opened on first use."""
        if self._call_cache is None:
            from workbench.models.cache import CallCache

            self._call_cache = CallCache(self.cache_dir / "calls.sqlite")
        return self._call_cache

    # datasets ---------------------------------------------------------------------------
    def write_dataset(
        self,
        name: str,
        frame: pl.DataFrame | pl.LazyFrame,
        kind: str,
        lineage: dict[str, Any] | None = None,
        run_key: str | None = None,
    ) -> DatasetVersion:
        """Validate, then publish `frame` as the next version of `name`, all or nothing."""
        check_name(name)
        data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        schema.validate(data, kind, where=f"dataset {name!r}", ids=False)
        data = schema.with_ids(data, kind)

        def write(path: Path) -> int:
            data.write_parquet(path, statistics=True)
            return data.height

        return self._publish(name, kind, write, data.columns, lineage, run_key)

    def publish_parts(self, name: str, folder: Path, kind: str,
                      lineage: dict[str, Any] | None = None,
                      run_key: str | None = None) -> DatasetVersion:
        """Publish finalized parts (validated, ids set) as the next version of `name`,
        streamed into one Parquet file, all or nothing."""
        check_name(name)
        from workbench.engine import parts
        from workbench.engine.source import Source

        sources = parts.files(Path(folder))
        if not sources or not all(f.is_file() for f in sources):
            raise WorkbenchError(f"dataset {name!r}: no Parquet parts in {folder}")
        return self.publish_rows(name, Source(tuple(sources)), kind, lineage, run_key)

    def publish_rows(self, name: str, source: Source, kind: str,
                     lineage: dict[str, Any] | None = None,
                     run_key: str | None = None) -> DatasetVersion:
        """Publish finalized rows (parts, or a view of them) as the next version of `name`,
        streamed into one Parquet file, all or nothing."""
        from workbench.engine import parts

        check_name(name)
        columns = source.schema()
        schema.validate(pl.DataFrame(schema=columns), kind, where=f"dataset {name!r}")
        return self._publish(name, kind, lambda path: parts.concat_to_file(source, path),
                             columns.names(), lineage, run_key)

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A fresh folder under cache/tmp for work in progress (an import's staged parts),
        removed afterwards whatever happens; owned while in use (see `atomic.owned_dir`), so
        after a kill `workbench gc` removes it and never one a live process is filling."""
        with owned_dir(self.cache_dir / "tmp", "") as folder:
            try:
                yield folder
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    def publish_lock(self, name: str) -> Any:
        """The per-dataset lock held while a version number is picked, its folder renamed
        into place and its catalog row written: under it, a version folder without a row is
        a crash's orphan (see `_publish`)."""
        return file_lock(self.cache_dir / "locks" / f"publish-{name}.lock")

    def _publish(self, name: str, kind: str, write: Any, columns: list[str],
                 lineage: dict[str, Any] | None, run_key: str | None) -> DatasetVersion:
        """`write(path) -> rows` fills a new version's data file in an owned temporary folder;
        then, under the dataset's publish lock, it takes the next number after the catalog's
        last version, is renamed into place and registered. A crash between the rename and
        the row leaves a folder without a row; the next publisher (or gc) removes it under the
        same lock, so no version number is ever skipped."""
        folder = self.datasets_dir / name
        with owned_dir(folder, ".tmp-new-") as tmp:
            try:
                with writing(tmp, f"a new version of {name}"):
                    rows = write(tmp / DATA_FILE)
                    fsync_dir(tmp)
                crashpoint("publish.written")
                with self.publish_lock(name):
                    version = self._next_version(name)
                    final = folder / f"v{version}"
                    for orphan in self.orphan_versions(name):
                        shutil.rmtree(orphan)
                    os.rename(tmp, final)
                    fsync_dir(folder)
                    crashpoint("publish.after_rename")
                    try:
                        self.catalog.execute(
                            "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [name, version, kind, rows, datetime.now(),
                             str(final.relative_to(self.root)), json.dumps(columns),
                             json.dumps(lineage or {}, default=str), run_key],
                        )
                    except BaseException:  # not registered: the version must not stay on disk
                        shutil.rmtree(final, ignore_errors=True)
                        raise
                    crashpoint("publish.after_insert")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return self.resolve(f"{name}@{version}")

    def _next_version(self, name: str) -> int:
        """One after the catalog's last version (folders on disk do not count: one without
        a row is an orphan, removed before the rename)."""
        rows = self.catalog.query("SELECT max(version) AS v FROM datasets WHERE name = ?", [name])
        return (rows[0]["v"] or 0) + 1

    def orphan_versions(self, name: str) -> list[Path]:
        """`name`'s version folders that have no catalog row: a publish killed between its
        rename and its row left them. Only under `publish_lock` is that sure (a live
        publisher renames and registers inside it)."""
        folder = self.datasets_dir / name
        on_disk = {int(p.name[1:]): p for p in folder.glob("v*")
                   if p.name[1:].isdigit() and p.is_dir()} if folder.is_dir() else {}
        if not on_disk:
            return []
        rows = self.catalog.query("SELECT version FROM datasets WHERE name = ?", [name])
        known = {r["version"] for r in rows}
        return [p for v, p in sorted(on_disk.items()) if v not in known]

    def list_datasets(self, all_versions: bool = False) -> list[DatasetVersion]:
        where = "" if all_versions else (
            "WHERE (name, version) IN (SELECT name, max(version) FROM datasets GROUP BY name)"
        )
        rows = self.catalog.query(f"SELECT * FROM datasets {where} ORDER BY name, version")
        return [self._version(r) for r in rows]

    def resolve(self, ref: str) -> DatasetVersion:
        """`name` (latest version) or `name@N`."""
        name, _, version = ref.partition("@")
        if version:
            if not version.isdigit():
                raise NotFoundError(f"bad version in {ref!r}: use NAME@N")
            rows = self.catalog.query(
                "SELECT * FROM datasets WHERE name = ? AND version = ?", [name, int(version)]
            )
        else:
            rows = self.catalog.query(
                "SELECT * FROM datasets WHERE name = ? ORDER BY version DESC LIMIT 1", [name]
            )
        if not rows:
            known = sorted({d.name for d in self.list_datasets()})
            hint = f" (datasets: {', '.join(known)})" if known else " (the workspace is empty)"
            raise NotFoundError(f"no dataset {ref!r} in workspace {self.root}{hint}")
        return self._version(rows[0])

    def has_dataset(self, name: str) -> bool:
        return bool(self.catalog.query("SELECT 1 FROM datasets WHERE name = ? LIMIT 1", [name]))

    def find_by_run_key(self, name: str, run_key: str) -> DatasetVersion | None:
        rows = self.catalog.query(
            "SELECT * FROM datasets WHERE name = ? AND run_key = ? ORDER BY version DESC LIMIT 1",
            [name, run_key],
        )
        return self._version(rows[0]) if rows else None

    def scan(self, ref: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.resolve(ref).path / DATA_FILE)

    def read(self, ref: str) -> pl.DataFrame:
        return self.scan(ref).collect()

    def _version(self, row: dict[str, Any]) -> DatasetVersion:
        return DatasetVersion(
            name=row["name"],
            version=row["version"],
            kind=row["kind"],
            rows=row["rows"],
            created_at=row["created_at"],
            path=self.root / row["path"],
            columns=json.loads(row["columns"]),
            lineage=json.loads(row["lineage"]) if row["lineage"] else {},
        )

    # runs -------------------------------------------------------------------------------
    def start_run(self, run_id: str, pipeline: str, yaml_text: str) -> None:
        self.catalog.execute(
            "INSERT INTO runs (run_id, pipeline, started_at, status, yaml) VALUES (?, ?, ?, ?, ?)",
            [run_id, pipeline, datetime.now(), "running", yaml_text],
        )

    def mark_interrupted(self, pipeline: str) -> int:
        """Runs of `pipeline` still marked running when no process holds its lock died."""
        rows = self.catalog.query(
            "SELECT count(*) AS n FROM runs WHERE pipeline = ? AND status = 'running'", [pipeline])
        self.catalog.execute(
            "UPDATE runs SET status = 'interrupted' WHERE pipeline = ? AND status = 'running'",
            [pipeline])
        return rows[0]["n"]

    def log_step(self, run_id: str, index: int, entry: dict[str, Any]) -> None:
        self.catalog.execute(
            "INSERT OR REPLACE INTO step_logs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                index,
                entry["step"],
                entry["status"],
                entry.get("rows_in"),
                entry.get("rows_out"),
                json.dumps(entry.get("dropped", {})),
                entry.get("seconds"),
                json.dumps(entry.get("detail", {}), default=str),
            ],
        )

    def finish_run(
        self,
        run_id: str,
        status: str,
        output: DatasetVersion | None = None,
        error: str | None = None,
    ) -> None:
        self.catalog.execute(
            "UPDATE runs SET finished_at = ?, status = ?, output = ?, output_version = ?, "
            "error = ? WHERE run_id = ?",
            [
                datetime.now(),
                status,
                output.name if output else None,
                output.version if output else None,
                error,
                run_id,
            ],
        )

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return self.catalog.query(
            "SELECT run_id, pipeline, started_at, finished_at, status, output, output_version, "
            "error FROM runs ORDER BY started_at DESC LIMIT ?",
            [limit],
        )

    def run(self, run_id: str) -> dict[str, Any]:
        rows = self.catalog.query(
            "SELECT run_id, pipeline, started_at, finished_at, status, output, output_version, "
            "error FROM runs WHERE run_id = ?", [run_id])
        if not rows:
            raise NotFoundError(f"no run {run_id!r} in workspace {self.root} (see `workbench runs`)")
        return rows[0]

    def step_logs(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.catalog.query(
            "SELECT * FROM step_logs WHERE run_id = ? ORDER BY step_index", [run_id]
        )
        for row in rows:
            row["dropped"] = json.loads(row["dropped"]) if row["dropped"] else {}
            row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
        return rows

    # labels -----------------------------------------------------------------------------
    def add_label(
        self,
        dataset: str,
        row_id: str,
        annotator: str,
        choice: str,
        a_is_chosen: bool,
        note: str | None = None,
        *,
        strength: str | None = None,
        queue: str | None = None,
    ) -> int:
        """Append a label and return its id; a relabel is a new row and the latest one wins.

        `strength` (slightly / clearly) says how much better the picked side is, as
        HelpSteer2-Preference records it; it applies to `a` and `b` only."""
        annotator = annotators.normalise(annotator)
        if choice not in ("a", "b", "tie", "both_bad"):
            raise WorkbenchError(f"label choice must be a, b, tie or both_bad, not {choice!r}")
        if strength is not None and (strength not in STRENGTHS or choice not in ("a", "b")):
            raise WorkbenchError(f"label strength must be one of {', '.join(STRENGTHS)} and "
                                 f"given with choice a or b, not {strength!r} with {choice!r}")
        now = datetime.now()
        with self.catalog.connect() as con:
            con.execute(
                "INSERT INTO annotators VALUES (?, ?) ON CONFLICT DO NOTHING", [annotator, now]
            )
            row = con.execute(
                "INSERT INTO labels (dataset, row_id, annotator, choice, note, a_is_chosen, "
                "created_at, strength, queue) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "RETURNING label_id",
                [dataset, row_id, annotator, choice, note, a_is_chosen, now, strength, queue],
            ).fetchone()
        return int(row[0])

    def latest_labels(self, dataset: str) -> pl.DataFrame:
        """The latest label per (row, annotator); an undone label (see `workbench.labeling.labels.undo`)
        no longer counts, so the one before it is the latest again."""
        with self.catalog.connect(read_only=True) as con:
            table = con.sql(
                "SELECT * FROM labels WHERE dataset = ? "
                "AND label_id NOT IN (SELECT label_id FROM label_undos) QUALIFY row_number() OVER "
                "(PARTITION BY row_id, annotator ORDER BY created_at DESC, label_id DESC) = 1",
                params=[dataset],
            ).to_arrow_table()
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame
