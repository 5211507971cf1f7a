"""The graded test pass, captured for the trusted side to recompute: the model that made its
predictions as a graph with the weights it had when the pass ended (torch.export), the exact inputs
the pass fed it, and the class it predicted for each row.

Everything here is a claim written in the student's process: the grader re-runs the graph on the
inputs in a process of its own, checks the graph against the rules and the inputs against the
official test images, and compares its predictions with these (grader/evaluator/).
"""

from __future__ import annotations

import base64
import json
import weakref
from typing import Any

import torch

from grader.probe import model as models, passes
from grader.probe.identity import Serials

# 2: the pass's arithmetic (precision), its inputs' dtype, the views it averaged
CAPTURE_VERSION = 2
MAX_INPUT_ROWS = 20_000  # a test pass feeds 10,000 images; more is not a test pass


class Snapshot:
    """The predicting model as a test pass ended: the module, its structure and a copy of its
    state."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = weakref.ref(module)
        self.structure = structure(module)
        # a module left in training mode (no model.eval()): BatchNorm's batch statistics and
        # dropout made the pass's predictions, which the graph (exported in eval mode) does not
        self.training = any(m.training for m in module.modules())
        self.state = {
            name: value.detach().clone()
            for name, value in module.state_dict(keep_vars=True).items()
        }


class Pass:
    """A pass to capture that the recorder did not name a test pass: the probe's own over the test
    set,
    or the notebook's last evaluation of rows the content key could not name."""

    def __init__(
        self,
        inputs: list[torch.Tensor],
        predictions: list[int],
        snapshot: Snapshot,
        preprocessing: str,
        by_probe: bool = True,
        precision: str = "float32",
    ) -> None:
        # False: the notebook's own evaluation, which the content key did not name
        self.by_probe = by_probe
        self.precision = precision  # the arithmetic its scores were computed in (passes.precision)
        self.inputs = inputs
        self.row_classes = [torch.tensor(predictions, dtype=torch.int8)]
        self.snapshot = snapshot
        # "assumed: ..." when the notebook never showed its test transform
        self.preprocessing = preprocessing


def structure(module: torch.nn.Module) -> list[Any]:
    """What must be unchanged for the module to still be the one that predicted: its submodules'
    types and its state's names, shapes and dtypes."""
    kinds = [[name, type(sub).__qualname__] for name, sub in module.named_modules()]
    state = [
        [name, list(value.shape), str(value.dtype)]
        for name, value in module.state_dict(keep_vars=True).items()
    ]
    return [kinds, state]


def owner(predictor: tuple[int, int], recorder: Any, serials: Serials) -> torch.nn.Module | None:
    """The smallest module owning every parameter of the pass's input and output modules."""
    modules = recorder.shared.modules
    ends = [modules[s]() for s in predictor if s in modules]
    if not ends or any(m is None for m in ends):
        return None
    owned = set().union(*(models.param_serials(m, serials) for m in ends if m is not None))
    return models.smallest_owner(
        owned, serials, models.live_modules(), prefer=[m for m in ends if m is not None]
    )


def _tensor_entry(
    name: str, kind: str, value: torch.Tensor, chunks: list[bytes], offset: int
) -> tuple[dict[str, Any], int]:
    data = value.detach().to("cpu").contiguous()
    raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
    chunks.append(raw)
    entry = {
        "name": name,
        "kind": kind,
        "dtype": str(data.dtype).removeprefix("torch."),
        "shape": list(data.shape),
        "offset": offset,
        "bytes": len(raw),
    }
    return entry, offset + len(raw)


def python_twin(script: torch.nn.Module, sample: torch.Tensor) -> torch.nn.Module | None:
    """For a TorchScript module with no Python module sharing its weights (``torch.jit.load`` of a
    saved trace), a copy of a live Python module of the same state's names and shapes with the
    script's weights loaded, when it gives the script's scores on ``sample``; torch.export captures
    the copy (the trusted side still compares every row with what the kernel recorded)."""
    import copy

    state = script.state_dict()
    shapes = {name: tuple(value.shape) for name, value in state.items()}
    for candidate in reversed(models.live_modules()):
        if isinstance(candidate, torch.jit.ScriptModule):
            continue
        try:
            if {n: tuple(v.shape) for n, v in candidate.state_dict().items()} != shapes:
                continue
            twin = copy.deepcopy(candidate).eval()
            twin.load_state_dict(state)
            with torch.no_grad():
                if torch.allclose(
                    twin(sample).float(), script(sample).float(), rtol=1e-4, atol=1e-5
                ):
                    return twin
        except Exception:  # noqa: BLE001 - a candidate that cannot stand in is not the twin
            continue
    return None


def _in_eval_mode(
    model: torch.nn.Module, snapshot: Snapshot, inputs: list[torch.Tensor], recorder: Any
) -> list[torch.Tensor]:
    """The graded pass's classes as the model (in eval mode, its probe hooks quiet) gives them
    with the weights it had at that pass: the record the graph, exported in eval mode, is checked
    against when the pass ran in training mode (its batch statistics and dropout are no graph's).
    [] when it cannot be run so: the pass's own record is then compared, as any other."""
    classes = recorder.shared.classes
    found = []
    try:
        for x in inputs:
            output = torch.func.functional_call(model, snapshot.state, (x,))
            scores = passes.class_scores(output, x.shape[0], classes)
            if scores is None:
                return []
            found.append(scores.argmax(1).to(torch.int8))
    except Exception:  # noqa: BLE001 - the student's forward, run again: any error at all
        return []
    return found


def capture(graded: Any, found: torch.nn.Module, recorder: Any) -> tuple[dict[str, Any], bytes]:
    """(manifest, payload) of the graded pass; raises when the model cannot be captured."""
    from torch._export.serde.serialize import serialize

    snapshot: Snapshot | None = graded.snapshot
    if snapshot is None or snapshot.module() is not found:
        raise ValueError("the graded test pass was not made by the model found at the end")
    if not graded.inputs:
        raise ValueError("the graded test pass's inputs were not kept")
    inputs = torch.cat([x.reshape(x.shape[0], -1) if x.dim() > 1 else x for x in graded.inputs])
    if inputs.shape[0] > MAX_INPUT_ROWS:
        raise ValueError(f"the graded test pass fed {inputs.shape[0]} rows")
    changed = structure(found) != snapshot.structure
    sample = torch.cat([x[:2] for x in graded.inputs[:2]])[:2]  # two rows, even from batches of one
    modes = {module: module.training for module in found.modules()}
    recorder.internal = True
    row_classes = graded.row_classes
    try:
        found.eval()
        exported = found
        if isinstance(found, torch.jit.ScriptModule):
            exported = python_twin(found, sample) or found
        with torch.no_grad():
            program = torch.export.export(
                exported, (sample,), dynamic_shapes=({0: torch.export.Dim.AUTO},), strict=False
            )
            if snapshot.training:
                again = _in_eval_mode(exported, snapshot, graded.inputs, recorder)
                row_classes = again or graded.row_classes
    finally:
        for module, mode in modes.items():
            module.training = mode
        recorder.internal = False
    artifact = serialize(program)
    chunks: list[bytes] = []
    offset, tensors = 0, []
    specs = {
        spec.target: spec.kind.name for spec in program.graph_signature.input_specs if spec.target
    }
    for name, value in program.state_dict.items():
        state = snapshot.state.get(name, value) if not changed else value
        entry, offset = _tensor_entry(
            name, specs.get(name, "BUFFER").lower(), state, chunks, offset
        )
        tensors.append(entry)
    for name, value in program.constants.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"the model holds a constant that is not a tensor ({type(value).__name__})"
            )
        entry, offset = _tensor_entry(name, "constant", value, chunks, offset)
        tensors.append(entry)
    rows, offset = _tensor_entry("inputs", "input", inputs.float(), chunks, offset)
    # test-time augmentation: the same model on every mirror image
    predictor = getattr(graded, "predictor", None)
    mirrored = predictor is not None and recorder.observers.tests.mirrored_all(
        predictor[0], graded.end_step
    )
    classes = torch.cat(row_classes).to(torch.int8).cpu().numpy().tobytes()
    manifest = {
        "version": CAPTURE_VERSION,
        "graph": artifact.exported_program.decode("utf-8"),
        "tensors": tensors,
        "inputs": rows,
        "input_shape": list(graded.inputs[0].shape[1:]),
        "row_classes": base64.b64encode(classes).decode(),
        "changed_after_pass": changed,
        "structure_at_pass": snapshot.structure,
        "training_at_pass": snapshot.training,
        "by_probe": getattr(graded, "by_probe", False),
        "preprocessing": getattr(graded, "preprocessing", None),
        "precision": graded.precision,
        "input_dtype": str(sample.dtype).removeprefix("torch."),
        "views": ["identity", "hflip"] if mirrored else ["identity"],
    }
    return manifest, b"".join(chunks)


def write(path: str, manifest: dict[str, Any], payload: bytes) -> None:
    """The manifest as one JSON line, then the payload: one file, read by the grader with a cap."""
    with open(path, "wb") as handle:
        handle.write(json.dumps(manifest).encode() + b"\n")
        handle.write(payload)
