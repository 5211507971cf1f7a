"""Small helpers over Python's ast for reading notebooks statically (no torch, no execution)."""

from __future__ import annotations

import ast
import gc
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property

from IPython.core.inputtransformer2 import TransformerManager

from grader.model.submission import Cell, Submission

# Stateless between cells: it only rewrites the text it is given.
_TRANSFORMER = TransformerManager()  # type: ignore[no-untyped-call]

# Cell magics whose body is still Python.
_PYTHON_CELL_MAGICS = {"time", "timeit", "capture", "prun", "debug"}

_BINOPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
}


@dataclass(frozen=True)
class ParsedCell:
    cell: Cell
    tree: ast.Module | None  # None when the cell has a syntax error
    error: str | None

    @cached_property
    def nodes(self) -> tuple[ast.AST, ...]:
        """Every node of the tree, walked once: the rules walk every cell many times."""
        return tuple(ast.walk(self.tree)) if self.tree is not None else ()


def parse_cells(submission: Submission) -> tuple[ParsedCell, ...]:
    """Every code cell parsed after its IPython syntax is neutralized."""
    parsed = []
    for cell in submission.code_cells:
        try:
            parsed.append(ParsedCell(cell, parse_python(parseable(cell.source)), None))
        except SyntaxError as exc:
            parsed.append(ParsedCell(cell, None, f"line {exc.lineno}: {exc.msg}"))
    return tuple(parsed)


def const_value(node: ast.AST, names: Mapping[str, float] | None = None) -> float | None:
    """Evaluate a constant arithmetic expression (``28 * 28``, ``n_hidden // 2``), else None."""
    names = names or {}
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = const_value(node.operand, names)
        return -inner if inner is not None else None
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = const_value(node.left, names), const_value(node.right, names)
        if left is None or right is None:
            return None
        try:
            return _BINOPS[type(node.op)](left, right)
        except (ZeroDivisionError, OverflowError):
            return None
    return None


def dotted(node: ast.AST) -> str | None:
    """'torch.nn.Linear' for an attribute chain, 'Dense' for a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def import_aliases(cells: tuple[ParsedCell, ...]) -> dict[str, str]:
    """Local name -> full dotted name for every import (``Dense`` -> ``torch.nn.Linear``)."""
    aliases: dict[str, str] = {}
    for _, node in walk_cells(cells):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def resolve(name: str, aliases: Mapping[str, str]) -> str:
    """Expand the first component of a dotted name through the imports."""
    head, _, rest = name.partition(".")
    full = aliases.get(head, head)
    return f"{full}.{rest}" if rest else full


def top_level_constants(cells: tuple[ParsedCell, ...]) -> dict[str, float]:
    """Module-level ``NAME = <constant expression>`` values, last assignment wins."""
    values: dict[str, float] = {}
    for parsed in cells:
        if parsed.tree is None:
            continue
        for stmt in parsed.tree.body:
            if (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
            ):
                value = const_value(stmt.value, values)
                if value is not None:
                    values[stmt.targets[0].id] = value
    return values


def walk_cells(cells: tuple[ParsedCell, ...]) -> Iterator[tuple[ParsedCell, ast.AST]]:
    """Every node of every parsed cell, with its cell."""
    for parsed in cells:
        for node in parsed.nodes:
            yield parsed, node


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
    """The cell's code as Python `ast` can parse, every line where it was: IPython's own input
    transformers turn `!cmd`, `%magic`, `x = !ls` and `obj?` into the calls IPython runs (they
    tokenize, so a continuation line starting with `%` stays an operator). A `%%` cell magic whose
    body is Python (time, capture, ...) keeps the body; any other becomes comments."""
    lines = source.splitlines()
    head = ""
    if lines and lines[0].lstrip().startswith("%%"):
        magic = lines[0].lstrip()[2:].split(maxsplit=1)[0] if lines[0].strip() != "%%" else ""
        if magic not in _PYTHON_CELL_MAGICS:
            return "\n".join("#" + line for line in lines)
        head, lines = "pass\n", lines[1:]
    body = "\n".join(lines)
    try:
        transformed = _TRANSFORMER.transform_cell(body + "\n").rstrip("\n")
    except Exception:  # noqa: BLE001 - IPython cannot read it either: the line-wise fallback
        transformed = None
    if transformed is None or transformed.count("\n") != body.count("\n"):
        # a magic continued over lines (`\\`) was joined into one
        transformed = _line_by_line(lines)
    return head + transformed


def _line_by_line(lines: list[str]) -> str:
    """IPython syntax replaced line by line (a `!` or `%` line becomes `pass`), for what the
    transformers cannot keep on its lines."""
    out = []
    continued = False
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if continued:  # the rest of a `!` or `%` line continued with a backslash
            out.append("")
            continued = line.endswith("\\")
        elif stripped.startswith(("!", "%")):
            out.append(indent + "pass")
            continued = line.endswith("\\")
        elif re.match(r"^[A-Za-z_][\w, ]*=\s*[!%]", stripped):  # files = !ls
            out.append(indent + stripped.split("=", 1)[0] + "= None")
        else:
            out.append(line)
    return "\n".join(out)
