"""What the notebook did with the data, as raw facts: passes over the training images, optimizer
steps, checkpoints loaded, and the model's predictions on test images. It never judges them.

Two ways of seeing a pass:
- a DataLoader over the training FashionMNIST (or a Subset or wrapper of it): the indices its
  sampler drew, whatever the transform (augmentation included);
- by content: every outermost module call whose input rows are dataset images (see content.py),
  however the notebook built its tensors. Test rows are paired with the first later module
  output of shape (batch, classes), so ``model(x)``, ``model.forward(x)``, a compiled or wrapped
  model and a softmax afterwards all give the model's predictions. Training rows are grouped
  into passes, a new one starting when an image comes back.
"""

from __future__ import annotations

import base64
import os
import random
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from grader.probe.content import ImageIndex, Match, PerPixel, image_rows
from grader.probe.continuity import Continuity
from grader.probe.gradients import LinearGradients
from grader.probe.guard import guarded, student_autocast
from grader.probe.identity import Serials

MAX_EXPORTED_PREDICTIONS = 50  # test passes whose predictions are exported (the last ones)
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
        self.rows = 0  # indices drawn, repeats included (a sampler listing each index twice draws two epochs' worth)
        self.steps: Counter[int] = Counter()  # optimizer serial -> steps
        self.complete = False
        self.last_batch = 0  # the recorder's clock when it last drew a batch
        self.predictions: torch.Tensor | None = None  # the model's class per image, where it evaluated them
        self.exact = torch.zeros(size, dtype=torch.bool)  # drawn as themselves, pixel by pixel (not by key alone)

    def draw(self, indices: list[int], clock: int, predictions: torch.Tensor | None = None,
             loose: frozenset[int] = frozenset()) -> None:
        if indices:
            where = torch.tensor(indices, dtype=torch.long)
            self.drawn[where] = True
            self.exact[torch.tensor([i for i in indices if i not in loose], dtype=torch.long)] = True
            self.rows += len(indices)
            if predictions is not None:
                if self.predictions is None:
                    self.predictions = torch.full(self.drawn.shape, -1, dtype=torch.int8)
                self.predictions[where] = predictions.to(torch.int8)
        self.batches += 1
        self.last_batch = clock

    def export(self) -> dict[str, Any]:
        record = {"source": self.source, "stepping": self.stepping, "drawn": bitmap(self.drawn),
                  "samples": int(self.drawn.sum()), "rows": self.rows, "batches": self.batches,
                  "complete": self.complete,
                  "start_step": self.start_step, "end_step": self.end_step,
                  "steps": {str(k): v for k, v in self.steps.items()}}
        if self.source == "content" and bool((self.drawn & ~self.exact).any()):
            record["loose"] = bitmap(self.drawn & ~self.exact)  # only named by a key: no evidence of overlap
        if self.predictions is not None:  # one signed byte per drawn image, in index order
            record["predictions"] = base64.b64encode(self.predictions[self.drawn].numpy().tobytes()).decode()
        return record


class Draw:
    """Training images one call fed the model, until it is known whether they trained it."""

    def __init__(self, indices: list[int], trained: bool, waits: bool = False,
                 loose: frozenset[int] = frozenset()) -> None:
        self.indices = indices
        self.loose = loose  # indices named by their row's key alone (content.ImageIndex.verified said no)
        self.trained = trained  # a gradient reached their rows (or the draw is known to have trained)
        self.waits = waits  # a call with gradients: its backward may come after the next call
        self.hooked = False  # its call's output carries a hook: whether a gradient reached it is known
        self.predictions: torch.Tensor | None = None  # the model's classes, where it evaluated them

    def reached(self, grad: torch.Tensor) -> None:
        self.trained = True

    def trains(self, followed_by_step: bool) -> bool:
        """Whether it trained the model: a gradient reached its call's output; or, when no hook could
        be put on that output (a call with gradients whose output is not a tensor needing one), an
        optimizer step followed it. A call without gradients trains nothing, whatever follows."""
        return self.trained or (followed_by_step and self.waits and not self.hooked)


class TestPass:
    """One pass of one predictor (input module, output module) over test images."""

    def __init__(self, predictor: tuple[int, int], size: int, step: int) -> None:
        self.predictor = predictor
        self.predictions = torch.full((size,), -1, dtype=torch.int8)
        self.confidence = torch.zeros(size, dtype=torch.float16)  # softmax of the output at the prediction
        self.rows = 0
        self.batches = 0
        self.start_step = step
        self.end_step = step
        self.first_batch = 0  # the recorder's count of test batches, to tell interleaved passes apart
        self.last_batch = 0
        self.complete = False
        self.precision = "float32"  # the coarsest arithmetic its scores were computed in (``precision``)
        # What the trusted side recomputes (capture.py): the exact inputs fed, the class predicted per row,
        # and the predicting model's weights as the pass ended. Kept for the last complete pass only.
        self.inputs: list[torch.Tensor] = []
        self.row_classes: list[torch.Tensor] = []
        self.snapshot: Any = None

    def export(self, with_predictions: bool) -> dict[str, Any]:
        covered = int((self.predictions >= 0).sum())
        record: dict[str, Any] = {"predictor": list(self.predictor), "covered": covered, "rows": self.rows,
                                  "batches": self.batches, "complete": self.complete,
                                  "start_step": self.start_step, "end_step": self.end_step,
                                  "first_batch": self.first_batch, "last_batch": self.last_batch}
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


MAX_LEARNING_ROWS = 8192  # rows kept for PerPixel to read again once it has learned its map
SPOT_CHECK = 8  # one in this many batches a training DataLoader yields is looked at for test images
MAX_CAPTURES = 5000  # states captured with state_dict() that a later load may restore (the last ones)
MAX_LOAD_PARAMS = 64  # parameters of a loaded module listed in the record (the homework's model has 6 to 12)
MAX_OUTPUTS = 8  # tensors of a tuple output watched for a gradient


class Fingerprints:
    """Each parameter projected on a secret random vector of its size, kept where it lives: two states
    of a model that differ in any weight differ here, and a notebook cannot choose the weights a
    projection it does not know would take for another state's. Computed only when a state is taken
    or loaded (``state_dict()``, ``load_state_dict``), never per step."""

    def __init__(self) -> None:
        self._seed = int.from_bytes(os.urandom(7), "big")
        self._vectors: dict[tuple[int, str], torch.Tensor] = {}

    def of(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            parts = []
            for p in params:
                key = (p.numel(), str(p.device))
                vector = self._vectors.get(key)
                if vector is None:
                    generator = torch.Generator().manual_seed(self._seed + p.numel())
                    vector = self._vectors[key] = torch.randn(p.numel(), generator=generator).to(p.device)
                parts.append((p.detach().reshape(-1).float() * vector).sum())
            return torch.stack(parts)


# The code of torch's wrapper of an optimizer class's ``step`` (``Optimizer.profile_hook_step``), which
# runs the step hooks: a subclass's ``step`` and its parent's both carry one once both classes were
# instantiated, so ``super().step()`` runs the hooks a second time inside the same step.
_STEP_WRAPPER = torch.optim.Optimizer.profile_hook_step(lambda *args, **kwargs: None).__code__


def _inner_step(optimizer: torch.optim.Optimizer) -> bool:
    """Whether this hook runs inside a step of ``optimizer`` that another of its steps wraps."""
    frame: Any = sys._getframe(1)
    found = 0
    while frame is not None:
        if frame.f_code is _STEP_WRAPPER and frame.f_locals.get("self") is optimizer:
            found += 1
            if found > 1:
                return True
        frame = frame.f_back
    return False


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _items(output: Any) -> list[Any] | None:
    """The parts of a tuple, list or dict output (``{"logits": ...}``), at most MAX_OUTPUTS; None for another."""
    if isinstance(output, Mapping):
        return list(output.values())[:MAX_OUTPUTS]
    return list(output[:MAX_OUTPUTS]) if isinstance(output, (tuple, list)) else None


def class_scores(output: Any, batch: int, classes: int) -> torch.Tensor | None:
    """The tensor of a model's output holding one score per class per row: the output itself, or the
    first such tensor of a tuple, list or dict (the trusted evaluator's ``class_scores`` picks the same)."""
    items = _items(output)
    for item in [output] if items is None else items:
        if isinstance(item, torch.Tensor) and item.dim() == 2 and tuple(item.shape) == (batch, classes):
            return item
    return None


def graded_outputs(output: Any, batch: int | None) -> list[torch.Tensor]:
    """The tensors of a call's output a gradient may reach, one row per input row: the output
    itself, or each tensor of a tuple, list or dict (a model returning ``(probabilities, logits)`` is
    trained through either)."""
    items = _items(output) or [output]
    return [t for t in items if isinstance(t, torch.Tensor) and t.requires_grad and t.dim() > 0
            and (batch is None or t.shape[0] == batch)]


# The arithmetic a pass's scores were computed in, coarsest last: the trusted side bounds by it how far
# its own float32 run of the same graph may honestly differ from the kernel's.
PRECISIONS = ("float32", "tf32", "float16", "bfloat16")


def precision(output: torch.Tensor) -> str:
    """The coarsest arithmetic that made ``output``: the student's autocast on its device, its own
    dtype (a half-precision model), TF32 or reduced-precision float32 matrix products."""
    device = output.device.type
    found = [str(dtype).removeprefix("torch.") for dtype in (student_autocast(device), output.dtype) if dtype is not None]
    if torch.get_float32_matmul_precision() != "highest" or (device == "cuda" and torch.backends.cuda.matmul.allow_tf32):
        found.append("tf32" if device == "cuda" else "bfloat16")  # reduced float32 products on a CPU use bfloat16
    return max((f for f in found if f in PRECISIONS), key=PRECISIONS.index, default="float32")


def predict(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The class per row and the softmax of the output there, copied off the device in one transfer."""
    output = output.detach()
    both = torch.stack([output.argmax(1).to(torch.float32), torch.softmax(output.float(), 1).amax(1)]).cpu()
    return both[0].to(torch.long), both[1]


def curve(points: list[tuple[torch.Tensor | None, float | None]], most: int = MAX_CURVE_POINTS) -> dict[str, Any]:
    """An optimizer's loss and learning rate per step, as means over ``every`` steps (at most ``most`` points)."""
    every = max(1, -(-len(points) // most))
    values = [loss for loss, _ in points if loss is not None]
    losses = iter(torch.stack([v.float().cpu() for v in values]).tolist() if values else [])  # one copy off the device
    flat = [(next(losses) if loss is not None else None, lr) for loss, lr in points]

    def means(column: int) -> list[float | None]:
        out: list[float | None] = []
        for start in range(0, len(flat), every):
            chunk = [float(v) for v in (row[column] for row in flat[start:start + every]) if v is not None]
            out.append(sum(chunk) / len(chunk) if chunk else None)
        return out

    return {"every": every, "loss": means(0), "lr": means(1)}


class Recorder:
    def __init__(self, index: ImageIndex, classes: int, serials: Serials) -> None:
        self.index = index
        self.classes = classes
        self.serials = serials
        self.internal = False  # the probe's own calls at export are not the notebook's
        self.steps = 0
        self.clock = 0  # counts training batches, to tell which pass an optimizer step follows
        self.test_batches = 0
        self.train_passes: list[TrainPass] = []
        self.test_passes: list[TestPass] = []
        self.optimizers: dict[int, dict[str, Any]] = {}
        self.loads: list[dict[str, Any]] = []
        self.modules: dict[int, weakref.ref[torch.nn.Module]] = {}
        self.samples: dict[int, torch.Tensor] = {}  # input module serial -> two rows of its last test input
        self.loader: TrainPass | None = None  # the training DataLoader pass that last yielded a batch
        self.yielded: Any = None  # the first tensor of that batch
        self._fetches: dict[int, int] = {}  # thread -> DataLoader batches it is building (their transforms are modules)
        self.unwatched_steps = 0  # optimizer steps taken inside a DataLoader's fetch (training hidden in a dataset)
        self.lost_steps = 0  # steps that began and were never seen to end (before_step)
        self.mirrored: dict[int, tuple[int, torch.Tensor]] = {}  # module -> (step, test images seen flipped)
        self._upright: dict[int, tuple[int, set[int]]] = {}  # module -> (its last test batch, the images in it)
        self._stepping: set[int] = set()  # optimizers whose step began and whose end is not seen yet
        self._updates: Counter[int] = Counter()  # optimizer -> torch updates run inside its current counted step
        self._beyond: Counter[int] = Counter()  # optimizer -> updates beyond one a counted step (or outside any)
        self.test_steps = 0  # optimizer steps right after test images went through the model with grad in train mode
        self._test_grad = False
        self._test_since_step = False
        self._undecided_draw: Draw | None = None
        self._waiting: list[Draw] = []  # draws of calls with gradients whose backward is not known yet
        self._hook_draw: Draw | None = None  # the draw whose call's output gets a gradient hook
        self._content: dict[bool, TrainPass | None] = {True: None, False: None}
        self._open: dict[tuple[int, int], TestPass] = {}
        self._depth = 0
        self._pending: tuple[Match, int] | None = None
        self._pending_input: torch.Tensor | None = None
        # The model's last evaluation (eval mode or no grad) over rows the content key did not name: a test
        # pass under a per-pixel preprocessing looks like this; the trusted side verifies it (capture.py).
        self.evaluation = Evaluation(-1, -1)
        self._eval_input: tuple[int, torch.Tensor] | None = None
        self.on_complete: Any = None  # called with a test pass as it completes (the capture's snapshot)
        self._pending_train: Match | None = None  # training rows evaluated without training: their output is awaited
        self._loss: torch.Tensor | None = None  # the last loss: a scalar with a gradient from an outermost call
        self.curves: dict[int, list[tuple[torch.Tensor | None, float | None]]] = {}  # optimizer -> (loss, lr) per step
        # Test images in a training call, per row: whether their gradient reached the model is known in backward.
        self._watch_test: Match | None = None
        self._test_backward: list[int] = []  # test images whose rows got a gradient since the last step
        self.test_trained = torch.zeros(index.sizes.get("test") or 0, dtype=torch.bool)  # ... and a step followed
        self.test_rows_trained = 0
        self.per_pixel = PerPixel(index)  # training rows standardized per pixel position
        self._learning: list[torch.Tensor] = []  # training calls no key read while PerPixel learns its map
        self._learned = False  # PerPixel read a whole batch (or gave up): nothing is kept any more
        self._learning_steps: Counter[int] = Counter()  # optimizer -> unattributed steps after them
        self._spot = random.Random(os.urandom(16))  # which loader batches are looked at: not the notebook's seed
        self._blind = False  # the outermost call had no positional input: the first call inside is looked at
        self.claimed: list[int] | None = None  # the training indices the last yielded batch's sampler named
        self.loader_mismatch = 0  # yielded batches whose images were not those named
        self.stepped_rows = torch.zeros(index.sizes.get("train") or 0, dtype=torch.bool)
        self.stepped_exact = torch.zeros_like(self.stepped_rows)  # of those, the rows that were their images
        self.unread_rows = 0  # rows of training calls with gradients that no image's key named (augmented, rounded)
        # Since the last optimizer step: training rows recorded as trained, rows recorded as only evaluated,
        # and each DataLoader pass that yielded, with the indices its batches named (which one the step took).
        self._trained_rows: set[int] = set()
        self._trained_exact: set[int] = set()  # of those, the rows that were their images pixel by pixel
        self._evaluated_rows: set[int] = set()
        self._yielding: list[tuple[TrainPass, set[int]]] = []
        self._fed_rows: set[int] = set()  # rows of yielded batches fed whole to a training call, since the last step
        self.captures: list[tuple[tuple[int, ...], int, int, torch.Tensor]] = []  # (param serials, step, event, fingerprint)
        self.events = 0  # captures and loads, in order (several may fall between two steps)
        self.fingerprints = Fingerprints()
        self.continuity = Continuity()  # every change of the stepped weights explained by a step or a load
        self._first_grads: dict[int, Any] = {}  # parameter id -> its hook awaiting a first gradient
        self.gradients = LinearGradients()  # every Linear weight's gradient explained by its calls
        self._on_linear = guarded(self.gradients.on_call)
        self._carrier_at = 0  # the depth of the call being read, whose output carries its rows' gradient

    # -- DataLoader fetches, per thread ------------------------------------------------------------
    @property
    def fetching(self) -> int:
        """How many batches this thread is building now (a background prefetch thread's do not hide
        the main thread's model calls)."""
        return self._fetches.get(threading.get_ident(), 0)

    def begin_fetch(self) -> None:
        thread = threading.get_ident()
        self._fetches[thread] = self._fetches.get(thread, 0) + 1

    def end_fetch(self) -> None:
        thread = threading.get_ident()
        left = self._fetches.get(thread, 0) - 1
        if left > 0:
            self._fetches[thread] = left
        else:
            self._fetches.pop(thread, None)

    # -- module calls ------------------------------------------------------------------------
    def module_serial(self, module: torch.nn.Module) -> int:
        serial = self.serials.of(module)
        self.modules.setdefault(serial, weakref.ref(module))
        return serial

    def before_call(self, module: torch.nn.Module, args: Any) -> None:
        if self.fetching:
            return  # a dataset's transform, not the model
        self._depth += 1
        if self.internal:
            return
        if self._depth == 1:
            # Called with keyword arguments only, or with something else than image rows first (a
            # wrapper taking indices into a tensor of images): the first call inside is looked at.
            self._blind = not args or image_rows(args[0]) is None
            if self._blind:
                return
        elif not (self._blind and args):
            return
        self._blind = False
        if torch.is_grad_enabled() and image_rows(args[0]) is not None:
            self._carrier_at = self._depth  # the call read: a pass reaching its output carries the layers' gradients
        stepping = torch.is_grad_enabled() and module.training
        if stepping and args[0] is self.yielded:
            self._settle_draw(followed_by_step=False)  # a new batch came before any step
            self._fed_rows.update(self.claimed or ())  # not read, but named by the loader that yielded it
            # The batch a training DataLoader just yielded: its pass records it. Its rows are looked at
            # only now and then (a secret one batch in SPOT_CHECK), for test images a wrapper Dataset
            # may slip in and for images other than those its sampler named, and at every batch once
            # either was seen.
            if self.test_rows_trained or self.loader_mismatch or self._spot.randrange(SPOT_CHECK) == 0:
                seen = self.index.matches(args[0])
                if "test" in seen:
                    self._watch_test = self.index.verified(seen["test"], args[0])
                self._check_claimed(seen.get("train"))
            return
        found = self.index.matches(args[0])
        if "test" in found and found["test"].flipped and not stepping:
            self._mirror(module, found["test"])
        # Rows flipped left to right are another view of a test image (test-time augmentation), not its prediction.
        match = self.index.majority({split: m for split, item in found.items() if (m := item.upright()) is not None})
        if torch.is_grad_enabled() and "test" in found:  # trained on only if their rows' gradient reaches the model
            self._watch_test = self.index.verified(found["test"], args[0])
            mostly = self._watch_test is not None and 2 * len(self._watch_test.positions) >= self._watch_test.batch
            self._test_since_step = self._test_since_step or (stepping and mostly)  # either way up
        if match is not None and match.split == "test":
            serial = self.module_serial(module)
            self._pending, self._pending_train = (match, serial), None
            self._pending_input = args[0].detach().clone()  # the exact rows this call fed the model
            self.samples[serial] = self._pending_input[:2]
            self._test_grad = stepping
            return
        train = found.get("train")
        exact = self.index.verified(train, args[0]) if train is not None else None
        train = train or (self._per_pixel(args[0], stepping) if not found else None)
        if train is not None:  # training images, however few among the rows: a draw of the split
            if stepping:
                named = {p for m in found.values() for p in m.positions} if found else set(train.positions)
                self.unread_rows += train.batch - len(named)
            self._pending = None
            self._train_rows(train, stepping, exact)
            self._pending_train = None if stepping else train  # a validation batch: its predictions follow
            return
        self._maybe_evaluation(module, args[0], stepping)
        batch = args[0].shape[0] if isinstance(args[0], torch.Tensor) and args[0].dim() > 0 else None
        if self._pending is not None and batch != self._pending[0].batch:
            self._pending = None  # another computation: the test batch's output will not come
        if self._pending_train is not None and batch != self._pending_train.batch:
            self._pending_train = None

    def after_call(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self.fetching:
            return
        if isinstance(module, torch.nn.Linear) and not self.internal:
            self._on_linear(module, args, output, self.serials.of)  # its own guard: the bookkeeping below runs
        self._depth = max(0, self._depth - 1)
        if self._carrier_at and self._depth + 1 == self._carrier_at:
            self._carrier_at = 0
            if not self.internal:
                hook = self.gradients.carrier(module)
                for tensor in graded_outputs(output, None):
                    tensor.register_hook(hook)
        if (not self._depth and not self.internal and isinstance(output, torch.Tensor)
                and output.dim() == 0 and output.requires_grad):
            self._loss = output.detach()  # a loss module's value; kept on its device, read once at export
        if not self._depth and self._watch_test is not None and not self.internal:
            self._watch_gradient(output)
        if not self._depth and self._hook_draw is not None and not self.internal:
            self._hook_gradient(output)
        if not self._depth and self._eval_input is not None and not self.internal:
            self._evaluated(module, output)
        if self._depth or (self._pending is None and self._pending_train is None) or self.internal:
            return
        awaited = self._pending[0] if self._pending is not None else self._pending_train
        assert awaited is not None
        output = class_scores(output, awaited.batch, self.classes)
        if output is None:
            return
        if self._pending is not None:
            match, first = self._pending
            self._pending = None
            classes, confidence = predict(output)
            self._test_rows((first, self.module_serial(module)), match, classes, confidence, precision(output))
        else:
            self._pending_train = None
            self._valid_rows(awaited, output.detach().argmax(1).cpu())

    def _check_claimed(self, train: Match | None) -> None:
        """The training images a yielded batch holds are those its sampler named (a Dataset wrapper
        that remaps indices breaks that); only rows read whole count (augmented ones are not read)."""
        if train is None or self.claimed is None or 2 * len(train.positions) < train.batch:
            return
        held = {group[0] for group in train.indices if len(group) == 1}
        if not held <= set(self.claimed):
            self.loader_mismatch += 1

    def _per_pixel(self, value: Any, stepping: bool) -> Match | None:
        """Rows standardized per pixel position (content.PerPixel). Until its map reads a whole batch,
        the training calls it could not read at all are kept (a few batches); then they are read
        again and, when all are training images, the steps that followed them count."""
        match = self.per_pixel.match(value, stepping)
        if self._learned or not stepping:
            return match
        if match is None:
            if not self.per_pixel.hits and self.per_pixel.tries >= self.per_pixel.TRIES:  # it gave up
                self._learned, self._learning, self._learning_steps = True, [], Counter()
                return None
            kept = sum(rows.shape[0] for rows in self._learning)
            if isinstance(value, torch.Tensor) and kept + value.shape[0] <= MAX_LEARNING_ROWS:
                self._learning.append(value.detach().clone())
            return None
        if len(match.positions) < match.batch:
            return match  # read in part: the map still has positions to learn
        again = [self.per_pixel.match(rows, False) for rows in self._learning]
        if again and all(m is not None for m in again):
            self._settle_draw(followed_by_step=False)
            for found in again:
                assert found is not None
                indices = [group[0] for group in found.indices if len(group) == 1]
                self._undecided_draw = Draw(indices, True, loose=frozenset(indices))  # read per pixel, not per image
                self._settle_draw(followed_by_step=True)
                self._trained_rows.clear()
                self._trained_exact.clear()
            track = self._content[True]
            for serial, count in self._learning_steps.items():
                entry = self.optimizers.get(serial)
                if entry is not None and track is not None:
                    entry["unattributed"] = max(0, entry.get("unattributed", 0) - count)
                    track.steps[serial] += count
        self._learned, self._learning, self._learning_steps = True, [], Counter()
        return match

    def _watch_gradient(self, output: Any) -> None:
        """Test images went into a call with gradients in training mode: a hook on the call's output
        tells, in backward, which of their rows' outputs got a gradient (trained the model)."""
        watch, self._watch_test = self._watch_test, None
        assert watch is not None
        positions = torch.tensor(watch.positions, dtype=torch.long)
        images = [group[0] if len(group) == 1 else -1 for group in watch.indices]

        def reached(grad: torch.Tensor) -> None:
            rows = grad.detach()[positions.to(grad.device)].reshape(len(images), -1).ne(0).any(1).cpu().tolist()
            self._test_backward.extend(i for i, hit in zip(images, rows) if hit and i >= 0)

        hook = guarded(reached)
        for tensor in graded_outputs(output, watch.batch):
            tensor.register_hook(hook)

    def _mirror(self, module: torch.nn.Module, match: Match) -> None:
        """Test images a module evaluated flipped left to right since the last optimizer step, beside
        their upright rows (in the same call, or the module's test batch just before): the other view
        of test-time augmentation. A separate pass over mirror images (a robustness check) is none."""
        serial = self.module_serial(module)
        step, seen = self.mirrored.get(serial, (-1, None))
        if step != self.steps or seen is None:
            seen = torch.zeros(self.index.sizes["test"], dtype=torch.bool)
            self.mirrored[serial] = (self.steps, seen)
        beside = {group[0] for p, group in zip(match.positions, match.indices) if p not in match.flipped}
        batch, upright = self._upright.get(serial, (-1, set()))
        if batch == self.test_batches:
            beside |= upright
        turned = [group[0] for p, group in zip(match.positions, match.indices)
                  if p in match.flipped and len(group) == 1 and group[0] in beside]
        seen[torch.tensor(turned, dtype=torch.long)] = True

    def mirrored_all(self, serial: int, step: int) -> bool:
        """Whether the module evaluated every test image flipped, with the weights of optimizer step ``step``."""
        at, seen = self.mirrored.get(serial, (-1, None))
        return at == step and seen is not None and bool(seen.all())

    def _maybe_evaluation(self, module: torch.nn.Module, value: Any, stepping: bool) -> None:
        """Keep an evaluation call's input (rows of an image's size) until its output is known."""
        self._eval_input = None
        if stepping or not isinstance(value, torch.Tensor) or value.dim() < 2 or value.shape[0] == 0:
            return
        if not value.is_floating_point() or value[0].numel() != self.index.pixels:
            return
        self._eval_input = (self.module_serial(module), value.detach().clone())

    def _evaluated(self, module: torch.nn.Module, output: Any) -> None:
        serial, rows = self._eval_input  # type: ignore[misc]
        self._eval_input = None
        output = class_scores(output, rows.shape[0], self.classes)
        if self.module_serial(module) != serial or output is None:
            return
        if self.evaluation.serial != serial or self.evaluation.step != self.steps:
            self.evaluation = Evaluation(serial, self.steps)
        self.evaluation.add(rows, predict(output)[0].to(torch.int8), precision(output))

    def _test_rows(self, predictor: tuple[int, int], match: Match, predictions: torch.Tensor,
                   confidence: torch.Tensor, arithmetic: str = "float32") -> None:
        size = self.index.sizes["test"]
        current = self._open.get(predictor)
        singles = torch.tensor([group[0] for group in match.indices if len(group) == 1], dtype=torch.long)
        if (current is None or current.rows >= size or current.end_step != self.steps
                or bool((current.predictions[singles] >= 0).any())):
            current = TestPass(predictor, size, self.steps)
            current.first_batch = self.test_batches + 1
            self._open[predictor] = current
            self.test_passes.append(current)
        rows = torch.tensor([p for p, group in zip(match.positions, match.indices) for _ in group], dtype=torch.long)
        indices = torch.tensor([i for group in match.indices for i in group], dtype=torch.long)
        current.predictions[indices] = predictions[rows].to(torch.int8)
        current.confidence[indices] = confidence[rows].to(torch.float16)
        current.rows += len(match.positions)
        if self._pending_input is not None:
            current.inputs.append(self._pending_input)
            current.row_classes.append(predictions.to(torch.int8))
            self._pending_input = None
        current.precision = max(current.precision, arithmetic, key=PRECISIONS.index)
        current.batches += 1
        self.test_batches += 1
        current.last_batch = self.test_batches
        self._upright[predictor[0]] = (self.test_batches, set(indices.tolist()))
        current.end_step = self.steps
        self._test_since_step = self._test_since_step or self._test_grad
        if bool((current.predictions >= 0).all()):
            current.complete = True
            del self._open[predictor]
            for other in self.test_passes:  # only the last complete pass keeps what the capture needs
                if other is not current and other.complete and other.inputs:
                    other.inputs, other.row_classes, other.snapshot = [], [], None
            if self.on_complete is not None:
                self.on_complete(current)

    def _train_rows(self, match: Match, stepping: bool, exact: Match | None = None) -> None:
        """Training images reached the model: whether they trained it is known by what follows (a
        gradient reaching their rows, or an optimizer step). ``exact``: the rows that are their images
        pixel by pixel; the others (named by their key alone) are drawn loosely."""
        self._settle_draw(followed_by_step=False)
        # Images sharing one key (duplicates, rare collisions) are left out: which one it was is unknown.
        graded = torch.is_grad_enabled()  # in either mode: a model trained in eval mode still trains
        indices = [group[0] for group in match.indices if len(group) == 1]
        sure = {group[0] for group in exact.indices if len(group) == 1} if exact is not None else set()
        draw = Draw(indices, False, waits=graded, loose=frozenset(indices) - sure)
        self._undecided_draw = draw
        self._hook_draw = draw if graded else None

    def _valid_rows(self, match: Match, predictions: torch.Tensor) -> None:
        """The model's classes for the training rows it just evaluated (the grader scores them)."""
        draw = self._undecided_draw
        if draw is None:
            return
        rows = torch.tensor([p for p, group in zip(match.positions, match.indices) if len(group) == 1], dtype=torch.long)
        if len(rows) == len(draw.indices):
            draw.predictions = predictions[rows]

    def _hook_gradient(self, output: Any) -> None:
        draw, self._hook_draw = self._hook_draw, None
        if draw is None:
            return
        hook = guarded(draw.reached)
        for tensor in graded_outputs(output, None):
            tensor.register_hook(hook)
            draw.hooked = True

    def _settle_draw(self, followed_by_step: bool, final: bool = False) -> None:
        """Whether the last draw trained the model (``Draw.trains``); one with gradients whose
        backward has not come yet waits for the next step (two forward calls before one backward),
        and an evaluation with gradients on that never gets one (a validation pass without no_grad)
        trained nothing. ``final``: the record is written, nothing waits any longer."""
        draw, self._undecided_draw = self._undecided_draw, None
        if followed_by_step or draw is None or final:
            for waiting in self._waiting:
                self._record_draw(waiting, waiting.trains(followed_by_step))
            self._waiting = []
        if draw is None:
            return
        if followed_by_step or final or draw.trained or not draw.waits:
            self._record_draw(draw, draw.trains(followed_by_step))
        else:
            self._waiting.append(draw)

    def _record_draw(self, draw: Draw, training: bool) -> None:
        indices, predictions = draw.indices, draw.predictions
        if training and indices:  # rows that trained it, however the batch was built
            self.stepped_rows[torch.tensor(indices, dtype=torch.long)] = True
            self.stepped_exact[torch.tensor([i for i in indices if i not in draw.loose], dtype=torch.long)] = True
            # One step's rows are one draw, however many calls fed them (a Flatten or a Normalize module
            # called before the model sees the batch too): a pass ends only when an image comes back
            # after a later step.
            indices = [i for i in indices if i not in self._trained_rows]
            if not indices:
                return
            self._trained_rows.update(indices)
            self._trained_exact.update(i for i in indices if i not in draw.loose)
        elif not training:
            self._evaluated_rows.update(indices)
        current = self._content[training]
        if current is None or bool(current.drawn[torch.tensor(indices, dtype=torch.long)].any()):
            if current is not None:
                current.complete = True
            current = TrainPass("content", self.index.sizes["train"], training, self.steps)
            self._content[training] = current
            self.train_passes.append(current)
        self.clock += 1
        current.draw(indices, self.clock, None if training else predictions, draw.loose)

    # -- DataLoader passes over the training set -------------------------------------------------
    def start_loader_pass(self, size: int) -> TrainPass:
        track = TrainPass("loader", size, True, self.steps)
        self.train_passes.append(track)
        return track

    def loader_batch(self, track: TrainPass, indices: list[int], batch: Any) -> None:
        self.clock += 1
        track.draw(indices, self.clock)
        self.loader = track
        self.claimed = indices
        named = next((claimed for other, claimed in self._yielding if other is track), None)
        if named is None:
            named = set()
            self._yielding.append((track, named))
        named.update(indices)
        first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
        self.yielded = first if isinstance(first, torch.Tensor) else None

    # -- optimizers and checkpoints -----------------------------------------------------------
    def before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """A step begins (the global pre-hook runs before any of the optimizer's own hooks): one of the
        same optimizer that began before and never reached ``on_step`` (an optimizer's own post-hook
        raised first) is lost. (A wrapper such as Lookahead steps another optimizer inside its own.)
        The hooks of a parent class's step inside a subclass's (``super().step()``) are the same step."""
        if self.internal or _inner_step(optimizer):
            return
        serial = self.serials.of(optimizer)
        self.lost_steps += serial in self._stepping
        self._stepping.add(serial)
        self._updates[serial] = 0
        # An optimizer's own pre-hooks run after this one, where a change of the weights would be
        # taken for the step's: one that has them is counted as changed outside the steps.
        own_hooks = bool(getattr(optimizer, "_optimizer_step_pre_hooks", None))
        params = _params(optimizer)
        self.continuity.check(serial, params, own_hooks=own_hooks)
        self.gradients.step_begins(params)

    def after_update(self, optimizer: torch.optim.Optimizer) -> None:
        """Right after the update itself (torch's ``_optimizer_step_code``), before any post-hook of
        the optimizer's own could change the weights: their values now are explained."""
        if self.internal or _inner_step(optimizer):
            return
        params = _params(optimizer)
        self.continuity.keep(self.serials.of(optimizer), params)
        self.gradients.update_done(params)
        for p in params:  # counted steps explain them from now on: no more work per backward
            handle = self._first_grads.pop(id(p), None)
            if handle is not None:
                handle.remove()

    def on_init(self, tensor: Any) -> None:
        """A ``torch.nn.init`` function filled ``tensor``: the change it made is explained."""
        if not self.internal and isinstance(tensor, torch.Tensor):
            self.continuity.reinitialised(tensor)

    def on_update(self, optimizer: torch.optim.Optimizer) -> None:
        """A torch optimizer class's own update began (``Adam.step`` itself, however it was reached:
        a subclass's ``super().step()``, ``step.__wrapped__``). A counted step runs one; a second
        inside it, or one outside any, is an update the grader did not count."""
        if self.internal:
            return
        serial = self.serials.of(optimizer)
        if serial in self._stepping:
            self._updates[serial] += 1
            self._beyond[serial] += self._updates[serial] > 1
        else:
            self._beyond[serial] += 1

    def on_parameter(self, module: Any, name: str, param: Any) -> None:
        """A parameter was registered on a module: the first gradient computed for it (by
        ``backward()`` or ``torch.autograd.grad``, which accumulates nothing) fixes its initial values
        (``Continuity.first_backward``: training before the first counted step is a change)."""
        if self.internal or not isinstance(param, torch.Tensor) or not param.requires_grad:
            return
        self.gradients.on_parameter(module, name, param, self.serials.of)
        if not param.is_floating_point() or id(param) in self._first_grads:
            return
        first, ref = guarded(self.continuity.first_backward), weakref.ref(param)

        def hook(grad: torch.Tensor) -> None:
            if (p := ref()) is not None:
                first(p)

        self._first_grads[id(param)] = param.register_hook(hook)

    def on_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.internal or _inner_step(optimizer):
            return
        serial = self.serials.of(optimizer)
        self._stepping.discard(serial)
        self._updates.pop(serial, None)
        if self.fetching:
            self.unwatched_steps += 1  # its module calls were not watched: say so
        self._settle_draw(followed_by_step=True)
        self.gradients.on_step()
        if self._test_since_step:
            self.test_steps += 1
            self._test_since_step = False
        if self._test_backward:
            self.test_rows_trained += len(self._test_backward)
            self.test_trained[torch.tensor(self._test_backward, dtype=torch.long)] = True
            self._test_backward = []
        self.steps += 1
        entry = self.optimizers.get(serial)
        count = sum(len(group["params"]) for group in optimizer.param_groups)
        if entry is None or len(entry["params"]) != count:
            params = [self.serials.of(p) for group in optimizer.param_groups for p in group["params"]]
            entry = self.optimizers.setdefault(serial, {"first_step": self.steps, "steps": 0})
            entry["params"] = params
        entry["steps"] += 1
        entry["last_step"] = self.steps
        lr = optimizer.param_groups[0].get("lr") if optimizer.param_groups else None
        self.curves.setdefault(serial, []).append((self._loss, float(lr) if isinstance(lr, (int, float, torch.Tensor)) else None))
        self._loss = None
        since = entry.get("clock", 0)  # a step counts for the passes that drew a batch since its previous step
        loader, aside = self._stepping_loader(since)
        carried = []
        for track in (loader, self._content[True]):
            if track is not None and track.last_batch > since:
                track.steps[serial] += 1
                track.end_step = self.steps
                carried.append(track)
        if carried and self.loader is not None and (loader is None or aside):
            entry["beside"] = entry.get("beside", 0) + 1  # images fed beside a DataLoader's batches, not one of them
        if not carried and any(p.grad is not None for group in optimizer.param_groups for p in group["params"]):
            entry["unattributed"] = entry.get("unattributed", 0) + 1  # no batch of training images drawn since its last step
            if self._learning:
                self._learning_steps[serial] += 1  # may still count once the per-pixel map reads those rows
        entry["clock"] = self.clock
        self._trained_rows, self._trained_exact, self._evaluated_rows = set(), set(), set()
        self._yielding, self._fed_rows = [], set()

    def _stepping_loader(self, since: int) -> tuple[TrainPass | None, bool]:
        """The DataLoader pass whose batch a step trained on, among those that yielded since the
        optimizer's previous step (``zip(train_loader, valid_loader)`` yields two): the one whose rows
        were trained (or fed, as it yielded them, to a training call), else the last whose rows were not only evaluated (else none). And
        whether the step trained mostly on rows it did not yield (images fed beside its batches,
        perhaps with a second loader yielding alongside to hide them): rows named by their key alone
        (a mixup blend whose key happens to be another image's) are no evidence of that."""
        candidates = [(track, named) for track, named in self._yielding if track.last_batch > since]
        if not candidates:
            last = self.loader
            return (last, False) if last is not None and last.last_batch > since else (None, False)
        trained = self._trained_rows | self._fed_rows
        track, named = max(reversed(candidates), key=lambda c: len(c[1] & trained))
        if not named & trained:
            kept = [c for c in candidates if not c[1] <= self._evaluated_rows]
            if not kept:
                return None, False  # a validation loader's batches, evaluated only: the step trained on others
            track, named = kept[-1]
        beside = (self._trained_exact | self._fed_rows) - named
        return track, len(beside) > len(trained & named)

    def on_capture(self, module: torch.nn.Module) -> None:
        """A module's state was taken (``state_dict()``): which step it shows, should it be loaded back."""
        params = list(module.parameters())
        if params:
            self.events += 1
            self.captures.append((tuple(self.serials.of(p) for p in params), self.steps, self.events, self.fingerprints.of(params)))
            del self.captures[:-MAX_CAPTURES]

    def on_load(self, module: torch.nn.Module) -> None:
        """Weights loaded into a module; ``restored``: the step of the captured state they equal, if any."""
        params = list(module.parameters())
        restored: tuple[int, int] | None = None
        source: int | None = None  # another model's first parameter, when the state was taken from it (a warm start)
        if params:
            key, now = tuple(self.serials.of(p) for p in params), self.fingerprints.of(params)
            same = [c for c in reversed(self.captures) if c[0] == key] + [c for c in reversed(self.captures) if c[0] != key]
            for serials, step, event, then in same:
                if then.shape == now.shape and torch.equal(then, now.to(then.device)):
                    restored, source = (step, event), (serials[0] if serials != key else None)
                    break
        # Within the hull of what the counted steps made (a checkpoint, an average of the run's states),
        # or weights made elsewhere; None before any step.
        explained = self.continuity.explains(params)
        self.continuity.loaded(params)
        self.events += 1
        self.loads.append({"param": self.serials.of(params[0]) if params else None, "step": self.steps,
                           "params": [self.serials.of(p) for p in params[:MAX_LOAD_PARAMS]],
                           "test_batch": self.test_batches, "event": self.events, "from_param": source,
                           "restored": restored[0] if restored else None, "restored_event": restored[1] if restored else None,
                           "explained": explained})

    # -- export -------------------------------------------------------------------------------
    def export(self) -> dict[str, Any]:
        self._settle_draw(followed_by_step=False, final=True)
        complete = [p for p in self.test_passes if p.complete]
        keep = set(map(id, self.test_passes[-MAX_EXPORTED_PREDICTIONS:] + complete[-MAX_EXPORTED_PREDICTIONS:]))
        moved = self.continuity.export()
        for serial, entry in self.optimizers.items():
            entry["moved"] = moved.between.get(serial, 0) + self._beyond.get(serial, 0)
            entry["moved_at_end"] = serial in moved.after_last_step
        return {
            "test_steps": self.test_steps,
            "test_rows_trained": self.test_rows_trained,
            "test_images_trained": int(self.test_trained.sum()),
            "loader_mismatch": self.loader_mismatch,
            "stepped_rows": bitmap(self.stepped_rows),
            "stepped_loose": bitmap(self.stepped_rows & ~self.stepped_exact),
            "unread_rows": self.unread_rows,
            "unwatched_steps": self.unwatched_steps,
            "lost_steps": self.lost_steps + len(self._stepping),
            "steps": self.steps,
            "train_size": self.index.sizes.get("train"),
            "test_size": self.index.sizes.get("test"),
            "train_passes": [p.export() for p in self.train_passes[-2000:]],
            "test_passes": [p.export(id(p) in keep) for p in self.test_passes[-2000:]],
            "optimizers": {str(k): {**v, "curve": curve(self.curves.get(k, []))} for k, v in self.optimizers.items()},
            "loads": self.loads[-1000:],
            "gradients": self.gradients.export(),
        }
