from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from grader.judge.measure import measure, reported_accuracy
from grader.judge.run_facts import Training
from grader.model.record import read_probe
from grader.model.results import ExecutionRecord, Status
from grader.probe import RECORD_VERSION

LABELS = tuple(i % 10 for i in range(100))


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        ("\nTest Accuracy (Overall): 55.57% (5557/10000)\n", 55.57),
        (
            "Test Accuracy (Overall): 80% (8000/10000)\nTest Accuracy (Overall): 89.37% "
            "(8937/10000)",
            89.37,
        ),
        ("Epoch 10 val acc 91.2%\ntest accuracy: 90.1 %\n", 90.1),
        ("Accuracy of the network on the 10000 test images: 88 %", 88.0),
        ("loss 0.31\n", None),
        ("test_accuracy: 0.8884", 88.84),  # a fraction is a fraction, never a mismatch
        ("Test accuracy: 89.1", 89.1),
        ("Final test accuracy is 89.55", 89.55),
        ("測試準確率：89.10%", 89.1),
        ("测试准确率: 0.891", 89.1),
        (
            "Test Accuracy of     0: 83% (834/1000)\nTest Accuracy (Overall): 88.9% (8890/10000)\n"
            "Test Accuracy of     9: 95% (950/1000)",
            88.9,
        ),
        ("Test set: Average loss: 0.3, Accuracy: 8910/10000 (89%)", 89.0),
        ("Test Acc: 0.9012 | loss 0.31", 90.12),
        ("train acc: 0.95\nvalid acc 0.93\nEpoch 3: train_acc=0.91 val_acc=0.90", None),
        ("驗證準確率: 91.0%", None),
        ("Final Train Acc: 90.46% | Test Acc: 87.41%", 87.41),  # two public notebooks' last lines
        ("train_accuracy: 0.9129 | test_accuracy: 0.8841", 88.41),
        ("Epoch 10, train acc 0.93, val acc 0.90, test acc 0.885", 88.5),
        ("Epoch 10 | Train Acc: 90.46% | Val Acc: 88.00%", None),
    ],
)
def test_reported_accuracy(printed: str, expected: float | None) -> None:
    assert reported_accuracy(printed) == expected


def _record(
    tmp_path: Path, probe: dict[str, Any] | str | None, printed: str = ""
) -> tuple[ExecutionRecord, Any]:
    """An execution record and the probe record as the grader reads it back from disk."""
    if probe is not None:
        (tmp_path / "probe.json").write_text(
            probe if isinstance(probe, str) else json.dumps({"version": RECORD_VERSION, **probe})
        )
    record = read_probe(tmp_path, "probe.json", None).record
    return ExecutionRecord(Status.GRADED, None, None, 1.0, None, record, printed), record


def _predictions(correct: int) -> list[int]:
    return [y if i < correct else (y + 1) % 10 for i, y in enumerate(LABELS)]


def _test_pass(
    predictions: list[int],
    predictor: tuple[int, int] = (1, 1),
    complete: bool = True,
    batches: tuple[int, int] = (1, 1),
    steps: tuple[int, int] = (100, 100),
) -> dict[str, Any]:
    """A test pass as the probe exports it: one signed byte per test image, -1 where none."""
    return {
        "predictor": list(predictor),
        "covered": sum(p >= 0 for p in predictions),
        "complete": complete,
        "start_step": steps[0],
        "end_step": steps[1],
        "first_batch": batches[0],
        "last_batch": batches[1],
        "predictions": base64.b64encode(bytes(p % 256 for p in predictions)).decode(),
    }


def test_student_pass_is_graded_and_printed_value_compared(tmp_path: Path) -> None:
    probe = {"test_passes": [_test_pass(_predictions(56))], "model": {}}
    m = measure(*_record(tmp_path, probe, "Test Accuracy (Overall): 56.00% (56/100)"), LABELS, 0.5)
    assert (m.accuracy, m.correct, m.total, m.source, m.flags) == (
        56.0,
        56,
        100,
        "student-test-pass",
        (),
    )


def test_the_last_complete_pass_is_graded(tmp_path: Path) -> None:
    passes = [
        _test_pass(_predictions(40)),
        _test_pass(_predictions(70), batches=(2, 2)),
        _test_pass([-1] * 50 + _predictions(100)[50:], complete=False, batches=(3, 3)),
    ]
    m = measure(*_record(tmp_path, {"test_passes": passes, "model": {}}), LABELS, 0.5)
    assert m.accuracy == 70.0 and "several-models" not in m.flags


def test_probe_pass_is_the_fallback(tmp_path: Path) -> None:
    probe = {
        "test_passes": [],
        "probe_pass": {
            "predictions": _predictions(90),
            "preprocessing": "assumed: ToTensor() only",
        },
        "model": {},
    }
    m = measure(*_record(tmp_path, probe), LABELS, 0.5)
    assert (m.accuracy, m.source) == (90.0, "probe-pass")
    assert "no-test-pass" in m.flags and "assumed-preprocessing" in m.flags


def test_an_incomplete_student_pass_is_completed_by_the_probe(tmp_path: Path) -> None:
    student = [-1] * 10 + _predictions(100)[10:]
    probe = {
        "test_passes": [_test_pass(student, complete=False)],
        "probe_pass": {"predictions": _predictions(98)},
        "model": {},
    }
    m = measure(*_record(tmp_path, probe), LABELS, 0.5)
    assert m.accuracy == 100.0 and "test-pass-incomplete" in m.flags


def test_interleaved_models_are_an_ensemble(tmp_path: Path) -> None:
    passes = [
        _test_pass(_predictions(80), (1, 1), batches=(1, 9)),
        _test_pass(_predictions(90), (2, 2), batches=(2, 10)),
    ]
    m = measure(*_record(tmp_path, {"test_passes": passes, "model": {}}), LABELS, 0.5)
    assert m.accuracy == 90.0 and "several-models" in m.flags


@pytest.mark.parametrize(
    "probe",
    [
        {
            "test_passes": [
                {
                    **_test_pass(_predictions(50)),
                    "predictions": base64.b64encode(bytes([11] * 100)).decode(),
                }
            ]
        },
        {
            "test_passes": [
                {
                    **_test_pass(_predictions(50)),
                    "predictions": base64.b64encode(bytes(99)).decode(),
                }
            ]
        },
        {"test_passes": [{**_test_pass(_predictions(50)), "predictions": "not base64!"}]},
        {"test_passes": [{**_test_pass(_predictions(50)), "predictions": [0] * 100}]},
    ],
)
def test_malformed_predictions_are_never_trusted(tmp_path: Path, probe: dict[str, Any]) -> None:
    m = measure(*_record(tmp_path, {**probe, "model": {}}), LABELS, 0.5)
    assert m.accuracy is None and "probe-output-invalid" in m.flags


def test_no_model_and_unreadable_probe(tmp_path: Path) -> None:
    m = measure(
        *_record(tmp_path, {"test_passes": [], "probe_pass": None, "model": None}), LABELS, 0.5
    )
    assert m.accuracy is None and m.problem is not None and "never built a model" in m.problem
    m = measure(*_record(tmp_path, "not json"), LABELS, 0.5)
    assert m.accuracy is None and m.problem is not None and "no readable record" in m.problem


def _trained() -> Training:
    return Training(
        train_size=60000,
        lineage="direct",
        passes=(),
        groups=(),
        trained=0,
        changed_without_optimizer=False,
        unplaced_steps=0,
        last_step=1000,
        first_step=1,
    )


@pytest.mark.parametrize(("graded", "flagged"), [(70, True), (80, False), (75, False)])
def test_a_checkpoint_chosen_on_the_test_set_is_flagged(
    tmp_path: Path, graded: int, flagged: bool
) -> None:
    """Test passes during training scored 60, 70 (best... until the last), 65, 80; the graded model
    predicts exactly like one of them (70: the best before the end) or like the last one (80)."""
    epochs = [
        _test_pass(_predictions(c), batches=(k, k), steps=(100 * k, 100 * k))
        for k, c in enumerate((60, 70, 65, 68), 1)
    ]
    final = _test_pass(_predictions(graded), batches=(9, 9), steps=(1000, 1000))
    if graded == 80:
        epochs[-1] = _test_pass(_predictions(80), batches=(4, 4), steps=(400, 400))
    record, probe = _record(tmp_path, {"test_passes": [*epochs, final], "model": {}})
    m = measure(record, probe, LABELS, 0.5, training=_trained())
    assert ("test-set-selection" in m.flags) is flagged, m.notes
    if flagged:
        assert any(
            "predicts exactly as at evaluation 2, the best of them on the test set (70.00%)" in n
            for n in m.notes
        )


def test_steps_after_test_batches_are_flagged(tmp_path: Path) -> None:
    probe = {"test_passes": [_test_pass(_predictions(99))], "test_steps": 750, "model": {}}
    m = measure(*_record(tmp_path, probe), LABELS, 0.5)
    assert "trained-on-test-images" in m.flags and m.accuracy == 99.0
    m = measure(*_record(tmp_path, {**probe, "test_steps": 2}), LABELS, 0.5)
    assert "trained-on-test-images" not in m.flags


def test_a_checkpoint_chosen_on_the_test_set_is_flagged_without_a_final_test_pass(
    tmp_path: Path,
) -> None:
    """The notebook hides its final evaluation (noised images): the grader's own pass over the
    graded
    model is compared with the test passes made while it trained."""
    epochs = [
        _test_pass(_predictions(c), batches=(k, k), steps=(100 * k, 100 * k))
        for k, c in enumerate((60, 70, 65, 68), 1)
    ]
    probe = {"test_passes": epochs, "probe_pass": {"predictions": _predictions(70)}, "model": {}}
    record, probe_record = _record(tmp_path, probe)
    # trained until step 1000, last pass at 400
    m = measure(record, probe_record, LABELS, 0.5, training=_trained())
    assert m.source == "probe-pass" and m.accuracy == 70.0
    assert (
        "stale-test-pass" in m.flags
        and "test-set-selection" in m.flags
        and "no-test-pass" not in m.flags
    )


def test_a_figure_printed_above_chance_under_hidden_labels_is_not_believed() -> None:
    """With the test labels hidden, an honest notebook prints about 10%; one that prints 95% did not
    compute it on the test set (a hard-coded figure): flagged, beside the measured accuracy."""
    from grader.judge.measure import reported_findings
    from grader.model.findings import HIDDEN_LABELS_NOTE, Flag

    honest = reported_findings(10.13, 90.04, 0.5, compare=False, finished=True)
    assert [(f.flag, f.note) for f in honest] == [(None, HIDDEN_LABELS_NOTE)]
    bragger = reported_findings(95.0, 55.72, 0.5, compare=False, finished=True)
    assert [f.flag for f in bragger] == [None, Flag.REPORTED_ACCURACY_MISMATCH]
    # five classes: chance is 20%, and a small shuffled test set strays further from it
    five = reported_findings(27.0, 90.0, 0.5, compare=False, finished=True, classes=5)
    assert [f.flag for f in five] == [None]
    assert reported_findings(45.0, 90.0, 0.5, False, True, classes=5)[1].note is not None
    assert (
        "printed 95% although the test labels were hidden" in bragger[1].note
        and "55.72%" in bragger[1].note
    )
