"""The frozen-layers rule (``linear_layers``, HW3's name, or ``weight_layers``: one rule under
either name): the model keeps exactly the weight layers the template builds (nn.Linear, nn.Conv1d,
nn.Conv2d, compared as static/layers.py ``Spec``s: sizes, channels, kernel, stride, padding,
dilation, groups), and adds none.

Static half: the weight-layer calls of each model class, compared with the template's, and no
other layer, raw parameter or functional op that applies weights. Run-time half: the trained
model's modules that own parameters and the weight ops of one real forward pass (probe facts:
architecture, traced in the kernel on the model found by ownership), unless the trusted side ran
the captured graph: then the named checks of linear_graph.py judge that graph. The product ops are
the evaluator's (grader/evaluator/ops.py ``PRODUCTS``, and ``CONVOLUTIONS`` for a template with
conv layers), in both halves. For a template of Linear layers only (HW3) every message reads as
it always did ("the three Linear layers").
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from grader.evaluator.ops import CONVOLUTIONS, PRODUCTS
from grader.model.findings import RuleId
from grader.model.results import Check
from grader.model.rubric import FrozenFacts, WeightLayer
from grader.model.submission import Submission
from grader.static.layers import LINEAR, Spec, WeightKey, key_text, number, spec
from grader.static.pyast import (
    ParsedCell,
    dotted,
    import_aliases,
    resolve,
    top_level_constants,
    walk_cells,
)
from grader.static.reference import arg_value, weight_calls, weight_layer
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
WEIGHT_INSTEAD = (
    "keep the template's weight layers as they are (sizes, channels, kernel, stride, padding); "
    "you may add normalization, dropout and activation layers between them and change the "
    "weight init"
)

# Layers that carry weights and are not allowed as additions (prefixes of torch.nn class names);
# a kind the template builds is counted instead (Linear: added only where the template has none).
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
# F.linear / F.conv1d / F.conv2d applied with a frozen layer's own weight apply that layer.
_FUNCTIONAL_KIND = {"linear": LINEAR, "conv1d": "Conv1d", "conv2d": "Conv2d"}


def as_weight_layers(check: Check) -> Check:
    """A verdict of this rule under the name ``weight_layers`` (the rubric names the rule)."""
    return replace(check, id=RuleId.WEIGHT_LAYERS.value)


def weight_static(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    return as_weight_layers(static(sub, cells, facts))


def weight_runtime(run: RunView, facts: FrozenFacts, rubric: Rubric) -> Check:
    return as_weight_layers(runtime(run, facts, rubric))


def frozen_specs(facts: FrozenFacts) -> tuple[Spec, ...]:
    """The template's weight layers as the rule compares them."""
    return tuple(spec(layer) for layer in facts.weight_layers)


def _linear_only(specs: tuple[Spec, ...]) -> bool:
    return all(s.kind == LINEAR for s in specs)


def _the_layers(specs: tuple[Spec, ...], article: str = "the") -> str:
    """'the three Linear layers' (HW3's words), else "the template's weight layers"."""
    if _linear_only(specs):
        return f"{article} {number(len(specs))} Linear layer{'s' if len(specs) != 1 else ''}"
    return "the template's weight layers"


def _kinds(specs: tuple[Spec, ...]) -> str:
    return "Linear layers" if _linear_only(specs) else "weight layers"


def _fixed(specs: tuple[Spec, ...] | list[Spec]) -> str:
    """784->512, 512->256, 256->10; Conv2d(1, 32, kernel_size=3), ... (equal layers together)."""
    return ", ".join(Counter(s.text for s in specs).elements())


def _unknown(specs: tuple[Spec, ...]) -> str | None:
    """Why the template's layers cannot be compared (an argument that is no constant), or None."""
    for s in specs:
        if not s.known:
            return (
                f"the template's {s.name or 'layer'} {s.text} has an argument that is no "
                "constant; its weight layers cannot be compared"
            )
    return None


def _frozen_layer(node: ast.AST | None, specs: tuple[Spec, ...], kind: str | None) -> Spec | None:
    """The template's layer whose own weight ``node`` is (``self.fc1.weight``: F.linear, F.conv2d
    applied with a frozen layer's weight), or None."""
    parts = (dotted(node) or "").split(".") if node is not None else []
    if len(parts) < 2 or parts[-1] != "weight":
        return None
    return next(
        (s for s in specs if s.kind == kind and s.name and s.name.split(".")[-1] == parts[-2]),
        None,
    )


# F.conv1d / F.conv2d's arguments after (input, weight, bias): a layer's, by the same names.
_FUNCTIONAL_CONV = ("stride", "padding", "dilation", "groups")


def _run_as(call: ast.Call, layer: Spec, constants: dict[str, float]) -> Spec | None:
    """The layer F.conv2d(x, self.conv1.weight, self.conv1.bias, stride=2) applies: conv1's
    channels and kernel with the call's own stride, padding, dilation and groups (torch's defaults
    where it passes none); None where one is no constant."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    ):
        return None
    given = [(n, a) for n, a in zip(_FUNCTIONAL_CONV, call.args[3:])] + [
        (k.arg, k.value) for k in call.keywords if k.arg in _FUNCTIONAL_CONV
    ]
    kept = tuple((n, v) for n, v in layer.values if n not in _FUNCTIONAL_CONV)
    ran = spec(
        WeightLayer(
            kind=layer.kind,
            name=layer.name,
            args=kept + tuple((n, arg_value(a, constants)) for n, a in given if n is not None),
        )
    )
    return ran if ran.known else None


def _class_owners(cells: tuple[ParsedCell, ...]) -> dict[int, str]:
    """id(node) -> the name of the class whose body holds it."""
    owner: dict[int, str] = {}
    for _, cls in walk_cells(cells):
        if isinstance(cls, ast.ClassDef):
            for node in ast.walk(cls):
                owner[id(node)] = cls.name
    return owner


def _added_weights(
    sub: Submission, cells: tuple[ParsedCell, ...], specs: tuple[Spec, ...]
) -> tuple[Check | None, Check | None]:
    """(a violation for the first weight-carrying layer, raw nn.Parameter or functional weight op
    added, or a frozen layer's weight applied by F.conv2d as another layer; an undecided check for
    one that only a class never instantiated holds, or for a frozen layer's arguments set or
    passed at run time: the run decides)."""
    aliases = import_aliases(cells)
    owners = _class_owners(cells)
    called = {dotted(n.func) for _, n in walk_cells(cells) if isinstance(n, ast.Call)}
    constants = top_level_constants(cells)
    kinds = {s.kind for s in specs}
    convs = {s.name.split(".")[-1] for s in specs if s.name and s.kind != LINEAR}
    unused: Check | None = None
    for parsed, node in walk_cells(cells):
        message, undecided = None, None
        if (changed := _changed_argument(node, convs)) is not None:
            undecided = (
                f"sets {changed} after the layer is built; the run checks the layer it makes"
            )
        name = resolve(dotted(node.func) or "", aliases) if isinstance(node, ast.Call) else ""
        short = name.rsplit(".", 1)[-1]
        if (
            isinstance(node, ast.Call)
            and name.startswith("torch.nn.functional.")
            and short in _FUNCTIONAL_WEIGHT_OPS
        ):
            message, undecided = _functional(node, short, specs, constants)
        elif (
            name.startswith("torch.nn.")
            and (short.startswith(_WEIGHT_LAYERS) or short == LINEAR)
            and short not in kinds
        ):
            message = (
                f"adds a {short} layer; only normalization, activation and dropout layers "
                "may be added"
            )
        elif name in ("torch.nn.Parameter", "torch.nn.parameter.Parameter"):
            message = (
                "creates raw weights with nn.Parameter; the model may only use "
                f"{_the_layers(specs, 'its')}"
            )
        if undecided is not None and unused is None:
            unused = static_check(sub, RULE, parsed, node, None, undecided)
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


def _functional(
    call: ast.Call, short: str, specs: tuple[Spec, ...], constants: dict[str, float]
) -> tuple[str | None, str | None]:
    """(a violation's message, an undecided one) for F.linear, F.conv2d, ... ``short``: its own
    weights applied, or a frozen layer's weight applied as another layer; the layer's arguments
    passed from values computed at run time are the run's to judge."""
    weight = (
        call.args[1]
        if len(call.args) > 1
        else next((k.value for k in call.keywords if k.arg == "weight"), None)
    )
    layer = _frozen_layer(weight, specs, _FUNCTIONAL_KIND.get(short))
    if layer is None:
        return (
            f"applies its own weights with F.{short}; only {_the_layers(specs)} may apply weights",
            None,
        )
    if layer.kind == LINEAR:
        return None, None
    ran = _run_as(call, layer, constants)
    if ran is None:
        return None, (
            f"F.{short} applies {layer.name}'s weight with a stride, padding, dilation or groups "
            "computed at run time; the run checks it"
        )
    if ran.values != layer.values:
        return (
            f"F.{short} applies {layer.name}'s weight as nn.{ran.text}; the template's layer is "
            f"nn.{layer.text}: {ran.changes(layer)}",
            None,
        )
    return None, None


# A conv layer's attributes that make it another layer when set after it is built.
_LAYER_ATTRIBUTES = frozenset({*_FUNCTIONAL_CONV, "kernel_size", "in_channels", "out_channels"})


def _changed_argument(node: ast.AST, convs: set[str]) -> str | None:
    """``self.conv1.stride`` for ``self.conv1.stride = (2, 2)`` (or setattr(self.conv1, 'stride',
    ...)) on a template's conv layer (``convs``: their attribute names), else None."""
    targets: list[ast.AST] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    for target in targets:
        parts = (dotted(target) or "").split(".")
        if len(parts) >= 2 and parts[-1] in _LAYER_ATTRIBUTES and parts[-2] in convs:
            return ".".join(parts)
    if (
        isinstance(node, ast.Call)
        and dotted(node.func) == "setattr"
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and node.args[1].value in _LAYER_ATTRIBUTES
        and (dotted(node.args[0]) or "").split(".")[-1] in convs
    ):
        return f"{dotted(node.args[0])}.{node.args[1].value}"
    return None


Call = tuple[ParsedCell, ast.Call, Spec]


def _by_model(cells: tuple[ParsedCell, ...], calls: list[Call]) -> dict[str, list[Call]]:
    """Weight-layer calls grouped by the class that defines them ('' for code outside any
    class)."""
    owner = _class_owners(cells)
    groups: dict[str, list[Call]] = {}
    for call in calls:
        groups.setdefault(owner.get(id(call[1]), ""), []).append(call)
    return groups


def _counterpart(mine: Spec, specs: tuple[Spec, ...], remaining: Counter[object]) -> Spec:
    """The template's layer ``mine`` stands for: of its kind, not yet matched where one is left,
    the one it differs from least (the one of its name first)."""
    same = [s for s in specs if s.kind == mine.kind]
    left = [s for s in same if remaining[(s.kind, s.values)] > 0] or same
    return min(left, key=lambda s: (len(mine.differences(s)), s.name != mine.name))


def _differs(mine: Spec, specs: tuple[Spec, ...], remaining: Counter[object]) -> str:
    same = [s for s in specs if s.kind == mine.kind]
    if mine.kind == LINEAR:
        i, o = mine.value("in_features"), mine.value("out_features")
        return f"nn.Linear({i}, {o}) differs from the fixed {_fixed(same)}"
    template = _counterpart(mine, specs, remaining)
    return (
        f"{mine.name or 'a layer'} = nn.{mine.text} differs from the template's "
        f"{template.name or 'layer'} nn.{template.text}: {mine.changes(template)}"
    )


def _compare_group(sub: Submission, group: list[Call], specs: tuple[Spec, ...]) -> Check:
    """ok, undecided or a violation for one model's weight layers, compared as a multiset of
    layers, kind by kind."""
    expected = Counter((s.kind, s.values) for s in specs)
    wanted = Counter(s.kind for s in specs)
    built = Counter(mine.kind for _, _, mine in group)
    remaining: Counter[object] = Counter(expected)
    extra: list[Call] = []  # layers matching none of the template's (more than it has)
    for parsed, call, mine in group:
        if not mine.known:
            what = "a Linear layer's size" if mine.kind == LINEAR else f"a {mine.kind}'s arguments"
            message = f"{what} {'is' if mine.kind == LINEAR else 'are'} computed at run time"
            return static_check(sub, RULE, parsed, call, None, f"{message}; the run will check it")
        if remaining[(mine.kind, mine.values)] > 0:
            remaining[(mine.kind, mine.values)] -= 1
        elif built[mine.kind] <= wanted[mine.kind]:
            return static_check(sub, RULE, parsed, call, False, _differs(mine, specs, remaining))
        else:
            extra.append((parsed, call, mine))
    for kind in dict.fromkeys([*wanted, *built]):
        if built[kind] != wanted[kind]:
            parsed, call, _ = next((c for c in reversed(group) if c[2].kind == kind), group[-1])
            same = [s for s in specs if s.kind == kind]
            added = next((c for c in extra if c[2].kind == kind), None)
            if added is not None and kind != LINEAR:
                parsed, call, mine = added
                return static_check(
                    sub,
                    RULE,
                    parsed,
                    call,
                    False,
                    f"{mine.name or 'a layer'} = nn.{mine.text} is one nn.{kind} more than the "
                    f"template's {wanted[kind]}: {_fixed(same)}",
                )
            return static_check(
                sub,
                RULE,
                parsed,
                call,
                False,
                f"the model has {built[kind]} nn.{kind} layers; the homework fixes "
                f"{wanted[kind]}: {_fixed(same)}",
            )
    return Check(
        RULE,
        True,
        f"{_the_layers(specs)} are unchanged ({_fixed(specs)}) and no weight layer was added",
        sub.path.name,
    )


def static(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    specs = frozen_specs(facts)
    unknown = _unknown(specs)
    if unknown is not None:
        return static_check(sub, RULE, None, None, None, unknown)
    added, unused = _added_weights(sub, cells, specs)
    if added is not None:
        return added
    verdict = _layers_verdict(sub, cells, specs)
    return unused if unused is not None and verdict.ok else verdict


def _layers_verdict(
    sub: Submission, cells: tuple[ParsedCell, ...], specs: tuple[Spec, ...]
) -> Check:
    kinds = {s.kind for s in specs}
    constants = top_level_constants(cells)
    calls = [
        (parsed, call, spec(weight_layer(parsed, call, kind, constants)))
        for parsed, call, kind in weight_calls(cells)
        if kind in kinds
    ]
    if not calls:
        fixes = number(len(specs)) if _linear_only(specs) else _fixed(specs)
        found = "nn.Linear layer" if _linear_only(specs) else "weight layer"
        return static_check(
            sub, RULE, None, None, False, f"no {found} was found; the homework fixes {fixes}"
        )
    in_loops = {
        id(n)
        for _, loop in walk_cells(cells)
        if isinstance(loop, (ast.For, ast.While, ast.ListComp, ast.GeneratorExp))
        for n in ast.walk(loop)
    }
    loop_built = [(p, c) for p, c, _ in calls if id(c) in in_loops]
    if loop_built:
        parsed, call = loop_built[0]
        return static_check(
            sub,
            RULE,
            parsed,
            call,
            None,
            f"{_kinds(specs)} are built in a loop; the run will check them",
        )
    verdicts = [_compare_group(sub, group, specs) for group in _by_model(cells, calls).values()]
    if all(v.ok for v in verdicts):
        return verdicts[0]
    if len(verdicts) > 1 and any(v.ok for v in verdicts):
        return Check(
            RULE,
            None,
            f"several model classes are defined and not all keep {_the_layers(specs)}; "
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


def _conv_key(op: Op) -> WeightKey | None:
    """The weight shape of a convolution (its operands: input, weight, bias), None without one."""
    weight = op.shapes[1] if len(op.shapes) > 1 else ()
    return tuple(weight) if len(weight) >= 3 else None


def _graph_check(run: RunView, facts: FrozenFacts, rubric: Rubric) -> Check | None:
    """The rule on the graph the trusted side ran (what made the graded predictions): the named
    checks of linear_graph.py, in order; None without a graph."""
    return graph_check(run.recomputed, facts)


def runtime(run: RunView, facts: FrozenFacts, rubric: Rubric) -> Check:
    specs = frozen_specs(facts)
    unknown = _unknown(specs)
    if unknown is not None:
        return run_check(RULE, None, unknown)
    graph = _graph_check(run, facts, rubric)
    if graph is not None:
        return graph
    architecture = run.record.architecture
    owners = architecture.owners if architecture is not None else None
    if architecture is None or owners is None:
        return run_check(RULE, None, "the trained model was not found; its layers were not checked")
    frozen: Counter[WeightKey | None] = Counter(s.key for s in specs)
    fixed = ", ".join(key_text(k) for k in frozen.elements())
    noun, layers = _kinds(specs), _the_layers(specs)
    kinds = {s.kind for s in specs}
    # Judged by the weights' shapes, never by a class name (a traced copy's layers are
    # TracedModules).
    held: Counter[WeightKey | None] = Counter()
    unknown_owners: list[str] = []
    for owner in owners:
        kind, name, shapes = owner.type, owner.module, owner.shapes
        if kind in rubric.allowed_layers and kind not in kinds:
            # a layer kind the rubric allows (LayerNorm([16, 28, 28]) holds maps' weights); its
            # ops are still counted below: a weight it applied is a product of another shape
            continue
        dims = [len(shape) for shape in shapes]
        odd = [s for s in shapes if len(s) > 2 and tuple(s) not in frozen]
        if odd:
            widest = max(odd, key=lambda shape: len(shape))
            return run_check(
                RULE,
                False,
                f"the trained model holds weights in {name} ({kind}) of shape "
                f"{list(widest)}; only the {noun} and normalization layers may",
            )
        held.update(
            (shape[1], shape[0]) if len(shape) == 2 else tuple(shape)
            for shape in shapes
            if len(shape) >= 2
        )
        if (
            not any(d >= 2 for d in dims)
            and kind not in kinds
            and kind not in rubric.allowed_layers
        ):
            unknown_owners.append(f"{name} ({kind})")
    if held != frozen:
        found = ", ".join(key_text(k) for k in held.elements()) or "none"
        return run_check(
            RULE,
            False,
            f"the trained model's {noun} are {found}; the homework fixes {fixed}",
        )
    ops = architecture.ops
    if ops is None:
        return run_check(
            RULE,
            None,
            f"the {noun} are {fixed}, but the forward pass could not be traced "
            f"({architecture.error})",
        )
    convolutions = CONVOLUTIONS if kinds - {LINEAR} else frozenset()
    products: Counter[WeightKey | None] = Counter()
    for op in ops:
        if op.name in convolutions:
            products[_conv_key(op)] += 1
        elif op.name in PRODUCTS:
            products[_weight_shape(op)] += 1
        else:
            return run_check(
                RULE,
                False,
                f"the forward pass applies {op.name}; only {layers} may apply weights",
            )
    if products != frozen:
        found = ", ".join(key_text(k) for k in products.elements()) or "none"
        return run_check(
            RULE,
            False,
            f"the forward pass multiplies by weights of {found}; the homework fixes {fixed}",
        )
    if unknown_owners:
        return run_check(
            RULE,
            None,
            f"the forward pass uses exactly the {noun} {fixed}, beside parameters "
            f"in {', '.join(unknown_owners[:3])}, not a layer kind the rubric lists",
        )
    if convolutions:
        return run_check(
            RULE,
            None,
            f"the trained model's forward pass uses weights of exactly the {noun} {fixed}; how "
            "its convolutions ran (stride, padding, dilation) is read only on the captured "
            "graph, and there is none",
        )
    return run_check(
        RULE, True, f"the trained model's forward pass uses exactly the {noun} {fixed}"
    )
