"""Find and read submissions (.ipynb or .py), group them by account, make IPython syntax parseable."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from grader.errors import SubmissionError
from grader.rubric import FilePatterns

# Cell markers of `jupyter nbconvert --to script` (# In[3]:), jupytext/VS Code/Spyder (# %%).
_CELL_MARKER = re.compile(r"^# ?(In\[[ 0-9]*\]:|%%).*$")
# Cell magics whose body is still Python.
_PYTHON_CELL_MAGICS = {"time", "timeit", "capture", "prun", "debug"}


@dataclass(frozen=True)
class Cell:
    """One cell. ``number`` is its 1-based position in the notebook; ``first_line`` is where
    it starts in the submitted file (1 for notebooks, where lines count within the cell)."""

    number: int
    kind: str  # "code", "markdown" or "raw"
    source: str
    first_line: int = 1


@dataclass(frozen=True)
class Submission:
    account: str
    path: Path
    cells: tuple[Cell, ...]
    script: Path | None = None  # the .py twin, kept for comparison when the .ipynb is graded
    report: Path | None = None

    @property
    def code_cells(self) -> tuple[Cell, ...]:
        return tuple(c for c in self.cells if c.kind == "code")

    def where(self, cell: Cell, line: int | None = None) -> str:
        """'cell 5, line 2' (or 'cell 5') for notebooks; 'line 57' (or 'the cell at line 50') for scripts."""
        if self.path.suffix == ".py":
            return f"line {cell.first_line + line - 1}" if line else f"the cell at line {cell.first_line}"
        return f"cell {cell.number}, line {line}" if line else f"cell {cell.number}"


@dataclass(frozen=True)
class Discovery:
    submissions: tuple[Submission, ...]
    unmatched: tuple[Path, ...]  # files whose name matches no pattern
    unreadable: tuple[tuple[str, Path, str], ...]  # (account, path, one-line reason)


def _cells_from_notebook(path: Path, text: str) -> list[Cell]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubmissionError(
            f"{path.name}: not a notebook (broken JSON at line {exc.lineno}); download it again as .ipynb"
        ) from None
    raw_cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(raw_cells, list):
        raise SubmissionError(f"{path.name}: not a Jupyter notebook (no 'cells' list); submit the .ipynb from Colab or Jupyter")
    cells: list[Cell] = []
    for number, raw in enumerate(raw_cells, start=1):
        if not isinstance(raw, dict):
            raise SubmissionError(f"{path.name}: cell {number} is not a notebook cell; download the notebook again")
        source = raw.get("source", "")
        if isinstance(source, list):
            source = "".join(str(part) for part in source)
        kind = raw.get("cell_type", "code")
        cells.append(Cell(number, kind if kind in ("code", "markdown", "raw") else "raw", str(source)))
    return cells


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


def read_submission(path: Path, account: str | None = None) -> Submission:
    """Read one .ipynb or .py file into cells; raise SubmissionError with a one-line reason."""
    if not path.exists():
        raise SubmissionError(f"{path}: no such file")
    if path.is_dir():
        raise SubmissionError(f"{path}: is a directory; use `grader grade {path} --out OUT` for a class")
    if path.suffix not in (".ipynb", ".py"):
        raise SubmissionError(f"{path.name}: not a notebook or script; give the .ipynb (or the .py exported from Colab)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SubmissionError(f"{path.name}: not UTF-8 text; export it again from Colab or Jupyter") from None
    cells = _cells_from_notebook(path, text) if path.suffix == ".ipynb" else _cells_from_script(text)
    if not any(c.kind == "code" and c.source.strip() for c in cells):
        raise SubmissionError(f"{path.name}: has no code to run; is this the right file?")
    return Submission(account=account or path.stem, path=path, cells=tuple(cells))


def discover(directory: Path, patterns: FilePatterns, *more: Path) -> Discovery:
    """Group the files under ``directory`` (and the ``more`` folders, e.g. unpacked zips) by account;
    the .ipynb is graded when both exist. Zip archives themselves are not listed as unmatched."""
    if not directory.is_dir():
        raise SubmissionError(f"{directory}: no such directory; give the folder of submissions (or its .zip)")
    by_account: dict[str, dict[str, Path]] = {}
    unmatched = []
    found = (p for root in (directory, *more) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in sorted(p for p in found if p.suffix != ".zip"):
        matched = patterns.account_of(path.name)
        if matched is None:
            unmatched.append(path)
            continue
        account, kind = matched
        by_account.setdefault(account, {}).setdefault(kind, path)
    submissions, unreadable = [], []
    for account, files in sorted(by_account.items()):
        main = files.get("notebook") or files.get("script")
        if main is None:
            unreadable.append((account, files["report"], "only the report PDF was submitted, no notebook or script"))
            continue
        try:
            sub = read_submission(main, account)
        except SubmissionError as exc:
            unreadable.append((account, main, str(exc)))
            continue
        script = files.get("script") if main.suffix == ".ipynb" else None
        submissions.append(Submission(account, main, sub.cells, script, files.get("report")))
    return Discovery(tuple(submissions), tuple(unmatched), tuple(unreadable))


def parseable(source: str) -> str:
    """The cell's code with IPython syntax (!cmd, %magic, %%cell magic) replaced by `pass`,
    keeping every line where it was, so `ast` can parse Colab exports."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        magic = lines[0].lstrip()[2:].split(maxsplit=1)[0] if lines[0].strip() != "%%" else ""
        if magic not in _PYTHON_CELL_MAGICS:
            return "\n".join("#" + line for line in lines)
        lines = ["pass"] + lines[1:]
    out = []
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped.startswith(("!", "%")):
            out.append(indent + "pass")
        elif re.match(r"^[A-Za-z_][\w, ]*=\s*[!%]", stripped):  # files = !ls
            out.append(indent + stripped.split("=", 1)[0] + "= None")
        else:
            out.append(line)
    return "\n".join(out)
