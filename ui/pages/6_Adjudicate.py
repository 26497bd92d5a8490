"""Adjudicate: a lead resolves the rows annotators disagree on; the resolution is itself a
label (annotator `lead:NAME`) that the export's label policies let settle the row."""

from __future__ import annotations

import polars as pl
import streamlit as st

from ui.common import page, row_view, show_error, workspace
from workbench.errors import WorkbenchError
from workbench.labeling import labels, queues

ws = workspace()
page("Adjudicate")
names = [n for n in labels.labelled_datasets(ws) if ws.resolve(n).kind == "preference"]
if not names:
    st.info("No labelled preference datasets yet.")
    st.stop()
tables = {n: labels.disagreements(ws, n) for n in names}
open_first = sorted(names, key=lambda n: -tables[n].filter(pl.col("resolution").is_null()).height)
left, right = st.columns(2)
name = left.selectbox("dataset (most unresolved first)", open_first, key="adj_dataset")
lead = right.text_input("your name (resolutions are recorded as lead:NAME)", key="adj_lead",
                        value=st.session_state.get("annotator")
                        or st.query_params.get("annotator", ""))
table = tables[name]
show_all = st.toggle("show resolved rows too", key="adj_all")
todo = table if show_all else table.filter(pl.col("resolution").is_null())
st.write(f"{table.height} disagreements, {table.height - table.filter(pl.col('resolution').is_null()).height} resolved")
if todo.height == 0:
    st.success("Nothing to resolve.")
    st.stop()
st.dataframe(todo.with_columns(pl.col("decisions").list.join(" · ")).fill_null(""), hide_index=True,
             width="stretch")
pick = st.selectbox("row", todo["row_id"].to_list(), key="adj_row")
opened = todo.filter(pl.col("row_id") == pick).row(0, named=True)
st.info("annotators: " + " · ".join(opened["decisions"])
        + (f" — resolved **{opened['resolution']}** by {opened['resolved_by']}"
           if opened["resolution"] else ""))
row = queues.get_row(ws, name, pick)
if row is None:
    st.warning("this row is not in the latest version of the dataset")
    st.stop()
row_view(row, "preference")
note = st.text_input("resolution note", key="adj_note")
buttons = st.columns(4)
for box, (decision, text) in zip(buttons, [("chosen", "Chosen is better"),
                                           ("rejected", "Rejected is better"),
                                           ("tie", "Tie"), ("both_bad", "Both bad")],
                                 strict=True):
    if box.button(text, key=f"adj_{decision}", width="stretch"):
        try:
            labels.resolve(ws, name, pick, lead, decision, note or None)
        except WorkbenchError as exc:
            show_error(exc)
        else:
            st.toast(f"resolved: {decision}")
            st.rerun()
