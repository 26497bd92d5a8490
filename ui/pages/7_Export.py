"""Export: a new dataset version where human labels decide chosen/rejected, then a Hugging
Face dataset, Parquet or JSONL, the same as `workbench export --labels`, written under the
workspace's `exports/` folder only (the person types a name, never a path)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui.common import page, pick_version, show_error, workspace
from workbench.errors import WorkbenchError
from workbench.io.export import FORMATS, REASONING_MODES, TRL_LAYOUTS, export_dataset
from workbench.io.export_folder import check_folder_name
from workbench.labeling import labels

ws = workspace()
page("Export")

st.subheader("1. Apply human labels (preference datasets)")
version = pick_version(ws, "export", kinds=("preference",), latest_only=True)
if version is not None:
    latest = ws.latest_labels(version.name)
    people = sorted({a for a in latest["annotator"].to_list()} if latest.height else [])
    st.caption(f"{latest['row_id'].n_unique() if latest.height else 0} labelled rows of "
               f"{version.ref} by {len(people)} annotator{'' if len(people) == 1 else 's'}")
    with st.form("apply"):
        left, right = st.columns(2)
        policy = left.selectbox(
            "label policy", ["majority", "latest", *[f"annotator:{p}" for p in people]],
            key="exp_policy", help="majority: each annotator's latest label votes, a row "
            "without a strict majority is left out; latest: the latest label wins; "
            "annotator:NAME: only NAME's labels. A lead's resolution settles its row.")
        target = right.text_input("new dataset name", value=f"{version.name}-labelled",
                                  key=f"exp_name:{version.name}")
        keep = st.checkbox("keep pairs decided tie or both bad (flagged in `tie`/`both_bad`)",
                           key="exp_keep")
        if st.form_submit_button("Write labelled version", type="primary"):
            try:
                written, counts = labels.labelled_version(ws, version.ref, target, policy, keep)
            except WorkbenchError as exc:
                show_error(exc)
            else:
                st.session_state["exp_written"] = written.ref
                st.success(f"wrote **{written.ref}**: {written.rows:,} rows · "
                           + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))

st.subheader("2. Export a version for training")
chosen = pick_version(ws, "export_out", label="dataset to export")
if chosen is None:
    st.stop()
with st.form("export"):
    left, mid, right = st.columns(3)
    fmt = left.selectbox("format", FORMATS, key="exp_format")
    trl = mid.selectbox("TRL layout", TRL_LAYOUTS, index=TRL_LAYOUTS.index("conversational"),
                        key="exp_trl")
    folder = right.text_input("export name", value=chosen.name, key="exp_out",
                              help=f"written to {ws.root / 'exports'}/NAME: a name, not a path")
    reasoning = st.selectbox(
        "reasoning traces", REASONING_MODES, key="exp_reasoning",
        help="keep: replies hold the answers, traces in their own columns; strip: answers "
        "only; inline: <think>trace</think> before each answer (to train on the thinking)")
    keep_ties = st.checkbox("keep pairs marked tie", key="exp_keep_ties")
    overwrite = st.checkbox("replace an earlier export of this name", key="exp_overwrite",
                            help="only a folder an earlier export wrote (it holds "
                            "workbench_export.json and nothing else) is replaced")
    if st.form_submit_button("Export", type="primary"):
        try:
            out = ws.root / "exports" / check_folder_name(folder.strip())
            result = export_dataset(ws, chosen.ref, out, fmt=fmt, trl=trl,
                                    overwrite=overwrite, keep_ties=keep_ties,
                                    reasoning=reasoning)
        except WorkbenchError as exc:
            show_error(exc)
        except OSError as exc:  # a read-only workspace, a full disk: say so, keep the page
            show_error(WorkbenchError(f"cannot write {ws.root / 'exports'}: "
                                      f"{exc.strerror or exc}"))
        else:
            st.success(f"exported {chosen.ref} to `{Path(result['out']).resolve()}` "
                       f"({result['task']}): "
                       + ", ".join(f"{k} {v:,}" for k, v in result["splits"].items()))
            st.caption("load it with `datasets.load_dataset(FOLDER)`"
                       + (" or `load_from_disk(FOLDER)`" if fmt == "hf" else ""))
