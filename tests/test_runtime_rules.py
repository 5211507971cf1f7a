"""Run-time verdicts on probe records (the raw facts the kernel recorded), without running anything:
lineage, split and epochs are computed here from passes, optimizers and parameter serials."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import numpy
import pytest

from grader.model.probe_facts import parse
from grader.model.results import Check
from grader.model.rubric import FrozenFacts, Rubric
from grader.scoring.score import disagreements, effective
from grader.static.rules import check_runtime, findings, run_view as _run_view

SIZE = 60000
VALID_IDX = range(0, 12000)
TRAIN_IDX = range(12000, SIZE)
OWNERS = [
    {"module": "fc1", "type": "Linear", "shapes": [[512, 784], [512]]},
    {"module": "bn1", "type": "BatchNorm1d", "shapes": [[512], [512]]},
    {"module": "fc2", "type": "Linear", "shapes": [[256, 512], [256]]},
    {"module": "fc3", "type": "Linear", "shapes": [[10, 256], [10]]},
]
OPS = [
    {"op": "addmm", "shapes": [[512], [2, 784], [784, 512]]},
    {"op": "addmm", "shapes": [[256], [2, 512], [512, 256]]},
    {"op": "addmm", "shapes": [[10], [2, 256], [256, 10]]},
]


def run_view(record: dict[str, Any], finished: bool) -> Any:
    """The run's view of a record built here as the probe writes it, parsed as the grader parses the
    file."""
    return _run_view(parse(record), finished)


def _pass(
    indices: range | list[int], optimizer: int | None = 1, source: str = "loader"
) -> dict[str, Any]:
    mask = numpy.zeros(SIZE, dtype=bool)
    mask[list(indices)] = True
    return {
        "source": source,
        "stepping": optimizer is not None,
        "drawn": base64.b64encode(numpy.packbits(mask).tobytes()).decode(),
        "samples": int(mask.sum()),
        "batches": 10,
        "complete": True,
        "steps": {str(optimizer): 10} if optimizer else {},
        "start_step": 1,
    }


TRAIN, VALID = _pass(TRAIN_IDX), _pass(VALID_IDX, None)


def _record(
    passes: list[dict[str, Any]] | None = None,
    graded: list[int] | None = None,
    optimizers: dict[str, list[int]] | None = None,
    **change: Any,
) -> dict[str, Any]:
    optimizers = {"1": [1, 2, 3]} if optimizers is None else optimizers
    record: dict[str, Any] = {
        "train_size": SIZE,
        "train_passes": [TRAIN, VALID] * 10 if passes is None else passes,
        "optimizers": {
            k: {"params": v, "steps": 100, "first_step": 1, "last_step": 100}
            for k, v in optimizers.items()
        },
        "model": {
            "class": "Net",
            "param_serials": [1, 2, 3] if graded is None else graded,
            "param_versions": 0,
        },
        "architecture": {"parameters": OWNERS, "ops": OPS, "error": None},
        "loads": [],
    }
    for key, value in change.items():
        section, field = key.split("__")
        record[section] = {**record[section], field: value}
    return record


def _verdicts(
    record: dict[str, Any], facts: FrozenFacts, rubric: Rubric, finished: bool = True
) -> dict[str, tuple[bool | None, str]]:
    return {
        c.id: (c.ok, c.message) for c in check_runtime(run_view(record, finished), facts, rubric)
    }


def test_a_legal_run(facts: FrozenFacts, rubric: Rubric) -> None:
    verdicts = _verdicts(_record(), facts, rubric)
    assert {rule: ok for rule, (ok, _) in verdicts.items()} == {
        "epochs": True,
        "valid_size": True,
        "linear_layers": True,
    }
    assert all(c.stage == "run" for c in check_runtime(run_view(_record(), True), facts, rubric))


@pytest.mark.parametrize(
    ("record", "rule", "message"),
    [
        (_record([TRAIN, TRAIN, VALID] * 10), "epochs", "trained for 20 passes"),
        (
            _record([_pass(range(6000, SIZE)), _pass(range(0, 6000), None)] * 10),
            "valid_size",
            "trained on 54000 of 60000 training images",
        ),
        (
            _record([TRAIN, _pass(range(0, 12120), None)] * 10),
            "valid_size",
            "120 images were used both to train",
        ),
        (
            _record([], optimizers={}),
            "epochs",
            "never trained: no optimizer stepped it in the whole run (0 of 10",
        ),
        (
            _record(
                architecture__parameters=[
                    *OWNERS,
                    {"module": "conv", "type": "Conv2d", "shapes": [[4, 1, 3, 3]]},
                ]
            ),
            "linear_layers",
            "holds weights in conv (Conv2d)",
        ),
        (
            _record(
                architecture__parameters=[
                    *OWNERS,
                    {"module": "(model)", "type": "Net", "shapes": [[4, 1, 3, 3]]},
                ]
            ),
            "linear_layers",
            "holds weights in (model) (Net)",
        ),
        (
            _record(
                architecture__parameters=[
                    o if o["module"] != "fc1" else {**o, "shapes": [[1024, 784], [1024]]}
                    for o in OWNERS
                ]
            ),
            "linear_layers",
            "Linear layers are 784->1024, 512->256, 256->10",
        ),
        (
            _record(
                architecture__ops=[
                    {"op": "convolution", "shapes": [[2, 1, 28, 28], [4, 1, 3, 3]]},
                    *OPS,
                ]
            ),
            "linear_layers",
            "the forward pass applies convolution",
        ),
        (
            _record(architecture__ops=[*OPS, OPS[2]]),
            "linear_layers",
            "multiplies by weights of 784->512, 512->256, 256->10, 256->10",
        ),
    ],
)
def test_runtime_violations(
    facts: FrozenFacts, rubric: Rubric, record: dict[str, Any], rule: str, message: str
) -> None:
    ok, text = _verdicts(record, facts, rubric)[rule]
    assert ok is False and message in text


def test_layers_are_judged_by_their_weights_never_by_a_class_name(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """Weight matrices of the frozen shapes in modules of any class (a traced copy's TracedModules,
    a
    student's own Linear) are kept; an unknown kind beside them holding only vectors is for a
    person."""
    traced = [{**o, "type": "TracedModule" if o["type"] == "Linear" else o["type"]} for o in OWNERS]
    ok, _ = _verdicts(_record(architecture__parameters=traced), facts, rubric)["linear_layers"]
    assert ok is True
    scale = [*OWNERS, {"module": "scale", "type": "LearnedScale", "shapes": [[512]]}]
    ok, text = _verdicts(_record(architecture__parameters=scale), facts, rubric)["linear_layers"]
    assert ok is None and "scale (LearnedScale)" in text


def test_evaluation_passes_over_training_images_are_not_validation(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """A look at one batch, and a training-accuracy pass over the whole training set, steps no
    optimizer."""
    look, everything = _pass(TRAIN_IDX[:64], None), _pass(range(SIZE), None)
    verdicts = _verdicts(_record([look] + [TRAIN, VALID, everything] * 10), facts, rubric)
    assert verdicts["valid_size"][0] is True and verdicts["epochs"][0] is True


def test_looks_at_the_training_images_are_not_validation(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """Before training: a shuffled batch of the whole training set, or its mean and std; after:
    plotting
    predictions for a few random training images (mostly ones it trained on)."""
    before = {**_pass(range(0, SIZE, 50), None), "start_step": 0}
    plot = _pass([*range(0, 4), *range(12000, 12016)], None)
    verdicts = _verdicts(_record([before] + [TRAIN, VALID] * 10 + [plot]), facts, rubric)
    assert verdicts["valid_size"][0] is True


def test_steps_over_passes_the_grader_cannot_follow_are_undecided(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """A dataset the grader does not know (augmented images in a custom Dataset): the optimizer
    stepped,
    so it is never "0 epochs"."""
    view = run_view(_record([]), True)
    check = {c.id: c for c in check_runtime(view, facts, rubric)}["epochs"]
    assert check.ok is None and "stepped 100 times" in check.message
    assert [f.flag for f in findings(view, facts, rubric)] == ["training-not-followed"]


def test_content_passes_count_when_no_loader_trained(facts: FrozenFacts, rubric: Rubric) -> None:
    """Preloaded tensors: passes recognised by the model's inputs are the epochs; loader passes win
    when both exist."""
    content = [_pass(TRAIN_IDX, source="content"), _pass(VALID_IDX, None, source="content")]
    assert _verdicts(_record(content * 10), facts, rubric)["epochs"][0] is True
    assert (
        _verdicts(
            _record([TRAIN, VALID] * 10 + [_pass(TRAIN_IDX, source="content")] * 3), facts, rubric
        )["epochs"][0]
        is True
    )
    # the template's look at one batch, then preloaded training
    look = {**_pass(TRAIN_IDX[:64]), "steps": {"1": 1}}
    assert _verdicts(_record([look] + content * 10), facts, rubric)["epochs"][0] is True


@pytest.mark.parametrize(
    ("policy", "verdict", "flags"),
    [("flag", True, ["early-stopping"]), ("violation", False, []), ("allowed", True, [])],
)
def test_early_stopping_follows_the_rubric(
    facts: FrozenFacts, rubric: Rubric, policy: str, verdict: bool, flags: list[str]
) -> None:
    course = dataclasses.replace(rubric, early_stopping=policy)
    view = run_view(_record([TRAIN, VALID] * 7), True)
    check = {c.id: c for c in check_runtime(view, facts, course)}["epochs"]
    assert check.ok is verdict and "7 of 10 epochs" in check.message
    assert [f.flag for f in findings(view, facts, course)] == flags


def test_an_interrupted_run_is_undecided_below_the_epochs_and_violated_above(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    assert (
        _verdicts(_record([TRAIN, VALID] * 7), facts, rubric, finished=False)["epochs"][0] is None
    )
    assert (
        _verdicts(_record([TRAIN, TRAIN, VALID] * 7), facts, rubric, finished=False)["epochs"][0]
        is False
    )
    assert _verdicts(_record([], optimizers={}), facts, rubric, finished=False)["epochs"][0] is None


def test_weights_updated_by_hand_are_not_zero_epochs(facts: FrozenFacts, rubric: Rubric) -> None:
    record = _record([], optimizers={}, model__param_versions=30, model__has_grad=True)
    assert _verdicts(record, facts, rubric)["epochs"][0] is None


def test_candidates_that_did_not_become_the_graded_model_do_not_count(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """A sweep: optimizer 2 trained a discarded model (other parameters) 10 times more."""
    other = _pass(TRAIN_IDX, optimizer=2)
    record = _record(
        [other] * 10 + [TRAIN, VALID] * 10, optimizers={"1": [1, 2, 3], "2": [7, 8, 9]}
    )
    assert _verdicts(record, facts, rubric)["epochs"][0] is True


@pytest.mark.parametrize(
    ("per_model", "verdict"), [((10, 10), True), ((20, 12), False), ((10, 20), None)]
)
def test_a_graded_model_that_loaded_a_checkpoint(
    facts: FrozenFacts, rubric: Rubric, per_model: tuple[int, int], verdict: bool | None
) -> None:
    passes = [_pass(TRAIN_IDX, optimizer=m + 1) for m, n in enumerate(per_model) for _ in range(n)]
    record = _record(passes, graded=[50, 51, 52], optimizers={"1": [1, 2, 3], "2": [7, 8, 9]})
    assert _verdicts(record, facts, rubric)["epochs"][0] is verdict


def test_missing_or_malformed_records_are_undecided(facts: FrozenFacts, rubric: Rubric) -> None:
    assert check_runtime(None, facts, rubric) == ()
    junk = {
        "train_size": "junk",
        "train_passes": [{"drawn": "!!"}],
        "architecture": {"parameters": None},
    }
    verdicts = _verdicts(junk, facts, rubric)
    assert {rule: ok for rule, (ok, _) in verdicts.items()} == {
        "epochs": None,
        "valid_size": None,
        "linear_layers": None,
    }
    bad_bitmap = _record([{**TRAIN, "drawn": base64.b64encode(b"x" * 10).decode()}] * 10)
    assert _verdicts(bad_bitmap, facts, rubric)["epochs"][0] is not True


def test_disagreement_is_reported_and_a_decided_run_verdict_counts() -> None:
    checks = (
        Check("epochs", True, "ok"),
        Check("epochs", False, "20 passes", stage="run"),
        Check("valid_size", None, "?"),
        Check("valid_size", True, "ok", stage="run"),
        Check("linear_layers", False, "conv in an unused class"),
        Check("linear_layers", True, "ok", stage="run"),
    )
    assert disagreements(checks) == (
        "epochs: the static check says ok, the run says violated",
        "linear_layers: the static check says violated, the run says ok",
    )
    assert [c.violated for c in effective(checks)] == [True, False, False]


def _stepped(start: int, end: int, optimizer: int = 1) -> dict[str, Any]:
    return {
        **_pass(TRAIN_IDX, optimizer),
        "start_step": start,
        "end_step": end,
        "steps": {str(optimizer): end - start},
    }


def test_steps_discarded_by_loading_back_an_earlier_state_do_not_count(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """A learning-rate range test (60 steps, then the initial state back) before 10 epochs: 10
    epochs.
    The handout's best checkpoint loaded after training: the run that made it counts whole."""
    epochs = [_stepped(60 + 100 * k, 160 + 100 * k) for k in range(10)]
    range_test = {**_stepped(0, 60), "complete": False}
    record = _record([range_test, *epochs])
    record["optimizers"] = {
        "1": {"params": [1, 2, 3], "steps": 1060, "first_step": 1, "last_step": 1060}
    }
    ok, message = _verdicts(record, facts, rubric)["epochs"]
    assert ok is False and "11 passes" in message  # nothing loaded back: the range test is a pass
    record["loads"] = [
        {
            "param": 1,
            "params": [1, 2, 3],
            "step": 60,
            "test_batch": 0,
            "event": 2,
            "restored": 0,
            "restored_event": 1,
        },
        {
            "param": 1,
            "params": [1, 2, 3],
            "step": 1060,
            "test_batch": 0,
            "event": 10,
            "restored": 760,
            "restored_event": 9,
        },
    ]  # best epoch: the 7th
    ok, message = _verdicts(record, facts, rubric)["epochs"]
    assert (
        ok is True
        and "10 passes" in message
        and "not counting 1 earlier passes, 60 steps" in message
    )
    # one layer's own state loaded back: the rest trained on (an attacker)
    record["loads"][0]["params"] = [1]
    assert _verdicts(record, facts, rubric)["epochs"][0] is False
    record["loads"][0]["params"] = [1, 2, 3]
    record["loads"][0]["restored"] = None  # loaded something not seen saved: nothing is discarded
    assert _verdicts(record, facts, rubric)["epochs"][0] is False


def test_weights_no_counted_step_made_leave_the_epochs_undecided(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """A load into the graded model of weights outside the hull of the run's states (a copy trained
    further by hand), or a graded model no optimizer stepped whose own weights are outside it, is
    training the grader did not count; a load within the hull (a checkpoint, an EMA) is not, nor a
    load into another model."""
    epochs = [_stepped(100 * k, 100 * (k + 1)) for k in range(10)]
    record = _record(epochs)
    record["optimizers"] = {
        "1": {"params": [1, 2, 3], "steps": 1000, "first_step": 1, "last_step": 1000}
    }
    load = {
        "param": 1,
        "params": [1, 2, 3],
        "step": 1000,
        "test_batch": 0,
        "event": 2,
        "restored": None,
        "restored_event": None,
        "explained": True,
    }
    record["loads"] = [load]
    assert _verdicts(record, facts, rubric)["epochs"][0] is True
    record["loads"] = [{**load, "explained": False}]
    ok, message = _verdicts(record, facts, rubric)["epochs"]
    assert ok is None and "took weights no counted optimizer step made (1 time" in message
    # into a model that is not graded
    record["loads"] = [{**load, "params": [7, 8, 9], "explained": False}]
    assert _verdicts(record, facts, rubric)["epochs"][0] is True
    # an average graded as it is: the optimizer stepped 1, 2, 3
    graded_apart = _record(epochs, graded=[7, 8, 9])
    graded_apart["optimizers"] = record["optimizers"]
    for explained, verdict in ((True, True), (None, True), (False, None)):
        graded_apart["model"]["explained"] = explained
        assert _verdicts(graded_apart, facts, rubric)["epochs"][0] is verdict, explained


def test_gradients_their_layers_calls_do_not_explain_leave_epochs_and_split_undecided(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """Backward passes that gave a graded Linear weight a gradient its layer's calls do not explain
    (rows fed to it by F.linear in a loss term) leave the epochs and the split undecided; the same
    count on a weight of another model, or none, decides nothing."""
    epochs = [_stepped(100 * k, 100 * (k + 1)) for k in range(10)]
    record = _record(epochs)
    record["optimizers"] = {
        "1": {"params": [1, 2, 3], "steps": 1000, "first_step": 1, "last_step": 1000}
    }
    record["gradients"] = [{"param": 1, "watched": 900, "bare": 0, "unexplained": 0}]
    verdicts = _verdicts(record, facts, rubric)
    assert verdicts["epochs"][0] is True and verdicts["valid_size"][0] is not None
    record["gradients"][0]["unexplained"] = 14
    verdicts = _verdicts(record, facts, rubric)
    assert (
        verdicts["epochs"][0] is None
        and "(14 times, a weight in a backward pass or a step" in verdicts["epochs"][1]
    )
    assert (
        verdicts["valid_size"][0] is None and "split was not measured" in verdicts["valid_size"][1]
    )
    record["gradients"] = [
        {"param": 7, "watched": 900, "bare": 0, "unexplained": 14},
        "junk",
        {"param": "1"},
    ]
    assert _verdicts(record, facts, rubric)["epochs"][0] is True


def test_passes_discarded_by_restores_are_not_called_stopping_early(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """Restore-on-plateau: ten epochs run, earlier weights loaded back twice; the final weights
    descend from fewer passes, and the message says why instead of "it stopped early"."""
    epochs = [_stepped(100 * k, 100 * (k + 1)) for k in range(10)]
    record = _record(epochs)
    record["optimizers"] = {
        "1": {"params": [1, 2, 3], "steps": 1000, "first_step": 1, "last_step": 1000}
    }
    record["loads"] = [
        {
            "param": 1,
            "params": [1, 2, 3],
            "step": 600,
            "test_batch": 0,
            "event": 2,
            "restored": 200,
            "restored_event": 1,
        }
    ]
    ok, message = _verdicts(record, facts, rubric)["epochs"]
    assert ok is True and "6 of 10 epochs" in message and "discarded 4 of the passes" in message
    assert "stopped early" not in message


@pytest.mark.parametrize(
    ("loads", "end", "intervals"),
    [
        ([], 100, [(0, 100)]),
        ([((60, 2), (0, 1))], 1060, [(60, 1060), (0, 0)]),
        # the final choice of a checkpoint: its run counts whole
        ([((1060, 9), (760, 7))], 1060, [(0, 1060)]),
        # a sweep on one model: candidate A (0, 1000] saved, back to the start, candidate B (1000,
        # 2000], A chosen
        ([((1000, 3), (0, 1)), ((2000, 5), (1000, 2))], 2000, [(0, 1000)]),
        # ... and B chosen (saved after A's restore at the same step count): B's run, from the start
        ([((1000, 3), (0, 1)), ((2000, 5), (2000, 4))], 2000, [(1000, 2000), (0, 0)]),
        ([((500, 2), (300, 1)), ((900, 4), (700, 3))], 1200, [(900, 1200), (500, 700), (0, 300)]),
    ],
)
def test_the_lineage_of_the_final_weights(
    loads: list[tuple[tuple[int, int], tuple[int, int]]], end: int, intervals: list[tuple[int, int]]
) -> None:
    from grader.judge.run_facts import lineage_steps

    assert lineage_steps(loads, end) == intervals


def test_unattributed_steps_leave_epochs_and_split_undecided(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    record = _record()
    record["optimizers"]["1"]["unattributed"] = 40
    verdicts = _verdicts(record, facts, rubric)
    assert verdicts["epochs"][0] is None and verdicts["valid_size"][0] is None
    assert (
        "40 of the graded model's 100 optimizer steps came after no batch of training images"
        in verdicts["epochs"][1]
    )


def test_an_overlap_is_evidence_only_where_both_rows_were_the_image(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """Content passes: image 0 of the validation split also drawn in training, once by its pixels
    (a violation), once by its row's key alone (an erased row of another image: no evidence)."""

    def loose(indices: list[int]) -> str:
        bits = numpy.zeros(SIZE, dtype=bool)
        bits[indices] = True
        return base64.b64encode(numpy.packbits(bits).tobytes()).decode()

    extra = [VALID_IDX[0]]
    train = _pass(list(TRAIN_IDX) + extra, source="content")
    valid = _pass(VALID_IDX, None, source="content")
    assert _verdicts(_record([train, valid] * 10), facts, rubric)["valid_size"][0] is False
    keyed = {**train, "loose": loose(extra)}
    ok, message = _verdicts(_record([keyed, valid] * 10), facts, rubric)["valid_size"]
    assert ok is True, message


def test_too_few_images_seen_is_undecided_when_training_rows_went_unread(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """Training tensors kept in bfloat16 lose a third of their keys (found by an attacker): the
    images
    never named may be those rows, so a short count is no evidence of a smaller training split."""
    short = [
        _pass(range(12000, 40000), source="content"),
        _pass(VALID_IDX, None, source="content"),
    ] * 10
    assert _verdicts(_record(short), facts, rubric)["valid_size"][0] is False
    ok, message = _verdicts({**_record(short), "unread_rows": 90000}, facts, rubric)["valid_size"]
    assert (
        ok is None
        and "90000 rows of its training batches were no image the grader could name" in message
    )


def test_uncounted_epochs_are_never_called_early_stopping(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """Shifted tensor batches the grader cannot follow: the 3 passes it saw are not the epochs
    trained."""
    record = _record([TRAIN, VALID] * 3)
    record["optimizers"]["1"]["unattributed"] = 67
    view = run_view(record, True)
    assert {c.id: c.ok for c in check_runtime(view, facts, rubric)}["epochs"] is None
    assert "early-stopping" not in [f.flag for f in findings(view, facts, rubric)]
    assert [
        f.flag for f in findings(run_view(_record([TRAIN, VALID] * 3), True), facts, rubric)
    ] == ["early-stopping"]


def test_test_images_in_training_violate_the_split_or_are_flagged(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    record = {**_record(), "test_images_trained": 120, "test_rows_trained": 300}
    ok, message = _verdicts(record, facts, rubric)["valid_size"]
    assert ok is False and "trained on 120 test images (300 rows in training steps)" in message
    flagging = dataclasses.replace(rubric, test_in_training="flag")
    assert _verdicts(record, facts, flagging)["valid_size"][0] is True
    assert [f.flag for f in findings(run_view(record, True), facts, flagging)] == [
        "trained-on-test-images"
    ]
    forged = {**_record(), "test_images_trained": -5, "test_rows_trained": "many"}
    assert _verdicts(forged, facts, rubric)["valid_size"][0] is True


def test_a_warm_start_brings_the_source_models_passes(facts: FrozenFacts, rubric: Rubric) -> None:
    """A fresh model loads a trained model's weights, then trains 10 more epochs: 20 in its
    history."""
    first = [_stepped(100 * k, 100 * (k + 1), optimizer=2) for k in range(10)]
    second = [_stepped(1000 + 100 * k, 1100 + 100 * k) for k in range(10)]
    record = _record([*first, *second], optimizers={"1": [1, 2, 3], "2": [7, 8, 9]})
    record["optimizers"]["1"].update(first_step=1001, last_step=2000, steps=1000)
    record["optimizers"]["2"].update(first_step=1, last_step=1000, steps=1000)
    # as if the loaded weights were fresh
    assert _verdicts(record, facts, rubric)["epochs"][0] is True
    record["loads"] = [
        {
            "param": 1,
            "params": [1, 2, 3],
            "step": 1000,
            "test_batch": 0,
            "event": 2,
            "restored": 1000,
            "restored_event": 1,
            "from_param": 7,
        }
    ]
    ok, message = _verdicts(record, facts, rubric)["epochs"]
    assert ok is False and "20 passes" in message


def test_loader_batches_holding_other_images_than_named_leave_the_split_undecided(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    record = {**_record(), "loader_mismatch": 3}
    ok, message = _verdicts(record, facts, rubric)["valid_size"]
    assert ok is None and "other images than its sampler named" in message


def test_training_rows_a_step_followed_count_however_the_batch_was_built(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    """Every loader batch padded with images from the whole training file (the validation part
    too)."""
    mask = numpy.zeros(SIZE, dtype=bool)
    mask[list(range(0, 600))] = True  # validation images among the rows an optimizer step followed
    record = {
        **_record(),
        "stepped_rows": base64.b64encode(numpy.packbits(mask).tobytes()).decode(),
    }
    ok, message = _verdicts(record, facts, rubric)["valid_size"]
    assert ok is False and "used both to train" in message


def test_a_sampler_listing_every_index_twice_draws_two_epochs_a_pass(
    facts: FrozenFacts, rubric: Rubric
) -> None:
    doubled = {**TRAIN, "rows": 2 * len(TRAIN_IDX)}
    ok, message = _verdicts(_record([doubled, VALID] * 10), facts, rubric)["epochs"]
    assert ok is False and "20 passes" in message
    replaced = {**TRAIN, "rows": int(1.58 * len(TRAIN_IDX))}  # drawn with replacement: one epoch
    assert _verdicts(_record([replaced, VALID] * 10), facts, rubric)["epochs"][0] is True
