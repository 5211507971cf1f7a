"""What a rebuilt graph is made of, read on the graph torch rebuilt (not on its JSON, where a
tensor can sit in a size's slot): the architecture rule's facts (static/rules/linear_layers.py)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.passes.shape_prop import ShapeProp

from grader.evaluator.manifest import Refused
from grader.evaluator.ops import (
    CONVOLUTIONS,
    PADDING,
    PASS_THROUGH,
    POINTWISE,
    POOLING,
    PRODUCTS,
    SIZES,
    WEIGHTED,
)

_TENSOR_INPUTS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)

Uses = dict[str, list[list[str]]]


def flow(
    program: Any, shape: list[int], dtype: Any, widest: int
) -> tuple[Uses, list[str], list[dict[str, Any]], list[list[Any]]]:
    """For every parameter, buffer and constant, the ops that use it, each as [op, the argument it
    is], looking through reshapes and copies; the ops that combine two tensors computed from the
    image; and every product with the shapes it really ran on (the graph run once on two blank
    rows). The homework's model is one chain: each op takes the image's way through the network
    once, beside weights. Two of them combined (other than value by value, both computed pointwise
    from one tensor: x * sigmoid(x)) is a filter built by hand from slices of the image, a
    table read back from a layer's output (a LayerNorm of zeros is its bias), or one row compared
    with the rest of the batch. Last, the shape of every tensor on the image's way, as it ran (the
    rule holds them to the layers' widths). Refuses dropout left on and any op that writes into a
    tensor other than the image's way (``mm.out`` into a weight, say), a way wider than
    ``widest`` values per image (the grader's bound, static/layers.py ``widest_way``) and work
    past the bounds derived from it (``_shapes_first``). A
    convolution is a product like a matrix product: its weight, the weight's shape and the batch
    of images it ran on."""
    origin: dict[str, str] = {}
    flowing: set[str] = set()
    # each tensor of the image's way -> the last one before it that no pointwise op computed
    source: dict[str, str] = {}
    feed: list[Any] = []
    for spec in program.graph_signature.input_specs:
        name = getattr(spec.arg, "name", None)
        value = None
        if isinstance(name, str) and spec.kind == InputKind.USER_INPUT:
            flowing.add(name)
            source[name] = name
            value = torch.zeros(2, *shape, dtype=dtype)
        elif isinstance(name, str) and isinstance(spec.target, str) and spec.kind in _TENSOR_INPUTS:
            origin[name] = spec.target
            value = program.state_dict.get(spec.target, program.constants.get(spec.target))
        if not isinstance(value, torch.Tensor):
            raise Refused(
                "the captured graph takes an input that is neither the image nor a listed tensor"
            )
        feed.append(value.detach().clone())
    if any(spec.kind != OutputKind.USER_OUTPUT for spec in program.graph_signature.output_specs):
        raise Refused(
            "the captured graph changes its own buffers or inputs as it runs (state "
            "carried from one batch of test images to the next)"
        )
    uses: Uses = {target: [] for target in origin.values()}
    mixes: list[str] = []
    products: list[tuple[Any, str, Any, Any]] = []  # node, op, the weight's node, the image's node
    for node in program.graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        op = op_name(node)
        if node.target is torch.ops.aten.view.dtype:
            raise Refused(
                "the captured graph reads a tensor's bits as another type (view as a dtype)"
            )
        schema = getattr(node.target, "_schema", None)
        written = {
            a.name
            for a in (schema.arguments if schema is not None else ())
            if a.alias_info is not None and a.alias_info.is_write
        }
        carried, weight, image = 0, None, None
        ways: set[str] = set()
        for argument, value in _bound(node):
            switched = value is True or isinstance(value, torch.fx.Node)
            if argument in ("train", "training") and switched:
                raise Refused(
                    f"the model keeps {op} on at test time (as F.{op}(x, p) does without "
                    "training=self.training), so its answers are random and cannot be recomputed"
                )
            held = _nodes(value)
            if argument in written and any(n.name not in flowing for n in held):
                raise Refused(
                    f"the captured graph writes into a tensor other than the image's way "
                    f"({op}, {argument})"
                )
            carried += sum(1 for n in held if n.name in flowing)
            ways.update(source[n.name] for n in held if n.name in flowing)
            image = next((n for n in held if n.name in flowing), image)
            for n in held:
                if n.name not in origin:
                    continue
                if op in PASS_THROUGH and argument in ("self", "input"):
                    origin[node.name] = origin[n.name]
                else:
                    uses[origin[n.name]].append([op, argument])
                    if op in WEIGHTED and argument not in ("bias", "self", "input"):
                        weight = n
        # x / (1 + |x|): the way combined with a pointwise function of itself, value by value
        pointwise = op in POINTWISE and len(ways) == 1
        if carried > 1 and not pointwise:
            mixes.append(op)
        if carried and op not in SIZES:
            flowing.add(node.name)
            source[node.name] = ways.pop() if pointwise else node.name
        if op in WEIGHTED:
            products.append((node, op, weight, image))
    _shapes_first(program, feed, flowing, widest)
    try:
        ShapeProp(program.graph_module).propagate(*feed)
    except Exception as exc:  # noqa: BLE001 - a graph that cannot run on two blank rows is not run
        raise Refused(
            f"the captured graph does not run on a sample ({type(exc).__name__})"
        ) from None
    found = []
    for node, op, weight, image in products:
        product: dict[str, Any] = {
            "op": op,
            "weight": origin.get(weight.name, "") if weight is not None else "",
            "used": shape_of(weight),
            "rows": shape_of(image),
        }
        if op in CONVOLUTIONS:
            product["conv"] = _convolution(node, image)
        found.append(product)
    way = [
        [op_name(node), shape_of(node)]
        for node in program.graph_module.graph.nodes
        if node.name in flowing and node.op == "call_function"
    ]  # [] where it is no one tensor
    return uses, mixes, found, way


def _convolution(node: Any, image: Any) -> dict[str, Any]:
    """How a convolution ran: its stride, padding, dilation, groups and transposed as the op was
    called (the op's defaults filled in), and the padding op the image came through just before
    (``pad``: its amounts and mode), which nn.Conv2d's padding_mode and nn.ZeroPad2d make. The
    rule (static/rules/linear_graph.py) holds them to the template's layer."""
    schema = getattr(node.target, "_schema", None)
    defaults = {
        a.name: a.default_value
        for a in (schema.arguments if schema is not None else ())
        if a.has_default_value()
    }
    called = {**defaults, **dict(_bound(node))}
    found: dict[str, Any] = {
        name: _plain(called.get(name))
        for name in ("stride", "padding", "dilation", "groups", "transposed", "output_padding")
        if name in called
    }
    if image is not None and op_name(image) in PADDING:
        given = dict(_bound(image))
        found["pad"] = _plain(given.get("pad", given.get("padding")))
        found["mode"] = _plain(given.get("mode", "constant"))
        found["value"] = _plain(given.get("value", 0.0))
    return found


def _plain(value: Any) -> Any:
    """A constant argument as JSON (ints, floats, strings, lists of them); None for anything
    computed in the graph."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list | tuple):
        items = [_plain(v) for v in value]
        return items if all(v is not None for v in items) else None
    return None


# What a graph may cost before the evaluator runs it, in ``widest`` (the values per image the
# image's way may hold, the template's widest layer four times): per test image, the values of all
# the tensors it makes, views included (VALUES_PER_IMAGE: an honest model makes about one), and the
# multiply-accumulates of its products and convolutions, and the values its pooling windows read
# (MACS_PER_VALUE: HW3's 784->512->256->10 costs 171, a CNN of 3x3 kernels ten); once a call,
# tensors made from weights alone (FIXED_VALUES: HW3's weights whole are 171) and products of them
# (MACS_PER_VALUE). A convolution of 27x27 kernels over 32 channels, or a bias expanded to
# gigabytes, is refused before it runs.
VALUES_PER_IMAGE = 8
MACS_PER_VALUE = 1024
FIXED_VALUES = 1024
LARGEST = 1000  # the most rows the evaluator feeds the graph at once (predict.py's chunks)


def _shapes_first(program: Any, feed: list[Any], flowing: set[str], widest: int) -> None:
    """Shapes with fake tensors (nothing allocated): a graph widening the image's way to gigabytes
    (x.unsqueeze(1).expand(-1, 10**6, 784).sum(1)), beyond ``widest`` values per image, is refused
    before any real run, and so is one whose work is past the bounds above. The graph is followed
    on 3, ``LARGEST`` and 2 blank images: what it makes beside the batch (3 * cost(2) - 2 * cost(3),
    per op) is once a call, the rest of its cost at ``LARGEST`` rows per image (a tensor of the
    batch's square, rows compared with rows, costs what it does in the evaluator's own batch)."""
    three, largest, two = (_fake_costs(program, feed, flowing, rows) for rows in (3, LARGEST, 2))
    for node in program.graph_module.graph.nodes:
        shape = shape_of(node)
        width = math.prod(shape[1:]) if node.name in flowing and len(shape) > 1 else 0
        if width > widest:
            raise Refused(
                f"the captured graph holds {width} values per test image at "
                f"{op_name(node)}, far more than any layer of the homework's model"
            )
    ops = {node.name: op_name(node) for node in program.graph_module.graph.nodes}
    fixed = {
        name: [max(0, 3 * cost - 2 * three[name][kind]) for kind, cost in enumerate(costs)]
        for name, costs in two.items()
    }
    per_image = {
        name: [-(-max(0, cost - fixed[name][kind]) // LARGEST) for kind, cost in enumerate(costs)]
        for name, costs in largest.items()
    }
    bounds = (
        (per_image, 0, VALUES_PER_IMAGE, "makes {} values per test image"),
        (per_image, 1, MACS_PER_VALUE, "multiplies and adds {} times per test image"),
        (fixed, 0, FIXED_VALUES, "makes {} values from its weights alone"),
        (fixed, 1, MACS_PER_VALUE, "multiplies and adds {} times on its weights alone"),
    )
    for found, kind, factor, says in bounds:
        total = sum(cost[kind] for cost in found.values())
        if total > factor * widest:
            most = max(found, key=lambda name: found[name][kind])
            raise Refused(
                f"the captured graph {says.format(total)} ({ops[most]} the most), more than "
                f"{factor} times the widest way the homework's layers allow ({widest} values)"
            )


def _fake_costs(
    program: Any, feed: list[Any], flowing: set[str], rows: int
) -> dict[str, tuple[int, int]]:
    """Per op of the graph followed with fake tensors on ``rows`` blank images: the values it makes
    and its multiply-accumulates (``node.meta`` keeps these shapes)."""
    placeholders = [n for n in program.graph_module.graph.nodes if n.op == "placeholder"]
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as fake:
            inputs = [
                torch.empty(rows, *t.shape[1:], dtype=t.dtype)
                if node.name in flowing
                else fake.from_tensor(t)
                for node, t in zip(placeholders, feed, strict=True)
            ]
            ShapeProp(program.graph_module, fake_mode=fake).propagate(*inputs)
    except Exception as exc:  # noqa: BLE001 - a graph whose shapes cannot be followed is not run
        raise Refused(
            f"the captured graph does not run on a sample ({type(exc).__name__})"
        ) from None
    return {
        node.name: (_values(node), _macs(node))
        for node in program.graph_module.graph.nodes
        if node.op == "call_function"
    }


def _values(node: Any) -> int:
    """The values of the tensors a node makes (each of a tuple's: max_pool2d_with_indices), none
    for ``getitem``, which picks one of them."""
    meta = node.meta.get("tensor_meta")
    if op_name(node) == "getitem" or meta is None:
        return 0
    items = [meta] if hasattr(meta, "shape") else meta if isinstance(meta, list | tuple) else []
    return sum(math.prod(m.shape) for m in items if hasattr(m, "shape"))


def _macs(node: Any) -> int:
    """A product's or a convolution's multiply-accumulates, or the values a pooling op's windows
    read, from the shapes it ran on; 0 for any other op."""
    op, given = op_name(node), dict(_bound(node))
    shape = _made(node)
    out = math.prod(shape)
    if op in CONVOLUTIONS:  # each output value (each input value, transposed): a weight's row
        weight, rows = shape_of(given.get("weight")), shape
        if given.get("transposed") is True:
            rows = shape_of(given.get("input"))
        return math.prod(rows) * math.prod(weight[1:])
    if op in POOLING:
        dims = 3 if "3d" in op else 2 if "2d" in op else 1
        if "adaptive" in op:  # windows of at most ceil(in / out) + 1 along each dimension
            image = shape_of(given.get("self", given.get("input")))
            pairs = zip(image[-dims:], shape[-dims:], strict=True)
            return out * math.prod(-(-i // max(o, 1)) + 1 for i, o in pairs)
        size = _plain(given.get("kernel_size"))
        sizes = [size] if isinstance(size, int) else size if isinstance(size, list) else [1]
        return out * math.prod(sizes * dims if len(sizes) == 1 else sizes)
    if op not in PRODUCTS:
        return 0
    factors = [v for name, v in _bound(node) if isinstance(v, torch.fx.Node) and name != "bias"]
    if op.startswith("add") or op == "baddbmm":  # the added tensor first
        factors = factors[1:]
    first = shape_of(factors[0]) if factors else []
    batches = first[0] if op == "addbmm" and first else 1
    return out * (first[-1] if first else 0) * batches


def _made(node: Any) -> list[int]:
    """The shape of the tensor a node makes (the first of a tuple: max_pool2d_with_indices)."""
    meta = node.meta.get("tensor_meta")
    first = meta[0] if not hasattr(meta, "shape") and isinstance(meta, list | tuple) else meta
    return [int(d) for d in first.shape] if hasattr(first, "shape") else []


def copies(program: Any, uses: Uses) -> list[str]:
    """The tensors the graph never uses that equal one it uses: a layer held under a second name
    (``self.block = nn.Sequential(self.fc1, ...)``) is listed twice by torch.export, used once."""
    values = {**program.constants, **program.state_dict}
    used = [
        values[name]
        for name, found in uses.items()
        if found and isinstance(values.get(name), torch.Tensor)
    ]
    return [
        name
        for name, found in uses.items()
        if not found
        and isinstance(values.get(name), torch.Tensor)
        and any(
            v.shape == values[name].shape
            and v.dtype == values[name].dtype
            and torch.equal(v, values[name])
            for v in used
        )
    ]


def op_name(node: Any) -> str:
    """aten.linear.default -> linear; a placeholder -> its kind."""
    if node.op != "call_function":
        return str(node.op)
    packet = getattr(node.target, "overloadpacket", None)
    return str(getattr(packet, "__name__", None) or getattr(node.target, "__name__", node.target))


def shape_of(node: Any) -> list[int]:
    """The shape a node's tensor had when the graph ran (ShapeProp), or [] if none."""
    meta = node.meta.get("tensor_meta") if node is not None else None
    return [int(d) for d in meta.shape] if meta is not None and hasattr(meta, "shape") else []


def _nodes(value: Any) -> list[Any]:
    """The graph nodes an argument holds (a node, or nodes inside lists and tuples), in order."""
    found: list[Any] = []

    def keep(node: Any) -> Any:
        found.append(node)
        return node

    torch.fx.node.map_arg(value, keep)
    return found


def _bound(node: Any) -> list[tuple[str, Any]]:
    """A node's arguments by the names of its op's schema."""
    schema = getattr(node.target, "_schema", None)
    names = [a.name for a in schema.arguments] if schema is not None else []
    positional = [
        (names[i] if i < len(names) else f"arg{i}", value) for i, value in enumerate(node.args)
    ]
    return positional + [(str(key), value) for key, value in node.kwargs.items()]
