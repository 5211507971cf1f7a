"""Observers of what the model trained on (events.py): the training images calls drew by content
and whether a gradient or a step followed (``Draws``), the batches training DataLoaders yielded
(``Loaders``), and the test images whose rows' gradient reached the model before a step
(``TestTraining``)."""

from __future__ import annotations

import os
import random
from collections import Counter
from typing import Any

import torch

from grader.probe.content import Match, PerPixel
from grader.probe.events import Call, Observer, Shared
from grader.probe.guard import guarded
from grader.probe.passes import Draw, TrainPass, bitmap, class_scores, graded_outputs

MAX_LEARNING_ROWS = 8192  # rows kept for PerPixel to read again once it has learned its map
SPOT_CHECK = 8  # one in this many batches a training DataLoader yields is looked at for test images


class TestTraining(Observer):
    """Test images in training calls, per row: whether their gradient reached the model is known in
    backward, and whether a step followed."""

    __test__ = False  # not a pytest class

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self._watch: Match | None = None  # test rows of the current call, awaiting its output
        self._backward: list[int] = []  # test images whose rows got a gradient since the last step
        # and a step followed
        self.trained = torch.zeros(shared.index.sizes.get("test") or 0, dtype=torch.bool)
        self.rows_trained = 0
        # optimizer steps right after test images went through the model with grad in train mode
        self.steps = 0
        self.since_step = False  # test images went through a stepping call since the last step

    def watch(self, match: Match | None) -> None:
        self._watch = match

    def call_begins(self, call: Call) -> None:
        # trained on only if their rows' gradient reaches the model
        if call.graded and "test" in call.found:
            self._watch = watch = self.shared.index.verified(call.found["test"], call.rows)
            mostly = watch is not None and 2 * len(watch.positions) >= watch.batch
            self.since_step = self.since_step or (call.stepping and mostly)  # either way up

    def call_ends(self, module: torch.nn.Module, output: Any) -> None:
        """Test images went into a call with gradients in training mode: a hook on the call's output
        tells, in backward, which of their rows' outputs got a gradient (trained the model)."""
        watch, self._watch = self._watch, None
        if watch is None:
            return
        positions = torch.tensor(watch.positions, dtype=torch.long)
        images = [group[0] if len(group) == 1 else -1 for group in watch.indices]

        def reached(grad: torch.Tensor) -> None:
            rows = grad.detach()[positions.to(grad.device)].reshape(len(images), -1)
            hits = rows.ne(0).any(1).cpu().tolist()
            self._backward.extend(i for i, hit in zip(images, hits) if hit and i >= 0)

        hook = guarded(reached)
        for tensor in graded_outputs(output, watch.batch):
            tensor.register_hook(hook)

    def step_taken(self, optimizer: torch.optim.Optimizer, serial: int) -> None:
        if self.since_step:
            self.steps += 1
            self.since_step = False
        if self._backward:
            self.rows_trained += len(self._backward)
            self.trained[torch.tensor(self._backward, dtype=torch.long)] = True
            self._backward = []

    def export(self, record: dict[str, Any]) -> None:
        record.update(
            test_steps=self.steps,
            test_rows_trained=self.rows_trained,
            test_images_trained=int(self.trained.sum()),
        )


class Draws(Observer):
    """Training images calls fed the model, read by content (content.py), and whether each draw
    trained it: the passes by content, and the rows steps trained."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.learning = Learning(shared)
        # training, evaluating
        self._content: dict[bool, TrainPass | None] = {True: None, False: None}
        self._undecided: Draw | None = None  # the last draw, until it is known whether it trained
        # draws of calls with gradients whose backward is not known yet
        self._waiting: list[Draw] = []
        self._hook: Draw | None = None  # the draw whose call's output gets a gradient hook
        # training rows evaluated without training: their output is awaited
        self._pending: Match | None = None
        self.stepped_rows = torch.zeros(shared.index.sizes.get("train") or 0, dtype=torch.bool)
        # of those, the rows that were their images
        self.stepped_exact = torch.zeros_like(self.stepped_rows)
        # rows of training calls with gradients that no image's key named (augmented, rounded)
        self.unread_rows = 0

    @property
    def training_pass(self) -> TrainPass | None:
        """The content pass of training rows under way."""
        return self._content[True]

    def batch_fed(self, module: torch.nn.Module, rows: Any) -> None:
        self._settle(followed_by_step=False)  # a new batch came before any step

    def call_begins(self, call: Call) -> None:
        if call.tests:
            self._pending = None
            return
        index, found, value, stepping = self.shared.index, call.found, call.rows, call.stepping
        train = found.get("train")
        exact = index.verified(train, value) if train is not None else None
        train = train or (self._per_pixel(value, stepping) if not found else None)
        call.train = train
        if train is not None:  # training images, however few among the rows: a draw of the split
            if stepping:
                named = (
                    {p for m in found.values() for p in m.positions}
                    if found
                    else set(train.positions)
                )
                self.unread_rows += train.batch - len(named)
            self._train_rows(train, stepping, exact)
            # a validation batch: its predictions follow
            self._pending = None if stepping else train
        elif self._pending is not None and call.batch != self._pending.batch:
            self._pending = None

    def call_ends(self, module: torch.nn.Module, output: Any) -> None:
        if self._hook is not None:
            self._hook_gradient(output)
        if self._pending is None:
            return
        scores = class_scores(output, self._pending.batch, self.shared.classes)
        if scores is not None:
            awaited, self._pending = self._pending, None
            self._valid_rows(awaited, scores.detach().argmax(1).cpu())

    def step_taken(self, optimizer: torch.optim.Optimizer, serial: int) -> None:
        self._settle(followed_by_step=True)

    def unattributed_step(self, serial: int) -> None:
        """A step of ``serial`` followed no batch of training images: it may count once the
        per-pixel map reads the rows kept."""
        self.learning.steps_after(serial)

    def finish(self) -> None:
        self._settle(followed_by_step=False, final=True)

    def export(self, record: dict[str, Any]) -> None:
        record.update(
            stepped_rows=bitmap(self.stepped_rows),
            stepped_loose=bitmap(self.stepped_rows & ~self.stepped_exact),
            unread_rows=self.unread_rows,
        )

    def _per_pixel(self, value: Any, stepping: bool) -> Match | None:
        """Rows standardized per pixel position (content.PerPixel). Until its map reads a whole
        batch, the training calls it could not read at all are kept (a few batches); then they are
        read again and, when all are training images, the steps that followed them count."""
        learning = self.learning
        match, again = learning.match(value, stepping)
        if again is None:
            return match
        self._settle(followed_by_step=False)
        for found in again:
            indices = [group[0] for group in found.indices if len(group) == 1]
            # read per pixel, not per image
            self._undecided = Draw(indices, True, loose=frozenset(indices))
            self._settle(followed_by_step=True)
            self.shared.since_step.trained.clear()
            self.shared.since_step.exact.clear()
        track = self._content[True]
        for serial, count in learning.steps.items():
            entry = self.shared.optimizers.get(serial)
            if entry is not None and track is not None:
                entry["unattributed"] = max(0, entry.get("unattributed", 0) - count)
                track.steps[serial] += count
        learning.done()
        return match

    def _train_rows(self, match: Match, stepping: bool, exact: Match | None = None) -> None:
        """Training images reached the model: whether they trained it is known by what follows (a
        gradient reaching their rows, or an optimizer step). ``exact``: the rows that are their
        images pixel by pixel; the others (named by their key alone) are drawn loosely."""
        self._settle(followed_by_step=False)
        # Images sharing one key (duplicates, rare collisions) are left out: which one it was is
        # unknown. in either mode: a model trained in eval mode still trains
        graded = torch.is_grad_enabled()
        indices = [group[0] for group in match.indices if len(group) == 1]
        sure = (
            {group[0] for group in exact.indices if len(group) == 1} if exact is not None else set()
        )
        draw = Draw(indices, False, waits=graded, loose=frozenset(indices) - sure)
        self._undecided = draw
        self._hook = draw if graded else None

    def _valid_rows(self, match: Match, predictions: torch.Tensor) -> None:
        """The model's classes for the training rows it just evaluated (the grader scores them)."""
        draw = self._undecided
        if draw is None:
            return
        singles = [p for p, group in zip(match.positions, match.indices) if len(group) == 1]
        rows = torch.tensor(singles, dtype=torch.long)
        if len(rows) == len(draw.indices):
            draw.predictions = predictions[rows]

    def _hook_gradient(self, output: Any) -> None:
        draw, self._hook = self._hook, None
        assert draw is not None
        hook = guarded(draw.reached)
        for tensor in graded_outputs(output, None):
            tensor.register_hook(hook)
            draw.hooked = True

    def _settle(self, followed_by_step: bool, final: bool = False) -> None:
        """Whether the last draw trained the model (``Draw.trains``); one with gradients whose
        backward has not come yet waits for the next step (two forward calls before one backward),
        and an evaluation with gradients on that never gets one (a validation pass without no_grad)
        trained nothing. ``final``: the record is written, nothing waits any longer."""
        draw, self._undecided = self._undecided, None
        if followed_by_step or draw is None or final:
            for waiting in self._waiting:
                self._record(waiting, waiting.trains(followed_by_step))
            self._waiting = []
        if draw is None:
            return
        if followed_by_step or final or draw.trained or not draw.waits:
            self._record(draw, draw.trains(followed_by_step))
        else:
            self._waiting.append(draw)

    def _record(self, draw: Draw, training: bool) -> None:
        indices, predictions, since = draw.indices, draw.predictions, self.shared.since_step
        if training and indices:  # rows that trained it, however the batch was built
            self.stepped_rows[torch.tensor(indices, dtype=torch.long)] = True
            exact = [i for i in indices if i not in draw.loose]
            self.stepped_exact[torch.tensor(exact, dtype=torch.long)] = True
            # One step's rows are one draw, however many calls fed them (a Flatten or a Normalize
            # module called before the model sees the batch too): a pass ends only when an image
            # comes back after a later step.
            indices = [i for i in indices if i not in since.trained]
            if not indices:
                return
            since.trained.update(indices)
            since.exact.update(i for i in indices if i not in draw.loose)
        elif not training:
            since.evaluated.update(indices)
        current = self._content[training]
        if current is None or bool(current.drawn[torch.tensor(indices, dtype=torch.long)].any()):
            if current is not None:
                current.complete = True
            current = self.shared.open_pass("content", self.shared.index.sizes["train"], training)
            self._content[training] = current
        self.shared.clock += 1
        current.draw(indices, self.shared.clock, None if training else predictions, draw.loose)


class Learning:
    """Training calls no key read while content.PerPixel learns its map, kept to be read again
    once it has (a few batches), and the unattributed steps after them."""

    def __init__(self, shared: Shared) -> None:
        self.per_pixel = PerPixel(shared.index)  # training rows standardized per pixel position
        self.kept: list[torch.Tensor] = []
        self.learned = False  # PerPixel read a whole batch (or gave up): nothing is kept any more
        self.steps: Counter[int] = Counter()  # optimizer -> unattributed steps after them

    def steps_after(self, serial: int) -> None:
        if self.kept:
            self.steps[serial] += 1

    def done(self) -> None:
        self.learned, self.kept, self.steps = True, [], Counter()

    def match(self, value: Any, stepping: bool) -> tuple[Match | None, list[Match] | None]:
        """The per-pixel map's reading of ``value``; and, when it has just read a whole batch and
        every call kept, those calls' rows (the caller records them, then calls ``done``)."""
        match = self.per_pixel.match(value, stepping)
        if self.learned or not stepping:
            return match, None
        if match is None:
            # it gave up
            if not self.per_pixel.hits and self.per_pixel.tries >= self.per_pixel.TRIES:
                self.done()
                return None, None
            kept = sum(rows.shape[0] for rows in self.kept)
            if isinstance(value, torch.Tensor) and kept + value.shape[0] <= MAX_LEARNING_ROWS:
                self.kept.append(value.detach().clone())
            return None, None
        if len(match.positions) < match.batch:
            return match, None  # read in part: the map still has positions to learn
        again = [self.per_pixel.match(rows, False) for rows in self.kept]
        if again and all(m is not None for m in again):
            return match, [m for m in again if m is not None]
        self.done()
        return match, None


class Loaders(Observer):
    """The batches training DataLoaders yielded (their passes record the indices their samplers
    drew), and whether the images a batch holds are those its sampler named."""

    def __init__(self, shared: Shared, tests: TestTraining) -> None:
        self.shared = shared
        self.tests = tests
        # the training DataLoader pass that last yielded a batch
        self.loader: TrainPass | None = None
        self.yielded: Any = None  # the first tensor of that batch
        self.claimed: list[int] | None = None  # the training indices its sampler named
        self.mismatch = 0  # yielded batches whose images were not those named
        # which batches are looked at: not the notebook's seed
        self._spot = random.Random(os.urandom(16))

    def loader_batch(self, track: TrainPass, indices: list[int], batch: Any) -> None:
        self.shared.clock += 1
        track.draw(indices, self.shared.clock)
        self.loader = track
        self.claimed = indices
        yielding = self.shared.since_step.yielding
        named = next((claimed for other, claimed in yielding if other is track), None)
        if named is None:
            named = set()
            yielding.append((track, named))
        named.update(indices)
        first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
        self.yielded = first if isinstance(first, torch.Tensor) else None

    def batch_fed(self, module: torch.nn.Module, rows: Any) -> None:
        """Its rows are looked at only now and then (a secret one batch in SPOT_CHECK), for test
        images a wrapper Dataset may slip in and for images other than those its sampler named, and
        at every batch once either was seen."""
        self.shared.since_step.fed.update(self.claimed or ())  # not read, but named by the loader
        if self.tests.rows_trained or self.mismatch or self._spot.randrange(SPOT_CHECK) == 0:
            index = self.shared.index
            seen = index.matches(rows)
            if "test" in seen:
                self.tests.watch(index.verified(seen["test"], rows))
            self._check_claimed(seen.get("train"))

    def _check_claimed(self, train: Match | None) -> None:
        """The training images a yielded batch holds are those its sampler named (a Dataset
        wrapper that remaps indices breaks that); only rows read whole count (augmented ones are
        not read)."""
        if train is None or self.claimed is None or 2 * len(train.positions) < train.batch:
            return
        held = {group[0] for group in train.indices if len(group) == 1}
        if not held <= set(self.claimed):
            self.mismatch += 1

    def stepping_loader(self, since: int) -> tuple[TrainPass | None, bool]:
        """The DataLoader pass whose batch a step trained on, among those that yielded since the
        optimizer's previous step (``zip(train_loader, valid_loader)`` yields two): the one whose
        rows were trained (or fed, as it yielded them, to a training call), else the last whose rows
        were not only evaluated (else none). And whether the step trained mostly on rows it did
        not yield (images fed beside its batches, perhaps with a second loader yielding alongside to
        hide them): rows named by their key alone (a mixup blend whose key happens to be another
        image's) are no evidence of that."""
        drawn = self.shared.since_step
        candidates = [(track, named) for track, named in drawn.yielding if track.last_batch > since]
        if not candidates:
            last = self.loader
            return (last, False) if last is not None and last.last_batch > since else (None, False)
        trained = drawn.trained | drawn.fed
        track, named = max(reversed(candidates), key=lambda c: len(c[1] & trained))
        if not named & trained:
            kept = [c for c in candidates if not c[1] <= drawn.evaluated]
            if not kept:
                # a validation loader's batches, evaluated only: the step trained on others
                return None, False
            track, named = kept[-1]
        beside = (drawn.exact | drawn.fed) - named
        return track, len(beside) > len(trained & named)

    def export(self, record: dict[str, Any]) -> None:
        record["loader_mismatch"] = self.mismatch
