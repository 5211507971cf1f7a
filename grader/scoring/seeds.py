"""Borderline grades a TA can defend: a result within the rubric's margin of a threshold is run
again with more seeds, and the rubric's ``seed_policy`` decides which run gives the points.

The policy lives here: which results are borderline (``score.near_threshold``, the class page's
definition), which seeds (the rubric's seed + 1 .. + K), and how the runs combine (``choose``,
``merge``). A seed re-run is never the student's result: each is kept as
``OUT/seeds/<account>/<seed>.json`` (with its executed notebook beside it), reused while its key
matches, and merged into the student's result, whose ``accuracy`` stays the rubric seed's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from grader.model.findings import Flag
from grader.model.results import Result, Score, SeedRun, Status, write_atomic
from grader.model.rubric import Rubric
from grader.scoring.score import counted, near_threshold

FOLDER = "seeds"


def extra_seeds(rubric: Rubric, count: int) -> tuple[int, ...]:
    """The seeds a borderline result is run again with: the rubric's seed + 1 .. + ``count``."""
    return tuple(rubric.seed + i for i in range(1, count + 1))


def is_borderline(rubric: Rubric, result: Result) -> bool:
    """Whether ``result`` is re-run with more seeds: graded (never a violation, a failed run or a
    tampering notebook), measured, and within the rubric's margin of a threshold or the bonus."""
    return (
        result.status is Status.GRADED
        and result.accuracy is not None
        and result.correct is not None
        and bool(result.total)
        and near_threshold(rubric, result.accuracy) is not None
    )


def first_run(rubric: Rubric, result: Result) -> SeedRun:
    """The student's own run, with the rubric's seed, as one of the seed runs."""
    return SeedRun(
        rubric.seed,
        result.status,
        result.accuracy,
        result.correct,
        result.total,
        result.reported_accuracy,
        result.reason,
        result.flags,
    )


def seed_run(seed: int, result: Result) -> SeedRun:
    """What a re-run with ``seed`` gave, from the result grading it produced."""
    return SeedRun(
        seed,
        result.status,
        result.accuracy,
        result.correct,
        result.total,
        result.reported_accuracy,
        result.reason,
        result.flags,
    )


def choose(policy: str, runs: Sequence[SeedRun]) -> SeedRun:
    """The run whose accuracy gives the points. ``runs[0]`` is the run with the rubric's seed (it
    always counts). best: the best counted run. median: over every run, a re-run that does not
    count (it failed, broke a rule or raised a new flag) as 0 correct, so crashing the other seeds
    never leaves the lucky one alone; of an even count the lower middle run."""
    first = runs[0]
    if policy == "fixed":
        return first

    def rate(run: SeedRun) -> Fraction:
        if run is not first and not run.counts_beside(first):
            return Fraction(0)
        assert run.correct is not None and run.total
        return Fraction(run.correct, run.total)

    if policy == "best":
        # a tie: the earliest
        return max((run for run in runs if run is first or run.counts_beside(first)), key=rate)
    if policy == "median":
        ordered = sorted(runs, key=rate)
        return ordered[(len(ordered) - 1) // 2]
    raise ValueError(f"unknown seed policy {policy!r}")


EXCLUDED = Flag.SEED_RERUN_EXCLUDED  # when a re-run failed, broke a rule or raised a new flag
_NOTE = "the re-run with seed "


def merge(rubric: Rubric, result: Result, extra: Sequence[SeedRun]) -> Result:
    """``result`` with its re-runs (``extra``, in seed order) and the points the rubric's policy
    gives, scored again like any run (``score.counted``: the points, then the late policy); a re-run
    that does not count is flagged and named in a note. Idempotent: it starts from the rubric
    seed's run, so a result merged before is merged afresh (no re-runs: the points are the rubric
    seed's again)."""
    if not extra and not result.seed_runs:
        return result
    result = replace(
        result,
        flags=tuple(f for f in result.flags if f != EXCLUDED),
        notes=tuple(n for n in result.notes if not n.startswith(_NOTE)),
    )
    if not extra:
        runs: tuple[SeedRun, ...] = ()
        chosen = first_run(rubric, result)
    else:
        runs = (first_run(rubric, result), *extra)
        chosen = choose(rubric.seed_policy, runs)
    excluded = [run for run in runs[1:] if not run.counts_beside(runs[0])]
    # the median fell on a re-run that does not count: it counts as 0 correct
    if chosen in excluded:
        verdict, accuracy = Score(Status.GRADED, 0, result.max_score, 0, None), 0.0
    else:
        assert chosen.correct is not None and chosen.total is not None
        verdict, accuracy = (
            counted(rubric, chosen.correct, chosen.total, result.late_days or 0),
            chosen.accuracy or 0.0,
        )
    notes = tuple(
        f"{_NOTE}{run.seed} does not count ({_why(run, runs[0])})"
        + ("; the median counts it as 0 correct" if rubric.seed_policy == "median" else "")
        for run in excluded
    )
    return replace(
        result,
        score=verdict.score,
        bonus=verdict.bonus,
        seed_runs=runs,
        seed_policy=rubric.seed_policy if runs else None,
        seed_accuracy=accuracy if runs else None,
        seed_chosen=chosen.seed if runs else None,
        flags=result.flags + ((EXCLUDED,) if excluded else ()),
        notes=result.notes + notes,
    )


def _why(run: SeedRun, first: SeedRun) -> str:
    if run.status is not Status.GRADED:
        return f"{run.status.value}: {run.reason}" if run.reason else run.status.value
    if not run.counted:
        return "not measured"
    return (
        "it raised "
        + ", ".join(sorted(set(run.flags) - set(first.flags)))
        + (", which the rubric seed's run did not")
    )


def seed_key(key: str, seed: int) -> str:
    """A re-run's cache key: the student's result's key (submission, rubric, environment) and the
    seed. The seed policy and the count are not in it: changing them reruns nothing already run."""
    return hashlib.sha256(f"{key}|seed {seed}".encode()).hexdigest()


def _path(out: Path, account: str, seed: int, suffix: str) -> Path:
    return out / FOLDER / account / f"{seed}{suffix}"


def stored(out: Path, account: str, seed: int, key: str) -> SeedRun | None:
    """The re-run with ``seed`` kept under OUT/seeds/ if it was run under ``key``; None if absent,
    damaged or stale."""
    try:
        data = json.loads(_path(out, account, seed, ".json").read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("cache_key") != key:
            return None
        run = SeedRun.from_json(data)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return run if run.seed == seed else None


def store(out: Path, account: str, seed: int, result: Result, executed: bytes | None) -> SeedRun:
    """Keep a finished re-run (atomically; its executed notebook first, the JSON last: its presence
    means done). Its key is the one its result carries: none after a grader failure, so it runs
    again."""
    if executed is not None:
        write_atomic(_path(out, account, seed, ".ipynb"), executed)
    run = seed_run(seed, result)
    record = {**run.to_json(), "cache_key": result.cache_key}
    write_atomic(_path(out, account, seed, ".json"), (json.dumps(record, indent=2) + "\n").encode())
    return run
