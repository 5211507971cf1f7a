"""Trusted measurement: compare the exported predictions with the official labels.

Runs in the grader's process. The probe file was written by the student's process, so it is
read as plain JSON and checked field by field (model/probe_facts.py); nothing in it is executed or
unpickled.
"""

from __future__ import annotations

from collections.abc import Sequence

from grader.judge.run_facts import (
    Training,
    graded_test_pass,
    half_floats,
    loaded_after_training,
    stale,
)
from grader.judge.stated import reported_accuracy
from grader.model.findings import HIDDEN_LABELS_NOTE, Finding, Flag
from grader.model.probe_facts import ProbeFacts, ProbePass, TestPassFacts
from grader.model.results import ExecutionRecord, Measurement, Status

TRAINED_ON_TEST_STEPS = 10  # fewer may be a test loss computed beside a training step


def _probe_predictions(section: ProbePass | None, total: int, classes: int) -> list[int] | None:
    """The probe's fallback predictions when well-formed, else None."""
    values = section.predictions if section is not None else None
    if values is None or len(values) != total:
        return None
    if not all(0 <= v < classes for v in values):
        return None
    return list(values)


def _pass_predictions(
    test_pass: TestPassFacts | None, total: int, classes: int
) -> list[int] | None:
    """A test pass's predictions, -1 where it predicted nothing; None when missing or malformed."""
    predictions = test_pass.of(total) if test_pass is not None else None
    if predictions is None:
        return None
    values = [b - 256 if b > 127 else b for b in predictions]
    return values if all(-1 <= v < classes for v in values) else None


def _confidence(section: ProbePass | None, total: int) -> tuple[float, ...] | None:
    """The probe's fallback confidences when well-formed (numbers in [0, 1]), else None."""
    values = section.confidence if section is not None else None
    return values if values is not None and len(values) == total else None


MOST_CONFIDENT_WRONG = 10


def confidently_wrong(
    predictions: list[int],
    labels: tuple[int, ...],
    confidence: tuple[float, ...] | None,
    most: int = MOST_CONFIDENT_WRONG,
) -> tuple[tuple[int, int, int, float], ...]:
    """The wrongly predicted test images the model was surest of: (index, label, predicted,
    confidence)."""
    if confidence is None:
        return ()
    wrong = [
        (i, y, p, confidence[i])
        for i, (p, y) in enumerate(zip(predictions, labels))
        if p != y and p >= 0
    ]
    return tuple(sorted(wrong, key=lambda w: (-w[3], w[0]))[:most])


def _accuracy(predictions: list[int], labels: tuple[int, ...]) -> tuple[int, float]:
    correct = sum(1 for p, y in zip(predictions, labels) if p == y)
    return correct, 100.0 * correct / len(labels)


def _several_models(passes: Sequence[TestPassFacts], graded: TestPassFacts) -> list[TestPassFacts]:
    """Passes of other models over the test images interleaved with the graded one (an ensemble)."""
    return [
        p
        for p in passes
        if p.predictor != graded.predictor
        and p.first_batch <= graded.last_batch
        and graded.first_batch <= p.last_batch
    ]


def test_set_selection(
    probe: ProbeFacts,
    passes: Sequence[TestPassFacts],
    graded: TestPassFacts | None,
    chosen: list[int],
    training: Training | None,
    labels: tuple[int, ...],
    classes: int,
) -> str | None:
    """Evidence that the graded model is a checkpoint chosen by its test accuracy: its predictions
    are exactly those of a test pass made while it trained, that pass scored best among them, and it
    was not the last (reloading the last epoch changes nothing). A checkpoint chosen on validation
    that happens to be the best on the test set is flagged too: the TA reads the evidence."""
    if training is None or training.lineage == "none" or not training.last_step:
        return None
    total = len(labels)
    during = [
        p
        for p in passes
        if p is not graded
        and p.complete
        and training.first_step <= p.start_step <= training.last_step
    ]
    scored = [
        (p, predictions)
        for p in during
        if (predictions := _pass_predictions(p, total, classes)) is not None
    ]
    if len(scored) < 2:
        return None
    accuracies = [_accuracy(predictions, labels)[0] for _, predictions in scored]
    same = [k for k, (_, predictions) in enumerate(scored) if predictions == chosen]
    if not same or same[-1] == len(scored) - 1 or accuracies[same[-1]] < max(accuracies):
        return None
    k = same[-1]
    loaded = loaded_after_training(probe, training)
    how = (
        f"; a checkpoint was loaded into it after optimizer step {loaded}"
        if loaded is not None
        else ""
    )
    return (
        f"the test set was evaluated {len(scored)} times while the graded model trained; the "
        f"graded model predicts exactly as at evaluation {k + 1}, the best of them on the test set "
        f"({100 * accuracies[k] / total:.2f}%), not the last{how}: its checkpoint looks chosen "
        "by test accuracy"
    )


def measure(
    record: ExecutionRecord,
    probe: ProbeFacts | None,
    labels: tuple[int, ...],
    tolerance: float,
    compare_reported: bool = True,
    classes: int = 10,
    training: Training | None = None,
) -> Measurement:
    """Accuracy from the notebook's own last complete test pass (recognised by content), else from
    the probe's fallback pass; with flags.

    ``probe`` is the probe's record (see model/record.py read_probe), None when there is none.
    ``compare_reported`` is False when the kernel saw shuffled test labels: what it printed then
    says nothing about the model. ``training`` (run_facts) tells whether the test set chose the
    checkpoint.
    """
    reported = reported_accuracy(record.outputs_text)
    found: list[Finding] = []
    unwatched = probe.health.unwatched_steps if probe is not None else 0
    if unwatched > 0:
        found.append(
            Finding(
                Flag.TRAINING_UNWATCHED,
                f"{unwatched} optimizer "
                f"step{'s' if unwatched != 1 else ''} ran while a DataLoader was building a "
                "batch (training inside a dataset): the grader could not see what those steps "
                "trained on",
            )
        )
    if probe is None:
        problem = None if record.reason else "the grader's probe wrote no readable record"
        return Measurement(None, reported, None, None, None, tuple(found), problem)
    total = len(labels)
    passes = probe.test.passes
    graded = graded_test_pass(passes)
    student = _pass_predictions(graded, total, classes)
    own = _probe_predictions(probe.probe_pass, total, classes)
    if graded is not None and student is None:
        found.append(Finding(Flag.PROBE_OUTPUT_INVALID))
    why = (
        stale(probe, graded, training)
        if graded is not None and graded.complete and own is not None
        else None
    )
    if why is not None:
        found.append(
            Finding(
                Flag.STALE_TEST_PASS,
                "the notebook's last test pass does not show "
                f"the graded model as it ended ({why}); the grader "
                "predicted the test set with the final model itself",
            )
        )
        student = None
    if student is not None and graded is not None:
        missing = [i for i, p in enumerate(student) if p == -1]
        if missing:
            found.append(
                Finding(
                    Flag.TEST_PASS_INCOMPLETE,
                    "the notebook's test pass covered "
                    f"{total - len(missing)} of {total} test images; "
                    + (
                        "the rest were predicted by the grader's own pass"
                        if own
                        else "the rest count as wrong"
                    ),
                )
            )
            if own is not None:
                for i in missing:
                    student[i] = own[i]
        predictions, source = student, "student-test-pass"
        sure = half_floats(graded.confidence) if not missing else None
        others = _several_models(passes, graded)
        if others:
            found.append(
                Finding(
                    Flag.SEVERAL_MODELS,
                    f"{len({p.predictor for p in others}) + 1} "
                    "models predicted the test images together (an "
                    "ensemble?); the grader measured the last one alone",
                )
            )
        test_steps = probe.test.steps
        if test_steps >= TRAINED_ON_TEST_STEPS:
            found.append(
                Finding(
                    Flag.TRAINED_ON_TEST_IMAGES,
                    f"{test_steps} optimizer steps came "
                    "right after test images went through the model with "
                    "gradients in training mode: it looks trained on the test set",
                )
            )
    elif own is not None:
        predictions, source = own, "probe-pass"
        sure = _confidence(probe.probe_pass, total)
        preprocessing = probe.probe_pass.preprocessing if probe.probe_pass is not None else None
        if why is None:
            shown = preprocessing if isinstance(preprocessing, str) else "preprocessing unknown"
            found.append(
                Finding(
                    Flag.NO_TEST_PASS,
                    "the notebook's model was never seen predicting the test images; the grader "
                    f"predicted them itself ({shown})",
                )
            )
        if isinstance(preprocessing, str) and preprocessing.startswith("assumed"):
            found.append(Finding(Flag.ASSUMED_PREPROCESSING))
    else:
        problem = (
            "the notebook never built a model (no nn.Module with parameters was found)"
            if not probe.model_found
            else f"the grader could not run the model on the test set ({probe.probe_error})"
        )
        return Measurement(None, reported, None, None, None, tuple(found), problem)
    # The graded predictions (the notebook's, or the grader's own pass over the graded model)
    # compared with the test passes made while it trained.
    selection = test_set_selection(probe, passes, graded, predictions, training, labels, classes)
    if selection:
        found.append(Finding(Flag.TEST_SET_SELECTION, selection))
    correct, accuracy = _accuracy(predictions, labels)
    accuracy = round(accuracy, 2)
    finished = record.status is Status.GRADED
    # After a failed run the accuracy is the model's at the error, not the notebook's result:
    # nothing to compare.
    found += reported_findings(
        reported, accuracy if finished else None, tolerance, compare_reported, finished, classes
    )
    return Measurement(
        accuracy,
        reported,
        correct,
        total,
        source,
        tuple(found),
        None,
        confusion(predictions, labels, classes),
        confidently_wrong(predictions, labels, sure),
    )


def chance_at_most(classes: int) -> float:
    """The most % a notebook can print for its test accuracy when the test labels are hidden from
    it: twice chance (20% of ten classes), at least ten points above it (a small test set of few
    classes strays further from chance)."""
    chance = 100.0 / max(classes, 1)
    return max(2 * chance, chance + 10.0)


def reported_findings(
    reported: float | None,
    accuracy: float | None,
    tolerance: float,
    compare: bool,
    finished: bool,
    classes: int = 10,
) -> tuple[Finding, ...]:
    """What the printed accuracy says beside the measured one (not compared when the labels were
    hidden: then only a figure no shuffled labels give, ``chance_at_most`` of ``classes``);
    ``accuracy`` None: nothing was measured, so no printed figure is called a mismatch."""
    if not compare:
        # the test set cannot give it
        if reported is not None and accuracy is not None and reported > chance_at_most(classes):
            return (
                Finding(None, HIDDEN_LABELS_NOTE),
                Finding(
                    Flag.REPORTED_ACCURACY_MISMATCH,
                    f"the notebook printed {reported:g}% although the test labels were hidden "
                    "from it (computed on the test set, that figure is at chance, about "
                    f"{100 / max(classes, 1):.0f}%), so it was not measured on the test set; the "
                    f"grader measured {accuracy:.2f}%",
                ),
            )
        return (Finding(None, HIDDEN_LABELS_NOTE),)
    if reported is None and finished:
        return (
            Finding(
                Flag.NO_REPORTED_ACCURACY,
                "no printed test accuracy was found in the notebook's output (a "
                "percentage, a fraction or N/M on a line naming the test accuracy)",
            ),
        )
    if reported is not None and accuracy is not None and abs(reported - accuracy) > tolerance:
        return (
            Finding(
                Flag.REPORTED_ACCURACY_MISMATCH,
                f"the notebook printed {reported:g}% but the grader measured {accuracy:.2f}%",
            ),
        )
    return ()


def confusion(
    predictions: list[int], labels: tuple[int, ...], classes: int
) -> tuple[tuple[int, ...], ...]:
    """Counts by (true class, predicted class) of the graded predictions."""
    counts = [[0] * classes for _ in range(classes)]
    for predicted, truth in zip(predictions, labels):
        if 0 <= predicted < classes and 0 <= truth < classes:
            counts[truth][predicted] += 1
    return tuple(tuple(row) for row in counts)
