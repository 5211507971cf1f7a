"""Share a machine between parallel jobs: CPU threads per job and GPU devices per job."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    """The resources one running submission gets."""

    index: int
    threads: int  # torch/OpenMP threads: fixed by the rubric, so results do not depend on the batch width
    gpu: str | None  # CUDA device index, or None for CPU only
    crowded: bool = False  # the jobs' threads outnumber the cores


def visible_gpus() -> tuple[str, ...]:
    """GPU indices of this machine (from CUDA_VISIBLE_DEVICES, else /dev/nvidiaN), without importing torch."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return tuple(g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1")
    return tuple(sorted((name[6:] for name in os.listdir("/dev") if name.startswith("nvidia") and name[6:].isdigit()),
                        key=int))


def plan_slots(jobs: int | None, cpus: int, gpus: tuple[str, ...], per_gpu: int, threads: int) -> tuple[Slot, ...]:
    """One slot per parallel job, each with ``threads`` torch threads (fixed, so that a result does
    not depend on how many jobs ran beside it). With GPUs, ``per_gpu`` jobs share each GPU and
    ``jobs`` defaults to all of them; without, ``jobs`` defaults to as many as the cores hold."""
    if jobs is None:
        jobs = len(gpus) * per_gpu if gpus else max(1, cpus // threads)
    jobs = max(1, jobs)
    crowded = jobs * threads > cpus
    return tuple(Slot(i, threads, gpus[(i // per_gpu) % len(gpus)] if gpus else None, crowded) for i in range(jobs))
