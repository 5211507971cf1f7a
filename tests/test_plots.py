"""The plots a TA reads at a glance: every threshold of the rubric on the axis, the graded accuracy
labelled on its point, and no two labels overlapping or leaving the figure, for accuracies at and
around each threshold."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from grader.model.rubric import Rubric
from grader.outputs.plots import curve_figure, histogram_figure


def _labels(figure: Figure) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Every visible text of the figure with its box in pixels (x0, y0, x1, y1)."""
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    ticks, shown = set(), []
    for axes in figure.axes:  # a tick label is drawn only when its tick is within the axis' view
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks.update(map(id, (tick.label1, tick.label2)))
                if low - 1e-9 <= tick.get_loc() <= high + 1e-9:
                    shown += [label for label in (tick.label1, tick.label2) if label.get_visible()]
    found = []
    for text in [t for t in figure.findobj(Text) if id(t) not in ticks] + shown:
        if text.get_visible() and text.get_text().strip():
            box = text.get_window_extent(renderer)
            found.append((text.get_text(), (box.x0, box.y0, box.x1, box.y1)))
    return found


def _assert_readable(figure: Figure) -> list[str]:
    labels = _labels(figure)
    width, height = figure.bbox.width, figure.bbox.height
    for text, (x0, y0, x1, y1) in labels:
        assert x0 >= -0.5 and y0 >= -0.5 and x1 <= width + 0.5 and y1 <= height + 0.5, (
            f"{text!r} leaves the figure"
        )
    for (a, box_a), (b, box_b) in itertools.combinations(labels, 2):
        overlap_x = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0])
        overlap_y = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1])
        assert overlap_x <= 0.5 or overlap_y <= 0.5, f"{a!r} overlaps {b!r}"
    return [text for text, _ in labels]


def _near_thresholds(rubric: Rubric) -> list[float]:
    levels = [t.at_least for t in rubric.accuracy.thresholds] + [rubric.accuracy.bonus.at_least]
    return sorted({round(at + d, 2) for at in levels for d in (-0.4, -0.01, 0.0, 0.01, 0.4)})


@pytest.mark.parametrize("spread", [0.0, 3.0, 40.0])
def test_the_class_histogram_shows_every_threshold_without_overlap(
    rubric: Rubric, spread: float
) -> None:
    accuracies = [a - spread for a in _near_thresholds(rubric)] + _near_thresholds(rubric)
    texts = " ".join(_assert_readable(histogram_figure(accuracies, rubric)))
    for t in rubric.accuracy.thresholds:
        assert f"{t.at_least:g}%: {t.points}" in texts
    assert f"{rubric.accuracy.bonus.at_least:g}%: +{rubric.accuracy.bonus.points}" in texts


@pytest.mark.parametrize("graded", [79.99, 80.0, 84.0, 88.99, 89.0, 89.5, 90.0, 90.01, 97.0])
def test_the_accuracy_panel_labels_the_graded_point_and_every_threshold(
    rubric: Rubric, graded: float
) -> None:
    curve = {
        "every": 1,
        "first_step": 1,
        "loss": [2.0 / (1 + k) for k in range(100)],
        "lr": [0.01] * 100,
        "epochs": [10 * e for e in range(10)],
        "validation": [[10 * e, graded - 2 + e / 5] for e in range(1, 11)],
        "test": [[100, graded]],
    }
    figure = curve_figure(curve, rubric, graded)
    texts = " ".join(_assert_readable(figure))
    assert f"graded {graded:.2f}%" in texts
    for t in rubric.accuracy.thresholds:
        assert f"{t.at_least:g}%: {t.points}" in texts
    accuracy_axes = figure.axes[-1]
    low, high = accuracy_axes.get_ylim()
    assert low < rubric.accuracy.thresholds[0].at_least and high > rubric.accuracy.bonus.at_least
