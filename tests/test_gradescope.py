"""The Gradescope autograder: the zip a course uploads, unpacked into a folder laid out like
/autograder, grades a submission and writes results.json in Gradescope's schema."""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest

from grader.cli import ExitCode, main
from grader.model.context import Context
from grader.model.rubric import LatePolicy, load_rubric
from grader.model.submission import Submitted
from grader.pipeline.commands import _uploaded, grade_autograder
from grader.static.reference import derive_facts

FIXTURES = Path(__file__).parent / "fixtures"

# Gradescope's results.json, as its autograder specification documents it (the fields used here).
_TEST = {
    "type": "object",
    "required": ["name", "status", "score", "max_score"],
    "properties": {
        "name": {"type": "string"},
        "status": {"enum": ["passed", "failed"]},
        "score": {"type": "number"},
        "max_score": {"type": "number"},
        "output": {"type": "string"},
        "visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
    },
}
SCHEMA = {
    "type": "object",
    "required": ["tests"],
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "integer"},
        "output": {"type": "string"},
        "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "stdout_visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "tests": {"type": "array", "items": _TEST},
        "leaderboard": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "value"],
                "properties": {
                    "name": {"type": "string"},
                    "value": {"type": ["number", "string"]},
                    "order": {"enum": ["asc", "desc"]},
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def autograder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zip as `grader gradescope OUT.zip` builds it, unpacked as Gradescope does into
    /autograder/source."""
    zipped = tmp_path_factory.mktemp("build") / "autograder.zip"
    assert main(["gradescope", str(zipped)]) == ExitCode.OK
    root = tmp_path_factory.mktemp("autograder")
    with zipfile.ZipFile(zipped) as archive:
        names = archive.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
        archive.extractall(root / "source")
    assert {"setup.sh", "run_autograder", "rubric.yaml", "reference/HW3_template.ipynb"} <= set(
        names
    )
    assert modes["setup.sh"] & stat.S_IXUSR and modes["run_autograder"] & stat.S_IXUSR
    wheel = next(n for n in names if n.endswith(".whl"))
    setup = (root / "source" / "setup.sh").read_text()
    assert (
        f'pip install --quiet "./{wheel}"' in setup
        and "torch==" in setup
        and "grader data" in setup
    )
    assert (
        "grader gradescope --autograder /autograder"
        in (root / "source" / "run_autograder").read_text()
    )
    return root


def _context(root: Path, tiny_context: Context) -> Context:
    # the rubric shipped in the zip, with its template
    rubric = load_rubric(root / "source" / "rubric.yaml")
    return dataclasses.replace(tiny_context, rubric=rubric, facts=derive_facts(rubric.template))


@pytest.mark.slow
def test_a_good_submission_gets_its_points_and_a_valid_results_json(
    autograder: Path, tiny_context: Context, tmp_path: Path
) -> None:
    root = tmp_path / "autograder"
    shutil.copytree(autograder / "source", root / "source")
    (root / "submission").mkdir()
    shutil.copy(FIXTURES / "HW3_tinyok.py", root / "submission" / "HW3_ann.py")
    (root / "submission_metadata.json").write_text(
        json.dumps({"created_at": "2026-12-01T23:58:00.000000+08:00"})
    )
    context = _context(root, tiny_context)
    deadline = datetime(2026, 12, 1, 23, 59, tzinfo=timezone(timedelta(hours=8)))
    context = dataclasses.replace(
        context,
        rubric=dataclasses.replace(context.rubric, deadline=deadline, late=LatePolicy(10, 0)),
    )
    record = grade_autograder(root, context, "in the sandbox, on the CPU (2 threads)")
    written = json.loads((root / "results" / "results.json").read_text())
    assert written == record
    jsonschema.validate(written, SCHEMA)
    tests = {t["name"]: t for t in written["tests"]}
    assert {"rule epochs", "rule valid_size", "rule linear_layers", "accuracy band"} <= set(tests)
    assert all(
        tests[f"rule {r}"]["status"] == "passed" for r in ("epochs", "valid_size", "linear_layers")
    )
    assert (
        written["score"] == 65
        and tests["accuracy band"]["score"] == 65
        and tests["accuracy band"]["max_score"] == 60
    )
    assert (
        written["leaderboard"][0]["name"] == "Accuracy"
        and written["leaderboard"][0]["value"] == 100.0
    )
    assert "accuracy: 100.00%" in written["output"]


def test_a_violation_and_a_missing_file_score_zero_with_what_to_fix(
    autograder: Path, tiny_context: Context, tmp_path: Path
) -> None:
    root = tmp_path / "autograder"
    shutil.copytree(autograder / "source", root / "source")
    (root / "submission").mkdir()
    code = (FIXTURES / "HW3_tinyok.py").read_text()
    (root / "submission" / "HW3_bo.py").write_text(code.replace("n_epochs = 10", "n_epochs = 20"))
    # the rule alone: no run needed
    static = dataclasses.replace(_context(root, tiny_context), dataset=None)
    record = grade_autograder(root, static, "")
    jsonschema.validate(record, SCHEMA)
    assert (
        record["score"] == 0
        and {t["name"]: t["status"] for t in record["tests"]}["rule epochs"] == "failed"
    )
    (root / "submission" / "HW3_bo.py").rename(root / "submission" / "homework3.py")
    record = grade_autograder(root, static, "")
    jsonschema.validate(record, SCHEMA)
    assert (
        record["score"] == 0
        and "no submission found" in record["output"]
        and "HW3_ACCOUNT.ipynb" in record["output"]
    )


def test_the_upload_time_comes_from_gradescope_metadata(tmp_path: Path) -> None:
    assert _uploaded(tmp_path) is None  # no metadata: the file's own time is used
    (tmp_path / "submission_metadata.json").write_text(
        json.dumps({"created_at": "2026-12-02T00:10:00.5+08:00"})
    )
    when = _uploaded(tmp_path)
    assert when == Submitted(
        datetime(2026, 12, 2, 0, 10, 0, 500000, tzinfo=timezone(timedelta(hours=8))),
        "Gradescope upload time",
    )
    (tmp_path / "submission_metadata.json").write_text("{not json")
    assert _uploaded(tmp_path) is None
