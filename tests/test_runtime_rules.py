"""Run-time verdicts on probe records (what the kernel recorded), without running anything."""

from __future__ import annotations

from typing import Any

import pytest

from grader.reference import FrozenFacts
from grader.results import Check
from grader.rubric import Rubric
from grader.rules.runtime import check_runtime, disagreements

TRAIN = {"complete": True, "batches": 750, "samples": 48000, "steps": 750, "updates_model": True, "trained_model": 0}
VALID = {"complete": True, "batches": 188, "samples": 12000, "steps": 0, "updates_model": False}
OWNERS = [{"module": "fc1", "type": "Linear", "shapes": [[512, 784], [512]]},
          {"module": "bn1", "type": "BatchNorm1d", "shapes": [[512], [512]]},
          {"module": "fc2", "type": "Linear", "shapes": [[256, 512], [256]]},
          {"module": "fc3", "type": "Linear", "shapes": [[10, 256], [10]]}]
OPS = [{"op": "addmm", "shapes": [[512], [2, 784], [784, 512]]}, {"op": "addmm", "shapes": [[256], [2, 512], [512, 256]]},
       {"op": "addmm", "shapes": [[10], [2, 256], [256, 10]]}]


def _record(**change: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "training": {"dataset_size": 60000, "passes": [TRAIN, VALID] * 10, "trained_indices": 48000,
                     "validation_indices": 12000, "overlap": 0},
        "architecture": {"parameters": OWNERS, "ops": OPS, "error": None},
    }
    for key, value in change.items():
        section, field = key.split("__")
        record[section] = {**record[section], field: value}
    return record


def _verdicts(record: dict[str, Any] | None, facts: FrozenFacts, rubric: Rubric) -> dict[str, tuple[bool | None, str]]:
    return {c.id: (c.ok, c.message) for c in check_runtime(record, facts, rubric)}


def test_a_legal_run(facts: FrozenFacts, rubric: Rubric) -> None:
    verdicts = _verdicts(_record(), facts, rubric)
    assert {rule: ok for rule, (ok, _) in verdicts.items()} == {"epochs": True, "valid_size": True, "linear_layers": True}
    assert all(c.stage == "run" for c in check_runtime(_record(), facts, rubric))


@pytest.mark.parametrize(
    ("change", "rule", "message"),
    [
        ({"training__passes": [TRAIN, TRAIN, VALID] * 10}, "epochs", "trained for 20 passes"),
        ({"training__passes": [TRAIN] * 9}, "epochs", "trained for 9 passes"),
        ({"training__trained_indices": 54000}, "valid_size", "trained on 54000 of 60000 training images"),
        ({"training__overlap": 120}, "valid_size", "120 images were used both to train"),
        ({"architecture__parameters": [*OWNERS, {"module": "conv", "type": "Conv2d", "shapes": [[4, 1, 3, 3]]}]},
         "linear_layers", "holds weights in conv (Conv2d)"),
        ({"architecture__parameters": [*OWNERS, {"module": "(model)", "type": "Net", "shapes": [[4, 1, 3, 3]]}]},
         "linear_layers", "holds weights in (model) (Net)"),
        ({"architecture__parameters": [o if o["module"] != "fc1" else {**o, "shapes": [[1024, 784], [1024]]} for o in OWNERS]},
         "linear_layers", "Linear layers are 784->1024, 512->256, 256->10"),
        ({"architecture__ops": [{"op": "convolution", "shapes": [[2, 1, 28, 28], [4, 1, 3, 3]]}, *OPS]},
         "linear_layers", "the forward pass applies convolution"),
        ({"architecture__ops": [*OPS, OPS[2]]}, "linear_layers", "multiplies by weights of 784->512, 512->256, 256->10, 256->10"),
    ],
)
def test_runtime_violations(facts: FrozenFacts, rubric: Rubric, change: dict[str, Any], rule: str, message: str) -> None:
    ok, text = _verdicts(_record(**change), facts, rubric)[rule]
    assert ok is False and message in text


def test_candidates_that_did_not_become_the_graded_model_do_not_count(facts: FrozenFacts, rubric: Rubric) -> None:
    other = {**TRAIN, "updates_model": False, "trained_model": 1}
    assert _verdicts(_record(training__passes=[other] * 10 + [TRAIN, VALID] * 10), facts, rubric)["epochs"][0] is True


@pytest.mark.parametrize(("per_model", "verdict"), [((10, 10), True), ((20, 12), False), ((10, 20), None)])
def test_a_graded_model_that_loaded_a_checkpoint(facts: FrozenFacts, rubric: Rubric, per_model: tuple[int, int],
                                                 verdict: bool | None) -> None:
    passes = [{**TRAIN, "updates_model": False, "trained_model": m} for m, n in enumerate(per_model) for _ in range(n)]
    assert _verdicts(_record(training__passes=passes), facts, rubric)["epochs"][0] is verdict


def test_missing_or_malformed_records_are_undecided(facts: FrozenFacts, rubric: Rubric) -> None:
    assert check_runtime(None, facts, rubric) == ()
    verdicts = _verdicts({"training": "junk", "architecture": {"parameters": None}}, facts, rubric)
    assert {rule: ok for rule, (ok, _) in verdicts.items()} == {"epochs": None, "valid_size": None, "linear_layers": None}


def test_disagreement_is_reported() -> None:
    checks = (Check("epochs", True, "ok"), Check("epochs", False, "20 passes", stage="run"),
              Check("valid_size", None, "?"), Check("valid_size", True, "ok", stage="run"))
    assert disagreements(checks) == ("epochs: the static check says ok, the run says violated",)
