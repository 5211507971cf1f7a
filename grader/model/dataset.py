"""The official FashionMNIST files as the trusted side reads them (labels, images), and the view one
run's kernel gets of them."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from grader.evaluator.key import ImageSpec
from grader.model.errors import DataError

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# sha256 of the four uncompressed IDX files (the same bytes whatever the .gz around them).
FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
TEST_LABELS = "t10k-labels-idx1-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TRAIN_IMAGES = "train-images-idx3-ubyte"
IDX_IMAGES = 2051  # an IDX image file's magic number: then count, rows, columns, the pixels


@dataclass(frozen=True)
class Dataset:
    """A prepared dataset: torchvision finds it with ``FashionMNIST(root=str(root))``."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "FashionMNIST" / "raw"

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(self.raw / name for name in FILES)

    def test_labels(self) -> tuple[int, ...]:
        """The official test labels, read by the grader itself (never by student code)."""
        return read_idx_labels(self.raw / TEST_LABELS)

    @property
    def spec(self) -> ImageSpec:
        """The images' geometry, from the test images' IDX header (one channel), and the class
        count (FashionMNIST's, ``CLASS_NAMES``)."""
        _count, rows, columns = _idx_header(self.raw / TEST_IMAGES)
        return ImageSpec(channels=1, height=rows, width=columns, classes=len(CLASS_NAMES))

    def test_images(self, indices: list[int]) -> bytes:
        """The official test images at ``indices``, ``spec.values`` bytes each (channel by
        channel, row by row), concatenated."""
        count, pixels = _idx_header(self.raw / TEST_IMAGES)[0], self.spec.values
        with (self.raw / TEST_IMAGES).open("rb") as handle:
            rows = []
            for index in indices:
                if not 0 <= index < count:
                    raise DataError(f"test image {index} is not in {self.raw / TEST_IMAGES}")
                handle.seek(16 + index * pixels)
                rows.append(handle.read(pixels))
        return b"".join(rows)

    @property
    def official(self) -> bool:
        """Whether its test images are the published file (the rubric's ceiling is about those;
        tests
        run on small generated files)."""
        return _sha256(self.raw / TEST_IMAGES) == FILES[TEST_IMAGES]

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


def _idx_header(path: Path) -> tuple[int, int, int]:
    """An IDX image file's count, rows and columns."""
    with path.open("rb") as handle:
        header = handle.read(16)
    if len(header) < 16 or int.from_bytes(header[:4], "big") != IDX_IMAGES:
        raise DataError(f"{path} is not an IDX image file; run `grader data` again")
    count, rows, columns = struct.unpack(">III", header[4:])
    return count, rows, columns


@lru_cache(maxsize=8)
def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""
