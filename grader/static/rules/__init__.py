"""The homework's rules, one module each (its static half, its run-time half, the probe facts it
reads), and the one table they are registered in: the rubric's frozen items come from it.

Adding a rule for another homework is one new module with ``RULE``, ``static`` and ``runtime``
(and optionally ``findings``: flags with a note), its id in ``RuleId`` (grader/model/findings.py),
and one line in ``RULES``. The rubric names rules by ``RuleId`` and never imports this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from grader.model.findings import Finding, RuleId
from grader.model.results import Check, StaticReport
from grader.model.rubric import FrozenFacts
from grader.model.submission import Submission
from grader.static.pyast import ParsedCell, parse_cells
from grader.static.rules import epochs, linear_layers, valid_size
from grader.static.rules.common import RunView
from grader.static.tamper import label_run, literal_data, static_evidence

if TYPE_CHECKING:
    from grader.judge.recompute import Recomputed
    from grader.model.probe_facts import ProbeFacts
    from grader.model.rubric import Rubric


def _no_findings(run: RunView, facts: FrozenFacts, rubric: Rubric) -> tuple[Finding, ...]:
    return ()


@dataclass(frozen=True)
class Rule:
    id: RuleId
    static: Callable[[Submission, tuple[ParsedCell, ...], FrozenFacts], Check]
    runtime: Callable[[RunView, FrozenFacts, Rubric], Check]
    findings: Callable[[RunView, FrozenFacts, Rubric], tuple[Finding, ...]] = _no_findings
    instead: str = ""  # what a student may change instead of breaking it


RULES: dict[RuleId, Rule] = {
    rule.id: rule
    for rule in (
        Rule(epochs.RULE, epochs.static, epochs.runtime, epochs.findings, epochs.INSTEAD),
        Rule(
            valid_size.RULE,
            valid_size.static,
            valid_size.runtime,
            valid_size.findings,
            valid_size.INSTEAD,
        ),
        Rule(
            linear_layers.RULE,
            linear_layers.static,
            linear_layers.runtime,
            instead=linear_layers.INSTEAD,
        ),
        # the same rule under the name for a template with other weight layers than nn.Linear
        Rule(
            RuleId.WEIGHT_LAYERS,
            linear_layers.weight_static,
            linear_layers.weight_runtime,
            instead=linear_layers.WEIGHT_INSTEAD,
        ),
    )
}


def check_static(sub: Submission, facts: FrozenFacts, rubric: Rubric) -> StaticReport:
    """Every frozen rule of the rubric, checked on the code as written.

    A cell that does not parse comes first, and while one does, no rule is called violated (left
    to the run instead): code that could not be read is no evidence that a rule was kept or broken.
    """
    cells = parse_cells(sub)
    checks = [_told(RULES[rule], RULES[rule].static(sub, cells, facts)) for rule in rubric.frozen]
    unreadable = [parsed for parsed in cells if parsed.error]
    broken = [
        Check(
            "syntax",
            None,
            f"{sub.where(parsed.cell)}: not valid Python ({parsed.error}); "
            "fix it first: that cell was not checked",
            sub.path.name,
            parsed.cell.number if sub.path.suffix == ".ipynb" else None,
            parsed.cell.first_line,
        )
        for parsed in unreadable
    ]
    if unreadable:
        where = sub.where(unreadable[0].cell)
        checks = [
            replace(
                c,
                ok=None,
                message=f"undecided while {where} does not parse (the run will check it); "
                f"statically: {c.message}",
            )
            if c.violated
            else c
            for c in checks
        ]
    tampering = static_evidence(sub, cells, label_run(rubric.dataset))
    return StaticReport(
        tuple(broken + checks),
        tampering.evidence,
        tampering.signs,
        literal_data(sub, cells, facts.text),
    )


def run_view(record: ProbeFacts, finished: bool, recomputed: Recomputed | None = None) -> RunView:
    # the run-time halves only: the static check never loads it
    from grader.judge.run_facts import training

    return RunView(record, finished, training(record), recomputed)


def check_runtime(view: RunView | None, facts: FrozenFacts, rubric: Rubric) -> tuple[Check, ...]:
    """Every frozen rule of the rubric, judged on what the run recorded."""
    if view is None:
        return ()
    return tuple(
        _told(RULES[rule], RULES[rule].runtime(view, facts, rubric)) for rule in rubric.frozen
    )


def _told(rule: Rule, check: Check) -> Check:
    """``rule``'s check, when broken, with what the student may change instead."""
    return replace(check, instead=rule.instead) if check.violated else check


def findings(view: RunView | None, facts: FrozenFacts, rubric: Rubric) -> tuple[Finding, ...]:
    """Flags the rules raise about the run without a verdict (early stopping under ``flag``)."""
    if view is None:
        return ()
    return tuple(f for rule in rubric.frozen for f in RULES[rule].findings(view, facts, rubric))
