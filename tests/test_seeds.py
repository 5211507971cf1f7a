"""Borderline grades a TA can defend: the seed policy (fixed, median, best), which results are
re-run, how runs with other seeds are kept and merged, and one batch whose kernels really see the
other seeds and whose re-run reuses them."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from tinydata import make_tiny_fashion_mnist

from grader.model.context import Context
from grader.model.dataset import Dataset
from grader.model.errors import RubricError
from grader.model.results import Result, SeedRun, Status
from grader.model.rubric import Rubric, parse_rubric
from grader.outputs.class_summary import borderline
from grader.outputs.pages import write_batch_reports
from grader.pipeline.batch import Progress, grade_directory
from grader.pipeline.executors.local import Job, Listener, LocalExecutor
from grader.run.slots import plan_slots
from grader.scoring import seeds
from grader.scoring.overrides import grades
from grader.scoring.score import accuracy_points

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"


def _rubric(rubric: Rubric, policy: str) -> Rubric:
    return dataclasses.replace(rubric, seed_policy=policy)


def _result(accuracy: float | None = 88.9, status: Status = Status.GRADED, **more: Any) -> Result:
    correct = None if accuracy is None else round(accuracy * 100)
    fields: dict[str, Any] = dict(
        student="amy",
        source="HW3_amy.ipynb",
        status=status,
        accuracy=accuracy,
        reported_accuracy=90.1,
        score=50,
        max_score=60,
        bonus=0,
        checks=(),
        flags=(),
        duration_s=1.0,
        correct=correct,
        total=None if accuracy is None else 10000,
        cache_key="main-key",
    )
    fields.update(more)
    return Result(**fields)


def _run(seed: int, accuracy: float | None, status: Status = Status.GRADED) -> SeedRun:
    correct = None if accuracy is None else round(accuracy * 100)
    return SeedRun(seed, status, accuracy, correct, None if accuracy is None else 10000)


# --- the rubric -------------------------------------------------------------------------------


def test_seed_policy_is_read_and_checked(rubric: Rubric) -> None:
    data = yaml.safe_load((ROOT / "rubric.yaml").read_text())
    assert rubric.seed_policy == "fixed"  # the shipped one
    del data["seed_policy"]
    assert parse_rubric(data, ROOT / "rubric.yaml").seed_policy == "fixed"  # the default
    data["seed_policy"] = "median"
    assert parse_rubric(data, ROOT / "rubric.yaml").seed_policy == "median"
    data["seed_policy"] = "mean"
    with pytest.raises(RubricError) as info:
        parse_rubric(data, ROOT / "rubric.yaml")
    assert str(info.value) == "rubric: seed_policy must be one of fixed, median, best, got 'mean'"


# --- the policy -------------------------------------------------------------------------------


def test_the_extra_seeds_follow_the_rubrics(rubric: Rubric) -> None:
    assert seeds.extra_seeds(rubric, 3) == (1, 2, 3)
    assert seeds.extra_seeds(dataclasses.replace(rubric, seed=41), 2) == (42, 43)
    assert seeds.extra_seeds(rubric, 0) == ()


def test_which_results_are_borderline(rubric: Rubric) -> None:
    assert rubric.accuracy.borderline_margin == 0.3
    assert seeds.is_borderline(rubric, _result(88.9))  # 0.1 below 89
    assert seeds.is_borderline(rubric, _result(89.3))  # 0.3 above 89: the margin is inclusive
    assert seeds.is_borderline(rubric, _result(89.95))  # near the bonus's 90
    assert seeds.is_borderline(rubric, _result(79.75))
    assert not seeds.is_borderline(rubric, _result(88.5))
    assert not seeds.is_borderline(rubric, _result(86.0))
    # a broken rule is never re-run
    assert not seeds.is_borderline(rubric, _result(88.9, Status.VIOLATION))
    # nor a failed or tampering run
    assert not seeds.is_borderline(rubric, _result(88.9, Status.ERROR))
    assert not seeds.is_borderline(rubric, _result(88.9, Status.TIMEOUT))
    assert not seeds.is_borderline(rubric, _result(None))
    # an old result: not exact
    assert not seeds.is_borderline(rubric, _result(88.9, correct=None, total=None))
    # The class page's list is the same definition.
    rows = grades(
        [_result(a, student=f"s{i}") for i, a in enumerate([88.9, 88.5, 89.95, 86.0])], {}
    )
    # closest first
    assert [b.grade.result.student for b in borderline(rows, rubric)] == ["s2", "s0"]


def test_fixed_takes_the_rubrics_seed_whatever_the_others_say() -> None:
    runs = [_run(0, 88.9), _run(1, 89.5), _run(2, 89.1)]
    assert seeds.choose("fixed", runs).seed == 0


def test_median_of_an_odd_and_an_even_count() -> None:
    odd = [_run(0, 88.9), _run(1, 89.5), _run(2, 89.1)]
    assert seeds.choose("median", odd).seed == 2  # 88.9, 89.1, 89.5
    even = [_run(0, 88.9), _run(1, 89.5), _run(2, 89.1), _run(3, 88.7)]
    # 88.7, 88.9 | 89.1, 89.5: the lower middle, a real run
    assert seeds.choose("median", even).seed == 0
    assert seeds.choose("median", [_run(0, 88.9), _run(1, 89.2)]).seed == 0


def test_best_takes_the_highest_and_prefers_the_rubrics_seed_on_a_tie() -> None:
    assert seeds.choose("best", [_run(0, 88.9), _run(1, 89.5), _run(2, 89.1)]).seed == 1
    assert seeds.choose("best", [_run(0, 89.5), _run(1, 89.5)]).seed == 0


def test_failed_violating_or_newly_flagged_reruns_never_help() -> None:
    runs = [
        _run(0, 88.9),
        _run(1, 95.0, Status.VIOLATION),
        _run(2, None, Status.ERROR),
        _run(3, None, Status.TIMEOUT),
        _run(4, 88.8),
    ]
    assert [r.counted for r in runs] == [True, False, False, False, True]
    assert seeds.choose("best", runs).seed == 0  # not the violating run's 95%
    # The median counts a re-run that does not count as 0 correct: crashing the other seeds never
    # leaves the lucky run alone (ordered 0, 0, 0, 88.8, 88.9: the middle one is a failed run).
    assert seeds.choose("median", runs).seed in (1, 2, 3)
    assert (
        seeds.choose("median", [_run(0, 88.9), _run(1, 89.1), _run(2, None, Status.ERROR)]).seed
        == 0
    )
    # A notebook that reads its seed and trains on the test images only under the others: those
    # runs raise a flag the rubric seed's run did not, so neither best nor the median uses them.
    cheat = [
        _run(0, 89.0),
        dataclasses.replace(_run(1, 99.0), flags=("trained-on-test-images",)),
        dataclasses.replace(_run(2, 99.5), flags=("trained-on-test-images",)),
    ]
    assert seeds.choose("best", cheat).seed == 0 and seeds.choose("median", cheat).seed in (1, 2)
    shown = dataclasses.replace(_result(89.0), seed_runs=tuple(cheat))
    # the page's spread too
    assert [r.seed for r in shown.counted_runs] == [0] and shown.seed_spread == (89.0, 89.0)
    same = [
        dataclasses.replace(_run(0, 89.0), flags=("late",)),
        dataclasses.replace(_run(1, 89.5), flags=("late",)),
    ]
    assert seeds.choose("best", same).seed == 1  # a flag the first run raised too is no reason


def test_a_median_that_falls_on_a_failed_rerun_gives_no_points_and_says_why(rubric: Rubric) -> None:
    dodger = seeds.merge(
        _rubric(rubric, "median"),
        _result(89.0),
        [
            _run(1, None, Status.ERROR),
            dataclasses.replace(_run(2, None, Status.ERROR), reason="boom"),
        ],
    )
    assert (dodger.score, dodger.seed_accuracy) == (0, 0.0) and seeds.EXCLUDED in dodger.flags
    assert any(
        "seed 2 does not count (error: boom); the median counts it as 0 correct" in n
        for n in dodger.notes
    )
    again = seeds.merge(_rubric(rubric, "fixed"), dodger, [_run(1, None, Status.ERROR)])
    # merged afresh, flagged once
    assert again.score == 60 and again.flags.count(seeds.EXCLUDED) == 1
    assert sum("does not count" in n for n in again.notes) == 1


def test_merge_rescores_by_the_policy_and_keeps_the_measured_accuracy(rubric: Rubric) -> None:
    result = _result(88.9)
    extra = [_run(1, 89.2), _run(2, 89.0)]
    fixed = seeds.merge(_rubric(rubric, "fixed"), result, extra)
    assert (fixed.score, fixed.bonus, fixed.seed_accuracy, fixed.seed_chosen) == (50, 0, 88.9, 0)
    assert [r.seed for r in fixed.seed_runs] == [0, 1, 2] and fixed.seed_spread == (88.9, 89.2)
    median = seeds.merge(_rubric(rubric, "median"), result, extra)
    assert (median.score, median.seed_accuracy, median.seed_chosen, median.seed_policy) == (
        60,
        89.0,
        2,
        "median",
    )
    assert median.accuracy == 88.9 and median.correct == 8890  # the rubric seed's measurement stays
    best = seeds.merge(_rubric(rubric, "best"), result, [_run(1, 90.0)])
    assert (best.score, best.bonus) == accuracy_points(rubric, 9000, 10000) == (60, 5)
    # Merging again (another policy, fewer seeds, none) starts from the rubric seed's run.
    assert seeds.merge(_rubric(rubric, "median"), best, extra) == median
    assert seeds.merge(_rubric(rubric, "fixed"), median, []) == result
    assert seeds.merge(rubric, result, []) is result


def test_merge_applies_the_late_policy(rubric: Rubric) -> None:
    from grader.model.rubric import LatePolicy

    late = dataclasses.replace(rubric, seed_policy="best", late=LatePolicy(penalty_per_day=10))
    merged = seeds.merge(late, _result(88.9, late_days=2), [_run(1, 90.0)])
    assert (merged.score, merged.bonus) == (48, 4)  # 60 and 5, less 20%


def test_the_json_keeps_seed_runs_and_old_files_still_read(rubric: Rubric) -> None:
    merged = seeds.merge(
        _rubric(rubric, "median"), _result(88.9), [_run(1, 89.2), _run(2, None, Status.ERROR)]
    )
    data = json.loads(json.dumps(merged.to_json()))
    assert data["seed_runs"][2] == {
        "seed": 2,
        "status": "error",
        "accuracy": None,
        "correct": None,
        "total": None,
        "reported_accuracy": None,
        "reason": None,
        "flags": [],
    }
    assert Result.from_json(data) == merged
    old = {
        k: v
        for k, v in _result(88.9).to_json().items()
        if k not in ("correct", "total", "seed_runs", "seed_policy", "seed_accuracy", "seed_chosen")
    }
    read = Result.from_json(old)
    assert read.seed_runs == () and read.correct is None and read.seed_spread is None


def test_stored_reruns_are_reused_only_under_their_key(tmp_path: Path) -> None:
    key = seeds.seed_key("main-key", 1)
    assert key != seeds.seed_key("main-key", 2) and key != seeds.seed_key("other-key", 1)
    run = seeds.store(tmp_path, "amy", 1, _result(89.2, cache_key=key), b"{}")
    assert (tmp_path / "seeds" / "amy" / "1.ipynb").read_bytes() == b"{}"
    assert (
        seeds.stored(tmp_path, "amy", 1, key)
        == run
        == SeedRun(1, Status.GRADED, 89.2, 8920, 10000, 90.1)
    )
    assert seeds.stored(tmp_path, "amy", 1, seeds.seed_key("changed", 1)) is None
    assert seeds.stored(tmp_path, "amy", 2, key) is None
    # a grader failure
    seeds.store(tmp_path, "amy", 3, _result(None, Status.ERROR, cache_key=None), None)
    assert seeds.stored(tmp_path, "amy", 3, seeds.seed_key("main-key", 3)) is None  # runs again
    (tmp_path / "seeds" / "amy" / "1.json").write_text("{ broken")
    assert seeds.stored(tmp_path, "amy", 1, key) is None


def test_pages_and_gradebook_show_the_spread(tmp_path: Path, rubric: Rubric) -> None:
    merged = seeds.merge(
        _rubric(rubric, "median"),
        _result(88.9, student="amy<b>"),
        [
            _run(1, 89.2),
            dataclasses.replace(_run(2, None, Status.ERROR), reason="cell 4: <i>boom</i>"),
            _run(3, 89.0),
        ],
    )
    write_batch_reports(tmp_path, [merged], rubric, [])
    page = (tmp_path / "students" / "amy<b>.html").read_text()
    seeds_part = page[page.index('<h2 id="seeds">') : page.index("<h2>Rules")]
    assert "88.90% to 89.20%</b> over 3 counted runs" in seeds_part
    # The failed seed 2 is 0 correct in the median: 0, 88.9, 89.0, 89.2 -> the lower middle, seed 0.
    assert "the median of the runs" in seeds_part and "<b>88.90%</b> (seed 0), 50/60" in seeds_part
    assert "printed in the grader's run: <b>90.1%</b>" in seeds_part
    assert "cell 4: &lt;i&gt;boom&lt;/i&gt;" in seeds_part and "<i>boom" not in seeds_part
    assert "counts as 0 correct in the median and is never the best" in seeds_part
    index = (tmp_path / "index.html").read_text()
    listed = index[index.index("Borderline") : index.index("All submissions")]
    assert (
        "-0.10 from 89.0%; 4 seeds: 88.90% to 89.20%, points from 88.90% (median); printed 90.1%"
        in listed
    )
    assert "amy&lt;b&gt;" in listed
    row = next(csv.DictReader((tmp_path / "gradebook.csv").open()))
    assert (
        row["seed_accuracies"] == "0:88.90;1:89.20;2:error;3:89.00"
        and row["points_accuracy"] == "88.90"
    )
    assert (
        row["automatic_score"] == "50"
        and row["accuracy"] == "88.90"
        and "seed-rerun-excluded" in row["flags"]
    )
    # no seed runs: no section, the measured accuracy
    write_batch_reports(tmp_path, [_result(86.0)], rubric, [])
    assert 'id="seeds"' not in (tmp_path / "students" / "amy.html").read_text()
    row = next(csv.DictReader((tmp_path / "gradebook.csv").open()))
    assert row["seed_accuracies"] == "" and row["points_accuracy"] == "86.00"


# --- a batch ----------------------------------------------------------------------------------


class _Recording:
    """The local executor, recording every job it was given."""

    def __init__(self, inner: LocalExecutor) -> None:
        self.inner = inner
        self.jobs: list[Job] = []

    @property
    def device_kind(self) -> str:
        return self.inner.device_kind

    @property
    def width(self) -> int:
        return self.inner.width

    def run(self, jobs: Sequence[Job], context: Context, listener: Listener) -> None:
        self.jobs.extend(jobs)
        self.inner.run(jobs, context, listener)


def _printed(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Some test images show two classes' bands: the accuracy depends on the seed."""
    return Dataset(make_tiny_fashion_mnist(tmp_path_factory.mktemp("noisy-fmnist"), noise=0.3))


@pytest.mark.slow
def test_a_batch_reruns_borderline_results_with_other_seeds_and_reuses_them(
    tmp_path: Path, tiny_context: Context, noisy: Dataset
) -> None:
    # A margin of 100 points makes every graded result borderline; the notebook prints the seed it
    # got.
    accuracy = dataclasses.replace(tiny_context.rubric.accuracy, borderline_margin=100.0)
    rubric = dataclasses.replace(tiny_context.rubric, accuracy=accuracy, seed_policy="best")
    context = dataclasses.replace(tiny_context, rubric=rubric, dataset=noisy)
    class_dir = tmp_path / "class"
    class_dir.mkdir()
    seeded = (FIXTURES / "HW3_tinyok.py").read_text() + (
        "\nprint('initial seed:', torch.initial_seed())\n"
    )
    (class_dir / "HW3_amy.py").write_text(seeded)
    (class_dir / "HW3_bob.py").write_text(
        seeded.replace("nn.Linear(28 * 28, 512)", "nn.Linear(28 * 28, 640)")
        # a violation
        .replace("nn.Linear(512, 256)", "nn.Linear(640, 256)")
    )
    out = tmp_path / "out"
    executor = _Recording(LocalExecutor(plan_slots(2, 2, (), 1, 1)))
    seen: list[Progress] = []
    summary = grade_directory(class_dir, out, context, executor, seen.append, borderline_seeds=2)

    # bob: never
    assert [(j.submission.account, j.seed) for j in executor.jobs][2:] == [("amy", 1), ("amy", 2)]
    assert sorted((j.submission.account, j.seed) for j in executor.jobs[:2]) == [
        ("amy", None),
        ("bob", None),
    ]
    assert summary.seed_reruns == 2 and sorted(p.seed for p in seen if p.result and p.seed) == [
        1,
        2,
    ]
    amy, bob = summary.results
    assert bob.status is Status.VIOLATION and bob.seed_runs == ()
    assert amy.status is Status.GRADED and [r.seed for r in amy.seed_runs] == [0, 1, 2]
    # Each kernel saw its own seed: the rubric's in the main run, the others in the re-runs.
    assert "initial seed: 0" in _printed(out / "executed" / "amy.ipynb")
    for seed in (1, 2):
        printed = _printed(out / "seeds" / "amy" / f"{seed}.ipynb")
        assert f"initial seed: {seed}\n" in printed and "initial seed: 0" not in printed
    accuracies = [r.accuracy for r in amy.seed_runs]
    # the seed changes the accuracy
    assert all(r.counted for r in amy.seed_runs) and len(set(accuracies)) > 1
    best = max(amy.seed_runs, key=lambda r: (r.correct or 0, -r.seed))
    assert (amy.seed_policy, amy.seed_chosen, amy.seed_accuracy) == (
        "best",
        best.seed,
        best.accuracy,
    )
    assert amy.accuracy == accuracies[0]  # the measured accuracy stays the rubric seed's
    assert best.correct is not None and best.total is not None
    assert (amy.score, amy.bonus) == accuracy_points(rubric, best.correct, best.total)
    assert Result.read(out / "results" / "amy.json") == amy
    assert (
        "3 seeds: " in (out / "index.html").read_text()
        and "Seeds" in (out / "students" / "amy.html").read_text()
    )

    # The same batch again runs nothing: the results and the seed runs are reused.
    executor.jobs.clear()
    again = grade_directory(class_dir, out, context, executor, borderline_seeds=2)
    assert (
        executor.jobs == []
        and again.cached == 2
        and again.seed_reruns == 0
        and again.results == summary.results
    )
    # Another policy runs nothing either: the stored runs are merged afresh.
    median = dataclasses.replace(context, rubric=dataclasses.replace(rubric, seed_policy="median"))
    by_median = grade_directory(class_dir, out, median, executor, borderline_seeds=2).results[0]
    chosen = sorted(amy.seed_runs, key=lambda r: r.correct or 0)[1]
    assert executor.jobs == [] and (by_median.seed_policy, by_median.seed_accuracy) == (
        "median",
        chosen.accuracy,
    )
    # An interrupted batch (seed 1's run lost) and one more seed: only those two run.
    (out / "seeds" / "amy" / "1.json").unlink()
    more = grade_directory(class_dir, out, context, executor, borderline_seeds=3).results[0]
    assert sorted((j.submission.account, j.seed) for j in executor.jobs) == [("amy", 1), ("amy", 3)]
    assert [r.seed for r in more.seed_runs] == [0, 1, 2, 3]
    assert more.seed_runs[1] == amy.seed_runs[1]  # the same seed, the same run
    # Without --borderline-seeds the result is the rubric seed's again.
    executor.jobs.clear()
    plain = grade_directory(class_dir, out, context, executor).results[0]
    assert executor.jobs == [] and plain.seed_runs == () and plain.seed_policy is None
    assert plain.correct is not None and plain.total is not None
    assert (plain.score, plain.bonus) == accuracy_points(rubric, plain.correct, plain.total)


def test_the_cli_passes_borderline_seeds_to_the_batch(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tiny_dataset: Dataset,
) -> None:
    import grader.intake.dataset
    import grader.pipeline.batch
    from grader.cli import ExitCode, main
    from grader.pipeline.batch import BatchSummary

    asked: list[int] = []

    def fake(*args: Any, borderline_seeds: int = 0, **kwargs: Any) -> BatchSummary:
        asked.append(borderline_seeds)
        return BatchSummary((), (), 0)

    monkeypatch.setattr(grader.pipeline.batch, "grade_directory", fake)
    monkeypatch.setattr(grader.intake.dataset, "prepare", lambda *args, **kwargs: tiny_dataset)
    common = ["grade", str(tmp_path), "--out", str(tmp_path / "out"), "--no-sandbox", "--jobs", "1"]
    assert main(common + ["--borderline-seeds", "3"]) == ExitCode.OK and main(common) == ExitCode.OK
    assert asked == [3, 0]
    assert main(common + ["--borderline-seeds", "-1"]) == ExitCode.USAGE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "grader: --borderline-seeds must be 0 (off) or more"
    )
