"""What every submission of a batch is graded against."""

from __future__ import annotations

from dataclasses import dataclass

from grader.model.dataset import Dataset
from grader.model.rubric import FrozenFacts, Rubric


@dataclass(frozen=True)
class Context:
    """What every submission of a batch is graded against, and how it runs."""

    rubric: Rubric
    facts: FrozenFacts
    dataset: Dataset | None  # None: static checks only
    sandboxed: bool = False  # run each kernel inside bubblewrap
