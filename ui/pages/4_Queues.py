"""Queues: what to label (a dataset, a filter, annotators per row, the order rows are served
in), guidelines, gold pairs and each annotator's accuracy on them."""

from __future__ import annotations

import polars as pl
import streamlit as st

from ui.common import page, show_error, versions, workspace
from workbench.errors import WorkbenchError
from workbench.labeling import labels, queues

ORDER_HELP = ("random: a drawn order · sequential: the dataset's row order · uncertain: the "
              "judge's smallest |margin| first · flips: pairs whose llm_pairwise verdict "
              "flipped with the order first · disagree: pairs two judges (default: pairwise "
              "and scores) decide differently first")

ws = workspace()
page("Label queues")
existing = queues.all_queues(ws)
if existing:
    rows = []
    for q in existing:
        try:
            p = queues.progress(ws, q)
        except WorkbenchError as exc:
            p = {"rows": None, "complete": None, "problem": str(exc)}
        rows.append({"queue": q.name, "dataset": q.dataset, "filter": q.filter or "",
                     "annotators per row": q.min_labels, "gold rate": q.gold_rate,
                     "order": " ".join([q.order, *q.judges]),
                     "rows": p["rows"], "rows done": p["complete"]})
    st.dataframe(pl.DataFrame(rows), hide_index=True, width="stretch")
else:
    st.info("No queues yet: make the first one below.")

labelable = versions(ws, ("preference", "candidates"))
st.subheader("New queue (or change one: same name)")
if not labelable:
    st.caption("Import or build a preference or candidates dataset first.")
    st.stop()
with st.form("new_queue"):
    left, right = st.columns(2)
    name = left.text_input("queue name", key="q_name", placeholder="hh-round1")
    datasets = sorted({v.name for v in labelable})
    dataset = right.selectbox("dataset (its latest version when served)", datasets, key="q_data")
    where = st.text_input("filter: SQL WHERE clause (optional, read-only)", key="q_filter",
                          placeholder="len(chosen) < 2000")
    left, right = st.columns(2)
    k = left.number_input("annotators per row (K: rows with fewer than K labels are served; "
                          "2 or more gives overlap for agreement)", min_value=1, max_value=20,
                          value=2, key="q_k")
    rate = right.slider("gold rate (share of items that are gold pairs)", 0.0, 0.5, 0.0, 0.05,
                        key="q_rate")
    left, right = st.columns(2)
    order = left.selectbox("order", queues.ORDERS, key="q_order", help=ORDER_HELP)
    judges = right.text_input("judge(s) the order reads (optional, comma-separated)",
                              key="q_judges", placeholder="pairwise, scores, or a margin column")
    guidelines = st.text_area("guidelines shown to annotators (markdown)", key="q_guidelines",
                              placeholder="Prefer the response that is helpful and harmless…")
    if st.form_submit_button("Save queue", type="primary"):
        try:
            queue = queues.create_queue(ws, name.strip(), dataset, where or None, int(k), rate,
                                        guidelines, order, judges.split(","))
        except WorkbenchError as exc:
            show_error(exc)
        else:
            st.success(f"queue **{queue.name}** saved")
            st.rerun()

st.subheader("Gold pairs")
st.caption("Pairs whose answer is known, mixed into a queue at its gold rate. Annotators are "
           "not told which; their accuracy on them shows below.")
gold_data = st.selectbox("dataset", sorted({v.name for v in labelable}), key="gold_data")
with st.form("gold"):
    left, right = st.columns([1, 3])
    n = left.number_input("rows", min_value=1, max_value=1000, value=10, key="gold_n")
    where = right.text_input("drawn from rows matching (optional WHERE clause)", key="gold_where")
    st.caption("Their known answer is the dataset's own `chosen`: pick rows where it is "
               "beyond doubt.")
    if st.form_submit_button("Add gold pairs"):
        try:
            added = labels.gold_from_dataset(ws, gold_data, int(n), where or None)
        except WorkbenchError as exc:
            show_error(exc)
        else:
            st.success(f"{added} gold pairs")
gold = labels.gold_table(ws, gold_data)
if gold.height:
    st.write(f"{gold.height} gold pairs in **{gold_data}**")
    accuracy = labels.gold_accuracy(ws, gold_data)
    if accuracy.height:
        st.dataframe(accuracy, hide_index=True, column_config={
            "accuracy": st.column_config.ProgressColumn("accuracy", min_value=0, max_value=1,
                                                        format="percent")})
    else:
        st.caption("no annotator has met a gold pair yet")
