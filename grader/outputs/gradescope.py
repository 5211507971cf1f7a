"""Gradescope: the autograder zip a course uploads, and the results.json it writes per submission.

The zip holds ``setup.sh`` (installs torch, this grader's wheel and the dataset into the image),
``run_autograder`` (calls ``grader gradescope --autograder /autograder``), the wheel, and the
rubric with its reference template. Each submission is graded like ``grader ci`` grades a
repository, and the rules and the accuracy band become Gradescope tests.
"""

from __future__ import annotations

import importlib.metadata
import zipfile
from pathlib import Path
from typing import Any

from grader.model.errors import GraderError
from grader.model.rubric import Rubric
from grader.outputs.ci import Outcome, cases
from grader.outputs.text import render


def results(found: Outcome, output: str) -> dict[str, Any]:
    """results.json in Gradescope's schema: a test per rule and one for the accuracy band (the
    points), the total score, the text `grader check` prints, and the accuracy on the
    leaderboard."""
    r = found.result
    tests = [
        {
            "name": c.name,
            "status": "failed" if c.status in ("fail", "error") else "passed",
            "score": c.score,
            "max_score": r.max_score if c.name == "accuracy band" else 0,
            "output": c.message,
            "visibility": "visible",
        }
        for c in cases(found)
    ]
    return {
        "score": r.score + r.bonus,
        "execution_time": max(0, round(r.duration_s)),
        "output": output,
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
        "leaderboard": [
            {
                "name": "Accuracy",
                "value": r.accuracy if r.accuracy is not None else 0,
                "order": "desc",
            }
        ],
    }


def unreadable(message: str) -> dict[str, Any]:
    """results.json for a submission that could not be graded at all: 0 points and what to fix."""
    return {
        "score": 0,
        "execution_time": 0,
        "output": message,
        "output_format": "text",
        "visibility": "visible",
        "tests": [
            {
                "name": "submission",
                "status": "failed",
                "score": 0,
                "max_score": 0,
                "output": message,
            }
        ],
    }


def _torch_requirement() -> str:
    """The torch and torchvision of this machine (the course's reference stack), pinned."""
    try:
        return " ".join(
            f"{p}=={importlib.metadata.version(p).split('+')[0]}" for p in ("torch", "torchvision")
        )
    except importlib.metadata.PackageNotFoundError:
        return "torch torchvision"


def build_autograder(target: Path, rubric: Rubric, wheel: Path) -> Path:
    """Write the autograder zip to ``target``: setup.sh, run_autograder, the wheel, the rubric and
    its template."""
    try:
        template = rubric.template.resolve().relative_to(rubric.path.parent.resolve())
    except ValueError:
        raise GraderError(
            f"the rubric's template {rubric.template} must lie in the rubric's folder or below it"
        ) from None
    scripts = {
        "setup.sh": render("gradescope/setup.sh.j2", torch=_torch_requirement(), wheel=wheel.name),
        "run_autograder": render("gradescope/run_autograder.j2", rubric=rubric.path.name),
    }
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
