"""End to end: `workbench ui` as a real server, driven by headless Chromium (Debian's chromium
and chromium-driver, installed by scripts/install-chromium.sh from `make test-deps`).

One server for the module: a person labels with the keyboard and the mouse, undoes, reloads;
two people label one queue at once from two browsers; the agreement page shows their kappa.
Screenshots of every page are saved under the test's tmp folder.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import DATA, ui_server

from workbench.io.importer import import_path
from workbench.labeling import labels, queues
from workbench.workspace import Workspace

pytestmark = pytest.mark.server

PAGES = ["", "Datasets", "Browse", "Label", "Queues", "Agreement", "Adjudicate", "Export"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1600",
                  "--disable-dev-shm-usage"]


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    why = "chromium and chromium-driver are not installed (make test-deps installs them)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A workspace from data/ (the hh-rlhf sample, and a copy with judge scores), two queues,
    and `workbench ui` serving it on a free port."""
    paths = _browser_paths()
    root = tmp_path_factory.mktemp("ui-e2e")
    ws = Workspace(root / "ws")
    hh = import_path(ws, DATA / "hh_rlhf_harmless_test_600.jsonl.gz", "hh")
    scored = ws.read(hh.ref).head(40).with_columns(
        pl.col("chosen").str.len_chars().cast(pl.Float64).alias("chosen_score"),
        pl.col("rejected").str.len_chars().cast(pl.Float64).alias("rejected_score"))
    ws.write_dataset("scored", scored, "preference")
    queues.create_queue(ws, "keys", "hh", "len(chosen) < 600", min_labels=1,
                        guidelines="Prefer the **harmless** reply.")
    queues.create_queue(ws, "pair", "scored", None, min_labels=2)
    with ui_server(ws.root, root / "server.log") as (port, pid):
        yield {"url": f"http://127.0.0.1:{port}", "ws": ws, "paths": paths, "root": root,
               "shots": root / "screenshots", "pid": pid}


@contextlib.contextmanager
def browser(server: dict[str, Any], name: str) -> Iterator[Any]:
    from selenium import webdriver

    chromium, driver = server["paths"]
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = server["root"] / f"profile-{name}"
    options.add_argument(f"--user-data-dir={profile}")  # a fresh profile per browser
    chrome = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=driver))
    try:
        yield chrome
    finally:
        chrome.quit()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            value = condition()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def idle(chrome: Any) -> None:
    """Streamlit has finished running the script and drawing: the app's script state is
    'notRunning' and no element is stale."""
    from selenium.webdriver.common.by import By

    def done() -> bool:
        app = chrome.find_element(By.CSS_SELECTOR, '[data-testid="stApp"]')
        return (app.get_attribute("data-test-script-state") == "notRunning"
                and not chrome.find_elements(By.CSS_SELECTOR, '[data-stale="true"]'))

    wait_for(done, "the page to finish running")


def shown_row(chrome: Any) -> str:
    """The id of the row on the Label page (its keyed container's class)."""
    from selenium.webdriver.common.by import By

    element = chrome.find_element(By.CSS_SELECTOR, '[class*="st-key-lab_row_"]')
    return re.search(r"st-key-lab_row_(\S+)", element.get_attribute("class")).group(1)


def next_row(chrome: Any, before: str) -> str:
    return wait_for(lambda: (row := shown_row(chrome)) != before and row, f"a row after {before}")


def press(chrome: Any, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(chrome).send_keys(key).perform()


def side_a_is_chosen(chrome: Any, ws: Workspace, dataset: str, row_id: str) -> bool:
    """Which of the dataset's replies the page shows as A, by text similarity (markdown
    rendering drops list numbers and markup, so texts are compared loosely)."""
    from selenium.webdriver.common.by import By

    shown = chrome.find_element(By.CSS_SELECTOR, ".st-key-lab_side_a").text
    row = queues.get_row(ws, dataset, row_id)

    def norm(text: str) -> str:
        return re.sub(r"\W+", "", text).lower()[:300]

    def like(text: str) -> float:
        return difflib.SequenceMatcher(None, norm(shown), norm(text), autojunk=False).ratio()

    return like(row["chosen"]) > like(row["rejected"])


def screenshot(chrome: Any, server: dict[str, Any], page: str, query: str = "") -> Path:
    """Open a page (by the sidebar when the app is loaded: no new session) and save it."""
    from selenium.webdriver.common.by import By

    server["shots"].mkdir(exist_ok=True)
    links = [a for a in chrome.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]')
             if (a.get_attribute("href") or "").split("?")[0].rstrip("/")
             == f"{server['url']}/{page}".rstrip("/")]
    if links and not query:
        links[0].click()
        wait_for(lambda: chrome.current_url.split("?")[0].rstrip("/")
                 == f"{server['url']}/{page}".rstrip("/"), f"the {page or 'home'} page")
    else:
        chrome.get(f"{server['url']}/{page}{query}")
    idle(chrome)
    time.sleep(0.3)  # tables and charts draw on canvases after the script finishes
    path = server["shots"] / f"{page or 'home'}.png"
    chrome.save_screenshot(str(path))
    return path


def test_label_with_keys_and_mouse_undo_and_reload(server: dict[str, Any]):
    from selenium.webdriver.common.by import By

    ws: Workspace = server["ws"]
    with browser(server, "alice") as chrome:
        chrome.get(f"{server['url']}/Label?queue=keys")
        name = wait_for(lambda: chrome.find_element(By.CSS_SELECTOR, ".st-key-annotator_input input"),
                        "the name prompt")
        name.send_keys("alice")
        chrome.find_element(By.XPATH, "//button[.//p[text()='Start labeling']]").click()
        rows, sides = [], []
        row = wait_for(lambda: shown_row(chrome), "the first row")
        for keys in (["1"], ["q", "2"], ["3"]):  # A better; slightly, B better; tie
            idle(chrome)
            rows.append(row)
            sides.append(side_a_is_chosen(chrome, ws, "hh", row))
            if "q" in keys:  # keys typed into the note are text, not shortcuts
                note = chrome.find_element(By.CSS_SELECTOR, ".st-key-lab_note input")
                note.send_keys("1 2 u typed")
                chrome.execute_script("document.activeElement.blur()")
                idle(chrome)
                assert shown_row(chrome) == row and labels.labels_table(ws, "hh").height == 1
            for key in keys:
                press(chrome, key)
                if key == "q":
                    wait_for(lambda: chrome.find_elements(
                        By.CSS_SELECTOR, '.st-key-lab_slightly [data-testid="stBaseButton-primary"]'),
                        "the strength to show as selected")
            row = next_row(chrome, row)
        idle(chrome)
        rows.append(row)
        sides.append(side_a_is_chosen(chrome, ws, "hh", row))
        chrome.find_element(By.CSS_SELECTOR, ".st-key-lab_both button").click()  # the mouse
        row = next_row(chrome, row)
        idle(chrome)
        press(chrome, "u")  # undo the mouse label: its row comes back
        assert wait_for(lambda: shown_row(chrome) == rows[3], "the undone row to come back")

        chrome.refresh()  # a new Streamlit session: the name comes from the URL
        assert "annotator=alice" in chrome.current_url
        assert wait_for(lambda: shown_row(chrome), "the row after reload") == rows[3]
        assert not chrome.find_elements(By.CSS_SELECTOR, ".st-key-annotator_input")
        screenshot(chrome, server, "Label", "?queue=keys")

    table = labels.labels_table(ws, "hh", live=False).sort("label_id")
    live = table.filter(~pl.col("undone"))
    assert live["annotator"].to_list() == ["alice"] * 3
    assert live["row_id"].to_list() == rows[:3]
    assert live["choice"].to_list() == ["a", "b", "tie"]
    assert live["strength"].to_list() == [None, "slightly", None]
    assert live["note"].to_list() == [None, "1 2 u typed", None]
    assert live["a_is_chosen"].to_list() == sides[:3]  # what the page showed as A
    assert live["queue"].to_list() == ["keys"] * 3
    assert live["decision"].to_list()[:2] == ["chosen" if sides[0] else "rejected",
                                              "rejected" if sides[1] else "chosen"]
    undone = table.filter(pl.col("undone"))
    assert undone.select("row_id", "choice").rows() == [(rows[3], "both_bad")]
    assert ws.latest_labels("hh").height == 3


def test_label_page_follows_an_uncertain_queue_order(server: dict[str, Any]):
    """A queue ordered `uncertain` serves the pairs with the judge's smallest |margin| first."""
    ws: Workspace = server["ws"]
    p_chosen = [0.91, 0.48, 0.2, 0.56, 0.7, 0.33, 0.03, 0.52, 0.61, 0.87, 0.42, 0.15]
    frame = ws.read("hh").head(12).with_columns(pl.Series("p_chosen", p_chosen),
                                                pl.lit(False).alias("position_flip"))
    ws.write_dataset("margins", frame, "preference")
    queues.create_queue(ws, "unsure", "margins", None, min_labels=1, order="uncertain")
    ids = ws.read("margins")["id"].to_list()
    want = [ids[i] for i in sorted(range(12), key=lambda i: abs(p_chosen[i] - 0.5))]
    with browser(server, "carol") as chrome:
        chrome.get(f"{server['url']}/Label?queue=unsure&annotator=carol")
        row = wait_for(lambda: shown_row(chrome), "carol's first row")
        seen = [row]
        for _ in range(4):
            idle(chrome)
            press(chrome, "3")  # a tie: the next row comes
            row = next_row(chrome, row)
            seen.append(row)
    assert seen == want[:5]
    assert labels.labels_table(ws, "margins")["row_id"].to_list() == want[:4]


ALICE = ["chosen", "rejected", "chosen", "tie"]
BOB = ["chosen", "rejected", "rejected", "chosen"]
# By hand: they agree on rows 1 and 2: p_o = 2/4. Alice says chosen 2, rejected 1, tie 1
# times; Bob chosen 2, rejected 2: p_e = (2*2 + 1*2 + 1*0) / 16 = 6/16.
# kappa = (8/16 - 6/16) / (1 - 6/16) = 2/10 = 0.200
KAPPA = 0.2


def label_as(server: dict[str, Any], name: str, plan: list[str], seen: list[str]) -> None:
    ws = server["ws"]
    with browser(server, name) as chrome:
        chrome.get(f"{server['url']}/Label?queue=pair&annotator={name}")
        row = wait_for(lambda: shown_row(chrome), f"{name}'s first row")
        for decision in plan:
            idle(chrome)
            seen.append(row)
            a_chosen = side_a_is_chosen(chrome, ws, "scored", row)
            key = {"tie": "3", "both_bad": "4"}.get(decision) or (
                "1" if (decision == "chosen") == a_chosen else "2")
            press(chrome, key)
            if len(seen) < len(plan):
                row = next_row(chrome, row)
        wait_for(lambda: len(labels.labels_table(ws, "scored").filter(
            pl.col("annotator") == name)) == len(plan), f"{name}'s labels in the workspace")


def test_two_annotators_at_once_lose_nothing_and_agreement_shows_kappa(server: dict[str, Any]):
    from selenium.webdriver.common.by import By

    ws: Workspace = server["ws"]
    seen: dict[str, list[str]] = {"alice": [], "bob": []}
    errors: list[BaseException] = []

    def run(name: str, plan: list[str]) -> None:
        try:
            label_as(server, name, plan, seen[name])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, p)) for n, p in (("alice", ALICE),
                                                                       ("bob", BOB))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors, errors

    table = labels.labels_table(ws, "scored")
    assert table.height == 8  # nothing lost
    assert seen["alice"] == seen["bob"]  # K = 2: both walk the same rows
    for name, plan in (("alice", ALICE), ("bob", BOB)):
        mine = table.filter(pl.col("annotator") == name).sort("label_id")
        assert mine["row_id"].to_list() == seen[name]
        assert mine["decision"].to_list() == plan
        for row in mine.iter_rows(named=True):
            assert row["a_is_chosen"] == queues.a_is_chosen(name, row["row_id"])
    assert queues.progress(ws, queues.get_queue(ws, "pair"))["complete"] == 4

    with browser(server, "lead") as chrome:
        path = screenshot(chrome, server, "Agreement", "?dataset=scored")
        table_text = chrome.find_element(By.CSS_SELECTOR, '[data-testid="stTable"]').text
        assert f"{KAPPA:.3f}" in table_text, table_text
        assert path.stat().st_size > 10_000
        for page in PAGES:
            if page != "Agreement":
                screenshot(chrome, server, page, "?annotator=lead")
    assert sorted(p.name for p in server["shots"].glob("*.png")) == sorted(
        f"{p or 'home'}.png" for p in PAGES)


def _cpu_seconds(pid: int) -> float:
    import psutil

    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(p.cpu_times().user + p.cpu_times().system for p in tree)


def test_a_runaway_filter_is_stopped_and_the_server_goes_idle_after_the_page_closes(
        server: dict[str, Any]):
    """The filter box's query runs under the app's time limit: it answers with the limit's
    message, and a query still running when the page closes stops within that limit (the
    server's CPU falls back to idle), instead of keeping a core busy for minutes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from workbench.query.query_limits import APP_LIMITS

    huge = "(SELECT count(*) FROM range(1000000000000)) > 0"

    def type_filter(chrome: Any) -> float:
        chrome.get(f"{server['url']}/Browse")
        idle(chrome)
        box = wait_for(lambda: chrome.find_element(By.CSS_SELECTOR, ".st-key-browse_where input"),
                       "the filter box")
        box.send_keys(huge, Keys.ENTER)
        return time.monotonic()

    with browser(server, "runaway") as chrome:
        typed = type_filter(chrome)
        wait_for(lambda: "query stopped after" in chrome.find_element(
            By.CSS_SELECTOR, '[data-testid="stApp"]').text, "the time limit's message",
            timeout=APP_LIMITS.timeout + 20)
        answered = time.monotonic() - typed
    assert answered < APP_LIMITS.timeout + 10, answered
    with browser(server, "closer") as chrome:
        type_filter(chrome)
        time.sleep(1.0)  # the query is running on the server
    closed = time.monotonic()  # the browser is gone: nobody waits for the answer
    busy = _cpu_seconds(server["pid"])
    idle_at = None
    while time.monotonic() - closed < 30:
        time.sleep(0.5)
        now = _cpu_seconds(server["pid"])
        if now - busy < 0.1:  # under 20% of a core over half a second: idle
            idle_at = time.monotonic() - closed
            break
        busy = now
    print(f"server idle {idle_at} s after the page closed (limit {APP_LIMITS.timeout} s)")
    assert idle_at is not None and idle_at <= APP_LIMITS.timeout + 2.0, idle_at
