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

``Recorder`` is the hooks' one entry (runtime.py installs them): it reads each module call once
(its depth, the rows it was given, which dataset images they are) and hands the observers the
events of events.py; the observers (training.py, predictions.py, steps.py, checkpoints.py) own
what they record and what they wait for.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from grader.probe.checkpoints import Checkpoints
from grader.probe.content import ImageIndex, image_rows
from grader.probe.events import EVENTS, Call, Observer, Shared, SinceStep
from grader.probe.guard import guarded
from grader.probe.identity import Serials
from grader.probe.passes import TrainPass
from grader.probe.predictions import Evaluations, TestPasses
from grader.probe.steps import Optimizers, Weights, inner_step
from grader.probe.training import Draws, Loaders, TestTraining


@dataclass(frozen=True, kw_only=True)
class Observers:
    """The recorder's observers, in the order each event reaches them: where one reads what another
    wrote, the writer comes first (``Draws`` sets ``Call.train`` for the prediction observers,
    settles a draw before the step is counted; ``Weights`` adds each optimizer's moves before
    ``Optimizers`` writes the table)."""

    weights: Weights
    test_training: TestTraining
    draws: Draws
    loaders: Loaders
    optimizers: Optimizers
    evaluations: Evaluations
    tests: TestPasses
    checkpoints: Checkpoints

    @classmethod
    def of(cls, shared: Shared) -> Observers:
        weights, test_training, draws = Weights(shared), TestTraining(shared), Draws(shared)
        loaders = Loaders(shared, test_training)
        return cls(
            weights=weights,
            test_training=test_training,
            draws=draws,
            loaders=loaders,
            optimizers=Optimizers(shared, draws, loaders),
            evaluations=Evaluations(shared),
            tests=TestPasses(shared, test_training),
            checkpoints=Checkpoints(shared, weights.continuity),
        )

    def hooks(self) -> dict[str, tuple[Any, ...]]:
        """Each event's handlers, bound once: the observers that implement it, in order."""
        ordered: list[Observer] = [getattr(self, field.name) for field in fields(self)]
        return {
            event: tuple(
                getattr(observer, event)
                for observer in ordered
                if getattr(type(observer), event) is not getattr(Observer, event)
            )
            for event in EVENTS
        }


class Recorder:
    """The hooks' entry: module calls, optimizer steps and updates, parameters registered and
    initialised, states taken and loaded, DataLoader batches, the export. It ignores the probe's
    own calls (``internal``) and a DataLoader's transforms (``Shared.fetching``)."""

    def __init__(self, index: ImageIndex, classes: int, serials: Serials) -> None:
        self.shared = Shared(index, classes, serials)
        self.observers = Observers.of(self.shared)
        self.internal = False  # the probe's own calls at export are not the notebook's
        self._hooks = self.observers.hooks()
        self._begins, self._ends = self._hooks["call_begins"], self._hooks["call_ends"]
        self._linear = guarded(self.observers.weights.gradients.on_call)
        self._depth = 0
        # the outermost call had no positional input: the first call inside is looked at
        self._blind = False
        # the depth of the call being read, whose output carries its rows' gradient
        self._carrier_at = 0

    # -- module calls ------------------------------------------------------------------------
    def before_call(self, module: torch.nn.Module, args: Any) -> None:
        if self.shared.fetching:
            return  # a dataset's transform, not the model
        self._depth += 1
        if self.internal:
            return
        if self._depth == 1:
            # Called with keyword arguments only, or with something else than image rows first (a
            # wrapper taking indices into a tensor of images): the first call inside is looked at.
            self._blind = not args or image_rows(args[0], self.shared.index.spec.values) is None
            if self._blind:
                return
        elif not (self._blind and args):
            return
        self._blind = False
        rows, graded = args[0], torch.is_grad_enabled()
        if graded and image_rows(rows, self.shared.index.spec.values) is not None:
            # the call read: a pass reaching its output carries the layers' gradients
            self._carrier_at = self._depth
        stepping = graded and module.training
        if stepping and rows is self.observers.loaders.yielded:
            for fed in self._hooks["batch_fed"]:
                fed(module, rows)
            return
        index = self.shared.index
        found = index.matches(rows)
        # Rows flipped left to right are another view of a test image (test-time augmentation), not
        # its prediction.
        upright = {split: m for split, item in found.items() if (m := item.upright()) is not None}
        match = index.majority(upright)
        call = Call(module, rows, graded, stepping, found, match)
        for begins in self._begins:
            begins(call)

    def after_call(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self.shared.fetching:
            return
        if isinstance(module, torch.nn.Linear) and not self.internal:
            # its own guard: the bookkeeping below runs
            self._linear(module, args, output, self.shared.serials.of)
        self._depth = depth = max(0, self._depth - 1)
        if self._carrier_at and depth + 1 == self._carrier_at:
            self._carrier_at = 0
            if not self.internal:
                self.observers.weights.carry(module, output)
        if depth or self.internal:
            return
        for ends in self._ends:
            ends(module, output)

    # -- optimizers ----------------------------------------------------------------------------
    def before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """A step begins (the global pre-hook runs before any of the optimizer's own hooks). (A
        wrapper such as Lookahead steps another optimizer inside its own.) The hooks of a parent
        class's step inside a subclass's (``super().step()``) are the same step."""
        if not self.internal and not inner_step(optimizer):
            self._fire("step_begins", optimizer, self.shared.serials.of(optimizer))

    def after_update(self, optimizer: torch.optim.Optimizer) -> None:
        """Right after the update itself (torch's ``_optimizer_step_code``), before any post-hook of
        the optimizer's own could change the weights."""
        if not self.internal and not inner_step(optimizer):
            self._fire("update_done", optimizer, self.shared.serials.of(optimizer))

    def on_update(self, optimizer: torch.optim.Optimizer) -> None:
        """A torch optimizer class's own update began (``Adam.step`` itself, however it was reached:
        a subclass's ``super().step()``, ``step.__wrapped__``)."""
        if not self.internal:
            self._fire("update_begins", optimizer, self.shared.serials.of(optimizer))

    def on_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.internal or inner_step(optimizer):
            return
        serial = self.shared.serials.of(optimizer)
        self._fire("step_taken", optimizer, serial)
        self.shared.steps += 1
        self._fire("step_counted", optimizer, serial)
        self.shared.since_step = SinceStep()

    # -- parameters, checkpoints, DataLoaders --------------------------------------------------
    def on_parameter(self, module: Any, name: str, param: Any) -> None:
        """A parameter was registered on a module."""
        if not self.internal and isinstance(param, torch.Tensor) and param.requires_grad:
            self._fire("parameter_added", module, name, param)

    def on_init(self, tensor: Any) -> None:
        """A ``torch.nn.init`` function filled ``tensor``: the change it made is explained."""
        if not self.internal and isinstance(tensor, torch.Tensor):
            self._fire("initialised", tensor)

    def on_capture(self, module: torch.nn.Module) -> None:
        self._fire("state_taken", module)

    def on_load(self, module: torch.nn.Module) -> None:
        self._fire("state_loaded", module)

    def start_loader_pass(self, size: int) -> TrainPass:
        return self.shared.open_pass("loader", size, True)

    def loader_batch(self, track: TrainPass, indices: list[int], batch: Any) -> None:
        self._fire("loader_batch", track, indices, batch)

    def begin_fetch(self) -> None:
        self.shared.begin_fetch()

    def end_fetch(self) -> None:
        self.shared.end_fetch()

    def _fire(self, event: str, *args: Any) -> None:
        for handler in self._hooks[event]:
            handler(*args)

    # -- export -------------------------------------------------------------------------------
    def export(self) -> dict[str, Any]:
        self._fire("finish")
        shared = self.shared
        sizes = shared.index.sizes
        record: dict[str, Any] = {
            "steps": shared.steps,
            "train_size": sizes.get("train"),
            "test_size": sizes.get("test"),
            "train_passes": [p.export() for p in shared.train_passes[-2000:]],
        }
        self._fire("export", record)
        return record
