"""The content key of an image: which official image a row of a model's input is.

Any test-time preprocessing of an image alone (ToTensor, Normalize, division by 255, half
precision, another device) maps its 784 pixels by one increasing function, so the pixels at the
image's minimum and those at its maximum keep their positions exactly (a decreasing map, ``1 - x``,
swaps the two). The key of a row is the bits of those two masks: it names the image and is cheap
to compute wherever the row lives. The probe (probe/content.py) keys rows with a tolerance of a
fraction of a grey level; the evaluator (inputs.py) with none, then verifies every pixel.

Imported in the student's kernel by the probe: torch only (already loaded there), numpy when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

PIXELS = 28 * 28
# Of a row's range: within this of its minimum (maximum) is at it (under half a grey level).
TOLERANCE = 0.4 / 255


def read_images(path: Path) -> torch.Tensor:
    """An IDX image file as a (count, 784) uint8 tensor."""
    data = path.read_bytes()
    count = int.from_bytes(data[4:8], "big")
    pixels = bytearray(data[16 : 16 + count * PIXELS])
    return torch.frombuffer(pixels, dtype=torch.uint8).reshape(count, PIXELS)


def masks(rows: torch.Tensor, tolerance: float = TOLERANCE) -> Any:
    """Per row of a (batch, 784) tensor, as a numpy bool array (batch, 1568): where it is within
    ``tolerance`` of its range of its minimum, then of its maximum (integers: exactly). One grey
    level is at least (max - min) / 255 under any affine map of an image, so on exact inputs the
    default is equality, and noise far below a grey level changes nothing; 0 is equality."""
    import numpy

    if rows.device.type == "cpu" and rows.dtype != torch.bfloat16:
        # NumPy on one thread: torch's intra-op threads cost more than the work on such a batch.
        array = rows.numpy()
        low, high = array.min(1, keepdims=True), array.max(1, keepdims=True)
        slack = (high - low) * tolerance if tolerance and array.dtype.kind == "f" else 0
        return numpy.concatenate([array <= low + slack, array >= high - slack], 1)
    low, high = rows.amin(1, keepdim=True), rows.amax(1, keepdim=True)  # where the tensor lives
    slack = (high - low) * tolerance if tolerance and rows.is_floating_point() else 0
    return torch.cat([rows <= low + slack, rows >= high - slack], 1).cpu().numpy()


def pack(found: Any) -> list[bytes]:
    """One key per row of a numpy bool array of masks (``masks``): its bits, packed."""
    import numpy

    if not found.shape[0]:
        return []
    packed = numpy.packbits(found, axis=1).tobytes()
    width = len(packed) // found.shape[0]
    return [packed[k : k + width] for k in range(0, len(packed), width)]


def keys(rows: torch.Tensor, tolerance: float = TOLERANCE) -> list[bytes]:
    """One key per row of a (batch, 784) tensor: the bits of its minimum and maximum masks."""
    return pack(masks(rows, tolerance))
