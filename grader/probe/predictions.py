"""Observers of the model's predictions (events.py): its passes over the test images, paired by
content with the first later output of shape (batch, classes) (``TestPasses``), and its last
evaluation over rows no key named (``Evaluations``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from grader.probe.content import Match
from grader.probe.events import Call, Observer, Shared
from grader.probe.passes import PRECISIONS, Evaluation, TestPass, class_scores, precision, predict
from grader.probe.training import TestTraining

MAX_EXPORTED_PREDICTIONS = 50  # test passes whose predictions are exported (the last ones)


class TestPasses(Observer):
    """Each predictor's passes over the test images, and the test images evaluated flipped (the
    other view of test-time augmentation)."""

    __test__ = False  # not a pytest class

    def __init__(self, shared: Shared, training: TestTraining) -> None:
        self.shared = shared
        self.training = training  # told when a test batch went through a stepping call
        self.test_passes: list[TestPass] = []
        # input module serial -> two rows of its last test input
        self.samples: dict[int, torch.Tensor] = {}
        # the capture's snapshot, as a pass completes
        self.on_complete: Callable[[TestPass], None] | None = None
        # module -> (step, test images seen flipped)
        self.mirrored: dict[int, tuple[int, torch.Tensor]] = {}
        # module -> (its last test batch, the images in it)
        self._upright: dict[int, tuple[int, set[int]]] = {}
        self._open: dict[tuple[int, int], TestPass] = {}
        # The test batch whose output is awaited: its match, input module, exact rows and whether it
        # stepped.
        self._pending: tuple[Match, int, torch.Tensor, bool] | None = None

    def call_begins(self, call: Call) -> None:
        test = call.found.get("test")
        if test is not None and test.flipped and not call.stepping:
            self._mirror(call.module, test)
        if call.tests:
            assert call.match is not None
            serial = self.shared.module_serial(call.module)
            rows = call.rows.detach().clone()  # the exact rows this call fed the model
            self._pending = (call.match, serial, rows, call.stepping)
            self.samples[serial] = rows[:2]
        elif call.train is not None or (
            self._pending is not None and call.batch != self._pending[0].batch
        ):
            # training rows, or another computation: the test batch's output will not come
            self._pending = None

    def call_ends(self, module: torch.nn.Module, output: Any) -> None:
        if self._pending is None:
            return
        match, first, rows, stepping = self._pending
        scores = class_scores(output, match.batch, self.shared.classes)
        if scores is None:
            return
        self._pending = None
        classes, confidence = predict(scores)
        predictor = (first, self.shared.module_serial(module))
        self._test_rows(predictor, match, rows, classes, confidence, precision(scores), stepping)

    def _mirror(self, module: torch.nn.Module, match: Match) -> None:
        """Test images a module evaluated flipped left to right since the last optimizer step,
        beside their upright rows (in the same call, or the module's test batch just before): the
        other view of test-time augmentation. A separate pass over mirror images (a robustness
        check) is none."""
        shared = self.shared
        serial = shared.module_serial(module)
        step, seen = self.mirrored.get(serial, (-1, None))
        if step != shared.steps or seen is None:
            seen = torch.zeros(shared.index.sizes["test"], dtype=torch.bool)
            self.mirrored[serial] = (shared.steps, seen)
        beside = {
            group[0] for p, group in zip(match.positions, match.indices) if p not in match.flipped
        }
        batch, upright = self._upright.get(serial, (-1, set()))
        if batch == shared.test_batches:
            beside |= upright
        turned = [
            group[0]
            for p, group in zip(match.positions, match.indices)
            if p in match.flipped and len(group) == 1 and group[0] in beside
        ]
        seen[torch.tensor(turned, dtype=torch.long)] = True

    def mirrored_all(self, serial: int, step: int) -> bool:
        """Whether the module evaluated every test image flipped, with the weights of optimizer
        step ``step``."""
        at, seen = self.mirrored.get(serial, (-1, None))
        return at == step and seen is not None and bool(seen.all())

    def _test_rows(
        self,
        predictor: tuple[int, int],
        match: Match,
        inputs: torch.Tensor,
        predictions: torch.Tensor,
        confidence: torch.Tensor,
        arithmetic: str,
        stepping: bool,
    ) -> None:
        shared = self.shared
        size = shared.index.sizes["test"]
        current = self._open.get(predictor)
        singles = torch.tensor(
            [group[0] for group in match.indices if len(group) == 1], dtype=torch.long
        )
        if (
            current is None
            or current.rows >= size
            or current.end_step != shared.steps
            or bool((current.predictions[singles] >= 0).any())
        ):
            current = TestPass(predictor, size, shared.steps)
            current.first_batch = shared.test_batches + 1
            self._open[predictor] = current
            self.test_passes.append(current)
        rows = torch.tensor(
            [p for p, group in zip(match.positions, match.indices) for _ in group], dtype=torch.long
        )
        indices = torch.tensor([i for group in match.indices for i in group], dtype=torch.long)
        current.predictions[indices] = predictions[rows].to(torch.int8)
        current.confidence[indices] = confidence[rows].to(torch.float16)
        current.rows += len(match.positions)
        current.inputs.append(inputs)
        current.row_classes.append(predictions.to(torch.int8))
        current.precision = max(current.precision, arithmetic, key=PRECISIONS.index)
        current.batches += 1
        shared.test_batches += 1
        current.last_batch = shared.test_batches
        self._upright[predictor[0]] = (shared.test_batches, set(indices.tolist()))
        current.end_step = shared.steps
        self.training.since_step = self.training.since_step or stepping
        if bool((current.predictions >= 0).all()):
            current.complete = True
            del self._open[predictor]
            # only the last complete pass keeps what the capture needs
            for other in self.test_passes:
                if other is not current and other.complete and other.inputs:
                    other.inputs, other.row_classes, other.snapshot = [], [], None
            if self.on_complete is not None:
                self.on_complete(current)

    def export(self, record: dict[str, Any]) -> None:
        complete = [p for p in self.test_passes if p.complete]
        last = self.test_passes[-MAX_EXPORTED_PREDICTIONS:] + complete[-MAX_EXPORTED_PREDICTIONS:]
        keep = set(map(id, last))
        record["test_passes"] = [p.export(id(p) in keep) for p in self.test_passes[-2000:]]


class Evaluations(Observer):
    """The model's last evaluation (eval mode or no grad) over rows the content key did not name: a
    test pass under a per-pixel preprocessing looks like this; the trusted side verifies it
    (capture.py)."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.evaluation = Evaluation(-1, -1)
        # an evaluation call's, until its output is known
        self._input: tuple[int, torch.Tensor] | None = None

    def call_begins(self, call: Call) -> None:
        """Keep an evaluation call's input (rows of an image's size) until its output is known."""
        if call.tests or call.train is not None:
            return
        self._input = None
        value = call.rows
        if (
            call.stepping
            or not isinstance(value, torch.Tensor)
            or value.dim() < 2
            or value.shape[0] == 0
        ):
            return
        if not value.is_floating_point() or value[0].numel() != self.shared.index.spec.values:
            return
        self._input = (self.shared.module_serial(call.module), value.detach().clone())

    def call_ends(self, module: torch.nn.Module, output: Any) -> None:
        if self._input is None:
            return
        (serial, rows), self._input = self._input, None
        scores = class_scores(output, rows.shape[0], self.shared.classes)
        if self.shared.module_serial(module) != serial or scores is None:
            return
        steps = self.shared.steps
        if self.evaluation.serial != serial or self.evaluation.step != steps:
            self.evaluation = Evaluation(serial, steps)
        self.evaluation.add(rows, predict(scores)[0].to(torch.int8), precision(scores))
