"""Code that is unusually close across a class: a list for the TA to look at, never an accusation.

Each submission becomes its program's statements in one normal form (``comparable_lines``: what
formatting, comments, cell markers and export noise do not change), less every statement of the
course's template. Two submissions are listed when what remains overlaps by at least the rubric's
``similarity.threshold`` (Jaccard over the distinct statements) and both have at least
``similarity.min_lines`` statements of their own. The pairs are kept in OUT/similarity.json, so
``grader report`` shows them again without the submissions.
"""

from __future__ import annotations

import ast
import difflib
from itertools import combinations

from grader.model.pairs import Pair
from grader.model.submission import Submission
from grader.static.pyast import parse_python, parseable


def own_statements(sub: Submission, template: set[str]) -> list[str]:
    return [line for line in comparable_lines(sub) if line.strip() and line not in template]


def similar_pairs(
    subs: list[Submission], template: Submission, threshold: float, min_lines: int
) -> list[Pair]:
    """The pairs at or over ``threshold``, closest first."""
    common = set(comparable_lines(template))
    own = {s.account: own_statements(s, common) for s in subs}
    distinct = {
        account: set(lines) for account, lines in own.items() if len(set(lines)) >= min_lines
    }
    pairs = []
    for a, b in combinations(sorted(distinct), 2):
        both = distinct[a] & distinct[b]
        score = len(both) / len(distinct[a] | distinct[b])
        if score >= threshold:
            pairs.append(Pair(a, b, round(score, 3), len(both), _side_by_side(own[a], own[b])))
    return sorted(pairs, key=lambda p: -p.score)


def _side_by_side(left: list[str], right: list[str]) -> tuple[tuple[str, str, str], ...]:
    rows: list[tuple[str, str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
        a=left, b=right, autojunk=False
    ).get_opcodes():
        if tag == "equal":
            rows += [(line, line, "same") for line in left[i1:i2]]
        else:
            span = max(i2 - i1, j2 - j1)
            ours, theirs = (
                left[i1:i2] + [""] * (span - (i2 - i1)),
                right[j1:j2] + [""] * (span - (j2 - j1)),
            )
            rows += [(x, y, "changed" if x and y else "only") for x, y in zip(ours, theirs)]
    return tuple(rows)


def _is_export_noise(node: ast.stmt) -> bool:
    """What exports add or drop without changing the program: markdown cells turned into string
    literals (Colab's .py), magics (`pass` after `parseable`, or nbconvert's get_ipython()
    calls)."""
    if isinstance(node, ast.Pass):
        return True
    if not isinstance(node, ast.Expr):
        return False
    value = node.value
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return True
    return isinstance(value, ast.Call) and "get_ipython()" in ast.unparse(value.func)


def comparable_lines(sub: Submission) -> list[str]:
    """The program's statements in one normal form (ast.unparse), so that formatting, comments,
    cell markers and what an export adds do not count as differences."""
    lines = []
    for cell in sub.code_cells:
        try:
            tree = parse_python(parseable(cell.source))
        except SyntaxError:  # compared as text, without blanks and comments
            lines += [
                t
                for t in (line.strip() for line in cell.source.splitlines())
                if t and not t.startswith("#")
            ]
            continue
        body = [node for node in tree.body if not _is_export_noise(node)]
        lines += ast.unparse(ast.Module(body=body, type_ignores=[])).splitlines()
    return lines


def twin_difference(sub: Submission, twin: Submission) -> str | None:
    """A note when ``twin``, the .py kept beside the graded .ipynb, has other code than the
    notebook."""
    ours, theirs = comparable_lines(sub), comparable_lines(twin)
    if ours == theirs:
        return None
    changed = sum(
        max(i2 - i1, j2 - j1)
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
            a=ours, b=theirs, autojunk=False
        ).get_opcodes()
        if tag != "equal"
    )
    return (
        f"{twin.path.name} differs from the notebook in {changed} code "
        f"line{'s' if changed != 1 else ''}; the notebook was graded"
    )
