"""``grader.precheck()``: the static checks of the notebook being edited, from a cell of it (the
module is not named precheck: importing it would shadow the function on the package).

The notebook is found without saving or downloading it: in Colab, by asking the front end for
the open notebook (the request ``google.colab`` code itself uses); in Jupyter, VS Code or
JupyterLab, through the file the kernel's session names. The verdict displays as HTML in a
notebook and as text in a terminal. Inside a grading run it does nothing: the grader's own checks
are the ones that count there.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.model.errors import GraderError
from grader.model.results import Result

GRADING = "GRADER_PROBE"  # set by the probe in a kernel the grader runs


@dataclass(frozen=True)
class Found:
    """The notebook's JSON text and where it came from (shown to the student)."""

    text: str
    name: str
    origin: str


def _user_namespace() -> dict[str, Any]:
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None) if shell else None
    ip = get() if get else None
    return dict(getattr(ip, "user_ns", {}) or {})


def _from_colab() -> Found | None:
    if "google.colab" not in sys.modules:
        return None
    from google.colab import _message  # type: ignore[import-not-found,import-untyped,unused-ignore]

    reply = _message.blocking_request("get_ipynb", request="", timeout_sec=10)
    notebook = reply.get("ipynb") if isinstance(reply, dict) else None
    if not isinstance(notebook, dict):
        raise GraderError(
            "Colab did not hand over the open notebook; save it (Ctrl+S) and try again, "
            "or download the .ipynb and run `grader check` on it"
        )
    name = os.environ.get("COLAB_NOTEBOOK_NAME") or str(
        notebook.get("metadata", {}).get("colab", {}).get("name") or "notebook.ipynb"
    )
    return Found(json.dumps(notebook), name, "the notebook open in Colab")


def _from_session() -> Found | None:
    namespace = _user_namespace()
    for candidate in (
        namespace.get("__vsc_ipynb_file__"),
        os.environ.get("JPY_SESSION_NAME"),
        namespace.get("__session__"),
    ):
        if (
            isinstance(candidate, str)
            and candidate.endswith(".ipynb")
            and Path(candidate).is_file()
        ):
            path = Path(candidate)
            return Found(path.read_text(encoding="utf-8-sig"), path.name, f"{path} (last saved)")
    return None


def find_notebook(path: str | Path | None = None) -> Found:
    """The notebook to check: ``path`` if given, else the one this kernel runs."""
    if path is not None:
        given = Path(path)
        if not given.is_file():
            raise GraderError(f"{given}: no such file")
        return Found(given.read_text(encoding="utf-8-sig"), given.name, str(given))
    found = _from_colab() or _from_session()
    if found is None:
        raise GraderError(
            "cannot tell which notebook this kernel runs; call "
            "grader.precheck('HW3_<account>.ipynb') with its file name"
        )
    return found


@dataclass(frozen=True)
class Verdict:
    """What precheck() returns: shown as HTML in a notebook, as text elsewhere."""

    result: Result | None
    origin: str
    seconds: float
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Every rule decided and kept."""
        return (
            self.problem is None
            and self.result is not None
            and all(c.ok for c in self.result.checks)
        )

    @property
    def headline(self) -> str:
        if self.ok:
            return "Ready: every rule is kept"
        if self.result is not None and any(c.violated for c in self.result.checks):
            return "Fix before submitting"
        return "Nothing is broken, but not every rule could be decided: see below"

    def _render(self, template: str) -> str:
        from grader.outputs.text import render
        from grader.static.rules import RULES

        return render(template, v=self, hints={rule.id: rule.instead for rule in RULES.values()})

    def _repr_html_(self) -> str:
        return self._render("precheck.html.j2")

    def __str__(self) -> str:
        return self._render("precheck.txt.j2")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def precheck(path: str | Path | None = None) -> Verdict:
    """Check the notebook being edited (or ``path``) against the homework's rules, statically."""
    started = time.perf_counter()
    if os.environ.get(GRADING):
        return Verdict(
            None,
            "a grading run",
            0.0,
            "skipped inside a grading run: the grader checks the notebook itself",
        )
    try:
        from grader.intake.read import notebook_from_text
        from grader.model.context import Context
        from grader.model.rubric import load_rubric
        from grader.pipeline.grade import grade_one
        from grader.static.reference import derive_facts

        found = find_notebook(path)
        rubric = load_rubric()
        matched = rubric.files.account_of(found.name)
        submission = notebook_from_text(found.text, found.name, matched[0] if matched else None)
        result = grade_one(submission, Context(rubric, derive_facts(rubric.template), None))
    except GraderError as exc:
        return Verdict(None, "", time.perf_counter() - started, str(exc))
    return Verdict(result, found.origin, time.perf_counter() - started)
