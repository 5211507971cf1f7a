"""The grade from the trusted side: what the evaluator (run/evaluate.py) computed from the captured
graded pass, read and checked here, and what it makes of the measurement.

The evaluator's answer is our own process's output, but it describes a capture the student's code
wrote, so every field is validated like the probe's record. The grade is the evaluator's
predictions for verified test images against the official labels; where the kernel recorded other
classes beyond float noise, that is tampering evidence; where nothing could be recomputed or the
inputs are not test images, the result goes to review.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from grader.model.findings import Finding, Flag
from grader.model.probe_facts import ProbeFacts
from grader.model.results import Measurement

TRAINING_NOTE = (
    "the graded test pass ran with the model in training mode (no model.eval()): graded as the "
    "model predicts in eval mode (batch statistics and dropout off), as the probe ran it again"
)
MIRRORED_NOTE = (
    "graded as the model's softmax averaged over each test image and its mirror image (test-time "
    "augmentation), as the notebook evaluated it"
)
# close calls the notebook's run may decide the other way (or one in a thousand rows):
SETTLED_AT_MOST = 5
# a bfloat16 pass flipped 5 of 10,000 (benchmarks/bench_precision.py)
# the evaluator's two best scores closer than this: another device may pick the other
NOISE_MARGIN = 1e-3
# More of the graded rows than this that close to call, and the kernel's record cannot be checked
# (a model whose scores are all scaled down would make every row one).
CLOSE_CALLS_AT_MOST = 0.10


# A convolution's arguments as a layer's (static/layers.py COMPARED names): stride, padding,
# dilation, groups; a value None where the evaluator could not read it.
ConvArguments = tuple[tuple[str, "int | str | tuple[int, ...] | None"], ...]
# The padding modes of nn.Conv2d (padding_mode), as F.pad names them; constant pads only with 0.
_PAD_MODES = frozenset({"constant", "reflect", "replicate", "circular"})


@dataclass(frozen=True)
class Product:
    """One product op of the graph as it ran on two rows: the parameter it multiplies by ("" when it
    is none), that operand's shape as used, and the shape of the image's way into it. A
    convolution's also how it ran (``conv``: its arguments, a padding op just before it counted in
    its padding, as nn.Conv2d's padding_mode makes one; () where the evaluator recorded none) and
    whether it ran transposed."""

    op: str
    weight: str
    used: tuple[int, ...]
    rows: tuple[int, ...]
    conv: ConvArguments = ()
    transposed: bool = False
    padded: bool = False  # a padding op just before it was counted in its padding


@dataclass(frozen=True)
class GraphFacts:
    """What the captured graph is made of (the architecture rule reads it)."""

    ops: dict[str, int]  # op target -> how many times the graph calls it
    parameters: tuple[tuple[str, tuple[int, ...]], ...]
    buffers: tuple[tuple[str, tuple[int, ...]], ...]
    constants: tuple[tuple[str, tuple[int, ...]], ...]
    # tensor -> (op, argument) using it
    uses: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # ops combining two tensors computed from the image (run/evaluate.py _flow)
    mixes: tuple[str, ...] = ()
    products: tuple[Product, ...] = ()  # every product op, with the shapes it ran on
    # (op, shape as it ran on two rows) of each tensor from the image
    way: tuple[tuple[str, tuple[int, ...]], ...] = ()
    # tensors it never uses that equal one it uses (a layer held under two names)
    copies: tuple[str, ...] = ()
    image: tuple[int, ...] = ()  # the images' height and width (the grader's, not the capture's)


@dataclass(frozen=True)
class Recomputed:
    """The evaluator's answer; ``problem`` says why there is none."""

    problem: str | None
    # per official test index, -1 where no verified row predicted it
    predictions: tuple[int, ...] = ()
    rows: int = 0
    unverified: int = 0  # rows that are no test image under a legal preprocessing
    differing: int = 0  # rows whose recorded class differs from the evaluator's beyond float noise
    close_calls: int = 0  # test images whose two best scores are within NOISE_MARGIN (not compared)
    preprocessing: str = ""
    graph: GraphFacts | None = None
    changed_after_pass: bool = False
    structure_at_pass: Any = None
    # the grader's own pass assumed the test-time preprocessing (no test dataset seen)
    assumed: bool = False
    by_probe: bool = False  # the pass was the probe's own, not one the notebook made
    # the arithmetic the kernel's pass ran in, as its capture says (its noise bound)
    precision: str = "float32"
    # graded as the softmax averaged over each image and its mirror image (TTA)
    mirrored: bool = False
    # the secret sample of official training images the graph ran on its class for each
    train_indices: tuple[int, ...] = ()
    train_classes: tuple[int, ...] = ()
    # the model was in training mode at the graded pass (as the capture says): the kernel's record
    # is the probe's run of it in eval mode (capture.py), graded so with a note
    training: bool = False


def _ints(value: Any, size: int, low: int, high: int) -> list[int] | None:
    if (
        not isinstance(value, list)
        or len(value) != size
        or not all(type(v) is int and low <= v < high for v in value)
    ):
        return None
    return value


def _shapes(value: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    found = []
    for item in value if isinstance(value, list) else []:
        if (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("shape"), list)
        ):
            found.append(
                (item["name"][:200], tuple(int(d) for d in item["shape"] if type(d) is int))
            )
    return tuple(found)


def _uses(value: Any) -> dict[str, tuple[tuple[str, str], ...]]:
    found: dict[str, tuple[tuple[str, str], ...]] = {}
    for name, uses in value.items() if isinstance(value, dict) else ():
        if isinstance(uses, list):
            found[str(name)[:200]] = tuple(
                (str(u[0])[:80], str(u[1])[:80])
                for u in uses
                if isinstance(u, list) and len(u) == 2
            )
    return found


def _products(value: Any) -> tuple[Product, ...]:
    found = []
    for item in value[:100] if isinstance(value, list) else []:
        if isinstance(item, dict):
            used = tuple(int(d) for d in item.get("used") or () if type(d) is int)
            found.append(
                Product(
                    str(item.get("op"))[:80],
                    str(item.get("weight"))[:200],
                    used,
                    tuple(int(d) for d in item.get("rows") or () if type(d) is int),
                    *_convolution(item.get("conv"), len(used) - 2),
                )
            )
    return tuple(found)


def _convolution(value: Any, dims: int) -> tuple[ConvArguments, bool, bool]:
    """A convolution's arguments as the evaluator recorded them (flow.py), one int per spatial
    dimension, with the padding op before it folded into its padding where it pads each side
    alike; whether it ran transposed; whether a padding op fed it. ((), False, False) where
    nothing was recorded."""
    if not isinstance(value, dict) or dims < 1:
        return (), False, False
    stride, dilation = _per_dim(value.get("stride"), dims), _per_dim(value.get("dilation"), dims)
    padding: int | str | tuple[int, ...] | None = (
        value["padding"]
        if value.get("padding") in ("same", "valid")
        else _per_dim(value.get("padding"), dims)
    )
    if "pad" in value:
        padding = _folded(padding, value, dims)
    groups = value.get("groups")
    return (
        (
            ("stride", stride),
            ("padding", padding),
            ("dilation", dilation),
            ("groups", groups if type(groups) is int else None),
        ),
        "transposed" in value and value["transposed"] is not False,
        "pad" in value,
    )


def _per_dim(value: Any, dims: int) -> tuple[int, ...] | None:
    """[2] or [2, 2] or 2 -> (2, 2) for two dimensions; None for anything else."""
    items = [value] if type(value) is int else value if isinstance(value, list) else None
    if items is None or len(items) not in (1, dims) or any(type(v) is not int for v in items):
        return None
    return tuple(items) * (dims // len(items))


def _folded(padding: Any, value: dict[str, Any], dims: int) -> tuple[int, ...] | None:
    """The convolution's padding with a pad just before it added: F.pad's amounts run from the last
    dimension backwards, a (before, after) pair each; only a pad of each side alike, in one of
    nn.Conv2d's padding modes (a constant one of zeros), adds up to a layer's padding (a negative
    pad is a crop)."""
    pad, mode, fill = value.get("pad"), value.get("mode"), value.get("value")
    if (
        not isinstance(padding, tuple)
        or not isinstance(pad, list)
        or len(pad) != 2 * dims
        or any(type(p) is not int or p < 0 for p in pad)
        or mode not in _PAD_MODES
        or (mode == "constant" and fill not in (0, 0.0, None))
    ):
        return None
    pairs = [(pad[2 * i], pad[2 * i + 1]) for i in range(dims)][::-1]
    if any(before != after for before, after in pairs):
        return None
    return tuple(p + before for p, (before, _) in zip(padding, pairs))


def _way(value: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    found = []
    for item in value[:5000] if isinstance(value, list) else []:
        if isinstance(item, list) and len(item) == 2 and isinstance(item[1], list):
            found.append((str(item[0])[:80], tuple(int(d) for d in item[1][:8] if type(d) is int)))
    return tuple(found)


def _extent(value: Any) -> tuple[int, ...]:
    """The images' (height, width), () where the answer has none."""
    if not isinstance(value, list) or len(value) != 2:
        return ()
    return tuple(d for d in value if type(d) is int and 0 < d < 100_000)


def _names(value: Any) -> tuple[str, ...]:
    return tuple(str(v)[:80] for v in value[:100]) if isinstance(value, list) else ()


def capture_failed(record: ProbeFacts | None) -> str | None:
    """Why the probe could not capture the graded pass it found, as its record says (a notebook's
    own words, cut), or None (captured, or no test pass to capture: the measurement says so)."""
    error = record.health.capture_error if record is not None else None
    if error is None or error in ("no capture was asked for", "the notebook made no test pass"):
        return None
    return (
        "the graded test pass could not be captured to recompute it outside the notebook "
        f"({error[:200]})"
    )


def read(
    output: str | None,
    problem: str | None,
    total: int,
    classes: int = 10,
    train_total: int = 60_000,
) -> Recomputed:
    """The evaluator's JSON for a test set of ``total`` images (and ``train_total`` training
    images)."""
    if output is None:
        return Recomputed(problem or "the trusted evaluation gave no answer")
    try:
        data = json.loads(output)
    except (ValueError, RecursionError):
        return Recomputed("the trusted evaluation's answer is not JSON")
    if not isinstance(data, dict):
        return Recomputed("the trusted evaluation's answer is not an object")
    if isinstance(data.get("refused"), str):
        return Recomputed(f"the captured model could not be evaluated: {data['refused'][:300]}")
    rows = data.get("rows")
    if type(rows) is not int or not 0 < rows <= 20_000:
        return Recomputed("the trusted evaluation counted no rows")
    # -2: fed before the graded pass, -1: no test image
    official = _ints(data.get("official"), rows, -2, total)
    ours = _ints(data.get("classes"), rows, 0, classes)
    margins = data.get("margins")
    if official is None or ours is None or not isinstance(margins, list) or len(margins) != rows:
        return Recomputed("the trusted evaluation's answer is malformed")
    kernel = _ints(data.get("kernel_classes"), rows, -128, 128)
    # per row: how far the kernel's arithmetic (the capture's precision) may move it
    noise = data.get("noise")
    if not isinstance(noise, list) or len(noise) != rows:
        noise = [0.0] * rows
    # Test-time augmentation over mirror images: the graded class is the averaged one; the kernel's
    # record (the model on the images as they are) is compared with ``ours``.
    averaged = _ints(data.get("averaged"), rows, 0, classes)
    second = _ints(data.get("second"), rows, 0, classes) or ours
    near = [
        not (
            isinstance(m, (int, float))
            and m >= NOISE_MARGIN
            and not (isinstance(n, (int, float)) and m <= n)
        )
        for m, n in zip(margins, noise)
    ]  # NaN: close
    # Too close to call in the pass's arithmetic: of the graph's two best classes, the one the
    # notebook's run counted (both are what this graph gives within its rounding), while no more
    # rows went the other way than rounding explains (a notebook making rows close to pick their
    # classes gets its own run's classes nowhere).
    chosen = [
        (index, recorded)
        for index, predicted, runner_up, recorded, tied in zip(
            official, ours, second, kernel or [-9] * rows, near
        )
        if index >= 0
        and tied
        and averaged is None
        and recorded != predicted
        and recorded == runner_up
    ]
    settled = dict(chosen) if len(chosen) <= max(SETTLED_AT_MOST, rows // 1000) else {}
    predictions = [-1] * total
    for index, predicted in zip(official, averaged or ours):
        if index >= 0:
            predictions[index] = settled.get(index, predicted)
    graded = [
        (o, c, k, tied)
        for o, c, k, tied in zip(official, ours, kernel or [-9] * rows, near)
        if o != -2
    ]
    differing = 0 if kernel is None else sum(1 for _o, a, b, tied in graded if a != b and not tied)
    close_images = len({o for o, _a, _b, tied in graded if tied and o >= 0})  # copies count once
    raw = data.get("graph")
    graph: dict[str, Any] = raw if isinstance(raw, dict) else {}
    listed = graph.get("ops")
    ops: dict[Any, Any] = listed if isinstance(listed, dict) else {}
    facts = GraphFacts(
        {str(k)[:200]: int(v) for k, v in ops.items() if type(v) is int},
        _shapes(graph.get("parameters")),
        _shapes(graph.get("buffers")),
        _shapes(graph.get("constants")),
        _uses(graph.get("uses")),
        _names(graph.get("mixes")),
        _products(graph.get("products")),
        _way(graph.get("way")),
        _names(graph.get("copies")),
        _extent(graph.get("image")),
    )
    sample = data.get("train_sample")
    listed = sample.get("indices") if isinstance(sample, dict) else None
    indices = _ints(listed, len(listed), 0, train_total) if isinstance(listed, list) else None
    train_classes = (
        _ints(sample.get("classes"), len(indices), 0, classes)
        if isinstance(sample, dict) and indices
        else None
    )
    if indices is None or train_classes is None or len(set(indices)) != len(indices):
        indices, train_classes = [], []
    return Recomputed(
        problem=None,
        predictions=tuple(predictions),
        rows=len(graded),
        unverified=official.count(-1),
        differing=differing if kernel is not None else rows,
        close_calls=close_images if kernel is not None else 0,
        preprocessing=str(data.get("preprocessing"))[:40],
        graph=facts,
        changed_after_pass=data.get("changed_after_pass") is True,
        structure_at_pass=data.get("structure_at_pass"),
        assumed=data.get("assumed") is True,
        by_probe=data.get("by_probe") is True,
        precision=str(data.get("precision"))[:10],
        mirrored=averaged is not None,
        train_indices=tuple(indices),
        train_classes=tuple(train_classes),
        training=data.get("training_at_pass") is True,
    )


def _noise(precision: str) -> str:
    if precision == "float32":
        return f"float noise ({NOISE_MARGIN})"
    return f"what its pass's {precision} arithmetic can move them"


def apply(
    measurement: Measurement,
    recomputed: Recomputed | None,
    labels: tuple[int, ...],
    tolerance: float,
    compare_reported: bool,
    classes: int = 10,
) -> Measurement:
    """The measurement as the trusted side establishes it: its accuracy from the evaluator's
    predictions (official order, official labels), tampering evidence where the kernel's record
    differs, or the reason it cannot be established (``review``)."""
    from grader.judge.measure import confusion, reported_findings

    if recomputed is None:
        if measurement.accuracy is None:
            return measurement
        return replace(
            measurement,
            review="the graded test pass was not captured, so its accuracy "
            "could not be recomputed outside the notebook",
        )
    if recomputed.problem is not None:
        return replace(measurement, review=recomputed.problem)
    # the graph is the model as it ended, not the one that predicted
    if recomputed.changed_after_pass:
        return replace(
            measurement,
            review="the model was changed after its graded test pass "
            "(other layers or weights were put in), so that pass cannot be recomputed",
        )
    if recomputed.assumed:
        return replace(
            measurement,
            review="the notebook never showed its test-time preprocessing "
            "(no test pass, no test dataset with a transform), so the grader's own "
            "pass had to assume one",
        )
    if recomputed.unverified:
        return replace(
            measurement,
            review=f"{recomputed.unverified} of {recomputed.rows} rows the "
            "graded pass fed the model are not test images under a legal "
            "preprocessing (per image or per pixel position)",
        )
    predicted = list(recomputed.predictions)
    missing = predicted.count(-1)
    if missing:
        return replace(
            measurement,
            review=f"the graded pass predicted {len(predicted) - missing} of {len(predicted)} "
            "test images",
        )
    if recomputed.close_calls > CLOSE_CALLS_AT_MOST * len(predicted):
        return replace(
            measurement,
            review=f"for {recomputed.close_calls} of {len(predicted)} test "
            "images the model's two best scores are closer than "
            f"{_noise(recomputed.precision)}, so the "
            "grader cannot check the notebook's run against its own",
        )
    correct = sum(1 for p, y in zip(predicted, labels) if p == y)
    accuracy = round(100.0 * correct / len(labels), 2)
    tampering = measurement.tampering
    if recomputed.differing:
        tampering += (
            f"{recomputed.differing} of {recomputed.rows} predictions the notebook's run "
            "recorded differ "
            "from the grader's own run of the captured model on the same inputs, beyond "
            f"{_noise(recomputed.precision)}",
        )
    # What the kernel's measurement said about its own figure and its own pass is said again for
    # this one.
    redone = {Flag.NO_REPORTED_ACCURACY, Flag.REPORTED_ACCURACY_MISMATCH}
    if not recomputed.by_probe:
        redone |= {Flag.NO_TEST_PASS, Flag.ASSUMED_PREPROCESSING}
    kept = tuple(
        f
        for f in measurement.findings
        if f.flag not in redone
        and not (f.flag is None and f.note and "printed accuracy is not compared" in f.note)
    )
    findings = kept + reported_findings(
        measurement.reported_accuracy, accuracy, tolerance, compare_reported, True, classes
    )
    if recomputed.mirrored:
        findings += (Finding(None, MIRRORED_NOTE),)
    if recomputed.training:
        findings += (Finding(None, TRAINING_NOTE),)
    return replace(
        measurement,
        accuracy=accuracy,
        correct=correct,
        total=len(labels),
        recomputed=True,
        source="probe-pass" if recomputed.by_probe else "student-test-pass",
        findings=findings,
        tampering=tampering,
        confusion=confusion(predicted, labels, classes),
    )
