"""Every change of a stepped parameter explained by a counted optimizer step, or a state the counted
steps made.

After each optimizer step the probe counted, and after each ``load_state_dict``, a window of each of
the step's parameters is read (SAMPLE values at a secret offset, on its device, by one call: no
synchronisation, a few microseconds) into its hull: the least and greatest value each position held
at a counted moment (also before the first step). Before any optimizer's next step over one of them,
and at the export, each window must lie within its hull, up to the rounding of a change of dtype
(``model.half()``) or of an average (an EMA's float32 error). A restored checkpoint is one of those
states, and an average of them (EMA, SWA, Polyak, Lookahead's slow weights) lies between them,
however
it was written back (``load_state_dict``, ``copy_``, ``vector_to_parameters``). A value outside is
an
update the step hooks did not see (``step.__wrapped__``, a hand-written ``p.data -= ...``, weights
trained further in a copy and loaded back): it is counted, per optimizer and at the end, and the
judge
says the epochs cannot be decided. Windows are kept per set of parameters, so a new optimizer over
the
same parameters each epoch shares them (a change between two optimizers counts).

A window sits at the same secret place in every parameter of a size, so any model's weights can be
held to the hull of the stepped ones (``explains``): weights loaded, or an averaged model graded as
it
is, must be a state the run's counted steps made, or an average of such states.
"""

from __future__ import annotations

import os
import random
import weakref
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

SAMPLE = 256  # values of each parameter in its window (all of a smaller one)
# A value is within the hull when within this margin of it, relative to the values there: an EMA's
# float32 rounding (each step's error fading by the decay) wanders some tens of units in the last
# place from the exact average. Coarser for a parameter now in a coarser dtype (``model.half()``).
HULL_MARGIN = 1e-4


def _margin(dtype: torch.dtype) -> float:
    return max(HULL_MARGIN, 8 * torch.finfo(dtype).eps) if dtype.is_floating_point else HULL_MARGIN


def _rates(
    params: Sequence[torch.Tensor], sizes: Sequence[int], device: torch.device
) -> torch.Tensor:
    """Per value of the windows, the margin its own parameter's dtype allows (one bfloat16 tensor in
    the set loosens nothing for the others)."""
    parts = [torch.full((n,), _margin(p.dtype)) for p, n in zip(params, sizes)]
    return (torch.cat(parts) if parts else torch.zeros(0)).to(device)


def _widened(
    lo: torch.Tensor, hi: torch.Tensor, rate: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The hull [lo, hi] widened at each position by ``rate`` times the values' size there."""
    margin = torch.maximum(lo.abs(), hi.abs()).mul_(rate)
    return lo - margin, hi + margin


class _Windows:
    """A set of parameters, a window of each (views of their storage), and the windows' hull."""

    def __init__(self, params: Sequence[torch.Tensor], start: Callable[[int], int]) -> None:
        self.params = [weakref.ref(p) for p in params]
        self.ids = frozenset(id(p) for p in params)
        self.pointers = [p.data_ptr() for p in params]
        self.dtypes = [p.dtype for p in params]
        # Views of the parameters' storage only where it is laid out as they are (a transposed
        # weight flattened by ``reshape`` is a copy: windows over it would never change); else read
        # each time.
        self.direct = all(p.is_contiguous() for p in params)
        self.numels = [p.numel() for p in params]
        # where each window begins in its parameter's values
        self.starts = [start(n) for n in self.numels]
        self.lengths = [min(SAMPLE, p.numel() - at) for p, at in zip(params, self.starts)]
        self.views = (
            [
                p.detach().reshape(-1)[at : at + n]
                for p, at, n in zip(params, self.starts, self.lengths)
            ]
            if self.direct
            else []
        )
        self.lo: torch.Tensor | None = None  # the hull: least and greatest value at each position
        self.hi: torch.Tensor | None = None
        self.low = self.high = torch.zeros(0)  # the hull widened by each value's margin
        device = params[0].device if params else torch.device("cpu")
        self.rates = _rates(params, self.lengths, device)

    def slices(self) -> list[tuple[int, int, int]]:
        """(its parameter's size, where its window begins in the hull, its length), per parameter,
        alive
        or not (a candidate model's states stay states the run's steps made after it is gone)."""
        found, at = [], 0
        for numel, length in zip(self.numels, self.lengths):
            found.append((numel, at, length))
            at += length
        return found

    def inherit(self, old: _Windows) -> None:
        """Carry the hull of the same parameters' earlier windows (moved to another device or
        dtype)."""
        if old.lo is not None and old.hi is not None and old.lengths == self.lengths:
            self.lo, self.hi = old.lo.to(self.rates.device), old.hi.to(self.rates.device)
            self._widen()

    def alive(self) -> list[torch.Tensor] | None:
        params = [r() for r in self.params]
        return None if any(p is None for p in params) else [p for p in params if p is not None]

    def stale(self, params: Sequence[torch.Tensor]) -> bool:
        """Whether the parameters' values moved to other storage or another dtype since (``p.data =
        ...``)."""
        return [p.data_ptr() for p in params] != self.pointers or [
            p.dtype for p in params
        ] != self.dtypes

    def current(self, params: Sequence[torch.Tensor]) -> bool:
        """Whether the windows still view these parameters' storage, in the same dtype."""
        return self.direct and not self.stale(params) and all(p.is_contiguous() for p in params)

    def read(self, params: Sequence[torch.Tensor], current: bool) -> torch.Tensor | None:
        """The windows' values now, read where they live (None: a parameter became too small)."""
        if current:
            return torch.cat([v.float() for v in self.views])
        parts = []
        for p, start, length in zip(params, self.starts, self.lengths):
            flat = p.detach().reshape(-1)
            if flat.numel() < start + length:
                return None
            parts.append(flat[start : start + length].float().to(self.rates.device))
        return torch.cat(parts) if parts else None

    def keep(self) -> None:
        """Take the windows' values now into the hull."""
        params = self.alive()
        now = self.read(params, self.current(params)) if params is not None else None
        if now is None:
            return
        if self.lo is None or self.hi is None:
            self.lo, self.hi = now, now.clone()
        else:
            torch.minimum(self.lo, now, out=self.lo)
            torch.maximum(self.hi, now, out=self.hi)
        self._widen()

    def _widen(self) -> None:
        assert self.lo is not None and self.hi is not None
        self.low, self.high = _widened(self.lo, self.hi, self.rates)

    def moved(self) -> torch.Tensor | None:
        """A bool tensor: some value of the windows lies outside their hull (None: nothing to
        compare)."""
        params = self.alive()
        if self.lo is None or self.hi is None or params is None:
            return None
        current = self.current(params)
        now = self.read(params, current)
        if now is None:
            return torch.ones((), dtype=torch.bool)
        low, high = self.low, self.high
        if not current:  # moved, converted or replaced (p.data = ...): its dtype's margin now
            low, high = _widened(self.lo, self.hi, _rates(params, self.lengths, now.device))
        return (now < low).logical_or_(now > high).any()


class Moved(NamedTuple):
    """Per optimizer (by serial): steps before which its parameters had left the hull of the states
    the counted moments made; and the optimizers whose parameters had left it by the end."""

    between: dict[int, int]
    after_last_step: set[int]


class Continuity:
    """The windows of every set of stepped parameters, and the changes found between steps."""

    def __init__(self) -> None:
        self._offsets = random.Random(os.urandom(16))  # secret, and not the notebook's random state
        self._starts: dict[int, int] = {}  # a parameter's size -> where its windows begin
        # by the ids of the parameters, in order
        self._windows: dict[tuple[int, ...], _Windows] = {}
        self._users: dict[tuple[int, ...], set[int]] = {}  # optimizers that stepped each set
        # optimizer -> steps before which a window had changed
        self._changed: dict[int, torch.Tensor] = {}
        # Parameters a gradient reached before any counted step: their values at that first backward
        # (what a model trained by hand before its optimizer's first step no longer has).
        self._first: dict[int, _Windows] = {}
        self._seen: set[int] = set()
        # size -> the hull of windows now gone
        self._retired: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _start(self, numel: int) -> int:
        start = self._starts.get(numel)
        if start is None:
            start = self._starts[numel] = (
                self._offsets.randrange(numel - SAMPLE + 1) if numel > SAMPLE else 0
            )
        return start

    @staticmethod
    def _fold(hulls: dict[int, tuple[torch.Tensor, torch.Tensor]], windows: _Windows) -> None:
        """Add the windows' hull to ``hulls``, per size of parameter."""
        if windows.lo is None or windows.hi is None:
            return
        for numel, at, length in windows.slices():
            lo, hi = windows.lo[at : at + length], windows.hi[at : at + length]
            if numel in hulls:
                was_lo, was_hi = hulls[numel]
                lo, hi = (
                    torch.minimum(was_lo, lo.to(was_lo.device)),
                    torch.maximum(was_hi, hi.to(was_hi.device)),
                )
            hulls[numel] = (lo, hi)

    def _renewed(self, old: _Windows, params: Sequence[torch.Tensor]) -> _Windows:
        """New windows over ``params`` (their storage moved or replaced), keeping the old ones'
        hull."""
        windows = _Windows(params, self._start)
        windows.inherit(old)
        return windows

    def _touching(self, ids: frozenset[int]) -> list[_Windows]:
        return [w for w in self._windows.values() if w.ids & ids] + [
            self._first[i] for i in ids if i in self._first
        ]

    def first_backward(self, param: torch.Tensor) -> None:
        """A gradient reached ``param`` for the first time: its values now are its initial ones (set
        by whatever init the notebook chose); until a counted step, they may not change."""
        if id(param) in self._seen:
            return
        self._seen.add(id(param))
        windows = self._first[id(param)] = _Windows([param], self._start)
        windows.keep()

    def check(
        self, optimizer: int, params: Sequence[torch.Tensor], own_hooks: bool = False
    ) -> None:
        """Before a step: do its parameters still lie within the hull of the states steps and loads
        made?
        ``own_hooks``: the optimizer has step pre-hooks of its own (run after this check), counted
        as
        a change."""
        key = tuple(map(id, params))
        windows = self._windows.get(key)
        if windows is None and params:  # its first step: the values before it are in the hull
            windows = self._windows[key] = _Windows(params, self._start)
            windows.keep()
        if own_hooks:
            self._count(optimizer, torch.ones((), dtype=torch.long))
            return
        touching = (
            [windows]
            if windows is not None and len(self._windows) == 1 and not self._first
            else self._touching(frozenset(map(id, params)))
        )
        flags = [m for w in touching if (m := w.moved()) is not None]
        if flags:
            self._count(
                optimizer,
                (
                    flags[0]
                    if len(flags) == 1
                    else torch.stack([f.to(flags[0].device) for f in flags]).any()
                ).long(),
            )

    def _count(self, optimizer: int, found: torch.Tensor) -> None:
        """Add ``found`` (0 or 1, on any device: never synchronised here) to the optimizer's
        changes."""
        count = self._changed.get(optimizer)
        self._changed[optimizer] = found if count is None else count + found.to(count.device)

    def keep(self, optimizer: int, params: Sequence[torch.Tensor]) -> None:
        """After a counted step: its parameters' values now, in every set holding any of them."""
        key = tuple(map(id, params))
        windows = self._windows.get(key)
        alive = windows.alive() if windows is not None else None
        if windows is None or alive is None or any(a is not b for a, b in zip(alive, params)):
            if windows is not None:  # another set's ids, reused: its hull stays the run's
                self._fold(self._retired, windows)
            self._windows[key] = _Windows(params, self._start)
        elif windows.stale(params):
            self._windows[key] = self._renewed(windows, params)
        self._users.setdefault(key, set()).add(optimizer)
        for p in params:  # a counted step explains them from now on
            self._first.pop(id(p), None)
        if len(self._windows) == 1:  # the one set of parameters (the usual case)
            self._windows[key].keep()
        else:
            self._keep_touching(frozenset(key))

    def loaded(self, params: Sequence[torch.Tensor]) -> None:
        """Weights were loaded into ``params`` (``load_state_dict``): the load explains the
        change."""
        self._keep_touching(frozenset(map(id, params)))

    def reinitialised(self, tensor: torch.Tensor) -> None:
        """``torch.nn.init`` wrote fresh values into ``tensor`` (a parameter or its ``.data``)
        before
        any counted step over it: the init explains the change since its first gradient (a sanity
        backward pass before the init chosen); an init carries nothing trained. After a step it
        explains nothing: the steps before it would still count as epochs."""
        if not self._first:
            return
        where = (tensor.data_ptr(), tensor.numel())
        stepped = {i for windows in self._windows.values() for i in windows.ids}
        self._keep_touching(
            frozenset(
                key
                for key, first in self._first.items()
                if key not in stepped
                and (params := first.alive())
                and (params[0].data_ptr(), params[0].numel()) == where
            )
        )

    def _keep_touching(self, ids: frozenset[int]) -> None:
        for i in ids & self._first.keys():  # a load before the first step explains those too
            first, params = self._first[i], self._first[i].alive()
            if params is not None and first.stale(params):
                first = self._first[i] = self._renewed(first, params)
            first.keep()
        for key, windows in list(self._windows.items()):
            if not windows.ids & ids:
                continue
            params = windows.alive()
            if params is None:
                self._fold(self._retired, windows)
                del self._windows[key]
                continue
            if windows.stale(params):
                windows = self._windows[key] = self._renewed(windows, params)
            windows.keep()

    def explains(self, params: Sequence[torch.Tensor]) -> bool | None:
        """Whether the values of these parameters (any model's) lie within the hull of the stepped
        parameters of their sizes: a state the counted steps made, or an average of such states.
        None before any step (nothing to hold them to). Read when weights are loaded and at the
        export."""
        hulls = dict(self._retired)
        for windows in self._windows.values():
            self._fold(hulls, windows)
        if not hulls:
            return None
        outside = []
        with torch.no_grad():
            for p in params:
                if not (p.requires_grad and p.is_floating_point()):
                    continue
                hull = hulls.get(p.numel())
                if hull is None:  # a size no stepped parameter has: nothing the steps made
                    return False
                lo, hi = hull
                start = self._starts[p.numel()]
                now = p.detach().reshape(-1)[start : start + lo.numel()].float().to(lo.device)
                low, high = _widened(lo, hi, _margin(p.dtype))
                outside.append((now < low).logical_or_(now > high).any())
        return not bool(torch.stack(outside).any().item()) if outside else None

    def export(self) -> Moved:
        """What changed outside the counted steps (read once, at the end of the run)."""
        ended: set[int] = set()
        for key, windows in self._windows.items():
            moved = windows.moved()
            if moved is not None and bool(moved.item()):
                ended |= self._users.get(key, set())
        between = {k: int(v.item()) for k, v in self._changed.items()}
        return Moved({k: v for k, v in between.items() if v}, ended)
