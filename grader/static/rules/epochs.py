"""The epochs rule: the number of epochs (``n_epochs``) is fixed.

Static half: ``n_epochs`` keeps the template's value and the training loop iterates it.
Run-time half: the passes over the training images that stepped the graded model's optimizer
(probe facts: train_passes, optimizers, model.param_serials; lineage from
grader/judge/run_facts.py).
Fewer passes in a complete run is early stopping, judged by the rubric's ``early_stopping``.
Only the passes the final weights descend from count: training on after loading back a state saved
before some steps discards those steps (run_facts.lineage_steps). A step after which no batch of
training images had been drawn (probe: the optimizer's ``unattributed``) leaves the rule undecided,
and so do steps over images fed beside the DataLoader whose passes are the epochs (``beside``) and
changes of the weights between or after its steps that no counted step or load explains (``moved``:
probe/continuity.py; an update made where the step hooks cannot see it), and weights loaded (or a
never-stepped model graded) outside the hull of the states the counted steps made (``foreign``), and
gradients of its Linear weights their layers' calls do not explain (``unexplained``:
probe/gradients.py;
rows fed to a weight another way trained it).
"""

from __future__ import annotations

import ast
import math
from typing import TYPE_CHECKING

from grader.model.findings import Finding, Flag, RuleId
from grader.model.results import Check
from grader.model.rubric import FrozenFacts
from grader.model.submission import Submission
from grader.static.pyast import ParsedCell, const_value, dotted, top_level_constants, walk_cells
from grader.static.reference import epoch_loops, is_epoch_loop
from grader.static.rules.common import (
    RunView,
    frozen_value,
    run_check,
    static_check,
    unattributed,
    unseen_rows,
)

if TYPE_CHECKING:
    from grader.model.rubric import Rubric

RULE = RuleId.EPOCHS
# Shown beside a violation: what the student may change instead.
INSTEAD = (
    "keep the number of epochs; "
    "within them you may change the optimizer, learning rate, scheduler, batch size, loss, "
    "augmentation and input normalization"
)


def _range_count(args: list[ast.expr], constants: dict[str, float]) -> float | None:
    """How many times ``range(*args)`` iterates, when its arguments are constants."""
    values = [const_value(a, constants) for a in args]
    if not 1 <= len(values) <= 3 or any(v is None for v in values):
        return None
    start, stop, step = (
        (0.0, values[0], 1.0)
        if len(values) == 1
        else (values[0], values[1], values[2] if len(values) == 3 else 1.0)
    )
    assert start is not None and stop is not None and step is not None
    return max(0, math.ceil((stop - start) / step)) if step else None


def _enclosing_functions(cells: tuple[ParsedCell, ...]) -> dict[int, ast.FunctionDef]:
    """id(node) -> the innermost function definition around it."""
    owner: dict[int, ast.FunctionDef] = {}
    for _, function in walk_cells(cells):
        if isinstance(function, ast.FunctionDef):
            for node in ast.walk(function):
                owner[id(node)] = function
    return owner


def _count_through_calls(
    cells: tuple[ParsedCell, ...],
    function: ast.FunctionDef,
    args: list[ast.expr],
    constants: dict[str, float],
) -> float | None:
    """The loop count when ``range`` takes a parameter of ``function`` (``def train(model,
    n_epochs)``)
    and every call of the function passes the same constant (or leaves the default)."""
    params = [a.arg for a in function.args.args]
    defaults = dict(
        zip(params[len(params) - len(function.args.defaults) :], function.args.defaults)
    )
    counts = set()
    for _, call in walk_cells(cells):
        if isinstance(call, ast.Call) and dotted(call.func) == function.name:
            passed = dict(zip(params, call.args)) | {k.arg: k.value for k in call.keywords if k.arg}
            values = {
                p: const_value(passed.get(p, defaults.get(p)) or ast.Constant(None), constants)
                for p in params
            }
            counts.add(
                _range_count(
                    args, {**constants, **{n: v for n, v in values.items() if v is not None}}
                )
            )
    return counts.pop() if len(counts) == 1 else None


def static(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    constants = top_level_constants(cells)
    problem = frozen_value(sub, cells, "epochs", facts.epochs_name, facts.epochs, constants)
    if problem is not None:
        return problem
    loops = epoch_loops(cells)
    if not loops:
        return static_check(
            sub,
            "epochs",
            None,
            None,
            None,
            "no training loop `for ... in range(...)` found; the run will count epochs",
        )
    functions = _enclosing_functions(cells)
    for parsed, loop in loops:
        assert isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call)
        count = _range_count(loop.iter.args, constants)
        function = functions.get(id(loop))
        if count is None and function is not None:
            count = _count_through_calls(cells, function, loop.iter.args, constants)
        shown = ast.unparse(loop.iter)
        # a loop that calls a training function may be something else (a warm-up round, a
        # search): its count is the run's to decide
        if count is None or (count != facts.epochs and not is_epoch_loop(loop)):
            what = (
                "the training loop runs" if count is None else "the loop that calls the training:"
            )
            return static_check(
                sub, "epochs", parsed, loop, None, f"{what} {shown}; the run will count epochs"
            )
        if count != facts.epochs:
            return static_check(
                sub,
                "epochs",
                parsed,
                loop,
                False,
                f"the training loop runs {shown}, {count:g} epochs; the homework fixes "
                f"{facts.epochs}",
            )
    return Check(
        "epochs",
        True,
        f"{facts.epochs_name} = {facts.epochs} and the training loop runs it",
        sub.path.name,
    )


def _fewer(n: int, run: RunView, facts: FrozenFacts, rubric: Rubric, what: str) -> Check:
    """``what`` trained ``n`` < the fixed epochs: an interrupted run is undecided, else early
    stopping
    (or, where it ran them all and loaded back earlier weights, passes those loads discarded)."""
    shown = f"{what} {n} of {facts.epochs} epochs"
    if not run.finished:
        return run_check(
            RULE, None, f"{shown} before the run stopped; the epochs it would have run are unknown"
        )
    discarded = run.training.undone[0]
    shown += (
        f": loading back earlier weights discarded {discarded} of the passes it ran"
        if discarded
        else ": it stopped early"
    )
    if rubric.early_stopping == "violation":
        return run_check(
            RULE, False, f"{shown}; this course counts early stopping as a changed number of epochs"
        )
    allowed = (
        "flagged for the TA"
        if rubric.early_stopping == "flag"
        else ("allowed by this course's rubric")
    )
    return run_check(RULE, True, f"{shown} ({allowed})")


def runtime(run: RunView, facts: FrozenFacts, rubric: Rubric) -> Check:
    training = run.training
    if training.lineage == "none":
        if not run.has_model:
            return run_check(RULE, None, "no model was found; epochs not counted")
        if training.unplaced_steps:
            return run_check(
                RULE,
                None,
                f"the graded model's optimizer stepped {training.unplaced_steps} times, but over "
                "no pass of the training images the grader could follow; epochs not counted",
            )
        if training.changed_without_optimizer:
            return run_check(
                RULE,
                None,
                "the graded model's weights were updated without a torch optimizer; "
                "epochs not counted",
            )
        if not run.finished:
            return run_check(
                RULE, None, "the run stopped before any optimizer step; epochs not counted"
            )
        return run_check(
            RULE,
            False,
            "the graded model was never trained: no optimizer stepped it in the whole run "
            f"(0 of {facts.epochs} epochs)",
        )
    unknown = unattributed(training)
    if unknown is not None:
        return run_check(RULE, None, f"{unknown}; epochs not counted")
    if training.moved:
        return run_check(
            RULE,
            None,
            f"the graded model's weights changed {training.moved} "
            f"time{'s' if training.moved != 1 else ''} "
            "outside the optimizer steps the grader counted (no step or load explains "
            "them); epochs not counted",
        )
    if training.foreign:
        return run_check(
            RULE,
            None,
            "the graded model took weights no counted optimizer step "
            f"made ({training.foreign} time{'s' if training.foreign != 1 else ''}: loaded, or "
            "averaged beyond the states of "
            "its training, as a model trained further elsewhere would be); epochs not counted",
        )
    unseen = unseen_rows(training)
    if unseen is not None:
        return run_check(RULE, None, f"{unseen}; epochs not counted")
    passes = training.passes
    if training.beside_steps:
        return run_check(
            RULE,
            None,
            f"{training.beside_steps} of the graded model's {training.steps} optimizer steps "
            "trained on images fed beside the DataLoader's batches, in no epoch of it; "
            "epochs not counted",
        )
    if training.lineage == "direct":
        complete = sum(1 for p in passes if p.complete)
        count = training.pass_count
        what = f"the graded model was trained for {count} passes over the training data"
        if training.undone[0]:
            what += (
                f" (not counting {training.undone[0]} earlier passes, {training.undone[1]} "
                "steps, whose weights were discarded by loading back a state saved before them)"
            )
        if count == facts.epochs:
            return run_check(RULE, True, what)
        if count > facts.epochs:
            return run_check(
                RULE,
                False,
                f"{what} ({complete} complete); the homework fixes {facts.epochs} epochs",
            )
        return _fewer(count, run, facts, rubric, "the graded model was trained")
    # The graded model loaded its weights (a checkpoint of one of the trained candidates).
    counts = training.groups
    shown = ", ".join(str(n) for n in counts)
    if all(n == facts.epochs for n in counts):
        return run_check(
            RULE,
            True,
            "the graded model loaded trained weights; every trained model ran "
            f"{facts.epochs} passes over the training data",
        )
    if all(n > facts.epochs for n in counts):
        return run_check(
            RULE,
            False,
            f"the graded model loaded trained weights; the trained models ran {shown} "
            f"passes over the training data; the homework fixes {facts.epochs} epochs",
        )
    if all(n < facts.epochs for n in counts):
        return _fewer(
            max(counts),
            run,
            facts,
            rubric,
            "the graded model loaded the weights of models trained at most",
        )
    return run_check(
        RULE,
        None,
        f"the graded model loaded trained weights; the trained models ran {shown} passes, "
        "so which one it came from decides",
    )


def findings(run: RunView, facts: FrozenFacts, rubric: Rubric) -> tuple[Finding, ...]:
    """The flag ``early-stopping`` (rubric: flag) when a complete run trained fewer epochs than
    fixed, and
    ``training-not-followed`` when its optimizer stepped over passes the grader could not see."""
    if run.training.unplaced_steps:
        return (
            Finding(
                Flag.TRAINING_NOT_FOLLOWED,
                f"the graded model's optimizer stepped {run.training.unplaced_steps} times over "
                "images the grader could not match to the training set (a dataset it does "
                "not know, or changed pixels); epochs and split were not measured",
            ),
        )
    training = run.training
    if rubric.early_stopping != "flag" or not run.finished or training.lineage == "none":
        return ()
    if (
        unattributed(training) is not None
        or training.beside_steps
        or training.moved
        or training.foreign
        or training.unexplained
    ):  # not counted (``runtime``)
        return ()
    trained = (
        training.pass_count if training.lineage == "direct" else max(training.groups, default=0)
    )
    if 0 < trained < facts.epochs:
        why = (
            f"loading back earlier weights discarded {training.undone[0]} passes"
            if training.undone[0]
            else "stopped early"
        )
        return (
            Finding(Flag.EARLY_STOPPING, f"trained {trained} of {facts.epochs} epochs ({why})"),
        )
    return ()
