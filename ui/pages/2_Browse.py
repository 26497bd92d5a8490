"""Browse: page through a version (or the rows a step dropped) with search, a read-only SQL
filter and sorting; open a row to read it rendered."""

from __future__ import annotations

import polars as pl
import streamlit as st

from ui.common import page, pick_version, preview_column, row_view, show_error, workspace
from workbench.engine import lineage
from workbench.errors import WorkbenchError
from workbench.query.query import browse
from workbench.query.query_limits import APP_LIMITS, human

ws = workspace()
page("Browse")
version = pick_version(ws, "dataset")
if version is None:
    st.stop()

drop_steps = [s for s in lineage.steps(ws, version) if s.dropped_file is not None]
sources = ["kept rows (the dataset)"] + [
    f"dropped at step {s.index}: {s.step} ({sum(s.dropped.values()):,} rows)" for s in drop_steps]
source = st.radio("rows", sources, horizontal=True, key="browse_source") if drop_steps else sources[0]
dropped_step = drop_steps[sources.index(source) - 1] if source != sources[0] else None

columns = version.columns if dropped_step is None else [*version.columns, "_drop_reason"]
a, b, c, d = st.columns([3, 4, 2, 1])
search = a.text_input("search text", key="browse_search",
                      placeholder="words in the prompt or any text column")
where = b.text_input("filter: SQL WHERE clause (read-only)", key="browse_where",
                     placeholder="len(chosen) > 200 AND split = 'train'")
sort = c.selectbox("sort by", ["(file order)", *columns], key="browse_sort")
descending = d.toggle("desc", key="browse_desc")
size = st.session_state.get("browse_size", 25)
asked = (version.ref, source, search, where, sort, descending, size)
if st.session_state.get("browse_asked") != asked:  # a new question starts on page 1
    st.session_state["browse_asked"], st.session_state["browse_page"] = asked, 1
page_no = st.session_state.get("browse_page", 1)
order = None if sort == "(file order)" else f'"{sort}"' + (" DESC" if descending else "")
options = dict(where=where or None, order_by=order, search=search or None, limit=size,
               offset=(page_no - 1) * size, limits=APP_LIMITS)  # a few seconds: Streamlit cannot
# tell us when the page closes, so the short limit is what stops a query nobody waits for
try:
    if dropped_step is None:
        frame, total = browse(ws, version.ref, **options)
    else:
        frame, total = lineage.browse_dropped(ws, version, dropped_step.index, **options)
except WorkbenchError as exc:  # the sandbox's refusal or DuckDB's error, as one line
    show_error(exc)
    st.caption("The filter box runs one read-only clause over the workspace's datasets: no "
               "statements, files, extensions or writes, and at most "
               f"{APP_LIMITS.timeout:g} s and {human(APP_LIMITS.memory_bytes())} of memory.")
    st.stop()

pages = max(1, -(-total // size))
if page_no > pages:
    st.session_state["browse_page"] = pages
    st.rerun()
left, mid, right = st.columns([2, 2, 6])
left.number_input("page", min_value=1, max_value=pages, key="browse_page", step=1)
mid.selectbox("rows per page", [10, 25, 50, 100], index=1, key="browse_size")
right.markdown(f"<br/>{total:,} matching rows · page {min(page_no, pages)} of {pages:,}",
               unsafe_allow_html=True)
if frame.height == 0:
    st.info("No rows match.")
    st.stop()

shown = frame.select([preview_column(frame.schema, c) for c in frame.columns if c != "id"])
shown = shown.with_columns(pl.Series("#", range(frame.height))).select("#", pl.exclude("#"))
st.dataframe(shown, hide_index=True, width="stretch", height=min(38 * (frame.height + 1), 460))

index = st.number_input("open row # on this page", min_value=0, max_value=frame.height - 1,
                        value=0, key="browse_row")
row = frame.row(int(index), named=True)
st.divider()
st.caption(f"id `{row['id']}`" + (f" · parent `{row['parent_id']}`" if row.get("parent_id")
                                  else ""))
if dropped_step is not None:
    st.warning(f"dropped at step {dropped_step.index} ({dropped_step.step}): "
               f"**{row.get('_drop_reason')}**", icon=":material/delete:")
    twin_id = row.get("duplicate_of")
    if twin_id:
        twin = lineage.kept_twin(ws, version, dropped_step.index, twin_id)
        left, right = st.columns(2)
        with left:
            st.subheader("dropped duplicate")
            row_view(row, version.kind)
        with right:
            st.subheader("kept twin")
            if twin is None:
                st.caption(f"the kept row `{twin_id}` is no longer in the step's checkpoint")
            else:
                row_view(twin, version.kind)
        st.stop()
row_view(row, version.kind)
