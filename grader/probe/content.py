"""The dataset's images by content: which test or training image a row of a model's input is.

A notebook may feed its model the images through any test-time pipeline: ToTensor, Normalize,
division by 255 by hand, a TensorDataset, numpy, half precision, another device, flattened or
not. All of these map the 784 pixels of an image by one increasing affine function, so the
pixels equal to the image's minimum and those equal to its maximum stay the same positions,
exactly (a decreasing map, ``1 - x``, swaps the two). The key of an image is the bits of those two masks; it identifies the image and is
cheap to compute on whatever device the input lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

PIXELS = 28 * 28


def read_images(path: Path) -> torch.Tensor:
    """An IDX image file as a (count, 784) uint8 tensor."""
    data = path.read_bytes()
    count = int.from_bytes(data[4:8], "big")
    return torch.frombuffer(bytearray(data[16:16 + count * PIXELS]), dtype=torch.uint8).reshape(count, PIXELS)


@dataclass(frozen=True)
class Match:
    """Rows of one input that are images of one split: their positions in the batch and image indices."""

    split: str  # "test" or "train"
    positions: list[int]
    indices: list[list[int]]  # per position: every index with that content (exact duplicates share one)
    batch: int


class ImageIndex:
    def __init__(self, raw: Path) -> None:
        self.pixels = PIXELS
        self.splits: dict[str, dict[bytes, list[int]]] = {}
        self.sizes: dict[str, int] = {}
        for split, name in (("test", "t10k-images-idx3-ubyte"), ("train", "train-images-idx3-ubyte")):
            if (raw / name).is_file():
                images = read_images(raw / name)
                table: dict[bytes, list[int]] = {}
                for index, key in enumerate(self.keys(images)):
                    table.setdefault(key, []).append(index)
                self.splits[split] = table
                self.sizes[split] = images.shape[0]

    @staticmethod
    def keys(rows: torch.Tensor) -> list[bytes]:
        """One key per row of a (batch, 784) tensor: the bits of its minimum and maximum masks."""
        import numpy

        if rows.device.type == "cpu" and rows.dtype != torch.bfloat16:
            # NumPy on one thread: torch's intra-op threads cost more than the work on a batch this size.
            array = rows.numpy()
            masks = numpy.concatenate([array == array.min(1, keepdims=True), array == array.max(1, keepdims=True)], 1)
        else:  # compared where the tensor lives; only the masks come back
            both = torch.cat([rows == rows.amin(1, keepdim=True), rows == rows.amax(1, keepdim=True)], 1)
            masks = both.cpu().numpy()
        packed = numpy.packbits(masks, axis=1).tobytes()
        width = len(packed) // max(1, rows.shape[0])
        return [packed[k:k + width] for k in range(0, len(packed), width)]

    def match(self, value: object) -> Match | None:
        """Which split's images most rows of ``value`` are, when at least half of them are."""
        if not isinstance(value, torch.Tensor) or value.dim() < 2 or value.shape[0] == 0:
            return None
        if value.is_complex() or value[0].numel() != PIXELS or not (value.is_floating_point() or value.dtype == torch.uint8):
            return None
        with torch.no_grad():
            keys = self.keys(value.detach().reshape(value.shape[0], PIXELS))
        half = len(keys[0]) // 2
        best: Match | None = None
        for split, table in self.splits.items():
            # An inverted image (1 - x, a decreasing map) swaps its minimum and maximum masks.
            found = [(position, hit) for position, key in enumerate(keys)
                     if (hit := table.get(key) or table.get(key[half:] + key[:half])) is not None]
            if 2 * len(found) >= len(keys) and (best is None or len(found) > len(best.positions)):
                best = Match(split, [p for p, _ in found], [i for _, i in found], len(keys))
        return best
