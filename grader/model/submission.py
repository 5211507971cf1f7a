"""What intake hands every later stage: a student's files, read into cells, and how they came in."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from grader.model.findings import Finding

QUOTED = 40  # characters of a cell's first line quoted to name it


@dataclass(frozen=True)
class Submitted:
    """When a submission came in, and how that was known (shown to the TA)."""

    at: datetime  # timezone-aware
    how: str  # "file time", "commit time"


@dataclass(frozen=True)
class Cell:
    """One cell. ``number`` is its 1-based position in the notebook; ``first_line`` is where
    it starts in the submitted file (1 for notebooks, where lines count within the cell)."""

    number: int
    kind: str  # "code", "markdown" or "raw"
    source: str
    first_line: int = 1


@dataclass(frozen=True)
class Arrival:
    """How a file came in, where discovery cannot read it off the file (a mail's date and
    sender)."""

    submitted: Submitted | None
    note: str  # one line for the TA
    # a mail's sender address, to tell when one account's files came from two
    sender: str | None = None


@dataclass(frozen=True)
class Submission:
    account: str
    path: Path
    cells: tuple[Cell, ...]
    script: Path | None = None  # the .py twin, kept for comparison when the .ipynb is graded
    report: Path | None = None
    # what intake saw that the TA should know (differing copies, two senders)
    findings: tuple[Finding, ...] = ()
    submitted: Submitted | None = None  # when it came in, where a deadline can be checked
    # how it came in, where that is worth a note (a mail's sender and date)
    received: str | None = None
    # the text outputs saved in the submitted .ipynb (its run on the student's machine)
    saved_output: str = ""

    def inputs(self) -> tuple[Path, ...]:
        """Every file grading reads: the graded file, its .py twin, the report PDF. An executor that
        grades on another machine ships them all (their names differ by suffix)."""
        return tuple(p for p in (self.path, self.script, self.report) if p is not None)

    def moved(self, folder: Path) -> Submission:
        """The same submission with its inputs read from ``folder``, where they were written by
        name."""
        return replace(
            self,
            path=folder / self.path.name,
            script=folder / self.script.name if self.script else None,
            report=folder / self.report.name if self.report else None,
        )

    @property
    def code_cells(self) -> tuple[Cell, ...]:
        return tuple(c for c in self.cells if c.kind == "code")

    def where(self, cell: Cell, line: int | None = None) -> str:
        """A place as the student finds it: 'code cell 3 ("class Net(nn.Module):"), line 2' in a
        notebook (Colab numbers no cells: the code cells are counted, markdown left out, and the
        cell's first line is quoted); 'line 57' (or 'the cell at line 50') in a .py export."""
        if self.path.suffix == ".py":
            return (
                f"line {cell.first_line + line - 1}"
                if line
                else (f"the cell at line {cell.first_line}")
            )
        code = [c.number for c in self.code_cells]
        named = (
            f"code cell {code.index(cell.number) + 1}"
            if cell.number in code
            else (f"cell {cell.number}")
        )
        first = next((text.strip() for text in cell.source.splitlines() if text.strip()), "")
        if first:
            named += f' ("{first if len(first) <= QUOTED else first[: QUOTED - 1] + "…"}")'
        return f"{named}, line {line}" if line else named


@dataclass(frozen=True)
class Discovery:
    submissions: tuple[Submission, ...]
    unmatched: tuple[Path, ...]  # files whose name matches no pattern
    unreadable: tuple[tuple[str, Path, str], ...]  # (account, path, one-line reason)
    # extra copies of a file, with why they were not used
    set_aside: tuple[tuple[Path, str], ...] = ()
    # (account, a file, why): files for it from several LMS uploaders
    disputed: tuple[tuple[str, Path, str], ...] = ()
