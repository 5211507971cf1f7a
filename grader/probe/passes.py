"""The records a recorder's observers fill (recorder.py): a pass over training images
(``TrainPass``), the training images one call drew (``Draw``), a pass over test images
(``TestPass``) and an evaluation (``Evaluation``); and how a call's output is read (its class
scores, the tensors a gradient may reach, the arithmetic that made it)."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch

from grader.probe.guard import student_autocast

MAX_CURVE_POINTS = 600  # points of a loss or learning-rate curve (means over steps)


def bitmap(mask: torch.Tensor) -> str:
    """A bool tensor as base64 of its bits (numpy's packbits order)."""
    import numpy

    return base64.b64encode(numpy.packbits(mask.numpy()).tobytes()).decode()


class TrainPass:
    """One pass over training images: which it drew and the optimizer steps taken meanwhile."""

    def __init__(self, source: str, size: int, stepping: bool, start_step: int) -> None:
        self.source = source  # "loader" or "content"
        self.start_step = start_step  # optimizer steps taken before it began
        self.end_step = start_step  # the last optimizer step it carried
        self.stepping = stepping  # content passes: grad enabled and the module in training mode
        self.drawn = torch.zeros(size, dtype=torch.bool)
        self.batches = 0
        # indices drawn, repeats included (a sampler listing each index twice draws two epochs'
        # worth)
        self.rows = 0
        self.steps: Counter[int] = Counter()  # optimizer serial -> steps
        self.complete = False
        self.last_batch = 0  # the recorder's clock when it last drew a batch
        # the model's class per image, where it evaluated them
        self.predictions: torch.Tensor | None = None
        # drawn as themselves, pixel by pixel (not by key alone)
        self.exact = torch.zeros(size, dtype=torch.bool)

    def draw(
        self,
        indices: list[int],
        clock: int,
        predictions: torch.Tensor | None = None,
        loose: frozenset[int] = frozenset(),
    ) -> None:
        if indices:
            where = torch.tensor(indices, dtype=torch.long)
            self.drawn[where] = True
            self.exact[torch.tensor([i for i in indices if i not in loose], dtype=torch.long)] = (
                True
            )
            self.rows += len(indices)
            if predictions is not None:
                if self.predictions is None:
                    self.predictions = torch.full(self.drawn.shape, -1, dtype=torch.int8)
                self.predictions[where] = predictions.to(torch.int8)
        self.batches += 1
        self.last_batch = clock

    def export(self) -> dict[str, Any]:
        record = {
            "source": self.source,
            "stepping": self.stepping,
            "drawn": bitmap(self.drawn),
            "samples": int(self.drawn.sum()),
            "rows": self.rows,
            "batches": self.batches,
            "complete": self.complete,
            "start_step": self.start_step,
            "end_step": self.end_step,
            "steps": {str(k): v for k, v in self.steps.items()},
        }
        if self.source == "content" and bool((self.drawn & ~self.exact).any()):
            # only named by a key: no evidence of overlap
            record["loose"] = bitmap(self.drawn & ~self.exact)
        if self.predictions is not None:  # one signed byte per drawn image, in index order
            record["predictions"] = base64.b64encode(
                self.predictions[self.drawn].numpy().tobytes()
            ).decode()
        return record


class Draw:
    """Training images one call fed the model, until it is known whether they trained it."""

    def __init__(
        self,
        indices: list[int],
        trained: bool,
        waits: bool = False,
        loose: frozenset[int] = frozenset(),
    ) -> None:
        self.indices = indices
        # indices named by their row's key alone (content.ImageIndex.verified said no)
        self.loose = loose
        # a gradient reached their rows (or the draw is known to have trained)
        self.trained = trained
        self.waits = waits  # a call with gradients: its backward may come after the next call
        # its call's output carries a hook: whether a gradient reached it is known
        self.hooked = False
        self.predictions: torch.Tensor | None = None  # the model's classes, where it evaluated them

    def reached(self, grad: torch.Tensor) -> None:
        self.trained = True

    def trains(self, followed_by_step: bool) -> bool:
        """Whether it trained the model: a gradient reached its call's output; or, when no hook
        could
        be put on that output (a call with gradients whose output is not a tensor needing one), an
        optimizer step followed it. A call without gradients trains nothing, whatever follows."""
        return self.trained or (followed_by_step and self.waits and not self.hooked)


class TestPass:
    """One pass of one predictor (input module, output module) over test images."""

    def __init__(self, predictor: tuple[int, int], size: int, step: int) -> None:
        self.predictor = predictor
        self.predictions = torch.full((size,), -1, dtype=torch.int8)
        # softmax of the output at the prediction
        self.confidence = torch.zeros(size, dtype=torch.float16)
        self.rows = 0
        self.batches = 0
        self.start_step = step
        self.end_step = step
        # the recorder's count of test batches, to tell interleaved passes apart
        self.first_batch = 0
        self.last_batch = 0
        self.complete = False
        # the coarsest arithmetic its scores were computed in (``precision``)
        self.precision = "float32"
        # What the trusted side recomputes (capture.py): the exact inputs fed, the class predicted
        # per row, and the predicting model's weights as the pass ended. Kept for the last complete
        # pass only.
        self.inputs: list[torch.Tensor] = []
        self.row_classes: list[torch.Tensor] = []
        self.snapshot: Any = None

    def export(self, with_predictions: bool) -> dict[str, Any]:
        covered = int((self.predictions >= 0).sum())
        record: dict[str, Any] = {
            "predictor": list(self.predictor),
            "covered": covered,
            "rows": self.rows,
            "batches": self.batches,
            "complete": self.complete,
            "start_step": self.start_step,
            "end_step": self.end_step,
            "first_batch": self.first_batch,
            "last_batch": self.last_batch,
        }
        if with_predictions:
            record["predictions"] = base64.b64encode(self.predictions.numpy().tobytes()).decode()
            record["confidence"] = base64.b64encode(self.confidence.numpy().tobytes()).decode()
        return record


class Evaluation:
    """One module's consecutive evaluation calls with no optimizer step between them: the last
    ``MAX_ROWS`` rows fed and the class predicted for each."""

    MAX_ROWS = 20_000

    def __init__(self, serial: int, step: int) -> None:
        self.serial, self.step = serial, step
        self.inputs: list[torch.Tensor] = []
        self.row_classes: list[torch.Tensor] = []
        self.rows = 0
        self.precision = "float32"  # the coarsest arithmetic of its calls (``precision``)

    def add(self, rows: torch.Tensor, classes: torch.Tensor, arithmetic: str) -> None:
        self.precision = max(self.precision, arithmetic, key=PRECISIONS.index)
        self.inputs.append(rows)
        self.row_classes.append(classes)
        self.rows += rows.shape[0]
        while self.rows - self.inputs[0].shape[0] >= self.MAX_ROWS:
            self.rows -= self.inputs.pop(0).shape[0]
            self.row_classes.pop(0)


MAX_OUTPUTS = 8  # tensors of a tuple output watched for a gradient


def _items(output: Any) -> list[Any] | None:
    """The parts of a tuple, list or dict output (``{"logits": ...}``), at most MAX_OUTPUTS; None
    for another."""
    if isinstance(output, Mapping):
        return list(output.values())[:MAX_OUTPUTS]
    return list(output[:MAX_OUTPUTS]) if isinstance(output, (tuple, list)) else None


def class_scores(output: Any, batch: int, classes: int) -> torch.Tensor | None:
    """The tensor of a model's output holding one score per class per row: the output itself, or the
    first such tensor of a tuple, list or dict (the trusted evaluator's ``class_scores`` picks the
    same)."""
    items = _items(output)
    for item in [output] if items is None else items:
        if (
            isinstance(item, torch.Tensor)
            and item.dim() == 2
            and tuple(item.shape) == (batch, classes)
        ):
            return item
    return None


def graded_outputs(output: Any, batch: int | None) -> list[torch.Tensor]:
    """The tensors of a call's output a gradient may reach, one row per input row: the output
    itself, or each tensor of a tuple, list or dict (a model returning ``(probabilities, logits)``
    is
    trained through either)."""
    items = _items(output) or [output]
    return [
        t
        for t in items
        if isinstance(t, torch.Tensor)
        and t.requires_grad
        and t.dim() > 0
        and (batch is None or t.shape[0] == batch)
    ]


# The arithmetic a pass's scores were computed in, coarsest last: the trusted side bounds by it how
# far its own float32 run of the same graph may honestly differ from the kernel's.
PRECISIONS = ("float32", "tf32", "float16", "bfloat16")


def precision(output: torch.Tensor) -> str:
    """The coarsest arithmetic that made ``output``: the student's autocast on its device, its own
    dtype (a half-precision model), TF32 or reduced-precision float32 matrix products."""
    device = output.device.type
    found = [
        str(dtype).removeprefix("torch.")
        for dtype in (student_autocast(device), output.dtype)
        if dtype is not None
    ]
    if torch.get_float32_matmul_precision() != "highest" or (
        device == "cuda" and torch.backends.cuda.matmul.allow_tf32
    ):
        # reduced float32 products on a CPU use bfloat16
        found.append("tf32" if device == "cuda" else "bfloat16")
    return max((f for f in found if f in PRECISIONS), key=PRECISIONS.index, default="float32")


def predict(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The class per row and the softmax of the output there, copied off the device in one
    transfer."""
    output = output.detach()
    both = torch.stack(
        [output.argmax(1).to(torch.float32), torch.softmax(output.float(), 1).amax(1)]
    ).cpu()
    return both[0].to(torch.long), both[1]


def curve(
    points: list[tuple[torch.Tensor | None, float | None]], most: int = MAX_CURVE_POINTS
) -> dict[str, Any]:
    """An optimizer's loss and learning rate per step, as means over ``every`` steps (at most
    ``most`` points)."""
    every = max(1, -(-len(points) // most))
    values = [loss for loss, _ in points if loss is not None]
    # one copy off the device
    losses = iter(torch.stack([v.float().cpu() for v in values]).tolist() if values else [])
    flat = [(next(losses) if loss is not None else None, lr) for loss, lr in points]

    def means(column: int) -> list[float | None]:
        out: list[float | None] = []
        for start in range(0, len(flat), every):
            chunk = [
                float(v)
                for v in (row[column] for row in flat[start : start + every])
                if v is not None
            ]
            out.append(sum(chunk) / len(chunk) if chunk else None)
        return out

    return {"every": every, "loss": means(0), "lr": means(1)}
