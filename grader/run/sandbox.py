"""Build the isolated command a kernel runs in (bubblewrap): no network, read-only system,
RAM-backed size-capped scratch space (the work dir, /tmp, /dev/shm), one host folder for the
kernel's sockets and the probe's file, limits, and only the assigned GPU.

Nothing here runs student code; execute.py prepends ``command()`` to the kernel's command line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from grader.run.cgroups import JobGroup, join_command
from grader.run.gpus import Gpu, sandbox_args

SANDBOX_UID = 65534  # nobody: when the grader runs as root, student code does not
# The trusted evaluators' users (one per job slot, counting down): never a student's, so no process
# of a submission counts against their process limit or can signal them.
EVALUATOR_UID = SANDBOX_UID - 4096
HOME = Path("/content")  # the notebook's working directory and $HOME inside, as in Colab
_SYSTEM_DIRS = ("/usr", "/etc", "/opt")
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class SandboxLimits:
    # all processes together (cgroup, where there is one) and each process's heap (RLIMIT_DATA)
    memory_mb: int
    max_processes: int  # the cgroup's pids.max, and RLIMIT_NPROC when the grader runs as root
    max_file_mb: int  # RLIMIT_FSIZE: the largest file it may write
    # size of each RAM-backed writable place: the work dir, /tmp and /dev/shm; 0: none of them is
    # writable (the evaluator's)
    scratch_mb: int


@dataclass(frozen=True)
class Sandbox:
    """Where one submission may read and write, and what it may use."""

    kernel_dir: Path  # host folder bound read-write: the kernel's sockets and the probe's file
    # bound read-only at the same path (a symlink shows its target's content there)
    readonly: tuple[Path, ...]
    limits: SandboxLimits
    gpu: Gpu | None = None  # the one GPU it sees (as cuda:0); None: no GPU device at all
    # the user student code runs as when the grader is root (one per parallel job)
    uid: int = SANDBOX_UID
    cores: tuple[int, ...] = ()  # CPUs it may run on; (): any
    group: JobGroup | None = None  # the cgroup every process of the run joins
    # files or folders hidden behind empty ones (copies of hidden test labels)
    masked: tuple[Path, ...] = ()


def unavailable_reason() -> str | None:
    """None when bubblewrap can build a sandbox here, else one line saying why not and what to
    do."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed; `apt-get install bubblewrap`"
    probe = subprocess.run(
        ["bwrap", "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", *_user_args(), "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"bubblewrap cannot create namespaces here ({probe.stderr.strip()[:120]})"
    return None


def python_paths() -> tuple[Path, ...]:
    """What the kernel needs to start: the interpreter, its environment and the grader package."""
    import grader

    paths = {
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(os.path.realpath(sys.executable)).parent.parent,
        Path(grader.__file__).resolve().parent,
    }
    return tuple(sorted(paths))


def visible_roots(readonly: tuple[Path, ...]) -> tuple[Path, ...]:
    """Every host folder a sandbox shows (the system folders and ``readonly``)."""
    return tuple(Path(d) for d in _SYSTEM_DIRS if os.path.isdir(d)) + readonly


def _user_args() -> list[str]:
    # As root, bwrap mounts without a user namespace and student code is dropped to nobody (so that
    # RLIMIT_NPROC holds); as a normal user, an unprivileged user namespace does the mounting.
    return [] if os.geteuid() == 0 else ["--unshare-user"]


def _parents(paths: list[Path]) -> list[str]:
    """--dir arguments creating every parent of the bound paths world-readable (bwrap makes them
    0700)."""
    seen: list[str] = []
    for path in paths:
        for parent in reversed(path.parents):
            text = str(parent)
            if (
                text != "/"
                and text not in seen
                and not any(text == d or text.startswith(d + "/") for d in _SYSTEM_DIRS)
            ):
                seen.append(text)
    return [arg for text in seen for arg in ("--perms", "0755", "--dir", text)]


def _scratch(path: str, mb: int) -> list[str]:
    if not mb:
        return ["--perms", "0755", "--dir", path]  # root's, in the sandbox's root: read-only
    return ["--perms", "1777", "--size", str(mb * 1024 * 1024), "--tmpfs", path]


def _mask(path: Path) -> list[str]:
    return ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]


def die_with(parent: int) -> list[str]:
    """A prefix that kills the command when process ``parent`` dies, also when it dies while the
    command is starting: bwrap's --die-with-parent alone misses a grader killed before bwrap
    runs."""
    # after the signal is armed: was the parent gone?
    check = '[ "$PPID" = "$1" ] || exit 125; shift; exec "$@"'
    return [
        "setpriv",
        "--pdeathsig",
        "KILL",
        "--",
        "/bin/sh",
        "-c",
        check,
        "grader-guard",
        str(parent),
    ]


class _Lifeline:
    """A pipe whose write end only this grader process holds (never inherited: os.pipe() is
    close-on-exec).

    Every sandbox watches the read end and ends itself when it reads end-of-file, that is, when the
    grader is gone, however it died. bwrap's --die-with-parent alone misses a grader killed while a
    sandbox is being set up: the namespace's init arms its parent-death signal only after the
    mounts,
    and an init whose parent died before that outlives everyone (seen in CI: a kernel left
    running)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ends: tuple[int, int, int] | None = None  # read, write, the pid that made them

    def read_end(self) -> int:
        with self._lock:
            if self._ends is None or self._ends[2] != os.getpid():  # a forked child makes its own
                read, write = os.pipe()
                self._ends = (read, write, os.getpid())
            return self._ends[0]


LIFELINE = _Lifeline()  # one per grader process: the process is what the sandboxes outlive


def pass_fds() -> tuple[int, ...]:
    """What a Popen of a ``command()`` must pass on (``pass_fds=``): the lifeline's read end."""
    return (LIFELINE.read_end(),)


def _watching(fd: int) -> list[str]:
    # Runs first inside the namespace, before the drop to the student's user: a child waits for the
    # lifeline's end-of-file and then kills every process of the namespace; the command goes on
    # without the pipe. Without the pipe (a caller that did not pass it), the command just runs.
    script = (
        'fd=$1; shift; [ -e "/proc/self/fd/$fd" ] || exec "$@"; '
        '{ read -r -u "$fd" _; kill -KILL -1; } & exec {fd}<&-; exec "$@"'
    )
    return ["/bin/bash", "-c", script, "grader-lifeline", str(fd)]


def command(sandbox: Sandbox, env: dict[str, str]) -> list[str]:
    """The prefix that runs a command inside ``sandbox`` (cgroup, bwrap, setpriv, prlimit, taskset),
    whose only environment is PATH, HOME, LANG, TMPDIR, USER, LOGNAME, CUDA_VISIBLE_DEVICES and
    ``env``.
    Start it with ``pass_fds=pass_fds()``: the sandbox then dies with this process, however it
    dies."""
    limits = sandbox.limits
    args = die_with(os.getpid())
    args += join_command(sandbox.group) if sandbox.group else []
    args += [
        "bwrap",
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        *_user_args(),
        "--clearenv",
    ]
    for directory in _SYSTEM_DIRS:
        if os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
    for link in _SYSTEM_LINKS:
        if os.path.islink(link):
            args += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            args += ["--ro-bind", link, link]
    args += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        *_scratch("/dev/shm", limits.scratch_mb),
        *_scratch("/tmp", limits.scratch_mb),
        *sandbox_args(sandbox.gpu),
    ]
    binds = [p for p in sandbox.readonly if p.exists()]
    args += _parents([*binds, sandbox.kernel_dir, HOME])  # after /tmp: these usually live below it
    for path in binds:
        args += ["--ro-bind", os.path.realpath(path), str(path)]
    for path in sandbox.masked:
        args += _mask(path)
    args += [
        "--bind",
        str(sandbox.kernel_dir),
        str(sandbox.kernel_dir),
        *_scratch(str(HOME), limits.scratch_mb),
        "--chdir",
        str(HOME),
    ]
    inside = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(HOME),
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "PYTHONNOUSERSITE": "1",
        # a job's uid has no passwd entry: getpass.getuser() (torch's caches use it) reads
        # these first
        "USER": "student",
        "LOGNAME": "student",
        **env,
    }
    if sandbox.gpu is None:
        inside["CUDA_VISIBLE_DEVICES"] = ""
    else:
        inside.pop("CUDA_VISIBLE_DEVICES", None)  # the one GPU it can open is cuda:0
    for key, value in inside.items():
        args += ["--setenv", key, value]
    args += ["--", *_watching(LIFELINE.read_end())]
    if os.geteuid() == 0:
        args += [
            "setpriv",
            f"--reuid={sandbox.uid}",
            f"--regid={sandbox.uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ]
    args += [
        "prlimit",
        f"--data={limits.memory_mb * 1024 * 1024}",
        f"--fsize={limits.max_file_mb * 1024 * 1024}",
    ]
    if os.geteuid() == 0:
        args.append(f"--nproc={limits.max_processes}")
    if sandbox.cores:
        args += ["taskset", "--cpu-list", ",".join(str(c) for c in sandbox.cores)]
    return args


def end_orphans() -> int:
    """Kill this grader's kind of sandbox left without a parent and without anything inside: a bwrap
    whose starting parent died before the two halves' handshake waits for it forever, before any
    command (and so before the lifeline's watcher) runs. Returns how many it ended."""
    ended = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            info = _state_and_parent(int(entry.name))
            if info is None or info[1] != 1 or (entry / "comm").read_text().strip() != "bwrap":
                continue
            if b"grader-lifeline" not in (entry / "cmdline").read_bytes():
                continue
            if any((task / "children").read_text().strip() for task in (entry / "task").iterdir()):
                continue  # it runs something: the lifeline's watcher ends that
            os.kill(int(entry.name), signal.SIGKILL)
            ended += 1
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return ended


def prepare_kernel_dir(sandbox: Sandbox, files: tuple[str, ...]) -> None:
    """Create the kernel folder (and ``files`` in it, empty) for the sandbox's user to write."""
    sandbox.kernel_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        (sandbox.kernel_dir / name).touch()
    if os.geteuid() == 0:
        for path in [sandbox.kernel_dir, *(sandbox.kernel_dir / name for name in files)]:
            os.chown(path, sandbox.uid, sandbox.uid, follow_symlinks=False)


def lock_kernel_dir(sandbox: Sandbox) -> None:
    """Once the kernel's sockets exist: student code may write the files in the folder, but may not
    add, replace or link anything there (the folder is root's again). Only when the grader is
    root."""
    if os.geteuid() == 0:
        os.chown(sandbox.kernel_dir, 0, 0, follow_symlinks=False)
        os.chmod(sandbox.kernel_dir, 0o755, follow_symlinks=False)


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def namespace_inits(bwrap_pid: int) -> list[int]:
    """The host pids of the sandbox's PID-namespace init(s): the children of the outer bwrap."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [
        pid for pid in pids if (info := _state_and_parent(pid)) is not None and info[1] == bwrap_pid
    ]


def end_namespaces(pids: list[int], timeout_s: float = 30) -> None:
    """Kill each sandbox's PID-namespace init (which makes the kernel kill every process inside) and
    wait until it is gone or a zombie: it only gets there once its whole namespace has ended."""
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "bwrap":  # not a reused pid
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass  # already gone
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = [_state_and_parent(pid) for pid in pids]
        if all(state is None or state[0] in ("Z", "X") for state in states):
            return
        time.sleep(0.05)
