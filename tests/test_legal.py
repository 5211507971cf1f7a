"""The legal corpus (tests/fixtures/legal/): honest notebooks written the ways students write code
that tests/fixtures/patterns/ does not cover (inference mode, mixed precision, a TorchScript trace,
preprocessing in a transform's Lambda, test-time augmentation, half precision, compiled models,
Lightning-like classes, metrics from numpy or scikit-learn, ...), graded as one sandboxed class on
the tiny data with the test labels visible: every one is graded, with no flag and no tampering, at
exactly the accuracy its own code counted; the five kinds issue 28 found misjudged are graded the
same with the labels hidden. (benchmarks/legal_corpus.py grades it on the real data.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from classes import grade_class

from grader.model.context import Context
from grader.model.results import Result

CORPUS = Path(__file__).parent / "fixtures" / "legal"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "expected.yaml").read_text())


def test_the_corpus_is_the_folder() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in CORPUS.glob("HW3_*")) and set(
        ISSUE_KINDS
    ) <= set(EXPECTED)
    assert all(
        entry["expect"] == "graded" and entry["measured"] == "printed"
        for entry in EXPECTED.values()
    )


@pytest.fixture(scope="module")
def results(tiny_context: Context, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """The corpus graded as one class (tests/classes.py), the test labels visible."""
    return grade_class(CORPUS, EXPECTED, tiny_context, tmp_path_factory, "legal")


# The five kinds of notebook issue 28 found misjudged (TorchScript twice: traced, and saved then
# loaded).
ISSUE_KINDS = (
    "HW3_inference_mode.py",
    "HW3_autocast_bf16.ipynb",
    "HW3_jit_trace.py",
    "HW3_jit_saved.ipynb",
    "HW3_lambda_standardize.ipynb",
    "HW3_tta_softmax.py",
)


@pytest.fixture(scope="module")
def hidden(tiny_context: Context, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Those five kinds graded as `grader grade` grades by default: the test labels hidden."""
    return grade_class(
        CORPUS, ISSUE_KINDS, tiny_context, tmp_path_factory, "legal-hidden", hidden=True
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ISSUE_KINDS)
def test_the_issues_kinds_are_graded_alike_with_the_labels_hidden(
    name: str, results: dict[str, Result], hidden: dict[str, Result]
) -> None:
    seen, shown = results[name], hidden[name]
    assert shown.status.value == "graded" and not shown.flags, (
        shown.reason,
        shown.flags,
        shown.notes,
    )
    assert shown.accuracy == seen.accuracy and shown.score == seen.score


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_honest_notebook_is_graded_at_its_own_count(
    name: str, results: dict[str, Result]
) -> None:
    result = results[name]
    shown = (
        result.reason,
        result.flags,
        result.notes,
        [(c.id, c.ok, c.message) for c in result.checks if c.ok is not True],
    )
    assert result.status.value == "graded" and not result.flags, shown
    assert result.measured_by == "student-test-pass" and result.reported_accuracy is not None, shown
    assert result.accuracy == pytest.approx(result.reported_accuracy, abs=0.01), shown
