"""Grade jobs: the step every executor runs for one submission, and the local executor
(one thread per slot, each thread driving a sandboxed kernel)."""

from __future__ import annotations

import queue
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from grader.model.context import Context
from grader.model.results import Result, failed_result
from grader.model.submission import Submission
from grader.pipeline.grade import grade_one
from grader.run.evaluate import warm_evaluators
from grader.run.slots import Slot, claim_index, cores_for


@dataclass(frozen=True)
class Job:
    """One submission to grade, and the cache key its result will carry; ``seed`` replaces the
    rubric's seed (a borderline result's re-run, grader.scoring.seeds)."""

    submission: Submission
    key: str
    seed: int | None = None


@dataclass(frozen=True)
class Graded:
    """A finished job: its result and the executed notebook (None when it did not run)."""

    job: Job
    result: Result
    executed: bytes | None


class Listener(Protocol):
    """Told when a job starts and when it is finished; may be called from several threads."""

    def started(self, account: str) -> None: ...

    def finished(self, graded: Graded) -> None: ...


class Executor(Protocol):
    """Something that grades jobs somewhere: this machine's slots, or a Ray cluster."""

    @property
    def device_kind(self) -> str:
        """'gpu' or 'cpu': part of every cache key."""
        ...

    @property
    def width(self) -> int:
        """How many jobs run at once (for the ETA)."""
        ...

    def run(self, jobs: Sequence[Job], context: Context, listener: Listener) -> None:
        """Grade every job, telling ``listener`` as each one finishes."""
        ...


def grade_job(job: Job, context: Context, slot: Slot) -> Graded:
    """Grade one submission in a private folder. A grader failure becomes this student's error
    result, left uncached so that a re-run tries again."""
    sub = job.submission
    with (
        claim_index() as index,
        tempfile.TemporaryDirectory(prefix=f"grader-{sub.account}-") as work,
    ):
        executed = Path(work) / "executed.ipynb"
        try:
            mine = replace(slot, index=index, cores=cores_for(index, slot.threads))
            result = replace(grade_one(sub, context, mine, job.seed, executed), cache_key=job.key)
        except Exception as exc:  # noqa: BLE001 - the batch goes on; the reason is kept
            result = failed_result(
                sub.account,
                sub.path,
                f"internal grader error: {type(exc).__name__}: {exc}",
                context.rubric.accuracy.max_points,
            )
        return Graded(job, result, executed.read_bytes() if executed.is_file() else None)


@dataclass(frozen=True)
class LocalExecutor:
    """Runs jobs on this machine, one at a time per slot; sandboxed runs evaluate on the batch's
    warm evaluators (run/evaluate.py ``warm_evaluators``)."""

    slots: tuple[Slot, ...]

    @property
    def device_kind(self) -> str:
        return "gpu" if any(s.gpu for s in self.slots) else "cpu"

    @property
    def width(self) -> int:
        return len(self.slots)

    def run(self, jobs: Sequence[Job], context: Context, listener: Listener) -> None:
        free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        for slot in self.slots:
            free.put(slot)

        def one(job: Job) -> Graded:
            slot = free.get()
            try:
                listener.started(job.submission.account)
                return grade_job(job, context, slot)
            finally:
                free.put(slot)

        with warm_evaluators(), ThreadPoolExecutor(max_workers=len(self.slots)) as pool:
            for future in as_completed([pool.submit(one, job) for job in jobs]):
                listener.finished(future.result())
