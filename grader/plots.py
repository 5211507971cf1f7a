"""The pages' plots, drawn with matplotlib as inline SVG (the pages open offline, from a zip, with
no CDN). Only numbers the grader computed go into a plot, never a student's text."""

from __future__ import annotations

import io
from collections.abc import Sequence

from typing import TYPE_CHECKING

from markupsafe import Markup

from grader.rubric import Rubric

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _svg(figure: Figure) -> Markup:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})  # the same plot gives the same page
    text = buffer.getvalue()
    return Markup(text[text.index("<svg"):])  # the SVG element alone, for inlining


def accuracy_histogram(accuracies: Sequence[float], rubric: Rubric) -> Markup:
    """The class's measured accuracies in 1-point bins, with the rubric's thresholds as lines."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    policy = rubric.accuracy
    lines = [(t.at_least, f"{t.at_least:g}%: {t.points}") for t in policy.thresholds]
    lines += [(policy.bonus.at_least, f"{policy.bonus.at_least:g}%: +{policy.bonus.points}")] if policy.bonus.points else []
    low = int(min([*accuracies, *(at for at, _ in lines)]) // 1) - 1
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "grader", "font.size": 9}):
        figure = Figure(figsize=(7, 2.6))
        axes = figure.add_subplot()
        axes.hist(list(accuracies), bins=range(max(0, low), 102), color="#4c78a8", edgecolor="white")
        for at, label in lines:
            axes.axvline(at, color="#b22222", linewidth=1, linestyle="--")
            axes.annotate(label, (at, 1), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                          fontsize=8, color="#b22222")
        axes.set_xlabel("measured test accuracy (%)")
        axes.set_ylabel("submissions")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        figure.tight_layout()
        return _svg(figure)


def training_curve(curve: dict[str, object]) -> Markup:
    """The graded model's training loss (left axis) and learning rate (right axis) per optimizer step,
    with a light line where each pass over the training data (epoch) began."""
    import matplotlib
    from matplotlib.figure import Figure

    every, first = int(str(curve["every"])), int(str(curve["first_step"]))
    loss, lr = list(curve["loss"]), list(curve["lr"])  # type: ignore[call-overload]
    steps = [first + every * i for i in range(len(loss))]
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "grader", "font.size": 9}):
        figure = Figure(figsize=(7, 2.6))
        axes = figure.add_subplot()
        for start in curve["epochs"]:  # type: ignore[attr-defined]
            axes.axvline(start, color="#dddddd", linewidth=0.8)
        axes.plot([s for s, v in zip(steps, loss) if v is not None], [v for v in loss if v is not None],
                  color="#4c78a8", linewidth=1.2, label="training loss")
        axes.set_xlabel("optimizer step (grey lines: a pass over the training data began)")
        axes.set_ylabel("training loss")
        rate = axes.twinx()
        rate.plot([s for s, v in zip(steps, lr) if v is not None], [v for v in lr if v is not None],
                  color="#e45756", linewidth=1, linestyle="--", label="learning rate")
        rate.set_ylabel("learning rate")
        handles = [*axes.get_lines()[-1:], *rate.get_lines()]
        axes.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
        figure.tight_layout()
        return _svg(figure)
