"""CIFAR's python batches, read on the trusted side: pickles of a dict whose ``data`` is a numpy
uint8 array (N, 3072: the red, green then blue plane of each 32x32 image) and whose ``labels`` are
ints; ``batches.meta`` holds the ``label_names``.

They are the TA's files, checksummed before use, and still read with a restricted unpickler: its
``find_class`` gives out stand-ins for numpy's array reconstruction and nothing else, so a pickle
that names anything more (``os.system``) is refused before any call, and an array is built only
from the bytes the pickle holds, as many as its shape and type need (``numpy.ndarray(shape)``
called by the pickle would hand out memory no one wrote). (Parsing the pickle opcodes by hand
would avoid the unpickler, but is more code and tied to the protocol a file was written with.)
Python 2's pickles (the official files) are read with latin-1, as torchvision reads them.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

from grader.model.errors import DataError

CHANNELS, HEIGHT, WIDTH = 3, 32, 32  # CIFAR's images, as torchvision reshapes each row
# The only globals a batch may name: how numpy pickles an array (protocol 2: _reconstruct, then
# ndarray and dtype; protocol 5: _frombuffer), under numpy 1's module name and numpy 2's; each is
# given out as a stand-in (``_STAND_INS``) that builds the array from the pickle's own bytes.
_RECONSTRUCT, _FROMBUFFER = "_reconstruct", "_frombuffer"
_ALLOWED = frozenset(
    (module, name)
    for package in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{package}.multiarray", _RECONSTRUCT),
        (f"{package}.numeric", _FROMBUFFER),
    )
) | {("numpy", "ndarray"), ("numpy", "dtype")}
_KINDS = frozenset(f"{kind}{size}" for kind in "uif" for size in (1, 2, 4, 8)) | {"b1"}


class _DType:
    """numpy.dtype(name, align, copy) as a pickle rebuilds it, its byte order set by its state;
    only plain numbers (u1, i4, f8, ...)."""

    def __init__(self, name: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(name, str) or name not in _KINDS:
            raise pickle.UnpicklingError(f"a CIFAR batch's array is of an unknown type {name!r}")
        self.name, self.order = name, "|"

    def __setstate__(self, state: Any) -> None:
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError("a CIFAR batch's array type has no byte order")
        self.order = order

    def built(self) -> Any:
        import numpy

        return numpy.dtype(f"{self.order}{self.name}")


class _Array:
    """An array as protocol 2 pickles it: _reconstruct(ndarray, ...) makes this, and its state
    (version, shape, dtype, Fortran order, bytes) builds ``array`` from those bytes."""

    def __init__(self) -> None:
        self.array: Any = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("a CIFAR batch's array has no shape, type and bytes")
        _, shape, dtype, fortran, raw = state
        self.array = _built(raw, dtype, shape, "F" if fortran is True else "C")


def _built(raw: Any, dtype: Any, shape: Any, order: Any) -> Any:
    """A read-only array of ``raw``, which must hold exactly the bytes ``shape`` and ``dtype``
    need (Python 2's pickles, the official files, hold them as a str, read as latin-1)."""
    import numpy

    if isinstance(raw, str):
        raw = raw.encode("latin1")
    if (
        not isinstance(raw, bytes | bytearray)
        or not isinstance(dtype, _DType)
        or not isinstance(shape, tuple)
        or not all(type(d) is int and d >= 0 for d in shape)
        or order not in ("C", "F")
    ):
        raise pickle.UnpicklingError("a CIFAR batch's array is not its shape, type and bytes")
    kind = dtype.built()
    size = math.prod(shape) * kind.itemsize
    if len(raw) != size:
        raise pickle.UnpicklingError(
            f"a CIFAR batch's array of shape {list(shape)} holds {len(raw)} bytes, not {size}"
        )
    return numpy.frombuffer(bytes(raw), dtype=kind).reshape(shape, order=order)


def _ndarray(*args: Any) -> Any:
    """numpy.ndarray's stand-in: an argument of _reconstruct only, never called (it would allocate
    an array of any size the pickle names, of memory no one wrote)."""
    raise pickle.UnpicklingError("a CIFAR batch builds an array only from its own bytes")


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _Array:
    if cls is not _ndarray:
        raise pickle.UnpicklingError("a CIFAR batch reconstructs something other than an array")
    return _Array()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> Any:
    return _built(buffer, dtype, shape, order)


_STAND_INS = {
    "ndarray": _ndarray,
    "dtype": _DType,
    _RECONSTRUCT: _reconstruct,
    _FROMBUFFER: _frombuffer,
}


class _Unpickler(pickle.Unpickler):
    """Finds the stand-ins for numpy's array reconstruction, and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"a CIFAR batch may not name {module}.{name}")
        return _STAND_INS[name]

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
    found = {}
    for key, value in data.items():
        if isinstance(value, _Array) and value.array is None:
            raise DataError(f"{path} is not a CIFAR python batch (an array without its bytes)")
        found[key.decode("latin1") if isinstance(key, bytes) else str(key)] = (
            value.array if isinstance(value, _Array) else value
        )
    return found


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
