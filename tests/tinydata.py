"""Tiny FashionMNIST-format IDX files and a tiny CIFAR-10-format folder, with learnable patterns,
for fast tests."""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any


def _image(label: int, rng: random.Random, other: int | None = None) -> bytes:
    pixels = bytearray(rng.randrange(0, 60) for _ in range(28 * 28))
    for band in (label,) if other is None else (label, other):
        row = 3 + 2 * band  # class k: a bright band at rows 3+2k .. 4+2k
        for r in (row, row + 1):
            for c in range(4, 24):
                pixels[r * 28 + c] = rng.randrange(180, 256)
    return bytes(pixels)


def write_split(raw: Path, prefix: str, count: int, rng: random.Random, noise: float = 0.0) -> None:
    labels = [i % 10 for i in range(count)]
    rng.shuffle(labels)
    # With ``noise``, that share of images also shows another class's band: a model is right on
    # about half of them, and which half changes from epoch to epoch.
    images = b"".join(
        _image(label, rng, rng.randrange(10) if noise and rng.random() < noise else None)
        for label in labels
    )
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, count, 28, 28) + images
    )
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, count) + bytes(labels)
    )


def make_tiny_fashion_mnist(
    root: Path, train: int = 600, test: int = 200, seed: int = 0, noise: float = 0.0
) -> Path:
    """Write root/FashionMNIST/raw/* and return root."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    write_split(raw, "train", train, rng, noise)
    write_split(raw, "t10k", test, rng, noise)
    return root


def write_rgb_split(raw: Path, prefix: str, count: int, classes: int, seed: int = 0) -> None:
    """``count`` random 3x32x32 images (channel by channel) in an IDX file of four dimensions
    (count, channels, rows, columns), under FashionMNIST's file names, and labels of ``classes``
    classes: geometry the content key and the evaluator must not assume."""
    rng = random.Random(seed)
    images = bytes(rng.randrange(256) for _ in range(count * 3 * 32 * 32))
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIIII", 0x804, count, 3, 32, 32) + images
    )
    labels = bytes(rng.randrange(classes) for _ in range(count))
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, count) + labels)


CIFAR_COLOURS = ((230, 40, 40), (40, 230, 40), (40, 40, 230), (230, 230, 40), (40, 230, 230))


def _cifar_split(count: int, classes: int, rng: Any) -> tuple[Any, list[int]]:
    """``count`` 3x32x32 images (rows of 3072: the red, green, blue planes) of ``classes``
    classes: dark noise, and class k's colour in a band of rows 2+6k .. 5+6k."""
    import numpy

    labels = [i % classes for i in range(count)]
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(count, 3, 32, 32), dtype=numpy.uint8)
    for n, label in enumerate(labels):
        row = 2 + 6 * label
        for channel, level in enumerate(CIFAR_COLOURS[label % len(CIFAR_COLOURS)]):
            band = rng.integers(max(level - 25, 0), min(level + 25, 255), size=(4, 24))
            images[n, channel, row : row + 4, 4:28] = band
    return images.reshape(count, 3 * 32 * 32), labels


def make_tiny_cifar(
    root: Path, train: int = 500, test: int = 200, classes: int = 5, seed: int = 0
) -> Path:
    """Write root/cifar-10-batches-py/ in CIFAR-10's own python format (five training batches, the
    test batch, batches.meta: pickles of dicts holding numpy arrays, written with pickle and numpy,
    protocol 4: Python 3's protocol 2 would spell bytes as a call of _codecs.encode, which the
    grader's reader refuses; the official files are Python 2's) and return root."""
    import pickle

    import numpy

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = numpy.random.default_rng(seed)
    names = ["airplane", "automobile", "bird", "cat", "deer"][:classes]
    images, labels = _cifar_split(train, classes, rng)
    per = train // 5
    for k in range(5):
        part = slice(k * per, (k + 1) * per if k < 4 else train)
        batch = {
            "batch_label": f"training batch {k + 1} of 5",
            "labels": labels[part],
            "data": images[part],
            "filenames": [f"img{n}.png" for n in range(len(labels[part]))],
        }
        (folder / f"data_batch_{k + 1}").write_bytes(pickle.dumps(batch, protocol=4))
    images, labels = _cifar_split(test, classes, rng)
    batch = {"batch_label": "testing batch 1 of 1", "labels": labels, "data": images,
             "filenames": [f"img{n}.png" for n in range(test)]}  # fmt: skip
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    meta = {"num_cases_per_batch": per, "label_names": names, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=4))
    return root
