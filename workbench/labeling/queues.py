"""Label queues: which row each annotator labels next, and how far a queue has come.

- A queue is a dataset, an optional typed `WHERE` filter (run in the query sandbox), a number
  K of annotators wanted per row (rows with fewer than K annotators' labels are served; K > 1
  gives the overlap that agreement needs), a gold rate and guidelines.
- Picking rows is SQL: one read of the catalog (rows labelled enough, by this annotator,
  gold, skipped) and one query in the sandbox over the dataset's ids, in an order drawn per
  queue (K > 1: the same for everyone; K = 1: per annotator); no loop over rows.
- Sides are randomised per (annotator, row) by a hash, so an annotator who comes back to a
  row sees it the same way; each label records `a_is_chosen`.
- Gold pairs (see `workbench.labeling.labels.set_gold`) are mixed in at the queue's rate.
- A queue's `order` spends labels where they matter: `random` (the drawn order above),
  `sequential` (the dataset's row order), `uncertain` (smallest judge |margin| first),
  `flips` (pairs whose llm_pairwise verdict flipped with the order first, then by |margin|),
  `disagree` (pairs two judges decide differently first, then by the first judge's
  |margin|). Judges are read as `workbench.labeling.judge_signals` reads them; rows a judge did not
  judge come last, ties in the order by the drawn order. Everyone walks an ordered queue in
  the same order, whatever K.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workbench.errors import NotFoundError, WorkbenchError
from workbench.labeling import annotators, judge_signals
from workbench.labeling.policy import LEAD_PREFIX
from workbench.query.query import count_rows, queue_rows
from workbench.query.sandbox import version_views
from workbench.workspace import DATA_FILE, DatasetVersion, Workspace, check_name

ORDERS = ("random", "sequential", "uncertain", "flips", "disagree")

# Live (not undone) pairwise labels and rankings of one dataset, as (row_id, annotator).
_LIVE = """
    SELECT row_id, annotator, queue, label_id FROM labels
    WHERE dataset = $dataset AND label_id NOT IN (SELECT label_id FROM label_undos)
    UNION ALL
    SELECT row_id, annotator, queue, label_id FROM rankings
    WHERE dataset = $dataset AND label_id NOT IN (SELECT label_id FROM label_undos)
"""


@dataclass(frozen=True)
class Queue:
    name: str
    dataset: str  # NAME (its latest version when served) or NAME@N
    filter: str | None
    min_labels: int  # K: rows with fewer than K annotators are served
    gold_rate: float
    guidelines: str
    created_at: datetime
    order: str = "random"  # one of ORDERS
    judges: tuple[str, ...] = ()  # judge specs the order reads (workbench.labeling.judge_signals)

    @property
    def dataset_name(self) -> str:
        return self.dataset.partition("@")[0]


@dataclass(frozen=True)
class Item:
    """One row to label, as served to one annotator."""

    row: dict[str, Any]
    gold: bool
    a_is_chosen: bool  # preference rows: response A is the dataset's chosen
    order: list[int]  # candidates rows: the order the responses are shown in

    @property
    def row_id(self) -> str:
        return str(self.row["id"])


def create_queue(ws: Workspace, name: str, dataset: str, filter: str | None = None,
                 min_labels: int = 1, gold_rate: float = 0.0, guidelines: str = "",
                 order: str = "random", judges: Sequence[str] | None = None) -> Queue:
    """Define (or redefine) a queue; its filter is checked by running it once. `judges` name
    the judge(s) an ordered queue reads (`workbench.labeling.judge_signals` specs; by default the
    dataset's llm_pairwise columns, else its scores; `disagree` needs two, by default
    pairwise and scores); they are checked against the dataset's columns here."""
    check_name(name)
    if min_labels < 1:
        raise WorkbenchError("a queue needs at least 1 label per row (min_labels >= 1)")
    if not 0 <= gold_rate < 1:
        raise WorkbenchError(f"gold rate must be in [0, 1), not {gold_rate}")
    version = ws.resolve(dataset)
    if version.kind not in ("preference", "candidates"):
        raise WorkbenchError(f"queues label preference or candidates datasets; "
                             f"{version.name} is {version.kind}")
    filter = filter.strip() if filter and filter.strip() else None
    count_rows(ws, dataset, filter)  # a bad filter fails here, with the sandbox's message
    specs = order_judges(order, [j.strip() for j in judges or [] if j.strip()], version,
                         f"queue {name!r}")
    ws.catalog.execute(
        "INSERT OR REPLACE INTO queues (name, dataset, filter, min_labels, gold_rate, "
        "guidelines, created_at, serve_order, order_judges) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [name, dataset, filter, min_labels, gold_rate, guidelines, datetime.now(), order,
         list(specs)])
    return get_queue(ws, name)


def order_judges(order: str, judges: Sequence[str], version: DatasetVersion,
                 where: str) -> tuple[str, ...]:
    """The judge specs an order reads, checked against the version's columns (an error names
    the queue, the order and what is missing)."""
    if order not in ORDERS:
        raise WorkbenchError(f"{where}: unknown order {order!r} (orders: {', '.join(ORDERS)})")
    wanted = {"random": 0, "sequential": 0, "uncertain": 1, "flips": 1, "disagree": 2}[order]
    if len(judges) > wanted:
        raise WorkbenchError(f"{where}: order {order} reads {wanted} judge(s), "
                             f"not {len(judges)} ({', '.join(judges)})")
    if wanted == 0:
        return ()
    import polars as pl

    schema = pl.read_parquet_schema(version.path / DATA_FILE)
    at = f"{where}, order {order}, dataset {version.ref}"
    if order == "flips":
        if judges and judges[0] != judge_signals.PAIRWISE:
            raise WorkbenchError(f"{at}: flips are llm_pairwise's (judge 'pairwise'); "
                                 f"{judges[0]!r} asked one order")
        return (judge_signals.resolve(judge_signals.PAIRWISE, schema, at).spec,)
    if order == "disagree" and not judges:
        judges = judge_signals.available(schema)
        if len(judges) < 2:
            raise WorkbenchError(
                f"{at}: disagree compares two judges; the dataset has "
                f"{', '.join(judges) or 'none'} of pairwise and scores, so name two (a margin "
                "column counts as one)")
    if order == "disagree" and len(judges) < 2:
        raise WorkbenchError(f"{at}: disagree compares two judges, not one")
    return tuple(judge_signals.resolve(j, schema, at).spec for j in (judges or [None]))


def order_terms(queue: Queue, version: DatasetVersion) -> list[str]:
    """ORDER BY terms (SQL over the dataset's columns, built here from checked column names,
    never from typed text) that come before the queue's drawn order."""
    if queue.order in ("random", "sequential"):
        return []
    where = f"queue {queue.name!r}"
    specs = order_judges(queue.order, queue.judges, version, where)
    first = judge_signals.Judge(specs[0])
    size = f"abs({first.margin_sql()}) ASC NULLS LAST"
    if queue.order == "uncertain":
        return [size]
    if queue.order == "flips":
        return [f"coalesce({first.flip_sql()}, false) DESC", size]
    second = judge_signals.Judge(specs[1])
    return [f"coalesce(sign({first.margin_sql()}) <> sign({second.margin_sql()}), false) DESC",
            size]


_COLUMNS = ("SELECT name, dataset, filter, min_labels, gold_rate, guidelines, created_at, "
            "coalesce(serve_order, 'random') AS \"order\", "
            "coalesce(order_judges, []::VARCHAR[]) AS judges FROM queues")


def _queue(row: dict[str, Any]) -> Queue:
    return Queue(**{**row, "judges": tuple(row["judges"])})


def all_queues(ws: Workspace) -> list[Queue]:
    return [_queue(row) for row in ws.catalog.query(f"{_COLUMNS} ORDER BY name")]


def get_queue(ws: Workspace, name: str) -> Queue:
    rows = ws.catalog.query(f"{_COLUMNS} WHERE name = ?", [name])
    if not rows:
        raise NotFoundError(f"no label queue {name!r} (queues: "
                            f"{', '.join(q.name for q in all_queues(ws)) or 'none'})")
    return _queue(rows[0])


def _salt(queue: Queue, annotator: str) -> str:
    """Overlap wanted (K > 1): everyone walks the same order. K = 1: each their own order, so
    two people labeling at once rarely take the same row."""
    return queue.name if queue.min_labels > 1 else f"{queue.name}\x1f{annotator}"


BATCH = 16  # rows of a queue's order fetched at once by `next_item`

_DONE = f"""
    SELECT row_id FROM ({_LIVE}) WHERE NOT starts_with(annotator, $lead)
    GROUP BY row_id HAVING count(DISTINCT annotator) >= $k OR bool_or(annotator = $me)
"""


def next_items(ws: Workspace, queue: Queue, annotator: str, skip: list[str] | None = None,
               limit: int = 1, gold: bool = True) -> list[Item]:
    """The next rows for `annotator`: a gold row at the queue's rate (unless gold=False),
    then rows with fewer than K labels that they have not labelled or skipped, in the queue's
    order. One catalog read and one query in the sandbox."""
    annotator = annotators.normalise(annotator)
    skip = list(skip or [])
    versions = ws.list_datasets(all_versions=True)
    mine = {"dataset": queue.dataset_name, "me": annotator}
    with ws.catalog.connect(read_only=True) as con:
        golden = _gold_rows(con, queue, annotator, skip) if gold else None
        # labelled by this annotator or by K people (leads aside), gold rows, skipped rows
        exclude = con.sql(
            f"""{_DONE} UNION SELECT row_id FROM gold WHERE dataset = $dataset
                UNION SELECT unnest($skip::VARCHAR[])""",
            params={**mine, "k": queue.min_labels, "lead": LEAD_PREFIX, "skip": skip},
        ).to_arrow_table()
    items: list[Item] = []
    if golden is not None and golden.num_rows:
        rows = queue_rows(ws, queue.dataset, None, only=golden, salt=annotator, limit=1,
                          versions=versions)
        items += [make_item(row, annotator, gold=True) for row in rows.iter_rows(named=True)]
    if len(items) < limit:
        ordered = queue.order not in ("random", "sequential")
        version = (version_views(versions).get(queue.dataset) or ws.resolve(queue.dataset)
                   if ordered else None)
        rows = queue_rows(ws, queue.dataset, queue.filter, exclude=exclude,
                          salt=_salt(queue, annotator), limit=limit - len(items),
                          versions=versions,
                          order=order_terms(queue, version) if version else (),
                          sequential=queue.order == "sequential")
        items += [make_item(row, annotator) for row in rows.iter_rows(named=True)]
    return items


def _gold_rows(con: Any, queue: Queue, annotator: str, skip: list[str]) -> Any:
    """Gold rows this annotator has not labelled (an Arrow table of row_id) when it is their
    gold turn, else None. The turn is a draw at the gold rate seeded by the queue, the
    annotator and how many rows they labelled in it, so it is stable across reloads."""
    if queue.gold_rate <= 0:
        return None
    mine = {"dataset": queue.dataset_name, "me": annotator}
    done = con.execute(f"SELECT count(DISTINCT row_id) FROM ({_LIVE}) WHERE annotator = $me "
                       "AND queue = $q", {**mine, "q": queue.name}).fetchall()[0][0]
    if random.Random(f"{queue.name}\x1f{annotator}\x1f{done}").random() >= queue.gold_rate:
        return None
    return con.sql(
        f"""SELECT row_id FROM gold WHERE dataset = $dataset
            AND row_id NOT IN (SELECT row_id FROM ({_LIVE}) WHERE annotator = $me)
            AND row_id NOT IN (SELECT unnest($skip::VARCHAR[]))""",
        params={**mine, "skip": skip}).to_arrow_table()


def next_item(ws: Workspace, queue: Queue, annotator: str, skip: list[str] | None = None,
              buffer: list[Item] | None = None) -> Item | None:
    """The next row for `annotator`, as `next_items` picks it, with `buffer` (a list the
    caller keeps between calls, e.g. in the page's session) holding the next rows of the
    queue's order fetched BATCH at a time. Each call checks the buffered rows against the
    labels in one catalog read (someone may have labelled them meanwhile) and queries the
    dataset only when the buffer runs dry: after a label on a million-row queue, the next
    row costs one short catalog read."""
    annotator = annotators.normalise(annotator)
    buffer = buffer if buffer is not None else []
    skip = list(skip or [])
    with ws.catalog.connect(read_only=True) as con:
        golden = _gold_rows(con, queue, annotator, skip)
        done = {r[0] for r in con.execute(
            f"SELECT row_id FROM ({_DONE}) WHERE row_id IN (SELECT unnest($ids::VARCHAR[]))",
            {"dataset": queue.dataset_name, "me": annotator, "k": queue.min_labels,
             "lead": LEAD_PREFIX, "ids": [i.row_id for i in buffer]}).fetchall()} if buffer \
            else set()
    buffer[:] = [i for i in buffer if i.row_id not in done and i.row_id not in skip]
    if golden is not None and golden.num_rows:
        rows = queue_rows(ws, queue.dataset, None, only=golden, salt=annotator, limit=1)
        if rows.height:
            return make_item(rows.row(0, named=True), annotator, gold=True)
    if not buffer:
        buffer.extend(next_items(ws, queue, annotator, skip, limit=BATCH, gold=False))
    return buffer.pop(0) if buffer else None


def make_item(row: dict[str, Any], annotator: str, gold: bool = False) -> Item:
    n = len(row.get("responses") or [])
    return Item(row=row, gold=gold, a_is_chosen=a_is_chosen(annotator, str(row["id"])),
                order=shown_order(annotator, str(row["id"]), n))


def get_row(ws: Workspace, dataset: str, row_id: str) -> dict[str, Any] | None:
    """One row of a dataset (NAME or NAME@N) by id, read through the query sandbox."""
    import pyarrow as pa

    rows = queue_rows(ws, dataset, None, only=pa.table({"row_id": [row_id]}), limit=1)
    return rows.row(0, named=True) if rows.height else None


def row_item(ws: Workspace, queue: Queue, annotator: str, row_id: str) -> Item | None:
    """One row of the queue's dataset by id (to go back to it), as this annotator sees it."""
    annotator = annotators.normalise(annotator)
    row = get_row(ws, queue.dataset, row_id)
    if row is None:
        return None
    gold = bool(ws.catalog.query("SELECT 1 FROM gold WHERE dataset = ? AND row_id = ?",
                                 [queue.dataset_name, row_id]))
    return make_item(row, annotator, gold=gold)


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def a_is_chosen(annotator: str, row_id: str) -> bool:
    """Which side shows the dataset's chosen reply as A: a coin flip per (annotator, row)."""
    return _digest("sides", annotator, row_id)[0] % 2 == 0


def shown_order(annotator: str, row_id: str, n: int) -> list[int]:
    """The order a candidates row's n responses are shown in, per (annotator, row)."""
    order = list(range(n))
    random.Random(_digest("order", annotator, row_id)).shuffle(order)
    return order


def queue_size(ws: Workspace, queue: Queue) -> int:
    """Rows of the queue's dataset its filter keeps (a query over the dataset: callers may
    cache it per queue and dataset version, which never change)."""
    return count_rows(ws, queue.dataset, queue.filter)[0]


def progress(ws: Workspace, queue: Queue, annotator: str | None = None,
             rows: int | None = None) -> dict[str, int]:
    """Rows in the queue (`rows` if the caller knows it from `queue_size`), rows labelled in
    it by K people or more (leads aside), and rows this annotator labelled in it. The counts
    are one catalog read."""
    with ws.catalog.connect(read_only=True) as con:
        complete, mine = con.execute(
            f"""WITH live AS ({_LIVE}),
                    here AS (SELECT DISTINCT row_id FROM live WHERE queue = $q)
                SELECT (SELECT count(*) FROM (
                            SELECT row_id FROM live WHERE NOT starts_with(annotator, $lead)
                            AND row_id IN (SELECT row_id FROM here)
                            GROUP BY row_id HAVING count(DISTINCT annotator) >= $k)),
                       (SELECT count(DISTINCT row_id) FROM live
                        WHERE annotator = $me AND queue = $q)""",
            {"dataset": queue.dataset_name, "k": queue.min_labels, "lead": LEAD_PREFIX,
             "me": annotators.normalise(annotator) if annotator else "",
             "q": queue.name}).fetchone()
    total = queue_size(ws, queue) if rows is None else rows
    return {"rows": total, "complete": int(complete), "mine": int(mine)}
