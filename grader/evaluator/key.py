"""The images' geometry (``ImageSpec``) and the content key of an image: which official image a row
of a model's input is.

Any test-time preprocessing of an image alone (ToTensor, Normalize, division by 255, half
precision, another device) maps the values of each of its channels by one increasing function, so
the pixels at a channel's minimum and those at its maximum keep their positions exactly (a
decreasing map, ``1 - x``, swaps the two). The key of a row is the bits of those masks, channel by
channel: it names the image and is cheap to compute wherever the row lives. The probe
(probe/content.py) keys rows with a tolerance of a fraction of a grey level; the evaluator
(inputs.py) with none, then verifies every pixel.

Imported in the student's kernel by the probe: torch only (already loaded there), numpy when used;
by the grader's own process for ``ImageSpec`` alone: torch is imported where it is used.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

SPEC_VERSION = 1  # of ImageSpec's text (to_text, parse)
# Of a row's range: within this of its minimum (maximum) is at it (under half a grey level).
TOLERANCE = 0.4 / 255


@dataclass(frozen=True, kw_only=True)
class ImageSpec:
    """The geometry of a dataset's images, as the trusted side reads it from the data
    (model/dataset.py ``Dataset.spec``): each image ``channels`` x ``height`` x ``width`` bytes,
    row by row within a channel, and ``classes`` classes. The grader hands it to the probe (its
    config) and to the evaluator (its command line) as ``to_text``; each reads it with ``parse``."""

    channels: int
    height: int
    width: int
    classes: int

    @property
    def values(self) -> int:
        """Values per image: channels x height x width."""
        return self.channels * self.height * self.width

    @property
    def shape(self) -> tuple[int, int, int]:
        """An image's shape: (channels, height, width)."""
        return self.channels, self.height, self.width

    def to_text(self) -> str:
        return json.dumps({"version": SPEC_VERSION, **asdict(self)}, sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> ImageSpec:
        """The spec ``to_text`` wrote, or ValueError."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.pop("version", None) != SPEC_VERSION:
            raise ValueError(f"not an image spec of version {SPEC_VERSION}: {text[:200]!r}")
        names = ("channels", "height", "width", "classes")
        if set(data) != set(names) or not all(type(data[n]) is int and data[n] > 0 for n in names):
            raise ValueError(f"an image spec needs four positive integers {names}: {text[:200]!r}")
        return cls(**data)

    def mirror(self, rows: Any) -> Any:
        """Rows of whole images ((n, k * values), torch or numpy), each image flipped left to
        right."""
        import torch

        shaped = rows.reshape(-1, self.channels, self.height, self.width)
        turned = shaped.flip(-1) if isinstance(shaped, torch.Tensor) else shaped[..., ::-1]
        return turned.reshape(rows.shape)


FASHION_MNIST = ImageSpec(channels=1, height=28, width=28, classes=10)


def read_images(path: Path) -> torch.Tensor:
    """An IDX file of bytes (FashionMNIST's: count, rows, columns; or count, channels, rows,
    columns) as a (count, values per image) uint8 tensor, its geometry read from its header."""
    import torch

    data = path.read_bytes()
    dimensions = data[3]  # the magic number's last byte
    sizes = [int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(dimensions)]
    count, values = sizes[0], math.prod(sizes[1:])
    start = 4 + 4 * dimensions
    pixels = bytearray(data[start : start + count * values])
    return torch.frombuffer(pixels, dtype=torch.uint8).reshape(count, values)


def masks(rows: torch.Tensor, tolerance: float = TOLERANCE, channels: int = 1) -> Any:
    """Per row of a (batch, values) tensor of images of ``channels`` channels, as a numpy bool
    array (batch, 2 x values): where each channel is within ``tolerance`` of its range of its
    minimum, then (after every channel's) of its maximum (integers: exactly). One grey level is
    at least (max - min) / 255 under any affine map of a channel, so on exact inputs the default
    is equality, and noise far below a grey level changes nothing; 0 is equality."""
    import numpy
    import torch

    batch, size = rows.shape[0], rows.shape[1] // channels
    if rows.device.type == "cpu" and rows.dtype != torch.bfloat16:
        # NumPy on one thread: torch's intra-op threads cost more than the work on such a batch.
        array = rows.numpy().reshape(batch, channels, size)
        low, high = array.min(2, keepdims=True), array.max(2, keepdims=True)
        slack = (high - low) * tolerance if tolerance and array.dtype.kind == "f" else 0
        found = numpy.concatenate([array <= low + slack, array >= high - slack], 1)
        return found.reshape(batch, 2 * channels * size)
    shaped = rows.reshape(batch, channels, size)  # where the tensor lives
    low, high = shaped.amin(2, keepdim=True), shaped.amax(2, keepdim=True)
    slack = (high - low) * tolerance if tolerance and rows.is_floating_point() else 0
    at = torch.cat([shaped <= low + slack, shaped >= high - slack], 1)
    return at.reshape(batch, 2 * channels * size).cpu().numpy()


def pack(found: Any) -> list[bytes]:
    """One key per row of a numpy bool array of masks (``masks``): its bits, packed."""
    import numpy

    if not found.shape[0]:
        return []
    packed = numpy.packbits(found, axis=1).tobytes()
    width = len(packed) // found.shape[0]
    return [packed[k : k + width] for k in range(0, len(packed), width)]


def keys(rows: torch.Tensor, tolerance: float = TOLERANCE, channels: int = 1) -> list[bytes]:
    """One key per row of a (batch, values) tensor: the bits of its minimum and maximum masks."""
    return pack(masks(rows, tolerance, channels))
