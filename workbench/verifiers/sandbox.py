"""Run untrusted Python programs, one process each, and say how each one ended.

Each program runs in `python -I -B` (no environment variables, no user site, no bytecode
written) started by `sandbox_boot.py`, with an empty temporary folder as its working
directory, stdout discarded and stderr kept in a file beside that folder. Layers, each
checked in `tests/test_verify_code.py`:

- kernel limits (`setrlimit` in the sandbox process before the program runs): CPU time,
  address space, size of any file written, number of processes, open files; no core dumps;
- a wall-time limit: the whole process group is killed;
- a new network namespace (the loopback is down, so nothing is reachable) and a new PID
  namespace (when its first process exits the kernel kills everything left in it), where
  the kernel allows them: as root, or in an unprivileged user namespace; `guards()` says;
- an audit hook in the program's interpreter that refuses writes outside the folder,
  sockets other than Unix socket pairs, name lookups, new processes, signals to other
  processes and C functions looked up through ctypes, each with its reason.

The temporary folder is removed whatever happens. Many programs run at once through a
bounded thread pool (`run_programs`): each thread only waits on its subprocess.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from workbench.verifiers import Verdict, short

BOOT = Path(__file__).with_name("sandbox_boot.py")
TAIL_BYTES = 8192
FRAME = re.compile(r'^\s*File "<solution>", line (\d+)')


@dataclass(frozen=True)
class Limits:
    """What one program may use. `cpu_s` defaults to the wall time rounded up."""

    timeout_s: float = 5.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    processes: int = 32
    cpu_s: int | None = None


def run_program(source: str, limits: Limits = Limits(), *, tmp_root: str | Path | None = None,
                namespaces: bool = True, audit_hook: bool = True) -> Verdict:
    """Run `source` as `__main__` in the sandbox; passed when it ran to its end and exited 0.

    `tmp_root` is where the temporary folder is made (default: the system's). `namespaces`
    and `audit_hook` switch a layer off, for the tests that check the other layers alone.
    """
    import json

    root = Path(tempfile.mkdtemp(prefix="workbench-sandbox-", dir=tmp_root))
    try:
        work = root / "work"
        work.mkdir()
        marker = f"workbench-sandbox-done-{secrets.token_hex(16)}"
        settings = {"marker": marker, "cpu_s": limits.cpu_s or math.ceil(limits.timeout_s),
                    "memory": limits.memory_mb << 20, "file_size": limits.file_size_mb << 20,
                    "processes": limits.processes, "namespaces": namespaces,
                    "audit_hook": audit_hook}
        payload = (json.dumps(settings) + "\n" + source).encode()
        errors = root / "stderr"
        with errors.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", str(BOOT)], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=sink, cwd=work, env=_environment(work),
                start_new_session=True, close_fds=True)
            timed_out = False
            try:
                proc.communicate(payload, timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc.pid)
                proc.wait()
                _await_group_end(proc.pid)
        return _verdict(proc.returncode, timed_out, _tail(errors), marker, limits)
    finally:
        _remove(root)


def run_programs(sources: Sequence[str], limits: Limits = Limits(), *,
                 workers: int | None = None, **options: object) -> list[Verdict]:
    """`run_program` over many programs, at most `workers` at once (default: the CPU count);
    verdicts in input order."""
    if not sources:
        return []
    workers = max(1, min(workers or default_workers(), len(sources)))
    if workers == 1:
        return [run_program(source, limits, **options) for source in sources]  # type: ignore[arg-type]
    with ThreadPoolExecutor(workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda source: run_program(source, limits, **options), sources))  # type: ignore[arg-type]


def default_workers() -> int:
    """Twice the CPUs (a program spends part of its life starting up and waiting), at most 32."""
    return max(1, min(32, 2 * len(os.sched_getaffinity(0))))


@functools.cache
def guards() -> dict[str, bool]:
    """Which kernel layers this machine gives the sandbox: run a probe and look."""
    probe = ("import os, socket\n"
             "assert os.getpid() == 2, os.getpid()\n"
             "try:\n"
             "    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
             "except OSError as exc:\n"
             "    assert exc.errno == 101, exc\n"  # ENETUNREACH: no route, not refused
             "else:\n"
             "    raise SystemExit(1)\n")
    isolated = run_program(probe, Limits(timeout_s=10), audit_hook=False).passed
    return {"namespaces": isolated, "rlimits": True, "audit_hook": True}


def _environment(work: Path) -> dict[str, str]:
    """A bare environment: temporary files go to the folder, BLAS stays on one thread (its
    thread stacks would not fit the address-space limit)."""
    return {"PATH": os.defpath, "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _await_group_end(pgid: int, limit_s: float = 10.0) -> None:
    """Wait until no process of the group is alive: SIGKILL is delivered at once but a
    process with much memory or many children takes a while to go, and the folder must not
    be removed (nor the verdict given) while a program still runs in it."""
    deadline = time.monotonic() + limit_s
    while _live_members(pgid) and time.monotonic() < deadline:
        _kill_group(pgid)
        time.sleep(0.01)


def _live_members(pgid: int) -> bool:
    """Whether a process of group `pgid` is alive (a zombie is not; it only waits to be
    reaped). Without /proc, whether the kernel still knows the group at all."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _tail(path: Path) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")


def _remove(root: Path) -> None:
    """Remove the folder even where the program took away its own permissions."""
    def retry(function, path, _exc_info) -> None:  # noqa: ANN001
        try:
            os.chmod(os.path.dirname(path), stat.S_IRWXU)
            os.chmod(path, stat.S_IRWXU)
            function(path)
        except OSError:
            pass

    shutil.rmtree(root, onerror=retry)


def _verdict(code: int, timed_out: bool, tail: str, marker: str, limits: Limits) -> Verdict:
    """How the program ended, in a few words."""
    if timed_out:
        return Verdict(False, f"timeout after {limits.timeout_s:g}s")
    lines = [line for line in tail.splitlines() if line.strip()]
    if code == 0:
        if lines and lines[-1].strip() == marker:
            return Verdict(True, "all tests passed")
        return Verdict(False, "exited with status 0 before the end of the tests")
    if code < 0:
        return Verdict(False, _signal_reason(-code, limits))
    last = lines[-1].strip() if lines else ""
    if "sandbox: " in last:
        return Verdict(False, last.split("sandbox: ", 1)[1])
    if last.startswith("MemoryError") or "Cannot allocate memory" in last:
        return Verdict(False, f"memory limit ({limits.memory_mb} MB)")
    if "Network is unreachable" in last:
        return Verdict(False, "network refused (no network in the sandbox)")
    if "File too large" in last:
        return Verdict(False, f"file size limit ({limits.file_size_mb} MB)")
    where = _failing_line(lines)
    if last.startswith("AssertionError"):
        message = last.partition(":")[2].strip()
        text = "test failed" + (f": {where}" if where else "") + (f" ({message})" if message else "")
        return Verdict(False, short(text, 200))
    if not last:
        return Verdict(False, f"exited with status {code}")
    return Verdict(False, short(f"error: {last}" + (f" at {where}" if where else ""), 200))


def _signal_reason(sig: int, limits: Limits) -> str:
    if sig == signal.SIGXCPU:
        return f"CPU time limit ({limits.cpu_s or math.ceil(limits.timeout_s)}s)"
    if sig == signal.SIGXFSZ:
        return f"file size limit ({limits.file_size_mb} MB)"
    if sig == signal.SIGKILL:
        return "killed (CPU or memory limit)"
    try:
        return f"killed by {signal.Signals(sig).name}"
    except ValueError:
        return f"killed by signal {sig}"


def _failing_line(lines: list[str]) -> str:
    """The program's own source line where the error was raised (the last frame in it)."""
    for index in range(len(lines) - 1, -1, -1):
        if FRAME.match(lines[index]) and index + 1 < len(lines):
            following = lines[index + 1].strip()
            return "" if following.startswith("File ") else following
    return ""
