"""Tiny FashionMNIST-format IDX files with a learnable pattern, for fast tests."""

from __future__ import annotations

import random
import struct
from pathlib import Path


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
