"""A fixture corpus graded as one class, as a TA's batch grades it: two jobs at a time, sandboxed
where this machine can, on the noisy tiny data (a quarter of the images also show another class's
band, so no model reaches 100% and a wrong index mapping or checkpoint shows in the accuracy)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest
from tinydata import make_tiny_fashion_mnist

from grader.model.context import Context
from grader.model.dataset import Dataset
from grader.model.results import Result
from grader.pipeline.batch import grade_directory
from grader.pipeline.executors.local import LocalExecutor
from grader.run.sandbox import unavailable_reason
from grader.run.slots import plan_slots


def grade_class(
    corpus: Path,
    names: Iterable[str],
    context: Context,
    factory: pytest.TempPathFactory,
    label: str,
    hidden: bool = False,
    noise: float | None = 0.25,
) -> dict[str, Result]:
    """Each named file of ``corpus`` graded in one batch; ``hidden``: as `grader grade` grades by
    default, the test labels hidden (the kernel sees the test images in a secret order and shuffled
    labels); ``noise``: the tiny data's (None: the context's own dataset). The results by file
    name."""
    dataset = (
        Dataset(make_tiny_fashion_mnist(factory.mktemp(f"{label}-fmnist"), noise=noise))
        if noise
        else None
    )
    rubric = dataclasses.replace(context.rubric, hide_test_labels=hidden)
    context = dataclasses.replace(
        context,
        rubric=rubric,
        dataset=dataset or context.dataset,
        sandboxed=unavailable_reason() is None,
    )
    folder = factory.mktemp(label)
    for name in names:
        shutil.copy(corpus / name, folder / name)
    summary = grade_directory(
        folder, folder.parent / f"{label}-out", context, LocalExecutor(plan_slots(2, 2, (), 1, 1))
    )
    return {r.source: r for r in summary.results}
