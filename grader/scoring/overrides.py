"""The TA's hand-made changes: ``OUT/overrides.yaml`` (or ``--overrides FILE``), per account.

    amy01: {report_points: 35, bonus: 5, note: excellent report}
    bob02: {points: 50, note: "regraded after the complaint of 3 Dec"}

They are kept beside the automatic results, never written over them: the gradebook shows the
automatic score, what the TA set and the total, and a regrade (``--force`` included) keeps them.
Points set by the TA are the outcome the student's page and the class page lead with; the note
is for staff only (the TA's pages and gradebook.csv, never a page or export a student sees).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from grader.model.errors import GraderError
from grader.model.results import Result, Status
from grader.model.rubric import Rubric

FILE = "overrides.yaml"
_FIELDS = ("points", "bonus", "report_points", "note")


@dataclass(frozen=True)
class Override:
    points: int | None = None  # replaces the automatic points
    # replaces the automatic bonus (the handout gives it for an excellent report too)
    bonus: int | None = None
    report_points: int | None = None  # the report's points, graded by a person
    note: str | None = None


@dataclass(frozen=True)
class Grade:
    """One student's line of the gradebook: the automatic result, the TA's override, the total."""

    result: Result
    override: Override

    @property
    def points(self) -> int:
        return self.result.score if self.override.points is None else self.override.points

    @property
    def bonus(self) -> int:
        return self.result.bonus if self.override.bonus is None else self.override.bonus

    @property
    def overridden(self) -> bool:
        """The TA set the points: their decision is the outcome, whatever the automatic status."""
        return self.override.points is not None

    @property
    def settled(self) -> bool:
        """False for a result to review that no override has decided: it has no grade yet."""
        return self.result.status is not Status.REVIEW or self.overridden

    @property
    def total(self) -> int:
        return self.points + self.bonus + (self.override.report_points or 0)

    @property
    def pending(self) -> str:
        """What a result to review withholds, for a gradebook cell ("" when nothing is pending)."""
        r = self.result
        if self.settled or r.pending_score is None:
            return ""
        return f"{r.pending_score}" + (f"+{r.pending_bonus}" if r.pending_bonus else "")


def _number(account: str, key: str, value: Any, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise GraderError(
            f"overrides: {account}.{key} must be a whole number from 0 to {top}, got {value!r}"
        )
    return value


def parse_overrides(data: Any, rubric: Rubric) -> dict[str, Override]:
    """Validate the parsed YAML; every error names the account and the field."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GraderError(
            "overrides: the file must map accounts to {points, bonus, report_points, note}"
        )
    policy = rubric.accuracy
    tops = {
        "points": policy.max_points,
        "bonus": policy.bonus.points,
        "report_points": policy.report_points,
    }
    found = {}
    for account, fields in data.items():
        if not isinstance(fields, dict):
            raise GraderError(
                f"overrides: {account} must be a mapping like {{report_points: 35, note: ...}}"
            )
        unknown = sorted(set(fields) - set(_FIELDS))
        if unknown:
            raise GraderError(
                f"overrides: {account}.{unknown[0]} is not a field; use {', '.join(_FIELDS)}"
            )
        note = fields.get("note")
        if note is not None and not isinstance(note, str):
            raise GraderError(f"overrides: {account}.note must be text, got {note!r}")
        found[str(account)] = Override(
            **{
                k: _number(str(account), k, fields[k], tops[k])
                for k in ("points", "bonus", "report_points")
                if k in fields
            },
            note=note,
        )
    return found


def load_overrides(path: Path, rubric: Rubric) -> dict[str, Override]:
    """The overrides in ``path``; none when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise GraderError(f"overrides: cannot read {path}: {exc.strerror}") from None
    try:
        return parse_overrides(yaml.safe_load(text), rubric)
    except yaml.YAMLError as exc:
        raise GraderError(
            f"overrides: {path} is not valid YAML ({str(exc).splitlines()[0]})"
        ) from None


def check_accounts(overrides: dict[str, Override], accounts: set[str]) -> None:
    """An override for an account with no submission or result is a typo the TA must hear about."""
    unknown = sorted(set(overrides) - accounts)
    if unknown:
        near = difflib.get_close_matches(unknown[0], sorted(accounts), n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise GraderError(
            f"overrides: no submission or result for {', '.join(unknown)}{hint} (fix "
            "the account in the overrides file; nothing was changed)"
        )


def grades(results: list[Result], overrides: dict[str, Override]) -> list[Grade]:
    """Every result with its override (an empty one where the TA set none), by account."""
    return [
        Grade(r, overrides.get(r.student, Override()))
        for r in sorted(results, key=lambda r: r.student)
    ]


def for_batch(out: Path, given: Path | None, rubric: Rubric) -> dict[str, Override]:
    """``--overrides FILE`` when given (it must exist), else OUT/overrides.yaml when there is
    one."""
    if given is not None and not given.is_file():
        raise GraderError(
            f"--overrides {given}: no such file; write it as `account: "
            f"{{report_points: 35, note: ...}}`"
        )
    return load_overrides(given or out / FILE, rubric)
