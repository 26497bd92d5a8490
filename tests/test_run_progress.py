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
