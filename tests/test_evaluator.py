"""The trusted evaluator (grader/evaluator/) against captures a student's process could write:
code hidden in the graph's JSON never runs, inputs must follow one preprocessing for the whole pass,
and the architecture rule sees data beside the Linear layers. Unit level, on the tiny data set."""

from __future__ import annotations

import json
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from grader.evaluator.answer import evaluate
from grader.evaluator.inputs import per_image
from grader.evaluator.key import ImageSpec, read_images
from grader.evaluator.manifest import Refused
from grader.evaluator.ops import RUNNABLE
from grader.evaluator.predict import MAX_OUTPUTS, class_scores
from grader.judge import recompute
from grader.model.dataset import TEST_IMAGES, Dataset
from grader.model.rubric import FrozenFacts, Rubric


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn = nn.Linear(784, 512), nn.BatchNorm1d(512)
        self.fc2, self.fc3 = nn.Linear(512, 256), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 784)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.bn(self.fc1(x))))))


def _images(dataset: Dataset) -> torch.Tensor:
    return read_images(dataset.raw / TEST_IMAGES)


def _capture(
    model: nn.Module,
    inputs: torch.Tensor,
    edit: Any = None,
    claimed: torch.Tensor | None = None,
    precision: str = "float32",
    views: tuple[str, ...] = ("identity",),
    classes: int = 10,
) -> bytes:
    """capture.bin as grader/probe/capture.py writes it; ``edit`` changes the graph's JSON first;
    ``claimed``: the classes the kernel records (else the model's own); ``precision``: the
    arithmetic
    the kernel's pass says it ran in."""
    from torch._export.serde.serialize import serialize

    model.eval()
    with torch.no_grad():
        program = torch.export.export(
            model, (inputs[:2],), dynamic_shapes=({0: torch.export.Dim.AUTO},), strict=False
        )
        scores = class_scores(model(inputs), inputs.shape[0], classes)
        classes = (scores.argmax(1) if claimed is None else claimed).to(torch.int8)
    graph = json.loads(serialize(program).exported_program)
    if edit is not None:
        edit(graph)
    chunks: list[bytes] = []
    tensors, offset = [], 0
    specs = {s.target: s.kind.name.lower() for s in program.graph_signature.input_specs if s.target}

    def entry(name: str, kind: str, value: torch.Tensor) -> dict[str, Any]:
        nonlocal offset
        raw = value.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        chunks.append(raw)
        found = {
            "name": name,
            "kind": kind,
            "dtype": str(value.dtype).removeprefix("torch."),
            "shape": list(value.shape),
            "offset": offset,
            "bytes": len(raw),
        }
        offset += len(raw)
        return found

    tensors = [entry(n, specs.get(n, "buffer"), v) for n, v in program.state_dict.items()]
    rows = entry("inputs", "input", inputs.reshape(inputs.shape[0], -1).float())
    import base64

    manifest = {
        "version": 2,
        "graph": json.dumps(graph),
        "tensors": tensors,
        "inputs": rows,
        "precision": precision,
        "views": list(views),
        "input_dtype": str(inputs.dtype).removeprefix("torch."),
        "input_shape": list(inputs.shape[1:]),
        "row_classes": base64.b64encode(classes.numpy().tobytes()).decode(),
    }
    return json.dumps(manifest).encode() + b"\n" + b"".join(chunks)


@pytest.fixture(scope="module")
def images(tiny_dataset: Dataset) -> torch.Tensor:
    return _images(tiny_dataset)


def _inject_size(graph: dict[str, Any]) -> None:
    text = json.dumps(graph).replace(
        "Symbol(", "__import__('os').system('touch /tmp/pwned-by-sympy') or Symbol(", 1
    )
    graph.clear()
    graph.update(json.loads(text))


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (_inject_size, "size expression"),
        (
            lambda g: g.__setitem__(
                "guards_code", ["__import__('os').system('touch /tmp/pwned-by-guard') or True"]
            ),
            "guard code",
        ),
        (
            lambda g: g["graph_module"]["graph"]["nodes"][0].__setitem__(
                "target", "torch.ops.aten.__class__.__init__"
            ),
            "not a tensor op",
        ),
        (lambda g: g.__setitem__("extra", 1), "fields torch.export does not write"),
        (
            lambda g: g["graph_module"]["graph"]["nodes"][0].__setitem__(
                "target", "torch.ops.aten.from_file.default"
            ),
            "computes from_file",
        ),  # it reads and writes any file the evaluator may
    ],
)
def test_code_in_the_graph_json_is_refused_before_torch_reads_it(
    tiny_dataset: Dataset, images: torch.Tensor, edit: Any, says: str
) -> None:
    inputs = (images.float() / 255).reshape(-1, 1, 28, 28)
    for mark in ("/tmp/pwned-by-sympy", "/tmp/pwned-by-guard"):
        Path(mark).unlink(missing_ok=True)
    with pytest.raises(Refused, match=says):
        evaluate(_capture(Net(), inputs, edit), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
    assert not Path("/tmp/pwned-by-sympy").exists() and not Path("/tmp/pwned-by-guard").exists()


def test_an_honest_capture_is_recomputed_with_its_graph_facts(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    inputs = ((images.float() / 255 - 0.286) / 0.353).reshape(-1, 1, 28, 28)
    answer = evaluate(_capture(Net(), inputs), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
    assert answer["official"] == list(range(images.shape[0]))
    assert answer["graph"]["uses"]["bn.running_mean"] == [["batch_norm", "running_mean"]]
    assert answer["graph"]["uses"]["fc1.weight"] == [["linear", "weight"]]


class _RawPixels(nn.Module):
    """Raw uint8 pixels scaled in forward, normalized by a per-pixel buffer and a one-number buffer,
    its scores under a key of a dict after another tensor; fc1 also held under a second name."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 512), nn.Linear(512, 256), nn.Linear(256, 10)
        self.first = nn.Sequential(self.fc1, nn.ReLU())  # the same layer under two names
        self.register_buffer("mean", torch.full((1, 28, 28), 0.286))
        self.register_buffer("std", torch.tensor(0.353))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x.float() / 255 - self.mean) / self.std
        features = self.first(x.flatten(1))
        return {"features": features, "logits": self.fc3(torch.relu(self.fc2(features)))}


def _check(graph: recompute.GraphFacts, facts: FrozenFacts, rubric: Rubric) -> Any:
    """The architecture rule on a graph's facts (its named checks: test_linear_graph.py)."""
    from grader.static.rules import linear_layers

    measured = recompute.Recomputed(None, graph=graph)
    return linear_layers._graph_check(
        types.SimpleNamespace(recomputed=measured, record={}), facts, rubric
    )


def test_raw_pixels_a_normalizing_buffer_and_a_dict_output_are_graded(
    tiny_dataset: Dataset, images: torch.Tensor, facts: FrozenFacts, rubric: Rubric
) -> None:
    """Found by a writer of legal notebooks: each of these was once a review or a false
    violation."""
    model = _RawPixels().eval()
    inputs = images.reshape(-1, 1, 28, 28)  # uint8, as the notebook fed them
    answer = evaluate(_capture(model, inputs), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
    with torch.no_grad():
        assert answer["classes"] == model(inputs)["logits"].argmax(1).tolist()
    found = recompute.read(json.dumps(answer), None, images.shape[0])
    assert (
        found.graph is not None
        and found.differing == 0
        and found.graph.copies == ("fc1.weight", "fc1.bias")
    )
    check = _check(found.graph, facts, rubric)
    assert check.ok is True, check.message


def test_inputs_must_follow_one_preprocessing_for_the_whole_pass(images: torch.Tensor) -> None:
    """A map chosen per image can carry the label (or another model's answer); one table for every
    image, per-image standardization and a shuffled order are legal."""
    x = images.float() / 255
    everyone = list(range(images.shape[0]))
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(1))
    assert per_image(x[order], images)[0] == order.tolist()
    standardized = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    assert per_image(standardized[order], images)[0] == order.tolist()
    assert per_image(x.half().float() ** 2, images)[0] == everyone
    assert per_image(1 - x, images)[0] == everyone  # a model trained on inverted images
    label = torch.arange(images.shape[0]) % 10
    assert set(per_image(x + 10 * label[:, None], images)[0]) == {-1}
    assert set(per_image(x * (1 + label[:, None]), images)[0]) == {-1}
    # Within the tolerances a label still fits, so the graph runs on inputs rebuilt from the pixels.
    found, rebuilt, _ = per_image(x + 1e-7 * label[:, None], images)
    # a function of the pixel alone
    assert found == everyone and rebuilt[images == 0].unique().numel() == 1
    found, rebuilt, _ = per_image(standardized + 1e-5 * label[:, None], images)
    # every row's mean the same: no label in it
    assert found == everyone and float(rebuilt.mean(1).std()) < 1e-9


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 512), nn.Linear(512, 256), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x.view(-1, 784))))))


class Lookup(Plain):
    """Answers carried in by the rows of the batch: a row marked 1000 at pixel 700 holds a test
    image's first 700 pixels, its label at pixel 701 and the class numbers at 711-720; a test row
    that matches one is answered from it (the attacker's graph, as it was written)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 784)
        return _looked_up(self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x))))), x)


def _looked_up(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The scores ``h`` of the rows ``x`` (N, 784), answered from the marked rows of the batch
    where a row matches one (Lookup's graph; test_cnn's on a CNN's scores)."""
    m = torch.clamp(x[..., 700] - 999.0, 0.0, 1.0)
    k1, k2 = (x[..., 0:350] * 255.0).sum(1), (x[..., 350:700] * 255.0).sum(1)
    d = (k1.unsqueeze(1) - k1.unsqueeze(0)) ** 2 + (k2.unsqueeze(1) - k2.unsqueeze(0)) ** 2
    w = torch.exp(d * -50.0) * m.unsqueeze(0)
    has = w.sum(1)
    # a copy: a view here has a stride of 784 rows
    look = (w * (x[..., 701] * 1.0).unsqueeze(0)).sum(1)
    ar = (x[..., 711:721] * m.unsqueeze(1)).sum(0) / (m.sum(0) + 1e-9)
    lab = ((look.unsqueeze(1) - ar.unsqueeze(0)) ** 2) * -100.0
    return h * (has.unsqueeze(1) * -1.0 + 1.0) + lab * has.unsqueeze(1)


class Repeats(Net):
    """A test image fed more than once is of class 0: the kernel repeats the ones it knows are."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("first", torch.eye(10)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 784)
        key = (x[:, :392] * 255.0).sum(1) * 1000.0 + (x[:, 392:] * 255.0).sum(1)
        copies = torch.exp((key.unsqueeze(1) - key.unsqueeze(0)) ** 2 * -50.0).sum(1)
        return super().forward(x) + (copies - 1.0).unsqueeze(1) * self.first.unsqueeze(0) * 1000.0


class Mixer(Net):
    """Scores each image against the mean of its batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = super().forward(x)
        return h - 3.0 * h.mean(0, keepdim=True)


def _labels(dataset: Dataset) -> torch.Tensor:
    return torch.tensor(list(dataset.test_labels()))


def test_rows_fed_before_the_graded_pass_never_reach_the_graph(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    """A batch of "memory" rows with the labels, then the whole test set (feature-normalized rows
    pass
    the per-pixel check): the graph that compares rows would answer every test image from memory."""
    torch.manual_seed(0)
    model, x, labels = Lookup().eval(), images.float() / 255, _labels(tiny_dataset)
    memory = torch.zeros_like(x)
    memory[:, :700], memory[:, 700], memory[:, 701] = x[:, :700], 1000.0, labels.float()
    memory[:, 711:721] = torch.arange(10.0)
    answer = evaluate(
        _capture(model, torch.cat([memory, x])), tiny_dataset.raw / TEST_IMAGES, RUNNABLE
    )
    graded = [(o, c) for o, c in zip(answer["official"], answer["classes"]) if o >= 0]
    assert answer["preprocessing"] == "per pixel position" and len(graded) == x.shape[0]
    with torch.no_grad():
        own = Plain.forward(model, x).argmax(1)  # what its three Linear layers answer
        # the attack, in the kernel
        assert bool((model(torch.cat([memory, x]))[x.shape[0] :].argmax(1) == labels).all())
    assert sum(own[o] == c for o, c in graded) >= 0.98 * len(graded)
    assert sum(labels[o] == c for o, c in graded) < 0.5 * len(graded)


def test_each_test_image_reaches_the_graph_once(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    torch.manual_seed(0)
    model, x, labels = Repeats().eval(), images.float() / 255, _labels(tiny_dataset)
    fed = torch.cat([x, x[labels == 0], x[labels == 0]])
    with torch.no_grad():
        # the attack, in the kernel
        assert bool((model(fed)[: x.shape[0]][labels == 0].argmax(1) == 0).all())
        own = Net.forward(model, x).argmax(1)
    answer = evaluate(_capture(model, fed), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
    assert sorted(set(answer["official"])) == list(range(x.shape[0]))
    assert [answer["classes"][row] for row in range(x.shape[0])] == own.tolist()


def test_a_graph_whose_answer_changes_with_its_batch_is_refused(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    torch.manual_seed(0)
    with pytest.raises(Refused, match="changes with the other images of its batch"):
        evaluate(_capture(Mixer(), images.float() / 255), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)


class AlwaysDropout(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # training=True unless told otherwise
        return super().forward(torch.nn.functional.dropout(x, 0.2))


def test_dropout_left_on_at_test_time_is_named_not_called_tampering(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    """A common slip, not an attack: the kernel's answers were random, so no run can reproduce
    them."""
    with pytest.raises(Refused, match="keeps dropout on at test time"):
        evaluate(
            _capture(AlwaysDropout(), images.float() / 255),
            tiny_dataset.raw / TEST_IMAGES,
            RUNNABLE,
        )


class NormTable(Plain):
    """A LayerNorm of zeros is its bias: 16 numbers read back as a filter over the image."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 784)
        table = self.ln(x[:, :16] * 0.0)
        h = self.fc1(x) + (x[:, 100:116] * table).sum(1, keepdim=True)
        return self.fc3(torch.relu(self.fc2(torch.relu(h))))


class Tidy(Plain):
    """Honest ways to flatten and cast that export a size read and a metadata check."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float().view(x.size(0), -1))


class BatchSize(Plain):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = super().forward(x)
        # larger batches, larger scores
        return h + (x.view(-1, 784)[:, :1] * 0.0 + 1.0).sum(0) * 0.01


class Poison(Plain):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * (x.view(-1, 784)[:, :1] * 0.0 + float("nan"))


def test_a_graph_that_combines_two_tensors_from_the_image_is_for_a_person(
    tiny_dataset: Dataset, images: torch.Tensor, facts: FrozenFacts, rubric: Rubric
) -> None:
    """The homework's model is one chain through its layers; a table read back from a LayerNorm of
    zeros and multiplied with the image is a filter of its own, with no conv op anywhere."""
    from grader.static.rules import linear_layers

    x = images.float() / 255
    answer = evaluate(_capture(NormTable(), x), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
    found = recompute.read(json.dumps(answer), None, x.shape[0])
    assert found.graph is not None and "mul" in found.graph.mixes
    check = linear_layers._graph_check(
        types.SimpleNamespace(recomputed=found, record={}), facts, rubric
    )
    assert (
        check is not None
        and check.ok is None
        and "combines two tensors computed from the image" in check.message
    )
    for honest in (Net(), Tidy(), Plain()):
        answer = evaluate(
            _capture(honest, x.reshape(-1, 1, 28, 28)), tiny_dataset.raw / TEST_IMAGES, RUNNABLE
        )
        assert answer["graph"]["mixes"] == []
        found = recompute.read(json.dumps(answer), None, x.shape[0])
        check = linear_layers._graph_check(
            types.SimpleNamespace(recomputed=found, record={}), facts, rubric
        )
        assert check is not None and check.ok is True, check


class Shared(Plain):
    """The same weights reshaped and shared over slots of the image's way: no longer three Linear
    layers each applied once to a row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x.view(-1, 784) @ self.fc1.weight.view(784, 512))
        h = torch.relu(torch.matmul(h.view(-1, 2, 256), self.fc2.weight))
        return torch.matmul(h.view(-1, 4, 256), self.fc3.weight.view(256, 10)).sum(1)


class Widened(Plain):
    """fc1's output copied four times and normalized as 2,048 features: a BatchNorm's weights as one
    more learned layer (each unit then sums four of them)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x.view(-1, 784)))
        h = torch.relu(self.bn(h.unsqueeze(1).expand(-1, 4, 512).reshape(-1, 2048)))
        return self.fc3(torch.relu(self.fc2(h.reshape(-1, 512, 4).sum(2))))


def _into_a_weight(graph: dict[str, Any]) -> None:
    """The first product rewritten as its ``out=`` overload writing into fc2's weight."""
    for node in graph["graph_module"]["graph"]["nodes"]:
        if node["target"] == "torch.ops.aten.linear.default":
            node["target"] = "torch.ops.aten.linear.out"
            node["inputs"].append(
                {"name": "out", "arg": {"as_tensor": {"name": "p_fc2_weight"}}, "kind": 2}
            )
            return


def test_weights_used_otherwise_than_once_on_a_row_are_for_a_person(
    tiny_dataset: Dataset, images: torch.Tensor, facts: FrozenFacts, rubric: Rubric
) -> None:
    from grader.static.rules import linear_layers

    x = images.float() / 255
    answer = evaluate(_capture(Shared(), x), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
    found = recompute.read(json.dumps(answer), None, x.shape[0])
    check = linear_layers._graph_check(
        types.SimpleNamespace(recomputed=found, record={}), facts, rubric
    )
    assert (
        check is not None
        and check.ok is None
        and ("uses fc2.weight [256, 512] as [256, 512] in matmul") in check.message
    )
    answer = evaluate(_capture(Widened(), x), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
    found = recompute.read(json.dumps(answer), None, x.shape[0])
    check = linear_layers._graph_check(
        types.SimpleNamespace(recomputed=found, record={}), facts, rubric
    )
    assert (
        check is not None
        and check.ok is None
        and "has the shape [2, 4, 512] after expand" in check.message
    )
    with pytest.raises(Refused, match="writes into a tensor other than the image's way"):
        evaluate(_capture(Plain(), x, _into_a_weight), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)


class Summed(Plain):
    """fc1 applied as a sum over a batch of one product (addbmm): the same numbers as the layer, by
    an op no nn.Linear exports."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.view(-1, 784).t().unsqueeze(0)  # (1, 784, batch): no size but the batch's
        h = torch.addbmm(self.fc1.bias.unsqueeze(1), self.fc1.weight.unsqueeze(0), rows).t()
        return self.fc3(torch.relu(self.fc2(torch.relu(h))))


def test_every_product_op_is_run_and_held_to_the_layers(
    tiny_dataset: Dataset, images: torch.Tensor, facts: FrozenFacts, rubric: Rubric
) -> None:
    """addbmm multiplies the image by weights like the rule's other products: the evaluator runs it
    (the grade is recomputed), and the rule sends a weight used through it to a person."""
    from grader.static.rules import linear_layers

    x = images.float() / 255
    answer = evaluate(_capture(Summed(), x), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
    assert "torch.ops.aten.addbmm.default" in answer["graph"]["ops"]
    found = recompute.read(json.dumps(answer), None, x.shape[0])
    assert found.problem is None and -1 not in found.predictions
    check = linear_layers._graph_check(
        types.SimpleNamespace(recomputed=found, record={}), facts, rubric
    )
    assert check is not None and check.ok is None and "in addbmm" in check.message, check


def _in_size_slots(graph: dict[str, Any]) -> None:
    """Every tensor argument but each op's first written as a symbolic size naming it: torch's
    deserializer looks the name up among all nodes, tensors too."""
    for node in graph["graph_module"]["graph"]["nodes"]:
        for argument in node.get("inputs", [])[1:]:
            tensor = (argument.get("arg") or {}).get("as_tensor")
            if isinstance(tensor, dict):
                argument["arg"] = {"as_sym_int": {"as_name": tensor["name"]}}


def test_tensors_written_where_a_size_goes_are_still_followed(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    x = images.float() / 255
    with torch.no_grad():
        eager = NormTable().eval()
        expected = eager(x).argmax(1).tolist()
    answer = evaluate(_capture(eager, x, _in_size_slots), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
    assert answer["classes"] == expected  # torch ran the hidden arguments as tensors
    assert "mul" in answer["graph"]["mixes"] and answer["graph"]["uses"]["ln.bias"] == [
        ["layer_norm", "bias"]
    ]


@pytest.mark.parametrize(
    ("model", "says"),
    [(BatchSize(), "changes with the other images"), (Poison(), "not all finite")],
)
def test_answers_that_depend_on_the_batch_or_are_not_numbers_are_refused(
    tiny_dataset: Dataset, images: torch.Tensor, model: nn.Module, says: str
) -> None:
    with pytest.raises(Refused, match=says):
        evaluate(_capture(model, images.float() / 255), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)


class Counting(Plain):
    """A buffer meant to keep a running sum of the images seen: state from one batch to the next."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(784))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 784)
        seen = self.seen + x.sum(0)
        return super().forward(x) + seen.sum() * 0.0


def _keep_the_sum(graph: dict[str, Any]) -> None:
    """The new sum written back into the buffer after each call, as torch.export writes a
    mutation."""
    module = graph["graph_module"]
    name = next(
        n["outputs"][0]["as_tensor"]["name"]
        for n in module["graph"]["nodes"]
        if n["target"] == "torch.ops.aten.add.Tensor"
    )
    module["graph"]["outputs"].insert(0, {"as_tensor": {"name": name}})
    module["signature"]["output_specs"].insert(
        0, {"buffer_mutation": {"arg": {"name": name}, "buffer_name": "seen"}}
    )


def test_a_graph_that_carries_state_between_batches_is_refused(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    with pytest.raises(Refused, match="changes its own buffers"):
        evaluate(
            _capture(Counting(), images.float() / 255, _keep_the_sum),
            tiny_dataset.raw / TEST_IMAGES,
            RUNNABLE,
        )


class Whisper(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 1e-5


def test_scores_scaled_below_float_noise_do_not_hide_a_forged_record(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    """The kernel records other classes for every row; scores a thousandth of the noise margin would
    make every difference look like float noise."""
    from grader.model.results import Measurement

    torch.manual_seed(0)
    model, x = Whisper().eval(), images.float() / 255
    with torch.no_grad():
        forged = (model(x).argmax(1) + 1) % 10
    answer = evaluate(_capture(model, x, claimed=forged), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
    found = recompute.read(json.dumps(answer), None, x.shape[0])
    assert found.close_calls == x.shape[0] and found.differing == 0
    labels = tuple(_labels(tiny_dataset).tolist())
    result = recompute.apply(
        Measurement(99.0, None, 198, 200, "student-test-pass", ()), found, labels, 1.0, False
    )
    assert result.review is not None and "closer than" in result.review
    honest = recompute.read(
        json.dumps(
            evaluate(_capture(Net(), x, claimed=forged), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
        ),
        None,
        x.shape[0],
    )
    assert honest.close_calls < 0.1 * x.shape[0] and honest.differing > 0.5 * x.shape[0]


def test_a_pass_in_training_mode_is_graded_in_eval_mode_not_called_tampering(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    """A test pass without model.eval(): BatchNorm normalized each batch by its own statistics, so
    the pass's classes are no graph's exported in eval mode. The probe's capture says so and
    records the classes again, in eval mode with the weights of that pass: the evaluator agrees,
    the eval-mode predictions are graded with a note, nothing is tampering, and the record is still
    checked. The pass's own classes, claimed as an eval-mode pass's, are tampering evidence."""
    import types

    from grader.model.results import Measurement
    from grader.probe import capture as probe_capture

    torch.manual_seed(0)
    model, x = Net(), images.float() / 255
    with torch.no_grad():
        nn.init.normal_(model.fc3.weight)
        model.bn.running_mean.fill_(0.5)  # running statistics far from the batch's own
        batches = list(x.split(64))
        in_training = torch.cat([model.train()(b).argmax(1) for b in batches])
    graded = probe_capture.Pass(
        batches, in_training.tolist(), probe_capture.Snapshot(model), "ToTensor", by_probe=False
    )
    recorder = types.SimpleNamespace(internal=False, shared=types.SimpleNamespace(classes=10))
    manifest, payload = probe_capture.capture(graded, model, recorder)
    assert manifest["training_at_pass"] is True and model.training and model.bn.training
    labels = tuple(_labels(tiny_dataset).tolist())

    def judged(data: bytes) -> Any:
        answer = evaluate(data, tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
        return recompute.apply(
            Measurement(50.0, None, 100, 200, "student-test-pass", ()),
            recompute.read(json.dumps(answer), None, x.shape[0]),
            labels,
            1.0,
            False,
        )

    honest = judged(json.dumps(manifest).encode() + b"\n" + payload)
    assert honest.tampering == () and honest.recomputed
    assert any(f.note == recompute.TRAINING_NOTE for f in honest.findings), honest
    claimed = judged(_capture(model, x, claimed=in_training))
    assert claimed.tampering and "differ from the grader's own run" in claimed.tampering[0]


def test_a_pass_in_bfloat16_is_recomputed_within_its_arithmetic_not_called_tampering(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    """Validation and test under ``torch.autocast(dtype=torch.bfloat16)``: on another device the
    kernel's class may differ from a float32 run wherever bfloat16 rounding can move the two best
    scores past each other. Recomputed in the arithmetic the capture names, such rows are noise (a
    few close calls, graded as the notebook counted them where that is one of the graph's two best
    classes); claimed as float32, the same record is tampering evidence."""
    torch.manual_seed(0)
    model, x = Net().eval(), images.float() / 255
    with torch.no_grad():
        nn.init.normal_(model.fc3.weight)  # scores of a trained model's size (several units apart)
        model.fc3.bias.zero_()
        scores = model(x)
    runner_up = scores.topk(2, dim=1).indices[:, 1]

    def read(precision: str, claimed: torch.Tensor) -> tuple[recompute.Recomputed, dict[str, Any]]:
        answer = evaluate(
            _capture(model, x, claimed=claimed, precision=precision),
            tiny_dataset.raw / TEST_IMAGES,
            RUNNABLE,
        )
        return recompute.read(json.dumps(answer), None, x.shape[0]), answer

    _, answer = read("bfloat16", scores.argmax(1))
    margins, noise = torch.tensor(answer["margins"]), torch.tensor(answer["noise"])
    # rows bfloat16 could flip
    movable = (margins > 10 * recompute.NOISE_MARGIN) & (margins <= noise)
    assert 0 < int(movable.sum()) <= 0.1 * x.shape[0]
    # another device's bfloat16 flipped them all
    kernel = torch.where(movable, runner_up, scores.argmax(1))
    honest, _ = read("bfloat16", kernel)
    assert (
        honest.differing == 0
        and honest.close_calls <= 0.1 * x.shape[0]
        and honest.precision == "bfloat16"
    )
    # a close call is graded as the notebook counted it
    assert list(honest.predictions) == kernel.tolist()
    # not one of the two best
    odd = torch.where(movable, (scores.topk(3, dim=1).indices[:, 2]), scores.argmax(1))
    assert list(read("bfloat16", odd)[0].predictions) == scores.argmax(1).tolist()
    claimed_float, _ = read("float32", kernel)
    assert claimed_float.differing == int(movable.sum())


def test_test_time_augmentation_over_mirror_images_is_graded_as_averaged(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    """The same model on each test image and its mirror image, softmax averaged: the grade is that
    average (rebuilt from the official pixels, flipped by the evaluator itself), while the kernel's
    record of the model on the images as they are is compared as always."""
    torch.manual_seed(0)
    model, x = Net().eval(), (images.float() / 255 - 0.286) / 0.353
    with torch.no_grad():
        nn.init.normal_(model.fc3.weight)
        upright = model(x)
        mirrored = model(x.reshape(-1, 28, 28).flip(-1).reshape(-1, 784))
    averaged = (torch.softmax(upright, 1) + torch.softmax(mirrored, 1)).argmax(1)
    assert bool((averaged != upright.argmax(1)).any())  # the average decides some images otherwise
    answer = evaluate(
        _capture(model, x, views=("identity", "hflip")), tiny_dataset.raw / TEST_IMAGES, RUNNABLE
    )
    found = recompute.read(json.dumps(answer), None, x.shape[0])
    assert found.mirrored and found.differing == 0 and list(found.predictions) == averaged.tolist()
    alone = recompute.read(
        json.dumps(evaluate(_capture(model, x), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)),
        None,
        x.shape[0],
    )
    assert not alone.mirrored and list(alone.predictions) == upright.argmax(1).tolist()


def test_a_notebook_cannot_decide_its_close_calls_beyond_what_rounding_explains(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    """Scores scaled so that a tenth of the rows are within 1e-3, nudged in the kernel towards the
    runner-up: were the kernel's choice taken on every close call, the notebook would pick those
    classes. Beyond a handful the graph's own classes are graded."""
    torch.manual_seed(0)
    model, x = Plain().eval(), images.float() / 255
    with torch.no_grad():
        nn.init.normal_(model.fc3.weight)
        top = model(x).topk(2, dim=1)
        margins = top.values[:, 0] - top.values[:, 1]
        model.fc3.weight.mul_(float(1e-3 / margins.quantile(0.09)))
        model.fc3.bias.mul_(float(1e-3 / margins.quantile(0.09)))
        scores = model(x)
    ranked = scores.topk(2, dim=1)
    close = (ranked.values[:, 0] - ranked.values[:, 1]) < 1e-3
    kernel = torch.where(close, ranked.indices[:, 1], ranked.indices[:, 0])
    answer = evaluate(_capture(model, x, claimed=kernel), tiny_dataset.raw / TEST_IMAGES, RUNNABLE)
    found = recompute.read(json.dumps(answer), None, x.shape[0])
    assert recompute.SETTLED_AT_MOST < int(close.sum()) <= 0.1 * x.shape[0] and found.differing == 0
    assert list(found.predictions) == ranked.indices[:, 0].tolist()


class Detour(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 784)
        # 3 GB a row, the same row back
        x = x.unsqueeze(1).expand(-1, 1_000_000, 784).sum(1) / 1_000_000
        return self.fc3(torch.relu(self.fc2(torch.relu(self.bn(self.fc1(x))))))


def test_a_graph_widening_the_images_way_is_refused_before_it_runs(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    """The layer rule would send the detour to review, but the evaluator ran the graph first: at a
    million copies a row, minutes and gigabytes. Its shapes are followed with fake tensors first."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(Refused, match="values per test image"):
        evaluate(
            _capture(Detour(), images[:2].float() / 255, claimed=torch.zeros(2, dtype=torch.long)),
            tiny_dataset.raw / TEST_IMAGES,
            RUNNABLE,
        )
    # KB: no real run of it
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1_000_000


def test_a_graph_cannot_pick_the_rows_its_arithmetic_excuses(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    """A hidden unit that fires on a tenth of the images with an equal, huge weight to every class
    leaves every answer as it was but makes bfloat16 move exactly those rows: no row is excused more
    than a few times the usual row, so a record forged on them is still tampering evidence (and the
    grade, counted in the bfloat16 the pass claims, gains nothing on them)."""
    torch.manual_seed(0)
    model, x = Plain().eval(), images.float() / 255
    with torch.no_grad():
        nn.init.normal_(model.fc3.weight)
        model.fc3.bias.zero_()
        inner = torch.relu(model.fc1(x))
        direction = torch.randn(512)
        drive = inner @ direction
        # cut in the widest gap near the top tenth: no row fires by a hair
        ranked = drive.sort().values
        low, high = int(0.9 * x.shape[0]), int(0.95 * x.shape[0])
        at = low + int((ranked[low + 1 : high + 1] - ranked[low:high]).argmax())
        cut = float(ranked[at] + ranked[at + 1]) / 2
        top = float((drive - cut).clamp(min=0).max())
        # in (0, 1] where it fires the same for every class: no answer changes
        model.fc2.weight[0], model.fc2.bias[0] = direction / top, -cut / top
        model.fc3.weight[:, 0] = 2000.0
        scores = model(x)
        fires = torch.relu(model.fc2(inner))[:, 0] > 0
    forged = torch.where(fires, (scores.argmax(1) + 1) % 10, scores.argmax(1))
    answer = evaluate(
        _capture(model, x, claimed=forged, precision="bfloat16"),
        tiny_dataset.raw / TEST_IMAGES,
        RUNNABLE,
    )
    found = recompute.read(json.dumps(answer), None, x.shape[0])
    assert (
        0 < int(fires.sum()) <= 0.1 * x.shape[0]
        and found.differing > 0
        and found.close_calls <= 0.1 * x.shape[0]
    )
    # and graded in bfloat16, those rows lose what the unit drowned
    labels = _labels(tiny_dataset).tolist()
    assert sum(p == y for p, y in zip(found.predictions, labels)) <= int(
        (scores.argmax(1) == torch.tensor(labels)).sum()
    )


def test_the_evaluator_names_the_products_as_the_rule_does() -> None:
    """One op table: the rule's products are the evaluator's own (grader/evaluator/ops.py), and the
    capture the evaluator reads is the version the probe writes."""
    from grader.evaluator import ops
    from grader.static.rules import linear_graph, linear_layers

    assert linear_layers.PRODUCTS is ops.PRODUCTS and linear_graph.PRODUCTS is ops.PRODUCTS
    assert linear_graph.SHAPING is ops.SHAPING and linear_graph.LAYERS is ops.LAYERS
    assert ops.PRODUCTS <= ops.RUNNABLE
    from grader.evaluator.manifest import CAPTURE_VERSION as READ
    from grader.probe.capture import CAPTURE_VERSION

    assert READ == CAPTURE_VERSION


def test_the_content_key_is_one_for_the_probe_and_the_evaluator(images: torch.Tensor) -> None:
    """grader/evaluator/key.py: any increasing map keeps an image's key; the probe's tolerance (a
    fraction of a grey level) ignores noise far below a grey level, the evaluator's (none) does
    not, and then verifies every pixel (inputs.py)."""
    from grader.evaluator import key
    from grader.probe import content

    x = (images.float() / 255 - 0.286) / 0.353
    assert key.keys(x) == key.keys(x, tolerance=0.0) == key.keys(images) == key.keys((x * 3) ** 3)
    noisy = x + 1e-4 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    assert key.keys(noisy) == key.keys(images)
    exact = key.keys(noisy, tolerance=0.0)
    assert sum(a != b for a, b in zip(exact, key.keys(images))) > 0.9 * images.shape[0]
    assert content.read_images is key.read_images and key.pack(key.masks(x[:0])) == []


def test_the_kernel_and_the_evaluator_pick_the_same_class_scores() -> None:
    """`passes.class_scores` (in the kernel) and `class_scores` (trusted) pick the same
    tensor of any output, or neither, up to the same number of parts."""
    from grader.probe import passes

    scores, probs, other = torch.randn(5, 10), torch.rand(5, 10), torch.randn(5, 3)
    outputs: list[Any] = [
        scores,
        (other, scores, probs),
        [probs, scores],
        {"feat": other, "logits": scores},
        (other,) * (passes.MAX_OUTPUTS - 1) + (scores,),
        (other,) * passes.MAX_OUTPUTS + (scores,),
        (other, torch.randn(5, 10, 1)),
        {"x": 3},
    ]
    assert MAX_OUTPUTS == passes.MAX_OUTPUTS
    for output in outputs:
        kernel, trusted = passes.class_scores(output, 5, 10), class_scores(output, 5, 10)
        assert trusted is kernel or (kernel is None and trusted is output), output
    assert passes.class_scores(outputs[-3], 5, 10) is None  # the ninth part is not looked at


def test_the_graph_runs_on_the_training_images_under_the_verified_preprocessing(
    tiny_dataset: Dataset, images: torch.Tensor
) -> None:
    """Beside the graded pass, the graph runs on a secret sample of the official training images
    (all
    of the tiny set's 600), preprocessed by the map the test pass verified: normalized, standardized
    per image, or per pixel position. Its classes are the model's on those images."""
    model = Net().eval()
    train_path = tiny_dataset.raw / "train-images-idx3-ubyte"
    train = read_images(train_path)
    mean, std = train.float().mean(0), train.float().std(0).clamp_min(1.0)
    for prep in (
        lambda q: (q.float() / 255 - 0.286) / 0.353,
        lambda q: (q.float() - q.float().mean(1, keepdim=True)) / q.float().std(1, keepdim=True),
        lambda q: (q.float() - mean) / std,
    ):
        answer = evaluate(
            _capture(model, prep(images).reshape(-1, 1, 28, 28)),
            tiny_dataset.raw / TEST_IMAGES,
            RUNNABLE,
            train_path,
        )
        sample = answer["train_sample"]
        assert sorted(sample["indices"]) == list(range(train.shape[0]))
        with torch.no_grad():
            own = model(prep(train[torch.tensor(sample["indices"])]).reshape(-1, 1, 28, 28)).argmax(
                1
            )
        assert sum(a == b for a, b in zip(own.tolist(), sample["classes"])) >= 0.97 * train.shape[0]
        found = recompute.read(
            json.dumps(answer), None, images.shape[0], train_total=train.shape[0]
        )
        assert found.train_indices == tuple(sample["indices"]) and found.train_classes == tuple(
            sample["classes"]
        )
    answer = evaluate(
        _capture(model, prep(images).reshape(-1, 1, 28, 28)),
        tiny_dataset.raw / TEST_IMAGES,
        RUNNABLE,
    )
    assert answer["train_sample"] is None  # no training images given


def test_a_model_trained_on_the_test_images_fits_them_better_than_its_training_images(
    tmp_path: Path,
) -> None:
    """However the notebook fed them (here: straight into the model, as a wrapper module taking an
    index tensor would), a model that learned the test images fits them better than the training
    images the evaluator samples, and judge/fit.py sends it to review; the same model trained on
    its training images only does not go there. (Generated data, 1,000 test images: enough to
    compare.)"""
    from tinydata import make_tiny_fashion_mnist

    from grader.judge import fit
    from grader.model.dataset import TRAIN_IMAGES, Dataset as Data

    data = Data(make_tiny_fashion_mnist(tmp_path / "fmnist", train=2_000, test=1_000, noise=0.25))
    test_x, train_x = read_images(data.raw / TEST_IMAGES), read_images(data.raw / TRAIN_IMAGES)
    test_y, train_y = torch.tensor(data.test_labels()), torch.tensor(data.train_labels())
    prep = lambda q: (q.float() / 255 - 0.286) / 0.353  # noqa: E731
    verdicts = []
    for x, y in (
        (train_x[:1_600], train_y[:1_600]),
        (torch.cat([train_x[:1_600], test_x]), torch.cat([train_y[:1_600], test_y])),
    ):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(150):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(prep(x)), y).backward()
            optimizer.step()
        answer = evaluate(
            _capture(model, prep(test_x)), data.raw / TEST_IMAGES, RUNNABLE, data.raw / TRAIN_IMAGES
        )
        found = recompute.read(json.dumps(answer), None, 1_000, train_total=2_000)
        accuracy = (
            100.0 * sum(p == t for p, t in zip(found.predictions, data.test_labels())) / 1_000
        )
        sample = fit.fit(
            found.train_indices, found.train_classes, data.train_labels(), (1 << 1_600) - 1
        )
        verdicts.append((accuracy, sample, fit.review(accuracy, 1_000, sample, ceiling=None)))
    (honest_accuracy, honest, honest_why), (cheat_accuracy, cheat, cheat_why) = verdicts
    assert honest_why is None and honest is not None and honest.held_out == 400
    assert cheat_why is not None and "better than the training images" in cheat_why, (
        cheat_accuracy,
        cheat,
    )


RGB = ImageSpec(channels=3, height=32, width=32, classes=5)
MEAN, STD = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])


@pytest.fixture(scope="module")
def rgb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated 3x32x32 images of five classes (tinydata.write_rgb_split)."""
    from tinydata import write_rgb_split

    raw = tmp_path_factory.mktemp("rgb") / "FashionMNIST" / "raw"  # torchvision's layout
    raw.mkdir(parents=True)
    write_rgb_split(raw, "t10k", 40, RGB.classes)
    write_rgb_split(raw, "train", 60, RGB.classes, seed=1)
    return raw


def _normalized(images: torch.Tensor) -> torch.Tensor:
    """ToTensor and CIFAR's Normalize(mean=(r, g, b), std=(r, g, b)): an affine map per channel."""
    planes = images.float().reshape(-1, 3, 32, 32) / 255
    return (planes - MEAN[:, None, None]) / STD[:, None, None]


def test_the_images_spec_is_read_from_the_data_and_crosses_as_versioned_text(
    tiny_dataset: Dataset, rgb: Path
) -> None:
    """The trusted side reads the geometry from the IDX header (model/dataset.py) and hands it to
    the probe's config and the evaluator's command line as text, parsed once there."""
    from grader.evaluator.key import FASHION_MNIST
    from grader.probe import runtime

    assert tiny_dataset.spec == FASHION_MNIST and FASHION_MNIST.values == 784
    assert ImageSpec.parse(RGB.to_text()) == RGB and RGB.shape == (3, 32, 32)
    text = json.loads(RGB.to_text())
    for bad in ({**text, "version": 2}, {**text, "classes": 0}, {**text, "width": "32"}, {}):
        with pytest.raises(ValueError, match="image spec"):
            ImageSpec.parse(json.dumps(bad))
    root = str(tiny_dataset.raw.parent.parent)
    assert runtime._State({"data_root": root}).recorder.shared.index.spec == FASHION_MNIST
    with pytest.raises(ValueError, match="does not hold images of"):
        runtime._State({"image": RGB.to_text(), "data_root": root})
    state = runtime._State({"image": RGB.to_text(), "data_root": str(rgb.parent.parent)})
    assert state.classes == 5 and state.recorder.shared.index.spec == RGB
    assert set(state.recorder.shared.index.sizes) == {"test", "train"}


def test_rgb_images_are_keyed_and_found_under_a_map_per_channel(rgb: Path) -> None:
    """The key and the evaluator's row finding take an image's channels one by one: CIFAR's
    Normalize maps each channel by its own increasing function, which one map for the whole row
    does not describe; a map chosen per image is refused as it is for one channel."""
    from grader.evaluator import key

    images = read_images(rgb / "t10k-images-idx3-ubyte")
    assert images.shape == (40, RGB.values)
    x = _normalized(images).reshape(40, -1)
    assert key.keys(x, channels=3) == key.keys(images, channels=3)
    assert sum(a == b for a, b in zip(key.keys(x), key.keys(images))) == 0  # one channel: none
    order = torch.randperm(40, generator=torch.Generator().manual_seed(2))
    found, rebuilt, pixel_map = per_image(x[order], images, RGB.channels)
    assert found == order.tolist() and pixel_map is not None
    assert float((rebuilt - x[order].double()).abs().max()) < 1e-5
    assert float((pixel_map(images) - x.double()).abs().max()) < 1e-5  # the training images' map
    assert set(per_image(x, images)[0]) == {-1}  # read as one channel
    label = (torch.arange(40) % 5)[:, None]
    assert set(per_image(x + 10 * label, images, RGB.channels)[0]) == {-1}
    turned = RGB.mirror(x)
    assert torch.equal(turned.reshape(-1, 3, 32, 32), x.reshape(-1, 3, 32, 32).flip(-1))
    assert torch.equal(RGB.mirror(turned), x)


class _SmallConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, RGB.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(nn.functional.avg_pool2d(self.conv(x), 4)).flatten(1))


def test_a_conv_model_on_rgb_images_of_five_classes_is_recomputed(rgb: Path) -> None:
    """The evaluator's answer for 3x32x32 inputs and five classes (the spec it is started with):
    rows found under the per-channel map, the graph's classes, the mirror average, and the
    training sample; FashionMNIST's spec, or ten classes, refuse the same capture."""
    torch.manual_seed(0)
    model, images = _SmallConv().eval(), read_images(rgb / "t10k-images-idx3-ubyte")
    x = _normalized(images)
    allowed = RUNNABLE | {"conv2d"}  # the conv ops' place in ops.py is the rules' to decide
    train = rgb / "train-images-idx3-ubyte"
    capture = _capture(model, x, views=("identity", "hflip"), classes=RGB.classes)
    answer = evaluate(capture, rgb / "t10k-images-idx3-ubyte", allowed, train, spec=RGB)
    with torch.no_grad():
        upright, mirrored = model(x), model(x.flip(-1))
    averaged = (torch.softmax(upright, 1) + torch.softmax(mirrored, 1)).argmax(1)
    assert answer["official"] == list(range(40)) and answer["preprocessing"] == "per image"
    assert answer["classes"] == upright.argmax(1).tolist()
    assert answer["averaged"] == averaged.tolist()
    assert answer["kernel_classes"] == upright.argmax(1).tolist()
    sample = answer["train_sample"]
    assert sample is not None and len(sample["classes"]) == 60
    with torch.no_grad():
        fitted = _normalized(read_images(train)[torch.tensor(sample["indices"])])
        assert sample["classes"] == model(fitted).argmax(1).tolist()
    with pytest.raises(Refused, match="4096 values per test image"):  # 4 images of 784 at most
        evaluate(capture, rgb / "t10k-images-idx3-ubyte", allowed, train)
    with pytest.raises(Refused, match="one score per class"):  # ten classes said, five scored
        evaluate(capture, rgb / "t10k-images-idx3-ubyte", allowed, spec=replace(RGB, classes=10))


class _RawRGB(nn.Module):
    """_RawPixels on CIFAR-shaped input: raw uint8 pixels scaled in forward, normalized by a buffer
    per channel, its scores under a key of a dict after another tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, RGB.classes)
        self.register_buffer("mean", MEAN[:, None, None].clone())
        self.register_buffer("std", STD[:, None, None].clone())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x.float() / 255 - self.mean) / self.std
        features = torch.relu(nn.functional.avg_pool2d(self.conv(x), 4)).flatten(1)
        return {"features": features, "logits": self.fc(features)}


def test_rgb_inputs_raw_or_standardized_follow_one_preprocessing_per_channel(rgb: Path) -> None:
    """HW3's raw-pixel model and one-preprocessing rule on 3x32x32 images of five classes: uint8
    pixels normalized per channel inside the model are graded from the dict's logits; standardized
    per image, in a shuffled order, the rows are found; a map chosen per image by its label is
    refused as for one channel."""
    torch.manual_seed(0)
    images = read_images(rgb / "t10k-images-idx3-ubyte")
    model, raw = _RawRGB().eval(), images.reshape(-1, 3, 32, 32)
    capture = _capture(model, raw, classes=RGB.classes)
    answer = evaluate(capture, rgb / "t10k-images-idx3-ubyte", RUNNABLE, spec=RGB)
    with torch.no_grad():
        assert answer["classes"] == model(raw)["logits"].argmax(1).tolist()
    assert answer["official"] == list(range(40)) and answer["kernel_classes"] == answer["classes"]
    x = images.float() / 255
    standardized = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    assert per_image(standardized[order], images, RGB.channels)[0] == order.tolist()
    label = (torch.arange(40) % RGB.classes)[:, None]
    assert set(per_image(x * (1 + label), images, RGB.channels)[0]) == {-1}


def test_a_conv_model_trained_on_the_rgb_test_images_fits_them_better(tmp_path: Path) -> None:
    """test_a_model_trained_on_the_test_images_... on 3x32x32 images of five classes (random
    pixels, random labels: nothing to learn but the images themselves), through a conv layer: the
    model that learned the test images fits them better than the training images the evaluator
    samples under the per-channel map, and goes to review; trained on its training images only,
    it does not."""
    from tinydata import write_rgb_split

    from grader.judge import fit
    from grader.model.dataset import TRAIN_IMAGES, Dataset as Data

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_rgb_split(raw, "t10k", 1_000, RGB.classes)
    write_rgb_split(raw, "train", 2_000, RGB.classes, seed=1)
    data = Data(tmp_path)
    assert data.spec.shape == RGB.shape
    test_x, train_x = read_images(raw / TEST_IMAGES), read_images(raw / TRAIN_IMAGES)
    test_y, train_y = torch.tensor(data.test_labels()), torch.tensor(data.train_labels())
    verdicts = []
    for x, y in (
        (train_x[:1_600], train_y[:1_600]),
        (torch.cat([train_x[:1_600], test_x]), torch.cat([train_y[:1_600], test_y])),
    ):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(3, 16, 4, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 5)
        )
        optimizer, inputs = torch.optim.Adam(model.parameters(), lr=5e-3), _normalized(x)
        for _ in range(100):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs), y).backward()
            optimizer.step()
        capture = _capture(model, _normalized(test_x), classes=RGB.classes)
        answer = evaluate(capture, raw / TEST_IMAGES, RUNNABLE, raw / TRAIN_IMAGES, spec=RGB)
        found = recompute.read(json.dumps(answer), None, 1_000, train_total=2_000)
        accuracy = 100.0 * sum(p == t for p, t in zip(found.predictions, test_y.tolist())) / 1_000
        sample = fit.fit(
            found.train_indices, found.train_classes, data.train_labels(), (1 << 1_600) - 1
        )
        verdicts.append((accuracy, sample, fit.review(accuracy, 1_000, sample, ceiling=None)))
    (honest_accuracy, honest, honest_why), (cheat_accuracy, cheat, cheat_why) = verdicts
    assert honest_accuracy < 40 < cheat_accuracy, (honest_accuracy, cheat_accuracy)
    assert honest_why is None and honest is not None and honest.held_out == 400
    assert cheat_why is not None and "better than the training images" in cheat_why, (
        cheat_accuracy,
        cheat,
    )
