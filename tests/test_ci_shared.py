"""In CI (`.ci/run` sets WORKBENCH_REQUIRE_SHARED) a test that needs ../shared/data fails when
the folder is missing, instead of skipping silently; a plain clone still skips it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def run_beside_no_shared(tmp_path: Path, require: bool) -> subprocess.CompletedProcess:
    tests = tmp_path / "clone" / "tests"  # tmp_path/shared does not exist
    tests.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "conftest.py", tests / "conftest.py")
    (tests / "test_needs_shared.py").write_text(
        "def test_reads_shared(shared):\n    assert shared.exists()\n")
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_REQUIRE_SHARED"}
    if require:
        env["WORKBENCH_REQUIRE_SHARED"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", str(tests)], cwd=tests.parent, env=env,
                          capture_output=True, text=True, timeout=120)


def test_ci_fails_when_shared_is_missing(tmp_path: Path) -> None:
    ci = run_beside_no_shared(tmp_path, require=True)
    assert ci.returncode == 1 and "1 error" in ci.stdout, ci.stdout  # setup failed
    assert "WORKBENCH_REQUIRE_SHARED is set" in ci.stdout
    clone = run_beside_no_shared(tmp_path / "plain", require=False)
    assert clone.returncode == 0 and "1 skipped" in clone.stdout, clone.stdout
    assert "WORKBENCH_REQUIRE_SHARED=1" in (ROOT / ".ci" / "run").read_text()
