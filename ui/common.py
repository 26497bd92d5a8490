"""What every page shares: the workspace, the annotator's name, pickers and row rendering.

Pages read and write only through `workbench` (labels, agreement, query, stats, lineage,
export); nothing here touches a file or the catalog itself.
"""

from __future__ import annotations

import json
import os
from typing import Any

import streamlit as st

from workbench.errors import WorkbenchError
from workbench.workspace import DatasetVersion, Workspace


@st.cache_resource(show_spinner=False)
def _workspace(root: str) -> Workspace:
    return Workspace(root, create=False)


def workspace() -> Workspace:
    """The workspace `workbench ui` was started on ($WORKBENCH_HOME), one per server."""
    return _workspace(os.environ.get("WORKBENCH_HOME", "workspace"))


def page(title: str) -> None:
    """Page setup shared by every page: wide layout, title, the workspace in the sidebar."""
    st.set_page_config(page_title=f"{title} · preference workbench", layout="wide")
    st.title(title)
    with st.sidebar:
        st.caption(f"workspace `{workspace().root.resolve()}`")
        if st.session_state.get("annotator"):
            st.caption(f"annotator **{st.session_state['annotator']}**")


def versions(ws: Workspace, kinds: tuple[str, ...] | None = None) -> list[DatasetVersion]:
    return [v for v in ws.list_datasets(all_versions=True) if kinds is None or v.kind in kinds]


def pick_version(ws: Workspace, key: str, kinds: tuple[str, ...] | None = None,
                 latest_only: bool = False, label: str = "dataset") -> DatasetVersion | None:
    """A dataset then a version selector (latest first); None with a hint when none fit."""
    found = versions(ws, kinds)
    if not found:
        what = " or ".join(kinds) if kinds else "any"
        st.info(f"No {what} datasets yet: `workbench import FILE --name NAME` or "
                "`workbench run PIPELINE`.")
        return None
    names = sorted({v.name for v in found})
    wanted = st.query_params.get(key)
    name = st.selectbox(label, names, key=f"{key}_name",
                        index=names.index(wanted) if wanted in names else 0)
    mine = sorted((v for v in found if v.name == name), key=lambda v: -v.version)
    if latest_only:
        return mine[0]
    version = st.selectbox("version", [v.version for v in mine], key=f"{key}_version",
                           format_func=lambda n: f"v{n}" + (" (latest)" if n == mine[0].version
                                                            else ""))
    return next(v for v in mine if v.version == version)


def annotator(required: bool = True) -> str | None:
    """The annotator's name, asked once per browser session and kept in the URL
    (?annotator=NAME) so a reload keeps it."""
    from workbench.labeling.labels import check_annotator

    given = st.session_state.get("annotator") or st.query_params.get("annotator")
    try:  # ?annotator=%20Alice%20 labels as "alice", like the name typed into the form
        name = check_annotator(given) if given else None
    except WorkbenchError as exc:
        st.error(f"?annotator={given!r}: {exc}")
        name = None
    if name:
        st.session_state["annotator"] = name
        if st.query_params.get("annotator") != name:
            st.query_params["annotator"] = name
        return name
    if not required:
        return None
    with st.form("who"):
        typed = st.text_input("Your name (recorded with each label)", key="annotator_input")
        if st.form_submit_button("Start labeling", type="primary"):
            try:
                st.session_state["annotator"] = check_annotator(typed)
            except WorkbenchError as exc:
                st.error(str(exc))
            else:
                st.query_params["annotator"] = st.session_state["annotator"]
                st.rerun()
    st.stop()
    return None


def show_error(exc: Exception) -> None:
    st.error(str(exc), icon=":material/block:")


# rendering --------------------------------------------------------------------------------
def conversation(prompt: list[dict[str, Any]] | None) -> None:
    """The whole prompt conversation, each turn as a chat message rendered as markdown."""
    for message in prompt or []:
        role = message.get("role") or "user"
        avatar = {"system": ":material/settings:", "tool": ":material/build:"}.get(role)
        with st.chat_message(role if role in ("user", "assistant") else "ai", avatar=avatar):
            if role not in ("user", "assistant"):
                st.caption(role)
            st.markdown(message.get("content") or "")


def response(title: str, text: str | None, height: int | None = 420,
             caption: str | None = None) -> None:
    """One response in a bordered, scrolling box, markdown (and code) rendered."""
    st.markdown(f"**{title}**")
    short = text is None or (len(text) < 900 and text.count("\n") < 12)
    with st.container(height="content" if short or height is None else height, border=True):
        st.markdown(text or "_(empty)_")
    if caption:
        st.caption(caption)


def row_view(row: dict[str, Any], kind: str) -> None:
    """A row as a person reads it: the conversation, then the responses side by side, then
    the other columns."""
    conversation(row.get("prompt"))
    if kind == "preference":
        left, right = st.columns(2)
        with left:
            response("chosen", row.get("chosen"), caption=_score(row, "chosen_score"))
        with right:
            response("rejected", row.get("rejected"), caption=_score(row, "rejected_score"))
    elif kind == "sft":
        response("response", row.get("response"))
    elif kind == "candidates":
        scores = row.get("scores") or []
        cols = st.columns(min(3, max(1, len(row.get("responses") or []))))
        for number, text in enumerate(row.get("responses") or []):
            with cols[number % len(cols)]:
                score = f"score {scores[number]:.3g}" if number < len(scores) else None
                response(f"response {number + 1}", text, height=320, caption=score)
    rest = {k: v for k, v in row.items()
            if k not in ("prompt", "chosen", "rejected", "response", "responses")}
    with st.expander("all columns"):
        st.json(json.loads(json.dumps(rest, default=str)))


def _score(row: dict[str, Any], column: str) -> str | None:
    value = row.get(column)
    return f"{column} {value:.3g}" if isinstance(value, int | float) else None


def preview_column(schema: Any, column: str, width: int = 140) -> Any:
    """A column as one line of text per cell for a table (message lists show their last
    turn, lists are joined), cut at `width`; other types are left as they are."""
    import polars as pl

    from workbench.schema import MESSAGE

    dtype = schema[column]
    if isinstance(dtype, pl.List) and dtype.inner == MESSAGE:
        text = pl.col(column).list.last().struct.field("content")
    elif isinstance(dtype, pl.List) and dtype.inner == pl.String:
        text = pl.col(column).list.join(" | ")
    elif dtype == pl.String:
        text = pl.col(column)
    else:
        return pl.col(column)
    text = text.str.replace_all(r"\s+", " ")
    return (pl.when(text.str.len_chars() > width).then(text.str.slice(0, width - 1) + "…")
            .otherwise(text).alias(column))
