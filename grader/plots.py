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
