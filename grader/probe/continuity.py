"""Every change of a stepped parameter explained by a counted optimizer step or a load.

After each optimizer step the probe counted, and after each ``load_state_dict``, a copy of a window
of each of the step's parameters is kept (SAMPLE values at a secret offset, on its device, copied by
one call: no synchronisation, a few microseconds). Before any optimizer's next step over one of
them, and at the export, each window must still hold those values, within the rounding of a change
of dtype (``model.half()``) or of a perturbation undone (SAM). A change in between is an update the
step hooks did not see, however it was made (``step.__wrapped__``, a hand-written ``p.data -= ...``,
weights copied in from a model trained elsewhere): it is counted, per optimizer and at the end, and
the judge says the epochs cannot be decided. Windows are kept per set of parameters, so a new
optimizer over the same parameters each epoch shares them (a change between two optimizers counts).
"""

from __future__ import annotations

import os
import random
import weakref
from collections.abc import Sequence
from typing import NamedTuple

import torch

SAMPLE = 256  # values of each parameter in its window (all of a smaller one)
# Equal within this relative rounding (float32's, a few units in the last place), or twice the
# resolution of the dtype the parameter now has (a model converted to half precision after training).
RELATIVE = 5e-7


def _resolution(dtype: torch.dtype) -> float:
    return max(RELATIVE, 2 * torch.finfo(dtype).eps) if dtype.is_floating_point else RELATIVE


def _per_value(params: Sequence[torch.Tensor], sizes: Sequence[int], device: torch.device) -> torch.Tensor:
    """Per value of the windows, 1 / the rounding its parameter's dtype allows: a change is measured
    in units of its own parameter's resolution (one float8 tensor loosens nothing else)."""
    parts = [torch.full((n,), 1 / _resolution(p.dtype)) for p, n in zip(params, sizes)]
    return (torch.cat(parts) if parts else torch.zeros(0)).to(device)


class _Windows:
    """A set of parameters, a window of each (views of their storage), and their kept copy."""

    def __init__(self, params: Sequence[torch.Tensor], offsets: random.Random) -> None:
        self.params = [weakref.ref(p) for p in params]
        self.ids = frozenset(id(p) for p in params)
        self.pointers = [p.data_ptr() for p in params]
        self.dtypes = [p.dtype for p in params]
        self.starts: list[int] = []  # where each window begins in its parameter's values
        self.views = []
        for p in params:
            flat = p.detach().reshape(-1)
            start = offsets.randrange(flat.numel() - SAMPLE + 1) if flat.numel() > SAMPLE else 0
            self.starts.append(start)
            self.views.append(flat[start:start + SAMPLE])
        self.kept: torch.Tensor | None = None
        self.size = torch.zeros(())  # the kept values' norm
        device = self.views[0].device if self.views else torch.device("cpu")
        self.scale = _per_value(params, [v.numel() for v in self.views], device)

    def alive(self) -> list[torch.Tensor] | None:
        params = [r() for r in self.params]
        return None if any(p is None for p in params) else [p for p in params if p is not None]

    def current(self, params: Sequence[torch.Tensor]) -> bool:
        """Whether the windows still view these parameters' storage, in the same dtype."""
        return [p.data_ptr() for p in params] == self.pointers and [p.dtype for p in params] == self.dtypes

    def keep(self) -> None:
        self.kept = torch.cat([v.float() for v in self.views]) if self.views else None
        if self.kept is not None:
            self.size = self.kept.norm()

    def moved(self) -> torch.Tensor | None:
        """A bool tensor: the windows differ from their kept copy beyond rounding (None: nothing to compare)."""
        params = self.alive()
        if self.kept is None or params is None:
            return None
        if self.current(params):
            now, scale = torch.cat([v.float() for v in self.views]), self.scale
        else:  # moved, converted or replaced (p.data = ...): read again where the values now live
            parts = []
            for p, start, view in zip(params, self.starts, self.views):
                flat = p.detach().reshape(-1)
                if flat.numel() < start + view.numel():
                    return torch.ones((), dtype=torch.bool)
                parts.append(flat[start:start + view.numel()].float().to(self.kept.device))
            now = torch.cat(parts)
            scale = _per_value(params, [v.numel() for v in self.views], now.device)
        # Each change in units of its own parameter's rounding, against the windows' size: within
        # float32's rounding for a float32 set, within half precision's after ``model.half()``.
        return (now - self.kept).mul_(scale).norm() > self.size + 1e-30


class Moved(NamedTuple):
    """Per optimizer (by serial): steps before which its parameters had changed since they were last
    kept; and the optimizers whose parameters changed after the last step or load, by the end."""

    between: dict[int, int]
    after_last_step: set[int]


class Continuity:
    """The windows of every set of stepped parameters, and the changes found between steps."""

    def __init__(self) -> None:
        self._offsets = random.Random(os.urandom(16))  # secret, and not the notebook's random state
        self._windows: dict[tuple[int, ...], _Windows] = {}  # by the ids of the parameters, in order
        self._users: dict[tuple[int, ...], set[int]] = {}  # optimizers that stepped each set
        self._changed: dict[int, torch.Tensor] = {}  # optimizer -> steps before which a window had changed
        # Parameters a gradient reached before any counted step: their values at that first backward
        # (what a model trained by hand before its optimizer's first step no longer has).
        self._first: dict[int, _Windows] = {}
        self._seen: set[int] = set()

    def _touching(self, ids: frozenset[int]) -> list[_Windows]:
        return [w for w in self._windows.values() if w.ids & ids] + [self._first[i] for i in ids if i in self._first]

    def first_backward(self, param: torch.Tensor) -> None:
        """A gradient reached ``param`` for the first time: its values now are its initial ones (set
        by whatever init the notebook chose); until a counted step, they may not change."""
        if id(param) in self._seen:
            return
        self._seen.add(id(param))
        windows = self._first[id(param)] = _Windows([param], self._offsets)
        windows.keep()

    def check(self, optimizer: int, params: Sequence[torch.Tensor], own_hooks: bool = False) -> None:
        """Before a step: did any of its parameters change since a step or load last kept them?
        ``own_hooks``: the optimizer has step pre-hooks of its own (run after this check), counted as
        a change."""
        if own_hooks:
            self._count(optimizer, torch.ones((), dtype=torch.long))
            return
        if not self._windows and not self._first:
            return
        windows = self._windows.get(tuple(map(id, params)))
        touching = ([windows] if windows is not None and len(self._windows) == 1 and not self._first
                    else self._touching(frozenset(map(id, params))))
        flags = [m for w in touching if (m := w.moved()) is not None]
        if flags:
            self._count(optimizer, (flags[0] if len(flags) == 1
                                    else torch.stack([f.to(flags[0].device) for f in flags]).any()).long())

    def _count(self, optimizer: int, found: torch.Tensor) -> None:
        """Add ``found`` (0 or 1, on any device: never synchronised here) to the optimizer's changes."""
        count = self._changed.get(optimizer)
        self._changed[optimizer] = found if count is None else count + found.to(count.device)

    def keep(self, optimizer: int, params: Sequence[torch.Tensor]) -> None:
        """After a counted step: its parameters' values now, in every set holding any of them."""
        key = tuple(map(id, params))
        windows = self._windows.get(key)
        alive = windows.alive() if windows is not None else None
        if (windows is None or alive is None or any(a is not b for a, b in zip(alive, params))
                or not windows.current(params)):
            self._windows[key] = _Windows(params, self._offsets)
        self._users.setdefault(key, set()).add(optimizer)
        for p in params:  # a counted step explains them from now on
            self._first.pop(id(p), None)
        if len(self._windows) == 1:  # the one set of parameters (the usual case)
            self._windows[key].keep()
        else:
            self._keep_touching(frozenset(key))

    def loaded(self, params: Sequence[torch.Tensor]) -> None:
        """Weights were loaded into ``params`` (``load_state_dict``): the load explains the change."""
        self._keep_touching(frozenset(map(id, params)))

    def _keep_touching(self, ids: frozenset[int]) -> None:
        for i in ids & self._first.keys():  # a load before the first step explains those too
            first, params = self._first[i], self._first[i].alive()
            if params is not None and not first.current(params):
                first = self._first[i] = _Windows(params, self._offsets)
            first.keep()
        for key, windows in list(self._windows.items()):
            if not windows.ids & ids:
                continue
            params = windows.alive()
            if params is None:
                del self._windows[key]
                continue
            if not windows.current(params):
                windows = self._windows[key] = _Windows(params, self._offsets)
            windows.keep()

    def export(self) -> Moved:
        """What changed outside the counted steps (read once, at the end of the run)."""
        ended: set[int] = set()
        for key, windows in self._windows.items():
            moved = windows.moved()
            if moved is not None and bool(moved.item()):
                ended |= self._users.get(key, set())
        between = {k: int(v.item()) for k, v in self._changed.items()}
        return Moved({k: v for k, v in between.items() if v}, ended)
