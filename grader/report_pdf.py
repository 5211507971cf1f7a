"""The report PDF's headline: the first page must open with "Best accuracy: xx.xx%".

A student's PDF is untrusted input: it is read only up to a size cap, by pypdf (whose decoders cap
what a compressed stream may expand to), and any failure to read it is a one-line problem, never
a crash of the grader.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

MAX_PDF_BYTES = 50 * 1024 * 1024
_BEST = re.compile(r"best\s+accuracy\s*[:：=]?\s*(\d{1,3}(?:[.,]\d+)?)\s*%", re.IGNORECASE)


@dataclass(frozen=True)
class ReportHeadline:
    """What the first page states. ``accuracy`` None: not found (``problem`` says why)."""

    accuracy: float | None
    first_line: bool  # it is the first line of text on the first page, as the homework asks
    problem: str | None = None


def first_page_text(pdf: Path) -> str:
    """The text of the first page; ValueError with one line when the file is no readable PDF."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    size = pdf.stat().st_size
    if size > MAX_PDF_BYTES:
        raise ValueError(f"{pdf.name} is {size // (1024 * 1024)} MB; a report over {MAX_PDF_BYTES // (1024 * 1024)} MB is not read")
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings about sloppy PDFs are not the student's problem
    try:
        reader = PdfReader(pdf, strict=False)
        if not reader.pages:
            raise ValueError(f"{pdf.name} has no pages")
        return reader.pages[0].extract_text() or ""
    except (PyPdfError, OSError, KeyError, TypeError, AttributeError, IndexError, RecursionError, ZeroDivisionError) as exc:
        raise ValueError(f"{pdf.name} could not be read as a PDF ({type(exc).__name__}); export the report again as PDF") from None


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
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = bool(lines) and _BEST.search(lines[0]) is not None
    return ReportHeadline(float(match.group(1).replace(",", ".")), first)
