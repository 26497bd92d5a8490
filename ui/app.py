"""The Streamlit app over a workspace (`workbench ui`). It reads only through `workbench`."""

from __future__ import annotations

import streamlit as st

from workbench.workspace import Workspace

st.set_page_config(page_title="Preference workbench", layout="wide")
ws = Workspace()  # $WORKBENCH_HOME, set by `workbench ui`
versions = ws.list_datasets()
st.title("Preference workbench")
st.caption(f"workspace: {ws.root.resolve()}")
if not versions:
    st.info("No datasets yet: `workbench import FILE --name NAME` or `workbench run PIPELINE`.")
    st.stop()

st.dataframe([v.as_json() for v in versions], hide_index=True)
names = [v.name for v in versions]
name = st.selectbox("dataset", names)
version = ws.resolve(name)
frame = ws.read(version.ref)
query = st.text_input("search the prompt text")
if query:
    from workbench.schema import messages_text

    frame = frame.filter(messages_text("prompt").str.contains(query, literal=True))
st.write(f"{frame.height} of {version.rows} rows ({version.kind}, version {version.version})")
if frame.height == 0:
    st.stop()
index = st.number_input("row", min_value=0, max_value=frame.height - 1, value=0)
row = frame.row(int(index), named=True)
for message in row["prompt"]:
    with st.chat_message(message["role"]):
        st.markdown(message["content"])
if version.kind == "preference":
    left, right = st.columns(2)
    left.subheader("chosen")
    left.markdown(row["chosen"])
    right.subheader("rejected")
    right.markdown(row["rejected"])
elif version.kind == "sft":
    st.subheader("response")
    st.markdown(row["response"])
elif version.kind == "candidates":
    for number, response in enumerate(row["responses"], start=1):
        st.subheader(f"response {number}")
        st.markdown(response)
