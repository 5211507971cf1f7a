"""OUT/plots: every plot a page shows, kept under a key of the numbers it draws, so that a plot is
drawn once however many pages and runs show it (identical plots share one file). `grader grade`
draws a student's plots when their result lands (between two results, while the kernels run);
`grader report` draws only those missing (results graded elsewhere, PLOTS_VERSION raised) and
removes the files no page shows any more. Drawing stays in this process: only grader/run/ starts
processes, and `grader report` loads none of it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from markupsafe import Markup

from grader.model.results import Result, Status, write_atomic
from grader.model.rubric import Rubric
from grader.outputs.plots import PLOTS_VERSION, accuracy_histogram, training_curve, wrong_strip

FOLDER = "plots"  # OUT/plots


@dataclass(frozen=True, kw_only=True)
class Plot:
    """One plot: what it is, the numbers it shows (its key) and how to draw it."""

    kind: str  # "curve", "wrong" or "histogram": the start of its file's name
    numbers: object  # everything the drawing depends on, JSON-able
    draw: Callable[[], Markup | None]

    @property
    def file(self) -> str:
        text = json.dumps([PLOTS_VERSION, self.kind, self.numbers], sort_keys=True, default=str)
        return f"{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}.svg"


def _scale(rubric: Rubric) -> list[tuple[float, int]]:
    """What of the rubric the plots show: each threshold with its points, the bonus last."""
    return [(t.at_least, t.points) for t in (*rubric.accuracy.thresholds, rubric.accuracy.bonus)]


def student_plots(result: Result, rubric: Rubric) -> tuple[Plot, Plot]:
    """(the training curve, the surest mistakes) of a student's page."""
    graded = result.accuracy if result.status is Status.GRADED else None
    curve = Plot(
        kind="curve",
        numbers=(result.curve, _scale(rubric), graded),
        draw=partial(_curve, result.curve, rubric, graded),
    )
    names = rubric.dataset.class_names()  # the rubric's, else its dataset's in the table
    wrong = Plot(
        kind="wrong",
        numbers=(result.wrong, result.wrong_images, result.wrong_shape, names),
        draw=partial(_wrong_strip, result.wrong, result.wrong_images, result.wrong_shape, names),
    )
    return curve, wrong


def class_histogram(accuracies: Sequence[float], rubric: Rubric) -> Plot:
    return Plot(
        kind="histogram",
        numbers=(list(accuracies), _scale(rubric)),
        draw=partial(_histogram, list(accuracies), rubric),
    )


def _curve(curve: dict[str, object] | None, rubric: Rubric, graded: float | None) -> Markup | None:
    return training_curve(curve, rubric, graded) if curve else None


def _histogram(accuracies: list[float], rubric: Rubric) -> Markup | None:
    return accuracy_histogram(accuracies, rubric) if accuracies else None


def _wrong_strip(
    wrong: Sequence[tuple[int, int, int, float]],
    images: str | None,
    shape: tuple[int, int, int],
    names: Sequence[str],
) -> Markup | None:
    """The surest mistakes as thumbnails, when the result carries their pixels (from the official
    file; ``shape``: each image's channels, height and width, grayscale or RGB)."""
    if not wrong or not images:
        return None
    try:
        pixels = base64.b64decode(images, validate=True)
    except (binascii.Error, ValueError):
        return None
    channels, height, width = shape
    if channels not in (1, 3) or len(pixels) != channels * height * width * len(wrong):
        return None
    return wrong_strip(wrong, pixels, names, shape)


def cached(out: Path, plot: Plot) -> Markup | None:
    """``plot`` from OUT/plots, drawn and kept there first if it is not; None when its numbers
    cannot be drawn (the page goes without it). What else drawing raises is the caller's."""
    path = out / FOLDER / plot.file
    try:
        return Markup(path.read_text(encoding="utf-8"))
    except OSError:
        pass
    drawn = _drawn(plot)
    if drawn is not None:
        write_atomic(path, str(drawn).encode())
    return drawn


def _drawn(plot: Plot) -> Markup | None:
    """``plot``, or none when its numbers cannot be drawn: one odd result never costs the class its
    pages (the numbers come from a record the student's process wrote)."""
    try:
        return plot.draw()
    except (ValueError, OverflowError, TypeError, KeyError, MemoryError):
        return None


def draw_missing(out: Path, plots: Iterable[Plot]) -> int:
    """Draws into OUT/plots those of ``plots`` not there yet, each once; returns how many were
    missing. One that cannot be drawn is left out, whatever drawing it raises: the page that shows
    it draws it again, and says why (a result landing never costs the batch)."""
    missing = list({p.file: p for p in plots if not (out / FOLDER / p.file).is_file()}.values())
    for plot in missing:
        try:
            cached(out, plot)
        except Exception:  # noqa: BLE001 - said by the page that shows it
            pass
    return len(missing)


def prune(out: Path, shown: Iterable[Plot]) -> None:
    """Removes from OUT/plots every file that none of the ``shown`` plots is (results changed,
    PLOTS_VERSION raised, or the files of an earlier layout)."""
    keep = {p.file for p in shown}
    for path in (out / FOLDER).glob("*.svg"):
        if path.name not in keep:
            path.unlink(missing_ok=True)
