"""Render results into the human-facing reports; all markup lives in templates/ (Jinja2)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from grader.resources import shipped
from grader.results import Result
from grader.rubric import Rubric

if TYPE_CHECKING:
    from grader.package import Package

GRADEBOOK_COLUMNS = ("account", "accuracy", "automatic_score", "max_score", "bonus", "status",
                     "flags", "report_present", "source", "reason", "submitted_at", "late_days")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")  # also what XML and UTF-8 refuse
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$@:])")


def _printable(value: Any) -> Any:
    """Every value rendered loses its control characters (a student's ANSI or OSC escape sequence
    never reaches the TA's terminal); pages also escape all markup (autoescape on every .html.j2)."""
    return _CONTROL.sub("\N{REPLACEMENT CHARACTER}", value) if isinstance(value, str) else value


def markdown_text(value: Any) -> str:
    """``value`` as literal text on one line of Markdown, and of the HTML GitHub renders from it (the
    ``md`` filter): line breaks become spaces, Markdown's specials are backslash-escaped (also ``|``
    in a table cell), and ``& < >`` become entities."""
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value)))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(str(shipped("templates"))),
        autoescape=select_autoescape(enabled_extensions=("html.j2", "html", "xml.j2", "xml"), default_for_string=True),
        finalize=_printable,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["md"] = markdown_text
    return environment


def render(template: str, **context: Any) -> str:
    """Render one template of templates/ with ``context``."""
    return _environment().get_template(template).render(**context)


def check_text(result: Result, rubric: Rubric, how: str | None, notices: tuple[str, ...] = (),
               package: Package | None = None) -> str:
    """What `grader check` prints for a student; ``how`` says where it ran (None: static checks only)."""
    from grader.score import band

    found = band(rubric, result.accuracy) if how and result.accuracy is not None else None
    return render("check.txt.j2", r=result, ran=how is not None, how=how, rubric=rubric, band=found,
                  notices=notices, package=package)


def gradebook_csv(results: list[Result]) -> str:
    """One row per student, the columns a TA pastes into the LMS."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(GRADEBOOK_COLUMNS)
    for r in sorted(results, key=lambda r: r.student):
        writer.writerow([r.student, "" if r.accuracy is None else f"{r.accuracy:.2f}", r.score, r.max_score, r.bonus,
                         r.status.value, ";".join(r.flags), "yes" if r.report_pdf else "no", r.source, r.reason or "",
                         r.submitted_at or "", "" if r.late_days is None else r.late_days])
    return buffer.getvalue()


def write_batch_reports(out: Path, results: list[Result], rubric: Rubric, skipped: list[tuple[str, str]]) -> None:
    """OUT/gradebook.csv, OUT/index.html and OUT/students/<account>.html, from the results."""
    ordered = sorted(results, key=lambda r: r.student)
    (out / "gradebook.csv").write_text(gradebook_csv(ordered), encoding="utf-8")
    (out / "index.html").write_text(render("index.html.j2", results=ordered, rubric=rubric, skipped=skipped), encoding="utf-8")
    students = out / "students"
    students.mkdir(parents=True, exist_ok=True)
    for r in ordered:
        (students / f"{r.student}.html").write_text(render("student.html.j2", r=r, rubric=rubric), encoding="utf-8")
