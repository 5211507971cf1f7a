"""Find and read submissions (.ipynb or .py), group them by account, make IPython syntax parseable."""

from __future__ import annotations

import ast
import difflib
import gc
import json
import os
import re
import stat
from typing import Any
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from grader.deadline import Submitted, file_time
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
class Arrival:
    """How a file came in, where discovery cannot read it off the file (a mail's date and sender)."""

    submitted: Submitted | None
    note: str  # one line for the TA
    sender: str | None = None  # a mail's sender address, to tell when one account's files came from two


@dataclass(frozen=True)
class Submission:
    account: str
    path: Path
    cells: tuple[Cell, ...]
    script: Path | None = None  # the .py twin, kept for comparison when the .ipynb is graded
    report: Path | None = None
    notes: tuple[str, ...] = ()  # what discovery saw that the TA should know (e.g. differing copies)
    submitted: Submitted | None = None  # when it came in, where a deadline can be checked
    received: str | None = None  # how it came in, where that is worth a note (a mail's sender and date)
    saved_output: str = ""  # the text outputs saved in the submitted .ipynb (its run on the student's machine)
    flags: tuple[str, ...] = ()  # what discovery raises for the TA (a mail from another sender)

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
    set_aside: tuple[tuple[Path, str], ...] = ()  # extra copies of a file, with why they were not used


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
            f"{path.name}: not a notebook (broken JSON at line {exc.lineno}); download it again as .ipynb"
        ) from None
    except (RecursionError, ValueError):  # nested too deeply for json, or numbers too long
        raise SubmissionError(f"{path.name}: not a notebook Jupyter wrote (nested too deeply); download it again as .ipynb") from None
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
    or someone else's file), opened without blocking, at most ``cap`` bytes. SubmissionError else."""
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
            raise SubmissionError(f"{path}: is a directory; use `grader grade {path} --out OUT` for a class")
        raise SubmissionError(f"{path.name}: not a regular file; submit the file itself")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > cap:
            raise SubmissionError(f"{path.name}: {info.st_size // 2**20} MB, over the {cap // 2**20} MB limit; "
                                  "clear the outputs and save it again")
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise SubmissionError(f"{path.name}: over the {cap // 2**20} MB limit; clear the outputs and save it again")
    return data


def read_submission(path: Path, account: str | None = None) -> Submission:
    """Read one .ipynb or .py file into cells; raise SubmissionError with a one-line reason."""
    data = read_capped(path, MAX_SUBMISSION_BYTES)
    if path.suffix not in (".ipynb", ".py"):
        raise SubmissionError(f"{path.name}: not a notebook or script; give the .ipynb (or the .py exported from Colab)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SubmissionError(f"{path.name}: not UTF-8 text; export it again from Colab or Jupyter") from None
    cells, saved = _notebook(path, text) if path.suffix == ".ipynb" else (_cells_from_script(text), "")
    if not any(c.kind == "code" and c.source.strip() for c in cells):
        raise SubmissionError(f"{path.name}: has no code to run; is this the right file?")
    return Submission(account=account or path.stem, path=path, cells=tuple(cells), saved_output=saved)


def notebook_from_text(text: str, name: str, account: str | None = None) -> Submission:
    """A notebook held in memory (the one open in Colab or Jupyter), named ``name`` in messages."""
    path = Path(name)
    cells, _saved = _notebook(path, text)
    if not any(c.kind == "code" and c.source.strip() for c in cells):
        raise SubmissionError(f"{path.name}: has no code to run; is this the right notebook?")
    return Submission(account=account or path.stem, path=path, cells=tuple(cells))


# How browsers, file managers and LMS re-uploads name a second copy: "x (1)", "x - Copy", "x copy 2".
_COPY_SUFFIX = re.compile(r"^(?P<stem>.+?)(?: ?\((?P<paren>\d+)\)| - Copy(?: \((?P<win>\d+)\))?| copy(?: (?P<mac>\d+))?)$",
                          re.IGNORECASE)
_NUMBERED = re.compile(r"^(?P<account>.+)-(?P<n>\d+)$")  # Canvas's resubmission: HW3_x-1.ipynb


@dataclass(frozen=True)
class _Found:
    path: Path
    copy: int  # 0 for the file's own name, N for its Nth copy


def _identify(name: str, patterns: FilePatterns) -> tuple[str, str, int] | None:
    """(account, kind, copy number) of a file name; an LMS prefix before the pattern
    ("Jane Doe_1234_assignsubmission_file_HW3_x.ipynb") and a copy suffix are allowed."""
    stem, dot, suffix = name.rpartition(".")
    copy, bare = 0, name
    dup = _COPY_SUFFIX.match(stem) if dot else None
    if dup:
        copy = int(dup.group("paren") or dup.group("win") or dup.group("mac") or 1)
        bare = f"{dup.group('stem')}.{suffix}"
    for candidate, number in ((name, 0), (bare, copy)) if copy else ((name, 0),):
        starts = [0] + [i + 1 for i, ch in enumerate(candidate) if ch in "_- "]
        for start in starts:
            matched = patterns.account_of(candidate[start:])
            if matched:
                return matched[0], matched[1], number
    return None


def _pick(account: str, kind: str, found: list[_Found]) -> tuple[Path, list[tuple[Path, str]], str | None]:
    """The copy to use (the newest; the highest copy number on a tie), the others with why they were
    set aside, and a note for the student's result when the copies differ."""
    if len(found) == 1:
        return found[0].path, [], None
    content = {f.path: f.path.read_bytes() for f in found}
    newest = max(found, key=lambda f: (int(f.path.stat().st_mtime), f.copy))
    newest = min((f for f in found if content[f.path] == content[newest.path]), key=lambda f: f.copy)  # same: plain name
    aside, differ = [], []
    for other in found:
        if other is newest:
            continue
        same = content[other.path] == content[newest.path]
        aside.append((other.path, f"{'identical' if same else 'older, different'} copy of {account}'s {kind}; "
                                  f"{newest.path.name} was used"))
        if not same:
            differ.append(other.path.name)
    note = (f"{len(found)} copies of the {kind} were found; graded {newest.path.name}, the newest, and set aside "
            f"{', '.join(differ)}, which differ{'s' if len(differ) == 1 else ''}: check which one was meant") if differ else None
    return newest.path, aside, note


def discover(directory: Path, patterns: FilePatterns, *more: Path,
             arrivals: Mapping[Path, Arrival] | None = None) -> Discovery:
    """Group the files under ``directory`` (and the ``more`` folders, e.g. unpacked zips) by account;
    the .ipynb is graded when both exist; of several copies of one file the newest is used.
    Zip archives themselves are not listed as unmatched. ``arrivals``: how files came in (mail)."""
    if not directory.is_dir():
        raise SubmissionError(f"{directory}: no such directory; give the folder of submissions (or its .zip)")
    by_account: dict[str, dict[str, list[_Found]]] = {}
    unmatched = []
    files = (p for root in (directory, *more) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in sorted(p for p in files if p.suffix != ".zip"):
        identified = _identify(path.name, patterns)
        if identified is None:
            unmatched.append(path)
            continue
        account, kind, copy = identified
        by_account.setdefault(account, {}).setdefault(kind, []).append(_Found(path, copy))
    for account in list(by_account):  # HW3_x-1.ipynb beside HW3_x.ipynb is x's resubmission, not student "x-1"
        numbered = _NUMBERED.match(account)
        if numbered and numbered.group("account") in by_account:
            for kind, found in by_account.pop(account).items():
                by_account[numbered["account"]].setdefault(kind, []).extend(_Found(f.path, int(numbered["n"])) for f in found)
    submissions, unreadable, set_aside = [], [], []
    for account, kinds in sorted(by_account.items()):
        chosen: dict[str, Path] = {}
        notes = []
        for kind, found in sorted(kinds.items()):
            chosen[kind], aside, note = _pick(account, kind, found)
            set_aside += aside
            notes += [note] if note else []
        main = chosen.get("notebook") or chosen.get("script")
        if main is None:
            unreadable.append((account, chosen["report"], "only the report PDF was submitted, no notebook or script"))
            continue
        try:
            sub = read_submission(main, account)
        except SubmissionError as exc:
            unreadable.append((account, main, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one file the reader cannot handle never stops the class
            unreadable.append((account, main, f"{main.name}: could not be read ({type(exc).__name__}); "
                                              "download it again from Colab or Jupyter"))
            continue
        script = chosen.get("script") if main.suffix == ".ipynb" else None
        arrival = (arrivals or {}).get(main)
        submissions.append(Submission(account, main, sub.cells, script, chosen.get("report"), tuple(notes),
                                      arrival.submitted if arrival else file_time(main), arrival.note if arrival else None,
                                      sub.saved_output))
    return Discovery(tuple(submissions), tuple(unmatched), tuple(unreadable), tuple(set_aside))


def _is_export_noise(node: ast.stmt) -> bool:
    """What exports add or drop without changing the program: markdown cells turned into string
    literals (Colab's .py), magics (`pass` after `parseable`, or nbconvert's get_ipython() calls)."""
    if isinstance(node, ast.Pass):
        return True
    if not isinstance(node, ast.Expr):
        return False
    value = node.value
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return True
    return isinstance(value, ast.Call) and "get_ipython()" in ast.unparse(value.func)


def comparable_lines(sub: Submission) -> list[str]:
    """The program's statements in one normal form (ast.unparse), so that formatting, comments,
    cell markers and what an export adds do not count as differences."""
    lines = []
    for cell in sub.code_cells:
        try:
            tree = parse_python(parseable(cell.source))
        except SyntaxError:  # compared as text, without blanks and comments
            lines += [t for t in (line.strip() for line in cell.source.splitlines()) if t and not t.startswith("#")]
            continue
        body = [node for node in tree.body if not _is_export_noise(node)]
        lines += ast.unparse(ast.Module(body=body, type_ignores=[])).splitlines()
    return lines


def twin_difference(sub: Submission) -> str | None:
    """A note when the .py kept beside the graded .ipynb has other code than the notebook."""
    if sub.script is None:
        return None
    try:
        twin = read_submission(sub.script, sub.account)
    except SubmissionError as exc:
        return f"{sub.script.name} kept beside the notebook could not be compared: {exc}"
    ours, theirs = comparable_lines(sub), comparable_lines(twin)
    if ours == theirs:
        return None
    changed = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in
                  difflib.SequenceMatcher(a=ours, b=theirs, autojunk=False).get_opcodes() if tag != "equal")
    return (f"{sub.script.name} differs from the notebook in {changed} code line{'s' if changed != 1 else ''}; "
            f"the notebook was graded")


def parse_python(source: str) -> ast.Module:
    """``ast.parse`` with the garbage collector paused: on CPython 3.11.7 a collection that runs
    finalizers while the tree is built can fail the parse with "AST constructor recursion depth
    mismatch". Code nested too deeply to parse is a SyntaxError like any other unreadable cell."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source)
    except (RecursionError, MemoryError) as exc:
        raise SyntaxError(f"nested too deeply to read ({type(exc).__name__})") from None
    finally:
        if enabled:
            gc.enable()


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
