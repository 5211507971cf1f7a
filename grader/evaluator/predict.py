"""The graph's classes on the rows rebuilt from the official pixels: per row the class, the margin
to the runner-up and the noise the kernel's arithmetic allows; and on a secret sample of the
official training images (judge/fit.py)."""

from __future__ import annotations

import contextlib
import os
from typing import Any, NamedTuple

import torch

from grader.evaluator.inputs import PixelMap, as_fed
from grader.evaluator.key import ImageSpec
from grader.evaluator.manifest import Refused

MAX_OUTPUTS = 8  # parts of a tuple, list or dict output looked at (passes.MAX_OUTPUTS, the same)
_ALONE_SAMPLE = 256  # images run again in pairs to show the graph answers each image on its own
# The coarser arithmetic the kernel's pass may have run in (the capture says which), and the dtype
# our own run emulates it with on the CPU: TF32 keeps float16's ten mantissa bits.
EMULATED = {"bfloat16": "bfloat16", "float16": "float16", "tf32": "float16"}
# How far the kernel's scores may lie from ours, as a multiple of how far our emulation of its
# arithmetic lies from our float32 run (per row, within [1, ROW_SPREAD] times the median row's): two
# roundings of one size differ by at most about twice either, and twice that again for another
# device's order of sums.
REGIME_FACTOR = 4.0
ROW_SPREAD = 8.0  # an honest bfloat16 pass moves its rows by at most about 3x the median row
TRAIN_SAMPLE = 20_000  # training images the graph runs on (a secret sample): a standard error ~0.2%


def class_scores(output: Any, rows: int, classes: int) -> Any:
    """The tensor of a model's output holding one score per class per row: the output itself, or
    the first such tensor among the first MAX_OUTPUTS parts of a tuple, list or dict
    (``{"logits": ...}``), as ``passes.class_scores`` picks it in the kernel; else the output."""
    items = (
        list(output.values())
        if isinstance(output, dict)
        else output
        if isinstance(output, (tuple, list))
        else None
    )
    if items is None:
        return output
    return next(
        (
            t
            for t in items[:MAX_OUTPUTS]
            if isinstance(t, torch.Tensor) and tuple(t.shape) == (rows, classes)
        ),
        output,
    )


class Predicted(NamedTuple):
    """What the graph answers per row (tensors): class, margin, noise bound, class averaged over
    views."""

    classes: Any
    margins: Any
    noise: Any
    second: Any  # the runner-up class (a close call may be either)
    averaged: Any


def _secret() -> torch.Generator:
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "big"))


def predict(
    program: Any,
    inputs: Any,
    shape: list[int],
    spec: ImageSpec,
    precision: str = "float32",
    mirror: bool = False,
) -> Predicted:
    """The class per row (of ``spec.classes``), the margin between the two highest outputs and the
    noise the kernel's arithmetic allows per row (``precision``: float32, or the coarser arithmetic
    the capture names), to tell float noise apart; with ``mirror``, also the class of the softmax
    averaged over each row and its mirror image (test-time augmentation, ``spec``'s geometry). The
    graph must answer each image on its own: a sample is run again in pairs, and a graph whose
    scores change with the other images of its batch beyond float noise is refused."""
    module, classes = program.module(), spec.classes
    # Rows in a secret order: a graph that mixes rows of a batch (its mean, say) learns nothing from
    # the order the kernel chose (sorted by label, for one).
    generator = _secret()
    order = torch.randperm(inputs.shape[0], generator=generator)

    eps: list[float] = []  # the resolution of the graph's own score dtype (coarse in half)

    def run(rows: Any, source: Any = inputs, checked: bool = True) -> Any:
        output = class_scores(module(source[rows].reshape(-1, *shape)), rows.shape[0], classes)
        if not isinstance(output, torch.Tensor) or output.shape != (rows.shape[0], classes):
            raise Refused("the captured graph does not output one score per class")
        if not output.is_floating_point():
            raise Refused("the captured graph's scores are not floating-point numbers")
        if not checked:  # an emulation of the kernel's arithmetic may overflow where float32 won't
            return output.float()
        eps.append(torch.finfo(output.dtype).eps)
        output = output.float()
        if not bool(torch.isfinite(output).all()):
            raise Refused(
                "the captured model's scores are not all finite numbers (NaN or infinity)"
            )
        return output

    def score(source: Any = inputs, checked: bool = True) -> Any:
        """Every row's scores, a thousand rows at a time in the secret order."""
        out = torch.empty(inputs.shape[0], classes, dtype=torch.float32)
        for start in range(0, inputs.shape[0], 1000):
            rows = order[start : start + 1000]
            out[rows] = run(rows, source, checked)
        return out

    # The pass's own arithmetic, emulated on the CPU when it was coarser than float32 (its grade:
    # the notebook counted in it), and how far it moves each row from float32 (the noise it allows).
    arithmetic = (
        torch.autocast("cpu", dtype=getattr(torch, EMULATED[precision]))
        if precision in EMULATED
        else contextlib.nullcontext()
    )
    with torch.no_grad():
        scores = score()
        tolerance = max(1e-4, 4 * max(eps))
        # never less than two steps of the graph's own score dtype at the top score (a
        # half-precision model's scores above 2 move by more than 1e-3 in one rounding elsewhere)
        graded, noise = scores, 2 * max(eps) * scores.abs().amax(1)
        if precision in EMULATED:
            with arithmetic:
                graded = score(checked=False)
            moved = (graded - scores).abs().amax(1).nan_to_num(float("inf"))
            # No row's allowance far from the usual one: a graph built to move rows it picks gets
            # no more.
            usual = float(moved.median())
            allowed = REGIME_FACTOR * moved.clamp(min=usual, max=ROW_SPREAD * usual)
            noise = torch.maximum(noise, allowed)
            graded = torch.where(torch.isfinite(graded), graded, scores)
        if inputs.shape[0] >= 2:  # pairs: torch.export's dynamic batch starts at 2
            _alone(run, scores, inputs.shape[0], tolerance, generator)
        averaged = None
        if mirror:  # each image left to right, under the same map (a per-image map commutes)
            turned = spec.mirror(inputs)
            with arithmetic:
                seen = score(turned, checked=precision not in EMULATED)
            averaged = (torch.softmax(graded, 1) + torch.softmax(seen.nan_to_num(), 1)).argmax(1)
    top = graded.topk(2, dim=1)
    margins = top.values[:, 0] - top.values[:, 1]
    return Predicted(top.indices[:, 0], margins, noise, top.indices[:, 1], averaged)


def _alone(run: Any, scores: Any, count: int, tolerance: float, generator: torch.Generator) -> None:
    """A secret sample of rows run again, each beside another row: refused where a row's scores
    move beyond float noise (a few units in the last place of the largest score)."""
    sample = torch.randperm(count, generator=generator)[:_ALONE_SAMPLE]
    partners = torch.randperm(count, generator=generator)[: sample.shape[0]]
    for row, partner in zip(sample.tolist(), partners.tolist()):
        again = run(torch.tensor([row, partner if partner != row else (row + 1) % count]))[0]
        bound = tolerance * (1.0 + float(scores[row].abs().max()))
        if float((again - scores[row]).abs().max()) > bound:
            raise Refused(
                "the captured model's answer for a test image changes with the other "
                "images of its batch, which no layer of the homework's model can do"
            )


def graded(
    program: Any,
    fed: Any,
    official: list[int],
    shape: list[int],
    spec: ImageSpec,
    precision: str = "float32",
    mirror: bool = False,
) -> dict[str, list[Any] | None]:
    """Per row: classes, margins, noise bounds and (with ``mirror``) the classes averaged over each
    image and its mirror image. Only verified test images reach the graph, each image once: rows
    fed before the graded pass (-2) and repeated images could carry anything (labels, another
    model's answers) to a graph that compares the rows of its batch. Other rows get class 0,
    margin 0."""
    first: dict[int, int] = {}
    for row, index in enumerate(official):
        if index >= 0:
            first.setdefault(index, row)
    size = len(official)
    found: dict[str, list[Any] | None] = {
        "classes": [0] * size,
        "margins": [0.0] * size,
        "noise": [0.0] * size,
        "second": [0] * size,
        "averaged": [0] * size if mirror else None,
    }
    if not first:
        return found
    rows = torch.tensor(list(first.values()), dtype=torch.long)
    predicted = predict(program, fed[rows], shape, spec, precision, mirror)
    for name, values in predicted._asdict().items():
        column = found[name]
        if values is None or column is None:
            continue
        by_image = dict(zip(first, values.tolist()))
        for row, index in enumerate(official):
            if index >= 0:
                column[row] = by_image[index]
    return found


def train_sample(
    program: Any, images: Any, pixel_map: PixelMap, dtype: Any, shape: list[int], classes: int
) -> dict[str, list[int]] | None:
    """The graph's class for each image of a secret sample of the official training images, under
    the preprocessing verified on the graded pass (judge/fit.py compares how it fits them with the
    test images); None where the graph does not answer them as it answered the test images."""
    indices = torch.randperm(images.shape[0], generator=_secret())[:TRAIN_SAMPLE]
    module = program.module()
    found = []
    with torch.no_grad():
        for start in range(0, indices.shape[0], 1000):
            rows = indices[start : start + 1000]
            try:
                fed = as_fed(pixel_map(images[rows]), dtype).reshape(-1, *shape)
                output = class_scores(module(fed), rows.shape[0], classes)
            except Exception:  # noqa: BLE001 - it answered the test images; here only no sample
                return None
            if not isinstance(output, torch.Tensor) or output.shape != (rows.shape[0], classes):
                return None
            found.append(output.float().argmax(1))
    return {"indices": indices.tolist(), "classes": torch.cat(found).tolist()}
