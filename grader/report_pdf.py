"""The report PDF's headline: the first page must open with "Best accuracy: xx.xx%".

A student's PDF is untrusted input. It is read as a regular file only (no link, FIFO or device),
up to a size cap, and parsed by pypdf in a child process with a time and a memory limit: a PDF
built to make the parser spin for hours or take all memory costs at most those limits, and any
failure is a one-line problem, never a crash of the grader. The text is what the content stream
holds: invisible or covered text counts as much as visible text, so the check is advisory.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from grader.errors import SubmissionError
from grader.submission import read_capped

MAX_PDF_BYTES = 50 * 1024 * 1024
PARSE_SECONDS = 20
PARSE_MEMORY = 1024 * 1024 * 1024  # address space of the parsing process
MAX_TEXT = 100_000  # characters of the first page kept: the headline opens it
# Bounded repeats only: a page of "Best accuracy" and a million spaces must not make the search quadratic.
_BEST = re.compile(r"best[ \t]{1,5}accuracy[ \t]{0,20}[:：=]?[ \t]{0,20}(\d{1,3}(?:[.,]\d{1,6})?)[ \t]{0,5}%", re.IGNORECASE)
# The memory limit is set by the child itself (no preexec_fn: the batch forks from several threads).
_EXTRACT = f"""
import io, logging, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({PARSE_MEMORY}, {PARSE_MEMORY}))
logging.disable(logging.CRITICAL)
from pypdf import PdfReader
reader = PdfReader(io.BytesIO(sys.stdin.buffer.read()), strict=False)
if reader.is_encrypted:
    reader.decrypt("")
sys.stdout.write(reader.pages[0].extract_text()[:{MAX_TEXT}] if reader.pages else "\\0no pages")
"""


@dataclass(frozen=True)
class ReportHeadline:
    """What the first page states. ``accuracy`` None: not found (``problem`` says why)."""

    accuracy: float | None
    first_line: bool  # it is the first line of text on the first page, as the homework asks
    problem: str | None = None


def first_page_text(pdf: Path) -> str:
    """The text of the first page; ValueError with one line when it cannot be read."""
    try:
        data = read_capped(pdf, MAX_PDF_BYTES)
    except SubmissionError as exc:
        raise ValueError(str(exc)) from None
    again = "; export the report again as PDF"
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _EXTRACT], input=data, capture_output=True,
                              timeout=PARSE_SECONDS)
    except subprocess.TimeoutExpired:
        raise ValueError(f"{pdf.name} took over {PARSE_SECONDS} s to read{again}") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        error = lines[-1].split(":")[0].rsplit(".", 1)[-1] if lines else f"exit {done.returncode}"
        raise ValueError(f"{pdf.name} could not be read as a PDF ({error}){again}")
    text = done.stdout.decode("utf-8", errors="replace")
    if text == "\0no pages":
        raise ValueError(f"{pdf.name} has no pages{again}")
    return text


def headline(pdf: Path) -> ReportHeadline:
    """The accuracy the report's first page states, and whether it is the first line."""
    try:
        text = first_page_text(pdf)
    except ValueError as exc:
        return ReportHeadline(None, False, str(exc))
    match = _BEST.search(text)
    if match is None:
        return ReportHeadline(None, False, f"{pdf.name}: its first page does not state \"Best accuracy: xx.xx%\"; "
                                           "put that line at the top of the report")
    value = float(match.group(1).replace(",", "."))
    if value > 100:
        return ReportHeadline(None, False, f"{pdf.name}: its first page states a best accuracy of {value:g}%, over "
                                           "100%; put the accuracy the notebook reached at the top of the report")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = bool(lines) and _BEST.search(lines[0]) is not None
    return ReportHeadline(value, first)
