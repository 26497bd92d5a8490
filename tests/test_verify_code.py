"""The `code` checker and its sandbox: real HumanEval problems pass and fail as they should;
programs that loop, fork, allocate without bound, write outside their folder or reach for the
network each fail with their reason, leave no folder and no process behind, and never stop
the others running beside them."""

from __future__ import annotations

import gzip
import json
import os
import socket
from pathlib import Path

import pytest

from tests.conftest import DATA
from workbench.verifiers import CHECKERS
from workbench.verifiers.code import check, check_many, extract_code
from workbench.verifiers.sandbox import Limits, guards, run_program, run_programs

LIMIT_S = 3.0


def humaneval() -> list[dict]:
    with gzip.open(DATA / "benchmarks" / "humaneval.jsonl.gz", "rt") as lines:
        return [json.loads(line) for line in lines]


def processes_in(folder: Path) -> list[int]:
    """Live processes whose working directory lies under `folder` (deleted or not)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd.startswith(str(folder)):
                found.append(int(entry.name))
    return found


@pytest.fixture
def listener():
    """A socket listening on 127.0.0.1 that a sandboxed program must never reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def nothing_arrived(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return True
    return False


def test_harmful_programs_fail_with_their_reason_and_leave_nothing_behind(tmp_path, listener):
    root = tmp_path / "sandboxes"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "written.txt"
    port = listener.getsockname()[1]
    programs = {
        "loop": ("while True:\n    pass\n", ("timeout after 3s", "CPU time limit")),
        "fork bomb": ("import os\nwhile True:\n    os.fork()\n", ("process creation refused",)),
        "10 GB": ("block = bytearray(10 * 1024 ** 3)\n", ("memory limit",)),
        "write outside": (f"open({str(target)!r}, 'w').write('x')\n",
                          ("write outside sandbox refused",)),
        "network": (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), "
                    "timeout=2)\n", ("network refused",)),
        "raw socket": (f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\n",
                       ("network refused",)),
        "subprocess": ("import subprocess\nsubprocess.run(['sleep', '60'])\n",
                       ("process creation refused",)),
        "big file": ("open('big', 'wb').write(b'x' * (64 << 20))\n", ("file size limit",)),
        "exit early": ("import sys\nsys.exit(0)\nassert False\n",
                       ("exited with status 0 before the end",)),
        "fine": ("assert sum(range(5)) == 10\n", ("all tests passed",)),
    }
    names = list(programs)
    ran = run_programs([programs[name][0] for name in names], Limits(timeout_s=LIMIT_S),
                       workers=4, tmp_root=root)
    verdicts = dict(zip(names, ran, strict=True))
    for name, (_, reasons) in programs.items():
        verdict = verdicts[name]
        assert verdict.passed is (name == "fine"), (name, verdict)
        assert any(reason in verdict.detail for reason in reasons), (name, verdict)
    assert not target.exists()
    assert nothing_arrived(listener)
    assert list(root.iterdir()) == []
    assert processes_in(root) == []


def test_kernel_layers_hold_without_the_audit_hook(tmp_path, listener):
    """With the interpreter's audit hook off, the namespaces and limits still stop them."""
    if not guards()["namespaces"]:
        pytest.skip("this kernel gives the sandbox no network or PID namespace")
    root = tmp_path / "sandboxes"
    root.mkdir()
    port = listener.getsockname()[1]
    network = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), "
                          "timeout=2)\n", Limits(timeout_s=LIMIT_S), tmp_root=root,
                          audit_hook=False)
    assert not network.passed and "network refused" in network.detail, network
    assert nothing_arrived(listener)
    memory = run_program("block = bytearray(10 * 1024 ** 3)\n", Limits(timeout_s=LIMIT_S),
                         tmp_root=root, audit_hook=False)
    assert not memory.passed and "memory limit" in memory.detail, memory
    # a child that leaves the process group lives on past the run without the PID namespace;
    # with it, the kernel ends the child when the namespace's first process exits
    daemon = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
              "    os._exit(0)\n")
    assert run_program(daemon, Limits(timeout_s=LIMIT_S), tmp_root=root, audit_hook=False).passed
    assert processes_in(root) == []
    assert list(root.iterdir()) == []


def test_a_test_failure_says_which_assertion():
    verdict = check("def add(a, b):\n    return a - b\n", "assert add(2, 2) == 4\n")
    assert verdict == (False, "test failed: assert add(2, 2) == 4")


def test_code_comes_from_the_first_python_block():
    response = ("Here is my solution:\n```python\ndef add(a, b):\n    return a + b\n```\n"
                "and a usage example:\n```python\nprint(add(1, 2))\n```\n")
    assert extract_code(response) == "def add(a, b):\n    return a + b\n"
    assert check(response, "assert add(2, 2) == 4").passed
    assert check("no fence at all\n", "assert True").detail.startswith("error: SyntaxError")


def test_humaneval_layout_needs_its_entry_point():
    problem = humaneval()[0]
    solution = problem["prompt"] + problem["canonical_solution"]
    assert check(solution, problem["test"], entry_point=problem["entry_point"]).passed
    missing = check(solution, problem["test"])
    assert missing == (False, "the tests define check(candidate) but the row has no entry_point")
    assert CHECKERS["code"] is check


def test_body_replaced_solutions_fail_and_canonical_ones_pass_side_by_side():
    problems = humaneval()[:24]
    items = []
    for problem in problems:
        items.append((problem["prompt"] + problem["canonical_solution"], problem["test"],
                      problem["entry_point"]))
        items.append((problem["prompt"] + "    pass\n", problem["test"], problem["entry_point"]))
    verdicts = check_many(items, workers=4)
    assert [v.passed for v in verdicts] == [True, False] * len(problems)
