"""The pages' plots as inline SVG (the pages open offline, from a zip, with no CDN): the class's
histogram drawn with matplotlib, a student's training curve and surest mistakes written directly
(a student's plots are drawn for every result). Only numbers the grader computed go into a plot,
never a student's text."""

from __future__ import annotations

import base64
import io
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from markupsafe import Markup, escape

from grader.evaluator.key import FASHION_MNIST
from grader.model.rubric import Rubric

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# Drawn plots are kept in OUT/plots by their numbers and this: raise it when a plot changes.
PLOTS_VERSION = 4


def _svg(figure: Figure) -> Markup:
    buffer = io.StringIO()
    # the same plot gives the same page
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return Markup(text[text.index("<svg") :])  # the SVG element alone, for inlining


def _thresholds(rubric: Rubric) -> list[tuple[float, str]]:
    """Each threshold of the rubric's scale with its label ("89%: 60", the bonus "90%: +5")."""
    policy = rubric.accuracy
    lines = [(t.at_least, f"{t.at_least:g}%: {t.points}") for t in policy.thresholds]
    return lines + (
        [(policy.bonus.at_least, f"{policy.bonus.at_least:g}%: +{policy.bonus.points}")]
        if policy.bonus.points
        else []
    )


def _merged(lines: list[tuple[float, str]], span: float, gap: float) -> list[tuple[float, str]]:
    """Labels of thresholds closer than ``gap`` of the axis' ``span`` joined into one, at the higher
    threshold, so that no two labels overlap ("89%: 60 · 90%: +5")."""
    groups: list[list[tuple[float, str]]] = []
    for at, label in sorted(lines):
        if groups and (at - groups[-1][-1][0]) < gap * span:
            groups[-1].append((at, label))
        else:
            groups.append([(at, label)])
    return [(group[-1][0], " · ".join(label for _, label in group)) for group in groups]


def histogram_figure(accuracies: Sequence[float], rubric: Rubric) -> Figure:
    """The class's measured accuracies in 1-point bins; the rubric's thresholds as dashed lines,
    labelled above the plot."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    lines = _thresholds(rubric)
    low = max(0, int(min([*accuracies, *(at for at, _ in lines)]) // 1) - 1)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "grader", "font.size": 9}):
        figure = Figure(figsize=(7, 2.8))
        axes = figure.add_subplot()
        axes.hist(list(accuracies), bins=range(low, 102), color="#4c78a8", edgecolor="white")
        axes.set_xlim(low, 101)
        for at, _ in lines:
            axes.axvline(at, color="#b22222", linewidth=1, linestyle="--")
        # A label is about 0.12 of this axis wide at 8 pt; closer thresholds share one.
        for at, label in _merged(lines, 101 - low, 0.14):
            axes.annotate(
                label,
                (at, 1),
                xycoords=("data", "axes fraction"),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
                color="#b22222",
                annotation_clip=False,
            )
        axes.set_xlabel("measured test accuracy (%)")
        axes.set_ylabel("submissions")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        figure.tight_layout()
        return figure


def accuracy_histogram(accuracies: Sequence[float], rubric: Rubric) -> Markup:
    return _svg(histogram_figure(accuracies, rubric))


def training_curve(
    curve: dict[str, object], rubric: Rubric | None = None, graded: float | None = None
) -> Markup:
    """The graded model's training loss (left axis) and learning rate (right axis, dashed) per
    optimizer step, with a light grey line where each pass over the training data (epoch) began;
    below, where the probe saw the model evaluated (or it was graded), its validation and test
    accuracy by step with every threshold of the rubric, the graded accuracy a labelled star.

    Written as SVG directly (lines, markers and numbers: nothing for matplotlib to lay out; it cost
    a fifth of a second a student), in the layout matplotlib gave it: 7 by 2.8 inches a panel.
    Numbers it cannot draw raise ValueError, OverflowError, TypeError or KeyError (the page goes
    without the plot). A loss or learning rate of None (or not finite) is left out."""
    every, first = int(str(curve["every"])), int(str(curve["first_step"]))
    loss, lr = _sequence(curve["loss"]), _sequence(curve["lr"])
    steps = [float(first + every * i) for i in range(len(loss))]
    losses, rates = _points(steps, loss), _points(steps, lr)
    epochs = [_finite(s) for s in _sequence(curve["epochs"])]
    validation = [(_finite(s), _finite(a)) for s, a in _sequence(curve.get("validation") or [])]
    test = [(_finite(s), _finite(a)) for s, a in _sequence(curve.get("test") or [])]
    star = None
    if graded is not None:
        star = (test[-1][0] if test else steps[-1] if steps else 0.0, _finite(graded))
    top = _Panel(
        left=_axis(_limits([v for _, v in losses]), "training loss"),
        right=_axis(_limits([v for _, v in rates]), "learning rate"),
        xlabel="optimizer step (grey lines: a pass over the training data began)",
    )
    panels, shown, marks = [top], [], []
    if validation or test or star:
        lines = _thresholds(rubric) if rubric is not None else []
        values = [a for _, a in validation + test] + [s[1] for s in [star] if s]
        low = min(values + [at for at, _ in lines]) - 2
        high = max(min(100.0, max(values + [at for at, _ in lines]) + 2), low + 4)
        shown = [(at, label) for at, label in lines if low <= at <= high]
        # labelled in the right margin; thresholds closer than a label's height share one
        marks = _merged(shown, high - low, 0.1)
        panels.append(_Panel(left=_axis((low, high), "accuracy (%)"), xlabel="optimizer step"))
    plots = _plots(panels, marks)
    seen = [s for s, _ in losses + rates + validation + test] + epochs + [s[0] for s in [star] if s]
    x = _x_axis(_limits(seen), plots[0].x1 - plots[0].x0)
    svg = _Svg()
    for step in epochs:
        at = _at(x, step, plots[0].x0, plots[0].x1)
        svg.line([(at, plots[0].y0), (at, plots[0].y1)], _EPOCH, 0.8, kind="epoch")
    loss_line = [_point(plots[0], x, top.left, p) for p in losses]
    rate_line = [_point(plots[0], x, top.right or top.left, p) for p in rates]
    svg.line(loss_line, _LOSS.color, _LOSS.width, kind="loss")
    svg.line(rate_line, _RATE.color, _RATE.width, _RATE.dash, kind="lr")
    _frame(svg, plots[0], top, x)
    crowd = _crowd(loss_line) + _crowd(rate_line)
    _legend(svg, plots[0], [_LOSS, _RATE], crowd, None, _UPPER_RIGHT)
    if len(panels) == 2:
        _accuracy_panel(
            svg, plots[1], panels[1], x, validation, test, ([at for at, _ in shown], marks), star
        )
    return svg.markup(_PANEL * len(panels))


def _accuracy_panel(
    svg: _Svg,
    box: _Box,
    panel: _Panel,
    x: _Axis,
    validation: list[tuple[float, float]],
    test: list[tuple[float, float]],
    thresholds: tuple[list[float], list[tuple[float, str]]],
    star: tuple[float, float] | None,
) -> None:
    """Validation and test accuracy by optimizer step; the thresholds (which apply to the test
    accuracy) all on the axis, labelled in the right margin; the graded accuracy a star on the last
    test point, labelled beside it. Accuracies above the axis (above 100%) are left out."""
    y, (levels, marks) = panel.left, thresholds
    for level in levels:
        height = _at(y, level, box.y1, box.y0)
        line = [(box.x0, height), (box.x1, height)]
        svg.line(line, _THRESHOLD, 0.8, _THRESHOLD_DASH, kind="threshold")
    for level, text in marks:
        height = _middle(_at(y, level, box.y1, box.y0), 7)
        svg.text((box.x1 + 4, height), text, 7, color=_THRESHOLD, kind="threshold")
    entries, crowd = [], []
    for points, entry in ((validation, _VALIDATION), (test, _TEST)):
        if points:
            line = [_point(box, x, y, p) for p in points if y.low <= p[1] <= y.high]
            svg.line(line, entry.color, entry.width, entry.dash)
            for at in line:
                svg.marker(entry.marker, at, entry.color)
            entries.append(entry)
            crowd += _crowd(line)
    label = None
    if star is not None:
        entries.append(_STAR)
        if y.low <= star[1] <= y.high:
            point = _point(box, x, y, star)
            svg.marker("*", point, _STAR.color)
            label = _star_label(svg, box, point, f"graded {star[1]:.2f}%")
    _frame(svg, box, panel, x)
    _legend(svg, box, entries, crowd, label, _LOWER_RIGHT)


def _star_label(svg: _Svg, box: _Box, at: tuple[float, float], label: str) -> _Box:
    """``label`` in bold up and left of the graded point (below it at the top of the axis, right
    of it at its left); the box it takes."""
    width, (x, y) = _width(label, 8, bold=True), at
    right = x - 8 if x - 8 - width >= box.x0 else x + 8 + width
    baseline = y - 6 if y - 6 - _ASCENT * 8 >= box.y0 else y + 6 + _ASCENT * 8
    svg.text((right, baseline), label, 8, anchor="end", bold=True, color=_STAR.color, kind="graded")
    return _Box(x0=right - width, y0=baseline - _ASCENT * 8, x1=right, y1=baseline + _DESCENT * 8)


# The layout, in points from the figure's top left: each panel 7 by 2.8 inches, room left of its
# plot for the tick labels and the axis' title, right of it for the right axis' or the thresholds'
# labels, below it for the step's tick labels and title.
_WIDTH, _PANEL, _ABOVE, _BELOW, _TICK = 504.0, 201.6, 8.0, 39.0, 3.5
_ASCENT, _DESCENT = 0.928, 0.236  # of DejaVu Sans, per point of its size
_EPOCH, _THRESHOLD, _THRESHOLD_DASH = "#dddddd", "#b22222", "2.96,1.28"  # as matplotlib's dashes
_FONT = "'DejaVu Sans', 'Bitstream Vera Sans', 'Lucida Grande', 'Verdana', 'Arial', sans-serif"


@dataclass(frozen=True, kw_only=True)
class _Box:
    """A rectangle, in points from the figure's top left."""

    x0: float
    y0: float
    x1: float
    y1: float

    def meets(self, other: _Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )


@dataclass(frozen=True, kw_only=True)
class _Axis:
    """The values an axis shows (``low`` to ``high``), its ticks with their labels, its title."""

    low: float
    high: float
    ticks: tuple[tuple[float, str], ...]
    title: str = ""


@dataclass(frozen=True, kw_only=True)
class _Panel:
    """A plot of the figure, one above the other: its value axes, the title of its step axis."""

    left: _Axis
    right: _Axis | None = None
    xlabel: str


@dataclass(frozen=True, kw_only=True)
class _Entry:
    """A line of a legend: its sample (a line's color, dashes, marker) and its text."""

    color: str
    width: float = 1.0
    dash: str = ""  # as matplotlib's: dashed "3.7,1.6", dotted "1,1.65"
    marker: str = ""  # "o", "s" or "*"
    text: str


_LOSS = _Entry(color="#4c78a8", width=1.2, text="training loss")
_RATE = _Entry(color="#e45756", dash="3.7,1.6", text="learning rate")
_VALIDATION = _Entry(
    color="#54a24b", width=1.2, marker="o", text="validation accuracy (scored by the grader)"
)
_TEST = _Entry(color="#b279a2", dash="1,1.65", marker="s", text="test accuracy of each test pass")
_STAR = _Entry(color="#222222", marker="*", text="the graded accuracy")


def nice_ticks(low: float, high: float, most: int) -> list[float]:
    """At most ``most`` round values from ``low`` to ``high``: the multiples of the smallest step
    of 1, 2 or 5 times a power of ten that gives no more."""
    span = high - low
    if not (math.isfinite(span) and span > 0 and most > 0):
        raise ValueError(f"no ticks from {low} to {high}")
    power = 10.0 ** math.floor(math.log10(span / most))
    for step in (power, 2 * power, 5 * power, 10 * power):
        first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
        if last - first < most:
            return [k * step + 0.0 for k in range(first, last + 1)]  # + 0.0: no "-0"
    raise ValueError(f"no ticks from {low} to {high}")


def _tick_labels(ticks: Sequence[float]) -> list[str]:
    """The ticks with as few decimals as tell them apart, the same for each; powers of ten for the
    very small or large (a learning rate of 1e-05)."""
    top = max((abs(t) for t in ticks), default=0.0)
    form = "e" if top and not 1e-4 <= top < 1e6 else "f"
    step = min((b - a for a, b in zip(ticks, ticks[1:])), default=top or 1.0)
    for digits in range(16):
        labels = [f"{t:.{digits}{form}}" for t in ticks]
        if all(abs(float(label) - t) < step / 100 for label, t in zip(labels, ticks)):
            break
    return labels


def _axis(limits: tuple[float, float], title: str, most: int = 8) -> _Axis:
    ticks = nice_ticks(*limits, most)
    return _Axis(
        low=limits[0], high=limits[1], ticks=tuple(zip(ticks, _tick_labels(ticks))), title=title
    )


def _x_axis(limits: tuple[float, float], width: float) -> _Axis:
    """The step axis of ``width`` points, with as many ticks (up to 8) as leave room between their
    labels."""
    for most in range(8, 1, -1):
        axis = _axis(limits, "", most)
        widest = max(_width(label, 9) for _, label in axis.ticks)
        apart = width / (len(axis.ticks) or 1)
        if widest + 8 <= apart:
            break
    return axis


def _limits(values: Sequence[float]) -> tuple[float, float]:
    """The values with 5% of their span either side (as matplotlib's); one value with 10% of it
    (1 either side of 0), none from 0 to 1."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    margin = (high - low) * 0.05 if high > low else abs(low) * 0.1 or 1.0
    limits = (low - margin, high + margin)
    if not all(map(math.isfinite, (*limits, limits[1] - limits[0]))):
        raise ValueError(f"values from {low} to {high} cannot be drawn")
    return limits


def _finite(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]  # a str or a list: ValueError, TypeError
    if not math.isfinite(number):
        raise ValueError(f"{number} cannot be drawn")
    return number


def _sequence(value: object) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"a list expected, not {type(value).__name__}")
    return list(value)


def _points(steps: Sequence[float], values: Sequence[object]) -> list[tuple[float, float]]:
    """(step, value) of each value that is a finite number; None and the others left out."""
    points = [(s, float(v)) for s, v in zip(steps, values) if v is not None]  # type: ignore[arg-type]
    return [(s, v) for s, v in points if math.isfinite(v)]


def _at(axis: _Axis, value: float, start: float, end: float) -> float:
    """Where ``value`` of ``axis`` is, the axis drawn from ``start`` to ``end``."""
    return start + (value - axis.low) * (end - start) / (axis.high - axis.low)


def _point(box: _Box, x: _Axis, y: _Axis, point: tuple[float, float]) -> tuple[float, float]:
    return _at(x, point[0], box.x0, box.x1), _at(y, point[1], box.y1, box.y0)


def _middle(y: float, size: float) -> float:
    """The baseline of a text of ``size`` centred on ``y``."""
    return y + (_ASCENT - _DESCENT) / 2 * size


def _plots(panels: Sequence[_Panel], marks: Sequence[tuple[float, str]]) -> list[_Box]:
    """The plotting area of each panel: the same left and right edges, with room left for the
    widest tick label and the title, right for the right axis' labels or the thresholds' labels."""
    title = (_ASCENT + _DESCENT) * 9
    widest = max(_width(label, 9) for p in panels for _, label in p.left.ticks)
    right = [
        2 * _TICK + max(_width(label, 9) for _, label in p.right.ticks) + 5 + title + 6
        for p in panels
        if p.right
    ]
    right += [4 + _width(label, 7) + 6 for _, label in marks]
    left, right_edge = 6 + title + 5 + widest + 2 * _TICK, _WIDTH - max(right, default=12.0)
    return [
        _Box(x0=left, y0=k * _PANEL + _ABOVE, x1=right_edge, y1=(k + 1) * _PANEL - _BELOW)
        for k in range(len(panels))
    ]


def _frame(svg: _Svg, box: _Box, panel: _Panel, x: _Axis) -> None:
    """The plot's frame, its ticks with their labels, its axes' titles."""
    corners = [(box.x0, box.y0), (box.x1, box.y0), (box.x1, box.y1), (box.x0, box.y1)]
    svg.line([*corners, corners[0]], "#000000", 0.8, kind="frame")
    below = box.y1 + 2 * _TICK + _ASCENT * 9
    for at, label in x.ticks:
        left = _at(x, at, box.x0, box.x1)
        svg.line([(left, box.y1), (left, box.y1 + _TICK)], "#000000", 0.8)
        svg.text((left, below), label, 9, anchor="middle", kind="tick")
    title = (_ASCENT + _DESCENT) * 9
    svg.text(((box.x0 + box.x1) / 2, below + title + 5), panel.xlabel, 9, anchor="middle")
    for axis, edge, out in ((panel.left, box.x0, -1), (panel.right, box.x1, 1)):
        if axis is None:
            continue
        for at, label in axis.ticks:
            level = _at(axis, at, box.y1, box.y0)
            svg.line([(edge, level), (edge + out * _TICK, level)], "#000000", 0.8)
            anchor = "end" if out < 0 else "start"
            svg.text(
                (edge + out * 2 * _TICK, _middle(level, 9)), label, 9, anchor=anchor, kind="tick"
            )
        # read upwards: the letters' tops to the left
        widest = max(_width(label, 9) for _, label in axis.ticks)
        across = 6 + _ASCENT * 9 if out < 0 else edge + 2 * _TICK + widest + 5 + _ASCENT * 9
        svg.text((across, (box.y0 + box.y1) / 2), axis.title, 9, anchor="middle", turned=True)


_UPPER_RIGHT = ("upper right", "lower right", "upper left", "lower left")
_LOWER_RIGHT = ("lower right", "upper left", "lower left", "upper right")


def _legend(
    svg: _Svg,
    box: _Box,
    entries: Sequence[_Entry],
    crowd: Sequence[tuple[float, float]],
    keep_clear: _Box | None,
    corners: Sequence[str],
) -> None:
    """The entries in the first of the plot's ``corners`` that covers fewest points of its lines
    (``crowd``) and never the graded accuracy's label (``keep_clear``)."""
    row, sample = 11.0, 20.0
    width = 4 + sample + 5 + max(_width(e.text, 8) for e in entries) + 4
    height = row * len(entries) + 4

    def placed(corner: str) -> _Box:
        x0 = box.x1 - 4 - width if "right" in corner else box.x0 + 4
        y0 = box.y0 + 4 if "upper" in corner else box.y1 - 4 - height
        return _Box(x0=x0, y0=y0, x1=x0 + width, y1=y0 + height)

    def covered(place: _Box) -> int:
        clash = keep_clear is not None and place.meets(keep_clear)
        inside = sum(place.x0 <= x <= place.x1 and place.y0 <= y <= place.y1 for x, y in crowd)
        return inside + (10**9 if clash else 0)

    place = min((placed(c) for c in corners), key=covered)  # the first of the fewest
    svg.rect(place)
    for k, entry in enumerate(entries):
        y = place.y0 + 2 + row * (k + 0.5)
        left = place.x0 + 4
        if entry.marker != "*":
            svg.line([(left, y), (left + sample, y)], entry.color, entry.width, entry.dash)
        if entry.marker:
            svg.marker(entry.marker, (left + sample / 2, y), entry.color)
        svg.text((left + sample + 5, _middle(y, 8)), entry.text, 8, kind="legend")


def _crowd(line: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points of a line and three between each two (what a legend would cover)."""
    between = [
        (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)
        for a, b in zip(line, line[1:])
        for t in (0.25, 0.5, 0.75)
    ]
    return [*line, *between]


class _Svg:
    """An SVG figure 504 points wide, written element by element: numbers and the grader's own
    texts only, each text escaped anyway."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def line(
        self,
        points: Sequence[tuple[float, float]],
        color: str,
        width: float,
        dash: str = "",
        kind: str = "",
    ) -> None:
        """A polyline through ``points`` (a line with fewer than two shows nothing)."""
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        named = f' class="{kind}"' if kind else ""
        coordinates = " ".join(f"{x:.2f},{y:.2f}" for x, y in points)
        self.parts.append(
            f'<polyline{named} points="{coordinates}" fill="none" stroke="{color}" '
            f'stroke-width="{width:g}"{dashes} stroke-linejoin="round" stroke-linecap="butt"/>'
        )

    def marker(self, kind: str, at: tuple[float, float], color: str) -> None:
        """A circle ("o", 3 points wide), a square ("s", 4) or a five-pointed star ("*", 10)."""
        x, y = at
        if kind == "o":
            self.parts.append(f'<circle cx="{x:.2f}" cy="{y:.2f}" r="1.5" fill="{color}"/>')
        elif kind == "s":
            self.parts.append(
                f'<rect x="{x - 2:.2f}" y="{y - 2:.2f}" width="4" height="4" fill="{color}"/>'
            )
        else:
            corners = [
                (x + r * math.sin(k * math.pi / 5), y - r * math.cos(k * math.pi / 5))
                for k, r in zip(range(10), [5.0, 2.0] * 5)
            ]
            points = " ".join(f"{a:.2f},{b:.2f}" for a, b in corners)
            self.parts.append(f'<polygon class="star" points="{points}" fill="{color}"/>')

    def rect(self, box: _Box) -> None:
        """A white, slightly clear background (under a legend)."""
        self.parts.append(
            f'<rect x="{box.x0:.2f}" y="{box.y0:.2f}" width="{box.x1 - box.x0:.2f}" '
            f'height="{box.y1 - box.y0:.2f}" fill="#ffffff" fill-opacity="0.8"/>'
        )

    def text(
        self,
        at: tuple[float, float],
        text: str,
        size: float,
        *,
        anchor: str = "start",
        color: str = "#000000",
        bold: bool = False,
        turned: bool = False,
        kind: str = "",
    ) -> None:
        """``text`` with its baseline at ``at``; ``turned``: read upwards, about ``at``; in bold:
        with a white halo, readable over the lines it crosses."""
        x, y = at
        extra = (
            ' font-weight="bold" stroke="#ffffff" stroke-width="2.5" stroke-linejoin="round" '
            'paint-order="stroke"'
            if bold
            else ""
        )
        extra += f' transform="rotate(-90 {x:.2f} {y:.2f})"' if turned else ""
        extra += f' class="{kind}"' if kind else ""
        self.parts.append(
            f'<text x="{x:.2f}" y="{y:.2f}" font-size="{size:g}" text-anchor="{anchor}" '
            f'fill="{color}"{extra}>{escape(text)}</text>'
        )

    def markup(self, height: float) -> Markup:
        return Markup(
            "\n".join(
                [
                    f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{_WIDTH:g}pt" '
                    f'height="{height:g}pt" viewBox="0 0 {_WIDTH:g} {height:g}" '
                    f'font-family="{_FONT}">',
                    '<rect width="100%" height="100%" fill="#ffffff"/>',
                    *self.parts,
                    "</svg>",
                ]
            )
        )


# DejaVu Sans' advance of each character from " " to "~", per 1000 of the font's size
_ADVANCES = (
    318, 401, 460, 838, 636, 950, 780, 275, 390, 390, 500, 838, 318, 361, 318, 337, 636, 636, 636,
    636, 636, 636, 636, 636, 636, 636, 337, 337, 838, 838, 838, 531, 1000, 684, 686, 698, 770, 632,
    575, 775, 752, 295, 295, 656, 557, 863, 748, 787, 603, 787, 695, 635, 611, 732, 684, 989, 685,
    611, 685, 390, 337, 390, 838, 500, 500, 613, 635, 550, 635, 615, 352, 635, 634, 278, 278, 579,
    278, 974, 634, 612, 635, 635, 411, 521, 392, 634, 592, 818, 592, 592, 525, 636, 337, 636, 838,
)  # fmt: skip


def _width(text: str, size: float, bold: bool = False) -> float:
    """About how wide ``text`` is at ``size`` points in DejaVu Sans (the pages' first font); in
    bold, at most 12% wider."""
    advance = sum(
        _ADVANCES[ord(c) - 32] if " " <= c <= "~" else 1000 for c in text.replace("·", " ")
    )
    return advance * size / 1000 * (1.12 if bold else 1.0)


def wrong_strip(
    wrong: Sequence[tuple[int, int, int, float]],
    pixels: bytes,
    classes: Sequence[str],
    shape: tuple[int, int, int] = FASHION_MNIST.shape,
) -> Markup:
    """The test images the model got wrong most confidently, from the official file's pixels
    (``shape``: channels, height and width of each, channel by channel), each titled with its
    index, true class, predicted class and the softmax at the prediction.

    Written as SVG directly (thumbnails and text only: no axes, nothing for matplotlib to lay out;
    it cost a fifth of a second a student), in the layout matplotlib gave it: 1.1 by 1.9 inches a
    thumbnail, a 2.1 pt pad, three title lines of 6.5 px above each image, drawn pixelated (one
    channel in gray_r: 0 white, 255 black; three in colour)."""
    channels, height, width_px = shape
    size, pad, width = channels * height * width_px, 2.1, 79.2 * len(wrong)
    side = (width - (len(wrong) + 1) * pad) / len(wrong)
    parts = [
        f'<svg xmlns:xlink="http://www.w3.org/1999/xlink" width="{width:g}pt" '
        f'height="136.8pt" viewBox="0 0 {width:g} 136.8" xmlns="http://www.w3.org/2000/svg" '
        'version="1.1">',
        '<rect width="100%" height="100%" style="fill: #ffffff"/>',
    ]
    for k, (index, label, predicted, confidence) in enumerate(wrong):
        x = pad + k * (side + pad)
        title = (
            f"#{index}",
            _name(classes, label),
            f"→ {_name(classes, predicted)} {100 * confidence:.0f}%",
        )
        parts += [
            f'<text x="{x + side / 2:.4f}" y="{y}" text-anchor="middle" '
            f'style="{_STRIP_FONT}">{escape(line)}</text>'
            for line, y in zip(title, (9.5719, 17.3737, 25.1749))
        ]
        png = base64.b64encode(_png(pixels[k * size : (k + 1) * size], shape)).decode()
        parts.append(
            f'<image x="{x:.4f}" y="31.1749" width="{side:.4f}" '
            f'height="{side * height / width_px:.4f}" '
            'preserveAspectRatio="none" style="image-rendering: pixelated" '
            f'xlink:href="data:image/png;base64,{png}"/>'
        )
    return Markup("\n".join([*parts, "</svg>"]))


_STRIP_FONT = (
    "font-size: 6.5px; font-family: 'DejaVu Sans', 'Bitstream Vera Sans', "  # as mpl
    "'Computer Modern Sans Serif', 'Lucida Grande', 'Verdana', 'Geneva', 'Lucid', "
    "'Arial', 'Helvetica', 'Avant Garde', sans-serif"
)


def _png(image: bytes, shape: tuple[int, int, int]) -> bytes:
    """An 8-bit PNG of one image stored channel by channel (``shape``: channels, height, width):
    one channel in grayscale, inverted (0 white), three in RGB."""
    channels, height, width = shape
    plane = height * width
    if channels == 1:
        pixels, kind = bytes(255 - v for v in image), 0  # grayscale
    else:  # each pixel's red, green and blue together, as PNG stores them
        pixels = bytes(image[c * plane + p] for p in range(plane) for c in range(channels))
        kind = 2  # RGB
    line = width * channels

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(
        b"\x00" + pixels[r * line : (r + 1) * line] for r in range(height)
    )  # filter 0: none
    header = struct.pack(">IIBBBBB", width, height, 8, kind, 0, 0, 0)  # 8 bits
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def _name(classes: Sequence[str], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else str(index)
