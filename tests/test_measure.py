from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from grader.measure import measure, reported_accuracy
from grader.probe_file import read_probe
from grader.results import ExecutionRecord, Status

LABELS = tuple(i % 10 for i in range(100))


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        ("\nTest Accuracy (Overall): 55.57% (5557/10000)\n", 55.57),
        ("Test Accuracy (Overall): 80% (8000/10000)\nTest Accuracy (Overall): 89.37% (8937/10000)", 89.37),
        ("Epoch 10 val acc 91.2%\ntest accuracy: 90.1 %\n", 90.1),
        ("Accuracy of the network on the 10000 test images: 88 %", 88.0),
        ("loss 0.31\n", None),
        ("test_accuracy: 0.8884", 88.84),  # a fraction is a fraction, never a mismatch
        ("Test accuracy: 89.1", 89.1),
        ("Final test accuracy is 89.55", 89.55),
        ("測試準確率：89.10%", 89.1),
        ("测试准确率: 0.891", 89.1),
        ("Test Accuracy of     0: 83% (834/1000)\nTest Accuracy (Overall): 88.9% (8890/10000)\n"
         "Test Accuracy of     9: 95% (950/1000)", 88.9),
        ("Test set: Average loss: 0.3, Accuracy: 8910/10000 (89%)", 89.0),
        ("Test Acc: 0.9012 | loss 0.31", 90.12),
        ("train acc: 0.95\nvalid acc 0.93\nEpoch 3: train_acc=0.91 val_acc=0.90", None),
        ("驗證準確率: 91.0%", None),
    ],
)
def test_reported_accuracy(printed: str, expected: float | None) -> None:
    assert reported_accuracy(printed) == expected


def _record(tmp_path: Path, probe: dict[str, Any] | str | None, printed: str = "") -> tuple[ExecutionRecord, Any]:
    """An execution record and the probe record as the grader reads it back from disk."""
    if probe is not None:
        (tmp_path / "probe.json").write_text(probe if isinstance(probe, str) else json.dumps(probe))
    record = read_probe(tmp_path, "probe.json", None).record
    return ExecutionRecord(Status.GRADED, None, None, 1.0, None, record, printed), record


def _predictions(correct: int) -> list[int]:
    return [y if i < correct else (y + 1) % 10 for i, y in enumerate(LABELS)]


def test_student_pass_is_graded_and_printed_value_compared(tmp_path: Path) -> None:
    probe = {"student_pass": {"predictions": _predictions(56)}, "probe_pass": {"predictions": _predictions(56)}, "model": {}}
    m = measure(*_record(tmp_path, probe, "Test Accuracy (Overall): 95.00% (95/100)"), LABELS, 0.5)
    assert (m.accuracy, m.correct, m.source, m.reported_accuracy) == (56.0, 56, "student-test-pass", 95.0)
    assert m.flags == ("reported-accuracy-mismatch",)


def test_probe_pass_is_the_fallback(tmp_path: Path) -> None:
    m = measure(*_record(tmp_path, {"student_pass": None, "probe_pass": {"predictions": _predictions(90)}, "model": {}},
                        "Test Accuracy (Overall): 90.00%"), LABELS, 0.5)
    assert (m.accuracy, m.source) == (90.0, "probe-pass")
    assert "no-test-pass" in m.flags and "reported-accuracy-mismatch" not in m.flags


def test_disagreeing_passes_are_flagged_and_student_pass_wins(tmp_path: Path) -> None:
    probe = {"student_pass": {"predictions": _predictions(80)}, "probe_pass": {"predictions": _predictions(70)}, "model": {}}
    m = measure(*_record(tmp_path, probe), LABELS, 0.5)
    assert m.accuracy == 80.0 and "probe-pass-disagrees" in m.flags and "no-reported-accuracy" in m.flags


def test_incomplete_pass_is_filled_from_the_probe(tmp_path: Path) -> None:
    student = _predictions(100)
    student[-4:] = [-1] * 4
    probe = {"student_pass": {"predictions": student}, "probe_pass": {"predictions": _predictions(98)}, "model": {}}
    m = measure(*_record(tmp_path, probe), LABELS, 0.5)
    assert m.correct == 98 and "test-pass-incomplete" in m.flags


@pytest.mark.parametrize(
    "probe",
    [
        {"student_pass": {"predictions": [11] * 100}, "probe_pass": None, "model": {}},  # out of range
        {"student_pass": {"predictions": [0] * 99}, "probe_pass": None, "model": {}},  # wrong length
        {"student_pass": {"predictions": ["0"] * 100}, "probe_pass": None, "model": {}},  # not ints
        {"student_pass": {"predictions": [True] * 100}, "probe_pass": None, "model": {}},  # bools are not ints
    ],
)
def test_malformed_predictions_are_never_trusted(tmp_path: Path, probe: dict[str, Any]) -> None:
    m = measure(*_record(tmp_path, probe), LABELS, 0.5)
    assert m.accuracy is None and "probe-output-invalid" in m.flags


def test_no_model_and_unreadable_probe(tmp_path: Path) -> None:
    m = measure(*_record(tmp_path, {"student_pass": None, "probe_pass": None, "model": None}), LABELS, 0.5)
    assert m.accuracy is None and m.problem is not None and "never built a model" in m.problem
    m = measure(*_record(tmp_path, "not json"), LABELS, 0.5)
    assert m.accuracy is None and m.problem is not None and "no readable record" in m.problem
