"""Build the isolated command a kernel runs in (bubblewrap): no network, read-only system,
a private writable work dir, a private /tmp, limits, and only the assigned GPUs.

Nothing here runs student code; execute.py prepends ``command()`` to the kernel's command line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SANDBOX_UID = 65534  # nobody: when the grader runs as root, student code does not
_SYSTEM_DIRS = ("/usr", "/etc", "/opt")
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int  # RLIMIT_DATA: heap and private mappings of every process inside
    max_processes: int  # RLIMIT_NPROC, enforced when the grader runs as root (student code runs as nobody)
    max_file_mb: int  # RLIMIT_FSIZE: the largest file it may write


@dataclass(frozen=True)
class Sandbox:
    """Where one submission may read and write."""

    workdir: Path  # the only writable place, bound at the same path
    readonly: tuple[Path, ...]  # bound read-only at the same path (a symlink shows its target's content there)
    limits: SandboxLimits
    gpus: tuple[str, ...] = ()  # CUDA device indices to expose; () exposes no GPU device node
    uid: int = SANDBOX_UID  # the user student code runs as when the grader is root (one per parallel job)


def unavailable_reason() -> str | None:
    """None when bubblewrap can build a sandbox here, else one line saying why not and what to do."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed; `apt-get install bubblewrap`"
    probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", *_user_args(), "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"bubblewrap cannot create namespaces here ({probe.stderr.strip()[:120]})"
    return None


def python_paths() -> tuple[Path, ...]:
    """What the kernel needs to start: the interpreter, its environment and the grader package."""
    import grader

    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable)).parent.parent,
             Path(grader.__file__).resolve().parent}
    return tuple(sorted(paths))


def _user_args() -> list[str]:
    # As root, bwrap mounts without a user namespace and student code is dropped to nobody (so that
    # RLIMIT_NPROC holds); as a normal user, an unprivileged user namespace does the mounting.
    return [] if os.geteuid() == 0 else ["--unshare-user"]


def _parents(paths: list[Path]) -> list[str]:
    """--dir arguments creating every parent of the bound paths world-readable (bwrap makes them 0700)."""
    seen: list[str] = []
    for path in paths:
        for parent in reversed(path.parents):
            text = str(parent)
            if text != "/" and text not in seen and not any(text == d or text.startswith(d + "/") for d in _SYSTEM_DIRS):
                seen.append(text)
    return [arg for text in seen for arg in ("--perms", "0755", "--dir", text)]


def _gpu_args(gpus: tuple[str, ...]) -> list[str]:
    if not gpus:
        return []
    nodes = [n for n in _GPU_NODES if os.path.exists(n)] + [f"/dev/nvidia{g}" for g in gpus if os.path.exists(f"/dev/nvidia{g}")]
    return [arg for node in nodes for arg in ("--dev-bind", node, node)]


def command(sandbox: Sandbox, env: dict[str, str]) -> list[str]:
    """The bwrap + setpriv + prlimit prefix that runs a command inside ``sandbox``, whose only
    environment is PATH, HOME, LANG, TMPDIR, CUDA_VISIBLE_DEVICES and ``env``."""
    args = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", *_user_args(), "--clearenv"]
    for directory in _SYSTEM_DIRS:
        if os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
    for link in _SYSTEM_LINKS:
        if os.path.islink(link):
            args += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            args += ["--ro-bind", link, link]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp", *_gpu_args(sandbox.gpus)]
    binds = [p for p in sandbox.readonly if p.exists()]
    args += _parents([*binds, sandbox.workdir])  # after /tmp: the work dir usually lives below it
    for path in binds:
        args += ["--ro-bind", os.path.realpath(path), str(path)]
    args += ["--bind", str(sandbox.workdir), str(sandbox.workdir), "--chdir", str(sandbox.workdir)]
    inside = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(sandbox.workdir),
              "LANG": "C.UTF-8", "TMPDIR": "/tmp", "PYTHONNOUSERSITE": "1",
              "CUDA_VISIBLE_DEVICES": ",".join(sandbox.gpus), **env}
    for key, value in inside.items():
        args += ["--setenv", key, value]
    args.append("--")
    if os.geteuid() == 0:
        args += ["setpriv", f"--reuid={sandbox.uid}", f"--regid={sandbox.uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all"]
    limits = sandbox.limits
    args += ["prlimit", f"--data={limits.memory_mb * 1024 * 1024}", f"--fsize={limits.max_file_mb * 1024 * 1024}"]
    if os.geteuid() == 0:
        args.append(f"--nproc={limits.max_processes}")
    return args


def prepare_workdir(sandbox: Sandbox) -> None:
    """Make the work dir writable by the sandbox's user (when the grader is root)."""
    sandbox.workdir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for path in [sandbox.workdir, *sandbox.workdir.rglob("*")]:
            os.chown(path, sandbox.uid, sandbox.uid, follow_symlinks=False)


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def namespace_inits(bwrap_pid: int) -> list[int]:
    """The host pids of the sandbox's PID-namespace init(s): the children of the outer bwrap."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if (info := _state_and_parent(pid)) is not None and info[1] == bwrap_pid]


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
