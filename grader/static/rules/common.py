"""What the rules share: where a verdict points in the submission, and the frozen-value checks."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grader.model.results import Check
from grader.model.submission import Submission
from grader.static.pyast import ParsedCell, const_value, walk_cells

if TYPE_CHECKING:
    from grader.judge.recompute import Recomputed
    from grader.judge.run_facts import Training
    from grader.model.probe_facts import ProbeFacts


@dataclass(frozen=True)
class RunView:
    """What the run-time halves judge: the probe's record and what the grader computed from it."""

    record: ProbeFacts  # the probe's record, parsed and checked (model/probe_facts.py)
    finished: bool  # every cell ran (no error, no timeout)
    training: Training
    # the trusted side's run of the captured graded pass (its graph facts)
    recomputed: Recomputed | None = None

    @property
    def has_model(self) -> bool:
        return self.record.model is not None


def unattributed(training: Training) -> str | None:
    """Why steps of the graded model's optimizers cannot be counted, or None when every one can."""
    if not training.unattributed_steps:
        return None
    return (
        f"{training.unattributed_steps} of the graded model's {training.steps} optimizer steps "
        "came after no batch of "
        "training images the grader could follow (a second step on the same batch, or images "
        "from elsewhere or changed beyond recognition); what they trained on is not known"
    )


def unseen_rows(training: Training) -> str | None:
    """Why what trained the graded model is not known from its layers' calls, or None."""
    if not training.unexplained:
        return None
    return (
        f"the graded model's Linear weights got gradients their layers' calls do not explain "
        f"({training.unexplained} time{'s' if training.unexplained != 1 else ''}, a weight in "
        "a backward pass or a "
        "step: rows fed to it another way, such as F.linear with it in a loss term or another "
        "batch's gradient added to .grad, trained it on images the grader did not see)"
    )


def run_check(rule: str, ok: bool | None, message: str) -> Check:
    """A verdict on what the run recorded."""
    return Check(rule, ok, message, stage="run")


def static_check(
    sub: Submission,
    rule: str,
    parsed: ParsedCell | None,
    node: ast.AST | None,
    ok: bool | None,
    message: str,
) -> Check:
    if parsed is None:
        return Check(rule, ok, message, sub.path.name)
    line = getattr(node, "lineno", None)
    cell = parsed.cell
    file_line = cell.first_line + line - 1 if line and sub.path.suffix == ".py" else line
    where = sub.where(cell, line)
    return Check(
        rule,
        ok,
        f"{where}: {message}" if ok is False else message,
        sub.path.name,
        cell.number if sub.path.suffix == ".ipynb" else None,
        file_line,
        excerpt=_excerpt(cell.source, line, file_line) if ok is False and line else (),
        place=where,
    )


def _excerpt(
    source: str, line: int, shown: int | None, around: int = 2
) -> tuple[tuple[int, str], ...]:
    """The lines around ``line`` of a cell, numbered as the student counts them (``shown`` for
    ``line``)."""
    lines = source.splitlines()
    offset = (shown or line) - line
    first, last = max(1, line - around), min(len(lines), line + around)
    return tuple((n + offset, lines[n - 1][:300]) for n in range(first, last + 1))


def assignments(
    cells: tuple[ParsedCell, ...], name: str
) -> list[tuple[ParsedCell, ast.AST, ast.AST | None]]:
    """(cell, statement, value) for every assignment to ``name``; value None for augmented ones."""
    found: list[tuple[ParsedCell, ast.AST, ast.AST | None]] = []
    for parsed, node in walk_cells(cells):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    found.append((parsed, node, node.value))
                elif isinstance(target, ast.Tuple) and any(
                    isinstance(e, ast.Name) and e.id == name for e in target.elts
                ):
                    found.append((parsed, node, None))
        elif (
            isinstance(node, (ast.AugAssign, ast.AnnAssign))
            and isinstance(node.target, ast.Name)
            and node.target.id == name
        ):
            found.append((parsed, node, node.value if isinstance(node, ast.AnnAssign) else None))
    return found


def frozen_value(
    sub: Submission,
    cells: tuple[ParsedCell, ...],
    rule: str,
    name: str,
    expected: float,
    constants: dict[str, float],
) -> Check | None:
    """A violation when ``name`` is set to anything but ``expected``; None when all assignments
    agree."""
    for parsed, stmt, value in assignments(cells, name):
        if value is None:
            return static_check(
                sub,
                rule,
                parsed,
                stmt,
                False,
                f"{name} is changed here; the homework fixes it at {expected:g}",
            )
        number = const_value(value, constants)
        if number is None:
            return static_check(
                sub,
                rule,
                parsed,
                stmt,
                None,
                f"{name} is computed at run time; the run will check it",
            )
        if number != expected:
            return static_check(
                sub,
                rule,
                parsed,
                stmt,
                False,
                f"{name} is {number:g}; the homework fixes it at {expected:g}",
            )
    return None
