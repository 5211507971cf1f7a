"""Every gradient a Linear layer's weight receives is explained by the layer's own calls.

A Linear layer's weight gradient in one backward pass is ``sum(delta.T @ x)`` over the calls of the
layer whose output the pass reached, plus, for honest code, a function of the weight itself (an L2 or
L1 penalty written in the loss). Rows fed to the weight any other way (``F.linear(rows, fc.weight)``
in an auxiliary loss, ``x @ fc.weight.T``, extra updates hidden inside an optimizer's ``step()``)
add a term that is neither: it trained the model on rows the probe never saw.

So, for each watched weight, on a secret block of it (up to BLOCK x BLOCK positions): each call of
the layer keeps its input's columns of the block, its output's gradient hook adds ``delta.T @ x``
over the block's rows, and the weight's own gradient hook compares the pass's gradient there with
that sum. What is left must be a function of the weight's values alone: once its fit by the weight
(L2), its size and sign (L1) is taken off, sorted by the weight, neighbours differ by at most
TOLERANCE of the calls' own gradient (a penalty is a smooth function of the weight, with at most a
jump at zero; other rows' gradient is not ordered by the weight at all).
A pass that reaches a weight the layer's calls never reached in it counts too, once the layer's calls
were seen to carry gradients at all (a model run through TorchScript is never watched, never blamed).

Passes are told apart by autograd's graph task id; everything is computed on the block's device,
without synchronising, and read at the export.
"""

from __future__ import annotations

import os
import random
import weakref
from collections.abc import Callable
from typing import Any

import torch

from grader.probe.guard import guarded

BLOCK = 32  # rows and columns of a weight's block
# What is left of a pass's gradient, once the calls' part is taken off, may differ between
# neighbours (sorted by the weight's value) by this much of the calls' part: the rounding of float16
# or bfloat16 arithmetic is well under it, other rows' training is far over.
TOLERANCE = 0.05
RATE = 64  # one secret optimizer step's interval in RATE has its passes' gradients compared


class _Weight:
    """One watched weight: its block, the pass its calls last reached, their gradient there, counts."""

    def __init__(self, weight: torch.Tensor, rng: random.Random) -> None:
        out_features, in_features = weight.shape
        device = weight.device
        self.rows = torch.tensor(sorted(rng.sample(range(out_features), min(BLOCK, out_features))), device=device)
        self.cols = torch.tensor(sorted(rng.sample(range(in_features), min(BLOCK, in_features))), device=device)
        self.task = -2  # the backward pass a call's output gradient last came in
        self.sum: torch.Tensor | None = None  # the calls' gradient over the block in that pass
        self.whole = False  # every call that pass reached kept its block columns
        self.watched = 0  # passes whose gradient the layer's calls carried
        self.bare = 0  # passes that reached the weight with none of the layer's calls
        self.unexplained = torch.zeros((), dtype=torch.int64, device=device)  # read at the export
        self.on_reached = guarded(self.reached)  # made once: an unarmed call's hook costs no more

    def reached(self, delta: torch.Tensor) -> None:
        """A call's output gradient came (in the current pass); its part is not known."""
        task = torch._C._current_graph_task_id()
        if task != self.task:
            self.task, self.sum = task, None
        self.whole = False

    def add(self, task: int, delta: torch.Tensor, columns: torch.Tensor) -> None:
        """A call's output gradient in pass ``task``: its part of the weight's gradient on the block."""
        part = delta.reshape(-1, delta.shape[-1])[:, self.rows].double().T @ columns
        if task != self.task:
            self.task, self.sum, self.whole = task, part, True
        elif self.sum is not None:
            self.sum += part

    def check(self, task: int, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """The weight's gradient in pass ``task``: whether the layer's calls carried it; if each of
        them kept its part, whether they explain it."""
        if task != self.task:
            self.bare += 1
            return
        self.watched += 1
        calls, self.sum, self.task = self.sum, None, -2
        if calls is None or not self.whole:
            return
        block = grad.detach()[self.rows][:, self.cols].double()
        values = weight.detach()[self.rows][:, self.cols].double().reshape(-1)
        order = values.argsort()
        values, left = values[order], (block - calls).reshape(-1)[order]
        penalty = torch.stack([torch.ones_like(values), values, values.abs(), values.sign()], 1)
        normal = penalty.T @ penalty
        normal.diagonal().add_(normal.diagonal().sum() * 1e-12 + 1e-300)  # all-positive weights: rank 2
        left = left - penalty @ torch.linalg.solve(normal, penalty.T @ left)  # L2, L1 or both, however strong
        steps = left.diff().abs()
        rough = steps.kthvalue(max(1, steps.numel() * 9 // 10)).values if steps.numel() else steps.sum()
        scale = calls.square().mean().sqrt()
        self.unexplained += (rough > TOLERANCE * scale + 1e-30).to(torch.int64)

    def export(self) -> dict[str, int]:
        unexplained = int(self.unexplained) + (self.bare if self.watched else 0)
        return {"watched": self.watched, "bare": self.bare, "unexplained": unexplained}


class LinearGradients:
    """Watches every ``nn.Linear`` called with gradients (any depth, any wrapper)."""

    def __init__(self) -> None:
        self._rng = random.Random(os.urandom(16))  # the blocks and the intervals: not the notebook's seed
        self.armed = True  # this interval's calls keep their block columns
        self._weights: dict[int, _Weight] = {}
        self._names: dict[int, int] = {}  # weight id -> the serial the record names it by
        self._refs: dict[int, weakref.ref[torch.Tensor]] = {}

    def on_step(self) -> None:
        """An optimizer step was counted: whether the next interval's passes are compared."""
        self.armed = self._rng.randrange(RATE) == 0

    def on_call(self, module: torch.nn.Module, args: Any, output: Any, name: Callable[[Any], int]) -> None:
        """A Linear layer's call: its output's gradient awaited (with its input's block columns, when
        the interval is armed)."""
        weight = getattr(module, "weight", None)
        if (not isinstance(output, torch.Tensor) or not output.requires_grad or not args
                or not isinstance(args[0], torch.Tensor) or not isinstance(weight, torch.nn.Parameter)
                or not weight.is_leaf or weight.dim() != 2 or not weight.is_floating_point()
                or args[0].shape[-1:] != weight.shape[1:] or output.shape[-1:] != weight.shape[:1]):
            return
        watched = self._watch(weight, name)
        if not self.armed:
            output.register_hook(watched.on_reached)
            return
        columns = args[0].detach().reshape(-1, weight.shape[1])[:, watched.cols].double()

        def add(delta: torch.Tensor) -> None:
            watched.add(torch._C._current_graph_task_id(), delta, columns)

        output.register_hook(guarded(add))
    def _watch(self, weight: torch.nn.Parameter, name: Callable[[Any], int]) -> _Weight:
        key = id(weight)
        watched = self._weights.get(key)
        if watched is not None and self._refs[key]() is weight:
            return watched
        watched = self._weights[key] = _Weight(weight, self._rng)
        self._names[key], self._refs[key] = name(weight), weakref.ref(weight)
        ref = self._refs[key]

        def hook(grad: torch.Tensor) -> None:
            if (w := ref()) is not None:
                watched.check(torch._C._current_graph_task_id(), w, grad)

        weight.register_hook(guarded(hook))
        return watched

    def export(self) -> list[dict[str, int]]:
        """Per watched weight: its serial, the passes its calls carried, those that reached it without
        them, and the passes with a gradient the calls do not explain."""
        return [{"param": self._names[key], **watched.export()} for key, watched in self._weights.items()]
