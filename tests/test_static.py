"""Static rule checks on real-looking variants of the template (issue 3 grows this corpus)."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.intake.read import read_submission
from grader.model.rubric import FrozenFacts, Rubric, load_rubric
from grader.static.reference import derive_facts
from grader.static.rules import check_static

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = (ROOT / "reference" / "HW3_template.py").read_text()


def _verdicts(
    tmp_path: Path, source: str, rubric: Rubric, facts: FrozenFacts
) -> dict[str, tuple[bool | None, str]]:
    path = tmp_path / "HW3_x.py"
    path.write_text(source)
    return {
        c.id: (c.ok, c.message) for c in check_static(read_submission(path), facts, rubric).checks
    }


def test_template_facts(facts: FrozenFacts) -> None:
    assert (facts.epochs_name, facts.epochs, facts.valid_name, facts.valid_size) == (
        "n_epochs",
        10,
        "valid_size",
        0.2,
    )
    assert [(layer.in_features, layer.out_features) for layer in facts.linear_layers] == [
        (784, 512),
        (512, 256),
        (256, 10),
    ]


def test_the_solution_is_legal(rubric: Rubric, facts: FrozenFacts) -> None:
    report = check_static(
        read_submission(ROOT / "reference" / "solutions" / "HW3_solution.ipynb"), facts, rubric
    )
    assert [c.ok for c in report.checks] == [True, True, True]


@pytest.mark.parametrize(
    ("old", "new", "rule", "message"),
    [
        ("n_epochs = 10", "n_epochs = 20", "epochs", "n_epochs is 20; the homework fixes it at 10"),
        ("n_epochs = 10", "n_epochs = 10\nn_epochs += 5", "epochs", "n_epochs is changed here"),
        (
            "for epoch in range(n_epochs):",
            "for epoch in range(15):",
            "epochs",
            "runs range(15), 15 epochs",
        ),
        (
            "valid_size = 0.2",
            "valid_size = 0.1",
            "valid_size",
            "valid_size is 0.1; the homework fixes it at 0.2",
        ),
        (
            "self.fc2 = nn.Linear(512, 256)",
            "self.fc2 = nn.Linear(512, 300)",
            "linear_layers",
            "nn.Linear(512, 300) differs",
        ),
        (
            "self.fc3 = nn.Linear(256, 10)",
            "self.fc3 = nn.Linear(256, 10)\n        self.fc4 = nn.Linear(10, 10)",
            "linear_layers",
            "has 4 nn.Linear layers",
        ),
        (
            "import torch.nn as nn",
            "import torch.nn as nn\nconv = nn.Conv2d(1, 8, 3)",
            "linear_layers",
            "adds a Conv2d layer",
        ),
    ],
)
def test_violations_point_at_the_line(
    tmp_path: Path, rubric: Rubric, facts: FrozenFacts, old: str, new: str, rule: str, message: str
) -> None:
    assert old in TEMPLATE
    ok, text = _verdicts(tmp_path, TEMPLATE.replace(old, new, 1), rubric, facts)[rule]
    assert ok is False and message in text and text.startswith("line ")


def test_legal_changes_stay_legal(tmp_path: Path, rubric: Rubric, facts: FrozenFacts) -> None:
    source = (
        TEMPLATE.replace(
            "import torch.nn as nn", "import torch.nn as nn\nfrom torch.nn import Linear as Dense"
        )
        .replace(
            "self.fc1 = nn.Linear(28 * 28, 512)",
            "self.fc1 = Dense(in_features=784, out_features=512)\n"
            "        self.bn = nn.BatchNorm1d(512)\n        self.drop = nn.Dropout(p=0.3)",
        )
        .replace("batch_size = 64", "batch_size = 128")
    )
    verdicts = _verdicts(
        tmp_path, "!pip install torchinfo\n%matplotlib inline\n" + source, rubric, facts
    )
    assert {rule: ok for rule, (ok, _) in verdicts.items()} == {
        "epochs": True,
        "valid_size": True,
        "linear_layers": True,
    }


def test_a_second_template_with_other_names(tmp_path: Path) -> None:
    other = (
        TEMPLATE.replace("n_epochs", "EPOCHS")
        .replace("= 10", "= 12", 1)
        .replace("valid_size", "val_fraction")
        .replace("nn.Linear(512, 256)", "nn.Linear(512, 128)")
        .replace("nn.Linear(256, 10)", "nn.Linear(128, 10)")
    )
    path = tmp_path / "course_template.py"
    path.write_text(other)
    facts = derive_facts(path)
    assert (facts.epochs_name, facts.epochs, facts.valid_name, facts.valid_size) == (
        "EPOCHS",
        12,
        "val_fraction",
        0.2,
    )
    assert [(layer.in_features, layer.out_features) for layer in facts.linear_layers] == [
        (784, 512),
        (512, 128),
        (128, 10),
    ]
    # The same code checks submissions against this template's facts, not HW3's.
    rubric = load_rubric(ROOT / "rubric.yaml")
    assert {rule: ok for rule, (ok, _) in _verdicts(tmp_path, other, rubric, facts).items()} == {
        "epochs": True,
        "valid_size": True,
        "linear_layers": True,
    }
    hw3_sizes = other.replace("nn.Linear(512, 128)", "nn.Linear(512, 256)").replace(
        "EPOCHS = 12", "EPOCHS = 10"
    )
    verdicts = _verdicts(tmp_path, hw3_sizes, rubric, facts)
    assert verdicts["epochs"][0] is False and "the homework fixes it at 12" in verdicts["epochs"][1]
    assert (
        verdicts["linear_layers"][0] is False
        and "nn.Linear(512, 256) differs" in verdicts["linear_layers"][1]
    )


def test_a_cell_that_does_not_parse_is_no_evidence(
    tmp_path: Path, rubric: Rubric, facts: FrozenFacts
) -> None:
    broken = TEMPLATE.replace(
        "self.fc1 = nn.Linear(28 * 28, 512)", "self.fc1 = nn.Linear(28 * 28, 512"
    )
    assert broken != TEMPLATE
    path = tmp_path / "HW3_x.py"
    path.write_text(broken)
    checks = check_static(read_submission(path), facts, rubric).checks
    # the student sees it first
    assert checks[0].id == "syntax" and "not valid Python" in checks[0].message
    # a layer the grader could not read is not a missing layer
    assert not any(c.violated for c in checks)
    layers = next(c for c in checks if c.id == "linear_layers")
    assert layers.ok is None and "does not parse" in layers.message


@pytest.mark.parametrize(
    ("split", "ok"),
    [
        (
            "split = int(0.2 * num_train)",
            True,
        ),  # the template's fraction, written as a literal: legal
        ("split = int(num_train * 0.2)", True),
        ("split = int(0.1 * num_train)", False),
        ("split = 12000", None),  # no fraction to compare: the run decides
    ],
)
def test_a_literal_split_fraction_is_judged_by_its_value(
    tmp_path: Path, rubric: Rubric, facts: FrozenFacts, split: str, ok: bool | None
) -> None:
    source = TEMPLATE.replace("split = int(np.floor(valid_size * num_train))", split)
    assert split in source
    assert _verdicts(tmp_path, source, rubric, facts)["valid_size"][0] is ok
