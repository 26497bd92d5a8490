"""The DuckDB catalog: datasets and versions, runs, step logs, labels.

DuckDB lets one process hold a file for writing, and a reader in another process cannot open
it meanwhile. So every operation opens a short-lived connection and retries while the file is
locked; no process (runner, UI, CLI) keeps the catalog open between operations. Opening goes
through a turnstile (an exclusive flock on a side file, held only while opening), so a writer
waiting for readers to finish is not starved by new readers arriving.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.atomic import file_lock

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
    created_at TIMESTAMP NOT NULL
);
"""

LOCK_MARKERS = ("lock", "Conflicting", "being used by another process")


class Catalog:
    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        with self.connect() as con:
            con.execute(SCHEMA)

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[Any]:
        """A connection held only for the block, retried while another process holds the file."""
        import duckdb

        if read_only and not self.path.exists():
            read_only = False
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        with file_lock(self.path.with_name(self.path.name + ".gate")):  # the turnstile
            while True:
                try:
                    con = duckdb.connect(str(self.path), read_only=read_only)
                    break
                except duckdb.Error as exc:  # IOException while another process holds it
                    if not any(m in str(exc) for m in LOCK_MARKERS) or time.monotonic() > deadline:
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
