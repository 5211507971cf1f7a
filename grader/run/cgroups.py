"""One control group per sandboxed run: memory of all its processes together, their number and
their CPU share are capped, and the peak memory and OOM kills are read back for the result.

Works on cgroup v2 (most servers) and v1 (these development machines) when the grader may write
the hierarchy (root). Groups are named after the grader's pid, so a grader killed with -9 leaves
groups the next grader removes (``sweep``). Where no hierarchy is writable, ``find_hierarchy``
says why and the sandbox keeps its per-process rlimits only.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
_GROUP = re.compile(r"^job-(\d+)-(\d+)$")  # job-<grader pid>-<slot index>
_V1_CONTROLLERS = ("memory", "pids", "cpu")
_PERIOD_US = 100_000


@dataclass(frozen=True)
class Hierarchy:
    """Where the grader's groups go: v2, one folder; v1, one folder per controller."""

    version: int
    bases: tuple[Path, ...]  # v2: (base,); v1: memory, pids[, cpu] bases in that order


@dataclass(frozen=True)
class GroupLimits:
    memory_mb: int  # all processes of the run together (RAM-backed scratch files included)
    max_processes: int
    cpus: float  # CPU bandwidth in cores


@dataclass(frozen=True)
class JobGroup:
    """One run's group: a folder in each hierarchy the run's processes join."""

    version: int
    folders: tuple[Path, ...]  # the first holds the memory files

    @property
    def memory(self) -> Path:
        return self.folders[0]


@dataclass(frozen=True)
class Usage:
    """What the group's counters say after the run."""

    peak_memory_mb: float | None
    oom_kills: int


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(value)


def _own_v1_path(controller: str, proc_cgroup: str) -> str:
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path.lstrip("/")
    return ""


def find_hierarchy(root: Path = ROOT) -> tuple[Hierarchy | None, str]:
    """The writable hierarchy with memory and pids controllers, or None and one line saying why."""
    try:
        if (root / "cgroup.controllers").is_file():
            available = set((root / "cgroup.controllers").read_text().split())
            if not {"memory", "pids"} <= available:
                return None, f"cgroup v2 at {root} has no memory or pids controller"
            wanted = " ".join(f"+{c}" for c in ("memory", "pids", "cpu") if c in available)
            _write(root / "cgroup.subtree_control", wanted)
            base = root / "grader"
            base.mkdir(exist_ok=True)
            _write(base / "cgroup.subtree_control", wanted)  # the base holds no process itself
            return Hierarchy(2, (base,)), f"cgroup v2 ({base})"
        own = Path("/proc/self/cgroup").read_text()
        bases: list[Path] = []
        for controller in _V1_CONTROLLERS:
            mount = root / controller
            if not (mount / "cgroup.procs").is_file():
                if controller == "cpu":
                    continue  # optional: memory and process caps still hold
                return None, f"no cgroup v1 '{controller}' hierarchy under {root}"
            base = mount / _own_v1_path(controller, own) / "grader"
            base.mkdir(exist_ok=True)
            bases.append(base)
        return Hierarchy(1, tuple(bases)), f"cgroup v1 ({', '.join(str(b) for b in bases)})"
    except OSError as exc:
        return None, f"the cgroup hierarchy is not writable here ({exc.strerror or exc})"


def _configure(version: int, folders: tuple[Path, ...], limits: GroupLimits) -> None:
    memory = str(limits.memory_mb * 1024 * 1024)
    quota = str(max(1000, int(limits.cpus * _PERIOD_US)))
    if version == 2:
        folder = folders[0]
        _write(folder / "memory.max", memory)
        if (folder / "memory.swap.max").exists():
            _write(folder / "memory.swap.max", "0")
        _write(folder / "pids.max", str(limits.max_processes))
        if (folder / "cpu.max").exists():
            _write(folder / "cpu.max", f"{quota} {_PERIOD_US}")
        return
    _write(folders[0] / "memory.limit_in_bytes", memory)
    if (folders[0] / "memory.memsw.limit_in_bytes").exists():
        _write(folders[0] / "memory.memsw.limit_in_bytes", memory)
    _write(folders[1] / "pids.max", str(limits.max_processes))
    if len(folders) > 2:
        _write(folders[2] / "cpu.cfs_period_us", str(_PERIOD_US))
        _write(folders[2] / "cpu.cfs_quota_us", quota)


def _pids(folder: Path) -> list[int]:
    try:
        return [int(p) for p in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def remove(group: JobGroup, timeout_s: float = 10) -> None:
    """Kill whatever is still inside and delete the group's folders."""
    deadline = time.monotonic() + timeout_s
    for folder in group.folders:
        while folder.exists():
            for pid in _pids(folder):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                folder.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    break  # left for the next sweep
                time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(hierarchy: Hierarchy) -> int:
    """Remove the groups of graders that died (killed with -9); return how many."""
    removed = 0
    stale: dict[str, list[Path]] = {}
    for base in hierarchy.bases:
        for folder in base.iterdir() if base.is_dir() else ():
            match = _GROUP.match(folder.name)
            if match and folder.is_dir() and not _alive(int(match.group(1))):
                stale.setdefault(folder.name, []).append(folder)
    for folders in stale.values():
        remove(JobGroup(hierarchy.version, tuple(folders)))
        removed += 1
    return removed


def create(hierarchy: Hierarchy, index: int, limits: GroupLimits) -> JobGroup:
    """A new, empty group for the run in slot ``index`` of this grader process."""
    name = f"job-{os.getpid()}-{index}"
    folders = tuple(base / name for base in hierarchy.bases)
    group = JobGroup(hierarchy.version, folders)
    # a leftover of this very pid (an earlier run in this slot that could not be removed)
    remove(group)
    for folder in folders:
        folder.mkdir()
    _configure(hierarchy.version, folders, limits)
    return group


@contextmanager
def job_group(
    hierarchy: Hierarchy | None, index: int, limits: GroupLimits
) -> Iterator[JobGroup | None]:
    """A group for one run, always removed afterwards; None when there is no hierarchy."""
    if hierarchy is None:
        yield None
        return
    sweep(hierarchy)
    group = create(hierarchy, index, limits)
    try:
        yield group
    finally:
        remove(group)


def join_command(group: JobGroup) -> list[str]:
    """A prefix that moves the command into ``group`` before it starts (so all it forks stays
    in)."""
    procs = [str(folder / "cgroup.procs") for folder in group.folders]
    script = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "grader-cgroup", *procs, "--"]


def _field(path: Path, name: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def usage(group: JobGroup) -> Usage:
    """Peak memory (MB) and OOM kills of the group so far."""
    folder = group.memory
    peak_file = folder / ("memory.peak" if group.version == 2 else "memory.max_usage_in_bytes")
    try:
        peak: float | None = round(int(peak_file.read_text().strip()) / (1024 * 1024), 1)
    except (OSError, ValueError):
        peak = None  # memory.peak needs Linux 5.19
    events = folder / ("memory.events" if group.version == 2 else "memory.oom_control")
    return Usage(peak, _field(events, "oom_kill") or 0)
