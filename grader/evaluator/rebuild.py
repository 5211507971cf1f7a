"""The captured graph rebuilt: its JSON sanitized, its tensors read, deserialized by torch.export,
and the facts the architecture rule reads (flow.py)."""

from __future__ import annotations

import json
from typing import Any

import torch

# What the deserializer and the shape propagation import on their first graph (networkx, inductor:
# 2 s), imported here: a warm server (serve.py) pays it once, not in every child.
import torch._inductor.sizevars  # noqa: F401
import torch.export._trace  # noqa: F401
import torch.fx.experimental.validator  # noqa: F401
from torch._export.serde import schema
from torch._export.serde.serialize import ExportedProgramDeserializer, _bytes_to_dataclass

from grader.evaluator.flow import copies, flow
from grader.evaluator.key import ImageSpec
from grader.evaluator.manifest import Refused, input_dtype, tensor
from grader.evaluator.ops import WIDEST
from grader.evaluator.sanitize import checked

KINDS = ("parameter", "buffer", "constant")


def program(
    manifest: dict[str, Any],
    payload: bytes,
    allowed: frozenset[str],
    spec: ImageSpec,
    widest: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The graph torch rebuilt (an ExportedProgram) and its facts, or ``Refused``; ``spec``: the
    images' geometry (a row's input shape holds at most four images' values per dimension);
    ``widest``: the most values per image on the image's way (flow.py), else ``WIDEST`` images'
    worth."""
    text = manifest.get("graph")
    dtype = input_dtype(manifest)
    if not isinstance(text, str):
        raise Refused("the capture has no graph")
    try:
        graph = json.loads(text)
    except (ValueError, RecursionError):
        raise Refused("the captured graph is not JSON") from None
    targets = checked(graph, allowed)
    entries = manifest.get("tensors")
    if not isinstance(entries, list) or len(entries) > 10_000:
        raise Refused("the capture's tensors are not listed")
    state: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    facts: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    for entry in entries:
        value = tensor(entry, payload)
        name, kind = str(entry.get("name"))[:200], entry.get("kind")
        if kind not in facts:
            raise Refused(f"tensor {name!r} is of an unknown kind")
        facts[kind].append(
            {"name": name, "shape": list(value.shape), "dtype": str(entry.get("dtype"))}
        )
        if kind == "parameter":
            state[name] = torch.nn.Parameter(value.clone(), requires_grad=False)
        elif kind == "buffer":
            state[name] = value.clone()
        else:
            constants[name] = value.clone()
    shape = manifest.get("input_shape")
    if not isinstance(shape, list) or not all(
        type(d) is int and 0 < d <= spec.values * 4 for d in shape
    ):
        raise Refused("the capture's input shape is not a row's")
    serialized = _bytes_to_dataclass(schema.ExportedProgram, json.dumps(graph).encode())
    blank = torch.zeros(2, *shape, dtype=dtype)
    sample: tuple[tuple[torch.Tensor], dict[str, Any]] = ((blank,), {})
    try:
        rebuilt = ExportedProgramDeserializer().deserialize(serialized, state, constants, sample)
    except Exception as exc:  # noqa: BLE001 - a graph torch cannot rebuild is not run
        raise Refused(f"the captured graph could not be rebuilt ({type(exc).__name__})") from None
    counts: dict[str, int] = {}
    for target in targets:
        counts[target] = counts.get(target, 0) + 1
    bound = widest if widest is not None else WIDEST * spec.values
    uses, mixes, products, way = flow(rebuilt, shape, dtype, bound)
    return rebuilt, {
        "ops": counts,
        "uses": uses,
        "mixes": mixes,
        "products": products,
        "way": way,
        "image": [spec.height, spec.width],  # the grader's, from --spec: the maps' first extent
        "copies": copies(rebuilt, uses),
        **{f"{k}s": v for k, v in facts.items()},
    }
