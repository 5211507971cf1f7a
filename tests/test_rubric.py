from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from grader.model.errors import RubricError
from grader.model.rubric import load_rubric, parse_rubric

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_rubric_matches_the_homework_policy() -> None:
    rubric = load_rubric(ROOT / "rubric.yaml")
    levels = [(t.at_least, t.points) for t in rubric.accuracy.thresholds]
    assert levels == [(80, 30), (84, 50), (89, 60)]
    assert (rubric.accuracy.bonus.at_least, rubric.accuracy.bonus.points) == (90, 5)
    assert rubric.accuracy.max_points == 60 and rubric.accuracy.report_points == 40
    assert rubric.accuracy.ceiling == 93
    assert rubric.frozen == ("epochs", "valid_size", "linear_layers")
    assert "BatchNorm1d" in rubric.allowed_layers and "Dropout" in rubric.allowed_layers
    assert rubric.template.is_file()
    assert rubric.files.account_of("HW3_M112rhyang.ipynb") == ("M112rhyang", "notebook")
    assert rubric.files.account_of("HW3_M112rhyang.py") == ("M112rhyang", "script")
    assert rubric.files.account_of("HW3_Report_M112rhyang.pdf") == ("M112rhyang", "report")
    assert rubric.files.account_of("homework3.ipynb") is None


def _with(change: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "rubric.yaml").read_text())
    for dotted, value in change.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is None:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"seed": "zero"}, "seed must be an integer"),
        ({"accuracy.max_points": None}, "field accuracy.max_points is missing"),
        ({"accuracy.thresholds": []}, "accuracy.thresholds must be a non-empty list"),
        (
            {"accuracy.bonus": {"at_least": "high", "points": 5}},
            "accuracy.bonus.at_least must be a number",
        ),
        ({"files.notebook": "HW3.ipynb"}, "files.notebook must contain {account}"),
        ({"frozen": ["epochs", "learning_rate"]}, "frozen item 'learning_rate' is unknown"),
        ({"allowed_layers": {"weights": ["Conv2d"]}}, "allowed_layers.weights is not a group"),
        ({"limits.total_timeout_s": 0}, "limits.total_timeout_s must be a number >= 1"),
        # Nothing the TA types is silently ignored: a typo at any level names the field it meant.
        (
            {"deadlin": "2026-12-01T23:59:00+08:00"},
            "deadlin: unknown field; did you mean deadline?",
        ),
        ({"seed_polcy": "median"}, "seed_polcy: unknown field; did you mean seed_policy?"),
        (
            {"late": {"penalty_per_day": 10, "zero_after_days": 3, "penalty_per_dya": 5}},
            "late.penalty_per_dya: unknown field; did you mean penalty_per_day?",
        ),
        (
            {"limits.memroy_mb": 4096, "limits.memory_mb": None},
            "field limits.memory_mb is missing (limits.memroy_mb is not a field: a typo?)",
        ),
        (
            {"accuracy.thresholds.2": {"at_least": 189, "points": 60}},
            "accuracy.thresholds[2].at_least is a test accuracy in percent (0-100), got 189",
        ),
        (
            {"accuracy.bonus": {"at_least": 900, "points": 5}},
            "accuracy.bonus.at_least is a test accuracy in percent",
        ),
        (
            {"accuracy.ceiling": 101},
            "accuracy.ceiling is a test accuracy in percent above the top threshold (89)",
        ),
        (
            {"accuracy.ceiling": 89.5},
            "accuracy.ceiling (89.5) must be above the bonus's at_least (90)",
        ),
        (
            {"accuracy.bonus": {"at_least": 85, "points": 5}},
            "accuracy.bonus.at_least (85) must be above the top threshold",
        ),
        (
            {"accuracy.bonus": {"at_least": 90, "points": 5, "point": 3}},
            "accuracy.bonus.point: unknown field",
        ),
    ],
)
def test_a_wrong_field_names_the_field(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(RubricError) as info:
        parse_rubric(_with(change), ROOT / "rubric.yaml")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_thresholds_must_rise(tmp_path: Path) -> None:
    data = _with({})
    data["accuracy"]["thresholds"][1]["at_least"] = 70
    with pytest.raises(RubricError, match=r"accuracy.thresholds\[1\]"):
        parse_rubric(data, tmp_path / "rubric.yaml")


def test_unreadable_or_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(RubricError, match="cannot read"):
        load_rubric(tmp_path / "missing.yaml")
    bad = tmp_path / "rubric.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(RubricError, match="not valid YAML"):
        load_rubric(bad)
    bad.write_text("homework: HW3\nseed: 0\n  cpu_threads: 2\n")
    with pytest.raises(RubricError, match=r"not valid YAML at line 3, column 14"):
        load_rubric(bad)


def test_a_homeworks_folder_stands_for_its_rubric(tmp_path: Path) -> None:
    """`--rubric homeworks/hw4-cnn` is `--rubric homeworks/hw4-cnn/rubric.yaml`: its paths relative
    to that file; a folder without one is a one-line error naming the file."""
    shipped = Path(__file__).resolve().parent.parent / "rubric.yaml"
    assert load_rubric(shipped.parent) == load_rubric(shipped)
    with pytest.raises(RubricError, match=rf"cannot read {tmp_path / 'rubric.yaml'}"):
        load_rubric(tmp_path)


def test_test_labels_are_hidden_where_the_grade_is_made_unless_the_rubric_says_visible(
    tmp_path: Path,
) -> None:
    from grader.pipeline.commands import Setup, context_of

    shipped = Setup(rubric=ROOT / "rubric.yaml")
    shutil.copytree(ROOT / "reference", tmp_path / "reference")
    assert not context_of(shipped, run=False).rubric.hide_test_labels  # grader check, grader ci
    # grader grade, Gradescope
    assert context_of(shipped, run=False, grading=True).rubric.hide_test_labels
    for mode, hidden in (("visible", False), ("hidden", True)):
        path = tmp_path / f"{mode}.yaml"
        path.write_text(yaml.safe_dump(_with({"test_labels": mode})))
        stated = Setup(rubric=path)
        assert context_of(stated, run=False).rubric.hide_test_labels is hidden
        assert context_of(stated, run=False, grading=True).rubric.hide_test_labels is hidden
    with pytest.raises(RubricError, match="test_labels"):
        parse_rubric(_with({"test_labels": "secret"}), ROOT / "rubric.yaml")
