"""The linear_layers rule on the captured graph (grader/static/rules/linear_graph.py): each named
check on the facts it reads, the order they run in (the first finding is the verdict), and the
product ops counted alike in the graph and in the kernel's traced forward pass. On figures alone:
the evaluator that produces them is tested in test_evaluator.py."""

from __future__ import annotations

import types
from collections import Counter
from typing import Any

import pytest

from grader.judge import recompute
from grader.judge.recompute import GraphFacts, Product
from grader.model.probe_facts import parse
from grader.model.rubric import FrozenFacts, Rubric, WeightLayer
from grader.probe.schema import RECORD_VERSION
from grader.static.layers import Spec, spec
from grader.static.rules import linear_graph, linear_layers
from grader.static.rules.linear_graph import CHECKS, GraphView


def _check(graph: recompute.GraphFacts, facts: FrozenFacts, rubric: Rubric) -> Any:
    """The rule's verdict on a graph's facts, as the run-time half reaches it."""
    run = types.SimpleNamespace(recomputed=recompute.Recomputed(None, graph=graph), record={})
    return linear_layers._graph_check(run, facts, rubric)


MATRICES = (("fc1.weight", (512, 784)), ("fc2.weight", (256, 512)), ("fc3.weight", (10, 256)))
PRODUCT_USES = {name: (("linear", "weight"),) for name, _ in MATRICES}
OPS = {
    "torch.ops.aten.linear.default": 3,
    "torch.ops.aten.relu.default": 2,
    "torch.ops.aten.view.default": 1,
}


def test_data_beside_the_linear_layers_is_a_violation_or_review(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    many = tuple((f"memory{i}", (4000,)) for i in range(8))
    check = _check(recompute.GraphFacts(OPS, MATRICES, many, ()), facts, rubric)
    assert check.ok is False and "32000 values beside its weight matrices" in check.message
    odd = recompute.GraphFacts(
        {**OPS, "torch.ops.aten.sub.Tensor": 1},
        MATRICES,
        (("table", (512,)),),
        (),
        {**PRODUCT_USES, "table": (("sub", "other"),)},
    )
    check = _check(odd, facts, rubric)
    assert check.ok is None and "table [512] in sub (other)" in check.message
    laundered = recompute.GraphFacts(
        {**OPS, "torch.ops.aten.batch_norm.default": 1},
        MATRICES,
        (("keys", (4000,)),),
        (),
        {**PRODUCT_USES, "keys": (("batch_norm", "input"),)},
    )
    # a normalization's input is no normalization weight
    assert _check(laundered, facts, rubric).ok is None
    pixels = recompute.GraphFacts(
        {**OPS, "torch.ops.aten.sub.Tensor": 1},
        MATRICES,
        (("mean", (1, 28, 28)),),
        (),
        {**PRODUCT_USES, "mean": (("sub", "other"),)},
    )
    assert _check(pixels, facts, rubric).ok is True  # an input normalization kept in the model
    pixels = recompute.GraphFacts(
        {**OPS, "torch.ops.aten.mm.default": 1},
        MATRICES,
        (("mean", (28, 28)),),
        (),
        {**PRODUCT_USES, "mean": (("mm", "mat2"),)},
    )
    # the same values as a matrix multiplying the image
    assert _check(pixels, facts, rubric).ok is False
    spare = (("spare.weight", (512, 784)),)
    unused = recompute.GraphFacts(
        OPS, MATRICES + spare, (), (), {**PRODUCT_USES, "spare.weight": ()}
    )
    assert _check(unused, facts, rubric).ok is False  # a layer added and never used is still added
    shared = recompute.GraphFacts(
        OPS,
        MATRICES + spare,
        (),
        (),
        {**PRODUCT_USES, "spare.weight": ()},
        copies=("spare.weight",),
    )
    assert _check(shared, facts, rubric).ok is True  # fc1 under a second name: one layer
    normal = recompute.GraphFacts(
        {**OPS, "torch.ops.aten.batch_norm.default": 1},
        MATRICES,
        (("bn.running_mean", (512,)),),
        (),
        {**PRODUCT_USES, "bn.running_mean": (("batch_norm", "running_mean"),)},
    )
    assert _check(normal, facts, rubric).ok is True


def test_the_image_way_is_held_to_a_chain_of_the_layers(facts: FrozenFacts, rubric: Rubric) -> None:
    """Copies of the 256-wide way scaled by a BatchNorm's weights and summed back are one more
    learned
    layer, within the widths; so are many normalizations in a row, or one used twice."""
    chain = (
        ("view", (2, 784)),
        ("linear", (2, 512)),
        ("batch_norm", (2, 512)),
        ("relu", (2, 512)),
        ("linear", (2, 256)),
        ("relu", (2, 256)),
        ("linear", (2, 10)),
    )
    plain = recompute.GraphFacts(OPS, MATRICES, (), (), PRODUCT_USES, way=chain)
    assert _check(plain, facts, rubric).ok is True
    copied = (
        chain[:6]
        + (("expand", (2, 2, 256)), ("batch_norm", (2, 512)), ("sum", (2, 256)))
        + chain[6:]
    )
    check = _check(
        recompute.GraphFacts(OPS, MATRICES, (), (), PRODUCT_USES, way=copied), facts, rubric
    )
    assert check.ok is None and "goes through expand" in check.message
    stacked = chain[:3] + (("batch_norm", (2, 512)),) * 2 + chain[3:]
    check = _check(
        recompute.GraphFacts(OPS, MATRICES, (), (), PRODUCT_USES, way=stacked), facts, rubric
    )
    assert check.ok is None and "more than 2 normalization layers" in check.message
    regrouped = (
        chain[:4]
        + (("view", (2, 256, 2)), ("getitem", (2, 256, 1)), ("view", (2, 256)))
        + chain[5:]
    )
    check = _check(
        recompute.GraphFacts(OPS, MATRICES, (), (), PRODUCT_USES, way=regrouped), facts, rubric
    )
    assert check.ok is None and "has the shape [2, 256, 1] after getitem" in check.message
    slopes = chain[:3] + (("prelu", (2, 512)),) * 2 + chain[3:]
    check = _check(
        recompute.GraphFacts(OPS, MATRICES, (), (), PRODUCT_USES, way=slopes), facts, rubric
    )
    assert check.ok is None and "PReLUs" in check.message
    twice = {**PRODUCT_USES, "bn.weight": (("batch_norm", "weight"), ("batch_norm", "weight"))}
    check = _check(
        recompute.GraphFacts(OPS, MATRICES, (("bn.weight", (512,)),), (), twice, way=chain),
        facts,
        rubric,
    )
    assert check.ok is None and "uses bn.weight 2 times" in check.message


def test_a_structure_of_any_shape_is_undecided_not_a_crash(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    measured = recompute.Recomputed(
        None,
        graph=recompute.GraphFacts(OPS, MATRICES, (), ()),
        changed_after_pass=True,
        structure_at_pass={"x": 1},
    )
    check = linear_layers._graph_check(
        types.SimpleNamespace(recomputed=measured, record={}), facts, rubric
    )
    assert check is not None and check.ok is None


# -- each named check on its own ---------------------------------------------------------------
FROZEN = Counter({(784, 512): 1, (512, 256): 1, (256, 10): 1})
BIASES = (("fc1.bias", (512,)), ("fc2.bias", (256,)), ("fc3.bias", (10,)))
CHAIN = (
    ("view", (2, 784)),
    ("linear", (2, 512)),
    ("relu", (2, 512)),
    ("linear", (2, 256)),
    ("relu", (2, 256)),
    ("linear", (2, 10)),
)
HONEST = GraphFacts(
    ops=OPS,
    parameters=MATRICES + BIASES,
    buffers=(),
    constants=(),
    uses={**PRODUCT_USES, **{name: (("linear", "bias"),) for name, _ in BIASES}},
    products=tuple(
        Product(op="linear", weight=name, used=shape, rows=(2, shape[1]))
        for name, shape in MATRICES
    ),
    way=CHAIN,
)


def _with(
    specs: tuple[Spec, ...] = (), frozen: linear_graph.Layers = FROZEN, **changes: Any
) -> GraphView:
    """The honest graph's view with some facts changed (``GraphFacts`` fields), and the template's
    layers as ``specs`` (or only their keys, ``frozen``) where a check reads them."""
    fields = {name: getattr(HONEST, name) for name in HONEST.__dataclass_fields__}
    return GraphView.of(GraphFacts(**{**fields, **changes}), frozen, specs)


# A template's conv1 (kernel 3, padding 1); a convolution by its weight as the evaluator read it.
CONV1 = spec(
    WeightLayer(
        kind="Conv2d",
        name="self.conv1",
        args=(("in_channels", 1), ("out_channels", 16), ("kernel_size", 3), ("padding", 1)),
    )
)


# A convolutional template's keys, and conv1's maps as a convolution makes them.
CNN: linear_graph.Layers = Counter({(16, 1, 3, 3): 1, (1568, 10): 1})
MAPS = (("view", (2, 1, 28, 28)), ("conv2d", (2, 16, 28, 28)))


def _conv(
    conv: Any = (), transposed: bool = False, padded: bool = False, **arguments: Any
) -> tuple[Product, ...]:
    ran = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1, **arguments}
    return (
        Product(
            op="conv2d",
            weight="conv1.weight",
            used=(16, 1, 3, 3),
            rows=(2, 1, 28, 28),
            conv=tuple(ran.items()) if conv is None else conv,
            transposed=transposed,
            padded=padded,
        ),
    )


def _products(**at: Product) -> tuple[Product, ...]:
    return tuple(at.get(p.weight.split(".")[0], p) for p in HONEST.products)


CASES: list[tuple[Any, dict[str, Any], bool | None, str]] = [
    (
        linear_graph.held_weights,
        {"parameters": MATRICES + (("conv.weight", (8, 1, 3, 3)),)},
        False,
        "holds the weights conv.weight [8, 1, 3, 3]; only the Linear layers 784->512, 512->256, "
        "256->10",
    ),
    (
        linear_graph.held_weights,
        {"parameters": MATRICES + (("memory", (5000,)),)},
        False,
        "holds the weights memory [5000]",
    ),
    (
        linear_graph.weight_matrices,
        {"parameters": MATRICES[:2] + (("fc3.weight", (10, 512)),)},
        False,
        "has the weight matrices 784->512, 512->256, 512->10; the homework fixes 784->512",
    ),
    (
        linear_graph.stored_data,
        {"constants": (("answers", (2000,)),)},
        False,
        "holds the constant answers [2000] (2000 values): data beside the Linear layers",
    ),
    (
        linear_graph.stored_data,
        {"buffers": (("table", (10, 10)),)},
        False,
        "holds the buffer table [10, 10] (100 values)",
    ),
    (
        linear_graph.values_beside,
        {"buffers": tuple((f"m{i}", (4000,)) for i in range(5))},
        False,
        "holds 20778 values beside its weight matrices (normalization and biases need at most "
        "16384)",
    ),
    (
        linear_graph.tensor_uses,
        {"uses": {**HONEST.uses, "fc1.bias": (("linear", "bias"),) * 2}},
        None,
        "uses fc1.bias 2 times; each layer's tensors are used once",
    ),
    (
        linear_graph.tensor_uses,
        {"uses": {**HONEST.uses, "fc1.bias": (("mul", "other"),)}},
        None,
        "uses fc1.bias [512] in mul (other), not as a Linear layer's weight or bias",
    ),
    (
        linear_graph.norm_tables,
        {
            "parameters": MATRICES + (("ln.weight", (16, 28, 28)),),
            "uses": {**HONEST.uses, "ln.weight": (("layer_norm", "weight"),)},
            "way": CHAIN + (("layer_norm", (2, 16, 28, 28)),),
        },
        None,
        "applies ln.weight [16, 28, 28]: a normalization's weights of one value per position",
    ),
    (
        linear_graph.norm_tables,
        {
            "frozen": CNN,
            "parameters": (("conv1.weight", (16, 1, 3, 3)), ("ln.bias", (1568,))),
            "uses": {"ln.bias": (("layer_norm", "bias"),)},
            "way": (("flatten", (2, 1568)), ("layer_norm", (2, 1568))),
        },
        None,
        "applies ln.bias [1568]: a normalization's weights of one value per position",
    ),
    (
        linear_graph.mixed_image,
        {"mixes": ("mul", "add", "mul")},
        None,
        "combines two tensors computed from the image in add, mul: not a chain",
    ),
    (
        linear_graph.odd_products,
        {
            "products": _products(
                fc2=Product(op="matmul", weight="fc2.weight", used=(256, 512), rows=(2, 2, 256))
            )
        },
        None,
        "uses fc2.weight [256, 512] as [256, 512] in matmul on rows of shape [2, 2, 256] (two "
        "images)",
    ),
    (
        linear_graph.odd_products,
        {
            "products": _products(
                fc1=Product(op="addbmm", weight="fc1.weight", used=(1, 784, 512), rows=(1, 2, 784))
            )
        },
        None,
        "uses fc1.weight [512, 784] as [1, 784, 512] in addbmm",
    ),
    (
        linear_graph.odd_products,
        {"products": _products(fc3=Product(op="mv", weight="", used=(), rows=(256,)))},
        None,
        "multiplies by something that is no weight matrix in mv; each Linear layer multiplies",
    ),
    (
        linear_graph.conv_arguments,
        {"specs": (CONV1,), "products": _conv(None, stride=(2, 2))},
        False,
        "applies conv1.weight as Conv2d(1, 16, kernel_size=3, stride=2, padding=1); the "
        "template's conv1 is Conv2d(1, 16, kernel_size=3, padding=1): stride 2 (the template's 1)",
    ),
    (
        linear_graph.conv_arguments,
        {"specs": (CONV1,), "products": _conv(None, transposed=True)},
        False,
        "applies conv1.weight [16, 1, 3, 3] in a transposed convolution",
    ),
    (
        linear_graph.conv_arguments,
        {"specs": (CONV1,), "products": _conv()},
        None,
        "in a convolution whose stride, padding, dilation or groups could not be read",
    ),
    (
        linear_graph.map_extents,
        {"frozen": CNN, "image": (28, 28), "way": (("view", (2, 1, 14, 56)),)},
        None,
        "has the shape [2, 1, 14, 56] after view: maps of another size than the image's 28x28",
    ),
    (
        linear_graph.map_extents,
        {"frozen": CNN, "image": (28, 28), "way": MAPS + (("slice", (2, 16, 14, 14)),)},
        None,
        "has the shape [2, 16, 14, 14] after slice",
    ),
    (
        linear_graph.map_extents,
        {
            "frozen": CNN,
            "image": (28, 28),
            "way": MAPS,
            "ops": {"torch.ops.aten.pad.default": 2},
            "products": _conv(None, padded=True),
        },
        None,
        "pads the maps 1 time other than just before a convolution",
    ),
    (
        linear_graph.map_extents,
        {"frozen": CNN, "image": (28, 28), "way": (("adaptive_avg_pool2d", (2, 1, 56, 56)),)},
        None,
        "is pooled from 28x28 to 56x56, larger maps than it pooled",
    ),
    (
        linear_graph.odd_way,
        {"way": CHAIN + (("abs", (2, 10)), ("sub", (2, 10)), ("mul", (2, 10))) * 5},
        None,
        "goes through more than 12 elementwise activations and arithmetic ops between two Linear",
    ),
    (
        linear_graph.odd_way,
        {"way": CHAIN[:3] + (("sum", (2, 512)),) + CHAIN[3:]},
        None,
        "the image's way through the model that made the graded predictions goes through sum",
    ),
    (
        linear_graph.odd_way,
        {"way": CHAIN[:2] + (("view", (2, 256, 2)), ("softmax", (2, 256, 2)))},
        None,
        "has the shape [2, 256, 2] after softmax (two images); the homework's layers are 784, "
        "512, 256, 10",
    ),
    (
        linear_graph.odd_way,
        {"way": CHAIN[:2] + (("layer_norm", (2, 512)),) * 3 + CHAIN[2:]},
        None,
        "goes through more than 2 normalization layers or PReLUs between two Linear layers",
    ),
    (
        linear_graph.other_ops,
        {"ops": {**OPS, "torch.ops.aten.sort.default": 1}},
        False,
        "computes sort (1x); only the Linear layers, normalization, dropout and activations may",
    ),
    (
        linear_graph.product_count,
        {"ops": {**OPS, "torch.ops.aten.mv.default": 2}},
        False,
        "multiplies by weights 5 times; the homework's 784->512, 512->256, 256->10 do 3",
    ),
    (
        linear_graph.product_count,
        {"ops": {**OPS, "torch.ops.aten.addbmm.default": 1}},
        False,
        "multiplies by weights 4 times",
    ),
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_every_check_passes_the_honest_graph(check: Any) -> None:
    assert check(GraphView.of(HONEST, FROZEN)) is None


@pytest.mark.parametrize(
    ("check", "changes", "ok", "says"),
    CASES,
    ids=[f"{c.__name__}-{i}" for i, (c, *_rest) in enumerate(CASES)],
)
def test_each_check_finds_what_it_is_for(
    check: Any, changes: dict[str, Any], ok: bool | None, says: str
) -> None:
    found = check(_with(**changes))
    assert found is not None and found.ok is ok and says in found.message, found


def test_every_check_has_its_own_test() -> None:
    assert {case[0] for case in CASES} == set(CHECKS)


def test_the_checks_run_in_order_and_the_first_finding_is_the_verdict(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    assert [c.__name__ for c in CHECKS] == [
        "held_weights",
        "weight_matrices",
        "stored_data",
        "values_beside",
        "tensor_uses",
        "norm_tables",
        "mixed_image",
        "odd_products",
        "conv_arguments",
        "map_extents",
        "odd_way",
        "other_ops",
        "product_count",
    ]
    assert _check(HONEST, facts, rubric).ok is True
    # data beside the layers (a violation) comes before the image's mixing (a person's look)
    both = _with(constants=(("answers", (2000,)),), mixes=("mul",)).graph
    check = _check(both, facts, rubric)
    assert check.ok is False and "constant answers" in check.message
    assert _check(_with(mixes=("mul",)).graph, facts, rubric).ok is None


def _fallback(ops: list[dict[str, Any]], facts: FrozenFacts, rubric: Rubric) -> Any:
    """The rule without a graph: on the kernel's traced forward pass (its weight ops)."""
    owners = [
        {"module": f"fc{i + 1}", "type": "Linear", "shapes": [list(shape), [shape[0]]]}
        for i, (_, shape) in enumerate(MATRICES)
    ]
    record = {
        "version": RECORD_VERSION,
        "architecture": {"parameters": owners, "ops": ops, "error": None},
    }
    run = types.SimpleNamespace(recomputed=None, record=parse(record))
    return linear_layers.runtime(run, facts, rubric)


def test_the_traced_forward_pass_counts_every_product_alike(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """Every op of the one product table is a product in the kernel's trace too, held to the layers'
    shapes: addbmm summing one batch is fc1; mv and addmv multiply one vector, which is no Linear
    layer applied to rows (nn.Linear never runs them), so they stay a violation."""
    addmm = [
        {"op": "addmm", "shapes": [[out], [2, width], [width, out]]}
        for (_, (out, width)) in MATRICES
    ]
    assert _fallback(addmm, facts, rubric).ok is True
    batched = [{"op": "addbmm", "shapes": [[512], [1, 2, 784], [1, 784, 512]]}] + addmm[1:]
    assert _fallback(batched, facts, rubric).ok is True
    for vector in (
        {"op": "mv", "shapes": [[512, 784], [784]]},
        {"op": "addmv", "shapes": [[512], [512, 784], [784]]},
    ):
        check = _fallback([vector] + addmm[1:], facts, rubric)
        assert check.ok is False and "weights of ?, 512->256, 256->10" in check.message
    conv = {"op": "conv2d", "shapes": [[2, 1, 28, 28], [8, 1, 3, 3]]}
    check = _fallback([conv] + addmm, facts, rubric)
    assert check.ok is False and "applies conv2d" in check.message
