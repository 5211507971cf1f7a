"""Leaf data types every stage shares: submissions, the rubric, the context, results and findings.

Imports nothing else of the grader."""
