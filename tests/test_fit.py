"""judge/fit.py: the graded model's fit of a secret sample of the training images against its test
accuracy, on figures alone (the evaluator's side is in test_evaluator.py)."""

from __future__ import annotations

import random

from grader.judge import fit
from grader.model.results import Fit


def _sample(
    accuracy_trained: float, accuracy_held: float, trained: int = 16_000, held: int = 4_000
) -> Fit:
    return Fit(
        sample=trained + held,
        sample_accuracy=round(
            (accuracy_trained * trained + accuracy_held * held) / (trained + held), 2
        ),
        trained=trained,
        trained_accuracy=accuracy_trained,
        held_out=held,
        held_out_accuracy=accuracy_held,
    )


def test_the_sample_is_split_by_the_images_the_run_trained_on() -> None:
    labels = tuple(i % 10 for i in range(100))
    indices = tuple(range(0, 100, 2))  # 50 sampled, the first 40 of them trained on
    # right below 60
    classes = tuple(labels[i] if i < 60 else (labels[i] + 1) % 10 for i in indices)
    trained = sum(1 << i for i in range(80))
    found = fit.fit(indices, classes, labels, trained)
    assert found == Fit(
        sample=50,
        sample_accuracy=60.0,
        trained=40,
        trained_accuracy=75.0,
        held_out=10,
        held_out_accuracy=0.0,
    )
    assert fit.fit((), (), labels, trained) is None


def test_an_honest_fit_is_not_reviewed() -> None:
    """An MLP that overfits a little (94% trained, 89.5% held out, 89.2% test), one that barely
    fits (88.7 / 88.9 / 89.1) and a mixup-trained one whose held-out images score below the test's
    by
    less than the gap: no review."""
    for trained, held, test in ((94.0, 89.5, 89.2), (88.7, 88.9, 89.1), (90.0, 88.9, 89.6)):
        assert fit.review(test, 10_000, _sample(trained, held), ceiling=93) is None


def test_a_model_that_fits_the_test_set_better_than_its_training_images_is_reviewed() -> None:
    """Trained on the test set too: 99.8% on the test images, 93% on its own training images."""
    why = fit.review(99.77, 10_000, _sample(94.0, 89.0), ceiling=None)
    assert (
        why is not None
        and "99.77% on the test set" in why
        and "93.00% on 20000 training images" in why
    )
    assert "89.00% on the 4000 it held out" in why
    # Only a little better than the whole sample, but far above the images it held out.
    assert fit.review(92.5, 10_000, _sample(92.0, 88.0, 16_000, 4_000), ceiling=None) is not None


def test_the_ceiling_and_small_sets() -> None:
    """Above the rubric's ceiling, review whatever the fit; too few images on either side to compare
    (a small generated data set), none."""
    why = fit.review(95.1, 10_000, _sample(97.0, 95.0), ceiling=93)
    assert why is not None and "95.10%" in why and "ceiling, 93%" in why
    assert fit.review(100.0, 200, _sample(80.0, 70.0, 480, 120), ceiling=None) is None
    small = Fit(
        sample=600,
        sample_accuracy=80.0,
        trained=480,
        trained_accuracy=82.0,
        held_out=120,
        held_out_accuracy=72.0,
    )
    assert fit.review(99.0, 10_000, small, ceiling=None) is None


def test_sampling_alone_never_sends_an_honest_model_to_review() -> None:
    """A model whose test and held-out images are equally hard (89%), measured on samples of the
    sizes the grader uses, five hundred times: never reviewed (four standard errors and the gap)."""
    rng = random.Random(0)
    for _ in range(500):
        test = 100 * sum(rng.random() < 0.89 for _ in range(10_000)) / 10_000
        held = 100 * sum(rng.random() < 0.89 for _ in range(4_000)) / 4_000
        assert (
            fit.review(round(test, 2), 10_000, _sample(93.0, round(held, 2)), ceiling=None) is None
        )


def test_a_result_keeps_its_fit_through_its_json() -> None:
    from grader.model.results import Result, Status

    fitted = _sample(93.1, 92.41)
    result = Result(
        student="s",
        source="HW3_s.ipynb",
        status=Status.GRADED,
        accuracy=89.24,
        reported_accuracy=None,
        score=60,
        max_score=60,
        bonus=0,
        checks=(),
        flags=(),
        duration_s=1.0,
        fit=fitted,
    )
    assert Result.from_json(result.to_json()) == result
    assert Result.from_json({**result.to_json(), "fit": None}).fit is None
