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
from grader.evaluator.ops import CONVOLUTIONS, PADDING, PASS_THROUGH, POINTWISE, SIZES, WEIGHTED

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
    tensor other than the image's way (``mm.out`` into a weight, say), and a way wider than
    ``widest`` values per image (the grader's bound, static/layers.py ``widest_way``). A
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


def _shapes_first(program: Any, feed: list[Any], flowing: set[str], widest: int) -> None:
    """Shapes with fake tensors (nothing allocated): a graph widening the image's way to gigabytes
    (x.unsqueeze(1).expand(-1, 10**6, 784).sum(1)), beyond ``widest`` values per image, is refused
    before any real run."""
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as fake:
            ShapeProp(program.graph_module, fake_mode=fake).propagate(
                *[fake.from_tensor(t) for t in feed]
            )
    except Exception as exc:  # noqa: BLE001 - a graph whose shapes cannot be followed is not run
        raise Refused(
            f"the captured graph does not run on a sample ({type(exc).__name__})"
        ) from None
    for node in program.graph_module.graph.nodes:
        shape = shape_of(node)
        width = math.prod(shape[1:]) if node.name in flowing and len(shape) > 1 else 0
        if width > widest:
            raise Refused(
                f"the captured graph holds {width} values per test image at "
                f"{op_name(node)}, far more than any layer of the homework's model"
            )


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
