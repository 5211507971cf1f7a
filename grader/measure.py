"""Trusted measurement: compare the exported predictions with the official labels.

Runs in the grader's process. The probe file was written by the student's process, so it is
read as plain JSON and validated field by field; nothing in it is executed or unpickled.
"""

from __future__ import annotations

import re
from typing import Any

from grader.results import ExecutionRecord, Measurement

# How students print their test accuracy: "Test Accuracy (Overall): 55.57% (5557/10000)",
# "test_accuracy: 0.8884", "Test accuracy 89.1", "Accuracy of the network on the 10000 test images: 88 %",
# "測試準確率：89.10%" (the course is taught in Taiwan), "测试准确率: 0.891".
_ACCURACY = re.compile(r"acc(?:uracy)?|準確率|准确率|準確度|准确度|正確率|正确率|精確度|精确度|精度", re.IGNORECASE)
_TEST = re.compile(r"test|測試|测试|evaluat", re.IGNORECASE)
_OVERALL = re.compile(r"overall|總|总|整體|整体", re.IGNORECASE)
_OTHER_SPLIT = re.compile(r"(?<![a-z])(?:val|valid|validation|train|training)(?![a-z])|驗證|验证|訓練|训练", re.IGNORECASE)
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*[%％]")
_FRACTION = re.compile(r"(?<![0-9.])(0?\.[0-9]+|[01](?:\.0+)?)(?![0-9.%％/])")
_PLAIN = re.compile(r"[:=：]\s*([0-9]+(?:\.[0-9]+)?)(?![0-9.%％/])")
_DECIMAL = re.compile(r"(?<![0-9.])([0-9]{1,3}\.[0-9]+)(?![0-9.%％/])")
_RATIO = re.compile(r"\b([0-9]+)\s*/\s*([0-9]+)\b")


def _value(text: str) -> float | None:
    """The accuracy in ``text`` (what follows the word 'accuracy'), in percent."""
    for pattern, scale in ((_PERCENT, 1.0), (_FRACTION, 100.0), (_PLAIN, 1.0), (_DECIMAL, 1.0)):
        match = pattern.search(text)
        if match:
            value = float(match.group(1)) * scale
            if pattern is _PLAIN and value <= 1:
                value *= 100  # "accuracy: 0.89" written after a colon is a fraction too
            return value if 0 <= value <= 100 else None
    ratio = _RATIO.search(text)
    if ratio and 0 < int(ratio.group(2)) and int(ratio.group(1)) <= int(ratio.group(2)):
        return 100.0 * int(ratio.group(1)) / int(ratio.group(2))
    return None


def reported_accuracy(printed: str) -> float | None:
    """The test accuracy the notebook printed last, in percent (a fraction is read as one), or None.

    Lines naming the overall accuracy win over other test lines, which win over any accuracy line;
    validation and training accuracies are never read as the test accuracy.
    """
    found: dict[int, float] = {}
    for line in printed.splitlines():
        keyword = _ACCURACY.search(line)
        if keyword is None or _OTHER_SPLIT.search(line):
            continue
        value = _value(line[keyword.end():]) or (_value(line) if _PERCENT.search(line) else None)
        if value is None:
            continue
        rank = 2 if _OVERALL.search(line) else 1 if _TEST.search(line) else 0
        found[rank] = value
    return found[max(found)] if found else None


def _predictions(section: Any, total: int, classes: int) -> list[int] | None:
    """The prediction list of a probe section when it is well-formed, else None."""
    if not isinstance(section, dict):
        return None
    values = section.get("predictions")
    if not isinstance(values, list) or len(values) != total:
        return None
    if not all(type(v) is int and -1 <= v < classes for v in values):
        return None
    return values


def _accuracy(predictions: list[int], labels: tuple[int, ...]) -> tuple[int, float]:
    correct = sum(1 for p, y in zip(predictions, labels) if p == y)
    return correct, 100.0 * correct / len(labels)


def measure(record: ExecutionRecord, probe: dict[str, Any] | None, labels: tuple[int, ...], tolerance: float,
            compare_reported: bool = True, classes: int = 10) -> Measurement:
    """Accuracy from the student's own last test pass, else from the probe's pass; with flags.

    ``probe`` is the probe's record (see probe_file.read_probe), None when there is none.
    ``compare_reported`` is False when the kernel saw shuffled test labels: what it printed then
    says nothing about the model.
    """
    reported = reported_accuracy(record.outputs_text)
    flags: list[str] = []
    notes: list[str] = []
    if probe is None:
        problem = None if record.reason else "the grader's probe wrote no readable record"
        return Measurement(None, reported, None, None, None, tuple(flags), tuple(notes), problem)
    total = len(labels)
    student = _predictions(probe.get("student_pass"), total, classes)
    own = _predictions(probe.get("probe_pass"), total, classes)
    if probe.get("student_pass") is not None and student is None:
        flags.append("probe-output-invalid")
    if student is not None:
        missing = [i for i, p in enumerate(student) if p == -1]
        if missing:
            flags.append("test-pass-incomplete")
            notes.append(f"the notebook's test pass covered {total - len(missing)} of {total} test images; "
                         + ("the rest were predicted by the grader's own pass" if own else "the rest count as wrong"))
            if own is not None:
                for i in missing:
                    student[i] = own[i]
        predictions, source = student, "student-test-pass"
        if own is not None:
            own_accuracy = _accuracy(own, labels)[1]
            student_accuracy = _accuracy(student, labels)[1]
            if abs(own_accuracy - student_accuracy) > tolerance:
                flags.append("probe-pass-disagrees")
                notes.append(f"the notebook's test pass gives {student_accuracy:.2f}%, the grader's own pass over the "
                             f"test set (eval mode, dataset transform) gives {own_accuracy:.2f}%")
    elif own is not None:
        predictions, source = own, "probe-pass"
        flags.append("no-test-pass")
        notes.append("the notebook never ran its model over a test DataLoader; the grader predicted the test set itself")
    else:
        error = probe.get("probe_error")
        problem = ("the notebook never built a model (no nn.Module with parameters was found)"
                   if probe.get("model") is None else
                   f"the grader could not run the model on the test set ({str(error)[:200]})")
        return Measurement(None, reported, None, None, None, tuple(flags), tuple(notes), problem)
    correct, accuracy = _accuracy(predictions, labels)
    accuracy = round(accuracy, 2)
    if not compare_reported:
        notes.append("the test labels were hidden from the notebook, so its printed accuracy is not compared")
    elif reported is None:
        flags.append("no-reported-accuracy")
        notes.append("no printed test accuracy was found in the notebook's output (a percentage, a fraction or "
                     "N/M on a line naming the test accuracy)")
    elif abs(reported - accuracy) > tolerance:
        flags.append("reported-accuracy-mismatch")
        notes.append(f"the notebook printed {reported:g}% but the grader measured {accuracy:.2f}%")
    return Measurement(accuracy, reported, correct, total, source, tuple(flags), tuple(notes), None)
