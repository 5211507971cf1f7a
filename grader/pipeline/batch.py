"""Grade a directory of submissions into OUT; one broken submission never costs another its
result, and a finished result is never lost (written at once, reused on re-run)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grader.intake.collect import Collected, collect
from grader.intake.read import read_submission
from grader.model.context import Context
from grader.model.errors import GraderError
from grader.model.pairs import save as save_pairs
from grader.model.results import Result, SeedRun, Status, failed_result, write_atomic
from grader.model.rubric import Rubric
from grader.model.submission import Submission
from grader.outputs.exports import Roster
from grader.outputs.pages import notebook_page, rerender
from grader.outputs.plot_store import draw_missing, student_plots
from grader.outputs.progress import Progress
from grader.pipeline.cache import batch_key, cache_key, environment_key, reusable
from grader.pipeline.executors.local import Executor, Graded, Job
from grader.run.children import notebook_body
from grader.run.renderer import warm_renderer
from grader.scoring import seeds
from grader.scoring.overrides import Override, check_accounts
from grader.static.similarity import similar_pairs


@dataclass(frozen=True)
class BatchSummary:
    results: tuple[Result, ...]
    skipped: tuple[tuple[str, str], ...]  # (file name, why it was not graded as found)
    cached: int  # how many results were reused from an earlier run
    seed_reruns: int = 0  # re-runs of borderline results with other seeds run now (not reused)
    warnings: tuple[str, ...] = ()  # what the TA should look at in what they gave (a roster's gaps)


class _Tracker:
    """Writes each finished result at once, reports progress, then draws the result's plots (the
    pages at the end only read them); safe to call from worker threads."""

    def __init__(
        self, out: Path, total: int, on_progress: Callable[[Progress], None], rubric: Rubric
    ) -> None:
        self.out, self.total, self.on_progress, self.rubric = out, total, on_progress, rubric
        self.results: list[Result] = []
        self.running: set[str] = set()
        self.lock = threading.Lock()
        self.drawing = threading.Lock()  # matplotlib's settings are global: one drawing at a time

    def started(self, account: str) -> None:
        with self.lock:
            self.running.add(account)
            self.on_progress(
                Progress(None, len(self.results), self.total, False, tuple(sorted(self.running)))
            )

    def finished(self, graded: Graded) -> None:
        result = graded.result
        if graded.executed is not None:
            executed = self.out / "executed" / f"{result.student}.ipynb"
            write_atomic(executed, graded.executed)
            self._notebook_page(executed)
        # last: its presence means done
        result.write(self.out / "results" / f"{result.student}.json")
        self.record(result, cached=False)
        with self.drawing:
            draw_missing(self.out, student_plots(result, self.rubric))

    def _notebook_page(self, executed: Path) -> None:
        """OUT/executed/<account>.html beside the notebook, for reading it in a browser (offline); a
        notebook nbconvert cannot render keeps only its .ipynb link (and no stale page)."""
        page = executed.with_suffix(".html")
        try:
            body = notebook_body(executed)
            write_atomic(page, notebook_page(self.rubric.homework, executed.stem, body).encode())
        except ValueError:
            page.unlink(missing_ok=True)

    def record(self, result: Result, cached: bool) -> None:
        with self.lock:
            self.results.append(result)
            self.running.discard(result.student)
            self.on_progress(
                Progress(result, len(self.results), self.total, cached, tuple(sorted(self.running)))
            )


class _SeedTracker:
    """Keeps each finished re-run with another seed under OUT/seeds/ at once and reports progress
    after the main runs' (``done`` of ``total``); safe to call from worker threads."""

    def __init__(
        self, out: Path, done: int, total: int, on_progress: Callable[[Progress], None]
    ) -> None:
        self.out, self.done, self.total, self.on_progress = out, done, total, on_progress
        self.runs: dict[str, list[SeedRun]] = {}
        self.running: Counter[str] = Counter()
        self.lock = threading.Lock()

    def started(self, account: str) -> None:
        with self.lock:
            self.running[account] += 1
            self.on_progress(
                Progress(None, self.done, self.total, False, tuple(sorted(self.running)))
            )

    def finished(self, graded: Graded) -> None:
        account, seed = graded.job.submission.account, graded.job.seed
        assert seed is not None
        run = seeds.store(self.out, account, seed, graded.result, graded.executed)
        with self.lock:
            self.runs.setdefault(account, []).append(run)
            self.done += 1
            self.running[account] -= 1
            self.running += Counter()  # drops the accounts no longer running
            self.on_progress(
                Progress(
                    graded.result, self.done, self.total, False, tuple(sorted(self.running)), seed
                )
            )


def _with_seeds(
    out: Path,
    results: list[Result],
    submissions: dict[str, Submission],
    context: Context,
    executor: Executor,
    count: int,
    force: bool,
    on_progress: Callable[[Progress], None],
) -> tuple[list[Result], int]:
    """Every borderline result re-run with ``count`` more seeds (those kept under OUT/seeds/ with a
    matching key are reused unless ``force``), merged by the rubric's seed policy and written again
    where that changed it; (the results, how many re-runs ran now)."""
    rubric = context.rubric
    found: dict[str, list[SeedRun]] = {}
    todo: list[Job] = []
    for result in results:
        sub = submissions.get(result.student)
        if (
            count <= 0
            or sub is None
            or result.cache_key is None
            or not seeds.is_borderline(rubric, result)
        ):
            continue
        for seed in seeds.extra_seeds(rubric, count):
            key = seeds.seed_key(result.cache_key, seed)
            kept = None if force else seeds.stored(out, result.student, seed, key)
            if kept is not None:
                found.setdefault(result.student, []).append(kept)
            else:
                todo.append(Job(sub, key, seed))
    tracker = _SeedTracker(out, len(results), len(results) + len(todo), on_progress)
    if todo:
        executor.run(todo, context, tracker)
    merged = []
    for result in results:
        runs = sorted(
            found.get(result.student, []) + tracker.runs.get(result.student, []),
            key=lambda r: r.seed,
        )
        # no runs: as graded (a result merged before is restored)
        now = seeds.merge(rubric, result, runs)
        if now != result:
            now.write(out / "results" / f"{result.student}.json")
        merged.append(now)
    return merged, len(todo)


def _selected(found: Collected, only: frozenset[str] | None) -> Collected:
    """The submissions of the accounts in ``only`` (all without it); an account it names that has no
    file is an error, never an empty batch."""
    if only is None:
        return found
    present = {s.account for s in found.submissions} | {
        a for a, _, _ in (*found.unreadable, *found.disputed)
    }
    absent = sorted(only - present)
    if absent:
        raise GraderError(
            f"--only: no submission for {', '.join(absent)} in the folder; accounts "
            f"are the <account> of the file names (found {len(present)})"
        )
    return Collected(
        tuple(s for s in found.submissions if s.account in only),
        tuple(u for u in found.unreadable if u[0] in only),
        found.skipped,
        tuple(d for d in found.disputed if d[0] in only),
    )


def _refuse_out_inside(directory: Path, out: Path) -> None:
    if directory.is_dir() and out.resolve().is_relative_to(directory.resolve()):
        raise GraderError(
            f"--out {out} is inside the submissions folder {directory}; choose a "
            "folder outside it (its results and pages would be read as submissions next time)"
        )


def grade_directory(
    directory: Path,
    out: Path,
    context: Context,
    executor: Executor,
    on_progress: Callable[[Progress], None] = lambda p: None,
    force: bool = False,
    overrides: dict[str, Override] | None = None,
    roster: Roster | None = None,
    borderline_seeds: int = 0,
    only: frozenset[str] | None = None,
) -> BatchSummary:
    """Grade every submission under ``directory`` (a folder or a zip) with ``executor``; write each
    result as soon as it is known; reuse results whose cache key still matches unless ``force``.
    With ``borderline_seeds`` K, every borderline result is then run again with K more seeds through
    the same executor, and the rubric's seed policy decides its points (grader.scoring.seeds).
    With ``only``, just those accounts are graded (again). The gradebook and pages are then built
    from every result in OUT, this batch's and those graded before."""
    _refuse_out_inside(directory, out)
    rubric = context.rubric
    found = collect(directory, rubric, out / "unpacked")
    stored = {path.stem for path in (out / "results").glob("*.json")}
    check_accounts(
        overrides or {},
        {s.account for s in found.submissions}
        | stored
        | {u[0] for u in (*found.unreadable, *found.disputed)},
    )
    if only is None:
        policy = rubric.similarity
        save_pairs(
            out,
            similar_pairs(
                list(found.submissions),
                read_submission(rubric.template),
                policy.threshold,
                policy.min_lines,
            ),
        )
    found = _selected(found, only)
    force = force or only is not None
    skipped = found.skipped
    tracker = _Tracker(
        out,
        len(found.submissions) + len(found.unreadable) + len(found.disputed),
        on_progress,
        rubric,
    )
    for (account, path, why), status in [
        *((u, Status.ERROR) for u in found.unreadable),
        *((d, Status.REVIEW) for d in found.disputed),
    ]:
        result = failed_result(account, path, why, rubric.accuracy.max_points, status)
        result.write(out / "results" / f"{account}.json")
        tracker.record(result, cached=False)
    batch = batch_key(context, environment_key(executor.device_kind))
    todo: list[Job] = []
    for sub in found.submissions:
        key = cache_key(sub, batch, timed=context.rubric.deadline is not None)
        reused = None if force else reusable(out / "results" / f"{sub.account}.json", key)
        if reused is not None:
            tracker.record(reused, cached=True)
        else:
            todo.append(Job(sub, key))
    with warm_renderer():  # the executed notebooks' pages, rendered as each result lands
        executor.run(todo, context, tracker)
    results, reseeded = _with_seeds(
        out,
        tracker.results,
        {s.account: s for s in found.submissions},
        context,
        executor,
        borderline_seeds,
        force,
        on_progress,
    )
    write_atomic(out / "skipped.json", json.dumps(list(skipped)).encode())
    warnings = rerender(out, rubric, overrides or {}, roster)
    return BatchSummary(
        tuple(sorted(results, key=lambda r: r.student)),
        skipped,
        len(found.submissions) - len(todo),
        reseeded,
        warnings,
    )
