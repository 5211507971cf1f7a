"""The linear_layers rule: the model keeps exactly the template's three Linear layers.

Static half: the nn.Linear calls of each model class, compared with the template's sizes, and no
other layer, raw parameter or functional op that applies weights. Run-time half: the trained
model's modules that own parameters and the weight ops of one real forward pass (probe facts:
architecture, traced in the kernel on the model found by ownership), unless the trusted side ran
the captured graph: then the named checks of linear_graph.py judge that graph. The product ops are
the evaluator's (grader/evaluator/ops.py ``PRODUCTS``), in both halves.
"""

from __future__ import annotations

import ast
from collections import Counter
from typing import TYPE_CHECKING

from grader.evaluator.ops import PRODUCTS
from grader.model.findings import RuleId
from grader.model.results import Check
from grader.model.rubric import FrozenFacts
from grader.model.submission import Submission
from grader.static.pyast import (
    ParsedCell,
    dotted,
    import_aliases,
    resolve,
    top_level_constants,
    walk_cells,
)
from grader.static.reference import linear_calls, linear_shape
from grader.static.rules.common import RunView, run_check, static_check
from grader.static.rules.linear_graph import graph_check

if TYPE_CHECKING:
    from grader.model.probe_facts import Op
    from grader.model.rubric import Rubric

RULE = RuleId.LINEAR_LAYERS
# Shown beside a violation: what the student may change instead.
INSTEAD = (
    "keep the three nn.Linear layers as they are; "
    "you may add normalization, dropout and activation layers between them and change the "
    "weight init"
)

# Layers that carry weights and are not allowed as additions (prefixes of torch.nn class names).
_WEIGHT_LAYERS = (
    "Conv",
    "LazyConv",
    "LazyLinear",
    "Bilinear",
    "RNN",
    "LSTM",
    "GRU",
    "Embedding",
    "MultiheadAttention",
    "Transformer",
)


_FUNCTIONAL_WEIGHT_OPS = frozenset(
    {
        "linear",
        "bilinear",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "embedding",
        "embedding_bag",
    }
)


def _frozen_weight(node: ast.AST | None, facts: FrozenFacts) -> bool:
    """True for ``self.fc1.weight``-style arguments: F.linear applied with a frozen layer's own
    weight."""
    names = {layer.name.rsplit(".", 1)[-1] for layer in facts.linear_layers if layer.name}
    parts = (dotted(node) or "").split(".") if node is not None else []
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in names


def _class_owners(cells: tuple[ParsedCell, ...]) -> dict[int, str]:
    """id(node) -> the name of the class whose body holds it."""
    owner: dict[int, str] = {}
    for _, cls in walk_cells(cells):
        if isinstance(cls, ast.ClassDef):
            for node in ast.walk(cls):
                owner[id(node)] = cls.name
    return owner


def _added_weights(
    sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts
) -> tuple[Check | None, Check | None]:
    """(a violation for the first weight-carrying layer, raw nn.Parameter or functional weight op
    added,
    an undecided check for one that only a class never instantiated holds: the run decides)."""
    aliases = import_aliases(cells)
    owners = _class_owners(cells)
    called = {dotted(n.func) for _, n in walk_cells(cells) if isinstance(n, ast.Call)}
    unused: Check | None = None
    for parsed, node in walk_cells(cells):
        if not isinstance(node, ast.Call):
            continue
        name = resolve(dotted(node.func) or "", aliases)
        short = name.rsplit(".", 1)[-1]
        message = None
        if name.startswith("torch.nn.functional."):
            weight = (
                node.args[1]
                if len(node.args) > 1
                else next((k.value for k in node.keywords if k.arg == "weight"), None)
            )
            if short in _FUNCTIONAL_WEIGHT_OPS and not (
                short == "linear" and _frozen_weight(weight, facts)
            ):
                message = (
                    f"applies its own weights with F.{short}; only the three Linear layers "
                    "may apply weights"
                )
        elif name.startswith("torch.nn.") and short.startswith(_WEIGHT_LAYERS):
            message = (
                f"adds a {short} layer; only normalization, activation and dropout layers "
                "may be added"
            )
        elif name in ("torch.nn.Parameter", "torch.nn.parameter.Parameter"):
            message = (
                "creates raw weights with nn.Parameter; the model may only use its three "
                "Linear layers"
            )
        if message is None:
            continue
        cls = owners.get(id(node))
        if cls is None or cls in called:
            return static_check(sub, RULE, parsed, node, False, message), None
        if unused is None:
            unused = static_check(
                sub,
                RULE,
                parsed,
                node,
                None,
                f"class {cls} {message.split(';')[0]}, but it is never "
                "instantiated; the run checks the model that is trained",
            )
    return None, unused


def _by_model(
    cells: tuple[ParsedCell, ...], calls: list[tuple[ParsedCell, ast.Call]]
) -> dict[str, list[tuple[ParsedCell, ast.Call]]]:
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


def _compare_group(
    sub: Submission,
    group: list[tuple[ParsedCell, ast.Call]],
    facts: FrozenFacts,
    constants: dict[str, float],
) -> Check:
    """ok, undecided or a violation for one model's Linear layers, compared as a multiset of
    sizes."""
    expected = Counter((layer.in_features, layer.out_features) for layer in facts.linear_layers)
    fixed = ", ".join(f"{i}->{o}" for i, o in expected.elements())
    remaining = expected.copy()
    for parsed, call in group:
        shape = linear_shape(call, constants)
        if None in shape:
            return static_check(
                sub,
                RULE,
                parsed,
                call,
                None,
                "a Linear layer's size is computed at run time; the run will check it",
            )
        if remaining[shape] > 0:
            remaining[shape] -= 1
        elif len(group) <= sum(expected.values()):
            return static_check(
                sub,
                RULE,
                parsed,
                call,
                False,
                f"nn.Linear({shape[0]}, {shape[1]}) differs from the fixed {fixed}",
            )
    if len(group) != sum(expected.values()):
        parsed, call = group[-1]
        return static_check(
            sub,
            RULE,
            parsed,
            call,
            False,
            f"the model has {len(group)} nn.Linear layers; the homework fixes "
            f"{sum(expected.values())}: {fixed}",
        )
    return Check(
        RULE,
        True,
        f"the three Linear layers are unchanged ({fixed}) and no weight layer was added",
        sub.path.name,
    )


def static(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    added, unused = _added_weights(sub, cells, facts)
    if added is not None:
        return added
    verdict = _linear_verdict(sub, cells, facts)
    return unused if unused is not None and verdict.ok else verdict


def _linear_verdict(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    calls = linear_calls(cells)
    if not calls:
        return static_check(
            sub, RULE, None, None, False, "no nn.Linear layer was found; the homework fixes three"
        )
    in_loops = {
        id(n)
        for _, loop in walk_cells(cells)
        if isinstance(loop, (ast.For, ast.While, ast.ListComp, ast.GeneratorExp))
        for n in ast.walk(loop)
    }
    loop_built = [(p, c) for p, c in calls if id(c) in in_loops]
    if loop_built:
        parsed, call = loop_built[0]
        return static_check(
            sub,
            RULE,
            parsed,
            call,
            None,
            "Linear layers are built in a loop; the run will check them",
        )
    constants = top_level_constants(cells)
    verdicts = [
        _compare_group(sub, group, facts, constants) for group in _by_model(cells, calls).values()
    ]
    if all(v.ok for v in verdicts):
        return verdicts[0]
    if len(verdicts) > 1 and any(v.ok for v in verdicts):
        return Check(
            RULE,
            None,
            "several model classes are defined and not all keep the three Linear layers; "
            "the run checks the one that is trained",
            sub.path.name,
        )
    return next(v for v in verdicts if not v.ok)


def _weight_shape(op: Op) -> tuple[int, int] | None:
    """(in_features, out_features) of the weight operand of a product op (its last operand, but
    linear's second); None where there is none: a product by a vector (mv, addmv) applies no
    Linear layer to rows."""
    shapes = [s for s in op.shapes if len(s) >= 2]
    if not shapes:
        return None
    if op.name == "linear":
        out_features, in_features = shapes[1][-2:] if len(shapes) > 1 else (None, None)
        return (
            (in_features, out_features)
            if in_features is not None and out_features is not None
            else None
        )
    if len(op.shapes[-1]) < 2:
        return None
    in_features, out_features = shapes[-1][-2:]
    return in_features, out_features


def _graph_check(run: RunView, facts: FrozenFacts, rubric: Rubric) -> Check | None:
    """The rule on the graph the trusted side ran (what made the graded predictions): the named
    checks of linear_graph.py, in order; None without a graph."""
    return graph_check(run.recomputed, facts)


def runtime(run: RunView, facts: FrozenFacts, rubric: Rubric) -> Check:
    graph = _graph_check(run, facts, rubric)
    if graph is not None:
        return graph
    architecture = run.record.architecture
    owners = architecture.owners if architecture is not None else None
    if architecture is None or owners is None:
        return run_check(RULE, None, "the trained model was not found; its layers were not checked")
    frozen = Counter((layer.in_features, layer.out_features) for layer in facts.linear_layers)
    fixed = ", ".join(f"{i}->{o}" for i, o in frozen.elements())
    # Judged by the weights' shapes, never by a class name (a traced copy's layers are
    # TracedModules).
    linear: Counter[tuple[int, int]] = Counter()
    unknown: list[str] = []
    for owner in owners:
        kind, name, shapes = owner.type, owner.module, owner.shapes
        dims = [len(shape) for shape in shapes]
        if any(d > 2 for d in dims):
            return run_check(
                RULE,
                False,
                f"the trained model holds weights in {name} ({kind}) of shape "
                f"{list(shapes[dims.index(max(dims))])}; only the Linear "
                "layers and normalization layers may",
            )
        linear.update((shape[1], shape[0]) for shape in shapes if len(shape) == 2)
        if 2 not in dims and kind != "Linear" and kind not in rubric.allowed_layers:
            unknown.append(f"{name} ({kind})")
    if linear != frozen:
        found = ", ".join(f"{i}->{o}" for i, o in linear.elements()) or "none"
        return run_check(
            RULE,
            False,
            f"the trained model's Linear layers are {found}; the homework fixes {fixed}",
        )
    ops = architecture.ops
    if ops is None:
        return run_check(
            RULE,
            None,
            f"the Linear layers are {fixed}, but the forward pass could not be traced "
            f"({architecture.error})",
        )
    products: Counter[tuple[int, int] | None] = Counter()
    for op in ops:
        if op.name not in PRODUCTS:
            return run_check(
                RULE,
                False,
                f"the forward pass applies {op.name}; only the three "
                "Linear layers may apply weights",
            )
        products[_weight_shape(op)] += 1
    if products != frozen:
        found = (
            ", ".join("?" if s is None else f"{s[0]}->{s[1]}" for s in products.elements())
            or "none"
        )
        return run_check(
            RULE,
            False,
            f"the forward pass multiplies by weights of {found}; the homework fixes {fixed}",
        )
    if unknown:
        return run_check(
            RULE,
            None,
            f"the forward pass uses exactly the Linear layers {fixed}, beside parameters "
            f"in {', '.join(unknown[:3])}, not a layer kind the rubric lists",
        )
    return run_check(
        RULE, True, f"the trained model's forward pass uses exactly the Linear layers {fixed}"
    )
