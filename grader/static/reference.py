"""Derive the frozen facts (epochs, valid_size, every weight layer: nn.Linear, nn.Conv1d,
nn.Conv2d with their arguments; the other top-level constants) from the reference template, each
found by its use: the epochs constant by the training loop's ``range(...)`` (at the top level, or in
a function it is passed to), the validation fraction by the split it makes.

Static analysis of the template the course hands out, so a course that drops in its own
template gets correct checks without code changes.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

from grader.intake.read import read_submission
from grader.model.errors import RubricError, SubmissionError
from grader.model.rubric import ArgValue, FrozenFacts, LinearLayer, WeightLayer
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
_CONV = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "bias",
    "padding_mode",
)
# A weight layer's kind -> its constructor's parameters, in positional order.
WEIGHT_KINDS: dict[str, tuple[str, ...]] = {
    "Linear": ("in_features", "out_features", "bias"),
    "Conv1d": _CONV,
    "Conv2d": _CONV,
}
# Where torch defines each kind (torch.nn re-exports them).
_KIND_MODULES = {"Linear": "linear", "Conv1d": "conv", "Conv2d": "conv"}
WEIGHT_NAMES = {
    full: kind
    for kind, module in _KIND_MODULES.items()
    for full in (f"torch.nn.{kind}", f"torch.nn.modules.{module}.{kind}")
}


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


def weight_calls(cells: tuple[ParsedCell, ...]) -> list[tuple[ParsedCell, ast.Call, str]]:
    """Every call of nn.Linear, nn.Conv1d and nn.Conv2d however imported, with its kind, in order
    of appearance."""
    aliases = import_aliases(cells)
    found = [
        (parsed, node, WEIGHT_NAMES[full])
        for parsed, node in walk_cells(cells)
        if isinstance(node, ast.Call)
        and (full := resolve(dotted(node.func) or "", aliases)) in WEIGHT_NAMES
    ]
    return sorted(found, key=lambda item: (item[0].cell.number, item[1].lineno, item[1].col_offset))


def arg_value(node: ast.AST, constants: dict[str, float]) -> ArgValue:
    """A constructor argument as a constant (``3``, ``28 * 28``, ``(3, 3)``, ``'same'``, ``False``),
    else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, str)):
        return node.value
    if isinstance(node, ast.Tuple):
        items = [const_value(item, constants) for item in node.elts]
        return tuple(v for v in items if v is not None) if None not in items else None
    return const_value(node, constants)


def weight_layer(
    parsed: ParsedCell, call: ast.Call, kind: str, constants: dict[str, float]
) -> WeightLayer:
    """The layer a call builds: the arguments it passes, positional ones named by the
    constructor's parameters (others, such as ``device=``, left out)."""
    parameters = WEIGHT_KINDS[kind]
    given = [(name, node) for name, node in zip(parameters, call.args)] + [
        (k.arg, k.value) for k in call.keywords if k.arg in parameters
    ]
    return WeightLayer(
        kind=kind,
        name=_assigned_name(parsed, call),
        args=tuple((name, arg_value(node, constants)) for name, node in given),
    )


def _assigned_name(parsed: ParsedCell, call: ast.Call) -> str | None:
    assert parsed.tree is not None
    for node in ast.walk(parsed.tree):
        if isinstance(node, ast.Assign) and node.value is call and len(node.targets) == 1:
            return dotted(node.targets[0])
    return None


def _split_fractions(cells: tuple[ParsedCell, ...], constants: dict[str, float]) -> list[str]:
    """Names of constants in (0, 1) that give the validation share of a split, best first: the last
    of ``random_split``'s fractions (``[1 - VAL_FRAC, VAL_FRAC]``), then one that scales a size
    (``valid_size * num_train``), then one whose name says so."""
    fractions = {name for name, value in constants.items() if 0 < value < 1}
    listed = [
        last.id
        for lengths in _split_lengths(cells)
        for last in lengths.elts[-1:]
        if isinstance(last, ast.Name) and last.id in fractions
    ]
    scaling = [
        side.id
        for _, node in walk_cells(cells)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)
        for side in (node.left, node.right)
        if isinstance(side, ast.Name) and side.id in fractions
    ]
    named = [name for name in fractions if "val" in name.lower()]
    return list(dict.fromkeys(listed + scaling + named))


def _split_lengths(cells: tuple[ParsedCell, ...]) -> list[ast.List | ast.Tuple]:
    """The lengths lists of ``random_split(dataset, [...])`` calls however imported."""
    aliases = import_aliases(cells)
    found = []
    for _, node in walk_cells(cells):
        if not isinstance(node, ast.Call):
            continue
        name = resolve(dotted(node.func) or "", aliases)
        if name.rsplit(".", 1)[-1] != "random_split":
            continue
        lengths = node.args[1] if len(node.args) > 1 else None
        lengths = next((k.value for k in node.keywords if k.arg == "lengths"), lengths)
        if isinstance(lengths, (ast.List, ast.Tuple)):
            found.append(lengths)
    return found


def _epochs_name(
    cells: tuple[ParsedCell, ...],
    constants: dict[str, float],
    is_loop: Callable[[ast.stmt], bool],
) -> str | None:
    """The first constant in ``range(...)`` of the first top-level loop ``is_loop`` accepts."""
    epochs_name = None
    for parsed in cells:
        for stmt in parsed.tree.body if parsed.tree else []:
            if is_loop(stmt):
                assert isinstance(stmt, ast.For) and isinstance(stmt.iter, ast.Call)
                names = [
                    n.id
                    for arg in stmt.iter.args
                    for n in ast.walk(arg)
                    if isinstance(n, ast.Name) and n.id in constants
                ]
                epochs_name = epochs_name or (names[0] if names else None)
    return epochs_name


def _trains(body: list[ast.stmt]) -> bool:
    nodes = [n for stmt in body for n in ast.walk(stmt)]
    return any(isinstance(n, ast.For) for n in nodes) and any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "backward"
        for n in nodes
    )


def _trainers(cells: tuple[ParsedCell, ...]) -> set[str]:
    """Top-level functions that train an epoch: a loop and backward() (``def train_one_epoch``)."""
    return {
        stmt.name
        for parsed in cells
        for stmt in (parsed.tree.body if parsed.tree else [])
        if isinstance(stmt, ast.FunctionDef) and _trains(stmt.body)
    }


def epoch_loops(cells: tuple[ParsedCell, ...]) -> list[tuple[ParsedCell, ast.For]]:
    """The loops that train epochs: those that train in their own body (``is_epoch_loop``), else
    those that call a function that trains one (``for r in range(ROUNDS): train_round(...)``)."""
    walked = [(parsed, node) for parsed, node in walk_cells(cells) if isinstance(node, ast.For)]
    own = [(parsed, node) for parsed, node in walked if is_epoch_loop(node)]
    if own:
        return own
    trainers = _trainers(cells)
    return [(parsed, node) for parsed, node in walked if _calls_a_trainer(node, trainers)]


def _calls_a_trainer(node: ast.stmt, trainers: set[str]) -> bool:
    """A ``for ... in range(...)`` whose body calls a function that trains an epoch: the
    template's epoch loop when none trains in its own body (only the template's; a submission's
    loops are the epochs rule's)."""
    return (
        isinstance(node, ast.For)
        and isinstance(node.iter, ast.Call)
        and dotted(node.iter.func) == "range"
        and any(
            isinstance(n, ast.Call) and dotted(n.func) in trainers
            for stmt in node.body
            for n in ast.walk(stmt)
        )
    )


def _epochs_in_functions(
    cells: tuple[ParsedCell, ...], constants: dict[str, float], trainers: set[str]
) -> str | None:
    """The constant the epoch loop of a function iterates (``def train(model, n_epochs): for epoch
    in range(n_epochs): ...``): named in its ``range(...)``, passed for the parameter there by a
    call of the function (``train(model, EPOCHS)``), or the parameter's default."""
    for _, function in walk_cells(cells):
        if not isinstance(function, ast.FunctionDef):
            continue
        params = [a.arg for a in function.args.args]
        given = function.args.defaults
        defaults = dict(zip(params[len(params) - len(given) :], given))
        for loop in ast.walk(function):
            if not isinstance(loop, ast.For) or not (
                is_epoch_loop(loop) or _calls_a_trainer(loop, trainers)
            ):
                continue
            assert isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call)
            names = [n.id for a in loop.iter.args for n in ast.walk(a) if isinstance(n, ast.Name)]
            for name in names:
                if name in constants:
                    return name
                if name in params:
                    passed = _passed(cells, function.name, params.index(name), name)
                    passed = passed + [defaults[name]] if name in defaults else passed
                    found = [n.id for n in passed if isinstance(n, ast.Name) and n.id in constants]
                    if found:
                        return found[0]
    return None


def _passed(cells: tuple[ParsedCell, ...], function: str, index: int, param: str) -> list[ast.expr]:
    """What the calls of ``function`` pass for its parameter ``param`` (at ``index``)."""
    passed: list[ast.expr] = []
    for _, call in walk_cells(cells):
        if isinstance(call, ast.Call) and dotted(call.func) == function:
            by_name = {k.arg: k.value for k in call.keywords if k.arg}
            value = call.args[index] if index < len(call.args) else by_name.get(param)
            passed += [value] if value is not None else []
    return passed


def derive_facts(template: Path) -> FrozenFacts:
    """Read the template and return its frozen facts; RubricError when one cannot be found."""
    try:
        handout = read_submission(template)
        cells = parse_cells(handout)
    except SubmissionError as exc:
        raise RubricError(f"reference template: {exc}") from None
    constants = top_level_constants(cells)
    trainers = _trainers(cells)
    epochs_name = (
        _epochs_name(cells, constants, is_epoch_loop)
        or _epochs_name(cells, constants, lambda stmt: _calls_a_trainer(stmt, trainers))
        or _epochs_in_functions(cells, constants, trainers)
    )
    if epochs_name is None:
        raise RubricError(
            f"reference template {template.name}: no training loop `for ... in "
            "range(n_epochs)` found"
        )
    valid = _split_fractions(cells, constants)
    if not valid:
        raise RubricError(
            f"reference template {template.name}: no `valid_size = 0.x` assignment found (a "
            "constant in (0, 1) that scales the split or is random_split's last fraction)"
        )
    weights = weight_calls(cells)
    if not weights:
        raise RubricError(
            f"reference template {template.name}: no weight layer (nn.Linear, nn.Conv1d, "
            "nn.Conv2d) found"
        )
    layers = tuple(
        LinearLayer(*linear_shape(call, constants), _assigned_name(parsed, call))
        for parsed, call in linear_calls(cells)
    )
    if any(layer.in_features is None or layer.out_features is None for layer in layers):
        raise RubricError(
            f"reference template {template.name}: its nn.Linear layers need constant sizes"
        )
    updated = {
        node.target.id
        for _, node in walk_cells(cells)
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name)
    }
    others = tuple(
        (name, value)
        for name, value in constants.items()
        if name not in (epochs_name, valid[0], *updated)
    )
    return FrozenFacts(
        epochs_name=epochs_name,
        epochs=int(constants[epochs_name]),
        valid_name=valid[0],
        valid_size=constants[valid[0]],
        linear_layers=layers,
        text=code_text(cells)
        + "".join(c.source for c in handout.cells if c.kind != "code").encode(),
        weight_layers=tuple(
            weight_layer(parsed, call, kind, constants) for parsed, call, kind in weights
        ),
        constants=others,
    )
