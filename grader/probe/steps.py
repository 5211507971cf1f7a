"""Observers of the optimizer steps (events.py): each optimizer's counted steps, its loss and
learning-rate curve and the passes each step carried (``Optimizers``), and every change of the
stepped weights and of their gradients explained (``Weights``: continuity.py, gradients.py)."""

from __future__ import annotations

import sys
import weakref
from collections import Counter
from typing import Any

import torch

from grader.probe.continuity import Continuity
from grader.probe.events import Observer, Shared
from grader.probe.gradients import LinearGradients
from grader.probe.guard import guarded
from grader.probe.passes import curve, graded_outputs
from grader.probe.training import Draws, Loaders

# The code of torch's wrapper of an optimizer class's ``step`` (``Optimizer.profile_hook_step``),
# which runs the step hooks: a subclass's ``step`` and its parent's both carry one once both classes
# were instantiated, so ``super().step()`` runs the hooks a second time inside the same step.
_STEP_WRAPPER = torch.optim.Optimizer.profile_hook_step(lambda *args, **kwargs: None).__code__


def inner_step(optimizer: torch.optim.Optimizer) -> bool:
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


class Optimizers(Observer):
    """Each optimizer's entry in the record (``Shared.optimizers``): its parameters, its counted
    steps, its loss and learning rate per step, and which passes each step carried."""

    def __init__(self, shared: Shared, draws: Draws, loaders: Loaders) -> None:
        self.shared = shared
        self.draws = draws
        self.loaders = loaders
        # optimizer -> (loss, lr) per step
        self.curves: dict[int, list[tuple[torch.Tensor | None, float | None]]] = {}
        # the last loss: a scalar with a gradient from an outermost call
        self._loss: torch.Tensor | None = None
        # steps taken inside a DataLoader's fetch (training hidden in a dataset)
        self.unwatched_steps = 0

    def call_ends(self, module: torch.nn.Module, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 0 and output.requires_grad:
            # a loss module's value; kept on its device, read once at export
            self._loss = output.detach()

    def step_counted(self, optimizer: torch.optim.Optimizer, serial: int) -> None:
        shared = self.shared
        if shared.fetching:
            self.unwatched_steps += 1  # its module calls were not watched: say so
        entry = shared.optimizers.get(serial)
        count = sum(len(group["params"]) for group in optimizer.param_groups)
        if entry is None or len(entry["params"]) != count:
            params = [shared.serials.of(p) for p in _params(optimizer)]
            entry = shared.optimizers.setdefault(serial, {"first_step": shared.steps, "steps": 0})
            entry["params"] = params
        entry["steps"] += 1
        entry["last_step"] = shared.steps
        lr = optimizer.param_groups[0].get("lr") if optimizer.param_groups else None
        rate = float(lr) if isinstance(lr, (int, float, torch.Tensor)) else None
        self.curves.setdefault(serial, []).append((self._loss, rate))
        self._loss = None
        # a step counts for the passes that drew a batch since its previous step
        since = entry.get("clock", 0)
        loader, aside = self.loaders.stepping_loader(since)
        carried = []
        for track in (loader, self.draws.training_pass):
            if track is not None and track.last_batch > since:
                track.steps[serial] += 1
                track.end_step = shared.steps
                carried.append(track)
        if carried and self.loaders.loader is not None and (loader is None or aside):
            # images fed beside a DataLoader's batches, not one of them
            entry["beside"] = entry.get("beside", 0) + 1
        if not carried and any(p.grad is not None for p in _params(optimizer)):
            # no batch of training images drawn since its last step
            entry["unattributed"] = entry.get("unattributed", 0) + 1
            self.draws.unattributed_step(serial)
        entry["clock"] = shared.clock

    def export(self, record: dict[str, Any]) -> None:
        record["unwatched_steps"] = self.unwatched_steps
        record["optimizers"] = {
            str(k): {**v, "curve": curve(self.curves.get(k, []))}
            for k, v in self.shared.optimizers.items()
        }


class Weights(Observer):
    """Every change of the stepped weights explained by a counted step, an initialisation or a load
    (continuity.py), every Linear weight's gradient by its calls (gradients.py), and the updates a
    counted step ran (one each)."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.continuity = Continuity()
        self.gradients = LinearGradients()
        self._first_grads: dict[int, Any] = {}  # parameter id -> its hook awaiting a first gradient
        # optimizers whose step began and whose end is not seen yet
        self._stepping: set[int] = set()
        # optimizer -> torch updates run inside its current counted step
        self._updates: Counter[int] = Counter()
        # optimizer -> updates beyond one a counted step (or outside any)
        self._beyond: Counter[int] = Counter()
        self.lost_steps = 0  # steps that began and were never seen to end

    def carry(self, module: torch.nn.Module, output: Any) -> None:
        """The call whose rows were read returned: a pass reaching its output carries the layers'
        gradients."""
        hook = self.gradients.carrier(module)
        for tensor in graded_outputs(output, None):
            tensor.register_hook(hook)

    def step_begins(self, optimizer: torch.optim.Optimizer, serial: int) -> None:
        """One of the same optimizer that began before and never ended (an optimizer's own
        post-hook raised first) is lost. An optimizer's own pre-hooks run after this one, where a
        change of the weights would be taken for the step's: one that has them is counted as
        changed outside the steps."""
        self.lost_steps += serial in self._stepping
        self._stepping.add(serial)
        self._updates[serial] = 0
        own_hooks = bool(getattr(optimizer, "_optimizer_step_pre_hooks", None))
        params = _params(optimizer)
        self.continuity.check(serial, params, own_hooks=own_hooks)
        self.gradients.step_begins(params)

    def update_begins(self, optimizer: torch.optim.Optimizer, serial: int) -> None:
        """A counted step runs one; a second inside it, or one outside any, is an update the
        grader did not count."""
        if serial in self._stepping:
            self._updates[serial] += 1
            self._beyond[serial] += self._updates[serial] > 1
        else:
            self._beyond[serial] += 1

    def update_done(self, optimizer: torch.optim.Optimizer, serial: int) -> None:
        """The parameters' values now are explained."""
        params = _params(optimizer)
        self.continuity.keep(serial, params)
        self.gradients.update_done(params)
        for p in params:  # counted steps explain them from now on: no more work per backward
            handle = self._first_grads.pop(id(p), None)
            if handle is not None:
                handle.remove()

    def step_taken(self, optimizer: torch.optim.Optimizer, serial: int) -> None:
        self._stepping.discard(serial)
        self._updates.pop(serial, None)
        self.gradients.on_step()

    def initialised(self, tensor: torch.Tensor) -> None:
        self.continuity.reinitialised(tensor)

    def parameter_added(self, module: Any, name: str, param: torch.Tensor) -> None:
        """The first gradient computed for it (by ``backward()`` or ``torch.autograd.grad``, which
        accumulates nothing) fixes its initial values (``Continuity.first_backward``: training
        before the first counted step is a change)."""
        self.gradients.on_parameter(module, name, param, self.shared.serials.of)
        if not param.is_floating_point() or id(param) in self._first_grads:
            return
        first, ref = guarded(self.continuity.first_backward), weakref.ref(param)

        def hook(grad: torch.Tensor) -> None:
            if (p := ref()) is not None:
                first(p)

        self._first_grads[id(param)] = param.register_hook(hook)

    def export(self, record: dict[str, Any]) -> None:
        moved = self.continuity.export()
        for serial, entry in self.shared.optimizers.items():
            entry["moved"] = moved.between.get(serial, 0) + self._beyond.get(serial, 0)
            entry["moved_at_end"] = serial in moved.after_last_step
        record["lost_steps"] = self.lost_steps + len(self._stepping)
        record["gradients"] = self.gradients.export()
