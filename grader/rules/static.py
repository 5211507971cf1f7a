"""Static rule checks on a submission's code: no torch import, no execution.

Each rule gives one Check: ok, a violation pointing at file/cell/line, or undecided (None)
when static analysis cannot tell, leaving it to the run.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable

from grader.pyast import ParsedCell, const_value, dotted, import_aliases, parse_cells, resolve, top_level_constants
from grader.reference import FrozenFacts, is_epoch_loop, linear_calls, linear_shape
from grader.results import Check, StaticReport
from grader.rubric import Rubric
from grader.submission import Submission

# Layers that carry weights and are not allowed as additions (prefixes of torch.nn class names).
_WEIGHT_LAYERS = ("Conv", "LazyConv", "LazyLinear", "Bilinear", "RNN", "LSTM", "GRU", "Embedding",
                  "MultiheadAttention", "Transformer")


def _check(sub: Submission, rule: str, parsed: ParsedCell | None, node: ast.AST | None,
           ok: bool | None, message: str) -> Check:
    if parsed is None:
        return Check(rule, ok, message, sub.path.name)
    line = getattr(node, "lineno", None)
    cell = parsed.cell
    file_line = cell.first_line + line - 1 if line and sub.path.suffix == ".py" else line
    where = sub.where(cell, line)
    return Check(rule, ok, f"{where}: {message}" if ok is False else message, sub.path.name,
                 cell.number if sub.path.suffix == ".ipynb" else None, file_line)


def _assignments(cells: tuple[ParsedCell, ...], name: str) -> list[tuple[ParsedCell, ast.AST, ast.AST | None]]:
    """(cell, statement, value) for every assignment to ``name``; value None for augmented ones."""
    found: list[tuple[ParsedCell, ast.AST, ast.AST | None]] = []
    for parsed in cells:
        if parsed.tree is None:
            continue
        for node in ast.walk(parsed.tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id == name:
                        found.append((parsed, node, node.value))
                    elif isinstance(target, ast.Tuple) and any(isinstance(e, ast.Name) and e.id == name for e in target.elts):
                        found.append((parsed, node, None))
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Name) and node.target.id == name:
                found.append((parsed, node, node.value if isinstance(node, ast.AnnAssign) else None))
    return found


def _frozen_value(sub: Submission, cells: tuple[ParsedCell, ...], rule: str, name: str,
                  expected: float, constants: dict[str, float]) -> Check | None:
    """A violation when ``name`` is set to anything but ``expected``; None when all assignments agree."""
    for parsed, stmt, value in _assignments(cells, name):
        if value is None:
            return _check(sub, rule, parsed, stmt, False, f"{name} is changed here; the homework fixes it at {expected:g}")
        number = const_value(value, constants)
        if number is None:
            return _check(sub, rule, parsed, stmt, None, f"{name} is computed at run time; the run will check it")
        if number != expected:
            return _check(sub, rule, parsed, stmt, False, f"{name} is {number:g}; the homework fixes it at {expected:g}")
    return None


def _range_count(args: list[ast.expr], constants: dict[str, float]) -> float | None:
    """How many times ``range(*args)`` iterates, when its arguments are constants."""
    values = [const_value(a, constants) for a in args]
    if not 1 <= len(values) <= 3 or any(v is None for v in values):
        return None
    start, stop, step = (0.0, values[0], 1.0) if len(values) == 1 else (values[0], values[1], values[2] if len(values) == 3 else 1.0)
    assert start is not None and stop is not None and step is not None
    return max(0, math.ceil((stop - start) / step)) if step else None


def check_epochs(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    constants = top_level_constants(cells)
    problem = _frozen_value(sub, cells, "epochs", facts.epochs_name, facts.epochs, constants)
    if problem is not None:
        return problem
    loops = [(parsed, node) for parsed in cells if parsed.tree for node in ast.walk(parsed.tree) if is_epoch_loop(node)]
    if not loops:
        return _check(sub, "epochs", None, None, None, "no training loop `for ... in range(...)` found; the run will count epochs")
    for parsed, loop in loops:
        assert isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call)
        count = _range_count(loop.iter.args, constants)
        shown = ast.unparse(loop.iter)
        if count is None:
            return _check(sub, "epochs", parsed, loop, None, f"the training loop runs {shown}; the run will count epochs")
        if count != facts.epochs:
            return _check(sub, "epochs", parsed, loop, False,
                          f"the training loop runs {shown}, {count:g} epochs; the homework fixes {facts.epochs}")
    return Check("epochs", True, f"{facts.epochs_name} = {facts.epochs} and the training loop runs it", sub.path.name)


def check_valid_size(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    name = facts.valid_name
    problem = _frozen_value(sub, cells, "valid_size", name, facts.valid_size, top_level_constants(cells))
    if problem is not None:
        return problem
    if not _assignments(cells, name):
        return _check(sub, "valid_size", None, None, None, f"{name} is never set; the run will check the split")
    used = any(isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)
               for parsed in cells if parsed.tree for node in ast.walk(parsed.tree))
    if not used:
        return _check(sub, "valid_size", None, None, False,
                      f"{name} is set but the train/validation split does not use it; split with {name}")
    return Check("valid_size", True, f"{name} = {facts.valid_size:g} and the split uses it", sub.path.name)


def check_layers(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    aliases = import_aliases(cells)
    for parsed, node in ((p, n) for p in cells if p.tree for n in ast.walk(p.tree)):
        if isinstance(node, ast.Call):
            name = resolve(dotted(node.func) or "", aliases)
            short = name.rsplit(".", 1)[-1]
            if name.startswith("torch.nn.") and short.startswith(_WEIGHT_LAYERS):
                return _check(sub, "linear_layers", parsed, node, False,
                              f"adds a {short} layer; only normalization, activation and dropout layers may be added")
            if name in ("torch.nn.Parameter", "torch.nn.parameter.Parameter"):
                return _check(sub, "linear_layers", parsed, node, False,
                              "creates raw weights with nn.Parameter; the model may only use its three Linear layers")
    calls = linear_calls(cells)
    constants = top_level_constants(cells)
    expected = [(layer.in_features, layer.out_features) for layer in facts.linear_layers]
    shapes = [linear_shape(call, constants) for _, call in calls]
    in_loops = {id(n) for p in cells if p.tree for loop in ast.walk(p.tree)
                if isinstance(loop, (ast.For, ast.While, ast.ListComp, ast.GeneratorExp)) for n in ast.walk(loop)}
    loop_built = [(p, c) for p, c in calls if id(c) in in_loops]
    if loop_built:
        parsed, call = loop_built[0]
        return _check(sub, "linear_layers", parsed, call, None, "Linear layers are built in a loop; the run will check them")
    if len(shapes) != len(expected):
        last_cell, last_call = calls[-1] if calls else (None, None)
        return _check(sub, "linear_layers", last_cell, last_call, False,
                      f"the model has {len(shapes)} nn.Linear layers; the homework fixes {len(expected)}: "
                      + ", ".join(f"{i}->{o}" for i, o in expected))
    for (parsed, call), shape, want in zip(calls, shapes, expected):
        if None in shape:
            return _check(sub, "linear_layers", parsed, call, None, "a Linear layer's size is computed at run time; the run will check it")
        if shape != want:
            return _check(sub, "linear_layers", parsed, call, False,
                          f"nn.Linear({shape[0]}, {shape[1]}) differs from the fixed {want[0]}->{want[1]}")
    return Check("linear_layers", True, "the three Linear layers are unchanged and no weight layer was added", sub.path.name)


_RULES: dict[str, Callable[[Submission, tuple[ParsedCell, ...], FrozenFacts], Check]] = {
    "epochs": check_epochs,
    "valid_size": check_valid_size,
    "linear_layers": check_layers,
}


def check_static(sub: Submission, facts: FrozenFacts, rubric: Rubric) -> StaticReport:
    """Every frozen rule of the rubric, checked on the code as written."""
    cells = parse_cells(sub)
    checks = [_RULES[rule](sub, cells, facts) for rule in rubric.frozen]
    for parsed in cells:
        if parsed.error:
            checks.append(Check("syntax", None, f"{sub.where(parsed.cell)}: not valid Python ({parsed.error}); that cell was not checked",
                                sub.path.name, parsed.cell.number if sub.path.suffix == ".ipynb" else None))
    return StaticReport(tuple(checks))
