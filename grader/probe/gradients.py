"""Every gradient a Linear layer's weight receives, and every gradient an optimizer steps it with,
is explained by the layer's own calls.

A Linear layer's weight gradient in one backward pass is ``sum(delta.T @ x)`` over the calls of the
layer whose output the pass reached, plus, for honest code, a penalty's gradient (an L2, L1 or
group-lasso term in the loss). Rows fed to the weight any other way (``F.linear(rows, fc.weight)``
in an auxiliary loss, ``x @ fc.weight.T``, extra updates hidden inside an optimizer's ``step()``)
add a term that is neither: it trained the model on rows the probe never saw.

So every Linear weight is watched from its registration (its hooks come before the student's). In
one secret optimizer step's interval in RATE, on a secret block of the weight (up to BLOCK x BLOCK
positions), each call of the layer keeps its input's columns of the block, a pre-hook on the node
that computed its output adds ``delta.T @ x`` over the block's rows, and the weight's gradient hook
compares the pass's gradient there with that sum. What is left must be a penalty's gradient: once
its least-squares fit by ``_penalty_basis`` is taken off, sorted by the weight, neighbours differ by
at most TOLERANCE of the calls' own gradient (other rows' gradient is not ordered by the weight).

In every interval, a pass that reaches a weight without any of its layer's calls must have reached
the output of a model call on image rows (the call the probe reads: a forward written with
``F.linear``, a TorchScript model, a reentrant checkpoint's outer pass), or be a penalty's gradient
alone (the same test against the whole gradient: in an armed interval, and for every such pass
after an interval's first, so that many hidden in one step are seen).

And the gradient an optimizer steps with (``_Stepped``) must be what autograd accumulated into
``.grad``, up to what honest code does between backward and step (a scale, a clamp by value, a
centring, a penalty's gradient added by hand); another batch's gradient computed on a detached copy
and added to ``.grad`` is not.

Passes are told apart by autograd's graph task id; everything is computed on the block's device,
without synchronising, and read at the export. A weight whose gradient hook was taken off counts once.
"""

from __future__ import annotations

import os
import random
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch

from grader.probe.guard import guarded

BLOCK = 32  # rows and columns of a weight's block
# What is left of a pass's gradient, once the calls' part is taken off, may differ between
# neighbours (sorted by the weight's value) by this much of the calls' part: the rounding of float16
# or bfloat16 arithmetic is well under it, other rows' training is far over.
TOLERANCE = 0.05
RATE = 128  # one secret optimizer step's interval in RATE has its passes' gradients compared


class _Weight:
    """One watched weight: its block, the pass its calls last reached, their gradient there, counts."""

    def __init__(self, weight: torch.Tensor, rng: random.Random) -> None:
        out_features, in_features = weight.shape
        device = weight.device
        self.rows = torch.tensor(sorted(rng.sample(range(out_features), min(BLOCK, out_features))), device=device)
        self.cols = torch.tensor(sorted(rng.sample(range(in_features), min(BLOCK, in_features))), device=device)
        self.flat = (self.rows[:, None] * in_features + self.cols[None, :]).reshape(-1)  # the block's places
        self.task = -2  # the backward pass a call's output gradient last came in
        self.sum: torch.Tensor | None = None  # the calls' gradient over the block in that pass
        self.whole = False  # every call that pass reached kept its block columns
        self.watched = 0  # passes whose gradient the layer's calls carried
        self.carried = 0  # passes without the layer's calls, through a model call on images (a functional forward)
        self.bare = 0  # passes that reached the weight with neither
        self.lone = (-1, 0)  # (interval, such passes in it): a penalty backpropagated apart makes one a step
        self.unexplained = torch.zeros((), dtype=torch.int64, device=device)  # read at the export
        self.on_reached = guarded(self.reached)  # made once: an unarmed call's hook costs no more
        self.handle: Any = None  # the weight's gradient hook, which must still be on it at the export

    def block(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor``'s values on the block (one gather), in float64."""
        return tensor.detach().reshape(-1).index_select(0, self.flat).view(len(self.rows), len(self.cols)).double()

    def reached(self, deltas: Any) -> None:
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

    def check(self, task: int, weight: torch.Tensor, grad: torch.Tensor, watch: LinearGradients) -> None:
        """The weight's gradient in pass ``task``: whether the layer's calls carried it, and if each
        of them kept its part, whether they explain it; else whether a model call on images did
        (``watch.carrier``: the last pass that reached one), else whether it is a penalty's alone
        (compared in an armed interval, and whenever it is not the interval's first such pass)."""
        if task != self.task:
            if task == watch.carrier:
                self.carried += 1
                return
            self.bare += 1
            interval, count = self.lone
            self.lone = (watch.interval, count + 1 if interval == watch.interval else 1)
            if watch.armed or self.lone[1] > 1:
                self._compare(weight, grad, None)
            return
        self.watched += 1
        calls, self.sum, self.task = self.sum, None, -2
        if calls is not None and self.whole:
            self._compare(weight, grad, calls)

    def _compare(self, weight: torch.Tensor, grad: torch.Tensor, calls: torch.Tensor | None) -> None:
        """Counts the gradient unexplained unless what the calls leave of it (all of it, without
        calls) is a penalty's gradient (``_penalty_basis``), to TOLERANCE of the calls' part (of the gradient)."""
        block = self.block(grad)
        reference = block if calls is None else calls
        values = self.block(weight)
        left = (block if calls is None else block - calls).reshape(-1)
        left = left - _fit(left, _penalty_basis(values))
        values = values.reshape(-1)
        left = left[values.argsort()]
        steps = left.diff().abs()
        rough = steps.kthvalue(max(1, steps.numel() * 9 // 10)).values if steps.numel() else steps.sum()
        scale = reference.square().mean().sqrt()
        self.unexplained += (rough > TOLERANCE * scale + 1e-30).to(torch.int64)

    def export(self) -> dict[str, int]:
        return {"watched": self.watched, "carried": self.carried, "bare": self.bare,
                "unexplained": int(self.unexplained)}


def _scaled(block: torch.Tensor) -> list[torch.Tensor]:
    """Columns of a least-squares basis over a flattened block: the block scaled per row and per column."""
    rows, cols = block.shape
    flat = block.reshape(-1, 1)
    return [torch.eye(rows, dtype=flat.dtype, device=flat.device).repeat_interleave(cols, 0) * flat,
            torch.eye(cols, dtype=flat.dtype, device=flat.device).repeat(rows, 1) * flat]


def _penalty_basis(values: torch.Tensor) -> list[torch.Tensor]:
    """What penalties of the block's weights ``values`` add to its gradient: L2 (the weight), L1 (its
    size and sign), and an L2 or L1 penalty of each row's or column's norm (a group lasso)."""
    flat = values.reshape(-1, 1)
    return [torch.ones_like(flat), flat, flat.abs(), flat.sign(), *_scaled(values)]


def _fit(left: torch.Tensor, basis: list[torch.Tensor], kept: torch.Tensor | None = None) -> torch.Tensor:
    """The least-squares fit of ``left`` (flattened) by the basis' columns, over the ``kept`` entries."""
    columns = torch.cat(basis, 1)
    if kept is not None:
        columns = columns * kept.reshape(-1, 1)
        left = left * kept
    normal = columns.T @ columns
    normal.diagonal().add_(normal.diagonal().sum() * 1e-12 + 1e-300)  # collinear columns (the weight, per row)
    return columns @ torch.linalg.solve(normal, columns.T @ left)


class _Stepped:
    """The gradient an optimizer steps a watched weight with: what autograd last accumulated into its
    ``.grad``, and that gradient when a step begins and when its update is done. Between backward and
    step honest code scales it (clipping by norm, a GradScaler's unscale), clamps it (by value), adds
    a penalty's gradient (weight decay by hand) or centres it per row or column; anything else added
    (another batch's gradient computed on a detached copy) trained the weight on rows no call showed.
    A step's update itself never writes ``.grad``."""

    def __init__(self, watched: _Weight) -> None:
        self.watched = watched
        self.autograd: tuple[int, int] | None = None  # (id, version) of .grad as autograd left it
        self.snapshot: torch.Tensor | None = None  # its block then
        self.before: tuple[int, int] | None = None  # (id, version) of .grad when the step began

    def accumulated(self, weight: torch.Tensor) -> None:
        grad = weight.grad
        if grad is not None and not grad.is_sparse:
            self.autograd = (id(grad), grad._version)
            self.snapshot = self.watched.block(grad)

    def step_begins(self, weight: torch.Tensor, armed: bool) -> None:
        grad = weight.grad
        self.before = None if grad is None else (id(grad), grad._version)
        if armed and grad is not None and self.before != self.autograd:
            self._compare(weight, grad)

    def update_done(self, weight: torch.Tensor) -> None:
        grad = weight.grad
        if grad is not None and (id(grad), grad._version) not in (self.before, self.autograd):
            self._compare(weight, grad)  # written during the step: rare, so always compared

    def _compare(self, weight: torch.Tensor, grad: torch.Tensor) -> None:
        watched = self.watched
        if self.snapshot is None or grad.is_sparse:
            watched.unexplained += 1  # a gradient autograd never computed
            return
        now, values = watched.block(grad), watched.block(weight)
        size = now.abs()
        kept = (size < size.max()).double().reshape(-1)  # entries a clamp by value left as they were
        flat = self.snapshot.reshape(-1, 1)
        basis = [flat, *_scaled(self.snapshot), *_penalty_basis(values), *_scaled(torch.ones_like(values))]
        left = (now.reshape(-1) - _fit(now.reshape(-1), basis, kept)) * kept
        scale = (self.snapshot.reshape(-1) * kept).square().mean().sqrt()
        watched.unexplained += (left.square().mean().sqrt() > TOLERANCE * scale + 1e-30).to(torch.int64)


class LinearGradients:
    """Watches every ``nn.Linear`` called with gradients (any depth, any wrapper)."""

    def __init__(self) -> None:
        self._rng = random.Random(os.urandom(16))  # the blocks and the intervals: not the notebook's seed
        self.armed = True  # this interval's calls keep their block columns
        self._weights: dict[int, _Weight] = {}
        self._names: dict[int, int] = {}  # weight id -> the serial the record names it by
        self._refs: dict[int, weakref.ref[torch.Tensor]] = {}
        self._stepped: dict[int, _Stepped] = {}
        self.carrier = -2  # the last backward pass that reached the output of a model call on images
        self.interval = 0  # optimizer steps counted so far
        self.on_carrier = guarded(self._carrier)

    def _carrier(self, grad: torch.Tensor) -> None:
        self.carrier = torch._C._current_graph_task_id()

    def on_step(self) -> None:
        """An optimizer step was counted: whether the next interval's passes are compared."""
        self.armed = self._rng.randrange(RATE) == 0
        self.interval += 1

    def on_call(self, module: torch.nn.Module, args: Any, output: Any, name: Callable[[Any], int]) -> None:
        """A Linear layer's call: its output's gradient awaited (with its input's block columns, when
        the interval is armed)."""
        weight = getattr(module, "weight", None)
        if (not isinstance(output, torch.Tensor) or not output.requires_grad or not args
                or not isinstance(args[0], torch.Tensor) or not isinstance(weight, torch.nn.Parameter)
                or not weight.is_leaf or weight.dim() != 2 or not weight.is_floating_point()
                or args[0].shape[-1:] != weight.shape[1:] or output.shape[-1:] != weight.shape[:1]):
            return
        watched, node = self._watch(weight, name), output.grad_fn
        if node is None:
            return
        # On the node that computed the output: its pre-hooks run after every hook on the tensor (a
        # student's clamp of the layer's output gradient included), with the gradient the layer's
        # weight gradient is computed from.
        if not self.armed:
            node.register_prehook(watched.on_reached)
            return
        columns = args[0].detach().reshape(-1, weight.shape[1])[:, watched.cols].double()

        def add(deltas: tuple[torch.Tensor | None, ...]) -> None:
            if deltas and deltas[0] is not None:
                watched.add(torch._C._current_graph_task_id(), deltas[0], columns)

        node.register_prehook(guarded(add))
    def on_parameter(self, module: torch.nn.Module, name: str, param: Any, serial: Callable[[Any], int]) -> None:
        """A Linear layer's weight registered: its gradients are watched from the first, whether or
        not the layer is ever called as a module."""
        if (name == "weight" and isinstance(module, torch.nn.Linear) and isinstance(param, torch.nn.Parameter)
                and param.dim() == 2 and param.is_floating_point()):
            self._watch(param, serial)

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
                watched.check(torch._C._current_graph_task_id(), w, grad, self)

        watched.handle = weight.register_hook(guarded(hook))
        stepped = self._stepped[key] = _Stepped(watched)
        weight.register_post_accumulate_grad_hook(guarded(stepped.accumulated))
        return watched

    def _held(self, params: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, _Stepped]]:
        found: list[tuple[torch.Tensor, _Stepped]] = []
        for p in params:
            stepped = self._stepped.get(id(p))
            if stepped is not None and self._refs[id(p)]() is p:
                found.append((p, stepped))
        return found

    def step_begins(self, params: Sequence[torch.Tensor]) -> None:
        """An optimizer's step begins: the gradient of each watched weight it steps, as it will use it."""
        for p, stepped in self._held(params):
            stepped.step_begins(p, self.armed)

    def update_done(self, params: Sequence[torch.Tensor]) -> None:
        """The optimizer's update is done: the gradients it stepped with, unchanged by it."""
        for p, stepped in self._held(params):
            stepped.update_done(p)

    def export(self) -> list[dict[str, int]]:
        """Per watched weight: its serial, the passes its calls carried, those that reached it without
        them, and the passes with a gradient the calls do not explain (one more when the weight's
        gradient hook was taken off it: what it would have seen is not known)."""
        found = []
        for key, watched in self._weights.items():
            entry = {"param": self._names[key], **watched.export()}
            weight, handle = self._refs[key](), watched.handle
            if weight is not None and handle is not None and handle.id not in (weight._backward_hooks or {}):
                entry["unexplained"] += 1
            found.append(entry)
        return found
