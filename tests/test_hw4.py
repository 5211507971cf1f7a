"""HW4, the second homework shipped with the grader (homeworks/hw4-cnn/): its rubric states the
facts `grader rubric` derives from its template, and the static check passes the template and the
reference solution and flags the example class's violation. In-process and static (no kernel)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

from grader.cli import ExitCode, main
from grader.intake.read import read_submission
from grader.model.findings import RuleId
from grader.model.results import Check
from grader.model.rubric import FrozenFacts, Rubric, load_rubric
from grader.pipeline.package import inspect
from grader.static.reference import derive_facts
from grader.static.rules import check_static

ROOT = Path(__file__).resolve().parent.parent
HW4 = ROOT / "homeworks" / "hw4-cnn"
SUBMISSIONS = HW4 / "submissions"
CONV = {"kernel_size": 3, "padding": 1}
LAYERS = [
    ("Conv2d", "self.conv1", {"in_channels": 1, "out_channels": 8, **CONV}),
    ("Conv2d", "self.conv2", {"in_channels": 8, "out_channels": 16, **CONV}),
    ("Linear", "self.fc", {"in_features": 784, "out_features": 10}),
]


@pytest.fixture(scope="module")
def shipped() -> tuple[Rubric, FrozenFacts]:
    rubric = load_rubric(HW4 / "rubric.yaml")
    return rubric, derive_facts(rubric.template)


def _checks(path: Path, shipped: tuple[Rubric, FrozenFacts]) -> dict[str, Check]:
    rubric, facts = shipped
    return {c.id: c for c in check_static(read_submission(path), facts, rubric).checks}


def test_the_rubric_names_hw4_and_its_template(shipped: tuple[Rubric, FrozenFacts]) -> None:
    rubric, facts = shipped
    assert rubric.homework == "HW4" and rubric.template == HW4 / "template.ipynb"
    assert rubric.files.account_of("HW4_M112rhyang.ipynb") == ("M112rhyang", "notebook")
    assert rubric.files.account_of("HW3_M112rhyang.ipynb") is None
    assert rubric.frozen == (RuleId.EPOCHS, RuleId.VALID_SIZE, RuleId.WEIGHT_LAYERS)
    assert (facts.epochs_name, facts.epochs, facts.valid_name, facts.valid_size) == (
        "NUM_ROUNDS",
        4,
        "HOLDOUT",
        0.1,
    )
    assert [(w.kind, w.name, dict(w.args)) for w in facts.weight_layers] == LAYERS
    levels = [level.at_least for level in rubric.accuracy.thresholds]
    assert levels == sorted(levels) and rubric.accuracy.bonus is not None
    assert rubric.accuracy.ceiling is not None and rubric.accuracy.ceiling > levels[-1]


def test_grader_rubric_derives_the_shipped_facts_from_the_template(
    tmp_path: Path, shipped: tuple[Rubric, FrozenFacts]
) -> None:
    """`grader rubric homeworks/hw4-cnn/template.ipynb` drafts the frozen rules the shipped rubric
    lists, from the same facts; the template's .py twin gives the same facts."""
    rubric, facts = shipped
    out = tmp_path / "draft.yaml"
    assert main(["rubric", str(HW4 / "template.ipynb"), "--out", str(out)]) == ExitCode.OK
    draft = load_rubric(out)
    # the homework named by its folder (the template's file name names none), files by it
    assert draft.homework == rubric.homework and draft.files == rubric.files
    assert draft.template.resolve() == rubric.template.resolve()
    assert draft.frozen == rubric.frozen
    assert derive_facts(draft.template) == facts
    twin = derive_facts(HW4 / "template.py")
    assert (twin.epochs_name, twin.epochs, twin.valid_name, twin.valid_size) == (
        facts.epochs_name,
        facts.epochs,
        facts.valid_name,
        facts.valid_size,
    )
    assert (twin.weight_layers, twin.linear_layers) == (facts.weight_layers, facts.linear_layers)


def test_the_notebooks_are_their_py_twins() -> None:
    """template.ipynb and reference/solution.ipynb carry their .py's cells (reference/make_ipynb.py
    builds them); the handed-out and the solution's submissions are copies of them."""
    spec = importlib.util.spec_from_file_location("make_ipynb", ROOT / "reference/make_ipynb.py")
    assert spec is not None and spec.loader is not None
    make_ipynb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_ipynb)
    for stem in (HW4 / "template", HW4 / "reference" / "solution"):
        book = nbformat.read(str(stem.with_suffix(".ipynb")), as_version=4)
        built = make_ipynb.script_to_notebook(stem.with_suffix(".py").read_text(encoding="utf-8"))
        assert [c.source for c in book.cells] == [c.source for c in built.cells], stem
        assert len(book.cells) == 7
    assert (SUBMISSIONS / "HW4_baseline01.ipynb").read_bytes() == (
        HW4 / "template.ipynb"
    ).read_bytes()
    assert (SUBMISSIONS / "HW4_M112rhyang.ipynb").read_bytes() == (
        HW4 / "reference" / "solution.ipynb"
    ).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        HW4 / "template.ipynb",
        HW4 / "template.py",
        HW4 / "reference" / "solution.ipynb",
        HW4 / "reference" / "solution.py",
        SUBMISSIONS / "HW4_baseline01.ipynb",
        SUBMISSIONS / "HW4_M112rhyang.ipynb",
        SUBMISSIONS / "HW4_M112rhyang.py",
        SUBMISSIONS / "HW4_bragger.py",
    ],
    ids=lambda p: p.relative_to(HW4).as_posix(),
)
def test_the_template_and_the_solution_keep_every_rule(
    path: Path, shipped: tuple[Rubric, FrozenFacts]
) -> None:
    """The bragger's code keeps the rules too: only its printed accuracy is fake (the run finds
    it)."""
    checks = _checks(path, shipped)
    assert {rule: c.ok for rule, c in checks.items()} == {
        "epochs": True,
        "valid_size": True,
        "weight_layers": True,
    }, checks


def test_the_wide_cnn_breaks_the_weight_layers_rule(shipped: tuple[Rubric, FrozenFacts]) -> None:
    checks = _checks(SUBMISSIONS / "HW4_widecnn.ipynb", shipped)
    broken = [c for c in checks.values() if c.ok is not True]
    assert [c.id for c in broken] == ["weight_layers"], checks
    assert broken[0].ok is False
    assert "out_channels 16 (the template's 8)" in broken[0].message, broken[0].message


def test_the_class_is_named_as_the_rubric_expects(shipped: tuple[Rubric, FrozenFacts]) -> None:
    """Every file of the example class names an account; the solution's three files are a
    package the TA can receive (names, .py twin, the report's first line)."""
    rubric, _ = shipped
    accounts = {p.name: rubric.files.account_of(p.name) for p in SUBMISSIONS.iterdir()}
    assert {name: found[0] for name, found in accounts.items() if found} == {
        "HW4_baseline01.ipynb": "baseline01",
        "HW4_M112rhyang.ipynb": "M112rhyang",
        "HW4_M112rhyang.py": "M112rhyang",
        "HW4_Report_M112rhyang.pdf": "M112rhyang",
        "HW4_widecnn.ipynb": "widecnn",
        "HW4_bragger.py": "bragger",
    }
    package = inspect(sorted(SUBMISSIONS.glob("*M112rhyang*")), rubric.files)
    assert package.account == "M112rhyang" and package.problems == (), package.problems
    assert package.headline is not None and package.headline.first_line
    stated = package.headline.accuracy
    assert stated is not None and stated >= rubric.accuracy.thresholds[-1].at_least
