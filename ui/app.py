"""The Streamlit app over a workspace (`workbench ui`): this home page, and one page per job
under ui/pages/ (Datasets, Browse, Label, Queues, Agreement, Adjudicate, Export).

Every page reads and writes through the `workbench` library (never SQL on files of its own).
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from ui.common import page, workspace
from workbench.labeling import labels, queues

page("Preference workbench")
ws = workspace()
versions = ws.list_datasets()
if not versions:
    st.info("No datasets yet: `workbench import FILE --name NAME` or `workbench run PIPELINE`.")
    st.stop()
st.dataframe(pl.DataFrame([v.as_json() for v in versions]), hide_index=True, width="stretch")
queues = queues.all_queues(ws)
st.markdown(
    f"{len(versions)} datasets · {len(queues)} label queues · "
    f"{len(labels.labelled_datasets(ws))} labelled datasets\n\n"
    "- **Datasets**: versions, lineage and plots\n"
    "- **Browse**: page through rows with search and a read-only SQL filter\n"
    "- **Label**: compare two responses (or rank candidates) from a queue\n"
    "- **Queues**: what to label, gold pairs, annotators' accuracy\n"
    "- **Agreement**: kappa between annotators and with the AI judge\n"
    "- **Adjudicate**: resolve disagreements\n"
    "- **Export**: apply the labels and write a training set")
