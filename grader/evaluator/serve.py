"""The evaluator as a warm server (``__main__.py --serve FD ...``): torch and torch.export's
deserializer imported once, then one forked child per capture, so a batch pays the imports (about
4 s of CPU) once per slot instead of once per student.

Each capture is evaluated in a fresh fork of a process that has only imported modules: nothing a
capture did survives into the next one. The grader (run/evaluate.py ``Warm``) sends, over the
control socket, the child's standard input, output and error (three pipe ends); the child reads
the capture on the first and answers on the second exactly as the one-shot evaluator does. When
the child has ended, the server answers on the control socket with its exit code and whether its
sandbox is as it was. In a sandbox of its own (``sweep``), where nothing is writable, it first ends
every process the child left behind (``kill(-1)``: every process of the sandbox's user in its PID
namespace but this one, atomically); one still there, a setting of the server's that a process of
its user may change (its limits, priority, scheduling, cores) changed, or a System V IPC object left
in the sandbox's IPC namespace, and the server says it is not clean and ends (its sandbox with it),
and the grader starts a fresh one for the next capture.

The server is not dumpable, and so neither is a child: a child cannot ptrace the server or read or
write its memory through /proc, and it closes the control socket before reading a byte of the
capture. A child that kills or stops the server only fails its own evaluation.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

STATUS = struct.Struct("!i?")  # the child's exit code, and whether the sandbox is as it was
_PR_SET_DUMPABLE = 4
_IOPRIO_GET = {"x86_64": 252, "aarch64": 31}  # the system call's number (no wrapper in Python)


def serve(control: socket.socket, work: Callable[[], None], sweep: bool) -> None:
    """Fork a child running ``work`` for each request on ``control`` until the grader closes it
    (or the sandbox is not clean after a child). ``sweep`` only inside bubblewrap's PID namespace:
    elsewhere ``kill(-1)`` would reach every process of the user."""
    if sweep and not _in_sandbox():
        raise SystemExit("--sweep is for an evaluator alone in its sandbox")
    _not_dumpable()
    settings = _settings()
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 16, 3)
        except OSError:
            return
        if not message or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            return
        pid = os.fork()
        if pid == 0:
            _child(control, fds, work)
        for fd in fds:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        clean = _swept() and _settings() == settings and not _ipc_left() if sweep else True
        try:
            control.sendall(STATUS.pack(os.waitstatus_to_exitcode(status), clean))
        except OSError:
            return
        if not clean:
            return


def _child(control: socket.socket, fds: list[int], work: Callable[[], None]) -> None:
    code = 0
    try:
        control.close()
        os.setsid()  # a session (and so a scheduler autogroup) of its own, apart from the server's
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        work()
    except BaseException:  # noqa: BLE001 - the child reports every failure by its exit code
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - a closed stream: nothing more to say
                pass
        os._exit(code)


def _not_dumpable() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _settings() -> tuple[object, ...]:
    """What of this process another process of its user may change, and a child inherits: its
    resource limits (a hard one lowered cannot be raised again), I/O and CPU priority, its
    session's autogroup priority, scheduling and cores."""
    limits = sorted(
        (name, resource.getrlimit(getattr(resource, name)))
        for name in dir(resource)
        if name.startswith("RLIMIT_")
    )
    number = _IOPRIO_GET.get(platform.machine())
    io = ctypes.CDLL(None).syscall(number, 1, 0) if number else None  # IOPRIO_WHO_PROCESS, self
    try:
        group = Path("/proc/self/autogroup").read_text()  # the session's nice, where autogroups are
    except OSError:
        group = ""
    return (
        limits,
        io,
        group,
        os.getpriority(os.PRIO_PROCESS, 0),
        os.sched_getscheduler(0),
        os.sched_getparam(0).sched_priority,
        sorted(os.sched_getaffinity(0)),
    )


def _ipc_left() -> bool:
    """A System V shared memory segment, semaphore set or message queue in the sandbox's IPC
    namespace: it would outlive the child (and its memory no limit of the child's)."""
    for kind in ("shm", "sem", "msg"):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
        except OSError:
            return True
        if len(lines) > 1:  # a header line, then one line per object
            return True
    return False


def _in_sandbox() -> bool:
    try:
        return Path("/proc/1/comm").read_text().strip() == "bwrap"
    except OSError:
        return False


def _swept(wait_s: float = 2.0) -> bool:
    """End every process of this user in the sandbox but this one; whether none was left."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass  # nothing else ran
    deadline = time.monotonic() + wait_s
    while _others():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _others() -> list[int]:
    """The processes of this user in this PID namespace other than this one (zombies included:
    the namespace's init reaps them)."""
    uid, found = os.getuid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as status:
                line = next((ln for ln in status if ln.startswith("Uid:")), "")
        except OSError:
            continue  # gone meanwhile
        if line.split()[1:2] == [str(uid)]:
            found.append(int(entry.name))
    return found
