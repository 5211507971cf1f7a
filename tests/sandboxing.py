"""Pieces the sandbox and hostile tests share: a small model notebook cell, and what a test's
sandboxes left alive.

Those tests run beside others (pytest-xdist workers grading classes of their own), so they look
only at their own processes: this process's descendants, with this process adopting the orphans of
its descendants while they run (``adopting_orphans``: Linux's child subreaper), and any process
whose command line names one of the test's folders."""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MODEL = """
import torch, torch.nn as nn, torch.nn.functional as F
from torchvision import datasets, transforms
test_data = datasets.FashionMNIST('data', train=False, download=True, transform=transforms.ToTensor())
test_loader = torch.utils.data.DataLoader(test_data, batch_size=50)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 512), nn.Linear(512, 256), nn.Linear(256, 10)
    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.view(-1, 784))))))
model = Net()
"""  # noqa: E501

# a sandbox user no job, evaluator or warm evaluator of a grader running beside the test gets
TEST_UID = 62000
_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
_PR_GET_CHILD_SUBREAPER = 37


def _subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def is_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    flag = ctypes.c_int(0)
    if libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_GET_CHILD_SUBREAPER)")
    return bool(flag.value)


@contextmanager
def adopting_orphans(on: bool = True) -> Iterator[None]:
    """While the block runs, a process that loses its parent (a killed grader's sandbox) becomes
    this process's child instead of init's (``on=False``: init's again, as a grader's orphans are
    without a test around them). Orphans that end stay zombies of this process until it ends."""
    before = is_subreaper()
    _subreaper(on)
    try:
        yield
    finally:
        _subreaper(before)


def _processes() -> dict[int, tuple[int, str, int, str]]:
    """Every process: pid -> (parent, state, uid, comm)."""
    seen = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue  # gone meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, parent = stat[stat.rindex(")") + 2 :].split()[:2]
        uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
        seen[int(entry.name)] = (int(parent), state, uid, comm)
    return seen


def _names(pid: int, folders: tuple[Path, ...]) -> bool:
    try:
        line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(str(folder).encode() in line for folder in folders)


def sandboxed_processes(*folders: Path) -> list[str]:
    """Processes still alive that a sandbox of this test started (run as a sandbox user, or bwrap
    itself): descendants of this process, and processes whose command line names one of
    ``folders`` and their descendants. "uid state comm" each."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, *_) in table.items():
        children.setdefault(parent, []).append(pid)
    todo = [os.getpid(), *(pid for pid in table if folders and _names(pid, folders))]
    ours = set(todo)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in ours:
                ours.add(child)
                todo.append(child)
    return [
        f"{uid} {state} {comm}"
        for pid, (_, state, uid, comm) in sorted(table.items())
        if state != "Z"
        and ((uid >= 60000 and uid != os.geteuid()) or comm == "bwrap")
        and pid in ours
    ]


def left_behind(*folders: Path, within: float = 10.0) -> list[str]:
    """``sandboxed_processes(*folders)`` once none is left, or as they are after ``within``
    seconds: a sandbox's processes take a moment to end on a loaded machine (a fork bomb's hundreds
    are killed one by one), what a sandbox truly left behind stays."""
    deadline = time.monotonic() + within
    while (alive := sandboxed_processes(*folders)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive
