"""The events the recorder hands its observers, each declared once (the model: pytest's
``hookspec.py``), and what every observer reads (``Shared``) or is handed with an outermost call
(``Call``).

``Recorder`` (recorder.py) turns the hooks runtime.py installs into these events and calls, for
each, the observers that implement it, in the order the recorder lists them (the order matters
where one observer reads what another wrote: see each event). It binds them once, at its start:
an observer that does not implement an event costs it nothing. Calls that are the probe's own
(``Recorder.internal``) and a DataLoader's transforms reach no observer.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch

from grader.probe.content import ImageIndex, Match
from grader.probe.identity import Serials
from grader.probe.passes import TrainPass


class SinceStep:
    """What the calls since the last optimizer step drew (content.py's rows by index), which the
    next step's attribution reads (steps.Optimizers): rows recorded as trained (and of those, the
    ones that were their images pixel by pixel), rows recorded as only evaluated, each DataLoader
    pass that yielded with the indices its batches named, and rows of yielded batches fed whole
    to a training call."""

    def __init__(self) -> None:
        self.trained: set[int] = set()
        self.exact: set[int] = set()
        self.evaluated: set[int] = set()
        self.yielding: list[tuple[TrainPass, set[int]]] = []
        self.fed: set[int] = set()


class Shared:
    """What every observer reads: the dataset's index, the counts that order the run (optimizer
    steps, training batches, test batches), the modules called, the training passes and the
    optimizers' table (both written in the record), and the DataLoader fetches under way."""

    def __init__(self, index: ImageIndex, classes: int, serials: Serials) -> None:
        self.index = index
        self.classes = classes
        self.serials = serials
        self.steps = 0  # counted optimizer steps
        self.clock = 0  # counts training batches, to tell which pass an optimizer step follows
        self.test_batches = 0
        self.modules: dict[int, weakref.ref[torch.nn.Module]] = {}  # every module a call read
        self.train_passes: list[TrainPass] = []  # DataLoader and content passes, as they began
        # optimizer serial -> its entry in the record
        self.optimizers: dict[int, dict[str, Any]] = {}
        self.since_step = SinceStep()
        self._fetches: dict[int, int] = {}  # thread -> DataLoader batches it is building

    def module_serial(self, module: torch.nn.Module) -> int:
        serial = self.serials.of(module)
        self.modules.setdefault(serial, weakref.ref(module))
        return serial

    def open_pass(self, source: str, size: int, stepping: bool) -> TrainPass:
        """A new pass over the training images, from now on."""
        track = TrainPass(source, size, stepping, self.steps)
        self.train_passes.append(track)
        return track

    # -- DataLoader fetches, per thread (their transforms are modules, not the model) -----------
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


class Call:
    """One outermost module call as read once for every observer (or, when the outermost call had
    no image rows first, the first call inside it): its module, its first argument, whether it
    computes gradients (``graded``) and also runs in training mode (``stepping``), the dataset
    images its rows are (``found``, by split) and the split most of its upright rows are
    (``match``). ``train``: the training rows that an observer read (training.Draws sets it: by key,
    or by the per-pixel map when no key named any row), which the observers after it read."""

    __slots__ = ("module", "rows", "graded", "stepping", "found", "match", "tests", "train")

    def __init__(
        self,
        module: torch.nn.Module,
        rows: Any,
        graded: bool,
        stepping: bool,
        found: dict[str, Match],
        match: Match | None,
    ) -> None:
        self.module, self.rows, self.graded, self.stepping = module, rows, graded, stepping
        self.found, self.match = found, match
        # Its upright rows are mostly test images: the model's predictions on them follow.
        self.tests = match is not None and match.split == "test"
        self.train: Match | None = None

    @property
    def batch(self) -> int | None:
        rows = self.rows
        return rows.shape[0] if isinstance(rows, torch.Tensor) and rows.dim() > 0 else None


class Observer:
    """Every event, declared once, with what it means; an observer implements those it needs.

    Each observer owns its own pending state: what one event leaves for a later one (a test batch
    whose predictions the call's output brings, a draw whose training a step decides) stays in the
    observer that set it."""

    # -- module calls ---------------------------------------------------------------------------
    def batch_fed(self, module: torch.nn.Module, rows: Any) -> None:
        """The batch a training DataLoader just yielded went whole into a call with gradients in
        training mode (its rows are not read: the DataLoader's pass records them)."""

    def call_begins(self, call: Call) -> None:
        """An outermost call (``Call``) over something else: test images, training images read by
        their key or the per-pixel map, or rows of neither. Draws comes before the observers that
        read ``call.train``."""

    def call_ends(self, module: torch.nn.Module, output: Any) -> None:
        """The outermost call returned ``output`` (every outermost call, whatever began it)."""

    # -- optimizer steps ------------------------------------------------------------------------
    def step_begins(self, optimizer: torch.optim.Optimizer, serial: int) -> None:
        """A counted step of ``optimizer`` began (before any of the optimizer's own pre-hooks)."""

    def update_begins(self, optimizer: torch.optim.Optimizer, serial: int) -> None:
        """A torch optimizer class's own update began, however it was reached (counted or not)."""

    def update_done(self, optimizer: torch.optim.Optimizer, serial: int) -> None:
        """The update of a counted step is done, before any post-hook of the optimizer's own."""

    def step_taken(self, optimizer: torch.optim.Optimizer, serial: int) -> None:
        """A counted step ended; ``Shared.steps`` does not count it yet (what it settles belongs
        to the steps before it)."""

    def step_counted(self, optimizer: torch.optim.Optimizer, serial: int) -> None:
        """The step just taken is counted in ``Shared.steps``; ``Shared.since_step`` still holds
        what was drawn before it (it is emptied after this event)."""

    # -- parameters, checkpoints, DataLoaders --------------------------------------------------
    def parameter_added(self, module: Any, name: str, param: torch.Tensor) -> None:
        """A parameter needing gradients was registered on a module."""

    def initialised(self, tensor: torch.Tensor) -> None:
        """A ``torch.nn.init`` function filled ``tensor``."""

    def state_taken(self, module: torch.nn.Module) -> None:
        """A module's state was taken (the outermost ``state_dict()``)."""

    def state_loaded(self, module: torch.nn.Module) -> None:
        """Weights were loaded into a module (``load_state_dict``)."""

    def loader_batch(self, track: TrainPass, indices: list[int], batch: Any) -> None:
        """A DataLoader over the training images yielded ``batch``, its sampler's ``indices``
        into the training images, in its pass ``track`` (``Shared.open_pass``)."""

    # -- the record -----------------------------------------------------------------------------
    def finish(self) -> None:
        """The record is about to be written: nothing waits any longer."""

    def export(self, record: dict[str, Any]) -> None:
        """Add this observer's part of the record."""


EVENTS = tuple(
    name for name, value in vars(Observer).items() if callable(value) and not name.startswith("_")
)
