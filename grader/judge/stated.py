"""The accuracies the student states, read from text: what the notebook printed (in the grader's run
or in the outputs saved in the submitted .ipynb), and the report PDF's headline, whose first page
must open with "Best accuracy: xx.xx%".

Every pattern is bounded (a line is read up to ``MAX_LINE`` characters). A student's PDF is
untrusted input: its first page's text is extracted in a child process with a time and a memory
limit (run/children.py); the text is what the content stream holds: invisible or covered text
counts as much as visible text, so the check is advisory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# How students print their test accuracy: "Test Accuracy (Overall): 55.57% (5557/10000)",
# "test_accuracy: 0.8884", "Test accuracy 89.1", "Accuracy of the network on the 10000 test images:
# 88 %", "測試準確率：89.10%" (the course is taught in Taiwan), "测试准确率: 0.891", and beside
# the other splits' figures on one line: "Final Train Acc: 90.46% | Test Acc: 87.41%",
# "train_accuracy: 0.9129 | test_accuracy: 0.8841".
_ACCURACY = re.compile(
    r"acc(?:uracy)?|準確率|准确率|準確度|准确度|正確率|正确率|精確度|精确度|精度", re.IGNORECASE
)
_TEST = re.compile(r"test|測試|测试|evaluat", re.IGNORECASE)
_OVERALL = re.compile(r"overall|總|总|整體|整体", re.IGNORECASE)
_OTHER_SPLIT = re.compile(
    r"(?<![a-z])(?:val|valid|validation|train|training)(?![a-z])|驗證|验证|訓練|训练", re.IGNORECASE
)
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*[%％]")
_FRACTION = re.compile(r"(?<![0-9.])(0?\.[0-9]+|[01](?:\.0+)?)(?![0-9.%％/])")
_PLAIN = re.compile(r"[:=：]\s*([0-9]+(?:\.[0-9]+)?)(?![0-9.%％/])")
_DECIMAL = re.compile(r"(?<![0-9.])([0-9]{1,3}\.[0-9]+)(?![0-9.%％/])")
_RATIO = re.compile(r"\b([0-9]+)\s*/\s*([0-9]+)\b")


MAX_LINE = 500  # characters of a printed line read for an accuracy (students print short lines)


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
    for whole in printed.splitlines():
        line = whole[:MAX_LINE]  # the patterns below may backtrack: never over a line of any length
        mixed = _OTHER_SPLIT.search(line) is not None
        for part in _parts(line) if mixed else (line,):
            keyword = _ACCURACY.search(part)
            if keyword is None or _OTHER_SPLIT.search(part):
                continue
            value = _value(part[keyword.end() :]) or (
                _value(part) if _PERCENT.search(part) else None
            )
            if value is None:
                continue
            found[2 if _OVERALL.search(part) else 1 if _TEST.search(part) else 0] = value
    return found[max(found)] if found else None


_SEPARATOR = re.compile(r"\s*[|;\t]\s*|,\s+|\s{3,}")


def _parts(line: str) -> list[str]:
    """A line that names training or validation split where it says which figure is which: "Final
    Train Acc: 90.46% | Test Acc: 87.41%", "train_accuracy: 0.9129, test_accuracy: 0.8841"."""
    return [part for part in _SEPARATOR.split(line) if part]


MAX_TEXT = 100_000  # characters of the first page read: the headline opens it

# Bounded repeats only: a page of "Best accuracy" and a million spaces must not make the search
# quadratic.
_BEST = re.compile(
    r"best[ \t]{1,5}accuracy[ \t]{0,20}[:：=]?[ \t]{0,20}(\d{1,3}(?:[.,]\d{1,6})?)[ \t]{0,5}%",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ReportHeadline:
    """What the first page states. ``accuracy`` None: not found (``problem`` says why)."""

    accuracy: float | None
    first_line: bool  # it is the first line of text on the first page, as the homework asks
    problem: str | None = None


def headline(pdf: Path, text: str) -> ReportHeadline:
    """The accuracy the first page's ``text`` (run/children.py's ``pdf_first_page``) states, and
    whether
    it is the first line."""
    match = _BEST.search(text)
    if match is None:
        return ReportHeadline(
            None,
            False,
            f'{pdf.name}: its first page does not state "Best accuracy: xx.xx%"; '
            "put that line at the top of the report",
        )
    value = float(match.group(1).replace(",", "."))
    if value > 100:
        return ReportHeadline(
            None,
            False,
            f"{pdf.name}: its first page states a best accuracy of {value:g}%, over "
            "100%; put the accuracy the notebook reached at the top of the report",
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = bool(lines) and _BEST.search(lines[0]) is not None
    return ReportHeadline(value, first)
