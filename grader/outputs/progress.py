"""Show a batch's progress: a live bar on a terminal, one plain line per submission elsewhere (CI
logs)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

from grader.model.results import Result
from grader.outputs.text import render


@dataclass(frozen=True)
class Progress:
    """Where the batch stands: after a submission finished (``result``), or as one starts (None)."""

    result: Result | None
    done: int
    total: int
    cached: bool
    running: tuple[str, ...]  # accounts being graded now (empty where the executor cannot tell)
    # ``result`` is a borderline result's re-run with this seed, not the student's result
    seed: int | None = None


class Eta:
    """Time left, from the fresh (not cached) results so far and how many jobs run at once."""

    def __init__(self, width: int) -> None:
        self.width, self.started, self.fresh = width, time.monotonic(), 0

    def update(self, p: Progress) -> str | None:
        """Count ``p`` when it is a fresh finish; return the ETA as m:ss, or None before any
        estimate."""
        if p.result is not None and not p.cached:
            self.fresh += 1
        left = p.total - p.done
        if not self.fresh or not left:
            return None
        elapsed = time.monotonic() - self.started
        seconds = elapsed / self.fresh * left * min(self.width, self.fresh) / self.width
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _line(p: Progress, eta: str | None) -> str:
    return render("progress.txt.j2", p=p, r=p.result, width=len(str(p.total)), eta=eta).rstrip("\n")


class PlainProgress:
    """One line per finished submission, with the ETA: for logs and pipes."""

    def __init__(self, stream: TextIO, width: int) -> None:
        self.stream, self.eta = stream, Eta(width)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, p: Progress) -> None:
        eta = self.eta.update(p)
        if p.result is not None:
            print(_line(p, eta), file=self.stream, flush=True)


class LiveProgress:
    """A rich live bar (done/total, who is running, ETA) under the finished submissions' lines."""

    def __init__(self, stream: TextIO, width: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress as Bar,
            SpinnerColumn,
            TextColumn,
        )

        self.eta = Eta(width)
        self.bar = Bar(
            SpinnerColumn(),
            TextColumn("grading"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[eta]} left"),
            TextColumn("{task.fields[running]}"),
            console=Console(file=stream),
            transient=True,
        )
        self.task = self.bar.add_task("grading", total=None, eta="-", running="")

    def __enter__(self) -> LiveProgress:
        self.bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.bar.stop()

    def __call__(self, p: Progress) -> None:
        eta = self.eta.update(p)
        shown = ", ".join(p.running[:3]) + (f" +{len(p.running) - 3}" if len(p.running) > 3 else "")
        self.bar.update(
            self.task,
            total=p.total,
            completed=p.done,
            eta=eta or "-",
            running=f"running: {shown}" if shown else "",
        )
        if p.result is not None:
            self.bar.console.print(_line(p, None), markup=False, highlight=False, soft_wrap=True)


def progress_display(stream: TextIO, width: int) -> PlainProgress | LiveProgress:
    """The live bar when ``stream`` is a terminal, plain lines otherwise."""
    return LiveProgress(stream, width) if stream.isatty() else PlainProgress(stream, width)
