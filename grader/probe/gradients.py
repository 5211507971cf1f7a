"""Every gradient a Linear layer's weight receives, and every gradient an optimizer steps it with,
is explained by the layer's own calls.

A Linear layer's weight gradient in one backward pass is ``sum(delta.T @ x)`` over the calls of the
layer whose output the pass reached, plus, for honest code, a penalty's gradient (an L2, L1 or
group-lasso term in the loss). Rows fed to the weight any other way (``F.linear(rows, fc.weight)``
in an auxiliary loss, ``x @ fc.weight.T``, extra updates hidden inside an optimizer's ``step()``)
add a term that is neither: it trained the model on rows the probe never saw.

So every Linear weight is watched from its registration (its hooks come before the student's), and
each call of a plain ``nn.Linear`` keeps a reference to its input. In one backward pass in RATE,
drawn when its first gradient comes (nothing the notebook sees before tells which), on a secret
block of the weight (up to BLOCK x BLOCK positions), a pre-hook on the node that computed each
call's output adds ``delta.T @ x`` over the block, and the weight's gradient hook compares the
pass's gradient there with that sum. What is left must be a penalty's gradient: once its
least-squares fit by ``_penalty_basis`` is taken off, sorted by the weight, neighbours differ by at
most TOLERANCE of the calls' own gradient (other rows' gradient is not ordered by the weight).

A pass that reaches a weight without any of its layer's calls must, for a layer never called as a
module (a forward written with ``F.linear``, TorchScript), have reached the output of the model call
on image rows that owns the weight (the call the probe reads), or be a penalty's gradient alone (the
same test against the whole gradient: in a drawn pass, and for every such pass after its step
interval's first, so that many hidden in one step are seen).

And the gradient an optimizer steps with (``_Stepped``) must be what autograd accumulated into
``.grad``, up to what honest code does between backward and step (a scale, a clamp by value, a
centring, a penalty's gradient added by hand); another batch's gradient computed on a detached copy
and added to ``.grad`` is not.

Passes are told apart by autograd's graph task id; everything is computed on the gradient's device,
without synchronising (``solve_ex``), and counted there until the export. On the CPU, where reading
a
value costs nothing, a gradient already explained without the least-squares fit skips it
(``_within``). A weight whose gradient hook was taken off counts once.
"""

from __future__ import annotations

import functools
import os
import random
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from grader.probe.guard import guarded

T = TypeVar("T")


def _plain(function: Callable[..., T]) -> Callable[..., T]:
    """``guarded``, with ``__torch_function__`` of tensor subclasses off: a subclass the notebook
    hands
    a layer would otherwise see which passes and steps the probe compares."""

    def call(*args: Any, **kwargs: Any) -> T:
        with torch._C.DisableTorchFunctionSubclass():
            return function(*args, **kwargs)

    return guarded(functools.wraps(function)(call))


BLOCK = 32  # rows and columns of a weight's block
# What is left of a pass's gradient, once the calls' part is taken off, may differ between
# neighbours (sorted by the weight's value) by this much of the calls' part: the rounding of float16
# or bfloat16 arithmetic is well under it, other rows' training is far over.
TOLERANCE = 0.05
KEPT = 32  # the gradient blocks a weight keeps apart between two steps (more are summed)
# one pass in RATE, drawn in its backward, has its gradients compared (one step in RATE its .grad)
RATE = 128


class _Block:
    """A secret block of a weight: its rows and columns, as indices on each device the weight has
    been on (``model.to("cuda")`` keeps the Parameter, moving its values)."""

    def __init__(self, shape: tuple[int, ...], rng: random.Random) -> None:
        out_features, in_features = shape
        self.rows = sorted(rng.sample(range(out_features), min(BLOCK, out_features)))
        self.cols = sorted(rng.sample(range(in_features), min(BLOCK, in_features)))
        # the block's places
        self.flat = [r * in_features + c for r in self.rows for c in self.cols]
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        found = self._on.get(device)
        if found is None:
            rows, cols, flat = (
                torch.tensor(i, device=device) for i in (self.rows, self.cols, self.flat)
            )
            found = self._on[device] = (rows, cols, flat)
        return found

    def copy(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor``'s values on the block, flattened, in its dtype: one gather (taken every
        pass)."""
        return tensor.detach().take(self._indices(tensor.device)[2])

    def of(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor``'s values on the block, in float64 (to compare)."""
        return self.copy(tensor).view(len(self.rows), len(self.cols)).double()

    def part(self, delta: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """A call's part of the weight's gradient on the block: its output gradient ``delta`` on the
        block's rows times its input ``rows`` on the block's columns."""
        out, cols, _ = self._indices(delta.device)
        columns = (
            rows.detach().reshape(-1, rows.shape[-1]).index_select(1, cols.to(rows.device)).double()
        )
        return delta.reshape(-1, delta.shape[-1]).index_select(1, out).double().T @ columns.to(
            delta.device
        )


class _Count:
    """A count kept where its flags are computed (a device's 0-d tensor each: no synchronisation),
    read at the export."""

    def __init__(self) -> None:
        self._on: dict[torch.device, torch.Tensor] = {}
        self.extra = 0

    def add(self, flag: torch.Tensor) -> None:
        total = self._on.get(flag.device)
        self._on[flag.device] = (
            flag.to(torch.int64) if total is None else total + flag.to(torch.int64)
        )

    def total(self) -> int:
        return self.extra + sum(int(t) for t in self._on.values())


class _Weight:
    """One watched weight: its block, the pass its calls last reached, their gradient there,
    counts."""

    def __init__(self, weight: torch.Tensor, rng: random.Random) -> None:
        self.area = _Block(tuple(weight.shape), rng)
        # the weights at their first gradient (L2-SP pulls towards them)
        self.initial: torch.Tensor | None = None
        self.task = -2  # the backward pass a call's output gradient last came in
        # whether that pass is compared (drawn when its first call's gradient came)
        self.compared = False
        self.sum: torch.Tensor | None = None  # the calls' gradient over the block in that pass
        self.watched = 0  # passes whose gradient the layer's calls carried
        # passes without the layer's calls, through a model call on images (a functional forward)
        self.carried = 0
        self.bare = 0  # passes that reached the weight with neither
        # (interval, such passes in it): a penalty backpropagated apart makes one a step
        self.lone = (-1, 0)
        self.unexplained = _Count()
        # the weight's gradient hook, which must still be on it at the export
        self.handle: Any = None

    def block(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.area.of(tensor)

    def add(
        self, task: int, delta: torch.Tensor, rows: torch.Tensor, compare: Callable[[], bool]
    ) -> None:
        """A call's output gradient ``delta`` came in pass ``task``, for its input ``rows``: in a
        pass
        drawn for comparison (``compare``), its part of the weight's gradient on the block. The
        forward kept only the reference, the same in every pass, so nothing the notebook sees before
        the backward tells it which pass is compared."""
        if task != self.task:
            self.task, self.compared, self.sum = task, compare(), None
        if self.compared:
            part = self.area.part(delta, rows)
            self.sum = part if self.sum is None else self.sum + part

    def check(
        self, task: int, weight: torch.Tensor, grad: torch.Tensor, watch: LinearGradients
    ) -> None:
        """The weight's gradient in pass ``task``: whether the layer's calls carried it, and in a
        compared pass whether they explain it; else, for a layer never called as a module, whether
        the model call on images that owns it did (``watch.carries``: a forward written with
        ``F.linear``); else whether it is a penalty's alone (compared in a drawn pass, and whenever
        it
        is not its step interval's first such pass)."""
        if self.initial is None:
            self.initial = self.block(weight)
        if task != self.task:
            if not self.watched and watch.carries(task, weight):
                self.carried += 1
                return
            self.bare += 1
            interval, count = self.lone
            self.lone = (watch.interval, count + 1 if interval == watch.interval else 1)
            if watch.draw() or self.lone[1] > 1:
                self._compare(weight, grad, None)
            return
        self.watched += 1
        calls, compared, self.sum, self.task = self.sum, self.compared, None, -2
        if compared:
            self._compare(
                weight, grad, calls if calls is not None else torch.zeros_like(self.block(grad))
            )

    def _compare(
        self, weight: torch.Tensor, grad: torch.Tensor, calls: torch.Tensor | None
    ) -> None:
        """Counts the gradient unexplained unless what the calls leave of it (all of it, without
        calls) is a penalty's gradient (``_penalty_basis``), to TOLERANCE of the calls' part (of the
        gradient)."""
        block = self.block(grad)
        bound = TOLERANCE * (block if calls is None else calls).square().mean().sqrt() + 1e-30
        left = (block if calls is None else block - calls).reshape(-1)
        # no two entries of the unfitted rest differ by the bound: explained
        if _within(left, bound / 2):
            return
        values = self.block(weight)
        left = left - _fit(left, _penalty_basis(values, self.initial))
        left = left[values.reshape(-1).argsort()]
        steps = left.diff().abs()
        rough = (
            steps.kthvalue(max(1, steps.numel() * 9 // 10)).values if steps.numel() else steps.sum()
        )
        self.unexplained.add(rough > bound)

    def export(self) -> dict[str, int]:
        return {
            "watched": self.watched,
            "carried": self.carried,
            "bare": self.bare,
            "unexplained": self.unexplained.total(),
        }


def _total(blocks: list[torch.Tensor]) -> torch.Tensor:
    """The sum of gradient blocks, in float64."""
    total = blocks[0].double()
    for block in blocks[1:]:
        total = total + block.double()
    return total


def _within(values: torch.Tensor, bound: torch.Tensor) -> bool:
    """Whether ``values`` are all within ``bound`` in size, read only on the CPU (elsewhere reading
    it
    would wait for the device: the full test runs there, queued)."""
    return values.device.type == "cpu" and bool(values.abs().max() <= bound)


def _scaled(block: torch.Tensor) -> list[torch.Tensor]:
    """Columns of a least-squares basis over a flattened block: the block scaled per row and per
    column."""
    rows, cols = block.shape
    flat = block.reshape(-1, 1)
    return [
        torch.eye(rows, dtype=flat.dtype, device=flat.device).repeat_interleave(cols, 0) * flat,
        torch.eye(cols, dtype=flat.dtype, device=flat.device).repeat(rows, 1) * flat,
    ]


def _penalty_basis(values: torch.Tensor, initial: torch.Tensor | None) -> list[torch.Tensor]:
    """What penalties of the block's weights ``values`` add to its gradient: L2 (the weight), L1
    (its
    size and sign), an L2 or L1 penalty of each row's or column's norm (a group lasso), and L2
    towards the weights' ``initial`` values (L2-SP)."""
    flat = values.reshape(-1, 1)
    start = torch.zeros_like(flat) if initial is None else initial.reshape(-1, 1)
    return [torch.ones_like(flat), flat, flat.abs(), flat.sign(), *_scaled(values), start]


def _fit(
    left: torch.Tensor, basis: list[torch.Tensor], kept: torch.Tensor | None = None
) -> torch.Tensor:
    """The least-squares fit of ``left`` (flattened) by the basis' columns, over the ``kept``
    entries."""
    columns = torch.cat(basis, 1)
    if kept is not None:
        columns = columns * kept.reshape(-1, 1)
        left = left * kept
    # each column its own scale: tiny gradients too
    columns = columns / columns.norm(dim=0).clamp_min(1e-300)
    normal = columns.T @ columns
    normal.diagonal().add_(1e-10)  # collinear columns (the weight, per row)
    # solve_ex: no synchronisation
    return columns @ torch.linalg.solve_ex(normal, columns.T @ left)[0]


class _Stepped:
    """The gradient an optimizer steps a watched weight with: what autograd last accumulated into
    its
    ``.grad``, and that gradient when a step begins and when its update is done. Between backward
    and
    step honest code scales it (clipping by norm, a GradScaler's unscale), clamps it (by value),
    adds
    a penalty's gradient (weight decay by hand) or centres it per row or column; anything else added
    (another batch's gradient computed on a detached copy) trained the weight on rows no call
    showed.
    The gradients a backward pass or ``torch.autograd.grad`` computed since the last step explain it
    too (accumulated by hand, assigned from ``autograd.grad``). A step's update may change ``.grad``
    in place (SGD's Nesterov momentum with ``foreach``), but never puts another tensor there."""

    def __init__(self, watched: _Weight) -> None:
        self.watched = watched
        self.autograd: int | None = None  # the id of the .grad autograd left
        self.snapshot: torch.Tensor | None = None  # its block then
        self.before: int | None = None  # the id of .grad when the step began
        # the blocks of the gradients computed since the last step
        self.passes: list[torch.Tensor] = []
        # the block of the last gradient computed, kept across steps
        self.last: torch.Tensor | None = None

    def computed(self, grad: torch.Tensor) -> None:
        """A gradient was computed for the weight (by a backward pass or ``torch.autograd.grad``):
        its
        block is copied (a reference would keep autograd from taking the tensor as ``.grad``), and
        summed only when a step is compared (many passes without a step: every KEPT)."""
        if not grad.is_sparse:
            if len(self.passes) >= KEPT:
                self.passes = [_total(self.passes)]
            self.last = self.watched.area.copy(grad)
            self.passes.append(self.last)

    def accumulated(self, weight: torch.Tensor) -> None:
        grad = weight.grad
        if grad is not None and not grad.is_sparse:
            self.autograd = id(grad)
            self.snapshot = self.watched.area.copy(grad)

    def step_begins(self, weight: torch.Tensor, compared: bool) -> None:
        """A step begins; in a step drawn for comparison, its gradient is compared by its values
        (a write through ``.data`` leaves the version as it was)."""
        grad = weight.grad
        self.before = None if grad is None else id(grad)
        if compared and grad is not None:
            self._compare(weight, grad)

    def update_done(self, weight: torch.Tensor) -> None:
        grad = weight.grad
        if grad is not None and id(grad) not in (self.before, self.autograd):
            # another tensor put there during the step: rare, so always compared
            self._compare(weight, grad)
        self.passes = []

    def _compare(self, weight: torch.Tensor, grad: torch.Tensor) -> None:
        watched = self.watched
        shape = (len(watched.area.rows), len(watched.area.cols))
        passes = _total(self.passes) if self.passes else None
        known = [
            g.view(shape).double() for g in (self.snapshot, passes, self.last) if g is not None
        ]
        if not known or grad.is_sparse:
            watched.unexplained.extra += 1  # a gradient autograd never computed
            return
        now = watched.block(grad).reshape(-1)
        size = now.abs()
        kept = (size < size.max()).double()  # entries a clamp by value left as they were
        bound = TOLERANCE * (known[0].reshape(-1) * kept).square().mean().sqrt() + 1e-30
        # what autograd left, scaled (clipped by norm or not): no full fit needed
        if now.device.type == "cpu":
            left = (now - _fit(now, [known[0].reshape(-1, 1)], kept)) * kept
            if _within(left.square().mean().sqrt(), bound):
                return
        values = watched.block(weight)
        basis = [
            *(g.reshape(-1, 1) for g in known),
            *_scaled(known[0]),
            *_penalty_basis(values, watched.initial),
            *_scaled(torch.ones_like(values)),
        ]
        left = (now - _fit(now, basis, kept)) * kept
        watched.unexplained.add(left.square().mean().sqrt() > bound)


def _add(
    watched: _Weight,
    rows: torch.Tensor,
    draw: Callable[[], bool],
    nr: int,
    deltas: tuple[torch.Tensor | None, ...],
) -> None:
    if len(deltas) > nr and (delta := deltas[nr]) is not None:
        watched.add(torch._C._current_graph_task_id(), delta, rows, draw)


_ADD = _plain(_add)  # wrapped once: a call's hook is a partial of it


class LinearGradients:
    """Watches every ``nn.Linear`` called with gradients (any depth, any wrapper)."""

    def __init__(self) -> None:
        # the blocks and the draws: not the notebook's seed
        self._rng = random.Random(os.urandom(16))
        self.rate = RATE
        self._weights: dict[int, _Weight] = {}
        self._names: dict[int, int] = {}  # weight id -> the serial the record names it by
        self._refs: dict[int, weakref.ref[torch.Tensor]] = {}
        self._stepped: dict[int, _Stepped] = {}
        # the last pass that reached a model call on images, its parameters
        self._carrier = (-2, frozenset[int]())
        # its hook
        self._owned: dict[
            int, tuple[weakref.ref[torch.nn.Module], Callable[[torch.Tensor], None]]
        ] = {}
        self._retired: list[dict[str, int]] = []  # the exports of weights gone (their ids reused)
        self.interval = 0  # optimizer steps counted so far
        self.draw = lambda: self._rng.randrange(self.rate) == 0

    def carrier(self, module: torch.nn.Module) -> Callable[[torch.Tensor], None]:
        """A gradient hook for the output of a model call on image rows (the call the probe reads):
        the pass that reaches it carries the gradients of the parameters the model owns."""
        cached = self._owned.get(id(module))
        if cached is None or cached[0]() is not module:
            owned = frozenset(map(id, module.parameters()))

            def reached(grad: torch.Tensor) -> None:
                self._carrier = (torch._C._current_graph_task_id(), owned)

            cached = self._owned[id(module)] = (weakref.ref(module), _plain(reached))
        return cached[1]

    def carries(self, task: int, weight: torch.Tensor) -> bool:
        return self._carrier[0] == task and id(weight) in self._carrier[1]

    def on_step(self) -> None:
        """An optimizer step was counted: a new interval."""
        self.interval += 1

    def on_call(
        self, module: torch.nn.Module, args: Any, output: Any, name: Callable[[Any], int]
    ) -> None:
        """A Linear layer's call: its input kept by reference, its output's gradient awaited."""
        weight = getattr(module, "weight", None)
        # a subclass's own forward: not x @ W.T + b
        if (
            type(module).forward is not torch.nn.Linear.forward
            or not isinstance(output, torch.Tensor)
            or not output.requires_grad
            or not args
            or not isinstance(args[0], torch.Tensor)
            or not isinstance(weight, torch.nn.Parameter)
            or not weight.is_leaf
            or not weight.requires_grad
            or weight.dim() != 2
            or not weight.is_floating_point()
            or args[0].shape[-1:] != weight.shape[1:]
            or output.shape[-1:] != weight.shape[:1]
        ):
            return
        watched, node, rows = self._watch(weight, name), output.grad_fn, args[0]
        if node is None:
            return

        # On the node that computed the output: its pre-hooks run after every hook on the tensor (a
        # student's clamp of the layer's output gradient included), with the gradient the layer's
        # weight gradient is computed from.
        node.register_prehook(functools.partial(_ADD, watched, rows, self.draw, output.output_nr))

    def on_parameter(
        self, module: torch.nn.Module, name: str, param: Any, serial: Callable[[Any], int]
    ) -> None:
        """A Linear layer's weight registered: its gradients are watched from the first, whether or
        not the layer is ever called as a module."""
        if (
            name == "weight"
            and isinstance(module, torch.nn.Linear)
            and isinstance(param, torch.nn.Parameter)
            # a LazyLinear's, shapeless
            and not isinstance(param, torch.nn.parameter.UninitializedParameter)
            and param.dim() == 2
            and param.is_floating_point()
        ):
            self._watch(param, serial)

    def _watch(self, weight: torch.nn.Parameter, name: Callable[[Any], int]) -> _Weight:
        key = id(weight)
        watched = self._weights.get(key)
        if watched is not None and self._refs[key]() is weight:
            return watched
        if watched is not None:  # a weight gone, its id taken by a new one: its counts stay
            self._retired.append({"param": self._names[key], **watched.export()})
        watched = self._weights[key] = _Weight(weight, self._rng)
        self._names[key], self._refs[key] = name(weight), weakref.ref(weight)
        ref = self._refs[key]

        def hook(grad: torch.Tensor) -> None:
            if (w := ref()) is not None:
                watched.check(torch._C._current_graph_task_id(), w, grad, self)
                stepped.computed(grad)

        stepped = self._stepped[key] = _Stepped(watched)
        watched.handle = weight.register_hook(_plain(hook))
        weight.register_post_accumulate_grad_hook(_plain(stepped.accumulated))
        return watched

    def _held(self, params: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, _Stepped]]:
        found: list[tuple[torch.Tensor, _Stepped]] = []
        for p in params:
            stepped = self._stepped.get(id(p))
            if stepped is not None and self._refs[id(p)]() is p:
                found.append((p, stepped))
        return found

    def step_begins(self, params: Sequence[torch.Tensor]) -> None:
        """An optimizer's step begins: the gradient of each watched weight it steps, as it will use
        it."""
        compared = self.draw()  # drawn now: after whatever the notebook did to .grad
        with torch._C.DisableTorchFunctionSubclass():
            for p, stepped in self._held(params):
                stepped.step_begins(p, compared)

    def update_done(self, params: Sequence[torch.Tensor]) -> None:
        """The optimizer's update is done: the gradients it stepped with, unchanged by it."""
        with torch._C.DisableTorchFunctionSubclass():
            for p, stepped in self._held(params):
                stepped.update_done(p)

    def export(self) -> list[dict[str, int]]:
        """Per watched weight: its serial, the passes its calls carried, those that reached it
        without
        them, and the passes with a gradient the calls do not explain (one more when the weight's
        gradient hook was taken off it: what it would have seen is not known)."""
        found = list(self._retired)
        for key, watched in self._weights.items():
            entry = {"param": self._names[key], **watched.export()}
            weight, handle = self._refs[key](), watched.handle
            if (
                weight is not None
                and handle is not None
                and handle.id not in (weight._backward_hooks or {})
            ):
                entry["unexplained"] += 1
            found.append(entry)
        return found
