"""Read one student's .ipynb or .py into cells: capped, without following links, one-line errors."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from grader.model.errors import SubmissionError
from grader.model.submission import Cell, Submission

# Cell markers of `jupyter nbconvert --to script` (# In[3]:), jupytext/VS Code/Spyder (# %%).
_CELL_MARKER = re.compile(r"^# ?(In\[[ 0-9]*\]:|%%).*$")

MAX_SAVED_OUTPUT = 1 << 20  # characters of saved output kept: the printed accuracy is near the end


def _saved_output(raw_cells: list[Any]) -> str:
    """The text a notebook's saved outputs show (streams and plain-text results), for the accuracy
    the student saw when they ran it (often on a Colab GPU)."""
    parts: list[str] = []
    for raw in raw_cells:
        outputs = raw.get("outputs") if isinstance(raw, dict) else None
        for output in outputs if isinstance(outputs, list) else []:
            if not isinstance(output, dict):
                continue
            text = output.get("text")
            if text is None and isinstance(output.get("data"), dict):
                text = output["data"].get("text/plain")
            if isinstance(text, list):
                text = "".join(str(part) for part in text)
            if isinstance(text, str):
                parts.append(text if text.endswith("\n") else text + "\n")
    return "".join(parts)[-MAX_SAVED_OUTPUT:]


def _notebook(path: Path, text: str) -> tuple[list[Cell], str]:
    """The cells of a notebook's JSON text and its saved output text."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubmissionError(
            f"{path.name}: not a notebook (broken JSON at line {exc.lineno}); download it again as "
            ".ipynb"
        ) from None
    except (RecursionError, ValueError):  # nested too deeply for json, or numbers too long
        raise SubmissionError(
            f"{path.name}: not a notebook Jupyter wrote (nested too deeply); "
            "download it again as .ipynb"
        ) from None
    raw_cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(raw_cells, list):
        raise SubmissionError(
            f"{path.name}: not a Jupyter notebook (no 'cells' list); submit the "
            ".ipynb from Colab or Jupyter"
        )
    cells: list[Cell] = []
    for number, raw in enumerate(raw_cells, start=1):
        if not isinstance(raw, dict):
            raise SubmissionError(
                f"{path.name}: cell {number} is not a notebook cell; download the notebook again"
            )
        source = raw.get("source", "")
        if isinstance(source, list):
            source = "".join(str(part) for part in source)
        kind = raw.get("cell_type", "code")
        cells.append(
            Cell(number, kind if kind in ("code", "markdown", "raw") else "raw", str(source))
        )
    return cells, _saved_output(raw_cells)


def _cells_from_script(text: str) -> list[Cell]:
    """Split at cell markers; without markers the whole file is one cell (line numbers kept)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _CELL_MARKER.match(line)]
    if not starts:
        return [Cell(1, "code", text, 1)]
    bounds = ([0] if starts[0] > 0 else []) + starts + [len(lines)]
    cells: list[Cell] = []
    for begin, end in zip(bounds, bounds[1:]):
        body = lines[begin:end]
        first = begin
        if body and _CELL_MARKER.match(body[0]) and not body[0].startswith("# %%"):
            body, first = body[1:], begin + 1  # drop the "# In[ ]:" marker line itself
        if "".join(body).strip():
            cells.append(Cell(len(cells) + 1, "code", "\n".join(body), first + 1))
    return cells


MAX_SUBMISSION_BYTES = 200 * 1024 * 1024  # a notebook with every output kept stays far below


def read_capped(path: Path, cap: int) -> bytes:
    """The bytes of a student's file: a regular file, not a link (it could point at a device, a FIFO
    or someone else's file), opened without blocking, at most ``cap`` bytes. SubmissionError
    else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SubmissionError(f"{path}: no such file") from None
    except OSError as exc:
        kind = "a symbolic link" if path.is_symlink() else f"unreadable ({exc.strerror})"
        raise SubmissionError(f"{path.name}: {kind}; submit the file itself") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise SubmissionError(
                f"{path}: is a directory; use `grader grade {path} --out OUT` for a class"
            )
        raise SubmissionError(f"{path.name}: not a regular file; submit the file itself")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > cap:
            raise SubmissionError(
                f"{path.name}: {info.st_size // 2**20} MB, over the {cap // 2**20} MB limit; "
                "clear the outputs and save it again"
            )
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise SubmissionError(
            f"{path.name}: over the {cap // 2**20} MB limit; clear the outputs and save it again"
        )
    return data


# of code in all cells: the handout has about 8,000; the static check reads it in the grader
MAX_CODE_CHARS = 100_000


def _runnable(path: Path, cells: list[Cell]) -> None:
    """Code to run, and not more than the grader reads in its own process (parsing a huge file costs
    its memory and time before any job starts: 1 MB of `a=1` lines took 668 MB and 22 s)."""
    code = [c for c in cells if c.kind == "code"]
    if not any(c.source.strip() for c in code):
        raise SubmissionError(f"{path.name}: has no code to run; is this the right file?")
    size = sum(len(c.source) for c in code)
    if size > MAX_CODE_CHARS:
        raise SubmissionError(
            f"{path.name}: {size:,} characters of code, over the grader's {MAX_CODE_CHARS:,}; "
            "take pasted data and outputs out of the code cells"
        )


def read_submission(path: Path, account: str | None = None) -> Submission:
    """Read one .ipynb or .py file into cells; raise SubmissionError with a one-line reason."""
    data = read_capped(path, MAX_SUBMISSION_BYTES)
    if path.suffix not in (".ipynb", ".py"):
        raise SubmissionError(
            f"{path.name}: not a notebook or script; give the .ipynb (or the .py "
            "exported from Colab)"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SubmissionError(
            f"{path.name}: not UTF-8 text; export it again from Colab or Jupyter"
        ) from None
    cells, saved = (
        _notebook(path, text) if path.suffix == ".ipynb" else (_cells_from_script(text), "")
    )
    _runnable(path, cells)
    return Submission(
        account=account or path.stem, path=path, cells=tuple(cells), saved_output=saved
    )


def notebook_from_text(text: str, name: str, account: str | None = None) -> Submission:
    """A notebook held in memory (the one open in Colab or Jupyter), named ``name`` in messages."""
    path = Path(name)
    cells, _saved = _notebook(path, text)
    _runnable(path, cells)
    return Submission(account=account or path.stem, path=path, cells=tuple(cells))


# How browsers, file managers and LMS re-uploads name a second copy: "x (1)", "x - Copy", "x copy
# 2".
