"""Labels: writing them (pairwise choices and rankings), undo, the labels table, gold pairs,
adjudication, and the labelled dataset version the app exports.

The app, the CLI and notebooks share this module; the app never writes SQL of its own.

- A label is written the moment it is made and never overwritten: a relabel is a new row and
  the latest one wins. Undo appends the label's id to `label_undos` (labels stay append-only,
  so what was undone stays visible to an audit); an undone label no longer counts anywhere.
- Gold pairs have a known decision; queues (`workbench.labeling.queues`) mix them in at their rate and
  each annotator's accuracy on them is reported here.
- An adjudicator's resolution is itself a label, by annotator `lead:NAME`; the export's
  label policies let it settle the row (`workbench.labeling.policy.label_decisions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from workbench.errors import WorkbenchError
from workbench.labeling import annotators
from workbench.labeling.policy import LEAD_PREFIX
from workbench.query.query import queue_rows
from workbench.workspace import Workspace

CHOICES = ("a", "b", "tie", "both_bad")
DECISIONS = ("chosen", "rejected", "tie", "both_bad")

# writing ------------------------------------------------------------------------------------
def check_annotator(name: str, lead: bool = False) -> str:
    """The stored form of an annotator name (stripped, lower-cased: `annotators.normalise`);
    `lead:` names are for resolutions only."""
    name = annotators.normalise(name)
    if name.startswith(LEAD_PREFIX) != lead:
        raise WorkbenchError(f"{LEAD_PREFIX}NAME is the adjudicator's name, for resolutions only"
                             if not lead else f"a resolution's annotator is {LEAD_PREFIX}NAME")
    return name


def label(ws: Workspace, dataset: str, item_row_id: str, annotator: str, choice: str,
          a_is_chosen: bool, strength: str | None = None, note: str | None = None,
          queue: str | None = None) -> int:
    """Write one pairwise label now (see `Workspace.add_label`); returns its id."""
    annotator = check_annotator(annotator)
    return ws.add_label(dataset.partition("@")[0], item_row_id, annotator, choice, a_is_chosen,
                        note or None, strength=strength, queue=queue)


def rank(ws: Workspace, dataset: str, row_id: str, annotator: str, ranks: list[int | None],
         shown_order: list[int], note: str | None = None, queue: str | None = None) -> int:
    """Write a ranking of a candidates row's responses: `ranks[i]` is response i's rank (1 is
    best; equal ranks are ties; None leaves it unranked), so partial orders are allowed."""
    annotator = check_annotator(annotator)
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
    annotator = annotators.normalise(annotator)
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
    annotator = annotators.normalise(annotator)
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
    lead = annotators.normalise(lead)
    name = check_annotator(lead if lead.startswith(LEAD_PREFIX) else LEAD_PREFIX + lead,
                           lead=True)
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
    from workbench.labeling.policy import apply_labels

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
