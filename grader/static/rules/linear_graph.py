"""The frozen-layers rule (linear_layers.py) on the graph the trusted side ran (what made the graded
predictions): an ordered list of named checks, each ``(GraphView) -> Check | None``; the first that
finds something gives the verdict, and a graph none of them finds anything in keeps exactly the
template's weight layers. For a template with conv layers, a convolution is a product of a conv
layer (its weight held to the template's weight shape) and pooling is part of the chain; for one of
Linear layers only (HW3) nothing of that applies, and every message reads as it always did.

Each check is one way a past attack hid data or computation beside the three Linear layers. To add
one: write ``def check(view: GraphView) -> Check | None``, put it in ``CHECKS`` where it belongs
(what the model holds first, then what a person must look at, then what it computes), and give it
a case in tests/test_linear_graph.py. The op tables are the evaluator's (grader/evaluator/ops.py),
the ones it runs the graph by.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grader.evaluator.ops import (
    CONVOLUTIONS,
    ELEMENTWISE_LAYERS,
    LAYERS,
    NORMS,
    PADDING,
    POOLING,
    PRODUCTS,
    SHAPING,
)
from grader.model.findings import RuleId
from grader.model.results import Check
from grader.model.rubric import WeightLayer
from grader.static.layers import CONV_DIMS, Spec, WeightKey, key_text, spec
from grader.static.rules.common import run_check

if TYPE_CHECKING:
    from grader.judge.recompute import GraphFacts, Recomputed
    from grader.model.rubric import FrozenFacts

RULE = RuleId.LINEAR_LAYERS
MAX_CONSTANT = 1024  # elements a constant of the graph may hold (a memorised test set is far more)
MAX_VECTOR = 4096  # elements of a 1-D parameter or buffer (normalization weights and statistics)
# Elements of all tensors beside the three weight matrices together: biases and every normalization
# layer's weights and statistics, twice over at each of the widths 784, 512, 256 and 10, fit in it.
MAX_BESIDE = 16_384
# Elementwise arithmetic a buffer or constant of one number, or of one value per input pixel, may
# take part in: an input normalization kept in the model ((x - mean) / std), which the first Linear
# layer absorbs and which holds nothing per image.
ELEMENTWISE = frozenset({"add", "sub", "mul", "div", "rsub"})
# Ops that copy, pool or sum the image's way: with a normalization layer's weights they make one
# more learned layer (copies scaled, then summed), so a chain of the homework's layers has none.
WIDENING = frozenset({"expand", "sum", "mean", "var", "avg_pool1d", "avg_pool2d"})
NORMS_PER_GAP = 2  # normalization ops (and PReLUs) between two Linear layers (or before the first)
# Elementwise activations and arithmetic between two weight layers (or before the first, or after
# the last): GELU written out takes 8, an input normalization 2 or 3; a memorised answer as a window
# of literal numbers on the scores takes about 7, one test image each.
ELEMENTWISE_PER_GAP = 12
LEARNED_ACTIVATIONS = frozenset({"prelu", "_prelu_kernel"})
LAYER_NORMS = frozenset({"layer_norm", "native_layer_norm"})
WHO = "the model that made the graded predictions"
LOOK = "a person checks what it computes"

Shapes = tuple[tuple[str, tuple[int, ...]], ...]
# The template's weight layers by key (static/layers.py): (in_features, out_features) for a Linear
# layer, the weight's shape for a convolution.
Layers = Counter[WeightKey | None]


@dataclass(frozen=True, kw_only=True)
class GraphView:
    """What every check reads: the graph's facts and the homework's layers."""

    graph: GraphFacts
    frozen: Layers  # the template's weight layers by key
    parameters: Shapes  # the graph's tensors, a layer held under two names counted once
    buffers: Shapes
    constants: Shapes
    maps: frozenset[str]  # buffers and constants of an input normalization kept in the model
    # parameters of more than one value per channel that a normalization layer applies to the
    # image's way element by element (LayerNorm([16, 28, 28]) after a convolution)
    norms: frozenset[str] = frozenset()
    convolutions: tuple[Spec, ...] = ()  # the template's conv layers, as the static rule reads them

    @property
    def fixed(self) -> str:
        return _layers(self.frozen)

    @property
    def tensors(self) -> Shapes:
        return self.parameters + self.buffers + self.constants

    @property
    def convolutional(self) -> bool:
        """The template has conv layers (a key of more than two numbers)."""
        return any(k is not None and len(k) > 2 for k in self.frozen)

    @property
    def products(self) -> frozenset[str]:
        """The ops that apply a layer's weights."""
        return PRODUCTS | CONVOLUTIONS if self.convolutional else PRODUCTS

    @property
    def noun(self) -> str:
        return "weight layers" if self.convolutional else "Linear layers"

    def is_weight(self, shape: tuple[int, ...]) -> bool:
        """A matrix, or a tensor of one of the template's convolution weights' shapes."""
        return len(shape) == 2 or (len(shape) > 2 and shape in self.frozen)

    @classmethod
    def of(cls, graph: GraphFacts, frozen: Layers, specs: tuple[Spec, ...] = ()) -> GraphView:
        # A layer held under two names is listed twice and used under one: the copy counts once. (A
        # layer held and never used is still a layer the notebook added.)
        parameters, buffers, constants = (
            tuple((n, s) for n, s in tensors if n not in graph.copies)
            for tensors in (graph.parameters, graph.buffers, graph.constants)
        )
        first = next(iter(frozen), None)
        # one value per input feature (a Linear layer first), or per channel or per pixel of the
        # image as the first convolution takes it (a mean image)
        sizes = {1, (first[0] if len(first) == 2 else first[1]) if first else 0}
        if first and len(first) > 2 and graph.products:
            sizes.add(_size(graph.products[0].rows[1:]))
        maps = frozenset(
            n
            for n, s in buffers + constants
            if _size(s) in sizes
            and graph.uses.get(n)
            and all(op in ELEMENTWISE for op, _ in graph.uses[n])
        )
        return cls(
            graph=graph,
            frozen=frozen,
            parameters=parameters,
            buffers=buffers,
            constants=constants,
            maps=maps,
            norms=_norm_maps(graph, parameters, max(_channels(frozen), default=0)),
            convolutions=tuple(s for s in specs if s.kind in CONV_DIMS),
        )


GraphCheck = Callable[[GraphView], Check | None]


def _channels(frozen: Layers) -> set[int]:
    """The in and out channels of the template's convolutions (none for Linear layers only)."""
    return {c for k in frozen if k is not None and len(k) > 2 for c in k[:2]}


def _norm_maps(graph: GraphFacts, parameters: Shapes, channels: int) -> frozenset[str]:
    """The parameters used once, as a normalization op's weight or bias, shaped as the last
    dimensions of the image's way where a normalization op ran on it, that hold a value per
    position: of more than one dimension (a LayerNorm over whole maps), or, for a convolutional
    template (``channels``: its most), a LayerNorm's longer than any channel count (over flattened
    maps). An elementwise affine map, the same for every image, never a table a product reads."""
    normalized = [shape for op, shape in graph.way if op in NORMS]

    def per_position(name: str, shape: tuple[int, ...]) -> bool:
        uses = graph.uses.get(name, ())
        if len(uses) != 1 or uses[0][0] not in NORMS or uses[0][1] not in ("weight", "bias"):
            return False
        if not any(len(w) > len(shape) and w[-len(shape) :] == shape for w in normalized):
            return False
        flattened = len(shape) == 1 and 0 < channels < shape[0] and uses[0][0] in LAYER_NORMS
        return len(shape) >= 2 or flattened

    return frozenset(name for name, shape in parameters if per_position(name, shape))


def held_weights(view: GraphView) -> Check | None:
    """A parameter of more than two dimensions, or a vector longer than any layer's: weights of
    another kind of layer."""
    for name, shape in view.parameters:
        if name in view.norms:
            continue
        if (len(shape) > 2 and not view.is_weight(shape)) or (
            len(shape) == 1 and shape[0] > MAX_VECTOR
        ):
            return _violated(
                f"{WHO} holds the weights {name} {list(shape)}; only the {view.noun} "
                f"{view.fixed} and normalization may"
            )
    return None


def weight_matrices(view: GraphView) -> Check | None:
    """The weight matrices (and convolution weights) are the template's, no more and no fewer."""
    matrices: Layers = Counter(
        _key(s) for name, s in view.parameters if len(s) >= 2 and name not in view.norms
    )
    if matrices == view.frozen:
        return None
    found = _layers(matrices) or "none"
    what = "weights" if view.convolutional else "weight matrices"
    return _violated(f"{WHO} has the {what} {found}; the homework fixes {view.fixed}")


def stored_data(view: GraphView) -> Check | None:
    """A buffer or constant too large for a layer's statistics, or a table of more than one
    dimension that is no input normalization: data beside the Linear layers (a memorised test
    set)."""
    for kind, tensors, most in (
        ("buffer", view.buffers, MAX_VECTOR),
        ("constant", view.constants, MAX_CONSTANT),
    ):
        for name, shape in tensors:
            size = _size(shape)
            if size > most or (len(shape) > 1 and name not in view.maps):
                return _violated(
                    f"{WHO} holds the {kind} {name} {list(shape)} ({size} values): "
                    f"data beside the {view.noun}"
                )
    return None


def values_beside(view: GraphView) -> Check | None:
    """More values beside the weight matrices than biases and normalization need."""
    beside = sum(
        _size(s)
        for name, s in view.tensors
        if (not view.is_weight(s) or name in view.maps) and name not in view.norms
    )
    if beside <= MAX_BESIDE:
        return None
    what = "weights" if view.convolutional else "weight matrices"
    return _violated(
        f"{WHO} holds {beside} values beside its {what} (normalization and "
        f"biases need at most {MAX_BESIDE}): data beside the {view.noun}"
    )


def tensor_uses(view: GraphView) -> Check | None:
    """Each tensor used once, as a Linear layer's weight or bias, in a normalization layer, or as
    a PReLU's slope (an input normalization's: in elementwise arithmetic)."""
    uses = view.graph.uses
    for name, shape in view.tensors:
        if len(uses.get(name, ())) > 1:
            return _for_a_person(
                f"{WHO} uses {name} {len(uses[name])} times; each layer's tensors "
                f"are used once; {LOOK}"
            )
        odd = [
            f"{op} ({argument})"
            for op, argument in uses.get(name, ())
            if name not in view.maps | view.norms
            and not _fits(op, argument, len(shape), view.products)
        ]
        if odd:
            return _for_a_person(
                f"{WHO} uses {name} {list(shape)} in {', '.join(odd[:3])}, not as "
                f"a {view.noun[:-1]}'s weight or bias or in a normalization layer; {LOOK}"
            )
    return None


def norm_tables(view: GraphView) -> Check | None:
    """A normalization's weights of one value per position of whole maps (LayerNorm([16, 28, 28])
    after a convolution): allowed as normalization, but a learned table over positions, which the
    maps' own mean and spread can key per image (a memorised test set fits in it)."""
    if not view.norms:
        return None
    name = min(view.norms)
    shape = dict(view.parameters)[name]
    return _for_a_person(
        f"{WHO} applies {name} {list(shape)}: a normalization's weights of one value per position "
        f"of whole maps, a learned table that can hold answers keyed by each image's statistics; "
        f"{LOOK}"
    )


def mixed_image(view: GraphView) -> Check | None:
    """An op combining two tensors computed from the image: no chain of layers."""
    if not view.graph.mixes:
        return None
    ops = ", ".join(sorted(set(view.graph.mixes))[:3])
    return _for_a_person(
        f"{WHO} combines two tensors computed from the image in {ops}: not a "
        f"chain of the {view.noun} with normalization and activations (a filter "
        "built from slices of the image, a table read back from a layer, or rows "
        f"compared across the batch); {LOOK}"
    )


def odd_products(view: GraphView) -> Check | None:
    """A product, as it ran on two rows, that is no Linear layer applied to a row: a weight
    reshaped, or multiplied with more than one vector per image (a filter over patches). (A weight
    used twice is caught by ``tensor_uses``.)"""
    matrices = {name: shape for name, shape in view.graph.parameters if view.is_weight(shape)}
    for p in view.graph.products:
        shape = matrices.get(p.weight)
        if p.op in CONVOLUTIONS and view.convolutional and shape is not None and len(shape) > 2:
            # a conv layer's weight as it is, on a batch of two images of its rank
            if p.used == shape and len(p.rows) == len(shape) and p.rows[:1] == (2,):
                continue
            odd = (
                f"uses {p.weight} {list(shape)} as {list(p.used)} in {p.op} on a batch of shape "
                f"{list(p.rows)} (two images)"
            )
        elif shape is None or len(shape) != 2:
            odd = f"multiplies by something that is no weight matrix in {p.op}"
        else:
            out_features, in_features = shape
            expected = shape if p.op == "linear" else (in_features, out_features)
            if p.used == expected and p.rows == (2, in_features):
                continue
            odd = (
                f"uses {p.weight} {list(shape)} as {list(p.used)} in {p.op} on rows of shape "
                f"{list(p.rows)} (two images)"
            )
        return _for_a_person(
            f"{WHO} {odd}; each {view.noun[:-1]} multiplies the image's way once, by "
            f"its own weight; {LOOK}"
        )
    return None


def conv_arguments(view: GraphView) -> Check | None:
    """Each convolution runs as one of the template's conv layers: its weight's shape and its
    stride, padding, dilation and groups (a padding op just before it counted in, as padding_mode
    makes one), never transposed. (F.conv2d with conv1's weight and stride 2 keeps every weight's
    shape and is another layer.)"""
    if not view.convolutions:
        return None
    expected = Counter(c.values for c in view.convolutions)
    for p in view.graph.products:
        if p.op not in CONVOLUTIONS:
            continue
        kind = next((k for k, dims in CONV_DIMS.items() if dims == len(p.used) - 2), None)
        arguments = dict(p.conv)
        if p.transposed or kind is None:
            how = "transposed" if p.transposed else f"{len(p.used) - 2}-dimensional"
            return _violated(
                f"{WHO} applies {p.weight} {list(p.used)} in a {how} convolution; the "
                f"homework's are {view.fixed}"
            )
        if not p.conv or None in arguments.values():
            return _for_a_person(
                f"{WHO} applies {p.weight} {list(p.used)} in a convolution whose stride, padding, "
                f"dilation or groups could not be read; {LOOK}"
            )
        groups = arguments["groups"]
        assert isinstance(groups, int)
        ran = spec(
            WeightLayer(
                kind=kind,
                name=p.weight,
                args=(
                    ("in_channels", p.used[1] * groups),
                    ("out_channels", p.used[0]),
                    ("kernel_size", p.used[2:]),
                    *p.conv,
                ),
            )
        )
        if expected[ran.values] > 0:
            expected[ran.values] -= 1
            continue
        same = [c for c in view.convolutions if c.kind == kind] or list(view.convolutions)
        template = min(same, key=lambda c: len(ran.differences(c)))
        return _violated(
            f"{WHO} applies {p.weight} as {ran.text}; the template's "
            f"{(template.name or 'layer').removeprefix('self.')} "
            f"is {template.text}: {ran.changes(template)}"
        )
    return None


def map_extents(view: GraphView) -> Check | None:
    """For a template of 2-D convolutions: every batch of maps on the image's way (channels first
    or last) is the image's size or the size a convolution, pooling or padding op made, and every
    padding op feeds a convolution (which counts it in its padding). A view or slice giving maps
    another size (conv1 run on the image reshaped to 14x56: another dilation; a map subsampled by
    slicing: another stride) or a pad the convolution's padding does not show goes to a person."""
    if not any(k is not None and len(k) == 4 for k in view.frozen) or len(view.graph.image) != 2:
        return None
    channels = _channels(view.frozen)
    extents = {view.graph.image}
    before = view.graph.image  # the maps' size before the op (the way is one chain)
    for op, shape in view.graph.way:
        if len(shape) != 4:
            continue
        if op in POOLING and any(a > b for a, b in zip(shape[2:], before)):
            return _for_a_person(
                f"the image's way through {WHO} is pooled from {before[0]}x{before[1]} to "
                f"{shape[2]}x{shape[3]}, larger maps than it pooled; {LOOK}"
            )
        made = op in CONVOLUTIONS | POOLING | PADDING  # channels first, a size of their own
        if made:
            extents.add(shape[2:])
        elif not (
            (shape[1] in channels and shape[2:] in extents)
            or (shape[3] in channels and shape[1:3] in extents)
        ):
            height, width = view.graph.image
            return _for_a_person(
                f"the image's way through {WHO} has the shape {list(shape)} after {op}: maps of "
                f"another size than the image's {height}x{width} or what a convolution or pooling "
                f"made of them (maps reshaped or sliced); {LOOK}"
            )
        before = shape[2:] if made or shape[1] in channels else shape[1:3]
    pads = sum(count for target, count in view.graph.ops.items() if _op(target) in PADDING)
    unfolded = pads - sum(p.padded for p in view.graph.products)
    if unfolded > 0:
        return _for_a_person(
            f"{WHO} pads the maps {unfolded} time{'s' if unfolded > 1 else ''} other than just "
            f"before a convolution; {LOOK}"
        )
    return None


def odd_way(view: GraphView) -> Check | None:
    """The image's way is no chain of the template's layers with normalization and activations
    between them: a tensor not as wide as a Linear layer (nor, for a convolutional template, a
    batch of images with as many channels as a conv layer), an op that copies, pools or sums it
    (the template's own pooling aside), or more than NORMS_PER_GAP normalization ops in one gap."""
    widths = {w for layer in view.frozen if layer is not None and len(layer) == 2 for w in layer}
    convs = [k for k in view.frozen if k is not None and len(k) > 2]
    channels = _channels(view.frozen)
    ranks = {len(k) for k in convs}  # a batch of images has as many dimensions as a conv weight
    norms = pointwise = 0
    for op, shape in view.graph.way:
        odd = None
        # Only reshaping and elementwise arithmetic may give the way another form than one row of a
        # layer's width per image (the image's 1x28x28 before it is flattened, scaled to [0, 1]): a
        # norm, softmax or pick over a regrouped view mixes the features by groups of its choosing.
        if len(shape) > 2 and convs:
            # channels first, or last (a LayerNorm over channels between two permutes) where no
            # convolution or pooling made them
            last = shape[-1] in channels and op not in CONVOLUTIONS | POOLING | PADDING
            fits = shape[0] == 2 and len(shape) in ranks and (shape[1] in channels or last)
        else:
            fits = not shape or not (
                shape[0] != 2
                or _size(shape[1:]) not in widths
                or (len(shape) != 2 and op not in SHAPING and op not in ELEMENTWISE)
            )
        if not fits:
            wide = ", ".join(str(w) for w in sorted(widths, reverse=True))
            deep = ", ".join(str(c) for c in sorted(channels))
            deep = f" and its convolutions have {deep} channels" if convs else ""
            odd = (
                f"has the shape {list(shape)} after {op} (two images); the homework's layers "
                f"are {wide} wide{deep}"
            )
        elif op in WIDENING and not (convs and op in POOLING):
            odd = f"goes through {op}, which copies, pools or sums it"
        else:
            norms = 0 if op in view.products else norms + (op in NORMS or op in LEARNED_ACTIVATIONS)
            pointwise = 0 if op in view.products else pointwise + (op in ELEMENTWISE_LAYERS)
            if norms > NORMS_PER_GAP:
                odd = (
                    f"goes through more than {NORMS_PER_GAP} normalization layers or PReLUs "
                    f"between two {view.noun}"
                )
            elif pointwise > ELEMENTWISE_PER_GAP:
                odd = (
                    f"goes through more than {ELEMENTWISE_PER_GAP} elementwise activations and "
                    f"arithmetic ops between two {view.noun} (or after the last)"
                )
        if odd:
            return _for_a_person(f"the image's way through {WHO} {odd}; {LOOK}")
    return None


def other_ops(view: GraphView) -> Check | None:
    """An op that is none of the products, reshaping and layers (and, for a convolutional template,
    pooling) the homework's model uses."""
    pooling = POOLING | PADDING if view.convolutional else frozenset()
    for target, count in sorted(view.graph.ops.items()):
        name = _op(target)
        if name not in view.products | SHAPING | LAYERS | pooling:
            return _violated(
                f"{WHO} computes {name} ({count}x); only the {view.noun}, "
                f"{'pooling, ' if pooling else ''}normalization, dropout and activations may"
            )
    return None


def product_count(view: GraphView) -> Check | None:
    """As many products as the homework has weight layers."""
    products = sum(
        count for target, count in view.graph.ops.items() if _op(target) in view.products
    )
    layers = sum(view.frozen.values())
    if products == layers:
        return None
    return _violated(
        f"{WHO} multiplies by weights {products} times; the homework's {view.fixed} do {layers}"
    )


# In the order they run: the first finding is the verdict.
CHECKS: tuple[GraphCheck, ...] = (
    held_weights,
    weight_matrices,
    stored_data,
    values_beside,
    tensor_uses,
    norm_tables,
    mixed_image,
    odd_products,
    conv_arguments,
    map_extents,
    odd_way,
    other_ops,
    product_count,
)


def graph_check(recomputed: Recomputed | None, facts: FrozenFacts) -> Check | None:
    """The rule on the graph the trusted side ran; None without one."""
    graph = recomputed.graph if recomputed is not None else None
    if graph is None or recomputed is None:
        return None
    specs = tuple(spec(layer) for layer in facts.weight_layers)
    frozen: Layers = Counter(s.key for s in specs)
    if recomputed.changed_after_pass:
        return structure_check(recomputed.structure_at_pass, frozen)
    view = GraphView.of(graph, frozen, specs)
    for check in CHECKS:
        found = check(view)
        if found is not None:
            return found
    return run_check(RULE, True, f"{WHO} uses exactly the {view.noun} {view.fixed}")


def structure_check(structure: Any, frozen: Layers) -> Check:
    """The model changed after its graded pass: the rule on what it was at that pass."""
    try:
        kinds = {str(name): str(kind) for name, kind in structure[0]}
        shapes = {str(name): [int(d) for d in shape] for name, shape, _dtype in structure[1]}
    except Exception:  # noqa: BLE001 - written in the student's process: any shape at all
        return _for_a_person(
            "the model was changed after its graded test pass, and what it was then is unknown"
        )
    convolutional = any(k is not None and len(k) > 2 for k in frozen)
    noun = "weight layers" if convolutional else "Linear layers"
    linear: Layers = Counter()
    for name, shape in shapes.items():  # by shape, never by a class name
        module, _, _ = name.rpartition(".")
        if len(shape) > 2 and tuple(shape) not in frozen:
            return _violated(
                f"at its graded test pass the model held {name} of shape {shape} in "
                f"{module or 'the model'} ({kinds.get(module, '?')}); only the {noun} "
                "and normalization layers may"
            )
        if len(shape) >= 2:
            linear[_key(tuple(shape))] += 1
    if linear != frozen:
        return _violated(
            f"at its graded test pass the model's {noun} were "
            f"{_layers(linear) or 'none'}; the homework fixes {_layers(frozen)} (they "
            "were changed after that pass)"
        )
    return _for_a_person(
        f"the model was changed after its graded test pass; it kept the {noun} then"
    )


def _violated(message: str) -> Check:
    return run_check(RULE, False, message)


def _for_a_person(message: str) -> Check:
    return run_check(RULE, None, message)


def _layers(layers: Layers) -> str:
    """784->512, 512->256, 256->10 ('?' for a layer of unknown size); [32, 1, 3, 3] for a
    convolution's weight."""
    return ", ".join(key_text(m) for m in layers.elements())


def _key(shape: tuple[int, ...]) -> WeightKey:
    """A weight tensor's key: (in_features, out_features) for a matrix, else its shape."""
    return (shape[1], shape[0]) if len(shape) == 2 else shape


def _op(target: str) -> str:
    """torch.ops.aten.linear.default -> linear; _operator.getitem -> getitem."""
    parts = target.split(".")
    return parts[3] if target.startswith("torch.ops.") and len(parts) > 3 else parts[-1]


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


def _fits(op: str, argument: str, dims: int, products: frozenset[str]) -> bool:
    """A weight matrix goes into a product (a convolution's weight into a convolution); anything
    else into a product as its bias, into a normalization layer, or into PReLU as its slope."""
    if op in products:
        weight = dims > 2 if op in CONVOLUTIONS else dims == 2
        return weight or argument in ("bias", "self", "input")
    norm = op in NORMS and argument in ("weight", "bias", "running_mean", "running_var")
    return dims != 2 and (norm or (op in LEARNED_ACTIVATIONS and argument == "weight"))
