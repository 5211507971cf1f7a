"""How the graded model fits the official training images beside the test images, from the trusted
evaluator's run of the captured graph on a secret sample of them (run/evaluate.py), scored here
against the official training labels.

An honest model fits the images it trained on at least as well as unseen ones, and the test images
are unseen images like those it held out. A model that fits the test images better than the
training images learned the test set, however its notebook routed the training: the result goes to
review with the figures. The split of the sample into trained and held-out images is the probe's
reading of the run (shown, and used only where it has enough images); the comparison with the whole
sample depends on nothing the notebook did. Above the rubric's ``ceiling`` (what the frozen model
reaches honestly), review too.
"""

from __future__ import annotations

import math

from grader.model.results import Fit

# How much better than the training images the test images may honestly be fitted, in percentage
# points, beyond sampling error: FashionMNIST's test set is no easier than its training set (on the
# legal corpus the held-out images score 0 to 2 points above the test set; benchmarks/README.md).
GAP = 1.0
SIGMAS = 4.0  # sampling error allowed, in standard errors of the difference of the two accuracies
# images on each side before two accuracies are compared (fewer: sampling decides)
MIN_IMAGES = 1000


def fit(
    indices: tuple[int, ...], classes: tuple[int, ...], labels: tuple[int, ...], trained: int
) -> Fit | None:
    """The sample's accuracies: all of it, the images the run trained on (``trained``: a bit set of
    training indices, the probe's reading) and the others (held out)."""
    if not indices or len(indices) != len(classes):
        return None
    right = [classes[k] == labels[i] for k, i in enumerate(indices)]
    seen = [bool(trained >> i & 1) for i in indices]
    on_trained = [r for r, s in zip(right, seen) if s]
    held = [r for r, s in zip(right, seen) if not s]
    return Fit(
        sample=len(right),
        sample_accuracy=_percent(right),
        trained=len(on_trained),
        trained_accuracy=_percent(on_trained) if on_trained else None,
        held_out=len(held),
        held_out_accuracy=_percent(held) if held else None,
    )


def _percent(right: list[bool]) -> float:
    return round(100.0 * sum(right) / len(right), 2)


def _beyond(test: float, test_count: int, other: float, count: int) -> bool:
    """Whether ``test`` (percent of ``test_count`` images) exceeds ``other`` (of ``count``) by more
    than GAP and SIGMAS standard errors of their difference."""
    p, q = test / 100, other / 100
    error = math.sqrt(p * (1 - p) / test_count + q * (1 - q) / count)
    return test - other > GAP + 100 * SIGMAS * max(error, 0.5 / min(test_count, count))


def review(test: float, test_count: int, found: Fit | None, ceiling: float | None) -> str | None:
    """Why a test accuracy of ``test`` percent (of ``test_count`` images) goes to review, or
    None."""
    if ceiling is not None and test > ceiling:
        return (
            f"the measured test accuracy, {test:.2f}%, is above what this model reaches "
            f"honestly in the frozen epochs (the rubric's ceiling, {ceiling:g}%)"
        )
    if found is None:
        return None
    if test_count < MIN_IMAGES:
        return None
    held = found.held_out_accuracy if found.held_out >= MIN_IMAGES else None
    if (
        found.sample >= MIN_IMAGES
        and _beyond(test, test_count, found.sample_accuracy, found.sample)
    ) or (held is not None and _beyond(test, test_count, held, found.held_out)):
        return (
            f"the model fits the test images better than the training images: {test:.2f}% on "
            f"the test set, {describe(found)}"
        )
    return None


def describe(found: Fit) -> str:
    """'93.10% on 20000 training images (94.00% on the 16000 it trained on, 89.20% on 4000 held
    out)'."""
    parts = [
        f"{accuracy:.2f}% on the {count} it {how}"
        for accuracy, count, how in (
            (found.trained_accuracy, found.trained, "trained on"),
            (found.held_out_accuracy, found.held_out, "held out"),
        )
        if accuracy is not None
    ]
    return f"{found.sample_accuracy:.2f}% on {found.sample} training images" + (
        f" ({', '.join(parts)})" if parts else ""
    )
