"""The homework's rules, one module each (its static half, its run-time half, the probe facts it
reads), and the one table they are registered in: the rubric's frozen items come from it.

Adding a rule for another homework is one new module with ``RULE``, ``static`` and ``runtime``
(and optionally ``findings``: flags with a note), and one line in ``RULES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from grader.pyast import ParsedCell, parse_cells
from grader.reference import FrozenFacts
from grader.results import Check, StaticReport
from grader.rules import epochs, linear_layers, valid_size
from grader.rules.common import RunView
from grader.run_facts import training
from grader.submission import Submission
from grader.tamper import static_evidence

if TYPE_CHECKING:
    from grader.rubric import Rubric

Finding = tuple[str, str]  # (flag, note)


def _no_findings(run: RunView, facts: FrozenFacts, rubric: Rubric) -> tuple[Finding, ...]:
    return ()


@dataclass(frozen=True)
class Rule:
    id: str
    static: Callable[[Submission, tuple[ParsedCell, ...], FrozenFacts], Check]
    runtime: Callable[[RunView, FrozenFacts, Rubric], Check]
    findings: Callable[[RunView, FrozenFacts, Rubric], tuple[Finding, ...]] = _no_findings
    instead: str = ""  # what a student may change instead of breaking it


RULES: dict[str, Rule] = {
    rule.id: rule for rule in (
        Rule(epochs.RULE, epochs.static, epochs.runtime, epochs.findings, epochs.INSTEAD),
        Rule(valid_size.RULE, valid_size.static, valid_size.runtime, instead=valid_size.INSTEAD),
        Rule(linear_layers.RULE, linear_layers.static, linear_layers.runtime, instead=linear_layers.INSTEAD),
    )
}


def check_static(sub: Submission, facts: FrozenFacts, rubric: Rubric) -> StaticReport:
    """Every frozen rule of the rubric, checked on the code as written.

    A cell that does not parse comes first, and while one does, no rule is called violated (left
    to the run instead): code that could not be read is no evidence that a rule was kept or broken.
    """
    cells = parse_cells(sub)
    checks = [RULES[rule].static(sub, cells, facts) for rule in rubric.frozen]
    unreadable = [parsed for parsed in cells if parsed.error]
    broken = [Check("syntax", None, f"{sub.where(parsed.cell)}: not valid Python ({parsed.error}); fix it first: "
                                    "that cell was not checked", sub.path.name,
                    parsed.cell.number if sub.path.suffix == ".ipynb" else None, parsed.cell.first_line)
              for parsed in unreadable]
    if unreadable:
        where = sub.where(unreadable[0].cell)
        checks = [replace(c, ok=None, message=f"undecided while {where} does not parse (the run will check it); "
                                              f"statically: {c.message}")
                  if c.violated else c for c in checks]
    tampering = static_evidence(sub, cells)
    return StaticReport(tuple(broken + checks), tampering.evidence, tampering.signs)


def run_view(record: dict[str, Any], finished: bool) -> RunView:
    return RunView(record, finished, training(record))


def check_runtime(view: RunView | None, facts: FrozenFacts, rubric: Rubric) -> tuple[Check, ...]:
    """Every frozen rule of the rubric, judged on what the run recorded."""
    if view is None:
        return ()
    return tuple(RULES[rule].runtime(view, facts, rubric) for rule in rubric.frozen)


def findings(view: RunView | None, facts: FrozenFacts, rubric: Rubric) -> tuple[Finding, ...]:
    """Flags the rules raise about the run without a verdict (early stopping under ``flag``)."""
    if view is None:
        return ()
    return tuple(f for rule in rubric.frozen for f in RULES[rule].findings(view, facts, rubric))


def effective(checks: tuple[Check, ...]) -> tuple[Check, ...]:
    """The verdicts that count: a rule the run decided is judged by the run (it saw the model that was
    really trained); the static verdict stands where the run did not decide or did not happen."""
    decided = {c.id for c in checks if c.stage == "run" and c.ok is not None}
    return tuple(c for c in checks if c.stage == "run" or c.id not in decided)


def disagreements(checks: tuple[Check, ...]) -> tuple[str, ...]:
    """Notes for the rules where the static and the run-time verdicts are both decided and differ."""
    static = {c.id: c.ok for c in checks if c.stage == "static" and c.ok is not None}
    run = {c.id: c.ok for c in checks if c.stage == "run" and c.ok is not None}
    return tuple(f"{rule}: the static check says {'ok' if static[rule] else 'violated'}, the run says "
                 f"{'ok' if run[rule] else 'violated'}" for rule in static if rule in run and static[rule] != run[rule])
