"""Grader for deep-learning homework notebooks: a homework is a template, a rubric and its data
(HW3, FashionMNIST training skills, at the top level; others under homeworks/)."""

from __future__ import annotations

__version__ = "0.1.0"


def precheck(path: str | None = None) -> object:
    """Check the notebook open in Colab or Jupyter (or ``path``) against the homework's rules, in
    well under a second, and show the verdict in the cell: ``import grader; grader.precheck()``."""
    from grader.pipeline.precheck import precheck as run

    return run(path)
