"""What the TA will receive: the three files of one submission, checked before it is sent.

``grader check --package DIR`` (or the three files): the names follow the rubric's patterns with
one account, the .py and the .ipynb carry the same code, and the report PDF's first page states
the best accuracy, within the rubric's tolerance of the measured one once the notebook ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from grader.intake.read import read_submission
from grader.judge.stated import ReportHeadline
from grader.model.errors import SubmissionError
from grader.model.rubric import FilePatterns
from grader.pipeline.grade import report_headline, twin_note

_KINDS = {".ipynb": "notebook", ".py": "script", ".pdf": "report"}
_HOW = {
    "notebook": "in Colab: File > Download > Download .ipynb",
    "script": "in Colab: File > Download > Download .py",
    "report": "export the report as PDF",
}


@dataclass(frozen=True)
class Package:
    """One submission's files as the TA will see them, and each problem as one line to fix."""

    account: str | None
    files: dict[str, Path]  # kind (notebook, script, report) -> file
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()
    headline: ReportHeadline | None = None

    @property
    def main(self) -> Path | None:
        """The file that is graded: the notebook, else the script."""
        return self.files.get("notebook") or self.files.get("script")


def _candidates(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p
                for p in path.iterdir()
                if p.suffix in _KINDS and p.is_file() and not p.name.startswith(".")
            )
        elif path.exists():
            found.append(path)
        else:
            raise SubmissionError(f"{path}: no such file or folder")
    return found


def inspect(paths: Sequence[Path], patterns: FilePatterns) -> Package:
    """Check a folder (or the files) that will be submitted together."""
    problems: list[str] = []
    files: dict[str, Path] = {}
    accounts: dict[str, list[str]] = {}
    for path in _candidates(paths):
        matched = patterns.account_of(path.name)
        if matched is None:
            kind = _KINDS.get(path.suffix)
            expected = (
                getattr(patterns, kind)
                if kind
                else (f"{patterns.notebook}, {patterns.script} or {patterns.report}")
            )
            problems.append(
                f"{path.name} does not follow the name the TA expects ({expected}); rename it"
            )
            continue
        account, kind = matched
        accounts.setdefault(account, []).append(path.name)
        if kind in files:
            problems.append(f"two {kind}s ({files[kind].name}, {path.name}); submit one")
        files.setdefault(kind, path)
    if len(accounts) > 1:
        named = "; ".join(f"{a}: {', '.join(n)}" for a, n in sorted(accounts.items()))
        problems.append(
            f"the files name different accounts ({named}); use your one account in all three names"
        )
    owner = next(iter(accounts)) if len(accounts) == 1 else None
    shown = owner or "<account>"
    for kind in ("notebook", "script", "report"):
        if kind not in files:
            problems.append(
                f"{getattr(patterns, kind).replace('{account}', shown)} is missing ({_HOW[kind]})"
            )
    package = Package(owner, files, tuple(problems))
    return _with_contents(package)


def _with_contents(package: Package) -> Package:
    problems, notes = list(package.problems), list(package.notes)
    notebook, script, report = (package.files.get(k) for k in ("notebook", "script", "report"))
    if notebook and script:
        try:
            sub = replace(read_submission(notebook, package.account), script=script)
            differs = twin_note(sub)
        except SubmissionError as exc:
            differs = str(exc)
        if differs:
            problems.append(f"{differs}: download the .py again from the final notebook")
    found = report_headline(report) if report else None
    if found is not None:
        if found.problem:
            problems.append(found.problem)
        elif not found.first_line:
            notes.append(
                f'{report.name if report else ""}: "Best accuracy: {found.accuracy:g}%" '
                "should be the report's first line"
            )
    return replace(package, problems=tuple(problems), notes=tuple(notes), headline=found)


def against_measured(package: Package, measured: float | None, tolerance: float) -> Package:
    """After the run: the report's figure must be within ``tolerance`` points of the measured
    one."""
    stated = package.headline.accuracy if package.headline else None
    if stated is None or measured is None or abs(stated - measured) <= tolerance:
        return package
    problem = (
        f"the report states Best accuracy {stated:g}% but the run measured {measured:.2f}% "
        f"(more than {tolerance:g} points apart); report the accuracy your submitted "
        "notebook reaches"
    )
    return replace(package, problems=(*package.problems, problem))
