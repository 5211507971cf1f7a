"""Pairs of submissions whose code is unusually close (static/similarity.py finds them), kept in
OUT/similarity.json so that `grader report` shows them again without the submissions."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from grader.model.results import write_atomic

FILE = "similarity.json"


@dataclass(frozen=True)
class Pair:
    a: str  # account
    b: str
    score: float  # Jaccard of their own statements, 0..1
    shared: int  # statements both have
    # side by side: (a's line, b's line, "same" | "changed" | "only")
    rows: tuple[tuple[str, str, str], ...]


def save(out: Path, pairs: list[Pair]) -> None:
    write_atomic(out / FILE, json.dumps([asdict(p) for p in pairs]).encode())


def load(out: Path) -> list[Pair]:
    """The pairs a batch found; none when it found none or the file is damaged."""
    try:
        data = json.loads((out / FILE).read_text(encoding="utf-8"))
        return [
            Pair(
                str(p["a"]),
                str(p["b"]),
                float(p["score"]),
                int(p["shared"]),
                tuple((str(x), str(y), str(t)) for x, y, t in p["rows"]),
            )
            for p in data
        ]
    except (OSError, ValueError, TypeError, KeyError):
        return []
