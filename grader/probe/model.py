"""The trained model, found by ownership of parameters, and what the probe itself runs on it at
export: the architecture trace and, only when the notebook never predicted the test set, the
fallback pass."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from grader.probe.identity import Serials


def live_modules() -> list[torch.nn.Module]:
    """Every module alive in the kernel (by type: ``isinstance`` would wake dead weak proxies)."""
    return [o for o in gc.get_objects() if issubclass(type(o), torch.nn.Module)]


def param_serials(module: torch.nn.Module, serials: Serials) -> set[int]:
    return {serials.of(p) for p in module.parameters()}


def smallest_owner(
    params: set[int],
    serials: Serials,
    modules: list[torch.nn.Module],
    prefer: Sequence[torch.nn.Module] = (),
) -> torch.nn.Module | None:
    """The module with the fewest parameters that holds all of ``params``; among equals, a Python
    module before a TorchScript one sharing its weights (``torch.jit.trace(model, x)``: the model
    itself can be exported, the trace cannot), then the innermost (a DataParallel, compiled or
    AveragedModel wrapper and the model inside), and of modules side by side one of ``prefer`` (the
    module that made the graded predictions: an ``nn.Sequential`` built around the trained model's
    layers beside the model), whichever the garbage collector lists first."""
    if not params:
        return None
    candidates = [(len(own), m) for m in modules if params <= (own := param_serials(m, serials))]
    if not candidates:
        return None
    least = min(n for n, _ in candidates)
    tied = [m for n, m in candidates if n == least]
    tied = [m for m in tied if not isinstance(m, torch.jit.ScriptModule)] or tied
    inner = [
        m
        for m in tied
        if not any(other is not m and any(sub is other for sub in m.modules()) for other in tied)
    ]
    preferred = [m for m in inner if any(m is p for p in prefer)]
    return (preferred or inner or tied)[0]


def by_name() -> tuple[torch.nn.Module | None, str]:
    """When nothing was trained or predicted: the notebook's module called model/net, else its last
    one."""
    namespace = vars(sys.modules["__main__"])
    modules = {
        name: value
        for name, value in namespace.items()
        if isinstance(value, torch.nn.Module) and any(True for _ in value.parameters())
    }
    for name in ("model", "net", "Model", "network", "classifier"):
        if name in modules:
            return modules[name], f"name ({name})"
    if modules:
        name, module = list(modules.items())[-1]
        return module, f"namespace ({name})"
    return None, "none"


def forward(model: torch.nn.Module, images: torch.Tensor) -> Any:
    try:
        return model(images)
    except Exception:  # noqa: BLE001 - the model may want flattened input
        return model(images.reshape(images.shape[0], -1))


class Internal:
    """Eval mode and no grad, restored afterwards; ``flag`` tells the recorder these calls are the
    probe's."""

    def __init__(self, model: torch.nn.Module, recorder: Any) -> None:
        self.model = model
        self.recorder = recorder
        self.was_training = model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> torch.device:
        self.recorder.internal = True
        self.model.eval()
        self.no_grad.__enter__()
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(None, None, None)
        self.model.train(self.was_training)
        self.recorder.internal = False


def fallback_pass(
    model: torch.nn.Module,
    dataset: Any,
    classes: int,
    recorder: Any,
    fed: list[torch.Tensor] | None = None,
) -> tuple[list[int], list[float]]:
    """Predict every test image through ``dataset`` (the notebook's test dataset when it built one),
    in
    eval mode: the class and the softmax of the output there, per image; ``fed`` receives the
    inputs."""
    from torch.utils.data import DataLoader

    from grader.probe.passes import class_scores, predict

    predictions: list[int] = []
    confidence: list[float] = []
    with Internal(model, recorder) as device:
        for images, _labels in DataLoader(dataset, batch_size=500, shuffle=False, num_workers=0):
            if fed is not None:
                fed.append(images.detach().clone())
            output = class_scores(forward(model, images.to(device)), images.shape[0], classes)
            if output is None:
                raise ValueError(
                    f"the model's output holds no scores of shape ({images.shape[0]}, {classes})"
                )
            classes_, softmax = predict(output)
            predictions.extend(classes_.tolist())
            confidence.extend(round(c, 4) for c in softmax.tolist())
    return predictions, confidence


# Tensor ops that apply weights: matrix products, convolutions, embeddings, recurrent cells,
# attention.
WEIGHT_OPS = frozenset(
    {
        "mm",
        "addmm",
        "bmm",
        "baddbmm",
        "addbmm",
        "matmul",
        "mv",
        "addmv",
        "dot",
        "vdot",
        "linear",
        "einsum",
        "convolution",
        "_convolution",
        "convolution_overrideable",
        "cudnn_convolution",
        "mkldnn_convolution",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "embedding",
        "embedding_bag",
        "_embedding_bag",
        "lstm",
        "gru",
        "rnn_tanh",
        "rnn_relu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_attention_math",
    }
)


class OpRecorder(TorchDispatchMode):
    """Records the weight-applying ops of one forward pass, with their operand shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[dict[str, Any]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func._overloadpacket.__name__
        if name in WEIGHT_OPS and len(self.ops) < 200:
            self.ops.append(
                {"op": name, "shapes": [list(a.shape) for a in args if isinstance(a, torch.Tensor)]}
            )
        return func(*args, **(kwargs or {}))


def architecture(model: torch.nn.Module, sample: torch.Tensor, recorder: Any) -> dict[str, Any]:
    """What the model is made of: modules owning parameters (a TorchScript module by the class it
    was
    made from), and the weight ops of a forward on ``sample``."""
    owners = [
        {
            "module": name or "(model)",
            "type": getattr(module, "original_name", None) or type(module).__name__,
            "shapes": [list(p.shape) for p in module.parameters(recurse=False)],
        }
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    record: dict[str, Any] = {"parameters": owners[:200], "ops": None, "error": None}
    try:
        with Internal(model, recorder) as device:
            ops = OpRecorder()
            with ops:
                forward(model, sample.to(device))
        record["ops"] = ops.ops
    except Exception as exc:  # noqa: BLE001 - recorded, judged by the grader
        record["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return record


def describe(model: torch.nn.Module, found_by: str, serials: Serials) -> dict[str, Any]:
    first = next(model.parameters(), None)
    return {
        "class": type(model).__name__,
        "found_by": found_by,
        "parameters": sum(p.numel() for p in model.parameters()),
        "param_serials": sorted(param_serials(model, serials)),
        # in-place changes: steps, loads, init
        "param_versions": sum(int(p._version) for p in model.parameters()),
        # a backward pass reached it
        "has_grad": any(p.grad is not None for p in model.parameters()),
        "device": str(first.device) if first is not None else "cpu",
        "training": bool(model.training),
    }
