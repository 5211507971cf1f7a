"""Derive the frozen facts (epochs, valid_size, the Linear layers) from the reference template.

Static analysis of the template the course hands out, so a course that drops in its own
template gets correct checks without code changes.
"""

from __future__ import annotations

import ast
from pathlib import Path

from grader.intake.read import read_submission
from grader.model.errors import RubricError, SubmissionError
from grader.model.rubric import FrozenFacts, LinearLayer
from grader.static.pyast import (
    ParsedCell,
    const_value,
    dotted,
    import_aliases,
    parse_cells,
    resolve,
    top_level_constants,
    walk_cells,
)
from grader.static.tamper import code_text

LINEAR_NAMES = ("torch.nn.Linear", "torch.nn.modules.linear.Linear")


def is_epoch_loop(node: ast.AST) -> bool:
    """A ``for ... in range(...)`` whose body trains: it holds an inner loop and calls
    backward()."""
    if (
        not isinstance(node, ast.For)
        or not isinstance(node.iter, ast.Call)
        or dotted(node.iter.func) != "range"
    ):
        return False
    inner = any(isinstance(n, ast.For) for stmt in node.body for n in ast.walk(stmt))
    backward = any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "backward"
        for stmt in node.body
        for n in ast.walk(stmt)
    )
    return inner and backward


def linear_calls(cells: tuple[ParsedCell, ...]) -> list[tuple[ParsedCell, ast.Call]]:
    """Every call of nn.Linear however it was imported, in order of appearance."""
    aliases = import_aliases(cells)
    found = [
        (parsed, node)
        for parsed, node in walk_cells(cells)
        if isinstance(node, ast.Call) and resolve(dotted(node.func) or "", aliases) in LINEAR_NAMES
    ]
    return sorted(found, key=lambda item: (item[0].cell.number, item[1].lineno, item[1].col_offset))


def linear_shape(call: ast.Call, constants: dict[str, float]) -> tuple[int | None, int | None]:
    args = list(call.args[:2])
    keywords = {k.arg: k.value for k in call.keywords}
    nodes = [
        args[0] if len(args) > 0 else keywords.get("in_features"),
        args[1] if len(args) > 1 else keywords.get("out_features"),
    ]
    values = [const_value(n, constants) if n is not None else None for n in nodes]
    return tuple(int(v) if v is not None and float(v).is_integer() else None for v in values)  # type: ignore[return-value]


def _assigned_name(parsed: ParsedCell, call: ast.Call) -> str | None:
    assert parsed.tree is not None
    for node in ast.walk(parsed.tree):
        if isinstance(node, ast.Assign) and node.value is call and len(node.targets) == 1:
            return dotted(node.targets[0])
    return None


def _split_fractions(cells: tuple[ParsedCell, ...], constants: dict[str, float]) -> list[str]:
    """Names of constants in (0, 1) that scale a size (``valid_size * num_train``), best first."""
    fractions = {name for name, value in constants.items() if 0 < value < 1}
    scaling = [
        side.id
        for _, node in walk_cells(cells)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)
        for side in (node.left, node.right)
        if isinstance(side, ast.Name) and side.id in fractions
    ]
    named = [name for name in fractions if "val" in name.lower()]
    return list(dict.fromkeys(scaling + named))


def derive_facts(template: Path) -> FrozenFacts:
    """Read the template and return its frozen facts; RubricError when one cannot be found."""
    try:
        handout = read_submission(template)
        cells = parse_cells(handout)
    except SubmissionError as exc:
        raise RubricError(f"reference template: {exc}") from None
    constants = top_level_constants(cells)
    epochs_name = None
    for parsed in cells:
        for stmt in parsed.tree.body if parsed.tree else []:
            if is_epoch_loop(stmt):
                assert isinstance(stmt, ast.For) and isinstance(stmt.iter, ast.Call)
                names = [
                    n.id
                    for arg in stmt.iter.args
                    for n in ast.walk(arg)
                    if isinstance(n, ast.Name) and n.id in constants
                ]
                epochs_name = epochs_name or (names[0] if names else None)
    if epochs_name is None:
        raise RubricError(
            f"reference template {template.name}: no training loop `for ... in "
            "range(n_epochs)` found"
        )
    valid = _split_fractions(cells, constants)
    if not valid:
        raise RubricError(
            f"reference template {template.name}: no `valid_size = 0.x` assignment found"
        )
    layers = tuple(
        LinearLayer(*linear_shape(call, constants), _assigned_name(parsed, call))
        for parsed, call in linear_calls(cells)
    )
    if not layers or any(
        layer.in_features is None or layer.out_features is None for layer in layers
    ):
        raise RubricError(
            f"reference template {template.name}: its nn.Linear layers need constant sizes"
        )
    return FrozenFacts(
        epochs_name=epochs_name,
        epochs=int(constants[epochs_name]),
        valid_name=valid[0],
        valid_size=constants[valid[0]],
        linear_layers=layers,
        text=code_text(cells)
        + "".join(c.source for c in handout.cells if c.kind != "code").encode(),
    )
