"""Datasets: every dataset and version, its lineage and the plots worth looking at."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from ui.common import page, pick_version, workspace
from workbench import lineage, stats

ws = workspace()
page("Datasets")
every = ws.list_datasets(all_versions=True)
if not every:
    st.info("No datasets yet: `workbench import FILE --name NAME` or `workbench run PIPELINE`.")
    st.stop()
table = pl.DataFrame([{**v.as_json(), "origin": lineage.origin(v)} for v in every])
st.dataframe(table, hide_index=True, width="stretch")

version = pick_version(ws, "dataset")
if version is None:
    st.stop()


@st.cache_data(show_spinner="summarising…", max_entries=64)
def _summary(root: str, ref: str) -> dict[str, pl.DataFrame]:
    """Versions are immutable: their summaries are cached for the server's life."""
    v = ws.resolve(ref)
    return {"lengths": stats.length_histogram(ws, v), "scores": stats.score_histogram(ws, v),
            "scatter": stats.length_scatter(ws, v), "mix": stats.category_mix(ws, v),
            "pass": stats.pass_rate_histogram(ws, v),
            "drops": lineage.drops_table(ws, v)}


summary = _summary(str(ws.root), version.ref)
top = st.columns(4)
top[0].metric("kind", version.kind)
top[1].metric("rows", f"{version.rows:,}")
top[2].metric("version", f"v{version.version}")
top[3].metric("columns", len(version.columns))
st.caption("columns: " + ", ".join(f"`{c}`" for c in version.columns))

st.subheader("Lineage")
st.markdown(lineage.describe(version))
steps = lineage.steps(ws, version)
if steps:
    st.dataframe(pl.DataFrame([{"step": f"{s.index}: {s.step}", "rows in": s.rows_in,
                                "rows out": s.rows_out,
                                "dropped": ", ".join(f"{k} ({v})" for k, v in s.dropped.items())}
                               for s in steps]), hide_index=True, width="stretch")

def histogram(frame: pl.DataFrame, title: str) -> alt.Chart:
    """Binned counts per column as overlapping step areas (bins come from workbench.stats)."""
    return alt.Chart(frame.to_pandas()).mark_area(
        interpolate="step-after", opacity=0.35, line=True).encode(
        x=alt.X("bin:Q", title=title, scale=alt.Scale(nice=False)),
        y=alt.Y("rows:Q", stack=None), color=alt.Color("column:N", title=None),
        tooltip=["column", "bin", "bin_end", "rows"]).properties(height=260)


left, right = st.columns(2)
with left:
    st.subheader("Lengths (characters)")
    if summary["lengths"].height:
        st.altair_chart(histogram(summary["lengths"], "characters (the last bin holds the "
                                                      "longest 1%)"), width="stretch")
    else:
        st.caption("no text columns")
with right:
    st.subheader("Scores")
    if summary["scores"].height:
        st.altair_chart(histogram(summary["scores"], "score"), width="stretch")
    else:
        st.caption("no score columns (chosen_score, rejected_score, scores, margin)")

left, right = st.columns(2)
with left:
    st.subheader("Chosen vs rejected length")
    scatter = summary["scatter"]
    if scatter.height:
        st.altair_chart(alt.Chart(scatter.to_pandas()).mark_circle(size=14, opacity=0.5).encode(
            x=alt.X("rejected:Q", title="rejected (chars)"),
            y=alt.Y("chosen:Q", title="chosen (chars)")).properties(height=260), width="stretch")
        longer = float((scatter["chosen"] > scatter["rejected"]).mean() or 0)
        st.caption(f"chosen is longer in {longer:.0%} of {scatter.height:,} sampled pairs")
    else:
        st.caption("not a preference dataset")
with right:
    st.subheader("Drops per step")
    drops = summary["drops"]
    if drops.height:
        st.altair_chart(alt.Chart(drops.to_pandas()).mark_bar(size=22).encode(
            x=alt.X("rows:Q"), y=alt.Y("step:N", sort=None, title=None),
            color=alt.Color("reason:N", legend=alt.Legend(orient="bottom", labelLimit=400,
                                                          columns=1)),
            tooltip=["step", "reason", "rows"]).properties(height=60 + 40 * drops["step"]
                                                          .n_unique()), width="stretch")
    else:
        st.caption("no rows dropped (or not written by a pipeline)")

passes = summary["pass"]
if passes.height:
    st.subheader("Pass rate (verify)")
    st.altair_chart(alt.Chart(passes.to_pandas()).mark_bar(size=18).encode(
        x=alt.X("bin:Q", title="share of sampled responses that passed",
                scale=alt.Scale(domain=[0, 1])), y="rows:Q",
        tooltip=["bin", "bin_end", "rows"]).properties(height=200), width="stretch")
    st.caption(f"{int(passes['rows'].sum()):,} rows with a pass rate; keep a band with "
               "`filter: {where: {pass_rate: {min: 0.2, max: 0.8}}}`")

mix = summary["mix"]
if mix.height:
    st.subheader("Mix")
    columns = mix["column"].unique(maintain_order=True).to_list()
    for column, box in zip(columns, st.columns(3) * len(columns), strict=False):
        with box:
            part = mix.filter(pl.col("column") == column)
            st.altair_chart(alt.Chart(part.to_pandas()).mark_bar().encode(
                x="rows:Q", y=alt.Y("value:N", sort="-x", title=column),
                tooltip=["value", "rows"]).properties(height=200), width="stretch")

st.subheader("Label progress")
progress = stats.label_progress(ws, version)  # labels change: never cached
if progress.height:
    labelled = int(progress["rows"].max() or 0)
    st.dataframe(progress, hide_index=True)
    st.progress(min(1.0, labelled / max(1, version.rows)),
                text=f"{progress['annotator'].n_unique()} annotators; the busiest labelled "
                     f"{labelled:,} of {version.rows:,} rows")
else:
    st.caption("no labels yet (the Label page makes them)")
