"""Code that is unusually close across a class: a list for the TA to look at, never an accusation.

Each submission becomes its program's statements in one normal form (``comparable_lines``: what
formatting, comments, cell markers and export noise do not change), less every statement of the
course's template. Two submissions are listed when what remains overlaps by at least the rubric's
``similarity.threshold`` (Jaccard over the distinct statements) and both have at least
``similarity.min_lines`` statements of their own. The pairs are kept in OUT/similarity.json, so
``grader report`` shows them again without the submissions.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

from grader.results import write_atomic
from grader.submission import Submission, comparable_lines

FILE = "similarity.json"


@dataclass(frozen=True)
class Pair:
    a: str  # account
    b: str
    score: float  # Jaccard of their own statements, 0..1
    shared: int  # statements both have
    rows: tuple[tuple[str, str, str], ...]  # side by side: (a's line, b's line, "same" | "changed" | "only")


def own_statements(sub: Submission, template: set[str]) -> list[str]:
    return [line for line in comparable_lines(sub) if line.strip() and line not in template]


def similar_pairs(subs: list[Submission], template: Submission, threshold: float, min_lines: int) -> list[Pair]:
    """The pairs at or over ``threshold``, closest first."""
    common = set(comparable_lines(template))
    own = {s.account: own_statements(s, common) for s in subs}
    distinct = {account: set(lines) for account, lines in own.items() if len(set(lines)) >= min_lines}
    pairs = []
    for a, b in combinations(sorted(distinct), 2):
        both = distinct[a] & distinct[b]
        score = len(both) / len(distinct[a] | distinct[b])
        if score >= threshold:
            pairs.append(Pair(a, b, round(score, 3), len(both), _side_by_side(own[a], own[b])))
    return sorted(pairs, key=lambda p: -p.score)


def _side_by_side(left: list[str], right: list[str]) -> tuple[tuple[str, str, str], ...]:
    rows: list[tuple[str, str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=left, b=right, autojunk=False).get_opcodes():
        if tag == "equal":
            rows += [(line, line, "same") for line in left[i1:i2]]
        else:
            span = max(i2 - i1, j2 - j1)
            ours, theirs = left[i1:i2] + [""] * (span - (i2 - i1)), right[j1:j2] + [""] * (span - (j2 - j1))
            rows += [(x, y, "changed" if x and y else "only") for x, y in zip(ours, theirs)]
    return tuple(rows)


def save(out: Path, pairs: list[Pair]) -> None:
    write_atomic(out / FILE, json.dumps([asdict(p) for p in pairs]).encode())


def load(out: Path) -> list[Pair]:
    """The pairs a batch found; none when it found none or the file is damaged."""
    try:
        data = json.loads((out / FILE).read_text(encoding="utf-8"))
        return [Pair(str(p["a"]), str(p["b"]), float(p["score"]), int(p["shared"]),
                     tuple((str(x), str(y), str(t)) for x, y, t in p["rows"])) for p in data]
    except (OSError, ValueError, TypeError, KeyError):
        return []
