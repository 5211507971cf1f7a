"""The evaluator's work for one capture: refuse it, or run and verify it (see the package's
docstring), as the JSON object judge/recompute.py reads."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import torch

from grader.evaluator.inputs import as_fed, per_image, per_pixel
from grader.evaluator.key import FASHION_MNIST, ImageSpec, read_images
from grader.evaluator.manifest import Refused, input_dtype, read_manifest, tensor
from grader.evaluator.ops import RUNNABLE
from grader.evaluator.predict import EMULATED, graded, train_sample
from grader.evaluator.rebuild import program


def evaluate(
    data: bytes,
    test_images: Path,
    allowed: frozenset[str] = RUNNABLE,
    train_images: Path | None = None,
    spec: ImageSpec = FASHION_MNIST,
    widest: int | None = None,
) -> dict[str, Any]:
    """The answer for the capture ``data``: ``allowed``, the ops the graph may compute; with
    ``train_images``, also the graph's classes for a secret sample of them
    (``predict.train_sample``); ``spec``, the images' geometry and class count; ``widest``, the
    most values per image the image's way may hold (the grader's bound, else four images')."""
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    manifest, payload = read_manifest(data)
    rebuilt, graph = program(manifest, payload, allowed, spec, widest)
    inputs = tensor(manifest.get("inputs"), payload)
    if inputs.dim() != 2 or inputs.dtype != torch.float32 or not 0 < inputs.shape[0] <= 20_000:
        raise Refused("the capture's inputs are not rows of floats")
    shape = list(manifest["input_shape"])
    rows = inputs.shape[0]
    claimed = base64.b64decode(str(manifest.get("row_classes", "")), validate=True)
    kernel = [b - 256 if b > 127 else b for b in claimed] if len(claimed) == rows else None
    images = read_images(test_images)
    if images.shape[1] != spec.values:  # the grader's error, not the capture's
        raise ValueError(f"{test_images} does not hold images of {spec}")
    whole = inputs.shape[1] == spec.values  # rows of one image each
    official, fitted, pixel_map = (
        per_image(inputs, images, spec.channels) if whole else ([-1] * rows, None, None)
    )
    how = "per image"
    if -1 in official and whole:
        tail = inputs[-images.shape[0] :]  # an evaluation of the validation set may come before
        by_pixel, mapped, pixel_map = per_pixel(tail, images)
        if -1 not in by_pixel:
            official, how = [-2] * (rows - tail.shape[0]) + by_pixel, "per pixel position"
            fitted = inputs.double().clone()
            fitted[rows - tail.shape[0] :] = mapped
    # The graph runs on the inputs rebuilt from the official pixels under the verified map: whatever
    # the kernel's floats held within the tolerances never reaches it. With a row that is no test
    # image there is no grade (the judge says why), and nothing is run.
    precision = str(manifest.get("precision"))
    # Test-time augmentation over mirror images, rebuilt from the official pixels like the rows.
    mirror = manifest.get("views") == ["identity", "hflip"] and how == "per image"
    sample = None
    if fitted is None or -1 in official:
        found: dict[str, Any] = {
            "classes": [0] * rows,
            "margins": [0.0] * rows,
            "noise": [0.0] * rows,
            "second": [0] * rows,
            "averaged": None,
        }
    else:
        dtype = input_dtype(manifest)  # as the graph was fed (raw pixels: whole numbers)
        found = graded(rebuilt, as_fed(fitted, dtype), official, shape, spec, precision, mirror)
        if train_images is not None and pixel_map is not None:
            train = read_images(train_images)
            sample = train_sample(rebuilt, train, pixel_map, dtype, shape, spec.classes)
    return {
        "rows": rows,
        "official": official,
        "classes": found["classes"],
        "margins": [round(m, 6) for m in found["margins"]],
        "noise": [round(n, 6) for n in found["noise"]],
        "second": found["second"],
        "averaged": found["averaged"],
        "precision": precision if precision in EMULATED else "float32",
        "kernel_classes": kernel,
        "preprocessing": how,
        "graph": graph,
        "changed_after_pass": manifest.get("changed_after_pass") is True,
        "structure_at_pass": manifest.get("structure_at_pass"),
        "training_at_pass": manifest.get("training_at_pass") is True,
        "by_probe": manifest.get("by_probe") is True,
        "assumed": str(manifest.get("preprocessing") or "").startswith("assumed"),
        "train_sample": sample,
    }
