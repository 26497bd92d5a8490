"""Run one untrusted program under the limits `workbench.verifiers.sandbox` asks for.

Started as `python -I -B sandbox_boot.py` in an empty folder (its working directory), with one
line of JSON settings and then the program on stdin. Only the standard library is used, and
nothing from the workbench is imported, so the program sees a bare interpreter.

Order: read the settings and the program; enter a new network and PID namespace where the
kernel allows it (root, or an unprivileged user namespace); in that case fork a first
process of the namespace (when it exits the kernel kills every process left in it) which
forks the program; then set the resource limits, install the audit hook and run. When the
program returns, a marker from the settings goes to stderr, so a program that exits early
with status 0 (`sys.exit(0)` before the tests) is not taken for a pass.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000

PROCESS_EVENTS = frozenset({"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn",
                            "os.spawn", "subprocess.Popen", "os.killpg", "pty.spawn"})
NETWORK_EVENTS = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
                            "socket.getaddrinfo", "socket.gethostbyname",
                            "socket.gethostbyname_ex", "socket.gethostbyaddr",
                            "socket.getnameinfo"})
FFI_EVENTS = frozenset({"ctypes.dlsym", "ctypes.dlsym/handle"})
# event -> positions of the path arguments that must lie inside the folder
PATH_EVENTS = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
               "os.link": (0, 1), "os.symlink": (1,), "os.chmod": (0,), "os.chown": (0,),
               "os.truncate": (0,), "os.utime": (0,), "shutil.rmtree": (0,),
               "os.chflags": (0,), "os.lchown": (0,), "shutil.copyfile": (1,),
               "shutil.copytree": (1,), "shutil.move": (0, 1)}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def main() -> None:
    settings = json.loads(sys.stdin.readline())
    source = sys.stdin.read()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if settings.get("namespaces", True) and _enter_namespaces():
        _relay(_fork_init(settings, source))
    _run(settings, source)


def _enter_namespaces() -> bool:
    """A new network namespace (no interface but a loopback that is down) and a new PID
    namespace for the children; False where the kernel refuses both ways."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    if os.geteuid() == 0 and libc.unshare(CLONE_NEWNET | CLONE_NEWPID) == 0:
        return True
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID) != 0:
        return False
    try:  # keep our own uid and gid inside, so the folder stays ours
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    except OSError:
        return False
    return True


def _fork_init(settings: dict, source: str) -> int:
    """Fork the namespace's first process, which forks the program, waits for it and passes
    its wait status back through a pipe; returns that status."""
    read_end, write_end = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(read_end)
        program = os.fork()
        if program == 0:
            os.close(write_end)
            _run(settings, source)
            sys.exit(0)
        while True:
            pid, status = os.waitpid(-1, 0)  # reap whatever else ends, until the program does
            if pid == program:
                break
        os.write(write_end, str(status).encode())
        os._exit(0)  # every process left in the namespace is killed with this one
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        text = reader.read()
    os.waitpid(init, 0)
    return int(text) if text else 9  # no status: the first process was killed (SIGKILL)


def _relay(status: int) -> None:
    """End this process the way the program ended: its exit status, or its signal."""
    if os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else signal.SIGKILL
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)


def _run(settings: dict, source: str) -> None:
    """Limits, audit hook, then the program as `__main__`; the marker only if it returns."""
    cpu = int(settings["cpu_s"])
    for limit, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)),
                         (resource.RLIMIT_AS, (settings["memory"],) * 2),
                         (resource.RLIMIT_FSIZE, (settings["file_size"],) * 2),
                         (resource.RLIMIT_NPROC, (settings["processes"],) * 2),
                         (resource.RLIMIT_NOFILE, (256, 256))):
        resource.setrlimit(limit, value)
    import linecache

    linecache.cache["<solution>"] = (len(source), None, source.splitlines(True), "<solution>")
    code = compile(source, "<solution>", "exec")
    marker = settings["marker"]
    guard = settings.get("audit_hook", True)
    settings.clear()
    if guard:
        _install_hook(os.getcwd())
    try:
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        import traceback

        traceback.print_exc()  # through linecache, so the program's lines are shown
        sys.exit(1)
    sys.stdout.flush()
    sys.stderr.write(f"\n{marker}\n")
    sys.stderr.flush()


def _install_hook(folder: str) -> None:
    """Refuse, with a PermissionError that names the reason: writes outside `folder`, network
    use, new processes, signals to other processes, and calls into C libraries by name.

    A guard against accidents and the usual reward hacks, not a boundary against a program
    that rewrites the interpreter: the kernel's limits and namespaces are that."""
    realpath, fspath, join, getcwd = os.path.realpath, os.fspath, os.path.join, os.getcwd
    getpid, unix = os.getpid, 1  # socket.AF_UNIX, without importing socket here
    root = realpath(folder)
    inside = (root, os.devnull)

    def outside(path: object) -> bool:
        if isinstance(path, int):
            return False  # an open file descriptor: its opening was checked
        try:
            text = fspath(path)
        except TypeError:
            return False
        if isinstance(text, bytes):
            text = text.decode("utf-8", "surrogateescape")
        full = realpath(join(getcwd(), text))
        return not (full in inside or full.startswith(root + "/"))

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (any(c in mode for c in "wax+") if isinstance(mode, str)
                      else bool((flags or 0) & WRITE_FLAGS))
            if writes and path is not None and outside(path):
                raise PermissionError(f"sandbox: write outside sandbox refused: {path!r}")
        elif event in PATH_EVENTS:
            for index in PATH_EVENTS[event]:
                if index < len(args) and args[index] is not None and outside(args[index]):
                    raise PermissionError(f"sandbox: write outside sandbox refused "
                                          f"({event}): {args[index]!r}")
        elif event == "socket.__new__":
            if len(args) > 1 and args[1] != unix:
                raise PermissionError("sandbox: network refused")
        elif event in NETWORK_EVENTS:
            raise PermissionError(f"sandbox: network refused ({event})")
        elif event in PROCESS_EVENTS:
            raise PermissionError(f"sandbox: process creation refused ({event})")
        elif event == "os.kill" and args and args[0] != getpid():
            raise PermissionError("sandbox: signal to another process refused")
        elif event in FFI_EVENTS:
            raise PermissionError(f"sandbox: foreign function lookup refused ({event})")

    sys.addaudithook(hook)


if __name__ == "__main__":
    main()
