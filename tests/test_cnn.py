"""A convolutional homework graded end to end (issue 31): the evaluator runs convolutions and
pooling, records each convolution as a product with its weight, and holds the image's way to the
widest activation the template's own weight layers allow (static/layers.py ``widest_way``, passed
on its command line), so a CNN is recomputed like HW3's MLP and a graph that blows the image up is
still refused before it runs. The template is tests/fixtures/cnn/template.ipynb (two nn.Conv2d with
pooling and one nn.Linear); its rubric is the one `grader rubric` drafts from it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch
from classes import grade_class
from notebooks import variant
from test_evaluator import _capture, _keep_the_sum, _looked_up
from torch import nn

from grader.cli import ExitCode, main
from grader.evaluator.answer import evaluate
from grader.evaluator.key import FASHION_MNIST, read_images
from grader.evaluator.manifest import Refused
from grader.evaluator.ops import RUNNABLE, WIDEST
from grader.judge import recompute
from grader.model.context import Context
from grader.model.dataset import TEST_IMAGES, Dataset
from grader.model.results import Result, Status
from grader.model.rubric import FrozenFacts, Rubric, load_rubric
from grader.static.layers import widest_way
from grader.static.reference import derive_facts
from grader.static.rules import linear_graph

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "tests" / "fixtures" / "cnn" / "template.ipynb"
CONV1 = "self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)"
POOL = "self.pool = nn.MaxPool2d(2)"
FIRST = "x = self.pool(F.relu(self.conv1(x)))"
SECOND = "x = self.pool(F.relu(self.conv2(x)))"
# A student's CNN: BatchNorm2d after each convolution, Adam at another learning rate.
HONEST = (
    (POOL, "self.bn1, self.bn2 = nn.BatchNorm2d(16), nn.BatchNorm2d(32)\n        " + POOL),
    (FIRST, "x = self.pool(F.relu(self.bn1(self.conv1(x))))"),
    (SECOND, "x = self.pool(F.relu(self.bn2(self.conv2(x))))"),
    ("LEARNING_RATE = 0.001", "LEARNING_RATE = 0.003"),
)
# no test pass: the grader's probe runs the model over the test set itself, fed (N, 1, 28, 28)
NO_TEST = (
    (
        "print(f'Test accuracy: {accuracy(model, test_loader):.2f}%')",
        "print('trained')",
    ),
)
# beside the probe's own pass: what the kernel can find of the test labels (tests/test_hostile.py's
# hunt), printed; with hidden labels only the shuffled view's file, its labels not the real ones
HUNT = (
    (
        "print('trained')",
        "print('trained')\n"
        "import os\n"
        "found = []\n"
        "for root in ('/usr', '/opt', '/etc', '/content', '/tmp', os.path.dirname(os.__file__)):\n"
        "    for folder, dirs, files in os.walk(root):\n"
        "        found += [os.path.join(folder, f) for f in files if 't10k-labels' in f]\n"
        "print('label files:', found)\n"
        "print('targets:', test_set.targets.tolist())",
    ),
)
KERNEL5 = ((CONV1, "self.conv1 = nn.Conv2d(1, 16, kernel_size=5, padding=2)"),)
# the kernel of 5 swapped for the template's after the graded test pass (test_hostile's swapper)
SWAP = (
    (
        "print(f'Test accuracy: {accuracy(model, test_loader):.2f}%')",
        "print(f'Test accuracy: {accuracy(model, test_loader):.2f}%')\n"
        "model.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)",
    ),
)
# a thousand copies of each image, summed back: the same image, 1000 images wide on the way
BLOWUP = (
    (
        "x = self.pool(F.relu(self.bn1(self.conv1(x))))",
        "x = x.unsqueeze(1).expand(-1, 1000, -1, -1, -1).sum(1) / 1000\n"
        "        x = self.pool(F.relu(self.bn1(self.conv1(x))))",
    ),
)


class SmallCNN(nn.Module):
    """The template's model, with a BatchNorm2d after each convolution (``blowup``: each image
    copied a thousand times and summed back first)."""

    def __init__(self, kernel: int = 3, blowup: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.bn1, self.bn2 = nn.BatchNorm2d(16), nn.BatchNorm2d(32)
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(32 * 7 * 7, 10)
        self.blowup = blowup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blowup:
            x = x.unsqueeze(1).expand(-1, 1000, -1, -1, -1).sum(1) / 1000
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def template_facts() -> FrozenFacts:
    return derive_facts(TEMPLATE)


def test_the_width_bound_is_the_templates_widest_layer(
    template_facts: FrozenFacts, facts: FrozenFacts
) -> None:
    """HW3's bound is four images as always (its layers are no wider than its image); the CNN's is
    four times its widest conv layer at every position of the image (32 channels of 28x28)."""
    assert widest_way(facts.weight_layers, FASHION_MNIST) == WIDEST * 784 == 3136
    assert widest_way(template_facts.weight_layers, FASHION_MNIST) == WIDEST * 32 * 28 * 28
    assert widest_way((), FASHION_MNIST) == WIDEST * 784


def _answer(model: nn.Module, images: torch.Tensor, dataset: Dataset, widest: int | None) -> Any:
    x = (images.float() / 255).reshape(-1, 1, 28, 28)
    return evaluate(_capture(model, x), dataset.raw / TEST_IMAGES, RUNNABLE, widest=widest)


def _facts(answer: dict[str, Any]) -> recompute.GraphFacts:
    found = recompute.read(json.dumps(answer), None, answer["rows"]).graph
    assert found is not None
    return found


def test_a_cnn_is_run_with_its_convolutions_as_products(
    template_facts: FrozenFacts, tiny_dataset: Dataset
) -> None:
    """A CNN's capture, fed (N, 1, 28, 28): recomputed under the template's bound (refused under
    HW3's, 16 images wide at its first convolution), each convolution a product with its weight
    as it ran on two images, and the graph rule finds exactly the template's weight layers; a
    kernel of 5 is a violation, and the image copied a thousand times is refused before it runs."""
    torch.manual_seed(0)
    images = read_images(tiny_dataset.raw / TEST_IMAGES)
    widest = widest_way(template_facts.weight_layers, FASHION_MNIST)
    model = SmallCNN().eval()
    answer = _answer(model, images, tiny_dataset, widest)
    with torch.no_grad():
        expected = model((images.float() / 255).reshape(-1, 1, 28, 28)).argmax(1).tolist()
    assert answer["official"] == list(range(images.shape[0])) and answer["classes"] == expected
    graph = _facts(answer)
    convolutions = [p for p in graph.products if p.op == "conv2d"]
    assert [(p.weight, p.used, p.rows) for p in convolutions] == [
        ("conv1.weight", (16, 1, 3, 3), (2, 1, 28, 28)),
        ("conv2.weight", (32, 16, 3, 3), (2, 16, 14, 14)),
    ]
    honest = linear_graph.graph_check(recompute.Recomputed(None, graph=graph), template_facts)
    assert honest is not None and honest.ok is True, honest
    with pytest.raises(Refused, match="12544 values per test image at conv2d"):
        _answer(model, images, tiny_dataset, None)  # HW3's four images: no CNN fits
    kernel = _facts(_answer(SmallCNN(kernel=5).eval(), images, tiny_dataset, widest))
    check = linear_graph.graph_check(recompute.Recomputed(None, graph=kernel), template_facts)
    assert check is not None and check.ok is False
    assert "holds the weights conv1.weight [16, 1, 5, 5]" in check.message
    with pytest.raises(Refused, match="784000 values per test image at expand"):
        _answer(SmallCNN(blowup=True).eval(), images[:2], tiny_dataset, widest)


def test_convolutions_against_hw3_are_the_graph_rules_to_judge(
    facts: FrozenFacts, tiny_dataset: Dataset
) -> None:
    """Against HW3's Linear layers a graph with convolutions now runs (under HW3's bound, four
    images: a conv layer of 4 channels fits) and is judged by the rule: a violation, as the kernel's
    traced forward pass finds it."""

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 14 * 14, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))

    images = read_images(tiny_dataset.raw / TEST_IMAGES)
    widest = widest_way(facts.weight_layers, FASHION_MNIST)
    answer = _answer(Tiny().eval(), images, tiny_dataset, widest)
    check = linear_graph.graph_check(recompute.Recomputed(None, graph=_facts(answer)), facts)
    assert check is not None and check.ok is False
    assert "holds the weights conv.weight [4, 1, 3, 3]; only the Linear layers" in check.message


# -- HW3's evaluator attacks on a CNN (tests/test_evaluator.py's, on the template's conv layers) ---
class _Mixer(SmallCNN):
    """Scores each image against the mean of its batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = super().forward(x)
        return h - 3.0 * h.mean(0, keepdim=True)


class _BatchSize(SmallCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # larger batches, larger scores
        return super().forward(x) + (x.flatten(1)[:, :1] * 0.0 + 1.0).sum(0) * 0.01


class _Poison(SmallCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * (x.flatten(1)[:, :1] * 0.0 + float("nan"))


class _AlwaysDropout(SmallCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # training=True unless told otherwise
        return super().forward(nn.functional.dropout(x, 0.2))


@pytest.fixture(scope="module")
def widest(template_facts: FrozenFacts) -> int:
    return widest_way(template_facts.weight_layers, FASHION_MNIST)


@pytest.fixture(scope="module")
def pixels(tiny_dataset: Dataset) -> torch.Tensor:
    """The tiny test set as a CNN is fed it: (N, 1, 28, 28) in [0, 1]."""
    return (read_images(tiny_dataset.raw / TEST_IMAGES).float() / 255).reshape(-1, 1, 28, 28)


def _run_cnn(
    model: nn.Module, x: torch.Tensor, dataset: Dataset, widest: int, *edit: Any, **more: Any
) -> Any:
    """The evaluator's answer for ``model`` fed ``x``, under the CNN template's width bound."""
    capture = _capture(model, x, *edit, **more)
    return evaluate(capture, dataset.raw / TEST_IMAGES, RUNNABLE, widest=widest)


def _cnn_check(answer: dict[str, Any], template_facts: FrozenFacts) -> Any:
    """The graph rule's verdict on the graph the evaluator ran, against the CNN template."""
    graph = recompute.Recomputed(None, graph=_facts(answer))
    check = linear_graph.graph_check(graph, template_facts)
    assert check is not None
    return check


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (_Mixer, "changes with the other images of its batch"),
        (_BatchSize, "changes with the other images"),
        (_Poison, "not all finite"),
        (_AlwaysDropout, "keeps dropout on at test time"),
    ],
)
def test_a_cnn_whose_answer_depends_on_its_batch_or_chance_is_refused(
    tiny_dataset: Dataset, pixels: torch.Tensor, widest: int, model: type[SmallCNN], says: str
) -> None:
    """test_evaluator's Mixer, BatchSize, Poison and AlwaysDropout on the template's convolutions:
    the evaluator reruns the graph on other batches (and twice), whatever the layers."""
    torch.manual_seed(0)
    with pytest.raises(Refused, match=says):
        _run_cnn(model().eval(), pixels, tiny_dataset, widest)


class _Counting(SmallCNN):
    """A buffer meant to keep a running sum of the images seen: state from one batch to the next."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(1, 28, 28))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = self.seen + x.sum(0)
        return super().forward(x) + seen.sum() * 0.0


def test_a_cnn_that_carries_state_between_batches_is_refused(
    tiny_dataset: Dataset, pixels: torch.Tensor, widest: int
) -> None:
    with pytest.raises(Refused, match="changes its own buffers"):
        _run_cnn(_Counting().eval(), pixels, tiny_dataset, widest, _keep_the_sum)


class _Repeats(SmallCNN):
    """A test image fed more than once is of class 0: the kernel repeats the ones it knows are."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("first", torch.eye(10)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        key = (flat[:, :392] * 255.0).sum(1) * 1000.0 + (flat[:, 392:] * 255.0).sum(1)
        copies = torch.exp((key.unsqueeze(1) - key.unsqueeze(0)) ** 2 * -50.0).sum(1)
        return super().forward(x) + (copies - 1.0).unsqueeze(1) * self.first.unsqueeze(0) * 1000.0


class _Lookup(SmallCNN):
    """test_evaluator's Lookup beside the template's convolutions: a row marked 1000 at pixel 700
    holds a test image's first 700 pixels, its label at pixel 701 and the class numbers at
    711-720; a test row that matches one is answered from it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _looked_up(super().forward(x), x.flatten(1))


def test_a_cnn_sees_each_test_image_once_and_no_row_fed_before_it(
    tiny_dataset: Dataset, pixels: torch.Tensor, widest: int
) -> None:
    """test_evaluator's Repeats and Lookup, fed (N, 1, 28, 28): test images repeated in the batch
    reach the graph once, and a batch of "memory" rows with the labels before the test set never
    reaches it, so each is graded on what its convolutions answer."""
    torch.manual_seed(0)
    labels = torch.tensor(list(tiny_dataset.test_labels()))
    model = _Repeats().eval()
    fed = torch.cat([pixels, pixels[labels == 0], pixels[labels == 0]])
    with torch.no_grad():
        # the attack, in the kernel
        assert bool((model(fed)[: pixels.shape[0]][labels == 0].argmax(1) == 0).all())
        own = SmallCNN.forward(model, pixels).argmax(1)
    answer = _run_cnn(model, fed, tiny_dataset, widest)
    assert sorted(set(answer["official"])) == list(range(pixels.shape[0]))
    assert [answer["classes"][row] for row in range(pixels.shape[0])] == own.tolist()
    lookup, flat = _Lookup().eval(), pixels.flatten(1)
    memory = torch.zeros_like(flat)
    memory[:, :700], memory[:, 700], memory[:, 701] = flat[:, :700], 1000.0, labels.float()
    memory[:, 711:721] = torch.arange(10.0)
    fed = torch.cat([memory.reshape(pixels.shape), pixels])
    with torch.no_grad():
        # the attack, in the kernel
        assert bool((lookup(fed)[pixels.shape[0] :].argmax(1) == labels).all())
        own = SmallCNN.forward(lookup, pixels).argmax(1)  # what its convolutions answer
    answer = _run_cnn(lookup, fed, tiny_dataset, widest)
    graded = [(o, c) for o, c in zip(answer["official"], answer["classes"]) if o >= 0]
    assert answer["preprocessing"] == "per pixel position" and len(graded) == pixels.shape[0]
    assert sum(own[o] == c for o, c in graded) >= 0.98 * len(graded)
    assert sum(labels[o] == c for o, c in graded) < 0.5 * len(graded)


class _NormTable(SmallCNN):
    """A LayerNorm of zeros is its bias: 16 numbers read back as a filter over the image, added to
    the image before the first convolution (no conv op computes it)."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        table = self.ln(flat[:, :16] * 0.0)
        return super().forward(x + (flat[:, 100:116] * table).sum(1).reshape(-1, 1, 1, 1))


class _Unfolded(SmallCNN):
    """conv1 computed by hand (im2col and a matmul by its weight): the template's numbers by an op
    no nn.Conv2d exports."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = nn.functional.unfold(x, 3, padding=1)  # (N, 9, 784)
        h = torch.matmul(self.conv1.weight.reshape(16, 9), columns) + self.conv1.bias[:, None]
        x = self.pool(torch.relu(self.bn1(h.reshape(-1, 16, 28, 28))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


class _Shared(SmallCNN):
    """fc's weights reshaped and shared over two halves of the image's way: no longer one Linear
    layer applied once to a row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        halves = torch.matmul(x.reshape(-1, 2, 784), self.fc.weight.reshape(20, 784).t())
        return halves.sum(1)[:, :10]


class _Twice(SmallCNN):
    """conv2 applied twice: its weights used otherwise than once on the image's way."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(16, 16, kernel_size=3, padding=1)
        self.bn2, self.fc = nn.BatchNorm2d(16), nn.Linear(16 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(torch.relu(self.conv2(x))))))
        return self.fc(torch.flatten(x, 1))


class _Strided(SmallCNN):
    """The first convolution with a stride of 2 (the template's is 1), the Linear layer fitted to
    the smaller map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1, stride=2)
        self.fc = nn.Linear(32 * 3 * 3, 10)


class _Widened(SmallCNN):
    """conv1's output copied four times and summed back: within the width bound, but not the
    template's way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = h.unsqueeze(1).expand(-1, 4, -1, -1, -1).sum(1) / 4
        x = self.pool(torch.relu(self.bn2(self.conv2(self.pool(h)))))
        return self.fc(torch.flatten(x, 1))


class _MeanImage(SmallCNN):
    """Zero-centred inputs: the training set's mean image and spread kept as buffers of the
    image's shape (``shape``: or one value per channel), as HW3 keeps one value per pixel."""

    def __init__(self, shape: tuple[int, ...] = (1, 28, 28)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.rand(*shape) * 0.3)
        self.register_buffer("std", torch.full(shape, 0.35))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward((x - self.mean) / self.std)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 1, 1)], ids=["per-pixel", "per-channel"])
def test_an_input_normalization_kept_in_a_cnn_is_a_map_not_data(
    tiny_dataset: Dataset,
    pixels: torch.Tensor,
    widest: int,
    template_facts: FrozenFacts,
    shape: tuple[int, ...],
) -> None:
    """A mean image (or one mean per channel) as the first convolution's input is normalized:
    the rule's map of the image, allowed as in HW3, not data beside the weight layers."""
    torch.manual_seed(0)
    check = _cnn_check(
        _run_cnn(_MeanImage(shape).eval(), pixels, tiny_dataset, widest), template_facts
    )
    assert check.ok is True, check.message


def test_a_cnns_graph_off_the_templates_layers_is_judged_by_the_rule(
    tiny_dataset: Dataset, pixels: torch.Tensor, widest: int, template_facts: FrozenFacts
) -> None:
    """test_evaluator's NormTable, Shared, Widened and Summed against the CNN template: two
    image-derived tensors combined, a weight used twice or through a matmul, the image's way
    widened within the bound go to a person; a stride the template does not have is a violation
    (each ran in the evaluator), a convolution by hand (im2col) is refused, and the honest CNN's
    graph passes with no mix."""
    torch.manual_seed(0)
    honest = _run_cnn(SmallCNN().eval(), pixels, tiny_dataset, widest)
    assert honest["graph"]["mixes"] == [] and _cnn_check(honest, template_facts).ok is True
    table = _run_cnn(_NormTable().eval(), pixels, tiny_dataset, widest)
    assert "mul" in table["graph"]["mixes"]
    check = _cnn_check(table, template_facts)
    assert check.ok is None and "combines two tensors computed from the image" in check.message
    with pytest.raises(Refused, match="computes im2col, which is none of the weight layers"):
        _run_cnn(_Unfolded().eval(), pixels, tiny_dataset, widest)  # conv1 by hand
    check = _cnn_check(_run_cnn(_Shared().eval(), pixels, tiny_dataset, widest), template_facts)
    assert check.ok is None and "uses fc.weight [10, 1568] as" in check.message, check.message
    assert "in matmul" in check.message, check.message
    check = _cnn_check(_run_cnn(_Twice().eval(), pixels, tiny_dataset, widest), template_facts)
    assert check.ok is not True and "conv2.weight" in check.message, check.message
    check = _cnn_check(_run_cnn(_Strided().eval(), pixels, tiny_dataset, widest), template_facts)
    assert check.ok is False and "[32, 16, 3, 3], 288->10; the homework fixes" in check.message
    check = _cnn_check(_run_cnn(_Widened().eval(), pixels, tiny_dataset, widest), template_facts)
    assert check.ok is None and "[2, 1, 16, 28, 28] after unsqueeze" in check.message


class _StridedSameShapes(SmallCNN):
    """conv1 with a stride of 2 in place of the first pooling: every weight of the template's shape,
    the convolution not the template's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


def test_a_convolution_with_the_templates_weights_but_another_stride_is_not_the_templates(
    tiny_dataset: Dataset, pixels: torch.Tensor, widest: int, template_facts: FrozenFacts
) -> None:
    """Every weight of the template's shape and conv1 run with a stride of 2: the graph's
    convolution is held to the template's layer, not only its weight's shape."""
    answer = _run_cnn(_StridedSameShapes().eval(), pixels, tiny_dataset, widest)
    check = _cnn_check(answer, template_facts)
    assert check.ok is False and "stride 2 (the template's 1)" in check.message, check.message


class _Restyled(SmallCNN):
    """The template's layers written otherwise: conv1 padding by reflection (``pad``: or by an
    nn.ZeroPad2d before an unpadded conv1, and conv2 applied by F.conv2d with its own weight and
    padding='same'); GroupNorm after conv1 and a LayerNorm over conv2's channels between two
    permutes (channels last); activations that combine the way with a function of itself, value
    by value (Softsign, x * sigmoid(x), Tanhshrink)."""

    def __init__(self, pad: str = "reflect") -> None:
        super().__init__()
        self.pad = pad
        self.conv1 = (
            nn.Sequential(nn.ZeroPad2d(1), nn.Conv2d(1, 16, 3))
            if pad == "zeros"
            else nn.Conv2d(1, 16, 3, padding=1, padding_mode=pad)
        )
        self.bn1, self.bn2 = nn.GroupNorm(4, 16), nn.LayerNorm(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(nn.functional.softsign(self.bn1(self.conv1(x))))
        if self.pad == "zeros":
            x = nn.functional.conv2d(x, self.conv2.weight, self.conv2.bias, padding="same")
        else:
            x = self.conv2(x)
        x = self.bn2(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.pool(x * torch.sigmoid(x))
        return nn.functional.tanhshrink(self.fc(torch.flatten(x, 1)))


class _LocalResponse(SmallCNN):
    """AlexNet's LocalResponseNorm in place of the first BatchNorm2d, and log-sigmoid scores."""

    def __init__(self) -> None:
        super().__init__()
        self.bn1 = nn.LocalResponseNorm(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.logsigmoid(super().forward(x))


class _Dilated(SmallCNN):
    """conv1 applied by F.conv2d with its own weight, dilated 3 and padded 3: the template's
    shapes everywhere, another layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.conv2d(x, self.conv1.weight, self.conv1.bias, padding=3, dilation=3)
        x = self.pool(torch.relu(self.bn1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


def test_a_cnn_written_with_other_allowed_layers_is_run_and_judged_as_its_layers_are(
    tiny_dataset: Dataset, pixels: torch.Tensor, widest: int, template_facts: FrozenFacts
) -> None:
    """What a student may write beside the template's layers runs in the evaluator and keeps the
    layers (``_Restyled``: a padding_mode or a ZeroPad2d pads as the template's padding does,
    F.conv2d with a layer's own weight and padding='same' is that layer, a LayerNorm over channels
    last is normalization, x * sigmoid(x) is no mix). LocalResponseNorm runs and goes to a person
    (it combines the way with its pooled square); a dilated conv1 of the template's shapes is
    another layer."""
    torch.manual_seed(0)

    def check(model: nn.Module) -> Any:
        return _cnn_check(_run_cnn(model.eval(), pixels, tiny_dataset, widest), template_facts)

    for model in (_Restyled("reflect"), _Restyled("zeros")):
        found = check(model)
        assert found.ok is True, (model.pad, found.message)
    found = check(_LocalResponse())
    assert found.ok is None and "combines two tensors" in found.message, found.message
    found = check(_Dilated())
    assert found.ok is False, found.message
    assert "padding 3 (the template's 1), dilation 3 (the template's 1)" in found.message


class _StrideBySlice(SmallCNN):
    """conv1 with a stride of 2 in effect: its maps subsampled by a slice, no pooling after it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))[:, :, ::2, ::2]
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


class _DilationByReshape(SmallCNN):
    """conv1 dilated (2, 1) in effect: the image's rows paired into rows of 56."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x.reshape(-1, 1, 14, 56)).reshape(-1, 16, 28, 28)
        x = self.pool(torch.relu(self.bn1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


class _DoublePad(SmallCNN):
    """conv1 built unpadded, with two pads of 1 before it: a padding of 2 in effect, one pad
    right before the convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(nn.functional.pad(x, (1, 1, 1, 1)), (1, 1, 1, 1))
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


class _MemorisedInNorms(SmallCNN):
    """The test labels in two LayerNorms over conv1's whole maps, nothing else but the template's
    forward pass: conv1's channels 1-15 are zero, so the first LayerNorm gives at each of their
    positions one number of the image (its own mean and spread); the first's bias puts a window
    around one test image's number at each position (relu(1 - |x|)), the second's weight holds its
    label; pooling, conv2's centre taps and the fc carry the one value that fired to the scores."""

    def __init__(self, images: torch.Tensor, labels: list[int]) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.LayerNorm([16, 28, 28]), nn.LayerNorm([16, 28, 28])
        n, m = len(labels), 16 * 784
        with torch.no_grad():
            self.conv1.weight[1:] = 0
            self.conv1.bias.zero_()
            keys = nn.functional.layer_norm(self.conv1(images), [16, 28, 28])[:, 1, 0, 0].double()
            ordered = keys.sort().values
            scale = 4.0 / max((ordered[1:] - ordered[:-1]).min().item(), 2e-6)
            self.bn1.weight.zero_()
            self.bn1.bias.fill_(-10.0)
            self.bn1.weight.view(-1)[784 : 784 + n] = scale
            self.bn1.bias.view(-1)[784 : 784 + n] = (-scale * keys).float()
            fired = (1 - 1 / m) / ((1 / m) * (1 - 1 / m) + 1e-5) ** 0.5
            self.bn2.weight.zero_()
            self.bn2.weight.view(-1)[784 : 784 + n] = (torch.tensor(labels) + 1.0) / fired
            self.bn2.bias.zero_()
            self.conv2.weight.zero_()
            self.conv2.bias.zero_()
            self.conv2.weight[0, :, 1, 1] = 1.0
            c = torch.arange(10, dtype=torch.float32)
            self.fc.weight.zero_()
            self.fc.weight[:, :49] = (2 * c)[:, None]
            self.fc.bias.copy_(-2 * c - c**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = self.pool(torch.relu(self.bn2(torch.relu(1 - x.abs()))))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


def test_a_cnn_running_its_layers_otherwise_goes_to_a_person(
    tiny_dataset: Dataset, pixels: torch.Tensor, widest: int, template_facts: FrozenFacts
) -> None:
    """Every weight of the template's shape and every convolution called with its arguments, the
    layers run otherwise all the same: maps subsampled by a slice (a stride), the image reshaped
    into rows of 56 (a dilation), a pad not right before the convolution (a padding): a person
    looks. A memorised test set in LayerNorms over whole maps (their weights a table over
    positions, keyed by each image's statistics) answers the test images' made-up labels in the
    evaluator, and goes to a person too."""
    torch.manual_seed(0)

    def check(model: nn.Module) -> Any:
        return _cnn_check(_run_cnn(model.eval(), pixels, tiny_dataset, widest), template_facts)

    found = check(_StrideBySlice())
    assert found.ok is None and "[2, 16, 14, 28] after slice: maps of another size" in found.message
    found = check(_DilationByReshape())
    assert found.ok is None and "[2, 1, 14, 56] after reshape" in found.message, found.message
    found = check(_DoublePad())
    assert found.ok is None and "pads the maps 1 time other than just before" in found.message
    labels = [(7 * i + 3) % 10 for i in range(pixels.shape[0])]
    answer = _run_cnn(_MemorisedInNorms(pixels, labels).eval(), pixels, tiny_dataset, widest)
    assert sum(a == b for a, b in zip(answer["classes"], labels)) > 0.9 * len(labels)
    found = _cnn_check(answer, template_facts)
    assert found.ok is None and "a learned table that can hold answers" in found.message


class _Detour(SmallCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 3 GB a row, the same row back
        x = x.unsqueeze(1).expand(-1, 1_000_000, -1, -1, -1).sum(1) / 1_000_000
        return super().forward(x)


def test_a_cnn_widening_the_images_way_past_its_bound_is_refused_before_it_runs(
    tiny_dataset: Dataset, pixels: torch.Tensor, widest: int
) -> None:
    """The bound is the template's (--widest: 32 channels of 28x28, four times), not HW3's four
    images, and a graph past it is followed with fake tensors, never run."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    claimed = torch.zeros(2, dtype=torch.long)
    with pytest.raises(Refused, match="784000000 values per test image at expand"):
        _run_cnn(_Detour().eval(), pixels[:2], tiny_dataset, widest, claimed=claimed)
    # KB: no real run of it
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1_000_000


class _Blob(SmallCNN):
    """fc's bias expanded to 2,000,000,000 values (8 GB) beside the image's way: not on it, so no
    width of the way sees it (made only under torch.export: the test's own run stays small)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_exporting():
            return super().forward(x)
        blob = self.fc.bias.reshape(1, 1, 10).expand(200_000, 1000, 10).contiguous()
        return super().forward(x) + blob[0, 0] * 0.0


class _Flops(SmallCNN):
    """conv2's 32 maps of 14x14 through a 32->32 convolution of 27x27 kernels (padding 13): as wide
    as conv2's output, 147 million multiply-adds per image (the template's whole model: one)."""

    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Parameter(torch.randn(32, 32, 27, 27) * 1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = nn.functional.conv2d(torch.relu(self.bn2(self.conv2(x))), self.big, padding=13)
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (_Blob, "makes 4000010030 values from its weights alone (expand the most), more than 1024"),
        (_Flops, "multiplies and adds 147363776 times per test image (conv2d the most)"),
    ],
    ids=["blob", "flops"],
)
def test_a_cnn_whose_work_is_past_the_templates_bounds_is_refused_before_it_runs(
    tiny_dataset: Dataset, pixels: torch.Tensor, widest: int, model: type[SmallCNN], says: str
) -> None:
    """Within the width bound, the graph's work is bounded too, in the same template's terms: a
    tensor made from a weight alone (no batch dimension, so no width of the way) and the
    multiply-adds of its convolutions per image are refused, followed with fake tensors, never
    run."""
    import resource

    torch.manual_seed(0)
    capture = _capture(model().eval(), pixels[:2])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(Refused) as refused:
        evaluate(capture, tiny_dataset.raw / TEST_IMAGES, RUNNABLE, widest=widest)
    assert says in str(refused.value), refused.value
    # KB: no real run of it
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1_000_000


def test_an_honest_models_work_is_well_within_its_templates_bounds(
    facts: FrozenFacts,
    template_facts: FrozenFacts,
    pixels: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HW3's MLP (784->512->256->10, BatchNorm) under HW3's bound and the CNN (BatchNorm after
    each convolution) under the template's pass bounds four times tighter than the evaluator's:
    measured, the MLP makes 1.2 widths of values and 171 of multiply-adds per image, the CNN 0.6
    and 10.5, nothing from weights alone."""
    from test_evaluator import Net

    from grader.evaluator import flow
    from grader.evaluator.manifest import read_manifest
    from grader.evaluator.rebuild import program

    for name in ("VALUES_PER_IMAGE", "MACS_PER_VALUE", "FIXED_VALUES"):
        monkeypatch.setattr(flow, name, getattr(flow, name) // 4)
    for model, layers in ((Net(), facts), (SmallCNN(), template_facts)):
        manifest, payload = read_manifest(_capture(model.eval(), pixels[:4]))
        bound = widest_way(layers.weight_layers, FASHION_MNIST)
        program(manifest, payload, RUNNABLE, FASHION_MNIST, bound)  # not refused
    monkeypatch.setattr(flow, "MACS_PER_VALUE", 128)  # the MLP's 171 widths
    with pytest.raises(Refused, match=r"multiplies and adds 535040 times per test image \(linear"):
        program(*read_manifest(_capture(Net().eval(), pixels[:4])), RUNNABLE, FASHION_MNIST, None)


def test_a_cnns_bfloat16_pass_is_recomputed_within_its_arithmetic(
    tiny_dataset: Dataset, pixels: torch.Tensor, widest: int
) -> None:
    """test_evaluator's bfloat16 pass on the template's convolutions: rows bfloat16 could move,
    flipped by another device, are noise in the arithmetic the capture names (a handful graded as
    the notebook counted them, more as the graph's own); claimed as float32, the same record is
    tampering evidence."""
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():
        nn.init.normal_(model.fc.weight)  # scores of a trained model's size
        model.fc.bias.zero_()
        scores = model(pixels)
    runner_up = scores.topk(2, dim=1).indices[:, 1]

    def read(precision: str, claimed: torch.Tensor) -> tuple[recompute.Recomputed, Any]:
        answer = _run_cnn(model, pixels, tiny_dataset, widest, claimed=claimed, precision=precision)
        return recompute.read(json.dumps(answer), None, pixels.shape[0]), answer

    _, answer = read("bfloat16", scores.argmax(1))
    margins, noise = torch.tensor(answer["margins"]), torch.tensor(answer["noise"])
    # rows bfloat16 could flip: more than a handful here (a CNN's scores pass more roundings)
    movable = (margins > 10 * recompute.NOISE_MARGIN) & (margins <= noise)
    assert recompute.SETTLED_AT_MOST < int(movable.sum()) <= 0.1 * pixels.shape[0]
    # another device's bfloat16 flipped them all: noise, the graph's own classes graded
    every, _ = read("bfloat16", torch.where(movable, runner_up, scores.argmax(1)))
    assert every.differing == 0 and every.precision == "bfloat16"
    assert every.close_calls <= 0.1 * pixels.shape[0]
    assert list(every.predictions) == scores.argmax(1).tolist()
    # a handful flipped: graded as the notebook counted them
    few = torch.zeros_like(movable)
    few[movable.nonzero()[: recompute.SETTLED_AT_MOST, 0]] = True
    kernel = torch.where(few, runner_up, scores.argmax(1))
    honest, _ = read("bfloat16", kernel)
    assert honest.differing == 0 and list(honest.predictions) == kernel.tolist()
    claimed_float, _ = read("float32", kernel)
    assert claimed_float.differing == recompute.SETTLED_AT_MOST


# -- a real kernel grades a class of CNN notebooks ---------------------------------------------
@pytest.fixture(scope="module")
def cnn_class(
    tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Dataset
) -> tuple[Path, Context]:
    """The template with two epochs (the tiny data needs no more), its drafted rubric, and a class
    of five: a compliant student (BatchNorm2d, Adam at another rate), a kernel of 5, the image
    blown up a thousand times in the forward pass, the student without a test pass who hunts for
    the test labels instead, and the kernel of 5 swapped for the template's after its test
    pass."""
    folder = tmp_path_factory.mktemp("cnn-template")
    template = variant(folder / "template.ipynb", TEMPLATE, ("ROUNDS = 3", "ROUNDS = 2"))
    out = folder / "rubric.yaml"
    assert main(["rubric", str(template), "--out", str(out)]) == ExitCode.OK
    rubric: Rubric = load_rubric(out)
    facts = derive_facts(rubric.template)
    assert facts.epochs == 2 and Counter(layer.kind for layer in facts.weight_layers) == Counter(
        {"Conv2d": 2, "Linear": 1}
    )
    corpus = tmp_path_factory.mktemp("cnn-class")
    honest = variant(corpus / "HW_honest.ipynb", template, *HONEST)
    kernel5 = variant(corpus / "HW_kernel5.ipynb", honest, *KERNEL5)
    variant(corpus / "HW_swapper.ipynb", kernel5, *SWAP)
    variant(corpus / "HW_blowup.ipynb", honest, *BLOWUP)
    variant(corpus / "HW_notest.ipynb", honest, *NO_TEST, *HUNT)
    return corpus, Context(rubric, facts, tiny_dataset)


NAMES = (
    "HW_honest.ipynb",
    "HW_kernel5.ipynb",
    "HW_blowup.ipynb",
    "HW_notest.ipynb",
    "HW_swapper.ipynb",
)


@pytest.fixture(scope="module", params=["visible", "hidden"])
def graded(
    request: pytest.FixtureRequest,
    cnn_class: tuple[Path, Context],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, dict[str, Result]]:
    """The class graded in one batch per label mode (tests/classes.py), sandboxed where the
    machine can."""
    corpus, context = cnn_class
    labels = str(request.param)
    found = grade_class(
        corpus, NAMES, context, tmp_path_factory, f"cnn-{labels}", labels == "hidden"
    )
    return labels, found


def _run(result: Result) -> dict[str, bool | None]:
    return {c.id: c.ok for c in result.checks if c.stage == "run"}


@pytest.mark.slow
def test_a_class_of_cnns_is_graded_end_to_end(graded: tuple[str, dict[str, Result]]) -> None:
    """In both label modes: the compliant CNN graded from its own test pass, recomputed by the
    evaluator, every rule kept, no flag; a kernel of 5 a violation of weight_layers statically and
    on the graph the evaluator ran; the image blown up a thousand times refused by the evaluator;
    without a test pass, the probe's own pass over the test set recomputed alike; the kernel of 5
    swapped for the template's after the test pass judged on the model at its pass."""
    labels, results = graded
    honest = results["HW_honest.ipynb"]
    assert honest.status is Status.GRADED, (labels, honest.reason, honest.checks)
    assert honest.measured_by == "student-test-pass" and honest.recomputed, honest
    assert not honest.flags and all(c.ok for c in honest.checks), (honest.flags, honest.checks)
    assert honest.accuracy is not None and honest.accuracy >= 60, honest.accuracy
    if labels == "visible":  # hidden: the kernel counted against shuffled labels
        assert honest.reported_accuracy == honest.accuracy
    graph = next(c for c in honest.checks if c.id == "weight_layers" and c.stage == "run")
    assert graph.message.startswith(  # the graph rule's verdict, on the graph the evaluator ran
        "the model that made the graded predictions uses exactly the weight layers"
    ), graph.message
    kernel = results["HW_kernel5.ipynb"]
    assert kernel.status is Status.VIOLATION, (kernel.reason, kernel.checks)
    run = next(c for c in kernel.checks if c.id == "weight_layers" and c.stage == "run")
    assert run.ok is False and "conv1.weight [16, 1, 5, 5]" in run.message, run.message
    blown = results["HW_blowup.ipynb"]
    assert blown.status is Status.REVIEW and not blown.recomputed, (blown.status, blown.reason)
    assert "784000 values per test image at expand" in (blown.reason or ""), blown.reason
    own = results["HW_notest.ipynb"]  # the probe's own pass, captured as the CNN takes its input
    assert own.measured_by == "probe-pass" and own.recomputed, (own.status, own.reason)
    assert own.accuracy == honest.accuracy and _run(own) == _run(honest), own.checks
    # judged on the model that made the graded predictions, not on the one left at the end
    swapper = results["HW_swapper.ipynb"]
    assert swapper.status is Status.VIOLATION, (swapper.reason, swapper.checks)
    run = next(c for c in swapper.checks if c.id == "weight_layers" and c.stage == "run")
    assert run.ok is False and run.message.startswith(
        "at its graded test pass the model held conv1.weight of shape [16, 1, 5, 5] in conv1"
    ), run.message


@pytest.mark.slow
def test_the_cnn_kernel_sees_the_hidden_labels_only_shuffled(
    graded: tuple[str, dict[str, Result]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """tests/test_hostile.py's hunt for the labels, from a CNN notebook of the class (HW_notest):
    with visible labels the kernel's test set holds the real ones; hidden, its labels agree with
    the real ones no better than chance, and (sandboxed) the only label file it finds is the
    shuffled view's."""
    import ast

    from tinydata import make_tiny_fashion_mnist

    from grader.run.sandbox import unavailable_reason

    labels, results = graded
    own = results["HW_notest.ipynb"]
    out = tmp_path_factory.getbasetemp() / f"cnn-{labels}-out"
    book = nbformat.read(str(out / "executed" / f"{own.student}.ipynb"), as_version=4)
    printed = "".join(o.get("text", "") for c in book.cells for o in c.get("outputs", []))
    listed = ast.literal_eval(printed.split("label files:")[1].split("\n")[0])
    targets = ast.literal_eval(printed.split("targets:")[1].split("\n")[0])
    data = make_tiny_fashion_mnist(tmp_path_factory.mktemp("cnn-real"), noise=0.25)
    real = list(Dataset(data).test_labels())
    if labels == "visible":
        assert targets == real
        return
    same = sum(a == b for a, b in zip(targets, real))
    assert len(targets) == len(real) and same < 0.4 * len(real), same
    if unavailable_reason() is None:
        assert listed and all(
            "/data/FashionMNIST/raw/t10k-labels-idx1-ubyte" in path for path in listed
        ), listed
