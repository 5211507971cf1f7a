"""Grade a directory of submissions into OUT, in parallel; one broken submission never costs
another its result, and a finished result is never lost (written at once, reused on re-run)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import queue
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import grader
from grader.archive import unpack
from grader.errors import SubmissionError
from grader.grade import Context, grade_submission
from grader.report import write_batch_reports
from grader.results import Result, Status
from grader.slots import Slot
from grader.submission import Submission, discover


@dataclass(frozen=True)
class BatchSummary:
    results: tuple[Result, ...]
    skipped: tuple[tuple[str, str], ...]  # (file name, why it was not graded)
    cached: int  # how many results were reused from an earlier run


@dataclass(frozen=True)
class Progress:
    """One finished submission, for the progress display."""

    result: Result
    done: int
    total: int
    cached: bool
    running: tuple[str, ...]  # accounts still being graded


def failed_result(account: str, source: Path, reason: str, max_score: int) -> Result:
    """A result for a submission that could not be graded at all."""
    return Result(student=account, source=source.name, status=Status.ERROR, accuracy=None, reported_accuracy=None,
                  score=0, max_score=max_score, bonus=0, checks=(), flags=(), duration_s=0.0, reason=reason)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def environment_key(device_kind: str) -> str:
    """What, besides the submission and the rubric, can change a grade: versions and device kind."""
    return "|".join([grader.__version__, platform.python_version(), _version("torch"), _version("torchvision"), device_kind])


def cache_key(sub: Submission, context: Context, environment: str) -> str:
    """A digest of the submission's content, the rubric, the reference template and the environment."""
    digest = hashlib.sha256()
    for part in (sub.path.read_bytes(), context.rubric.path.read_bytes(), context.rubric.template.read_bytes(),
                 environment.encode(), str(context.sandboxed).encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _reusable(path: Path, key: str) -> Result | None:
    try:
        result = Result.read(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # a missing or damaged result is graded again
    return result if result.cache_key == key else None


def _shown(path: Path, roots: tuple[Path, ...]) -> str:
    """A file's name relative to the folder it was found in."""
    for root in roots:
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return path.name


def grade_directory(directory: Path, out: Path, context: Context, slots: tuple[Slot, ...],
                    on_progress: Callable[[Progress], None] = lambda p: None, force: bool = False) -> BatchSummary:
    """Grade every submission under ``directory`` with one job per slot; write each result as soon as
    it is known; reuse results whose cache key still matches unless ``force``."""
    rubric = context.rubric
    root, unpacked = unpack(directory, out / "unpacked")
    found = discover(root, rubric.files, *unpacked)
    if not found.submissions and not found.unreadable:
        raise SubmissionError(
            f"{directory}: no submissions found; expected files named like {rubric.files.notebook.format(account='ACCOUNT')}"
        )
    skipped = tuple((_shown(p, (root, *unpacked)), f"name matches no pattern ({rubric.files.notebook})")
                    for p in found.unmatched)
    results_dir = out / "results"
    total = len(found.submissions) + len(found.unreadable)
    results: list[Result] = []
    running: set[str] = set()

    def finish(result: Result, cached: bool = False) -> None:
        if not cached:
            result.write(results_dir / f"{result.student}.json")
        results.append(result)
        running.discard(result.student)
        on_progress(Progress(result, len(results), total, cached, tuple(sorted(running))))

    for account, path, why in found.unreadable:
        finish(failed_result(account, path, why, rubric.accuracy.max_points))
    environment = environment_key("gpu" if any(s.gpu for s in slots) else "cpu")
    todo: list[tuple[Submission, str]] = []
    for sub in found.submissions:
        key = cache_key(sub, context, environment)
        reused = None if force else _reusable(results_dir / f"{sub.account}.json", key)
        if reused is not None:
            finish(reused, cached=True)
        else:
            todo.append((sub, key))
    free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
    for slot in slots:
        free.put(slot)

    def grade_one(sub: Submission, key: str) -> Result:
        slot = free.get()
        running.add(sub.account)
        try:
            with tempfile.TemporaryDirectory(prefix=f"grader-{sub.account}-") as work:
                result = grade_submission(sub, context, Path(work), out / "executed" / f"{sub.account}.ipynb", slot)
        except Exception as exc:  # noqa: BLE001 - the batch goes on; the reason is kept
            result = failed_result(sub.account, sub.path, f"internal grader error: {type(exc).__name__}: {exc}",
                                   rubric.accuracy.max_points)
        finally:
            free.put(slot)
        return replace(result, cache_key=key)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        for future in as_completed([pool.submit(grade_one, sub, key) for sub, key in todo]):
            finish(future.result())
    write_batch_reports(out, results, rubric, list(skipped))
    return BatchSummary(tuple(sorted(results, key=lambda r: r.student)), skipped, total - len(todo) - len(found.unreadable))
