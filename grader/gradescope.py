"""Gradescope: the autograder zip a course uploads, and the results.json it writes per submission.

The zip holds ``setup.sh`` (installs torch, this grader's wheel and the dataset into the image),
``run_autograder`` (calls ``grader gradescope --autograder /autograder``), the wheel, and the
rubric with its reference template. Each submission is graded like ``grader ci`` grades a
repository, and the rules and the accuracy band become Gradescope tests.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from grader.ci import Outcome, cases, find_submission, outcome
from grader.deadline import Submitted
from grader.errors import GraderError
from grader.grade import Context, grade_submission
from grader.report import check_text, render
from grader.resources import CHECKOUT
from grader.rubric import Rubric
from grader.slots import Slot


def results(found: Outcome, output: str) -> dict[str, Any]:
    """results.json in Gradescope's schema: a test per rule and one for the accuracy band (the
    points), the total score, the text `grader check` prints, and the accuracy on the leaderboard."""
    r = found.result
    tests = [{"name": c.name, "status": "failed" if c.status in ("fail", "error") else "passed", "score": c.score,
              "max_score": r.max_score if c.name == "accuracy band" else 0, "output": c.message, "visibility": "visible"}
             for c in cases(found)]
    return {"score": r.score + r.bonus, "execution_time": round(r.duration_s), "output": output,
            "output_format": "text", "visibility": "visible", "stdout_visibility": "hidden", "tests": tests,
            "leaderboard": [{"name": "Accuracy", "value": r.accuracy if r.accuracy is not None else 0, "order": "desc"}]}


def unreadable(message: str) -> dict[str, Any]:
    """results.json for a submission that could not be graded at all: 0 points and what to fix."""
    return {"score": 0, "execution_time": 0, "output": message, "output_format": "text", "visibility": "visible",
            "tests": [{"name": "submission", "status": "failed", "score": 0, "max_score": 0, "output": message}]}


def _uploaded(root: Path) -> Submitted | None:
    """When Gradescope says the submission was made (its submission_metadata.json, not the student's)."""
    try:
        stamp = json.loads((root / "submission_metadata.json").read_text(encoding="utf-8"))["created_at"]
        when = datetime.fromisoformat(str(stamp))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Submitted(when, "Gradescope upload time") if when.tzinfo else None


def grade_autograder(root: Path, context: Context, how: str, slot: Slot | None = None) -> dict[str, Any]:
    """Grade the submission under ``root``/submission and write ``root``/results/results.json."""
    folder = root / "submission"
    try:
        sub = find_submission(folder, context.rubric.files)
        sub = replace(sub, submitted=_uploaded(root) or sub.submitted)
        with tempfile.TemporaryDirectory(prefix="grader-gradescope-") as work:
            result = grade_submission(sub, context, Path(work), slot=slot)
        found = outcome(result, sub, context.rubric, folder, ran=context.dataset is not None)
        record = results(found, check_text(result, context.rubric, how if found.ran else None))
    except GraderError as exc:
        record = unreadable(str(exc))
    except Exception as exc:  # noqa: BLE001 - Gradescope must get a results.json, whatever happened
        record = unreadable(f"the grader could not grade this submission ({type(exc).__name__}); "
                            "tell the course staff, who will grade it by hand")
    results_dir = root / "results"
    if results_dir.is_symlink() or (results_dir.exists() and not results_dir.is_dir()):
        results_dir.unlink()  # not ours: Gradescope's folder, which nothing else should have replaced
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "results.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def checkout_wheel(into: Path) -> Path:
    """This grader's wheel, built from its checkout (pip wheel); GraderError when installed from one."""
    if not (CHECKOUT / "pyproject.toml").is_file():
        raise GraderError("this grader was installed from a wheel: give it with --wheel FILE")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(into), str(CHECKOUT)],
                           capture_output=True, text=True, timeout=600)
    wheels = sorted(into.glob("grader-*.whl"))
    if built.returncode != 0 or not wheels:
        raise GraderError(f"could not build the grader's wheel ({built.stderr.strip()[-200:]}); give one with --wheel FILE")
    return wheels[-1]


def _torch_requirement() -> str:
    """The torch and torchvision of this machine (the course's reference stack), pinned."""
    try:
        return " ".join(f"{p}=={importlib.metadata.version(p).split('+')[0]}" for p in ("torch", "torchvision"))
    except importlib.metadata.PackageNotFoundError:
        return "torch torchvision"


def build_autograder(target: Path, rubric: Rubric, wheel: Path) -> Path:
    """Write the autograder zip to ``target``: setup.sh, run_autograder, the wheel, the rubric and its template."""
    try:
        template = rubric.template.resolve().relative_to(rubric.path.parent.resolve())
    except ValueError:
        raise GraderError(f"the rubric's template {rubric.template} must lie in the rubric's folder or below it") from None
    scripts = {"setup.sh": render("gradescope/setup.sh.j2", torch=_torch_requirement(), wheel=wheel.name),
               "run_autograder": render("gradescope/run_autograder.j2", rubric=rubric.path.name)}
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in scripts.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16  # executable, as Gradescope runs them
            archive.writestr(info, text)
        archive.write(wheel, wheel.name)
        archive.write(rubric.path, rubric.path.name)
        archive.write(rubric.template, template.as_posix())
    return target
