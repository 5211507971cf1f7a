"""A prepared dataset's files as the trusted side reads them (labels, images, class names), and the
view one run's kernel gets of them. Whatever the dataset's own format (model/datasets.py), the
trusted side and the probe read its images and labels from IDX files in its folder (CIFAR's python
batches are converted into them once, when the data is prepared)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from grader.evaluator.key import ImageSpec
from grader.model import cifar
from grader.model.datasets import (
    DEFAULT,
    IDX_FILES,
    KINDS,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DataChoice,
    DatasetKind,
)
from grader.model.errors import DataError

__all__ = [
    "FILES",
    "TEST_IMAGES",
    "TEST_LABELS",
    "TRAIN_IMAGES",
    "TRAIN_LABELS",
    "Dataset",
    "KernelView",
    "read_idx_labels",
]

# FashionMNIST's files' sha256 (a rubric without a dataset section), for the callers that name them
FILES = {name: value for name, (_algorithm, value) in KINDS[DEFAULT].checksums}
IDX_IMAGES = 2051  # an IDX image file's magic number: then count, rows, columns, the pixels
IDX_COLOUR = 0x804  # the grader's for colour images: then count, channels, rows, columns


@dataclass(frozen=True)
class Dataset:
    """A prepared dataset: torchvision finds it with ``<choice's class>(root=str(root))``;
    ``choice``: the rubric's dataset section (FashionMNIST by default)."""

    root: Path
    choice: DataChoice = DataChoice()

    @property
    def kind(self) -> DatasetKind:
        return self.choice.kind

    @property
    def raw(self) -> Path:
        """The folder torchvision reads (ROOT/FashionMNIST/raw, ROOT/cifar-10-batches-py), which
        also holds the IDX files the grader reads."""
        return self.root / self.kind.folder

    @property
    def names(self) -> tuple[str, ...]:
        """The files a prepared folder holds: torchvision's, then the IDX files converted from
        them (the same for an IDX dataset)."""
        own = self.kind.files
        return own + tuple(n for n in IDX_FILES if n not in own)

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(self.raw / name for name in self.names)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names: the rubric's, else the data's (CIFAR's batches.meta), else the
        table's."""
        if self.choice.classes:
            return self.choice.classes
        meta = self.kind.meta
        return _label_names(self.raw / meta) if meta else self.kind.classes

    def test_labels(self) -> tuple[int, ...]:
        """The official test labels, read by the grader itself (never by student code)."""
        return read_idx_labels(self.raw / TEST_LABELS)

    @property
    def spec(self) -> ImageSpec:
        """The images' geometry, from the test images' IDX header, and the class count (of
        ``classes``)."""
        _count, channels, rows, columns = _idx_header(self.raw / TEST_IMAGES)
        return ImageSpec(channels=channels, height=rows, width=columns, classes=len(self.classes))

    def test_images(self, indices: list[int]) -> bytes:
        """The official test images at ``indices``, ``spec.values`` bytes each (channel by
        channel, row by row), concatenated."""
        count, channels, height, width = _idx_header(self.raw / TEST_IMAGES)
        pixels, start = channels * height * width, 16 if channels == 1 else 20
        with (self.raw / TEST_IMAGES).open("rb") as handle:
            rows = []
            for index in indices:
                if not 0 <= index < count:
                    raise DataError(f"test image {index} is not in {self.raw / TEST_IMAGES}")
                handle.seek(start + index * pixels)
                rows.append(handle.read(pixels))
        return b"".join(rows)

    @property
    def official(self) -> bool:
        """Whether its test images are the published file (the rubric's ceiling is about those;
        tests run on small generated files): its test file matches the table's checksum."""
        test = self.kind.test[0]
        known = dict(self.kind.checksums).get(test)
        return known is not None and digest(self.raw / test, known[0]) == known[1]

    def train_labels(self) -> tuple[int, ...]:
        """The official training labels (the validation curve is scored against them)."""
        return read_idx_labels(self.raw / TRAIN_LABELS)


@dataclass(frozen=True)
class KernelView:
    """The dataset one run's kernel reads, and how its test set maps onto the official one."""

    dataset: Dataset
    # hidden labels: the official index of the kernel's k-th test image
    order: tuple[int, ...] | None = None

    def labels(self, official: tuple[int, ...]) -> tuple[int, ...]:
        """The true label of each test image in the order the kernel sees them."""
        return official if self.order is None else tuple(official[i] for i in self.order)


def read_idx_labels(path: Path) -> tuple[int, ...]:
    """Parse an IDX1 label file (magic 2049, count, then one byte per label)."""
    data = path.read_bytes()
    if len(data) < 8:
        raise DataError(f"{path} is not an IDX label file; run `grader data` again")
    magic, count = struct.unpack(">II", data[:8])
    if magic != 2049 or len(data) != 8 + count:
        raise DataError(f"{path} is not an IDX label file; run `grader data` again")
    return tuple(data[8:])


def _idx_header(path: Path) -> tuple[int, int, int, int]:
    """An IDX image file's count, channels, rows and columns: FashionMNIST's (count, rows,
    columns: one channel) or the grader's conversion of colour images (magic 0x804: count,
    channels, rows, columns)."""
    with path.open("rb") as handle:
        header = handle.read(20)
    magic = int.from_bytes(header[:4], "big") if len(header) >= 16 else 0
    if magic == IDX_IMAGES:
        count, rows, columns = struct.unpack(">III", header[4:16])
        return count, 1, rows, columns
    if magic == IDX_COLOUR and len(header) == 20:
        count, channels, rows, columns = struct.unpack(">IIII", header[4:20])
        return count, channels, rows, columns
    raise DataError(f"{path} is not an IDX image file; run `grader data` again")


def write_idx_images(path: Path, images: bytes, count: int, shape: tuple[int, int, int]) -> None:
    """``count`` images of ``shape`` (channels, rows, columns) as an IDX file: FashionMNIST's
    header for one channel, else four dimensions (magic 0x804)."""
    channels, rows, columns = shape
    header = (
        struct.pack(">IIII", IDX_IMAGES, count, rows, columns)
        if channels == 1
        else struct.pack(">IIIII", IDX_COLOUR, count, channels, rows, columns)
    )
    path.write_bytes(header + images)


def write_idx_labels(path: Path, labels: tuple[int, ...] | list[int]) -> None:
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + bytes(labels))


def digest(path: Path, algorithm: str) -> str:
    """``path``'s hex digest by ``algorithm`` (sha256, md5); "" when it cannot be read."""
    return _digest(path, algorithm, *_stamp(path))


def _stamp(path: Path) -> tuple[int, int]:
    try:
        status = path.stat()
    except OSError:
        return (-1, -1)
    return status.st_size, status.st_mtime_ns


@lru_cache(maxsize=32)
def _digest(path: Path, algorithm: str, _size: int, _mtime: int) -> str:
    """Cached by size and time: a file replaced in place is read again."""
    try:
        value = hashlib.new(algorithm)
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                value.update(block)
        return value.hexdigest()
    except OSError:
        return ""


@lru_cache(maxsize=8)
def _label_names(path: Path) -> tuple[str, ...]:
    return cifar.label_names(path)
