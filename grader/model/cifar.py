"""CIFAR's python batches, read on the trusted side: pickles of a dict whose ``data`` is a numpy
uint8 array (N, 3072: the red, green then blue plane of each 32x32 image) and whose ``labels`` are
ints; ``batches.meta`` holds the ``label_names``.

They are the TA's files, checksummed before use, and still read with a restricted unpickler: its
``find_class`` gives out the numpy array reconstruction functions and nothing else, so a pickle
that names anything more (``os.system``) is refused before any call. (Parsing the pickle opcodes by
hand would avoid numpy, but is more code and tied to the protocol a file was written with; the
restricted unpickler is the standard library's documented way, and numpy is already loaded here.)
Python 2's pickles (the official files) are read with latin-1, as torchvision reads them.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from grader.model.errors import DataError

CHANNELS, HEIGHT, WIDTH = 3, 32, 32  # CIFAR's images, as torchvision reshapes each row
# The only globals a batch may name: how numpy pickles an array (protocol 2: _reconstruct, then
# ndarray and dtype; protocol 5: _frombuffer), under numpy 1's module name and numpy 2's.
_ALLOWED = frozenset(
    (module, name)
    for package in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{package}.multiarray", "_reconstruct"),
        (f"{package}.numeric", "_frombuffer"),
    )
) | {("numpy", "ndarray"), ("numpy", "dtype")}


class _Unpickler(pickle.Unpickler):
    """Finds the numpy array reconstruction names, and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"a CIFAR batch may not name {module}.{name}")
        import numpy

        if name in ("ndarray", "dtype"):
            return getattr(numpy, name)
        core = getattr(numpy, "_core", None) or numpy.core
        return getattr(getattr(core, module.rsplit(".", 1)[1]), name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("a CIFAR batch has no persistent references")


def load(path: Path) -> dict[str, Any]:
    """A batch's or the meta file's dict, its keys as text (Python 2's byte keys decoded)."""
    try:
        data = _Unpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"{path} is not a CIFAR python batch ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a CIFAR python batch (not a dict)")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in data.items()}


def read_batch(path: Path) -> tuple[bytes, tuple[int, ...]]:
    """A batch's images (N x 3072 bytes, channel by channel) and labels."""
    import numpy

    batch = load(path)
    data, labels = batch.get("data"), batch.get("labels")
    values = CHANNELS * HEIGHT * WIDTH
    if (
        not isinstance(data, numpy.ndarray)
        or data.dtype != numpy.uint8
        or data.ndim != 2
        or data.shape[1] != values
    ):
        raise DataError(f"{path}: its data is not a uint8 array of {values} values per image")
    if not isinstance(labels, list) or len(labels) != data.shape[0]:
        raise DataError(f"{path}: its labels are not a list of one label per image")
    if not all(type(label) is int and 0 <= label < 256 for label in labels):
        raise DataError(f"{path}: its labels are not small non-negative integers")
    return numpy.ascontiguousarray(data).tobytes(), tuple(labels)


def label_names(path: Path) -> tuple[str, ...]:
    """The class names of a ``batches.meta``."""
    names = load(path).get("label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: its label_names are not a list of names")
    return tuple(names)


def write_batch(path: Path, images: bytes, labels: tuple[int, ...], label: str) -> None:
    """A batch in the official layout (a dict of data, labels, batch_label, filenames), pickled:
    the grader's own copy for a kernel (hidden labels), or generated test data."""
    import numpy

    data = numpy.frombuffer(images, dtype=numpy.uint8).reshape(len(labels), -1)
    batch = {
        "batch_label": label,
        "labels": list(labels),
        "data": data,
        "filenames": [f"{k:05d}.png" for k in range(len(labels))],
    }
    path.write_bytes(pickle.dumps(batch, protocol=4))
