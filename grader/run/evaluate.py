"""The trusted evaluator: a fresh process running only grader code re-runs the captured graph of the
graded test pass on the inputs that pass fed it, checks those inputs against the official test
images, and lists what the graph is made of.

Started by ``Evaluator`` as ``python -I evaluate.py TEST_IMAGES``, in a sandbox of its own when the
run is sandboxed (run/launch.py ``start_evaluator``: no network, a read-only system, the official
test images and nothing of any submission). It imports nothing of the grader: torch and the
standard library only, so no student-writable path is on its import path. The capture comes on
standard input (bytes the grader read from the kernel's folder, capped) and one JSON object on
standard output. Nothing is unpickled: the graph is torch.export's JSON, checked op by op before
torch deserializes it, and every tensor is raw bytes described by the manifest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVALUATE_SECONDS = 600  # a graph of three Linear layers over 10,000 images takes about a second
MAX_MANIFEST = 16 * 1024 * 1024
DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "uint8": 1, "bool": 1}
# Ops a captured graph may use at all (the rule decides which families are allowed); anything else is
# not deserialized, let alone run.
SAFE_PREFIXES = ("torch.ops.aten.", "torch.ops.prims.")
SAFE_TARGETS = ("_operator.getitem",)
PIXELS = 28 * 28


@dataclass(frozen=True)
class Evaluated:
    """What the evaluator said, as text (JSON) for judge/recompute.py, or why it could not run."""

    output: str | None
    problem: str | None


class Evaluator:
    """The evaluator's process, started before the notebook runs so that importing torch overlaps the
    run; ``finish`` hands it the capture and waits for its answer, ``close`` ends it unused."""

    def __init__(self, test_images: Path, prefix: Sequence[str] = ()) -> None:
        """``prefix``: the sandbox's command (run/launch.py ``start_evaluator``), or none."""
        self.process = subprocess.Popen([*prefix, sys.executable, "-I", str(Path(__file__).resolve()), str(test_images)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def finish(self, capture: bytes) -> Evaluated:
        try:
            out, err = self.process.communicate(capture, timeout=EVALUATE_SECONDS)
        except subprocess.TimeoutExpired:
            self.close()
            return Evaluated(None, f"the trusted evaluation took over {EVALUATE_SECONDS} s")
        if self.process.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            return Evaluated(None, f"the trusted evaluation failed ({lines[-1][:300] if lines else self.process.returncode})")
        return Evaluated(out.decode("utf-8", errors="replace"), None)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def recompute(capture: bytes, test_images: Path) -> Evaluated:
    """Run the evaluator on ``capture`` in a child process with a time limit."""
    return Evaluator(test_images).finish(capture)


# -- the child ---------------------------------------------------------------------------------
class Refused(Exception):
    """The capture is not one this evaluator runs: the message says why."""


def _manifest(data: bytes) -> tuple[dict[str, Any], bytes]:
    line, _, payload = data.partition(b"\n")
    if len(line) > MAX_MANIFEST:
        raise Refused("the capture's manifest is too large")
    try:
        manifest = json.loads(line)
    except (ValueError, RecursionError):
        raise Refused("the capture's manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("version") != 1:
        raise Refused("the capture is not of this grader's format")
    return manifest, payload


def _tensor(entry: Any, payload: bytes) -> Any:
    import torch

    if not isinstance(entry, dict):
        raise Refused("a tensor of the capture is not described")
    dtype, shape, offset, size = (entry.get(k) for k in ("dtype", "shape", "offset", "bytes"))
    if dtype not in DTYPES or not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 2**31 for d in shape):
        raise Refused(f"tensor {str(entry.get('name'))[:80]!r} has an unknown type or shape")
    count = 1
    for d in shape:
        count *= d
    if type(offset) is not int or type(size) is not int or offset < 0 or size != count * DTYPES[dtype] \
            or offset + size > len(payload):
        raise Refused(f"tensor {str(entry.get('name'))[:80]!r} does not fit the capture")
    raw = bytearray(payload[offset:offset + size])
    flat = torch.frombuffer(raw, dtype=getattr(torch, dtype)) if size else torch.empty(0, dtype=getattr(torch, dtype))
    return flat.reshape(shape)


def _targets(graph: dict[str, Any]) -> list[str]:
    nodes = graph.get("graph_module", {}).get("graph", {}).get("nodes")
    if not isinstance(nodes, list):
        raise Refused("the captured graph has no nodes")
    targets = []
    for node in nodes:
        target = node.get("target") if isinstance(node, dict) else None
        if not isinstance(target, str):
            raise Refused("a node of the captured graph has no target")
        if not (target.startswith(SAFE_PREFIXES) or target in SAFE_TARGETS):
            raise Refused(f"the captured graph calls {target[:120]}, which is not a tensor op")
        targets.append(target)
    return targets


def _program(manifest: dict[str, Any], payload: bytes) -> tuple[Any, dict[str, Any]]:
    import torch
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _bytes_to_dataclass

    text = manifest.get("graph")
    if not isinstance(text, str):
        raise Refused("the capture has no graph")
    try:
        graph = json.loads(text)
    except (ValueError, RecursionError):
        raise Refused("the captured graph is not JSON") from None
    targets = _targets(graph)
    entries = manifest.get("tensors")
    if not isinstance(entries, list) or len(entries) > 10_000:
        raise Refused("the capture's tensors are not listed")
    state: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    facts: dict[str, list[Any]] = {"parameter": [], "buffer": [], "constant": []}
    for entry in entries:
        value = _tensor(entry, payload)
        name, kind = str(entry.get("name"))[:200], entry.get("kind")
        if kind not in facts:
            raise Refused(f"tensor {name!r} is of an unknown kind")
        facts[kind].append({"name": name, "shape": list(value.shape), "dtype": str(entry.get("dtype"))})
        if kind == "parameter":
            state[name] = torch.nn.Parameter(value.clone(), requires_grad=False)
        elif kind == "buffer":
            state[name] = value.clone()
        else:
            constants[name] = value.clone()
    shape = manifest.get("input_shape")
    if not isinstance(shape, list) or not all(type(d) is int and 0 < d <= PIXELS * 4 for d in shape):
        raise Refused("the capture's input shape is not a row's")
    serialized = _bytes_to_dataclass(schema.ExportedProgram, text.encode())
    try:
        program = ExportedProgramDeserializer().deserialize(serialized, state, constants,
                                                            ((torch.zeros(2, *shape),), {}))
    except Exception as exc:  # noqa: BLE001 - a graph torch cannot rebuild is not run
        raise Refused(f"the captured graph could not be rebuilt ({type(exc).__name__})") from None
    counts: dict[str, int] = {}
    for target in targets:
        counts[target] = counts.get(target, 0) + 1
    return program, {"ops": counts, **{f"{k}s": v for k, v in facts.items()}}


def _predict(program: Any, inputs: Any, shape: list[int], classes: int) -> tuple[list[int], list[float]]:
    """The class per row, and the margin between the two highest outputs (to tell float noise apart)."""
    import torch

    module = program.module()
    found: list[int] = []
    margins: list[float] = []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], 1000):
            output = module(inputs[start:start + 1000].reshape(-1, *shape))
            if isinstance(output, (tuple, list)):
                output = output[0]
            if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[1] != classes:
                raise Refused("the captured graph does not output one score per class")
            top = output.float().topk(2, dim=1)
            found += top.indices[:, 0].tolist()
            margins += (top.values[:, 0] - top.values[:, 1]).tolist()
    return found, margins


def _official(path: Path) -> Any:
    import torch

    data = path.read_bytes()
    count = int.from_bytes(data[4:8], "big")
    return torch.frombuffer(bytearray(data[16:16 + count * PIXELS]), dtype=torch.uint8).reshape(count, PIXELS)


def _keys(rows: Any) -> list[bytes]:
    """Per row: the bits of its minimum and maximum masks (what an increasing map per image keeps)."""
    import numpy

    array = rows.numpy()
    masks = numpy.concatenate([array == array.min(1, keepdims=True), array == array.max(1, keepdims=True)], 1)
    packed = numpy.packbits(masks, axis=1)
    return [row.tobytes() for row in packed]


def _per_image(inputs: Any, images: Any) -> list[int]:
    """Per row, the official index of the test image it is under a non-decreasing map per image
    (ToTensor, Normalize, a division by hand, half precision: equal pixels stay equal, a brighter
    one never lower), or -1. Rows of identical images go to the group's members in turn."""
    import torch

    table: dict[bytes, list[int]] = {}
    for index, key in enumerate(_keys(images)):
        table.setdefault(key, []).append(index)
    used: dict[bytes, int] = {}
    candidates = []
    for key in _keys(inputs):
        group = table.get(key)
        if not group:
            candidates.append(-1)
            continue
        used[key] = used.get(key, 0) + 1
        candidates.append(group[(used[key] - 1) % len(group)])
    found = torch.tensor(candidates, dtype=torch.long)
    matched = found >= 0
    if bool(matched.any()):
        p, x = images[found[matched]].to(torch.int16), inputs[matched].double()
        order = torch.argsort(p, dim=1, stable=True)
        ps, xs = p.gather(1, order), x.gather(1, order)
        dp, dx = ps[:, 1:] - ps[:, :-1], xs[:, 1:] - xs[:, :-1]
        tolerance = 1e-5 * (xs.amax(1) - xs.amin(1)).clamp_min(1e-12)[:, None] + 1e-7
        good = (((dp == 0) & (dx.abs() <= tolerance)) | ((dp > 0) & (dx >= -tolerance))).all(1)
        rows = torch.nonzero(matched).flatten()
        found[rows[~good]] = -1
    return found.tolist()


def _dense_ranks(columns: Any) -> Any:
    import torch

    ranks = torch.empty(columns.shape, dtype=torch.int32)
    for j in range(columns.shape[1]):
        ranks[:, j] = torch.unique(columns[:, j], return_inverse=True)[1].to(torch.int32)
    return ranks


def _per_pixel(inputs: Any, images: Any) -> list[int]:
    """Per row, the official index of the test image it is under an increasing affine map per pixel
    position (feature normalization with the training set's mean and deviation), or -1. Only a
    pass over the whole test set: the ranks within each column are then those of the images. (In
    ``evaluate``, -2 marks rows fed before that pass, which are not graded.)"""
    import torch

    if inputs.shape[0] != images.shape[0]:
        return [-1] * inputs.shape[0]
    ours, theirs = _dense_ranks(inputs), _dense_ranks(images)
    table = {row.numpy().tobytes(): i for i, row in enumerate(theirs)}
    rows = [table.get(row.numpy().tobytes(), -1) for row in ours]
    if -1 in rows or len(set(rows)) != len(rows):
        return [-1] * inputs.shape[0]
    p = images[torch.tensor(rows)].double()
    x = inputs.double()
    pc, xc = p - p.mean(0), x - x.mean(0)
    scale = (pc * xc).sum(0) / (pc * pc).sum(0).clamp_min(1e-12)
    residual = (xc - pc * scale).abs().amax(0)
    spread = xc.abs().amax(0).clamp_min(1e-12)
    varies = (pc.abs().amax(0) > 0)
    good = bool(((residual <= 1e-4 * spread + 1e-6) | ~varies).all()) and bool((scale[varies] > 0).all())
    return rows if good else [-1] * inputs.shape[0]


def evaluate(data: bytes, test_images: Path) -> dict[str, Any]:
    """The child's work: refuse, or run and verify (see the module's docstring)."""
    import base64

    import torch

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    manifest, payload = _manifest(data)
    program, graph = _program(manifest, payload)
    inputs = _tensor(manifest.get("inputs"), payload)
    if inputs.dim() != 2 or inputs.dtype != torch.float32 or not 0 < inputs.shape[0] <= 20_000:
        raise Refused("the capture's inputs are not rows of floats")
    shape = list(manifest["input_shape"])
    rows = inputs.shape[0]
    claimed = base64.b64decode(str(manifest.get("row_classes", "")), validate=True)
    kernel = [b - 256 if b > 127 else b for b in claimed] if len(claimed) == rows else None
    classes, margins = _predict(program, inputs, shape, 10)
    images = _official(test_images)
    official = _per_image(inputs, images) if inputs.shape[1] == PIXELS else [-1] * rows
    how = "per image"
    if -1 in official and inputs.shape[1] == PIXELS:
        tail = inputs[-images.shape[0]:]  # an evaluation of the validation set may come before the test pass
        by_pixel = _per_pixel(tail, images)
        if -1 not in by_pixel:
            official, how = [-2] * (rows - tail.shape[0]) + by_pixel, "per pixel position"
    return {"rows": rows, "official": official, "classes": classes, "margins": [round(m, 6) for m in margins],
            "kernel_classes": kernel, "preprocessing": how, "graph": graph,
            "changed_after_pass": manifest.get("changed_after_pass") is True,
            "structure_at_pass": manifest.get("structure_at_pass"), "by_probe": manifest.get("by_probe") is True,
            "assumed": str(manifest.get("preprocessing") or "").startswith("assumed")}


def main() -> None:
    import torch  # noqa: F401 - imported while the notebook still runs (Evaluator starts this early)

    data = sys.stdin.buffer.read()
    try:
        answer = evaluate(data, Path(sys.argv[1]))
    except Refused as exc:
        answer = {"refused": str(exc)}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
