"""Helper processes that run no student code: git (when a file was committed), pip (installing what
submissions import, building this grader's wheel), the PDF parser (a student's report) and the
notebook's HTML (nbconvert over an executed notebook, run/renderer.py), each of the last two in a
child with a time and a memory limit. Like every process the grader starts, they are started from
run/."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

from grader.intake.read import read_capped
from grader.judge.stated import MAX_TEXT
from grader.model.errors import GraderError, SubmissionError
from grader.model.resources import CHECKOUT
from grader.model.submission import Submitted
from grader.run.renderer import RENDER_SECONDS, render

MAX_PDF_BYTES = 50 * 1024 * 1024
PARSE_SECONDS = 20
PARSE_MEMORY = 1024 * 1024 * 1024  # address space of the parsing process
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

MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024


def commit_time(path: Path) -> Submitted | None:
    """The time of the last commit that touched ``path`` (None outside a git repository)."""
    try:
        done = subprocess.run(
            ["git", "log", "-1", "--format=%cI", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.strip()
    return (
        Submitted(datetime.fromisoformat(text), "commit time")
        if done.returncode == 0 and text
        else None
    )


def pip_install(packages: list[str]) -> int:
    """pip install into the grader's own environment (the one kernels run in); returns pip's exit
    code."""
    return subprocess.run([sys.executable, "-m", "pip", "install", *packages]).returncode


def pdf_first_page(pdf: Path) -> str:
    """The text of the first page; ValueError with one line when it cannot be read."""
    try:
        data = read_capped(pdf, MAX_PDF_BYTES)
    except SubmissionError as exc:
        raise ValueError(str(exc)) from None
    again = "; export the report again as PDF"
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _EXTRACT],
            input=data,
            capture_output=True,
            timeout=PARSE_SECONDS,
        )
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


def notebook_body(executed: Path) -> str:
    """An executed notebook as sanitized HTML (the body of a page: cells, outputs, inline images);
    ValueError with one line when it cannot be rendered. In a batch, by its warm renderer
    (run/renderer.py ``warm_renderer``)."""
    try:
        data = read_capped(executed, MAX_NOTEBOOK_BYTES)
    except SubmissionError as exc:
        raise ValueError(str(exc)) from None
    done = render(data)
    if done.late:
        raise ValueError(f"{executed.name} took over {RENDER_SECONDS} s to render as a page")
    if done.code != 0:
        lines = done.err.strip().splitlines()
        raise ValueError(
            f"{executed.name} could not be rendered as a page "
            f"({lines[-1][:200] if lines else done.code})"
        )
    return done.out


def build_wheel(into: Path) -> Path:
    """This grader's wheel, built from its checkout (pip wheel); GraderError when installed from
    one."""
    if not (CHECKOUT / "pyproject.toml").is_file():
        raise GraderError("this grader was installed from a wheel: give it with --wheel FILE")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(into), str(CHECKOUT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    wheels = sorted(into.glob("grader-*.whl"))
    if built.returncode != 0 or not wheels:
        raise GraderError(
            f"could not build the grader's wheel ({built.stderr.strip()[-200:]}); "
            "give one with --wheel FILE"
        )
    return wheels[-1]
