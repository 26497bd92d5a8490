"""Label: one pair at a time from a queue, sides randomised per annotator and row, keyboard
shortcuts, undo; candidates rows are ranked (ties and unranked responses allowed).

Shortcuts are Streamlit's own (`st.button(shortcut=...)`, which ignores keys typed into a
field): 1 A better, 2 B better, 3 tie, 4 both bad, Q / W strength slightly / clearly,
← previous, → next, S skip, U undo, Ctrl+Enter save a ranking.

Every label is written by `workbench.labeling.labels` in the button's callback, before the page is
drawn again: a closed tab loses nothing.
"""

from __future__ import annotations

import streamlit as st

from ui.common import annotator, conversation, page, response, show_error, workspace
from workbench.errors import WorkbenchError
from workbench.labeling import labels, queues

CHOICE_TEXT = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}

ws = workspace()
page("Label")
me = annotator()
assert me is not None
all_queues = queues.all_queues(ws)
if not all_queues:
    st.info("No label queues yet: make one on the **Queues** page (a dataset, an optional "
            "filter, how many annotators per row).")
    st.stop()
names = [q.name for q in all_queues]
wanted = st.query_params.get("queue")
name = st.selectbox("queue", names, index=names.index(wanted) if wanted in names else 0,
                    key="lab_queue")
if st.query_params.get("queue") != name:
    st.query_params["queue"] = name
queue = next(q for q in all_queues if q.name == name)
state = st.session_state.setdefault(f"lab:{name}", {"history": [], "pos": 0, "skip": [],
                                                    "fresh": None, "items": {}, "flash": None,
                                                    "strength": None, "buffer": []})


def current() -> queues.Item | None:
    """The row on screen: a visited one when going back, else the next from the queue."""
    if state["pos"] < len(state["history"]):
        row_id = state["history"][state["pos"]]
        if row_id not in state["items"]:
            state["items"][row_id] = queues.row_item(ws, queue, me, row_id)
        return state["items"][row_id]
    if state["fresh"] is None:
        found = queues.next_item(ws, queue, me, skip=state["skip"], buffer=state["buffer"])
        state["fresh"] = found or False
        if found:
            state["items"][found.row_id] = found
    return state["fresh"] or None


def advance(row_id: str) -> None:
    if state["pos"] >= len(state["history"]):
        state["history"].append(row_id)
        state["pos"] = len(state["history"])
        state["fresh"] = None
    else:
        state["pos"] += 1


def reset_inputs() -> None:
    state["strength"] = None
    st.session_state["lab_note"] = ""


def on_strength(value: str) -> None:
    state["strength"] = None if state.get("strength") == value else value


def on_choice(choice: str) -> None:
    item = current()
    if item is None:
        return
    strength = state.get("strength") if choice in ("a", "b") else None
    try:
        labels.label(ws, queue.dataset, item.row_id, me, choice, item.a_is_chosen,
                     strength=strength, note=st.session_state.get("lab_note") or None,
                     queue=queue.name)
    except WorkbenchError as exc:
        state["flash"] = ("error", str(exc))
        return
    state["flash"] = ("saved", f"saved: {CHOICE_TEXT[choice]}"
                               + (f" ({strength})" if strength else ""))
    reset_inputs()
    advance(item.row_id)


def on_rank(item: queues.Item) -> None:
    n = len(item.order)
    ranks: list[int | None] = [None] * n
    for shown, original in enumerate(item.order):
        ranks[original] = st.session_state.get(f"rank:{item.row_id}:{shown}")
    try:
        labels.rank(ws, queue.dataset, item.row_id, me, ranks, item.order,
                    note=st.session_state.get("lab_note") or None, queue=queue.name)
    except WorkbenchError as exc:
        state["flash"] = ("error", str(exc))
        return
    state["flash"] = ("saved", "saved: ranking")
    reset_inputs()
    advance(item.row_id)


def on_skip() -> None:
    item = current()
    if item is not None and state["pos"] >= len(state["history"]):
        state["skip"].append(item.row_id)
        advance(item.row_id)
    elif item is not None:
        state["pos"] += 1


def on_move(step: int) -> None:
    if step > 0 and state["pos"] >= len(state["history"]):
        on_skip()  # next at the end of the history: skip this one
        return
    state["pos"] = min(max(0, state["pos"] + step), len(state["history"]))


def on_undo() -> None:
    undone = labels.undo_last(ws, me, queue.name)
    if undone is None:
        state["flash"] = ("info", "nothing to undo")
        return
    state["flash"] = ("info", f"undid your last label (row {undone.row_id[:12]}); label it again")
    if undone.row_id in state["history"]:
        state["pos"] = len(state["history"]) - 1 - state["history"][::-1].index(undone.row_id)
    else:  # labelled in an earlier session: bring it back as the next row
        item = queues.row_item(ws, queue, me, undone.row_id)
        state["fresh"] = item or None
        state["pos"] = len(state["history"])
        if item is not None:
            state["items"][item.row_id] = item


# the page ---------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=256)
def queue_size(root: str, name: str, filter: str | None, version: str) -> int:
    """A queue's row count changes only with its filter or its dataset's version."""
    return queues.queue_size(ws, queues.get_queue(ws, name))


try:
    size = queue_size(str(ws.root), queue.name, queue.filter, ws.resolve(queue.dataset).ref)
    progress = queues.progress(ws, queue, me, rows=size)
    item = current()
except WorkbenchError as exc:
    show_error(exc)
    st.stop()

done, rows = progress["complete"], max(1, progress["rows"])
st.progress(min(1.0, done / rows),
            text=f"{done:,} of {progress['rows']:,} rows have {queue.min_labels} "
                 f"label{'s' if queue.min_labels > 1 else ''} · you labelled "
                 f"{progress['mine']:,} in this queue, as **{me}**")
if queue.guidelines:
    with st.expander("Guidelines", expanded=progress["mine"] == 0):
        st.markdown(queue.guidelines)
flash, state["flash"] = state["flash"], None
if flash:
    kind, text = flash
    (st.error if kind == "error" else st.toast if kind == "saved" else st.info)(text)

if item is None:
    st.success("Nothing left for you in this queue. Thank you!")
    st.button("Undo last label", key="lab_undo", on_click=on_undo, shortcut="U")
    st.stop()

row = item.row
revisit = state["pos"] < len(state["history"])
mine = labels.my_label(ws, queue.dataset_name, item.row_id, me) if revisit else None
st.container(key=f"lab_row_{item.row_id}").caption(f"row `{item.row_id}`" + (" · going back through your rows" if revisit else "")
           + (f" · your label: **{CHOICE_TEXT.get(mine['choice'], 'ranking')}**"
              + (f" ({mine['strength']})" if mine.get("strength") else "") if mine else ""))
conversation(row.get("prompt"))

kind = "candidates" if "responses" in row and "chosen" not in row else "preference"
if kind == "preference":
    a, b = (row["chosen"], row["rejected"]) if item.a_is_chosen else (row["rejected"],
                                                                      row["chosen"])
    left, right = st.columns(2)
    with left, st.container(key="lab_side_a"):
        response("A", a)
    with right, st.container(key="lab_side_b"):
        response("B", b)
    strength = state.get("strength")
    with st.container(horizontal=True, horizontal_alignment="left", vertical_alignment="center",
                      gap="small", key="lab_strength"):
        st.caption("strength (optional)")
        for value, key in (("slightly", "Q"), ("clearly", "W")):
            st.button(f"{value} better", key=f"lab_{value}", shortcut=key, on_click=on_strength,
                      args=(value,), type="primary" if strength == value else "tertiary")
    st.text_input("note (optional)", key="lab_note", placeholder="why, or what is wrong")
    buttons = st.columns(4)
    for box, (choice, key, shortcut) in zip(buttons, [("a", "lab_a", "1"), ("b", "lab_b", "2"),
                                                      ("tie", "lab_tie", "3"),
                                                      ("both_bad", "lab_both", "4")], strict=True):
        box.button(CHOICE_TEXT[choice] + (f" ({strength})" if strength and choice in ("a", "b")
                                          else ""), key=key, on_click=on_choice, args=(choice,),
                   width="stretch", shortcut=shortcut,
                   type="primary" if choice in ("a", "b") else "secondary")
else:
    responses = row.get("responses") or []
    st.caption("Rank the responses: 1 is best; give equal ranks for ties; leave out the ones "
               "you cannot judge.")
    cols = st.columns(min(3, max(1, len(responses))))
    for shown, original in enumerate(item.order):
        with cols[shown % len(cols)]:
            response(f"Response {shown + 1}", responses[original], height=320)
            st.selectbox("rank", [None, *range(1, len(responses) + 1)],
                         key=f"rank:{item.row_id}:{shown}",
                         format_func=lambda r: "—" if r is None else str(r))
    st.text_input("note (optional)", key="lab_note")
    st.button("Save ranking", key="lab_rank", type="primary", on_click=on_rank, args=(item,),
              shortcut="Ctrl+Enter")

nav = st.columns(4)
nav[0].button("Previous", key="lab_prev", on_click=on_move, args=(-1,), width="stretch",
              disabled=state["pos"] == 0, shortcut="Left", icon=":material/arrow_back:")
nav[1].button("Skip", key="lab_skip", on_click=on_skip, width="stretch", shortcut="S")
nav[2].button("Next", key="lab_next", on_click=on_move, args=(1,), width="stretch",
              shortcut="Right", icon=":material/arrow_forward:")
nav[3].button("Undo last label", key="lab_undo", on_click=on_undo, width="stretch",
              shortcut="U", icon=":material/undo:")
