"""Grades out: the LMS import files, from a roster the TA provides (``--roster FILE``).

The roster is a CSV with an ``account`` column (the name in the submissions' files) and the LMS
identities of each student: Canvas's ``Student``, ``ID``, ``SIS User ID``, ``SIS Login ID``,
``Section`` (as Canvas's own gradebook export names them, so that export with an ``account``
column added serves), and for Moodle one of ``Email address``, ``Username``, ``ID number``.
A student in the roster with no submission gets a row with the status ``missing`` and no grade.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grader.model.errors import GraderError
from grader.scoring.overrides import Grade

CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
MOODLE_IDENTIFIERS = ("Email address", "Username", "ID number")


@dataclass(frozen=True)
class Roster:
    columns: tuple[str, ...]
    people: dict[str, dict[str, str]]  # account -> the roster's row


def load_roster(path: Path) -> Roster:
    """Read the roster CSV; one line naming what is wrong otherwise."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise GraderError(f"--roster {path}: cannot read it ({exc.strerror})") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = tuple(c.strip() for c in reader.fieldnames or ())
    if "account" not in columns:
        raise GraderError(f"--roster {path.name}: no `account` column; add one with each student's account "
                          "(the name in HW3_<account>.ipynb) beside the LMS's columns")
    if not set(CANVAS_COLUMNS) <= set(columns) and not set(MOODLE_IDENTIFIERS) & set(columns):
        raise GraderError(f"--roster {path.name}: neither Canvas's columns ({', '.join(CANVAS_COLUMNS)}) nor a Moodle "
                          f"identifier ({', '.join(MOODLE_IDENTIFIERS)}); start from the LMS's own export")
    people: dict[str, dict[str, str]] = {}
    for number, row in enumerate(reader, start=2):
        clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        account = clean.get("account", "")
        if not account:
            continue
        if account in people:
            raise GraderError(f"--roster {path.name}: account {account} appears twice (line {number})")
        people[account] = clean
    return Roster(columns, people)


def missing(roster: Roster, graded: list[Grade]) -> list[str]:
    """The roster's accounts that have no result."""
    have = {g.result.student for g in graded}
    return sorted(a for a in roster.people if a not in have)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV with "\n" line ends; a carriage return in a cell becomes "\n" (the csv module quotes a
    cell holding "\n", not one holding a lone "\r", which a reader takes for the end of the row)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([c.replace("\r\n", "\n").replace("\r", "\n") if isinstance(c, str) else c for c in row]
                     for row in rows)
    return buffer.getvalue()


def canvas_csv(graded: list[Grade], roster: Roster, assignment: str) -> str:
    """Canvas's gradebook import: its five identity columns (``lms_files`` checked the roster has
    them), then the assignment with each total."""
    totals = {g.result.student: str(g.total) if g.settled else "" for g in graded}  # a review has no grade yet
    rows = [[person[c] for c in CANVAS_COLUMNS] + [totals.get(account, "")] for account, person in sorted(roster.people.items())]
    return csv_text([*CANVAS_COLUMNS, assignment], rows)


def moodle_csv(graded: list[Grade], roster: Roster, assignment: str) -> str:
    """Moodle's grade import: the roster's identifier column(s) (``lms_files`` checked it has one),
    the grade and a feedback line."""
    identifiers = [c for c in MOODLE_IDENTIFIERS if c in roster.columns]
    by_account = {g.result.student: g for g in graded}
    rows = []
    for account, person in sorted(roster.people.items()):
        g = by_account.get(account)
        feedback = "missing: no submission" if g is None else _feedback(g)
        rows.append([person[c] for c in identifiers] + ["" if g is None or not g.settled else str(g.total), feedback])
    return csv_text([*identifiers, assignment, "Feedback"], rows)


def _feedback(g: Grade) -> str:
    r = g.result
    accuracy = "no accuracy" if r.accuracy is None else f"accuracy {r.accuracy:.2f}%"
    pending = f"; {g.pending} points withheld until the TA decides" if g.pending else ""
    return f"{r.status.value}, {accuracy}{pending}" + (f"; {g.override.note}" if g.override.note else "")


def lms_files(graded: list[Grade], roster: Roster, assignment: str) -> dict[str, str]:
    """canvas.csv where the roster has Canvas's columns, moodle.csv where it has a Moodle identifier."""
    files = {}
    if all(c in roster.columns for c in CANVAS_COLUMNS):
        files["canvas.csv"] = canvas_csv(graded, roster, assignment)
    if any(c in roster.columns for c in MOODLE_IDENTIFIERS):
        files["moodle.csv"] = moodle_csv(graded, roster, assignment)
    return files
