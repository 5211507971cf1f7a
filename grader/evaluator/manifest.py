"""The capture as bytes: one line of JSON (the manifest: the graph, how the pass fed it, where each
tensor lies) and then the tensors' raw bytes, as probe/capture.py writes it. Read here, capped,
and never unpickled."""

from __future__ import annotations

import json
from typing import Any

import torch

CAPTURE_VERSION = 2  # the probe's capture.CAPTURE_VERSION (this package imports nothing of it)
MAX_MANIFEST = 16 * 1024 * 1024
DTYPES = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float64": 8,
    "int64": 8,
    "int32": 4,
    "uint8": 1,
    "bool": 1,
}
INPUT_DTYPES = ("float32", "float16", "bfloat16", "float64", "uint8")


class Refused(Exception):
    """The capture is not one this evaluator runs: the message says why."""


def read_manifest(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The manifest and the bytes after it."""
    line, _, payload = data.partition(b"\n")
    if len(line) > MAX_MANIFEST:
        raise Refused("the capture's manifest is too large")
    try:
        manifest = json.loads(line)
    except (ValueError, RecursionError):
        raise Refused("the capture's manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("version") != CAPTURE_VERSION:
        raise Refused("the capture is not of this grader's format")
    return manifest, payload


def tensor(entry: Any, payload: bytes) -> torch.Tensor:
    """The tensor a manifest's entry describes, read from ``payload`` (a copy: writable)."""
    if not isinstance(entry, dict):
        raise Refused("a tensor of the capture is not described")
    dtype, shape, offset, size = (entry.get(k) for k in ("dtype", "shape", "offset", "bytes"))
    if (
        dtype not in DTYPES
        or not isinstance(shape, list)
        or not all(type(d) is int and 0 <= d < 2**31 for d in shape)
    ):
        raise Refused(f"tensor {str(entry.get('name'))[:80]!r} has an unknown type or shape")
    count = 1
    for d in shape:
        count *= d
    if (
        type(offset) is not int
        or type(size) is not int
        or offset < 0
        or size != count * DTYPES[dtype]
        or offset + size > len(payload)
    ):
        raise Refused(f"tensor {str(entry.get('name'))[:80]!r} does not fit the capture")
    raw = bytearray(payload[offset : offset + size])
    kind = getattr(torch, dtype)
    flat = torch.frombuffer(raw, dtype=kind) if size else torch.empty(0, dtype=kind)
    return flat.reshape(shape)


def input_dtype(manifest: dict[str, Any]) -> torch.dtype:
    """The dtype the graded pass fed the model (half precision, float64, raw uint8 pixels), else
    float32."""
    name = manifest.get("input_dtype")
    found: torch.dtype = getattr(torch, name if name in INPUT_DTYPES else "float32")
    return found
