"""Grader for deep-learning homework notebooks (HW3: FashionMNIST training skills)."""

__version__ = "0.1.0"
