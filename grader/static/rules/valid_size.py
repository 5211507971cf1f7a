"""The valid_size rule: the share of training images held out for validation is fixed.

Static half: ``valid_size`` keeps the template's value and the split uses it (or the same literal
fraction). Run-time half: the training images the graded model was trained on, and whether any
of them were also used to validate it (probe facts: train_passes with the indices each drew); test
images in a training step, recognised per row and confirmed by their gradient (probe:
``test_images_trained``), violate the split unless the rubric's ``test_in_training`` makes them a
flag.
"""

from __future__ import annotations

import ast
import math
from typing import TYPE_CHECKING

from grader.model.findings import Finding, Flag, RuleId
from grader.model.results import Check
from grader.model.rubric import FrozenFacts
from grader.model.submission import Submission
from grader.static.pyast import ParsedCell, top_level_constants, walk_cells
from grader.static.rules.common import (
    RunView,
    assignments,
    frozen_value,
    run_check,
    static_check,
    unattributed,
    unseen_rows,
)

if TYPE_CHECKING:
    from grader.model.rubric import Rubric

RULE = RuleId.VALID_SIZE
# Shown beside a violation: what the student may change instead.
INSTEAD = (
    "keep valid_size and split with it; "
    "you may change how batches are drawn, the batch size and the augmentation of the training part"
)
SPLIT_TOLERANCE = 0.005  # of the training set: a few images either way is not a changed valid_size


def static(sub: Submission, cells: tuple[ParsedCell, ...], facts: FrozenFacts) -> Check:
    name = facts.valid_name
    problem = frozen_value(
        sub, cells, "valid_size", name, facts.valid_size, top_level_constants(cells)
    )
    if problem is not None:
        return problem
    if not assignments(cells, name):
        return static_check(
            sub,
            "valid_size",
            None,
            None,
            None,
            f"{name} is never set; the run will check the split",
        )
    used = any(
        isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)
        for _, node in walk_cells(cells)
    )
    if not used:
        literal = next(
            (
                (p, n)
                for p, n in walk_cells(cells)
                if isinstance(n, ast.BinOp)
                and isinstance(n.op, ast.Mult)
                and any(
                    isinstance(side, ast.Constant)
                    and isinstance(side.value, float)
                    and 0 < side.value < 1
                    for side in (n.left, n.right)
                )
            ),
            (None, None),
        )
        # split some other way (sizes, a library call): no evidence of a change
        if literal[1] is None:
            return static_check(
                sub,
                "valid_size",
                None,
                None,
                None,
                f"{name} is set but not read, and no split fraction was found; the run "
                "will check the split",
            )
        fraction = next(
            side.value
            for side in (literal[1].left, literal[1].right)
            if isinstance(side, ast.Constant) and isinstance(side.value, float)
        )
        if math.isclose(fraction, facts.valid_size):
            return Check(
                "valid_size",
                True,
                f"the split uses {ast.unparse(literal[1])}, the fixed fraction "
                f"{facts.valid_size:g}",
                sub.path.name,
            )
        return static_check(
            sub,
            "valid_size",
            literal[0],
            literal[1],
            False,
            f"{name} is set but the train/validation split does not use it (here it uses "
            f"{ast.unparse(literal[1])}); split with {name}",
        )
    return Check(
        "valid_size", True, f"{name} = {facts.valid_size:g} and the split uses it", sub.path.name
    )


def test_images_trained(run: RunView) -> tuple[int, int]:
    """(test images, test rows) whose rows got a gradient in a call an optimizer step followed
    (probe)."""
    return run.record.test.images_trained, run.record.test.rows_trained


def runtime(run: RunView, facts: FrozenFacts, rubric: Rubric) -> Check:
    training = run.training
    images, rows = test_images_trained(run)
    if images and rubric.test_in_training == "violation":
        return run_check(
            RULE,
            False,
            f"the notebook trained on {images} test images ({rows} rows "
            "in training steps): its test accuracy is then not a test accuracy",
        )
    unknown = unattributed(training)
    if unknown is not None:
        return run_check(RULE, None, f"{unknown}; the split was not measured")
    unseen = unseen_rows(training)
    if unseen is not None:
        return run_check(RULE, None, f"{unseen}; the split was not measured")
    if run.record.train.loader_mismatch > 0:
        return run_check(
            RULE,
            None,
            "the training DataLoader yielded other images than its sampler named (a Dataset "
            "that remaps indices); which images trained the model is not known",
        )
    size, trained = training.train_size, training.trained.bit_count()
    if not size or not trained:
        if training.lineage == "none" and training.changed_without_optimizer:
            return run_check(
                RULE,
                None,
                "the graded model was trained without a torch optimizer, so which images its "
                "updates used was not followed; the split was not measured",
            )
        return run_check(
            RULE, None, "no training images were seen being drawn; the split was not measured"
        )
    # rows named by a key alone (an image changed in part) are no evidence
    overlap = training.overlap.bit_count()
    if overlap:
        return run_check(
            RULE,
            False,
            f"{overlap} images were used both to train the graded model and to validate it",
        )
    expected = round((1 - facts.valid_size) * size)
    shown = f"the graded model was trained on {trained} of {size} training images"
    if trained > expected + max(1, SPLIT_TOLERANCE * size):
        return run_check(
            RULE, False, f"{shown}; {facts.valid_name} = {facts.valid_size:g} leaves {expected}"
        )
    if trained < expected - max(1, SPLIT_TOLERANCE * size):
        if not run.finished:
            return run_check(RULE, None, f"{shown} before the run stopped; the split is not known")
        unread = run.record.train.unread_rows
        if unread > 0:  # the images it did not see may be among them
            return run_check(
                RULE,
                None,
                f"{shown}, but {unread} rows of its training batches were "
                "no image the grader could name (changed by augmentation or rounding); "
                "the split was not measured",
            )
        return run_check(
            RULE, False, f"{shown}; {facts.valid_name} = {facts.valid_size:g} leaves {expected}"
        )
    return run_check(
        RULE,
        True,
        f"trained on {trained} of {size} training images, none of them used for validation",
    )


def findings(run: RunView, facts: FrozenFacts, rubric: Rubric) -> tuple[Finding, ...]:
    """The flag ``trained-on-test-images`` when the rubric makes test images in training a flag."""
    images, rows = test_images_trained(run)
    if images and rubric.test_in_training == "flag":
        return (
            Finding(
                Flag.TRAINED_ON_TEST_IMAGES,
                f"trained on {images} test images ({rows} rows in training steps)",
            ),
        )
    return ()
