"""Static rule checks on a submission's code: no torch import, no execution.

Each rule gives one Check: ok, a violation pointing at file/cell/line, or undecided (None)
when static analysis cannot tell, leaving it to the run.
"""

from __future__ import annotations

import ast
import math
from dataclasses import replace
from collections import Counter
from collections.abc import Callable

from grader.pyast import ParsedCell, const_value, dotted, import_aliases, parse_cells, resolve, top_level_constants, walk_cells
from grader.reference import FrozenFacts, is_epoch_loop, linear_calls, linear_shape
from grader.results import Check, StaticReport
from grader.rubric import Rubric
from grader.submission import Submission
from grader.tamper import static_evidence

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
    for parsed, node in walk_cells(cells):
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


def _enclosing_functions(cells: tuple[ParsedCell, ...]) -> dict[int, ast.FunctionDef]:
    """id(node) -> the innermost function definition around it."""
    owner: dict[int, ast.FunctionDef] = {}
    for _, function in walk_cells(cells):
        if isinstance(function, ast.FunctionDef):
            for node in ast.walk(function):
                owner[id(node)] = function
    return owner


def _count_through_calls(cells: tuple[ParsedCell, ...], function: ast.FunctionDef, args: list[ast.expr],
                         constants: dict[str, float]) -> float | None:
    """The loop count when ``range`` takes a parameter of ``function`` (``def train(model, n_epochs)``)
    and every call of the function passes the same constant (or leaves the default)."""
    params = [a.arg for a in function.args.args]
    defaults = dict(zip(params[len(params) - len(function.args.defaults):], function.args.defaults))
    counts = set()
    for _, call in walk_cells(cells):
        if isinstance(call, ast.Call) and dotted(call.func) == function.name:
            passed = dict(zip(params, call.args)) | {k.arg: k.value for k in call.keywords if k.arg}
            values = {p: const_value(passed.get(p, defaults.get(p)) or ast.Constant(None), constants) for p in params}
            counts.add(_range_count(args, {**constants, **{n: v for n, v in values.items() if v is not None}}))
    return counts.pop() if len(counts) == 1 else None


def check_epochs(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    constants = top_level_constants(cells)
    problem = _frozen_value(sub, cells, "epochs", facts.epochs_name, facts.epochs, constants)
    if problem is not None:
        return problem
    loops = [(parsed, node) for parsed, node in walk_cells(cells) if is_epoch_loop(node)]
    if not loops:
        return _check(sub, "epochs", None, None, None, "no training loop `for ... in range(...)` found; the run will count epochs")
    functions = _enclosing_functions(cells)
    for parsed, loop in loops:
        assert isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call)
        count = _range_count(loop.iter.args, constants)
        function = functions.get(id(loop))
        if count is None and function is not None:
            count = _count_through_calls(cells, function, loop.iter.args, constants)
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
               for _, node in walk_cells(cells))
    if not used:
        literal = next(((p, n) for p, n in walk_cells(cells)
                        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult)
                        and any(isinstance(side, ast.Constant) and isinstance(side.value, float) and 0 < side.value < 1
                                for side in (n.left, n.right))), (None, None))
        if literal[1] is None:  # split some other way (sizes, a library call): no evidence of a change
            return _check(sub, "valid_size", None, None, None,
                          f"{name} is set but not read, and no split fraction was found; the run will check the split")
        fraction = next(side.value for side in (literal[1].left, literal[1].right)
                        if isinstance(side, ast.Constant) and isinstance(side.value, float))
        if math.isclose(fraction, facts.valid_size):
            return Check("valid_size", True, f"the split uses {ast.unparse(literal[1])}, the fixed fraction "
                                             f"{facts.valid_size:g}", sub.path.name)
        return _check(sub, "valid_size", literal[0], literal[1], False,
                      f"{name} is set but the train/validation split does not use it (here it uses "
                      f"{ast.unparse(literal[1])}); split with {name}")
    return Check("valid_size", True, f"{name} = {facts.valid_size:g} and the split uses it", sub.path.name)


_FUNCTIONAL_WEIGHT_OPS = frozenset({"linear", "bilinear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                                    "conv_transpose2d", "conv_transpose3d", "embedding", "embedding_bag"})


def _frozen_weight(node: ast.AST | None, facts: FrozenFacts) -> bool:
    """True for ``self.fc1.weight``-style arguments: F.linear applied with a frozen layer's own weight."""
    names = {layer.name.rsplit(".", 1)[-1] for layer in facts.linear_layers if layer.name}
    parts = (dotted(node) or "").split(".") if node is not None else []
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in names


def _added_weights(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check | None:
    """A violation for the first weight-carrying layer, raw nn.Parameter or functional weight op added."""
    aliases = import_aliases(cells)
    for parsed, node in walk_cells(cells):
        if not isinstance(node, ast.Call):
            continue
        name = resolve(dotted(node.func) or "", aliases)
        short = name.rsplit(".", 1)[-1]
        if name.startswith("torch.nn.functional."):
            weight = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "weight"), None)
            if short in _FUNCTIONAL_WEIGHT_OPS and not (short == "linear" and _frozen_weight(weight, facts)):
                return _check(sub, "linear_layers", parsed, node, False,
                              f"applies its own weights with F.{short}; only the three Linear layers may apply weights")
        elif name.startswith("torch.nn.") and short.startswith(_WEIGHT_LAYERS):
            return _check(sub, "linear_layers", parsed, node, False,
                          f"adds a {short} layer; only normalization, activation and dropout layers may be added")
        elif name in ("torch.nn.Parameter", "torch.nn.parameter.Parameter"):
            return _check(sub, "linear_layers", parsed, node, False,
                          "creates raw weights with nn.Parameter; the model may only use its three Linear layers")
    return None


def _by_model(cells: tuple[ParsedCell, ...], calls: list[tuple[ParsedCell, ast.Call]]) -> dict[str, list[tuple[ParsedCell, ast.Call]]]:
    """Linear calls grouped by the class that defines them ('' for code outside any class)."""
    owner: dict[int, str] = {}
    for _, cls in walk_cells(cells):
        if isinstance(cls, ast.ClassDef):
            for node in ast.walk(cls):
                owner[id(node)] = cls.name
    groups: dict[str, list[tuple[ParsedCell, ast.Call]]] = {}
    for parsed, call in calls:
        groups.setdefault(owner.get(id(call), ""), []).append((parsed, call))
    return groups


def _compare_group(sub: Submission, group: list[tuple[ParsedCell, ast.Call]], facts: FrozenFacts,
                   constants: dict[str, float]) -> Check:
    """ok, undecided or a violation for one model's Linear layers, compared as a multiset of sizes."""
    expected = Counter((layer.in_features, layer.out_features) for layer in facts.linear_layers)
    fixed = ", ".join(f"{i}->{o}" for i, o in expected.elements())
    remaining = expected.copy()
    for parsed, call in group:
        shape = linear_shape(call, constants)
        if None in shape:
            return _check(sub, "linear_layers", parsed, call, None, "a Linear layer's size is computed at run time; the run will check it")
        if remaining[shape] > 0:
            remaining[shape] -= 1
        elif len(group) <= sum(expected.values()):
            return _check(sub, "linear_layers", parsed, call, False, f"nn.Linear({shape[0]}, {shape[1]}) differs from the fixed {fixed}")
    if len(group) != sum(expected.values()):
        parsed, call = group[-1]
        return _check(sub, "linear_layers", parsed, call, False,
                      f"the model has {len(group)} nn.Linear layers; the homework fixes {sum(expected.values())}: {fixed}")
    return Check("linear_layers", True, f"the three Linear layers are unchanged ({fixed}) and no weight layer was added",
                 sub.path.name)


def check_layers(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    added = _added_weights(sub, cells, facts)
    if added is not None:
        return added
    calls = linear_calls(cells)
    if not calls:
        return _check(sub, "linear_layers", None, None, False, "no nn.Linear layer was found; the homework fixes three")
    in_loops = {id(n) for _, loop in walk_cells(cells)
                if isinstance(loop, (ast.For, ast.While, ast.ListComp, ast.GeneratorExp)) for n in ast.walk(loop)}
    loop_built = [(p, c) for p, c in calls if id(c) in in_loops]
    if loop_built:
        parsed, call = loop_built[0]
        return _check(sub, "linear_layers", parsed, call, None, "Linear layers are built in a loop; the run will check them")
    constants = top_level_constants(cells)
    verdicts = [_compare_group(sub, group, facts, constants) for group in _by_model(cells, calls).values()]
    if all(v.ok for v in verdicts):
        return verdicts[0]
    if len(verdicts) > 1 and any(v.ok for v in verdicts):
        return Check("linear_layers", None, "several model classes are defined and not all keep the three Linear layers; "
                     "the run checks the one that is trained", sub.path.name)
    return next(v for v in verdicts if not v.ok)


_RULES: dict[str, Callable[[Submission, tuple[ParsedCell, ...], FrozenFacts], Check]] = {
    "epochs": check_epochs,
    "valid_size": check_valid_size,
    "linear_layers": check_layers,
}


def check_static(sub: Submission, facts: FrozenFacts, rubric: Rubric) -> StaticReport:
    """Every frozen rule of the rubric, checked on the code as written.

    A cell that does not parse comes first, and while one does, no rule is called violated (left
    to the run instead): code that could not be read is no evidence that a rule was kept or broken.
    """
    cells = parse_cells(sub)
    checks = [_RULES[rule](sub, cells, facts) for rule in rubric.frozen]
    unreadable = [parsed for parsed in cells if parsed.error]
    broken = [Check("syntax", None, f"{sub.where(parsed.cell)}: not valid Python ({parsed.error}); fix it first: "
                                    "that cell was not checked", sub.path.name,
                    parsed.cell.number if sub.path.suffix == ".ipynb" else None, parsed.cell.first_line)
              for parsed in unreadable]
    if unreadable:
        where = sub.where(unreadable[0].cell)
        checks = [replace(c, ok=None, message=f"undecided while {where} does not parse (the run will check it); "
                                              f"statically: {c.message}")
                  if c.violated else c for c in checks]
    tampering = static_evidence(sub, cells)
    return StaticReport(tuple(broken + checks), tampering.evidence, tampering.signs)
