"""Share a machine between parallel jobs: CPU threads per job and GPU devices per job."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MAX_RUNNING = 256  # jobs one machine may run at once, across every grader process on it


@dataclass(frozen=True)
class Slot:
    """The resources one running submission gets."""

    index: int
    # torch/OpenMP threads: fixed by the rubric, so results do not depend on the batch width
    threads: int
    gpu: str | None  # the GPU's nvidia-smi index (or UUID), or None for CPU only
    crowded: bool = False  # this batch's jobs have more threads than the machine has cores
    cores: tuple[int, ...] = ()  # CPUs the job is pinned to; (): not pinned


def visible_gpus() -> tuple[str, ...]:
    """GPUs of this machine by nvidia-smi index (CUDA_VISIBLE_DEVICES where set), without importing
    torch."""
    from grader.run.gpus import installed

    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return tuple(g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1")
    return tuple(g.index for g in installed())


def cores_for(
    index: int, threads: int, available: tuple[int, ...] | None = None
) -> tuple[int, ...]:
    """The block of ``threads`` CPUs that the job holding machine-wide ``index`` is pinned to, so
    that jobs never migrate onto each other's cores; () when the machine has no free block for
    it."""
    cpus = tuple(sorted(os.sched_getaffinity(0))) if available is None else available
    block = cpus[index * threads : (index + 1) * threads]
    return block if len(block) == threads and len(cpus) > threads else ()


def plan_slots(
    jobs: int | None, cpus: int, gpus: tuple[str, ...], per_gpu: int, threads: int
) -> tuple[Slot, ...]:
    """One slot per parallel job, each with ``threads`` torch threads (fixed, so that a result does
    not depend on how many jobs ran beside it). With GPUs, ``per_gpu`` jobs share each GPU and
    ``jobs`` defaults to all of them; without, ``jobs`` defaults to as many as the cores hold."""
    if jobs is None:
        jobs = len(gpus) * per_gpu if gpus else max(1, cpus // threads)
    jobs = max(1, jobs)
    crowded = jobs * threads > cpus
    return tuple(
        Slot(i, threads, gpus[(i // per_gpu) % len(gpus)] if gpus else None, crowded)
        for i in range(jobs)
    )


@contextmanager
def claim_index(lock_dir: Path | None = None) -> Iterator[int]:
    """A number no other running job on this machine holds (any grader process, local or a Ray
    worker), for as long as the block runs. It picks the sandbox's uid, so that each job's process
    limit counts only its own processes. The kernel drops the lock when its holder dies."""
    # per user: only root's matter
    folder = lock_dir or Path(tempfile.gettempdir()) / f"grader-slots-{os.geteuid()}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for index in range(MAX_RUNNING):
        fd = os.open(folder / f"{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield index
        finally:
            os.close(fd)  # closing releases the lock
        return
    raise RuntimeError(f"more than {MAX_RUNNING} jobs are running on this machine")
