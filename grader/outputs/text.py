"""Text for people: templates rendered (autoescaped), the terminal's check text, Markdown escaping.
Control and bidirectional characters a student's text may carry are replaced everywhere."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from grader.model.resources import shipped
from grader.model.results import Result
from grader.model.rubric import Rubric

if TYPE_CHECKING:
    from grader.pipeline.package import Package

# Also what XML and UTF-8 refuse, and the bidirectional controls (a name written backwards on the
# page).
_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]"
)
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$@:])")


def _printable(value: Any) -> Any:
    """Every value rendered loses its control characters (a student's ANSI or OSC escape sequence
    never reaches the TA's terminal); pages also escape all markup (autoescape on every
    .html.j2)."""
    # the grader's own markup (an SVG plot it drew), never a student's text
    if isinstance(value, Markup):
        return value
    return _CONTROL.sub("\N{REPLACEMENT CHARACTER}", value) if isinstance(value, str) else value


def markdown_text(value: Any) -> str:
    """``value`` as literal text on one line of Markdown, and of the HTML GitHub renders from it
    (the
    ``md`` filter): line breaks become spaces, Markdown's specials are backslash-escaped (also ``|``
    in a table cell), and ``& < >`` become entities."""
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value)))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# one per process: each template is compiled once, not once per page (200 pages: 20 s)
@functools.cache
def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(str(shipped("templates"))),
        autoescape=select_autoescape(
            enabled_extensions=("html.j2", "html", "xml.j2", "xml"), default_for_string=True
        ),
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


def check_text(
    result: Result,
    rubric: Rubric,
    how: str | None,
    notices: tuple[str, ...] = (),
    package: Package | None = None,
    command: str = "check",
) -> str:
    """What `grader check` (or `grader ci`: ``command``) prints for a student; ``how`` says where it
    ran (None: static checks only). Under each broken rule: its source line and what may be changed
    instead (the same text as the in-notebook check)."""
    from grader.scoring.score import band, percent

    accuracy = percent(result.correct, result.total, result.accuracy)
    found = band(rubric, accuracy) if how and accuracy is not None else None
    return render(
        "check.txt.j2",
        r=result,
        ran=how is not None,
        how=how,
        rubric=rubric,
        band=found,
        notices=notices,
        package=package,
        command=command,
    )
