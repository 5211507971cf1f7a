"""`grader ci`: grade the submission in a student's repository and write what CI systems read.

One result (the same as `grader check FILE [--run]`) becomes: GitHub workflow-command annotations,
a Markdown job summary, GitHub Classroom's step output `result` (what
classroom-resources/autograding-grading-reporter decodes), and JUnit XML (GitLab, Jenkins).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from grader.intake.ipynb_lines import notebook_lines
from grader.model.results import Check, Result, Status
from grader.model.rubric import Rubric
from grader.model.submission import Submission
from grader.outputs.text import check_text, render
from grader.scoring.score import Level, effective, percent, scale

ANNOTATION_LIMIT = 10  # GitHub shows at most 10 error and 10 warning annotations of one step
# kept out of the log
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class CiEnvironment:
    """What the CI system says through its environment variables."""

    github: bool  # GitHub Actions: print workflow commands
    workspace: Path  # the repository root that annotation and report paths are relative to
    step_summary: Path | None  # $GITHUB_STEP_SUMMARY: Markdown appended here
    output: Path | None  # $GITHUB_OUTPUT: the step output `result` appended here

    @classmethod
    def of(cls, environ: Mapping[str, str], cwd: Path) -> CiEnvironment:
        def path(name: str) -> Path | None:
            return Path(environ[name]) if environ.get(name) else None

        return cls(
            github=environ.get("GITHUB_ACTIONS") == "true",
            workspace=path("GITHUB_WORKSPACE") or path("CI_PROJECT_DIR") or cwd,
            step_summary=path("GITHUB_STEP_SUMMARY"),
            output=path("GITHUB_OUTPUT"),
        )


@dataclass(frozen=True)
class RuleVerdict:
    """The verdict that counts for one rule, and where it points in the submission."""

    rule: str
    ok: bool | None
    message: str
    where: str | None  # "cell 10, line 8" (.ipynb) or "line 57" (.py)
    # the line of the file as stored (for a .ipynb: of its JSON text), None where unknown
    line: int | None

    @property
    def verdict(self) -> str:
        return "ok" if self.ok else "violated" if self.ok is False else "undecided"

    @property
    def detail(self) -> str:
        """The message without where it points (for a table with a column for that)."""
        return self.message.removeprefix(f"{self.where}: ") if self.where else self.message

    @property
    def text(self) -> str:
        """The message, led by where it points unless it already says so."""
        return (
            f"{self.where}: {self.message}"
            if self.where and not self.message.startswith(self.where)
            else self.message
        )


@dataclass(frozen=True)
class Outcome:
    """A graded repository: everything the CI outputs are made from."""

    result: Result
    file: str  # the submission's path relative to the repository root, with /
    ran: bool
    rubric: Rubric
    rules: tuple[RuleVerdict, ...]

    @property
    def passed(self) -> bool:
        """Exit code 0: no violation, error or timeout (an undecided rule passes)."""
        return self.result.status is Status.GRADED


@dataclass(frozen=True)
class Case:
    """One test of the Classroom and JUnit reports. ``status``: pass, fail, error or skip."""

    name: str
    status: str
    message: str
    line: int | None = None
    score: int = 0
    duration_s: float = 0.0


def outcome(result: Result, sub: Submission, rubric: Rubric, workspace: Path, ran: bool) -> Outcome:
    """Wrap a result with the submission's repository path and each rule's counting verdict."""
    resolved = sub.path.resolve()
    file = (
        resolved.relative_to(workspace.resolve()).as_posix()
        if resolved.is_relative_to(workspace.resolve())
        else sub.path.name
    )
    lines = (
        notebook_lines(sub.path.read_text(encoding="utf-8-sig"))
        if sub.path.suffix == ".ipynb"
        else None
    )
    return Outcome(result, file, ran, rubric, rule_verdicts(result.checks, lines))


def rule_verdicts(
    checks: tuple[Check, ...], lines: Mapping[int, tuple[int, ...]] | None
) -> tuple[RuleVerdict, ...]:
    """One verdict per rule, in the order of the checks: of the checks that count (the run's where
    it
    decided), a violation first, else a decided one. ``lines``: a notebook's JSON line of each
    source
    line (None for a .py, whose checks give file lines)."""
    counting = effective(checks)
    verdicts = []
    for rule in dict.fromkeys(c.id for c in counting):
        mine = [c for c in counting if c.id == rule]
        chosen = next(
            (c for c in mine if c.violated), next((c for c in mine if c.ok is not None), mine[0])
        )
        located = (
            chosen
            if chosen.line or chosen.cell
            else next(
                (c for c in checks if c.id == rule and c.ok == chosen.ok and (c.line or c.cell)),
                chosen,
            )
        )
        verdicts.append(RuleVerdict(rule, chosen.ok, chosen.message, *_location(located, lines)))
    return tuple(verdicts)


def _location(
    check: Check, lines: Mapping[int, tuple[int, ...]] | None
) -> tuple[str | None, int | None]:
    """(where, file line) of a check."""
    if lines is None:
        return (f"line {check.line}" if check.line else None), check.line
    if check.cell is None:
        return None, None
    in_cell = lines.get(check.cell, ())
    file_line = in_cell[check.line - 1] if check.line and 0 < check.line <= len(in_cell) else None
    return check.place or (
        f"cell {check.cell}, line {check.line}" if check.line else f"cell {check.cell}"
    ), file_line


# --- GitHub Actions
# ---------------------------------------------------------------------------------


def escape_data(text: str) -> str:
    """A workflow command's message, as GitHub's toolkit escapes it (one line, whatever it
    holds)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (file, title)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True)
class Annotations:
    lines: tuple[str, ...]
    more_errors: int  # violations beyond GitHub's limit, not annotated
    more_warnings: int


def github_annotations(outcome: Outcome) -> Annotations:
    """`::error` for each violated rule and `::warning` for each undecided one, at most 10 of
    each."""
    errors = [_command("error", outcome, v) for v in outcome.rules if v.ok is False]
    warnings = [_command("warning", outcome, v) for v in outcome.rules if v.ok is None]
    return Annotations(
        tuple(errors[:ANNOTATION_LIMIT] + warnings[:ANNOTATION_LIMIT]),
        max(0, len(errors) - ANNOTATION_LIMIT),
        max(0, len(warnings) - ANNOTATION_LIMIT),
    )


def _command(level: str, outcome: Outcome, verdict: RuleVerdict) -> str:
    properties = {
        "file": outcome.file,
        "line": str(verdict.line) if verdict.line else None,
        "title": f"{outcome.rubric.homework} rule {verdict.rule} {verdict.verdict}",
    }
    listed = ",".join(f"{k}={escape_property(v)}" for k, v in properties.items() if v is not None)
    return _UNPRINTABLE.sub(
        "\N{REPLACEMENT CHARACTER}", f"::{level} {listed}::{escape_data(verdict.text)}"
    )


def _stop_commands(text: str) -> str:
    """``text`` fenced so that no line of it is read as a workflow command (GitHub's
    stop-commands)."""
    token, body = secrets.token_hex(16), text.rstrip("\n")
    return f"::stop-commands::{token}\n{body}\n::{token}::\n"


def summary_markdown(outcome: Outcome, shown: Annotations | None = None) -> str:
    """The job summary: verdict, rules, accuracy and points on the rubric's scale, flags and
    notes."""
    return render(
        "ci_summary.md.j2",
        o=outcome,
        r=outcome.result,
        levels=levels(outcome),
        more_errors=shown.more_errors if shown else 0,
        more_warnings=shown.more_warnings if shown else 0,
    )


def levels(outcome: Outcome) -> tuple[Level, ...]:
    """The rubric's accuracy scale, each level marked when the measured accuracy reached it."""
    r = outcome.result
    return scale(outcome.rubric, percent(r.correct, r.total, r.accuracy))


# --- test reports: GitHub Classroom and JUnit
# --------------------------------------------------------


def cases(outcome: Outcome) -> tuple[Case, ...]:
    """One test per rule (no points) and, after a run, one for the accuracy band (the points)."""
    status = {True: "pass", False: "fail", None: "skip"}
    rules = tuple(Case(f"rule {v.rule}", status[v.ok], v.text, v.line) for v in outcome.rules)
    return rules + (_band_case(outcome),)


def _band_case(outcome: Outcome) -> Case:
    r, name = outcome.result, "accuracy band"
    if not outcome.ran:
        return Case(name, "skip", "not run (static checks only): no accuracy, no points")
    if r.status in (Status.ERROR, Status.TIMEOUT):
        return Case(
            name,
            "error",
            f"the run failed ({r.status.value}): {r.reason or 'no reason given'}",
            duration_s=r.duration_s,
        )
    points = r.score + r.bonus
    measured = "not measured" if r.accuracy is None else f"{r.accuracy:.2f}% measured"
    if r.status is Status.VIOLATION:
        message = f"{measured}; {points} automatic points ({r.reason})"
    elif r.status is Status.REVIEW:
        pending = (
            ""
            if r.pending_score is None
            else (
                f"; the automatic points would be {r.pending_score}"
                + (f" + {r.pending_bonus}" if r.pending_bonus else "")
                + ", withheld until the TA decides"
            )
        )
        message = f"{measured}; {r.reason}{pending}"
    else:
        bonus = f" + {r.bonus} bonus" if r.bonus else ""
        message = f"{measured}: {r.score}/{r.max_score}{bonus} automatic points"
    return Case(
        name,
        "pass" if r.status is Status.GRADED and points > 0 else "fail",
        message,
        score=points,
        duration_s=r.duration_s,
    )


def classroom_result(outcome: Outcome) -> dict[str, Any]:
    """The JSON that classroom-resources/autograding-grading-reporter reads from a runner's `result`
    output (the shape autograding-io-grader emits). Static only: no band test and max_score 0, so
    Classroom records no points for a check that measured nothing."""
    r = outcome.result
    status = {Status.GRADED: "pass", Status.VIOLATION: "fail"}.get(r.status, "error")
    tests = [
        {
            "name": c.name,
            "status": "fail" if c.status == "fail" else "error" if c.status == "error" else "pass",
            "message": c.message,
            "test_code": f"grader ci ({c.name})",
            "filename": outcome.file,
            "line_no": c.line or 0,
            "duration": _milliseconds(c.duration_s),
            "score": c.score,
        }
        for c in cases(outcome)
        if outcome.ran or c.name != "accuracy band"
    ]
    return {
        "version": 1,
        "status": status,
        "max_score": r.max_score if outcome.ran else 0,
        "tests": tests,
    }


def _milliseconds(seconds: float) -> int:
    """A duration for Classroom's report: whole milliseconds, 0 for a negative one, at most a
    year's."""
    return round(min(max(seconds, 0.0), 365 * 86400.0) * 1000)


def classroom_output(outcome: Outcome) -> str:
    """The `result=<base64 JSON>` line for $GITHUB_OUTPUT."""
    encoded = base64.b64encode(json.dumps(classroom_result(outcome)).encode()).decode("ascii")
    return f"result={encoded}\n"


def junit_xml(outcome: Outcome) -> str:
    """JUnit XML: a testcase per rule and one for the accuracy band (failure, error or skipped)."""
    listed = cases(outcome)
    counts = {s: sum(c.status == s for c in listed) for s in ("fail", "error", "skip")}
    return render("junit.xml.j2", o=outcome, r=outcome.result, cases=listed, counts=counts)


# --- writing it all
# -----------------------------------------------------------------------------------


def publish(
    outcome: Outcome,
    environment: CiEnvironment,
    out: TextIO,
    how: str | None = None,
    junit: Path | None = None,
) -> None:
    """Print the `grader check` text (and on GitHub the annotations) to ``out``; append the job
    summary
    and the Classroom output where GitHub names their files; write JUnit XML to ``junit``.
    ``how`` says where the run ran (None: static checks only)."""
    text = check_text(outcome.result, outcome.rubric, how, command="ci")
    shown = github_annotations(outcome) if environment.github else None
    out.write(_stop_commands(text) if environment.github else text)
    for line in shown.lines if shown else ():
        out.write(line + "\n")
    if environment.step_summary is not None:
        _append(environment.step_summary, summary_markdown(outcome, shown))
    if environment.output is not None:
        _append(environment.output, classroom_output(outcome))
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(junit_xml(outcome), encoding="utf-8", errors="replace")


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8", errors="replace") as handle:
        handle.write(text)
