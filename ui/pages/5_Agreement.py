"""Agreement: Cohen's kappa per pair of annotators, Fleiss' kappa and Krippendorff's alpha
across all, people against the AI judge, the judge report (`workbench report judge`), and the
disagreements, each opening its pair."""

from __future__ import annotations

import math

import polars as pl
import streamlit as st

from ui.common import page, row_view, show_error, workspace
from workbench.errors import WorkbenchError
from workbench.labeling import agreement, judge_report, judge_signals, labels, queues

ws = workspace()
page("Agreement")
names = labels.labelled_datasets(ws)
if not names:
    st.info("No labels yet: the **Label** page makes them.")
    st.stop()
wanted = st.query_params.get("dataset")
name = st.selectbox("dataset", names, index=names.index(wanted) if wanted in names else 0,
                    key="agr_dataset")
report = agreement.report(ws, name)


def fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


summary = report["summary"]
cols = st.columns(4)
cols[0].metric("annotators", summary["raters"])
cols[1].metric("items judged by 2+", summary["items_with_2_or_more"])
cols[2].metric("Fleiss' kappa", fmt(summary["fleiss_kappa"]))
cols[3].metric("Krippendorff's alpha (nominal)", fmt(summary["krippendorff_alpha"]))
what = ("pairs of responses within each ranking" if report["kind"] == "candidates"
        else "decisions about the pair (chosen, rejected, tie, both bad), whatever side each "
             "person saw")
st.caption(f"Compared: {what}. n/a where undefined (everyone used one category). "
           "Leads' resolutions are left out.")

st.subheader("Cohen's kappa per pair of annotators")
pairwise = report["pairwise"]
if pairwise.height:
    st.table(pairwise.rename({"rater_1": "annotator 1", "rater_2": "annotator 2",
                              "items": "shared items"})
             .with_columns(pl.col("kappa").map_elements(fmt, return_dtype=pl.String),
                           pl.col("agreement").round(3)).to_pandas().set_index("annotator 1"))
else:
    st.caption("no two annotators have labelled the same rows yet (a queue with K ≥ 2 "
               "gives overlap)")

st.subheader("People vs the AI judge")
judge = report["judge"]
if judge is not None and judge.height:
    st.dataframe(judge.with_columns(pl.col("kappa").round(3), pl.col("agreement").round(3)),
                 hide_index=True, width="stretch")
    st.caption("The judge's preference comes from `chosen_score`/`rejected_score` (for "
               "candidates, `scores`). Its kappa is n/a when it always prefers the same side.")
else:
    st.caption("this dataset has no judge scores (`chosen_score`/`rejected_score` or `scores`)")

if report["kind"] == "preference":
    st.subheader("Judge report")
    judges = judge_signals.available(ws.scan(name).collect_schema())
    if not judges:
        st.caption("no judge columns (llm_pairwise's `p_chosen`, or `chosen_score`/"
                   "`rejected_score`): run a judge step on this dataset first")
    else:
        left, mid, right = st.columns(3)
        against = left.selectbox("against", judge_report.AGAINST, key="agr_against")
        people = sorted(set(ws.latest_labels(name)["annotator"].to_list()))
        policy = mid.selectbox("label policy",
                               ("majority", "latest", *(f"annotator:{p}" for p in people)),
                               key="agr_policy", disabled=against != "labels")
        which = right.selectbox("judge", judges, key="agr_judge")
        left, right = st.columns(2)
        bins_text = left.text_input("bins of |margin| (a count, or cut points 0.05,0.1)", "5",
                                    key="agr_bins")
        columns = [c for c, t in ws.scan(name).collect_schema().items()
                   if t in (pl.String, pl.Categorical, pl.Boolean) and c not in (
                       "id", "parent_id", "chosen", "rejected")]
        default = next((c for c in judge_report.SUBSET_COLUMNS if c in columns), "(none)")
        options = ["(none)", *columns]
        subset = right.selectbox("per subset of", options, index=options.index(default),
                                 key="agr_subset")
        try:
            found = judge_report.workspace_report(
                ws, name, against, policy, which, judge_report.parse_bins(bins_text),
                "" if subset == "(none)" else subset)
        except WorkbenchError as exc:
            show_error(exc)
        else:
            length = found["length_preference"]
            cols = st.columns(5)
            cols[0].metric("pairs", found["n"])
            cols[1].metric("accuracy", pct(found["accuracy"]))
            cols[2].metric("kappa", fmt(found["kappa"]))
            cols[3].metric("flip rate", pct(found["flip_rate"]))
            cols[4].metric("longer preferred (judge / reference)",
                           f"{pct(length['judge'])} / {pct(length['reference'])}")
            st.dataframe(pl.DataFrame(found["by_margin"]), hide_index=True)
            st.caption("Accuracy over pairs both decided, per bin of the judge's |margin|: "
                       "a confidence cut. Same as `workbench report judge`.")
            if found["by_subset"]:
                st.markdown(f"**Per {subset}**")
                st.dataframe(pl.DataFrame([
                    {subset: key, "pairs": part["n"], "accuracy": part["accuracy"],
                     "kappa": part["kappa"], "flip rate": part["flip_rate"],
                     "judge prefers longer": part["length_preference"]["judge"],
                     "reference prefers longer": part["length_preference"]["reference"]}
                    for key, part in found["by_subset"].items()]), hide_index=True)

counts = report["counts"]
if counts.height:
    with st.expander("label distribution per annotator"):
        st.dataframe(counts.pivot(on="value", index="rater", values="n").fill_null(0),
                     hide_index=True)

if report["kind"] == "preference":
    st.subheader("Disagreements")
    table = labels.disagreements(ws, name)
    if table.height == 0:
        st.caption("none: every row labelled by 2+ annotators got one decision")
        st.stop()
    shown = table.with_columns(pl.col("decisions").list.join(" · ")).fill_null("")
    st.dataframe(shown, hide_index=True, width="stretch")
    pick = st.selectbox("open a pair", table["row_id"].to_list(), key="agr_open")
    found = queues.get_row(ws, name, pick)
    if found is not None:
        opened = table.filter(pl.col("row_id") == pick).row(0, named=True)
        st.info(" · ".join(opened["decisions"])
                + (f" — resolved **{opened['resolution']}** by {opened['resolved_by']}"
                   if opened["resolution"] else " — unresolved (see **Adjudicate**)"))
        row_view(found, "preference")
