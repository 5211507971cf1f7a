"""The plots a TA reads at a glance: every threshold of the rubric on the axis, the graded accuracy
labelled on its point, and no two labels overlapping or leaving the figure, for accuracies at and
around each threshold. The training curve is SVG written directly: its texts are measured here
with matplotlib's own text metrics (DejaVu Sans), independently of the layout's estimates."""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.text import Text
from matplotlib.textpath import TextToPath

from grader.model.rubric import Rubric
from grader.outputs.plots import PLOTS_VERSION, histogram_figure, nice_ticks, training_curve

SVG = "{http://www.w3.org/2000/svg}"
Box = tuple[float, float, float, float]


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


def _svg_labels(svg: str) -> tuple[list[tuple[str, Box]], float, float]:
    """Every text of an SVG written by grader.outputs.plots with its box in points (x0, y0, x1,
    y1; y down), measured in DejaVu Sans; and the figure's width and height."""
    root = ET.fromstring(svg)
    _, _, width, height = map(float, root.attrib["viewBox"].split())
    measure, found = TextToPath(), []
    for text in root.iter(f"{SVG}text"):
        content = text.text or ""
        size = float(text.attrib["font-size"])
        weight = text.attrib.get("font-weight", "normal")
        font = FontProperties(family="DejaVu Sans", size=size, weight=weight)
        w, h, d = measure.get_text_width_height_descent(content, font, ismath=False)
        x, y = float(text.attrib["x"]), float(text.attrib["y"])
        shift = {"start": 0.0, "middle": -w / 2, "end": -w}[text.attrib.get("text-anchor", "start")]
        turned = text.attrib.get("transform", "")
        if turned:  # read upwards about its anchor: the letters' tops to the left
            assert turned == f"rotate(-90 {text.attrib['x']} {text.attrib['y']})", turned
            found.append((content, (x - (h - d), y - w - shift, x + d, y - shift)))
        else:
            found.append((content, (x + shift, y - (h - d), x + shift + w, y + d)))
    return found, width, height


def _assert_readable(figure: Figure | str) -> list[str]:
    if isinstance(figure, str):
        labels, width, height = _svg_labels(figure)
    else:
        labels, width, height = _labels(figure), figure.bbox.width, figure.bbox.height
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
    svg = str(training_curve(curve, rubric, graded))
    texts = " ".join(_assert_readable(svg))
    assert f"graded {graded:.2f}%" in texts
    for t in rubric.accuracy.thresholds:
        assert f"{t.at_least:g}%: {t.points}" in texts
    # the accuracy axis spans every threshold: each one's line inside the lower plot's frame
    root = ET.fromstring(svg)
    frames = [_points(line) for line in root.iter(f"{SVG}polyline") if _kind(line) == "frame"]
    top, bottom = min(y for _, y in frames[-1]), max(y for _, y in frames[-1])
    levels = [
        _points(line)[0][1] for line in root.iter(f"{SVG}polyline") if _kind(line) == "threshold"
    ]
    scale = [t.at_least for t in rubric.accuracy.thresholds] + [rubric.accuracy.bonus.at_least]
    assert len(levels) == len(scale) and all(top < y < bottom for y in levels)


def _kind(element: ET.Element) -> str:
    return element.attrib.get("class", "")


def _points(line: ET.Element) -> list[tuple[float, float]]:
    pairs = [p.split(",") for p in line.attrib["points"].split()]
    return [(float(x), float(y)) for x, y in pairs]


CURVE = {
    "every": 10,
    "first_step": 1,
    "loss": [2.0 / (1 + k / 5) for k in range(75)],
    "lr": [0.001 * 0.9 ** (k // 8) for k in range(75)],
    "epochs": [75 * e for e in range(10)],
    "validation": [[75 * e, 80 + e * 0.9] for e in range(1, 11)],
    "test": [[600, 86.5], [750, 88.31]],
}


def test_the_training_curve_is_svg_with_its_lines_marks_and_labels(rubric: Rubric) -> None:
    svg = str(training_curve(CURVE, rubric, 88.31))
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag == f"{SVG}svg" and root.attrib["viewBox"] == "0 0 504 403.2"  # two panels
    lines: dict[str, list[list[tuple[float, float]]]] = {}
    for line in root.iter(f"{SVG}polyline"):
        lines.setdefault(_kind(line), []).append(_points(line))
    assert [len(p) for p in lines["loss"]] == [75] and [len(p) for p in lines["lr"]] == [75]
    assert lines["lr"][0][0][1] < lines["lr"][0][-1][1]  # the rate falls: its line goes down
    assert len(lines["epoch"]) == 10 and len(lines["threshold"]) == 4 and len(lines["frame"]) == 2
    epochs = sorted(p[0][0] for p in lines["epoch"])  # vertical, evenly spaced
    assert all(p[0][0] == p[1][0] for p in lines["epoch"])
    assert all(abs(b - a - (epochs[1] - epochs[0])) < 0.02 for a, b in zip(epochs, epochs[1:]))
    assert len(root.findall(f"{SVG}polygon[@class='star']")) == 2  # on the point, in the legend
    assert len(root.findall(f"{SVG}circle")) == 11 and len(root.findall(f"{SVG}rect")) >= 3
    texts = {t.text: t.attrib for t in root.iter(f"{SVG}text")}
    assert texts["graded 88.31%"]["font-weight"] == "bold"
    for label in ("80%: 30", "84%: 50", "89%: 60 · 90%: +5"):  # 89 and 90 share a label
        assert texts[label]["class"] == "threshold"
    for label in (
        "training loss",
        "learning rate",
        "accuracy (%)",
        "optimizer step",
        "optimizer step (grey lines: a pass over the training data began)",
        "validation accuracy (scored by the grader)",
        "test accuracy of each test pass",
        "the graded accuracy",
    ):
        assert label in texts
    # round ticks: each axis' labels evenly spaced by 1, 2 or 5 times a power of ten
    ticks = [t for t in root.iter(f"{SVG}text") if _kind(t) == "tick"]
    assert len(ticks) >= 4 * 3
    assert len(_tick_groups(ticks)) == 5  # the steps of each panel, loss, rate, accuracy
    for axis in _tick_groups(ticks):
        values = [float(t.text or "") for t in axis]
        steps = {round(b - a, 12) for a, b in zip(values, values[1:])}
        assert len(steps) == 1, values
        step = steps.pop()
        assert round(step / 10 ** math.floor(math.log10(step)), 9) in (1, 2, 5), values
    assert str(training_curve(CURVE, rubric, 88.31)) == svg  # the same curve, the same bytes
    assert PLOTS_VERSION >= 4  # drawn with matplotlib before: the cached files are redrawn


def _tick_groups(ticks: list[ET.Element]) -> list[list[ET.Element]]:
    """Tick labels by axis: those sharing a y (a step axis) or an x, an anchor and a panel (a
    value axis)."""
    groups: dict[tuple[str, str, int], list[ET.Element]] = {}
    for t in ticks:
        anchor, x, y = t.attrib["text-anchor"], t.attrib["x"], t.attrib["y"]
        key = ("", y, 0) if anchor == "middle" else (anchor, x, int(float(y) // 201.6))
        groups.setdefault(key, []).append(t)
    return [sorted(g, key=lambda t: float(t.text or "")) for g in groups.values()]


@pytest.mark.parametrize(
    "loss, lr, graded",
    [
        ([None] * 5, [None] * 5, None),
        ([None] * 5, [None] * 5, 85.0),
        ([1.0], [0.1], None),
        ([1.0], [0.1], 85.0),
        ([], [], 85.0),
        ([None, 2.0, float("nan"), 1.0, float("inf")], [0.1, None, 0.1, 0.1, 0.1], None),
    ],
)
def test_a_curve_of_no_loss_or_one_point_is_drawn(
    rubric: Rubric, loss: list[float | None], lr: list[float | None], graded: float | None
) -> None:
    curve = {"every": 1, "first_step": 1, "loss": loss, "lr": lr, "epochs": [0]}
    svg = str(training_curve(curve, rubric, graded))
    _assert_readable(svg)
    root = ET.fromstring(svg)
    shown = {
        _kind(line): len(_points(line))
        for line in root.iter(f"{SVG}polyline")
        if _kind(line) in ("loss", "lr")
    }
    finite = [v for v in loss if v is not None and math.isfinite(v)]
    assert shown == {"loss": len(finite), "lr": len([v for v in lr[: len(loss)] if v is not None])}
    assert root.attrib["viewBox"] == ("0 0 504 403.2" if graded is not None else "0 0 504 201.6")
    assert ("graded 85.00%" in svg) is (graded is not None)


@pytest.mark.parametrize(
    "curve",
    [
        {**CURVE, "first_step": 10**400},  # a forged step
        {**CURVE, "every": "x"},
        {**CURVE, "loss": [1e308, -1e308]},  # a span beyond a float
        {**CURVE, "validation": [[1, float("nan")]]},
        {**CURVE, "test": [[float("inf"), 88.0]]},
        {**CURVE, "epochs": 3},
        {**CURVE, "loss": ["<b>"]},
    ],
)
def test_numbers_that_cannot_be_drawn_raise_what_the_page_catches(
    rubric: Rubric, curve: dict[str, object]
) -> None:
    with pytest.raises((ValueError, OverflowError, TypeError)):
        training_curve(curve, rubric, 88.0)


def test_nice_ticks_are_round_values_within_the_range() -> None:
    assert nice_ticks(-375.0, 7875.0, 8) == [1000.0 * k for k in range(8)]
    assert nice_ticks(-375.0, 8250.0, 8) == [2000.0 * k for k in range(5)]  # 9 would be too many
    assert nice_ticks(77.99, 92.0, 8) == [78.0 + 2 * k for k in range(8)]
    assert nice_ticks(0.0, 1.0, 8) == pytest.approx([0.2 * k for k in range(6)])
    rates = nice_ticks(0.00036, 0.00106, 8)
    assert rates == pytest.approx([0.0004, 0.0005, 0.0006, 0.0007, 0.0008, 0.0009, 0.001])
    assert nice_ticks(-3.0, 3.0, 3) == [-2.0, 0.0, 2.0]
    assert str(nice_ticks(-1.5, 0.5, 8)[-2]) == "0.0"  # no "-0.0"
    for low, high in ((0.0, 0.0), (1.0, float("inf")), (2.0, 1.0)):
        with pytest.raises(ValueError):
            nice_ticks(low, high, 8)


def test_every_text_of_the_curve_is_escaped(rubric: Rubric) -> None:
    svg = str(training_curve(CURVE, rubric, 88.31))
    texts = re.findall(r"<text [^>]*>([^<]*)</text>", svg)
    assert texts and all("&" not in t or re.search(r"&(lt|gt|amp|#39|#34);", t) for t in texts)
