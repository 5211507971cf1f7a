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
from test_evaluator import _capture
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
KERNEL5 = ((CONV1, "self.conv1 = nn.Conv2d(1, 16, kernel_size=5, padding=2)"),)
# a thousand copies of each image, summed back: the same image, 1000 images wide on the way
BLOWUP = (
    (
        "x = self.pool(F.relu(self.bn1(self.conv1(x))))",
        "x = x.unsqueeze(1).expand(-1, 1000, -1, -1, -1).sum(1) / 1000\n"
        "        x = self.pool(F.relu(self.bn1(self.conv1(x))))",
    ),
)


def _variant(path: Path, source: Path, *changes: tuple[str, str]) -> Path:
    """``source`` with each ``old`` replaced by ``new`` (each found exactly once)."""
    book = nbformat.read(str(source), as_version=4)
    for old, new in changes:
        found = [cell for cell in book.cells if old in cell.source]
        assert len(found) == 1 and found[0].source.count(old) == 1, old
        found[0].source = found[0].source.replace(old, new)
    nbformat.write(book, str(path))
    return path


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


# -- a real kernel grades a class of CNN notebooks ---------------------------------------------
@pytest.fixture(scope="module")
def cnn_class(
    tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Dataset
) -> tuple[Path, Context]:
    """The template with two epochs (the tiny data needs no more), its drafted rubric, and a class
    of three: a compliant student (BatchNorm2d, Adam at another rate), a kernel of 5, and the image
    blown up a thousand times in the forward pass."""
    folder = tmp_path_factory.mktemp("cnn-template")
    template = _variant(folder / "template.ipynb", TEMPLATE, ("ROUNDS = 3", "ROUNDS = 2"))
    out = folder / "rubric.yaml"
    assert main(["rubric", str(template), "--out", str(out)]) == ExitCode.OK
    rubric: Rubric = load_rubric(out)
    facts = derive_facts(rubric.template)
    assert facts.epochs == 2 and Counter(layer.kind for layer in facts.weight_layers) == Counter(
        {"Conv2d": 2, "Linear": 1}
    )
    corpus = tmp_path_factory.mktemp("cnn-class")
    honest = _variant(corpus / "HW_honest.ipynb", template, *HONEST)
    _variant(corpus / "HW_kernel5.ipynb", honest, *KERNEL5)
    _variant(corpus / "HW_blowup.ipynb", honest, *BLOWUP)
    _variant(corpus / "HW_notest.ipynb", honest, *NO_TEST)
    return corpus, Context(rubric, facts, tiny_dataset)


NAMES = ("HW_honest.ipynb", "HW_kernel5.ipynb", "HW_blowup.ipynb", "HW_notest.ipynb")


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
    without a test pass, the probe's own pass over the test set recomputed alike."""
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
