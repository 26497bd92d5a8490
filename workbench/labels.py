"""Labeling: queues, labels and rankings, undo, gold pairs, adjudication.

The app, the CLI and notebooks share this module; the app never writes SQL of its own.

- A label is written the moment it is made and never overwritten: a relabel is a new row and
  the latest one wins. Undo appends the label's id to `label_undos` (labels stay append-only,
  so what was undone stays visible to an audit); an undone label no longer counts anywhere.
- Sides are randomised per (annotator, row) by a hash, so an annotator who comes back to a
  row sees it the same way, and each label records `a_is_chosen`.
- A queue is a dataset, an optional typed `WHERE` filter (run in the query sandbox), a number
  K of annotators wanted per row (rows with fewer than K labels are served; K > 1 gives the
  overlap that agreement needs), a gold rate and guidelines. Picking the next rows is one SQL
  query in the catalog (rows labelled enough) and one in the sandbox (the rows themselves).
- Gold pairs have a known decision; a queue mixes them in at its rate and each annotator's
  accuracy on them is reported.
- An adjudicator's resolution is itself a label, by annotator `lead:NAME`; the export's
  label policies let it settle the row (`workbench.io.export.label_decisions`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from workbench.errors import NotFoundError, WorkbenchError
from workbench.io.export import LEAD_PREFIX
from workbench.query import count_rows, queue_rows
from workbench.workspace import Workspace, check_name

CHOICES = ("a", "b", "tie", "both_bad")
DECISIONS = ("chosen", "rejected", "tie", "both_bad")

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


# queues -------------------------------------------------------------------------------------
def create_queue(ws: Workspace, name: str, dataset: str, filter: str | None = None,
                 min_labels: int = 1, gold_rate: float = 0.0, guidelines: str = "") -> Queue:
    """Define (or redefine) a queue; its filter is checked by running it once."""
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
    ws.catalog.execute(
        "INSERT OR REPLACE INTO queues VALUES (?, ?, ?, ?, ?, ?, ?)",
        [name, dataset, filter, min_labels, gold_rate, guidelines, datetime.now()])
    return get_queue(ws, name)


def queues(ws: Workspace) -> list[Queue]:
    return [Queue(**row) for row in ws.catalog.query("SELECT * FROM queues ORDER BY name")]


def get_queue(ws: Workspace, name: str) -> Queue:
    rows = ws.catalog.query("SELECT * FROM queues WHERE name = ?", [name])
    if not rows:
        raise NotFoundError(f"no label queue {name!r} (queues: "
                            f"{', '.join(q.name for q in queues(ws)) or 'none'})")
    return Queue(**rows[0])


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
        rows = queue_rows(ws, queue.dataset, queue.filter, exclude=exclude,
                          salt=_salt(queue, annotator), limit=limit - len(items),
                          versions=versions)
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


# writing ------------------------------------------------------------------------------------
def check_annotator(name: str, lead: bool = False) -> str:
    """Annotator names are free text; `lead:` names are for resolutions only."""
    name = name.strip()
    if not name or len(name) > 64:
        raise WorkbenchError("an annotator name is 1 to 64 characters")
    if name.startswith(LEAD_PREFIX) != lead:
        raise WorkbenchError(f"{LEAD_PREFIX}NAME is the adjudicator's name, for resolutions only"
                             if not lead else f"a resolution's annotator is {LEAD_PREFIX}NAME")
    return name


def label(ws: Workspace, dataset: str, item_row_id: str, annotator: str, choice: str,
          a_is_chosen: bool, strength: str | None = None, note: str | None = None,
          queue: str | None = None) -> int:
    """Write one pairwise label now (see `Workspace.add_label`); returns its id."""
    check_annotator(annotator)
    return ws.add_label(dataset.partition("@")[0], item_row_id, annotator, choice, a_is_chosen,
                        note or None, strength=strength, queue=queue)


def rank(ws: Workspace, dataset: str, row_id: str, annotator: str, ranks: list[int | None],
         shown_order: list[int], note: str | None = None, queue: str | None = None) -> int:
    """Write a ranking of a candidates row's responses: `ranks[i]` is response i's rank (1 is
    best; equal ranks are ties; None leaves it unranked), so partial orders are allowed."""
    check_annotator(annotator)
    ranked = [r for r in ranks if r is not None]
    if len(ranked) < 2:
        raise WorkbenchError("rank at least two responses")
    if any(r < 1 or r > len(ranks) for r in ranked):
        raise WorkbenchError(f"ranks go from 1 (best) to {len(ranks)}")
    if sorted(shown_order) != list(range(len(ranks))):
        raise WorkbenchError("shown_order must be a permutation of the responses")
    now = datetime.now()
    with ws.catalog.connect() as con:
        con.execute("INSERT INTO annotators VALUES (?, ?) ON CONFLICT DO NOTHING",
                    [annotator, now])
        row = con.execute(
            "INSERT INTO rankings (dataset, row_id, annotator, ranks, shown_order, note, queue, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING label_id",
            [dataset.partition("@")[0], row_id, annotator, ranks, shown_order, note or None,
             queue, now]).fetchone()
    return int(row[0])


@dataclass(frozen=True)
class Undone:
    label_id: int
    row_id: str
    dataset: str


def undo_last(ws: Workspace, annotator: str, queue: str | None = None) -> Undone | None:
    """Undo this annotator's latest live label or ranking (in `queue` if given): its id goes
    into `label_undos`; the label row itself stays. Calling again undoes the one before."""
    with ws.catalog.connect() as con:
        found = con.execute(
            """SELECT label_id, row_id, dataset FROM (
                   SELECT label_id, row_id, dataset, annotator, queue FROM labels
                   UNION ALL
                   SELECT label_id, row_id, dataset, annotator, queue FROM rankings)
               WHERE annotator = ? AND (? IS NULL OR queue = ?)
                 AND label_id NOT IN (SELECT label_id FROM label_undos)
               ORDER BY label_id DESC LIMIT 1""", [annotator, queue, queue]).fetchone()
        if found is None:
            return None
        con.execute("INSERT INTO label_undos VALUES (?, ?, ?)",
                    [found[0], annotator, datetime.now()])
    return Undone(int(found[0]), str(found[1]), str(found[2]))


def my_label(ws: Workspace, dataset: str, row_id: str, annotator: str) -> dict[str, Any] | None:
    """This annotator's live latest label (or ranking) of a row, to show when they go back."""
    rows = ws.catalog.query(
        """SELECT * FROM (
               SELECT label_id, choice, strength, note, a_is_chosen, NULL AS ranks FROM labels
               WHERE dataset = ? AND row_id = ? AND annotator = ?
               UNION ALL
               SELECT label_id, NULL, NULL, note, NULL, ranks FROM rankings
               WHERE dataset = ? AND row_id = ? AND annotator = ?)
           WHERE label_id NOT IN (SELECT label_id FROM label_undos)
           ORDER BY label_id DESC LIMIT 1""", [dataset, row_id, annotator] * 2)
    return rows[0] if rows else None


# progress and the labels table ----------------------------------------------------------------
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
             "me": annotator or "", "q": queue.name}).fetchone()
    total = queue_size(ws, queue) if rows is None else rows
    return {"rows": total, "complete": int(complete), "mine": int(mine)}


def labels_table(ws: Workspace, dataset: str | None = None, live: bool = True) -> pl.DataFrame:
    """Every pairwise label (of one dataset), oldest first, with `decision` (the label as a
    statement about the dataset's pair) and `undone`; live=True leaves undone ones out."""
    with ws.catalog.connect(read_only=True) as con:
        table = con.sql(
            """SELECT l.*, u.label_id IS NOT NULL AS undone,
                      CASE WHEN l.choice IN ('a', 'b') THEN
                           CASE WHEN (l.choice = 'a') = l.a_is_chosen THEN 'chosen'
                                ELSE 'rejected' END
                           ELSE l.choice END AS decision
               FROM labels l LEFT JOIN label_undos u USING (label_id)
               WHERE (? IS NULL OR dataset = ?) AND (NOT ? OR u.label_id IS NULL)
               ORDER BY label_id""", params=[dataset, dataset, live]).to_arrow_table()
    return _frame(table)


def rankings_table(ws: Workspace, dataset: str | None = None) -> pl.DataFrame:
    """Live rankings, the latest per (row, annotator)."""
    with ws.catalog.connect(read_only=True) as con:
        table = con.sql(
            """SELECT * FROM rankings WHERE (? IS NULL OR dataset = ?)
               AND label_id NOT IN (SELECT label_id FROM label_undos)
               QUALIFY row_number() OVER (PARTITION BY dataset, row_id, annotator
                                          ORDER BY created_at DESC, label_id DESC) = 1
               ORDER BY label_id""", params=[dataset, dataset]).to_arrow_table()
    return _frame(table)


def decisions(ws: Workspace, dataset: str) -> pl.DataFrame:
    """The latest live label per (row, annotator) as a decision about the pair:
    row_id, annotator, decision (chosen, rejected, tie, both_bad), strength, created_at."""
    latest = ws.latest_labels(dataset)
    if latest.height == 0:
        return pl.DataFrame(schema={"row_id": pl.String, "annotator": pl.String,
                                    "decision": pl.String, "strength": pl.String,
                                    "created_at": pl.Datetime})
    side = (pl.when((pl.col("choice") == "a") == pl.col("a_is_chosen")).then(pl.lit("chosen"))
            .otherwise(pl.lit("rejected")))
    return latest.select(
        "row_id", "annotator",
        pl.when(pl.col("choice").is_in(["a", "b"])).then(side).otherwise(pl.col("choice"))
        .alias("decision"), "strength", "created_at").sort("row_id", "annotator")


def _frame(table: Any) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


# gold ---------------------------------------------------------------------------------------
def set_gold(ws: Workspace, dataset: str, row_id: str, decision: str = "chosen",
             created_by: str | None = None) -> None:
    """Mark a row as gold with its known decision about the pair (usually `chosen`: the
    dataset's chosen reply is known to be better)."""
    if decision not in DECISIONS:
        raise WorkbenchError(f"a gold decision is one of {', '.join(DECISIONS)}")
    ws.catalog.execute("INSERT OR REPLACE INTO gold VALUES (?, ?, ?, ?, ?)",
                       [dataset.partition("@")[0], row_id, decision, created_by, datetime.now()])


def gold_from_dataset(ws: Workspace, dataset: str, n: int, where: str | None = None,
                      seed: int = 0, created_by: str | None = None) -> int:
    """Mark n rows (matching the typed `where`, drawn in a seeded order) as gold whose known
    answer is the dataset's own `chosen`: for pairs whose preference is not in doubt."""
    rows = queue_rows(ws, dataset, where, salt=f"gold{seed}", limit=n)
    name, now = dataset.partition("@")[0], datetime.now()
    with ws.catalog.connect() as con:
        con.executemany("INSERT OR REPLACE INTO gold VALUES (?, ?, 'chosen', ?, ?)",
                        [[name, row_id, created_by, now] for row_id in rows["id"].to_list()])
    return rows.height


def gold_table(ws: Workspace, dataset: str) -> pl.DataFrame:
    with ws.catalog.connect(read_only=True) as con:
        return _frame(con.sql("SELECT * FROM gold WHERE dataset = ? ORDER BY created_at",
                                  params=[dataset]).to_arrow_table())


def gold_accuracy(ws: Workspace, dataset: str) -> pl.DataFrame:
    """Per annotator: gold rows labelled, how many match the known decision, accuracy."""
    gold = gold_table(ws, dataset).select("row_id", pl.col("decision").alias("gold"))
    labelled = decisions(ws, dataset).join(gold, on="row_id")
    return (labelled.group_by("annotator")
            .agg(pl.len().alias("gold_labelled"),
                 (pl.col("decision") == pl.col("gold")).sum().alias("correct"))
            .with_columns((pl.col("correct") / pl.col("gold_labelled")).alias("accuracy"))
            .sort("annotator"))


# adjudication -------------------------------------------------------------------------------
def disagreements(ws: Workspace, dataset: str) -> pl.DataFrame:
    """Rows whose annotators (leads aside) decided differently: row_id, n annotators, their
    decisions as "name: decision" strings, and the lead's resolution if there is one."""
    table = decisions(ws, dataset)
    lead = pl.col("annotator").str.starts_with(LEAD_PREFIX)
    people = table.filter(~lead)
    resolved = (table.filter(lead).sort("created_at").group_by("row_id")
                .agg(pl.col("decision").last().alias("resolution"),
                     pl.col("annotator").last().alias("resolved_by")))
    return (people.group_by("row_id")
            .agg(pl.len().alias("annotators"), pl.col("decision").n_unique().alias("_kinds"),
                 (pl.col("annotator") + ": " + pl.col("decision")).sort().alias("decisions"))
            .filter(pl.col("_kinds") > 1).drop("_kinds")
            .join(resolved, on="row_id", how="left").sort("row_id"))


def resolve(ws: Workspace, dataset: str, row_id: str, lead: str, decision: str,
            note: str | None = None) -> int:
    """A lead's resolution of a row: a label by `lead:NAME` (a `NAME` gets the prefix)."""
    if decision not in DECISIONS:
        raise WorkbenchError(f"a resolution is one of {', '.join(DECISIONS)}")
    name = lead if lead.startswith(LEAD_PREFIX) else LEAD_PREFIX + lead.strip()
    check_annotator(name, lead=True)
    choice = {"chosen": "a", "rejected": "b"}.get(decision, decision)
    return ws.add_label(dataset.partition("@")[0], row_id, name, choice, True, note or None)


def labelled_datasets(ws: Workspace) -> list[str]:
    """Names of datasets with at least one live label or ranking."""
    rows = ws.catalog.query(
        """SELECT DISTINCT dataset FROM (SELECT dataset, label_id FROM labels UNION ALL
                                         SELECT dataset, label_id FROM rankings)
           WHERE label_id NOT IN (SELECT label_id FROM label_undos) ORDER BY dataset""")
    return [r["dataset"] for r in rows]


def labelled_version(ws: Workspace, ref: str, name: str | None = None,
                     policy: str = "majority", keep_undecided: bool = False) -> tuple[Any, dict]:
    """Write a new dataset version where human labels decide chosen/rejected (the same
    decisions as `workbench export --labels --label-policy POLICY`): a pair decided for its
    rejected side is swapped, ties and both-bad pairs are left out (or kept, flagged in
    `tie`/`both_bad`, with keep_undecided), rows without a majority are left out, unlabelled
    rows stay. Returns (the new version, the counts)."""
    from workbench.io.export import apply_labels

    version = ws.resolve(ref)
    if version.kind != "preference":
        raise WorkbenchError(f"labels decide preference datasets; {version.name} is "
                             f"{version.kind}")
    frame, counts = apply_labels(ws.read(version.ref), ws.latest_labels(version.name), policy,
                                 keep_undecided=keep_undecided)
    target = name or f"{version.name}-labelled"
    if target == version.name:
        raise WorkbenchError("write the labelled rows under a new name: labels key on the "
                             "dataset's name, and a swapped pair is a new row")
    written = ws.write_dataset(target, frame, "preference", lineage={
        "labels_from": version.ref, "labels": counts, "keep_undecided": keep_undecided,
        "input": {"dataset": version.ref, "lineage": version.lineage}})
    return written, counts
