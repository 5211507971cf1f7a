"""Grades out: the LMS import files, from a roster the TA provides (``--roster FILE``).

The roster is a CSV with an ``account`` column (the name in the submissions' files) and the LMS
identities of each student: Canvas's ``Student``, ``ID``, ``SIS User ID``, ``SIS Login ID``,
``Section`` (as Canvas's own gradebook export names them, so that export with an ``account``
column added serves), and for Moodle one of ``Email address``, ``Username``, ``ID number``.
A student in the roster with no submission gets a row with the status ``missing`` and no grade.

Canvas matches an imported grade column to an assignment by the id in ``Name (id)`` (else by the
exact name, else it creates a new assignment): the column of canvas.csv is the roster's
``<homework> (<id>)`` column when it has one (Canvas's export does), else ``<homework>``.
The last roster given is kept as OUT/roster.csv, so that every later run exports again from it.
The TA's override note is for staff: it is in no export (students see Moodle's feedback column).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grader.model.errors import GraderError
from grader.model.results import write_atomic
from grader.scoring.overrides import Grade

CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
MOODLE_IDENTIFIERS = ("Email address", "Username", "ID number")
CANVAS_FILE, MOODLE_FILE = "canvas.csv", "moodle.csv"
LMS_FILES = (CANVAS_FILE, MOODLE_FILE)
KEPT_ROSTER = "roster.csv"  # in OUT: the roster of the last --roster
_TITLE_AND_ID = re.compile(r"(.*)\s\((\d+)\)")  # "Name (id)", as Canvas's importer reads it


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
        raise GraderError(
            f"--roster {path.name}: no `account` column; add one with each student's "
            "account (the name in HW3_<account>.ipynb) beside the LMS's columns"
        )
    if not set(CANVAS_COLUMNS) <= set(columns) and not set(MOODLE_IDENTIFIERS) & set(columns):
        raise GraderError(
            f"--roster {path.name}: neither Canvas's columns "
            f"({', '.join(CANVAS_COLUMNS)}) nor a Moodle "
            f"identifier ({', '.join(MOODLE_IDENTIFIERS)}); start from the LMS's own export"
        )
    people: dict[str, dict[str, str]] = {}
    for number, row in enumerate(reader, start=2):
        clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        account = clean.get("account", "")
        if not account:
            continue
        if account in people:
            raise GraderError(
                f"--roster {path.name}: account {account} appears twice (line {number})"
            )
        people[account] = clean
    return Roster(columns, people)


def kept_roster(out: Path, given: Roster | None) -> tuple[Roster | None, str | None]:
    """The roster the LMS files come from: ``given`` (then kept as OUT/roster.csv for the runs
    after), else the one kept from the last ``--roster``, with a line saying so; None when there
    is neither."""
    kept = out / KEPT_ROSTER
    if given is not None:
        rows = [[person.get(c, "") for c in given.columns] for person in given.people.values()]
        write_atomic(kept, csv_text(given.columns, rows).encode())
        return given, None
    if not kept.is_file():
        return None, None
    said = (
        f"no --roster given: the LMS files were written again with the roster kept in {kept} "
        "(from the last --roster; give --roster FILE for another, or delete it to stop)"
    )
    return load_roster(kept), said


def canvas_column(roster: Roster, homework: str) -> str | None:
    """The roster's ``<homework> (<id>)`` column (Canvas's export carries one per assignment), which
    Canvas matches by id; None when the roster has no such column, or more than one."""
    found = [
        c
        for c in roster.columns
        if (m := _TITLE_AND_ID.fullmatch(c)) and m[1].strip().casefold() == homework.casefold()
    ]
    return found[0] if len(found) == 1 else None


def canvas_notes(roster: Roster, homework: str, out: Path) -> tuple[str, ...]:
    """What the TA should do when canvas.csv has no assignment id to match on (none: it has one)."""
    if not set(CANVAS_COLUMNS) <= set(roster.columns) or canvas_column(roster, homework):
        return ()
    return (
        f'{CANVAS_FILE}: the roster has no "{homework} (<id>)" column, so the grade '
        f"column is headed {homework} and Canvas matches it by name (or creates a new "
        "assignment); add that column (Canvas's own export has it; the id ends the "
        f"assignment's URL) and run `grader report {out} --roster FILE`",
    )


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
    writer.writerows(
        [c.replace("\r\n", "\n").replace("\r", "\n") if isinstance(c, str) else c for c in row]
        for row in rows
    )
    return buffer.getvalue()


def canvas_csv(graded: list[Grade], roster: Roster, assignment: str) -> str:
    """Canvas's gradebook import: its five identity columns (``lms_files`` checked the roster has
    them), then the assignment (headed ``Name (id)`` where the roster has it) with each total."""
    # a review has no grade yet
    totals = {g.result.student: str(g.total) if g.settled else "" for g in graded}
    rows = [
        [person[c] for c in CANVAS_COLUMNS] + [totals.get(account, "")]
        for account, person in sorted(roster.people.items())
    ]
    return csv_text([*CANVAS_COLUMNS, canvas_column(roster, assignment) or assignment], rows)


def moodle_csv(graded: list[Grade], roster: Roster, assignment: str) -> str:
    """Moodle's grade import: the roster's identifier column(s) (``lms_files`` checked it has one),
    the grade and a feedback line."""
    identifiers = [c for c in MOODLE_IDENTIFIERS if c in roster.columns]
    by_account = {g.result.student: g for g in graded}
    rows = []
    for account, person in sorted(roster.people.items()):
        g = by_account.get(account)
        feedback = "missing: no submission" if g is None else _feedback(g)
        rows.append(
            [person[c] for c in identifiers]
            + ["" if g is None or not g.settled else str(g.total), feedback]
        )
    return csv_text([*identifiers, assignment, "Feedback"], rows)


def _feedback(g: Grade) -> str:
    """The line a student reads in Moodle: the outcome (the staff's where they set the points), the
    accuracy and what is withheld; never the TA's note, which is for staff."""
    r = g.result
    accuracy = "no accuracy" if r.accuracy is None else f"accuracy {r.accuracy:.2f}%"
    pending = f"; {g.pending} points withheld until the TA decides" if g.pending else ""
    status = r.status.value
    outcome = (
        f"decided by the course staff (the automatic check: {status})" if g.overridden else status
    )
    return f"{outcome}, {accuracy}{pending}"


def lms_files(graded: list[Grade], roster: Roster, assignment: str) -> dict[str, str]:
    """canvas.csv where the roster has Canvas's columns, moodle.csv where it has a Moodle
    identifier."""
    files = {}
    if all(c in roster.columns for c in CANVAS_COLUMNS):
        files[CANVAS_FILE] = canvas_csv(graded, roster, assignment)
    if any(c in roster.columns for c in MOODLE_IDENTIFIERS):
        files[MOODLE_FILE] = moodle_csv(graded, roster, assignment)
    return files
