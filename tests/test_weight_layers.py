"""A convolutional template (tests/fixtures/cnn/template.ipynb: two nn.Conv2d with pooling and one
nn.Linear, its epochs constant passed to a training function, its validation fraction in
random_split's fraction list): `grader rubric` derives its facts by their use, the draft freezes its
weight layers as ``weight_layers``, and the static check, the kernel's traced forward pass and the
captured graph judge a student's CNN as they judge HW3's MLP. In-process and static (one tiny model
exported with torch.export for the graph)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import nbformat
import pytest
from notebooks import variant

from grader.cli import ExitCode, main
from grader.intake.read import read_submission
from grader.judge import recompute
from grader.model.errors import RubricError
from grader.model.findings import RuleId
from grader.model.probe_facts import parse
from grader.model.results import Check
from grader.model.rubric import FrozenFacts, Rubric, load_rubric, parse_rubric
from grader.probe.schema import RECORD_VERSION
from grader.static.reference import derive_facts
from grader.static.rules import RULES, check_static, linear_graph, linear_layers

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "tests" / "fixtures" / "cnn" / "template.ipynb"
CONV1 = "self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)"
CONV2 = "self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)"
FORWARD = "x = self.pool(F.relu(self.conv1(x)))"


def _notebook(path: Path, cells: tuple[str, ...]) -> Path:
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(book, str(path))
    return path


@pytest.fixture(scope="module")
def drafted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Rubric, FrozenFacts]:
    """The rubric `grader rubric` drafts from the CNN template, loaded back, and its facts."""
    out = tmp_path_factory.mktemp("draft") / "rubric.yaml"
    assert main(["rubric", str(TEMPLATE), "--out", str(out)]) == ExitCode.OK
    rubric = load_rubric(out)
    return rubric, derive_facts(rubric.template)


def _checks(path: Path, drafted: tuple[Rubric, FrozenFacts]) -> dict[str, Check]:
    rubric, facts = drafted
    return {c.id: c for c in check_static(read_submission(path), facts, rubric).checks}


def test_the_facts_are_found_by_their_use_not_their_names() -> None:
    """ROUNDS reaches the epoch loop as fit()'s ``passes``; HOLDOUT_SHARE is random_split's last
    fraction (neither scales a size, neither is named like n_epochs or valid)."""
    facts = derive_facts(TEMPLATE)
    assert (facts.epochs_name, facts.epochs, facts.valid_name, facts.valid_size) == (
        "ROUNDS",
        3,
        "HOLDOUT_SHARE",
        0.2,
    )
    assert [(layer.kind, layer.name) for layer in facts.weight_layers] == [
        ("Conv2d", "self.conv1"),
        ("Conv2d", "self.conv2"),
        ("Linear", "self.fc"),
    ]
    assert dict(facts.weight_layers[1].args) == {
        "in_channels": 16,
        "out_channels": 32,
        "kernel_size": 3,
        "padding": 1,
    }


def test_the_draft_freezes_the_weight_layers_and_grades_the_template_clean(
    drafted: tuple[Rubric, FrozenFacts], capsys: pytest.CaptureFixture[str]
) -> None:
    rubric, facts = drafted
    assert rubric.frozen == (RuleId.EPOCHS, RuleId.VALID_SIZE, RuleId.WEIGHT_LAYERS)
    assert facts == derive_facts(TEMPLATE)
    checks = _checks(TEMPLATE, drafted)
    assert {rule: c.ok for rule, c in checks.items()} == {
        "epochs": True,
        "valid_size": True,
        "weight_layers": True,
    }, checks
    assert checks["weight_layers"].message == (
        "the template's weight layers are unchanged (Conv2d(1, 16, kernel_size=3, padding=1), "
        "Conv2d(16, 32, kernel_size=3, padding=1), 1568->10) and no weight layer was added"
    )


def test_a_compliant_student_passes(tmp_path: Path, drafted: tuple[Rubric, FrozenFacts]) -> None:
    """Normalization, dropout, another optimizer and batch size, the same layers spelled another
    way (keywords, a (3, 3) kernel, padding='same', stride=1 given, conv2 applied by F.conv2d with
    its own weight and the same padding): every rule kept."""
    path = variant(
        tmp_path / "HW_good.ipynb",
        TEMPLATE,
        (
            CONV1,
            "self.conv1 = nn.Conv2d(in_channels=1, out_channels=16, kernel_size=(3, 3), "
            "stride=1, padding='same')\n        self.bn1 = nn.BatchNorm2d(16)",
        ),
        (CONV2, CONV2 + "\n        self.drop = nn.Dropout(0.25)"),
        ("x = self.pool(F.relu(self.conv1(x)))", "x = self.pool(F.relu(self.bn1(self.conv1(x))))"),
        ("torch.flatten(x, 1)", "self.drop(torch.flatten(x, 1))"),
        (
            "x = self.pool(F.relu(self.conv2(x)))",
            "x = self.pool(F.relu(F.conv2d(x, self.conv2.weight, self.conv2.bias, 1, 'same')))",
        ),
        ("BATCH_SIZE = 64", "BATCH_SIZE = 128"),
        (
            "torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)",
            "torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)",
        ),
    )
    checks = _checks(path, drafted)
    assert all(c.ok is True for c in checks.values()), checks


@pytest.mark.parametrize(
    ("changes", "rule", "says"),
    [
        (
            ((CONV1, "self.conv1 = nn.Conv2d(1, 16, kernel_size=5, padding=1)"),),
            "weight_layers",
            "self.conv1 = nn.Conv2d(1, 16, kernel_size=5, padding=1) differs from the "
            "template's self.conv1 nn.Conv2d(1, 16, kernel_size=3, padding=1): kernel_size 5 "
            "(the template's 3)",
        ),
        (
            (
                (CONV1, "self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)"),
                (CONV2, "self.conv2 = nn.Conv2d(32, 32, kernel_size=3, padding=1)"),
            ),
            "weight_layers",
            "self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1) differs from the "
            "template's self.conv1 nn.Conv2d(1, 16, kernel_size=3, padding=1): out_channels 32 "
            "(the template's 16)",
        ),
        (
            ((CONV2, "self.conv2 = nn.Conv2d(16, 32, kernel_size=3, stride=2, padding=1)"),),
            "weight_layers",
            "stride 2 (the template's 1)",
        ),
        (
            ((CONV2, "self.conv2 = nn.Conv2d(16, 32, kernel_size=3)"),),
            "weight_layers",
            "padding 0 (the template's 1)",
        ),
        (
            ((CONV2, CONV2 + "\n        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)"),),
            "weight_layers",
            "self.conv3 = nn.Conv2d(32, 32, kernel_size=3, padding=1) is one nn.Conv2d more than "
            "the template's 2: Conv2d(1, 16, kernel_size=3, padding=1), Conv2d(16, 32, "
            "kernel_size=3, padding=1)",
        ),
        (
            ((CONV2, CONV2 + "\n        self.extra = nn.Conv1d(1, 4, 3)"),),
            "weight_layers",
            "adds a Conv1d layer",
        ),
        (
            (("self.fc = nn.Linear(32 * 7 * 7, 10)", "self.fc = nn.Linear(32 * 7 * 7, 64)"),),
            "weight_layers",
            "nn.Linear(1568, 64) differs from the fixed 1568->10",
        ),
        (
            (("return self.fc(torch.flatten(x, 1))", "return F.conv2d(x, self.w).mean((2, 3))"),),
            "weight_layers",
            "applies its own weights with F.conv2d; only the template's weight layers may",
        ),
        (
            (
                (
                    "x = self.pool(F.relu(self.conv1(x)))",
                    "x = F.relu(F.conv2d(x, self.conv1.weight, self.conv1.bias, stride=2, "
                    "padding=1))",
                ),
            ),
            "weight_layers",
            "F.conv2d applies self.conv1's weight as nn.Conv2d(1, 16, kernel_size=3, stride=2, "
            "padding=1); the template's layer is nn.Conv2d(1, 16, kernel_size=3, padding=1): "
            "stride 2 (the template's 1)",
        ),
        (
            (("ROUNDS = 3", "ROUNDS = 5"),),
            "epochs",
            "ROUNDS is 5; the homework fixes it at 3",
        ),
        (
            (("HOLDOUT_SHARE = 0.2", "HOLDOUT_SHARE = 0.1"),),
            "valid_size",
            "HOLDOUT_SHARE is 0.1; the homework fixes it at 0.2",
        ),
    ],
    ids=[
        "kernel",
        "channels",
        "stride",
        "padding",
        "third-conv",
        "conv1d",
        "linear",
        "functional",
        "functional-stride",
        "epochs",
        "fraction",
    ],
)
def test_each_change_is_one_rule_broken_with_a_line_that_names_it(
    tmp_path: Path,
    drafted: tuple[Rubric, FrozenFacts],
    changes: tuple[tuple[str, str], ...],
    rule: str,
    says: str,
) -> None:
    checks = _checks(variant(tmp_path / "HW_bad.ipynb", TEMPLATE, *changes), drafted)
    broken = [c for c in checks.values() if c.ok is not True]
    assert [c.id for c in broken] == [rule], checks
    (check,) = broken
    assert check.ok is False and says in check.message and "\n" not in check.message, check
    assert check.instead == RULES[RuleId(rule)].instead and check.line is not None


def test_layers_removed_or_computed_at_run_time(
    tmp_path: Path, drafted: tuple[Rubric, FrozenFacts]
) -> None:
    removed = variant(tmp_path / "HW_one.ipynb", TEMPLATE, (CONV2, "self.conv2 = nn.Identity()"))
    check = _checks(removed, drafted)["weight_layers"]
    assert check.ok is False and "the model has 1 nn.Conv2d layers; the homework fixes 2" in (
        check.message
    )
    computed = variant(
        tmp_path / "HW_width.ipynb",
        TEMPLATE,
        ("self.conv1 = nn.Conv2d(1, 16,", "self.conv1 = nn.Conv2d(1, int(width()),"),
    )
    check = _checks(computed, drafted)["weight_layers"]
    assert check.ok is None and "a Conv2d's arguments are computed at run time" in check.message
    # a frozen layer's stride set after it is built, or passed to F.conv2d from a variable
    for forward, says in (
        (
            "self.conv1.stride = (2, 2)\n        " + FORWARD,
            "sets self.conv1.stride after the layer",
        ),
        (
            "x = F.conv2d(x, self.conv1.weight, self.conv1.bias, padding=self.pad)",
            "F.conv2d applies self.conv1's weight with a stride, padding, dilation or groups "
            "computed at run time",
        ),
    ):
        later = variant(tmp_path / "HW_later.ipynb", TEMPLATE, (FORWARD, forward))
        check = _checks(later, drafted)["weight_layers"]
        assert check.ok is None and says in check.message, check.message


def test_the_kernel_trace_counts_convolutions_as_products(
    drafted: tuple[Rubric, FrozenFacts],
) -> None:
    """Without a graph: the trained model's parameter owners and the traced forward pass's weight
    ops (``convolution`` at dispatch), held to the template's weight shapes; how the convolutions
    ran is the graph's to say, so at best a person looks."""
    rubric, facts = drafted
    shapes = {"conv1": [16, 1, 3, 3], "conv2": [32, 16, 3, 3], "fc": [10, 1568]}

    def run(conv1: list[int], ops: list[str], *more: dict[str, Any]) -> Check:
        held = {**shapes, "conv1": conv1}
        owners = [
            {"module": name, "type": "Linear" if name == "fc" else "Conv2d", "shapes": [s, s[:1]]}
            for name, s in held.items()
        ] + list(more)
        traced = [
            {"op": op, "shapes": [[2, 1, 28, 28], held[name], held[name][:1]]}
            if op == "convolution"
            else {"op": op, "shapes": [[10], [2, 1568], [1568, 10]]}
            for op, name in zip(ops, ("conv1", "conv2", "fc"))
        ]
        record = {
            "version": RECORD_VERSION,
            "architecture": {"parameters": owners, "ops": traced, "error": None},
        }
        view = types.SimpleNamespace(recomputed=None, record=parse(record))
        return RULES[RuleId.WEIGHT_LAYERS].runtime(view, facts, rubric)  # type: ignore[arg-type]

    # the weights' shapes hold; how the convolutions ran is read only on a captured graph
    honest = run(shapes["conv1"], ["convolution", "convolution", "addmm"])
    assert honest.ok is None and honest.id == "weight_layers"
    assert "uses weights of exactly the weight layers [16, 1, 3, 3], [32, 16, 3, 3], 1568->10" in (
        honest.message
    )
    assert "is read only on the captured graph, and there is none" in honest.message
    wider = run([16, 1, 5, 5], ["convolution", "convolution", "addmm"])
    assert wider.ok is False and "conv1 (Conv2d) of shape [16, 1, 5, 5]" in wider.message
    fewer = run(shapes["conv1"], ["convolution", "addmm", "addmm"])
    assert fewer.ok is False and "multiplies by weights of" in fewer.message
    # LayerNorms over conv1's maps and over rows of 28 hold weights of those shapes: a
    # normalization's, not weight layers (a weight such a module applied would be one more
    # product, counted above)
    norms = [
        {"module": "ln1", "type": "LayerNorm", "shapes": [[16, 28, 28], [16, 28, 28]]},
        {"module": "ln2", "type": "LayerNorm", "shapes": [[28, 28], [28, 28]]},
    ]
    found = run(shapes["conv1"], ["convolution", "convolution", "addmm"], *norms)
    assert found.ok is None and "uses weights of exactly the weight layers" in found.message


# -- the captured graph ------------------------------------------------------------------------
TINY = (
    "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F",
    "EPOCHS = 2\nVAL = 0.1",
    "train_set, valid_set = torch.utils.data.random_split(data, [1 - VAL, VAL])",
    "class Net(nn.Module):\n"
    "    def __init__(self, k=3):\n"
    "        super().__init__()\n"
    "        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)\n"
    "        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)\n"
    "        self.fc = nn.Linear(8 * 2 * 2, 10)\n"
    "    def forward(self, x):\n"
    "        x = F.max_pool2d(F.relu(self.conv1(x)), 2)\n"
    "        x = F.max_pool2d(F.relu(self.conv2(x)), 2)\n"
    "        return self.fc(x.flatten(1))",
    "model = Net()\nopt = torch.optim.SGD(model.parameters(), 0.1)\n"
    "for epoch in range(EPOCHS):\n"
    "    for x, y in loader:\n"
    "        opt.zero_grad()\n        F.cross_entropy(model(x), y).backward()\n        opt.step()",
)


def _graph(model: Any) -> recompute.GraphFacts:
    """A model's graph facts as the evaluator reads them (its flow over the exported graph)."""
    import torch

    from grader.evaluator.flow import flow

    program = torch.export.export(
        model.eval(),
        (torch.zeros(2, 1, 8, 8),),
        dynamic_shapes=({0: torch.export.Dim.AUTO},),
        strict=False,
    )
    # the width bound of FashionMNIST's 784 values, four images' worth (the images here are 8x8,
    # to keep it quick)
    uses, mixes, products, way = flow(program, [1, 8, 8], torch.float32, 4 * 28 * 28)
    ops: dict[str, int] = {}
    for node in program.graph_module.graph.nodes:
        if node.op == "call_function":  # as the capture's JSON names them
            target = (
                f"torch.ops.{node.target}"
                if isinstance(node.target, torch._ops.OpOverload)
                else f"_operator.{node.target.__name__}"
            )
            ops[target] = ops.get(target, 0) + 1
    return recompute.GraphFacts(
        ops=ops,
        parameters=tuple((n, tuple(p.shape)) for n, p in model.named_parameters()),
        buffers=tuple((n, tuple(b.shape)) for n, b in model.named_buffers()),
        constants=(),
        uses={n: tuple((op, argument) for op, argument in found) for n, found in uses.items()},
        mixes=tuple(mixes),
        products=recompute._products(products),  # as the judge parses the evaluator's JSON
        way=tuple((op, tuple(shape)) for op, shape in way),
    )


def test_the_graph_of_a_cnn_is_judged_like_an_mlps(tmp_path: Path) -> None:
    """conv2d is a product of a conv layer and max_pool2d part of the chain, for a template with
    conv layers; a changed kernel, an added convolution or a sort is found as in HW3."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    facts = derive_facts(_notebook(tmp_path / "tiny.ipynb", TINY))
    assert (facts.epochs_name, facts.valid_name) == ("EPOCHS", "VAL")

    class Net(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self, kernel: int = 3, third: bool = False, sort: bool = False) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, kernel, padding=kernel // 2)
            self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
            self.conv3 = nn.Conv2d(8, 8, 3, padding=1) if third else None
            self.fc = nn.Linear(8 * 2 * 2, 10)
            self.sort = sort

        def forward(self, x: Any) -> Any:
            x = nn.functional.max_pool2d(nn.functional.relu(self.conv1(x)), 2)
            x = nn.functional.max_pool2d(nn.functional.relu(self.conv2(x)), 2)
            x = self.conv3(x) if self.conv3 is not None else x
            x = x.flatten(1)
            return self.fc(torch.sort(x, dim=1).values if self.sort else x)

    def judged(model: Any) -> Check:
        recomputed = recompute.Recomputed(None, graph=_graph(model))
        check = linear_graph.graph_check(recomputed, facts)
        assert check is not None
        return check

    honest = judged(Net())
    assert honest.ok is True, honest
    assert honest.message.endswith(
        "uses exactly the weight layers [4, 1, 3, 3], [8, 4, 3, 3], 32->10"
    )
    kernel = judged(Net(kernel=5))
    assert kernel.ok is False and "holds the weights conv1.weight [4, 1, 5, 5]" in kernel.message
    third = judged(Net(third=True))
    assert third.ok is False and "conv3.weight [8, 8, 3, 3]" in third.message
    sort = judged(Net(sort=True))
    assert sort.ok is False and "computes sort" in sort.message
    # the same graph against HW3's Linear layers: conv weights are no Linear layer's
    hw3 = derive_facts(ROOT / "reference" / "HW3_template.ipynb")
    check = linear_graph.graph_check(recompute.Recomputed(None, graph=_graph(Net())), hw3)
    assert check is not None and check.ok is False
    assert "holds the weights conv1.weight [4, 1, 3, 3]; only the Linear layers" in check.message


def test_each_graph_check_reads_convolutions(tmp_path: Path) -> None:
    """The named checks on a CNN's facts by hand: a convolution's product as it ran, the image's
    way as batches of channels, the count of products."""
    from collections import Counter

    frozen: linear_graph.Layers = Counter({(4, 1, 3, 3): 1, (8, 4, 3, 3): 1, (32, 10): 1})
    parameters: linear_graph.Shapes = (
        ("conv1.weight", (4, 1, 3, 3)),
        ("conv2.weight", (8, 4, 3, 3)),
        ("fc.weight", (10, 32)),
    )
    products = (
        recompute.Product(op="conv2d", weight="conv1.weight", used=(4, 1, 3, 3), rows=(2, 1, 8, 8)),
        recompute.Product(op="conv2d", weight="conv2.weight", used=(8, 4, 3, 3), rows=(2, 4, 4, 4)),
        recompute.Product(op="linear", weight="fc.weight", used=(10, 32), rows=(2, 32)),
    )
    way = (
        ("conv2d", (2, 4, 8, 8)),
        ("max_pool2d", (2, 4, 4, 4)),
        ("conv2d", (2, 8, 4, 4)),
        ("avg_pool2d", (2, 8, 2, 2)),
        ("flatten", (2, 32)),
        ("linear", (2, 10)),
    )
    ops = {
        "torch.ops.aten.conv2d.default": 2,
        "torch.ops.aten.max_pool2d.default": 1,
        "torch.ops.aten.avg_pool2d.default": 1,
        "torch.ops.aten.flatten.using_ints": 1,
        "torch.ops.aten.linear.default": 1,
    }
    uses: dict[str, tuple[tuple[str, str], ...]] = {
        "conv1.weight": (("conv2d", "weight"),),
        "conv2.weight": (("conv2d", "weight"),),
        "fc.weight": (("linear", "weight"),),
    }
    graph = recompute.GraphFacts(ops, parameters, (), (), uses, products=products, way=way)

    def view(**changes: Any) -> linear_graph.GraphView:
        fields = {name: getattr(graph, name) for name in graph.__dataclass_fields__}
        return linear_graph.GraphView.of(recompute.GraphFacts(**{**fields, **changes}), frozen)

    assert all(check(view()) is None for check in linear_graph.CHECKS)
    reshaped = products[:1] + (
        recompute.Product(op="conv2d", weight="conv2.weight", used=(8, 4, 9), rows=(2, 4, 4, 4)),
    )
    found = linear_graph.odd_products(view(products=reshaped))
    assert found is not None and found.ok is None and "as [8, 4, 9] in conv2d" in found.message
    wide = way[:2] + (("conv2d", (2, 12, 4, 4)),) + way[3:]
    found = linear_graph.odd_way(view(way=wide))
    assert found is not None and "its convolutions have 1, 4, 8 channels" in found.message
    found = linear_graph.odd_way(view(way=way[:4] + (("sum", (2, 32)),) + way[4:]))
    assert found is not None and "goes through sum" in found.message
    found = linear_graph.product_count(view(ops={**ops, "torch.ops.aten.conv2d.default": 3}))
    assert found is not None and "multiplies by weights 4 times" in found.message
    # against HW3's Linear layers a convolution is no product, and max pooling no op of theirs
    hw3: linear_graph.Layers = Counter({(784, 512): 1, (512, 256): 1, (256, 10): 1})
    found = linear_graph.other_ops(linear_graph.GraphView.of(graph, hw3))
    assert found is not None and "computes conv2d (2x); only the Linear layers," in found.message
    pooled = {k: v for k, v in ops.items() if "conv2d" not in k}
    found = linear_graph.other_ops(linear_graph.GraphView.of(view(ops=pooled).graph, hw3))
    assert found is not None and "computes max_pool2d" in found.message


def test_a_template_without_linear_layers_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """All-convolutional (a global average pool as the head): the draft freezes weight_layers; a
    Linear layer added is one weight layer more."""
    cells = (
        *TINY[:3],
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv1 = nn.Conv2d(1, 8, 3)\n"
        "        self.head = nn.Conv2d(8, 10, 1)\n"
        "    def forward(self, x):\n"
        "        return self.head(F.relu(self.conv1(x))).mean((2, 3))",
        TINY[4],
    )
    template = _notebook(tmp_path / "ALLCONV_template.ipynb", cells)
    out = tmp_path / "rubric.yaml"
    assert main(["rubric", str(template), "--out", str(out)]) == ExitCode.OK
    assert "weight layer: self.head = nn.Conv2d(in_channels=8" in capsys.readouterr().out
    rubric = load_rubric(out)
    facts = derive_facts(template)
    assert rubric.frozen[-1] == RuleId.WEIGHT_LAYERS and facts.linear_layers == ()
    assert check_static(read_submission(template), facts, rubric).checks[-1].ok is True
    added = cells[3].replace(
        "self.head = nn.Conv2d(8, 10, 1)",
        "self.head = nn.Conv2d(8, 10, 1)\n        self.fc = nn.Linear(10, 10)",
    )
    student = _notebook(tmp_path / "ALLCONV_x.ipynb", (*cells[:3], added, cells[4]))
    check = check_static(read_submission(student), facts, rubric).checks[-1]
    assert check.ok is False and "adds a Linear layer" in check.message


def test_a_template_without_any_weight_layer_is_one_line(tmp_path: Path) -> None:
    cells = (*TINY[:3], "class Net(nn.Module):\n    pass", TINY[4])
    with pytest.raises(RubricError, match=r"no weight layer \(nn.Linear, nn.Conv1d, nn.Conv2d\)"):
        derive_facts(_notebook(tmp_path / "T.ipynb", cells))


@pytest.mark.parametrize(
    ("split", "constants", "valid"),
    [
        ("random_split(data, [TRAIN_SHARE, HELD])", "TRAIN_SHARE = 0.9\nHELD = 0.1", "HELD"),
        ("random_split(data, lengths=(1 - HELD, HELD))", "HELD = 0.1", "HELD"),
        # a size scaled by the fraction, as HW3 splits
        ("n = int(HELD * len(data))", "HELD = 0.1", "HELD"),
    ],
)
def test_the_validation_fraction_by_its_use(
    tmp_path: Path, split: str, constants: str, valid: str
) -> None:
    cells = (
        "import torch\nimport torch.nn as nn\nfrom torch.utils.data import random_split",
        f"EPOCHS = 2\n{constants}",
        split,
        TINY[3],
        TINY[4],
    )
    facts = derive_facts(_notebook(tmp_path / "T.ipynb", cells))
    assert (facts.valid_name, facts.valid_size) == (valid, 0.1)


@pytest.mark.parametrize(
    "training",
    [
        # the epochs passed by keyword, the loop in a function of its own
        "def train(model, n_epochs):\n"
        "    for epoch in range(n_epochs):\n"
        "        for x, y in loader:\n"
        "            F.cross_entropy(model(x), y).backward()\n"
        "train(model=Net(), n_epochs=PASSES)",
        # the parameter's default
        "def train(model, n_epochs=PASSES):\n"
        "    for epoch in range(n_epochs):\n"
        "        for x, y in loader:\n"
        "            F.cross_entropy(model(x), y).backward()\n"
        "train(Net())",
        # the constant read in the function itself
        "def train(model):\n"
        "    for epoch in range(1, PASSES + 1):\n"
        "        for x, y in loader:\n"
        "            F.cross_entropy(model(x), y).backward()\n"
        "train(Net())",
    ],
    ids=["keyword", "default", "global"],
)
def test_the_epochs_constant_through_a_training_function(tmp_path: Path, training: str) -> None:
    cells = (TINY[0], "PASSES = 4\nVAL = 0.1", TINY[2], TINY[3], training)
    facts = derive_facts(_notebook(tmp_path / "T.ipynb", cells))
    assert (facts.epochs_name, facts.epochs) == ("PASSES", 4)


def test_an_epoch_loop_that_calls_the_training_is_judged_by_its_count(
    tmp_path: Path, rubric: Rubric
) -> None:
    """`for r in range(ROUNDS): train_one_round(...)`, the template's epoch loop for `grader
    rubric`, is the epochs rule's too: the template keeps it; a student's other count through such a
    loop is left to the run (it may be a warm-up round), one in a loop that trains itself is not."""
    trainer = (
        "def train_one_round(model):\n    for x, y in loader:\n"
        "        F.cross_entropy(model(x), y).backward()"
    )
    cells = (TINY[0], "ROUNDS = 4\nVAL = 0.1", TINY[2], TINY[3], trainer)
    looped = "model = Net()\nfor r in range({}):\n    train_one_round(model)"
    template = _notebook(tmp_path / "T.ipynb", (*cells, looped.format("ROUNDS")))
    facts = derive_facts(template)
    assert (facts.epochs_name, facts.epochs) == ("ROUNDS", 4)

    def epochs(cells: tuple[str, ...]) -> Check:
        path = _notebook(tmp_path / "HW3_s.ipynb", cells)
        return next(
            c for c in check_static(read_submission(path), facts, rubric).checks if c.id == "epochs"
        )

    kept = epochs((*cells, looped.format("ROUNDS")))
    assert kept.ok is True, kept
    other = epochs((*cells, looped.format("5")))
    assert other.ok is None and "the run will count epochs" in other.message, other
    inline = (
        "for r in range(5):\n    for x, y in loader:\n"
        "        F.cross_entropy(Net()(x), y).backward()"
    )
    assert epochs((*cells, inline)).ok is False


def test_a_rubric_names_the_layers_rule_once() -> None:
    """linear_layers (HW3's rubric, unchanged) and weight_layers are one rule; a rubric lists
    one."""
    import yaml

    data = yaml.safe_load((ROOT / "rubric.yaml").read_text())
    assert load_rubric(ROOT / "rubric.yaml").frozen[-1] == RuleId.LINEAR_LAYERS
    data["frozen"] = ["epochs", "valid_size", "linear_layers", "weight_layers"]
    with pytest.raises(RubricError, match="two names of one rule"):
        parse_rubric(data, ROOT / "rubric.yaml")
    data["frozen"] = ["epochs", "valid_size", "weight_layers"]
    assert parse_rubric(data, ROOT / "rubric.yaml").frozen[-1] == RuleId.WEIGHT_LAYERS


def test_hw3_under_either_name_gives_the_same_verdicts(rubric: Rubric, facts: FrozenFacts) -> None:
    """The one rule under HW3's name and under weight_layers: the same verdicts and messages, on
    the template and on a changed layer."""
    for path in (
        ROOT / "reference" / "HW3_template.ipynb",
        ROOT / "submissions" / "HW3_wideboy.ipynb",
    ):
        sub = read_submission(path)
        from grader.static.pyast import parse_cells

        cells = parse_cells(sub)
        linear = linear_layers.static(sub, cells, facts)
        weight = RULES[RuleId.WEIGHT_LAYERS].static(sub, cells, facts)
        assert (weight.id, linear.id) == ("weight_layers", "linear_layers")
        assert (weight.ok, weight.message) == (linear.ok, linear.message)
    assert linear.ok is False


def test_a_split_of_literal_fractions_names_no_constant(tmp_path: Path) -> None:
    cells = (
        TINY[0],
        "EPOCHS = 2",
        "train_set, valid_set = random_split(data, [0.9, 0.1])",
        *TINY[3:],
    )
    with pytest.raises(RubricError, match="random_split's last fraction"):
        derive_facts(_notebook(tmp_path / "T.ipynb", cells))


def test_a_convolutions_arguments_are_read_as_a_layers() -> None:
    """The evaluator's record of a convolution, parsed: a padding op just before it counts in its
    padding only as a layer's padding_mode pads (each side alike, zeros for a constant pad); a
    single stride stands for every dimension; a transposed one is marked."""
    conv = {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}

    def parsed(**more: Any) -> dict[str, Any]:
        arguments, transposed, padded = recompute._convolution({**conv, **more}, 2)
        return {**dict(arguments), "transposed": transposed, "padded": padded}

    assert parsed(pad=[1, 1, 2, 2], mode="reflect")["padding"] == (2, 1)
    assert parsed(pad=[1, 1, 1, 1], mode="constant", value=0.0)["padding"] == (1, 1)
    assert parsed(pad=[1, 2, 1, 1], mode="constant", value=0.0)["padding"] is None
    assert parsed(pad=[1, 1, 1, 1], mode="constant", value=0.5)["padding"] is None
    assert parsed(pad=[-7, -7, -7, -7], mode="constant", value=0.0)["padding"] is None  # a crop
    assert parsed(stride=[2])["stride"] == (2, 2) and parsed(stride="2")["stride"] is None
    assert parsed(transposed=True)["transposed"] and not parsed(transposed=False)["transposed"]
    assert parsed(pad=[1, 1, 1, 1], mode="reflect")["padded"] and not parsed()["padded"]
    assert recompute._convolution(None, 2) == ((), False, False)
