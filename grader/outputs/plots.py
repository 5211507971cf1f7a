"""The pages' plots, drawn with matplotlib as inline SVG (the pages open offline, from a zip, with
no CDN). Only numbers the grader computed go into a plot, never a student's text."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

from grader.model.rubric import Rubric

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


# Drawn plots are kept in OUT/plots by their numbers and this: raise it when a plot changes.
PLOTS_VERSION = 3


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


def curve_figure(
    curve: dict[str, object], rubric: Rubric | None = None, graded: float | None = None
) -> Figure:
    """The graded model's training loss (left axis) and learning rate (right axis) per optimizer
    step,
    with a light line where each pass over the training data (epoch) began; below, where the probe
    saw the model evaluated, its validation and test accuracy by step with every threshold of the
    rubric, the graded accuracy labelled on its point."""
    import matplotlib
    from matplotlib.figure import Figure

    every, first = int(str(curve["every"])), int(str(curve["first_step"]))
    loss, lr = list(curve["loss"]), list(curve["lr"])  # type: ignore[call-overload]
    steps = [first + every * i for i in range(len(loss))]
    validation = [(float(s), float(a)) for s, a in curve.get("validation") or []]  # type: ignore[attr-defined]
    test = [(float(s), float(a)) for s, a in curve.get("test") or []]  # type: ignore[attr-defined]
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "grader", "font.size": 9}):
        rows = 2 if validation or test or graded is not None else 1
        figure = Figure(figsize=(7, 2.8 * rows))
        axes = figure.add_subplot(rows, 1, 1)
        for start in curve["epochs"]:  # type: ignore[attr-defined]
            axes.axvline(start, color="#dddddd", linewidth=0.8)
        axes.plot(
            [s for s, v in zip(steps, loss) if v is not None],
            [v for v in loss if v is not None],
            color="#4c78a8",
            linewidth=1.2,
            label="training loss",
        )
        axes.set_xlabel("optimizer step (grey lines: a pass over the training data began)")
        axes.set_ylabel("training loss")
        rate = axes.twinx()
        rate.plot(
            [s for s, v in zip(steps, lr) if v is not None],
            [v for v in lr if v is not None],
            color="#e45756",
            linewidth=1,
            linestyle="--",
            label="learning rate",
        )
        rate.set_ylabel("learning rate")
        handles = [*axes.get_lines()[-1:], *rate.get_lines()]
        axes.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
        if rows == 2:
            end = test[-1][0] if test else float(steps[-1]) if steps else 0.0
            _accuracy_panel(
                figure.add_subplot(2, 1, 2, sharex=axes), validation, test, rubric, (end, graded)
            )
        figure.tight_layout()
        return figure


def training_curve(
    curve: dict[str, object], rubric: Rubric | None = None, graded: float | None = None
) -> Markup:
    return _svg(curve_figure(curve, rubric, graded))


def _accuracy_panel(
    axes: Axes,
    validation: list[tuple[float, float]],
    test: list[tuple[float, float]],
    rubric: Rubric | None,
    point: tuple[float, float | None],
) -> None:
    """Validation and test accuracy by optimizer step; the thresholds (which apply to the test
    accuracy) all on the axis, labelled at its right edge; the graded accuracy on the last test
    point."""
    if validation:
        axes.plot(
            *zip(*validation),
            color="#54a24b",
            marker="o",
            markersize=3,
            linewidth=1.2,
            label="validation accuracy (scored by the grader)",
        )
    if test:
        axes.plot(
            *zip(*test),
            color="#b279a2",
            marker="s",
            markersize=4,
            linewidth=1,
            linestyle=":",
            label="test accuracy of each test pass",
        )
    step, graded = point
    values = [a for _, a in validation + test] + ([graded] if graded is not None else [])
    lines = _thresholds(rubric) if rubric is not None else []
    low = min(values + [at for at, _ in lines]) - 2
    high = min(100.0, max(values + [at for at, _ in lines]) + 2)
    axes.set_ylim(low, high)
    for at, _ in lines:
        axes.axhline(at, color="#b22222", linewidth=0.8, linestyle="--")
    # Labels in the right margin, outside the data; thresholds closer than a label's height share
    # one.
    for at, label in _merged(lines, high - low, 0.1):
        axes.annotate(
            label,
            (1, at),
            xycoords=("axes fraction", "data"),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=7,
            color="#b22222",
            va="center",
            ha="left",
            annotation_clip=False,
        )
    if graded is not None:
        axes.plot(
            [step],
            [graded],
            marker="*",
            markersize=10,
            color="#222222",
            linestyle="none",
            label="the graded accuracy",
        )
        axes.annotate(
            f"graded {graded:.2f}%",
            (step, graded),
            xytext=(-8, 6),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=8,
            fontweight="bold",
            color="#222222",
        )
    axes.set_ylabel("accuracy (%)")
    axes.set_xlabel("optimizer step")
    axes.legend(loc="lower right", fontsize=8, frameon=False)


def wrong_strip(
    wrong: Sequence[tuple[int, int, int, float]], pixels: bytes, classes: Sequence[str]
) -> Markup:
    """The test images the model got wrong most confidently, from the official IDX file's pixels,
    each
    titled with its index, true class, predicted class and the softmax at the prediction.

    Written as SVG directly (thumbnails and text only: no axes, nothing for matplotlib to lay out;
    it cost a fifth of a second a student), in the layout matplotlib gave it: 1.1 by 1.9 inches a
    thumbnail, a 2.1 pt pad, three title lines of 6.5 px above each 28 by 28 image, drawn pixelated
    (gray_r: 0 white, 255 black)."""
    size, pad, width = 28 * 28, 2.1, 79.2 * len(wrong)
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
        gray = bytes(255 - v for v in pixels[k * size : (k + 1) * size])
        png = base64.b64encode(_gray_png(gray, 28)).decode()
        parts.append(
            f'<image x="{x:.4f}" y="31.1749" width="{side:.4f}" height="{side:.4f}" '
            'preserveAspectRatio="none" style="image-rendering: pixelated" '
            f'xlink:href="data:image/png;base64,{png}"/>'
        )
    return Markup("\n".join([*parts, "</svg>"]))


_STRIP_FONT = (
    "font-size: 6.5px; font-family: 'DejaVu Sans', 'Bitstream Vera Sans', "  # as mpl
    "'Computer Modern Sans Serif', 'Lucida Grande', 'Verdana', 'Geneva', 'Lucid', "
    "'Arial', 'Helvetica', 'Avant Garde', sans-serif"
)


def _gray_png(gray: bytes, side: int) -> bytes:
    """An 8-bit grayscale PNG of ``side`` by ``side`` pixels (row by row, 0 black)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(
        b"\x00" + gray[r * side : (r + 1) * side] for r in range(side)
    )  # filter 0: none
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8 bits, grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def _name(classes: Sequence[str], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else str(index)
