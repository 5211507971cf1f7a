"""The observer of checkpoints (events.py): states taken with ``state_dict()`` and weights loaded,
told apart by fingerprints of the parameters; which step a load restores."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from grader.probe.continuity import Continuity
from grader.probe.events import Observer, Shared

# states captured with state_dict() that a later load may restore (the last ones)
MAX_CAPTURES = 5000
# parameters of a loaded module listed in the record (the homework's model has 6 to 12)
MAX_LOAD_PARAMS = 64


class Fingerprints:
    """Each parameter projected on a secret random vector of its size, kept where it lives: two
    states of a model that differ in any weight differ here, and a notebook cannot choose the
    weights a projection it does not know would take for another state's. Computed only when a
    state is taken or loaded (``state_dict()``, ``load_state_dict``), never per step."""

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
                    vector = torch.randn(p.numel(), generator=generator).to(p.device)
                    self._vectors[key] = vector
                parts.append((p.detach().reshape(-1).float() * vector).sum())
            return torch.stack(parts)


class Checkpoints(Observer):
    """States taken and loads, in order (``events``: several may fall between two steps)."""

    def __init__(self, shared: Shared, continuity: Continuity) -> None:
        self.shared = shared
        self.continuity = continuity  # a load's weights explained (or not) by what the steps made
        self.fingerprints = Fingerprints()
        # (param serials, step, event, fingerprint)
        self.captures: list[tuple[tuple[int, ...], int, int, torch.Tensor]] = []
        self.loads: list[dict[str, Any]] = []
        self.events = 0

    def state_taken(self, module: torch.nn.Module) -> None:
        """Which step the state shows, should it be loaded back."""
        params = list(module.parameters())
        if params:
            self.events += 1
            serials = tuple(self.shared.serials.of(p) for p in params)
            now = self.fingerprints.of(params)
            self.captures.append((serials, self.shared.steps, self.events, now))
            del self.captures[:-MAX_CAPTURES]

    def state_loaded(self, module: torch.nn.Module) -> None:
        """``restored``: the step of the captured state the loaded weights equal, if any."""
        of, params = self.shared.serials.of, list(module.parameters())
        restored: tuple[int, int] | None = None
        # another model's first parameter, when the state was taken from it (a warm start)
        source: int | None = None
        if params:
            key, now = tuple(of(p) for p in params), self.fingerprints.of(params)
            latest = list(reversed(self.captures))
            same = [c for c in latest if c[0] == key] + [c for c in latest if c[0] != key]
            for serials, step, event, then in same:
                if then.shape == now.shape and torch.equal(then, now.to(then.device)):
                    restored, source = (step, event), (serials[0] if serials != key else None)
                    break
        # Within the hull of what the counted steps made (a checkpoint, an average of the run's
        # states), or weights made elsewhere; None before any step.
        explained = self.continuity.explains(params)
        self.continuity.loaded(params)
        self.events += 1
        self.loads.append(
            {
                "param": of(params[0]) if params else None,
                "step": self.shared.steps,
                "params": [of(p) for p in params[:MAX_LOAD_PARAMS]],
                "test_batch": self.shared.test_batches,
                "event": self.events,
                "from_param": source,
                "restored": restored[0] if restored else None,
                "restored_event": restored[1] if restored else None,
                "explained": explained,
            }
        )

    def export(self, record: dict[str, Any]) -> None:
        record["loads"] = self.loads[-1000:]
