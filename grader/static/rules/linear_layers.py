"""The linear_layers rule: the model keeps exactly the template's three Linear layers.

Static half: the nn.Linear calls of each model class, compared with the template's sizes, and no
other layer, raw parameter or functional op that applies weights. Run-time half: the trained
model's modules that own parameters and the weight ops of one real forward pass (probe facts:
architecture, traced in the kernel on the model found by ownership).
"""

from __future__ import annotations

import ast
from collections import Counter
from typing import TYPE_CHECKING, Any

from grader.model.findings import RuleId
from grader.static.pyast import ParsedCell, dotted, import_aliases, resolve, top_level_constants, walk_cells
from grader.model.rubric import FrozenFacts
from grader.static.reference import linear_calls, linear_shape
from grader.model.results import Check
from grader.static.rules.common import RunView, run_check, static_check
from grader.model.submission import Submission

if TYPE_CHECKING:
    from grader.judge.recompute import GraphFacts
    from grader.model.probe_facts import Op
    from grader.model.rubric import Rubric

RULE = RuleId.LINEAR_LAYERS
# Shown beside a violation: what the student may change instead.
INSTEAD = ("keep the three nn.Linear layers as they are; "
           "you may add normalization, dropout and activation layers between them and change the weight init")
_MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "linear"}

# Layers that carry weights and are not allowed as additions (prefixes of torch.nn class names).
_WEIGHT_LAYERS = ("Conv", "LazyConv", "LazyLinear", "Bilinear", "RNN", "LSTM", "GRU", "Embedding",
                  "MultiheadAttention", "Transformer")


_FUNCTIONAL_WEIGHT_OPS = frozenset({"linear", "bilinear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                                    "conv_transpose2d", "conv_transpose3d", "embedding", "embedding_bag"})


def _frozen_weight(node: ast.AST | None, facts: FrozenFacts) -> bool:
    """True for ``self.fc1.weight``-style arguments: F.linear applied with a frozen layer's own weight."""
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


def _added_weights(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> tuple[Check | None, Check | None]:
    """(a violation for the first weight-carrying layer, raw nn.Parameter or functional weight op added,
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
            weight = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "weight"), None)
            if short in _FUNCTIONAL_WEIGHT_OPS and not (short == "linear" and _frozen_weight(weight, facts)):
                message = f"applies its own weights with F.{short}; only the three Linear layers may apply weights"
        elif name.startswith("torch.nn.") and short.startswith(_WEIGHT_LAYERS):
            message = f"adds a {short} layer; only normalization, activation and dropout layers may be added"
        elif name in ("torch.nn.Parameter", "torch.nn.parameter.Parameter"):
            message = "creates raw weights with nn.Parameter; the model may only use its three Linear layers"
        if message is None:
            continue
        cls = owners.get(id(node))
        if cls is None or cls in called:
            return static_check(sub, RULE, parsed, node, False, message), None
        if unused is None:
            unused = static_check(sub, RULE, parsed, node, None,
                                  f"class {cls} {message.split(';')[0]}, but it is never instantiated; "
                                  "the run checks the model that is trained")
    return None, unused


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
            return static_check(sub, RULE, parsed, call, None, "a Linear layer's size is computed at run time; the run will check it")
        if remaining[shape] > 0:
            remaining[shape] -= 1
        elif len(group) <= sum(expected.values()):
            return static_check(sub, RULE, parsed, call, False, f"nn.Linear({shape[0]}, {shape[1]}) differs from the fixed {fixed}")
    if len(group) != sum(expected.values()):
        parsed, call = group[-1]
        return static_check(sub, RULE, parsed, call, False,
                      f"the model has {len(group)} nn.Linear layers; the homework fixes {sum(expected.values())}: {fixed}")
    return Check(RULE, True, f"the three Linear layers are unchanged ({fixed}) and no weight layer was added",
                 sub.path.name)


def static(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    added, unused = _added_weights(sub, cells, facts)
    if added is not None:
        return added
    verdict = _linear_verdict(sub, cells, facts)
    return unused if unused is not None and verdict.ok else verdict


def _linear_verdict(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    calls = linear_calls(cells)
    if not calls:
        return static_check(sub, RULE, None, None, False, "no nn.Linear layer was found; the homework fixes three")
    in_loops = {id(n) for _, loop in walk_cells(cells)
                if isinstance(loop, (ast.For, ast.While, ast.ListComp, ast.GeneratorExp)) for n in ast.walk(loop)}
    loop_built = [(p, c) for p, c in calls if id(c) in in_loops]
    if loop_built:
        parsed, call = loop_built[0]
        return static_check(sub, RULE, parsed, call, None, "Linear layers are built in a loop; the run will check them")
    constants = top_level_constants(cells)
    verdicts = [_compare_group(sub, group, facts, constants) for group in _by_model(cells, calls).values()]
    if all(v.ok for v in verdicts):
        return verdicts[0]
    if len(verdicts) > 1 and any(v.ok for v in verdicts):
        return Check(RULE, None, "several model classes are defined and not all keep the three Linear layers; "
                     "the run checks the one that is trained", sub.path.name)
    return next(v for v in verdicts if not v.ok)


def _weight_shape(op: Op) -> tuple[int, int] | None:
    """(in_features, out_features) of the weight operand of a matrix-product op."""
    shapes = op.shapes  # those of two dimensions or more
    if not shapes:
        return None
    if op.name == "linear":
        out_features, in_features = shapes[1][-2:] if len(shapes) > 1 else (None, None)
        return (in_features, out_features) if in_features is not None and out_features is not None else None
    in_features, out_features = shapes[-1][-2:]
    return in_features, out_features


# The captured graph's ops (aten names, without overload), by what they may do.
PRODUCTS = frozenset({"linear", "addmm", "mm", "matmul", "bmm", "baddbmm", "addmv", "mv"})
SHAPING = frozenset({"view", "reshape", "_unsafe_view", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "t",
                     "contiguous", "clone", "_to_copy", "to", "expand", "detach", "alias", "lift_fresh_copy",
                     "numpy_T", "select", "slice", "sym_size", "_assert_tensor_metadata"})
LAYERS = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "gelu", "elu", "selu", "celu", "silu", "mish", "sigmoid",
    "tanh", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "softplus", "prelu", "_prelu_kernel", "rrelu",
    "log_sigmoid_forward", "clamp", "clamp_min", "clamp_max", "threshold", "softmax", "_softmax", "log_softmax",
    "_log_softmax", "batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
    "native_batch_norm", "layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "instance_norm",
    "rms_norm", "dropout", "native_dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout",
    "add", "sub", "mul", "div", "neg", "pow", "sqrt", "rsqrt", "mean", "sum", "var", "exp", "log", "abs",
    "avg_pool1d", "avg_pool2d", "getitem"})
# The only ops the trusted evaluator runs at all (run/evaluate.py refuses a graph with any other).
RUNNABLE = PRODUCTS | SHAPING | LAYERS
MAX_CONSTANT = 1024  # elements a constant tensor of the graph may hold (a memorised test set is far more)
MAX_VECTOR = 4096  # elements of a one-dimensional parameter or buffer (normalization weights and statistics)
# Elements of all tensors beside the three weight matrices together: biases and every normalization
# layer's weights and statistics, twice over at each of the widths 784, 512, 256 and 10, fit in it.
MAX_BESIDE = 16_384
NORMS = frozenset({"batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
                   "native_batch_norm", "layer_norm", "native_layer_norm", "group_norm", "native_group_norm",
                   "instance_norm", "rms_norm"})


# Elementwise arithmetic a buffer or constant of one number, or of one value per input pixel, may take
# part in: an input normalization kept in the model ((x - mean) / std), which the first Linear layer
# absorbs and which holds nothing per image.
ELEMENTWISE = frozenset({"add", "sub", "mul", "div", "rsub"})


def _op(target: str) -> str:
    """torch.ops.aten.linear.default -> linear; _operator.getitem -> getitem."""
    parts = target.split(".")
    return parts[3] if target.startswith("torch.ops.") and len(parts) > 3 else parts[-1]


def _graph_check(run: RunView, facts: FrozenFacts, rubric: Rubric) -> Check | None:
    """The rule on the graph the trusted side ran (what made the graded predictions); None without one."""
    recomputed = run.recomputed
    graph = recomputed.graph if recomputed is not None else None
    if graph is None or recomputed is None:
        return None
    frozen = Counter((layer.in_features, layer.out_features) for layer in facts.linear_layers)
    fixed = ", ".join(f"{i}->{o}" for i, o in frozen.elements())
    if recomputed.changed_after_pass:
        return _structure_check(recomputed.structure_at_pass, frozen, fixed, rubric)
    # A layer held under two names is listed twice and used under one: the copy counts once. (A layer
    # held and never used is still a layer the notebook added.)
    parameters, buffers, constants = ([(n, s) for n, s in tensors if n not in graph.copies]
                                      for tensors in (graph.parameters, graph.buffers, graph.constants))
    image = facts.linear_layers[0].in_features if facts.linear_layers else 0
    maps = {n for n, s in buffers + constants
            if _size(s) in (1, image) and graph.uses.get(n) and all(op in ELEMENTWISE for op, _ in graph.uses[n])}
    matrices: Counter[tuple[int | None, int | None]] = Counter()
    for name, shape in parameters:
        if len(shape) == 2:
            matrices[(shape[1], shape[0])] += 1
        elif len(shape) > 2 or (len(shape) == 1 and shape[0] > MAX_VECTOR):
            return run_check(RULE, False, f"the model that made the graded predictions holds the weights {name} "
                                          f"{list(shape)}; only the Linear layers {fixed} and normalization may")
    if matrices != frozen:
        found = ", ".join("?" if m is None else f"{m[0]}->{m[1]}" for m in matrices.elements()) or "none"
        return run_check(RULE, False, f"the model that made the graded predictions has the weight matrices {found}; "
                                      f"the homework fixes {fixed}")
    for kind, tensors, most in (("buffer", buffers, MAX_VECTOR), ("constant", constants, MAX_CONSTANT)):
        for name, shape in tensors:
            size = _size(shape)
            if size > most or (len(shape) > 1 and name not in maps):
                return run_check(RULE, False, f"the model that made the graded predictions holds the {kind} {name} "
                                              f"{list(shape)} ({size} values): data beside the Linear layers")
    beside = sum(_size(shape) for name, shape in parameters + buffers + constants if len(shape) != 2 or name in maps)
    if beside > MAX_BESIDE:
        return run_check(RULE, False, f"the model that made the graded predictions holds {beside} values beside its "
                                      f"weight matrices (normalization and biases need at most {MAX_BESIDE}): data "
                                      "beside the Linear layers")
    for name, shape in parameters + buffers + constants:
        if len(graph.uses.get(name, ())) > 1:
            return run_check(RULE, None, f"the model that made the graded predictions uses {name} "
                                         f"{len(graph.uses[name])} times; each layer's tensors are used once; a person "
                                         "checks what it computes")
        odd = [f"{op} ({argument})" for op, argument in graph.uses.get(name, ())
               if name not in maps and not _fits(op, argument, len(shape))]
        if odd:
            return run_check(RULE, None, f"the model that made the graded predictions uses {name} {list(shape)} in "
                                         f"{', '.join(odd[:3])}, not as a Linear layer's weight or bias or in a "
                                         "normalization layer; a person checks what it computes")
    if graph.mixes:
        return run_check(RULE, None, f"the model that made the graded predictions combines two tensors computed from "
                                     f"the image in {', '.join(sorted(set(graph.mixes))[:3])}: not a chain of the "
                                     "Linear layers with normalization and activations (a filter built from slices "
                                     "of the image, a table read back from a layer, or rows compared across the "
                                     "batch); a person checks what it computes")
    odd_product = _odd_product(graph)
    if odd_product:
        return run_check(RULE, None, f"the model that made the graded predictions {odd_product}; each Linear layer "
                                     "multiplies the image's way once, by its own weight; a person checks what it "
                                     "computes")
    odd_way = _odd_way(graph, {w for layer in frozen for w in layer if w is not None})
    if odd_way:
        return run_check(RULE, None, f"the image's way through the model that made the graded predictions {odd_way}; "
                                     "a person checks what it computes")
    products = sum(count for target, count in graph.ops.items() if _op(target) in PRODUCTS)
    for target, count in sorted(graph.ops.items()):
        name = _op(target)
        if name in PRODUCTS or name in SHAPING or name in LAYERS:
            continue
        return run_check(RULE, False, f"the model that made the graded predictions computes {name} "
                                      f"({count}x); only the Linear layers, normalization, dropout and activations may")
    if products != sum(frozen.values()):
        return run_check(RULE, False, f"the model that made the graded predictions multiplies by weights {products} "
                                      f"times; the homework's {fixed} do {sum(frozen.values())}")
    return run_check(RULE, True, f"the model that made the graded predictions uses exactly the Linear layers {fixed}")


# Ops that copy, pool or sum the image's way: with a normalization layer's weights they make one
# more learned layer (copies scaled, then summed), so a chain of the homework's layers has none.
WIDENING = frozenset({"expand", "sum", "mean", "var", "avg_pool1d", "avg_pool2d"})
NORMS_PER_GAP = 2  # normalization ops (and PReLUs) between two Linear layers (or before the first, after the last)
LEARNED_ACTIVATIONS = frozenset({"prelu", "_prelu_kernel"})


def _odd_way(graph: GraphFacts, widths: set[int]) -> str | None:
    """How the image's way is not a chain of the Linear layers with normalization and activations
    between them: a tensor not as wide as a layer, an op that copies, pools or sums it, or more than
    NORMS_PER_GAP normalization ops in one gap; None when it is."""
    norms = 0
    for op, shape in graph.way:
        # Only reshaping and elementwise arithmetic may give the way another form than one row of a
        # layer's width per image (the image's 1x28x28 before it is flattened, scaled to [0, 1]): a
        # norm, softmax or pick over a regrouped view mixes the features by groups of its choosing.
        if shape and (shape[0] != 2 or _size(shape[1:]) not in widths
                      or (len(shape) != 2 and op not in SHAPING and op not in ELEMENTWISE)):
            return (f"has the shape {list(shape)} after {op} (two images); the homework's layers are "
                    f"{', '.join(str(w) for w in sorted(widths, reverse=True))} wide")
        if op in WIDENING:
            return f"goes through {op}, which copies, pools or sums it"
        norms = 0 if op in PRODUCTS else norms + (op in NORMS or op in LEARNED_ACTIVATIONS)
        if norms > NORMS_PER_GAP:
            return f"goes through more than {NORMS_PER_GAP} normalization layers or PReLUs between two Linear layers"
    return None


def _odd_product(graph: GraphFacts) -> str | None:
    """How a product of the graph, as it ran on two rows, is not a Linear layer applied to a row: a
    weight reshaped, or multiplied with more than one vector per image (a filter over patches); None
    when every product is one. (A weight used twice is caught with every tensor's uses.)"""
    matrices = {name: shape for name, shape in graph.parameters if len(shape) == 2}
    for p in graph.products:
        shape = matrices.get(p.weight)
        if shape is None:
            return f"multiplies by something that is no weight matrix in {p.op}"
        out_features, in_features = shape
        expected = shape if p.op == "linear" else (in_features, out_features)
        if p.used != expected or p.rows != (2, in_features):
            return (f"uses {p.weight} {list(shape)} as {list(p.used)} in {p.op} on rows of shape {list(p.rows)} "
                    "(two images)")
    return None


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


def _fits(op: str, argument: str, dims: int) -> bool:
    """A weight matrix goes into a product; anything else into a product as its bias, into a
    normalization layer, or into PReLU as its slope."""
    if op in PRODUCTS:
        return dims == 2 or argument in ("bias", "self", "input")
    return dims != 2 and ((op in NORMS and argument in ("weight", "bias", "running_mean", "running_var"))
                          or (op in ("prelu", "_prelu_kernel") and argument == "weight"))


def _structure_check(structure: Any, frozen: Counter[tuple[int | None, int | None]], fixed: str, rubric: Rubric) -> Check:
    """The model changed after its graded pass: the rule on what it was at that pass."""
    try:
        kinds = {str(name): str(kind) for name, kind in structure[0]}
        shapes = {str(name): [int(d) for d in shape] for name, shape, _dtype in structure[1]}
    except Exception:  # noqa: BLE001 - written in the student's process: any shape at all
        return run_check(RULE, None, "the model was changed after its graded test pass, and what it was then is unknown")
    linear: Counter[tuple[int | None, int | None]] = Counter()
    for name, shape in shapes.items():  # by shape, never by a class name
        module, _, _ = name.rpartition(".")
        if len(shape) > 2:
            return run_check(RULE, False, f"at its graded test pass the model held {name} of shape {shape} in "
                                          f"{module or 'the model'} ({kinds.get(module, '?')}); only the Linear "
                                          "layers and normalization layers may")
        if len(shape) == 2:
            linear[(shape[1], shape[0])] += 1
    if linear != frozen:
        found = ", ".join(f"{i}->{o}" for i, o in linear.elements()) or "none"
        return run_check(RULE, False, f"at its graded test pass the model's Linear layers were {found}; the homework "
                                      f"fixes {fixed} (they were changed after that pass)")
    return run_check(RULE, None, "the model was changed after its graded test pass; it kept the Linear layers then")


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
    # Judged by the weights' shapes, never by a class name (a traced copy's layers are TracedModules).
    linear: Counter[tuple[int, int]] = Counter()
    unknown: list[str] = []
    for owner in owners:
        kind, name, shapes = owner.type, owner.module, owner.shapes
        dims = [len(shape) for shape in shapes]
        if any(d > 2 for d in dims):
            return run_check(RULE, False, f"the trained model holds weights in {name} ({kind}) of shape "
                                          f"{list(shapes[dims.index(max(dims))])}; only the Linear layers and "
                                          "normalization layers may")
        linear.update((shape[1], shape[0]) for shape in shapes if len(shape) == 2)
        if 2 not in dims and kind != "Linear" and kind not in rubric.allowed_layers:
            unknown.append(f"{name} ({kind})")
    if linear != frozen:
        found = ", ".join(f"{i}->{o}" for i, o in linear.elements()) or "none"
        return run_check(RULE, False, f"the trained model's Linear layers are {found}; the homework fixes {fixed}")
    ops = architecture.ops
    if ops is None:
        return run_check(RULE, None, f"the Linear layers are {fixed}, but the forward pass could not be traced "
                                                 f"({architecture.error})")
    products: Counter[tuple[int, int] | None] = Counter()
    for op in ops:
        if op.name not in _MATMUL_OPS:
            return run_check(RULE, False, f"the forward pass applies {op.name}; only the three Linear "
                                                      "layers may apply weights")
        products[_weight_shape(op)] += 1
    if products != frozen:
        found = ", ".join("?" if s is None else f"{s[0]}->{s[1]}" for s in products.elements()) or "none"
        return run_check(RULE, False, f"the forward pass multiplies by weights of {found}; the homework fixes {fixed}")
    if unknown:
        return run_check(RULE, None, f"the forward pass uses exactly the Linear layers {fixed}, beside parameters "
                                     f"in {', '.join(unknown[:3])}, not a layer kind the rubric lists")
    return run_check(RULE, True, f"the trained model's forward pass uses exactly the Linear layers {fixed}")
