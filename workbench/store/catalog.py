"""The DuckDB catalog: datasets and versions, runs, step logs, labels.

DuckDB lets one process hold a file for writing, and a reader in another process cannot open
it meanwhile. So every operation opens a short-lived connection and retries while the file is
locked; no process (runner, UI, CLI) keeps the catalog open between operations. Opening goes
through a turnstile (an exclusive flock on a side file, held only while opening), so a writer
waiting for readers to finish is not starved by new readers arriving.

Inside one process (a Streamlit server's sessions, a notebook's threads) DuckDB refuses to
open a file read-only while a read-write connection to it is open, and the other way round.
So connections to one catalog file in one process also pass a readers-writer lock
(`workbench.store.rwlock`): many read-only connections at once, or one read-write connection.
Read paths never open the catalog read-write (the schema is created only when it is missing)
and never create or write a file: readers open the turnstile read-only, so a workspace its
reader may not write to (another user's, a read-only mount) can be read.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.store.atomic import turnstile
from workbench.store.rwlock import lock_for

SCHEMA_VERSION = 3  # bump with an entry in UPGRADES when SCHEMA changes

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    name VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    kind VARCHAR NOT NULL,
    rows BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    path VARCHAR NOT NULL,
    columns VARCHAR NOT NULL,
    lineage JSON,
    run_key VARCHAR,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    pipeline VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    status VARCHAR NOT NULL,
    output VARCHAR,
    output_version INTEGER,
    error VARCHAR,
    yaml VARCHAR
);
CREATE TABLE IF NOT EXISTS step_logs (
    run_id VARCHAR NOT NULL,
    step_index INTEGER NOT NULL,
    step VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    rows_in BIGINT,
    rows_out BIGINT,
    dropped JSON,
    seconds DOUBLE,
    detail JSON,
    PRIMARY KEY (run_id, step_index)
);
CREATE TABLE IF NOT EXISTS annotators (
    name VARCHAR PRIMARY KEY,
    created_at TIMESTAMP NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS label_seq;
CREATE TABLE IF NOT EXISTS labels (
    label_id BIGINT PRIMARY KEY DEFAULT nextval('label_seq'),
    dataset VARCHAR NOT NULL,
    row_id VARCHAR NOT NULL,
    annotator VARCHAR NOT NULL,
    choice VARCHAR NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
    note VARCHAR,
    a_is_chosen BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    strength VARCHAR,
    queue VARCHAR
);
CREATE TABLE IF NOT EXISTS label_undos (
    label_id BIGINT PRIMARY KEY,
    annotator VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS rankings (
    label_id BIGINT PRIMARY KEY DEFAULT nextval('label_seq'),
    dataset VARCHAR NOT NULL,
    row_id VARCHAR NOT NULL,
    annotator VARCHAR NOT NULL,
    ranks INTEGER[] NOT NULL,
    shown_order INTEGER[] NOT NULL,
    note VARCHAR,
    queue VARCHAR,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS queues (
    name VARCHAR PRIMARY KEY,
    dataset VARCHAR NOT NULL,
    filter VARCHAR,
    min_labels INTEGER NOT NULL,
    gold_rate DOUBLE NOT NULL,
    guidelines VARCHAR,
    created_at TIMESTAMP NOT NULL,
    serve_order VARCHAR,
    order_judges VARCHAR[]
);
CREATE TABLE IF NOT EXISTS gold (
    dataset VARCHAR NOT NULL,
    row_id VARCHAR NOT NULL,
    decision VARCHAR NOT NULL CHECK (decision IN ('chosen', 'rejected', 'tie', 'both_bad')),
    created_by VARCHAR,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (dataset, row_id)
);
CREATE TABLE IF NOT EXISTS catalog_meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
"""

# What each version adds to a catalog of the version before it. SCHEMA (all CREATE ... IF NOT
# EXISTS) creates new tables; these statements change existing ones and must be idempotent.
UPGRADES: dict[int, tuple[str, ...]] = {
    # 2: labels get an optional strength (slightly / clearly, as HelpSteer2-Preference records
    # it) and the queue they were made in; undo is a row in label_undos (labels stay
    # append-only); rankings of candidates, label queues and gold answers are new tables.
    2: ("ALTER TABLE labels ADD COLUMN IF NOT EXISTS strength VARCHAR",
        "ALTER TABLE labels ADD COLUMN IF NOT EXISTS queue VARCHAR"),
    # 3: a queue's order (random, sequential, uncertain, flips, disagree) and the judges it
    # reads (workbench.labeling.queues); NULL is the random order every earlier queue had.
    3: ("ALTER TABLE queues ADD COLUMN IF NOT EXISTS serve_order VARCHAR",
        "ALTER TABLE queues ADD COLUMN IF NOT EXISTS order_judges VARCHAR[]"),
}

LOCK_MARKERS = ("lock", "Conflicting", "being used by another process")
NOT_WRITABLE_MARKERS = ("Permission denied", "Read-only file system")


class Catalog:
    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self._lock = lock_for(path)
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        """Create or upgrade the schema only when it is missing or older: an existing, current
        catalog is only ever opened read-only here, so reading never needs write access."""
        if self.path.exists():
            with self.connect(read_only=True) as con:
                found = schema_version(con)
            if found == SCHEMA_VERSION:
                return
            _check_not_newer(found, self.path)
            if not os.access(self.path, os.W_OK) or not os.access(self.path.parent, os.W_OK):
                raise WorkbenchError(
                    f"catalog {self.path} has schema version {found} and needs an upgrade to "
                    f"{SCHEMA_VERSION}, which needs write access: run `workbench init "
                    f"{self.path.parent}` once as a user who may write there")
        with self.connect() as con:
            found = schema_version(con)  # again: another thread or process may have done it
            _check_not_newer(found, self.path)
            if found < SCHEMA_VERSION:
                con.execute(SCHEMA)
                for version in range(found + 1, SCHEMA_VERSION + 1):
                    for statement in UPGRADES.get(version, ()):
                        con.execute(statement)
                con.execute(
                    "INSERT OR REPLACE INTO catalog_meta VALUES ('schema_version', ?)",
                    [str(SCHEMA_VERSION)],
                )

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[Any]:
        """A connection held only for the block, retried while another process holds the file.

        Within this process, read-only blocks run together and a read-write block runs alone;
        a block nested in a read-write block of the same thread reuses its (read-write) mode."""
        import duckdb

        if read_only and not self.path.exists():
            read_only = False
        with self._lock.hold(write=not read_only, timeout=self.timeout) as writing:
            deadline = time.monotonic() + self.timeout
            delay = 0.005
            with turnstile(self.path.with_name(self.path.name + ".gate"), create=writing):
                while True:
                    try:
                        con = duckdb.connect(str(self.path), read_only=not writing)
                        break
                    except duckdb.Error as exc:  # IOException while another process holds it
                        if writing and any(m in str(exc) for m in NOT_WRITABLE_MARKERS):
                            raise WorkbenchError(
                                f"workspace {self.path.parent} is read-only here "
                                f"({_reason(exc)}): it can be read, not changed") from None
                        if (not any(m in str(exc) for m in LOCK_MARKERS)
                                or time.monotonic() > deadline):
                            raise
                        time.sleep(delay * (1 + random.random()))
                        delay = min(delay * 2, 0.1)
            try:
                yield con
            finally:
                con.close()

    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        with self.connect(read_only=True) as con:
            cur = con.execute(sql, params or [])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        with self.connect() as con:
            con.execute(sql, params or [])


def schema_version(con: Any) -> int:
    """The catalog's schema version: 0 when it predates versioning or is empty."""
    tables = {row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}
    if "catalog_meta" not in tables:
        return 0
    rows = con.execute(
        "SELECT value FROM catalog_meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else 0


def _reason(exc: Exception) -> str:
    return next((m.lower() for m in NOT_WRITABLE_MARKERS if m in str(exc)), str(exc))


def _check_not_newer(found: int, path: Path) -> None:
    if found > SCHEMA_VERSION:
        raise WorkbenchError(
            f"catalog {path} has schema version {found}, newer than this workbench "
            f"({SCHEMA_VERSION}): upgrade preference-workbench"
        )
