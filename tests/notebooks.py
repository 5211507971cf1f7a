"""Notebooks the tests derive from a fixture: a template with a few lines changed."""

from __future__ import annotations

from pathlib import Path

import nbformat


def variant(path: Path, source: Path, *changes: tuple[str, str]) -> Path:
    """``source`` written to ``path`` with each ``old`` replaced by ``new`` (each found exactly
    once)."""
    book = nbformat.read(str(source), as_version=4)
    for old, new in changes:
        found = [cell for cell in book.cells if old in cell.source]
        assert len(found) == 1 and found[0].source.count(old) == 1, old
        found[0].source = found[0].source.replace(old, new)
    nbformat.write(book, str(path))
    return path
