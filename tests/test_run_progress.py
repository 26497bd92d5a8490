"""Plain progress lines (a log, CI, `make demo | tee`): a step says it started at once, before
a model loads, then shows model items and tokens per second at most every few seconds."""

from __future__ import annotations

import time

from workbench.engine.run_progress import PLAIN_EVERY, StepBar


def test_a_step_says_it_started_before_any_model_call(capsys) -> None:
    bar = StepBar(plain=True)
    bar.start("step 1 (generate)", 4)
    assert capsys.readouterr().err == "  step 1 (generate): started\n"
    report = bar.calls()
    report(0, 8, 0)  # what the cache answered: not a line
    report(2, 8, 40)  # within PLAIN_EVERY of the start line: held back
    assert capsys.readouterr().err == ""
    bar._printed = time.monotonic() - PLAIN_EVERY  # as if the interval had passed
    report(4, 8, 80)
    line = capsys.readouterr().err
    assert line.startswith("  step 1 (generate): 4/8 model items, ") and "tok/s" in line
    report(8, 8, 160)  # the last call always shows
    assert "8/8 model items" in capsys.readouterr().err
    bar.done("step 1 (generate): 4 → 4 rows")
    assert capsys.readouterr().err == "  step 1 (generate): 4 → 4 rows\n"


def test_no_lines_when_progress_is_off(capsys) -> None:
    bar = StepBar(plain=False)
    bar.start("step 1 (filter)", 1)
    bar.calls()(1, 1, 0)
    bar.done("step 1 (filter): 1 → 1 rows")
    assert capsys.readouterr().err == ""


def test_a_silent_step_says_it_is_still_working_and_stops_when_done(capsys, monkeypatch) -> None:
    monkeypatch.setattr("workbench.engine.run_progress.HEARTBEAT_EVERY", 0.2)
    bar = StepBar(plain=True)
    bar.start("step 2 (judge)", 1)
    deadline = time.monotonic() + 30
    while "still working" not in (seen := capsys.readouterr().err) and time.monotonic() < deadline:
        time.sleep(0.1)  # a model loading: no call reports anything
    assert "  step 2 (judge): still working, " in seen
    bar.done("step 2 (judge): 1 → 1 rows")
    assert capsys.readouterr().err.endswith("  step 2 (judge): 1 → 1 rows\n")
    time.sleep(1.0)
    assert capsys.readouterr().err == ""  # the heartbeat ended with the step


def test_the_heartbeat_shows_a_held_back_call_line_first(capsys, monkeypatch) -> None:
    monkeypatch.setattr("workbench.engine.run_progress.HEARTBEAT_EVERY", 0.3)
    bar = StepBar(plain=True)
    bar.start("step 3 (rationale)", 1)
    report = bar.calls()
    report(0, 26, 0)
    report(8, 26, 120)  # within PLAIN_EVERY of the start line: held back, not lost
    deadline = time.monotonic() + 30
    seen = ""
    while "8/26" not in seen and time.monotonic() < deadline:
        seen += capsys.readouterr().err
        time.sleep(0.05)
    lines = seen.splitlines()
    assert lines[0] == "  step 3 (rationale): started"
    assert lines[1].startswith("  step 3 (rationale): 8/26 model items, ")
    bar.done("step 3 (rationale): 26 → 26 rows")
