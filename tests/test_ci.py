"""`grader ci`: a student's repository graded on CI, and what GitHub, Classroom and JUnit readers
get."""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml
from junitparser import Failure, JUnitXml, Skipped, TestCase as JUnitCase

from grader.cli import ExitCode, main
from grader.intake.ipynb_lines import notebook_lines
from grader.intake.read import read_submission
from grader.model.dataset import Dataset
from grader.model.results import Check, Result, Status
from grader.model.rubric import Rubric
from grader.outputs import ci
from grader.outputs.text import markdown_text

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
TINYOK = (FIXTURES / "HW3_tinyok.py").read_text()
# Two rules broken: the epochs (line 56) and a fourth Linear layer (line 40).
VIOLATING = TINYOK.replace("n_epochs = 10", "n_epochs = 20").replace(
    "        self.fc3 = nn.Linear(256, 10)\n",
    "        self.fc3 = nn.Linear(256, 10)\n        self.fc4 = nn.Linear(10, 10)\n",
)
HOSTILE = (
    "x\n::set-output name=a::b\r\n::error::injected %0A%25 <img src=x onerror=alert(1)> | a "
    "| b | ]]> \" ' & \x00 \x1b[31m \uffff"
)

# GitHub's workflow-command syntax: ::level prop=value,...::message, values and message escaped.
_VALUE = r"(?:[^%:,\r\n]|%(?:25|0D|0A|3A|2C))*"
_MESSAGE = r"(?:[^%\r\n]|%(?:25|0D|0A))*"
ANNOTATION = re.compile(
    r"^::(?P<level>error|warning) "
    rf"file=(?P<file>{_VALUE})(?:,line=(?P<line>[1-9]\d*))?"
    rf",title=(?P<title>{_VALUE})::(?P<message>{_MESSAGE})$"
)
_CELL = re.compile(r"(?<!\\)\|")  # a Markdown table's cell separators (escaped pipes are text)


@dataclass(frozen=True)
class GitHub:
    summary: Path
    output: Path


def _repo(tmp_path: Path, files: dict[str, str]) -> Path:
    repo = tmp_path / "repo"
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    return repo


@pytest.fixture
def github(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitHub:
    """A faked GitHub Actions step: its environment and the files it names."""
    found = GitHub(tmp_path / "step_summary.md", tmp_path / "github_output")
    found.summary.write_text("")
    found.output.write_text("earlier=1\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(found.summary))
    monkeypatch.setenv("GITHUB_OUTPUT", str(found.output))
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path / "repo"))
    return found


def _unescape(text: str) -> str:
    return (
        text.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%3A", ":")
        .replace("%2C", ",")
        .replace("%25", "%")
    )


def _annotations(stdout: str) -> list[re.Match[str]]:
    """The annotation lines of a step's stdout; every other line starting with :: is the
    stop-commands
    fence, and the human text lies inside it."""
    lines = stdout.splitlines()
    fence = re.fullmatch(r"::stop-commands::([0-9a-f]{32})", lines[0])
    assert fence, lines[0]
    end = lines.index(f"::{fence.group(1)}::")
    found = [ANNOTATION.match(line) for line in lines[end + 1 :]]
    assert all(found), lines[end + 1 :]
    return [m for m in found if m]


def _classroom(output: Path) -> dict[str, object]:
    lines = output.read_text().splitlines()
    assert lines[0] == "earlier=1" and len(lines) == 2 and lines[1].startswith("result=")
    data = json.loads(base64.b64decode(lines[1].removeprefix("result="), validate=True))
    assert isinstance(data, dict)
    return data


def _check_classroom_schema(data: dict[str, object]) -> list[dict[str, object]]:
    """The fields classroom-resources/autograding-grading-reporter reads (see grader/ci.py)."""
    assert data["version"] == 1 and data["status"] in ("pass", "fail", "error")
    assert isinstance(data["max_score"], int) and isinstance(data["tests"], list) and data["tests"]
    for test in data["tests"]:
        assert isinstance(test["name"], str) and test["status"] in ("pass", "fail", "error")
        assert isinstance(test["message"], str) and isinstance(test["score"], int)
        assert isinstance(test["line_no"], int) and isinstance(test["filename"], str)
        assert isinstance(test["duration"], int)
    return data["tests"]  # type: ignore[return-value]


def _cases(path: Path) -> dict[str, JUnitCase]:
    xml = JUnitXml.fromfile(str(path))
    return {case.name: case for suite in xml for case in suite}


def _table_rows(markdown: str, header: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in _CELL.split(line)[1:-1]])
    return rows


def test_a_violation_on_github_actions(
    tmp_path: Path, github: GitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path, {"hw/HW3_mallory.py": VIOLATING, "README.md": "# HW3\n"})
    junit = tmp_path / "reports" / "junit.xml"
    assert main(["ci", str(repo), "--static", "--junit", str(junit)]) == ExitCode.FAILED
    stdout = capsys.readouterr().out
    # the text `grader check` prints
    assert "static VIOLATED  epochs: line 56: n_epochs is 20" in stdout

    errors = _annotations(stdout)
    assert [(m["level"], m["file"], m["line"]) for m in errors] == [
        ("error", "hw/HW3_mallory.py", "56"),
        ("error", "hw/HW3_mallory.py", "40"),
    ]
    assert _unescape(errors[0]["message"]) == "line 56: n_epochs is 20; the homework fixes it at 10"
    assert _unescape(errors[1]["title"]) == "HW3 rule linear_layers violated"
    lines = VIOLATING.splitlines()
    assert lines[55] == "n_epochs = 20" and "fc4" in lines[39]

    summary = github.summary.read_text()
    assert summary.startswith("## ❌ HW3: violation (static checks only)")
    rows = _table_rows(summary, "| rule | verdict | where | message |")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("epochs", "❌ violated", "line 56"),
        ("valid\\_size", "✅ ok", ""),
        ("linear\\_layers", "❌ violated", "line 40"),
    ]
    assert "Not run (static checks only)" in summary and "| 89% | 60 |  |" in summary

    data = _classroom(github.output)
    tests = _check_classroom_schema(data)
    assert data["status"] == "fail" and data["max_score"] == 0  # static: no points to report
    assert [(t["name"], t["status"], t["line_no"], t["score"]) for t in tests] == [
        ("rule epochs", "fail", 56, 0),
        ("rule valid_size", "pass", 0, 0),
        ("rule linear_layers", "fail", 40, 0),
    ]

    cases = _cases(junit)
    assert set(cases) == {"rule epochs", "rule valid_size", "rule linear_layers", "accuracy band"}
    failure = cases["rule epochs"].result[0]
    assert isinstance(failure, Failure) and failure.message.startswith("line 56: n_epochs is 20")
    assert failure.text is not None and failure.text.startswith("hw/HW3_mallory.py:56: ")
    assert cases["rule valid_size"].is_passed and isinstance(
        cases["accuracy band"].result[0], Skipped
    )


def test_a_good_submission_passes(
    tmp_path: Path, github: GitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(
        tmp_path, {"HW3_alice.py": TINYOK, ".ipynb_checkpoints/HW3_alice-checkpoint.py": VIOLATING}
    )
    junit = tmp_path / "junit.xml"
    assert main(["ci", str(repo), "--static", "--junit", str(junit)]) == ExitCode.OK
    assert _annotations(capsys.readouterr().out) == []
    assert github.summary.read_text().startswith("## ✅ HW3: graded (static checks only)")
    data = _classroom(github.output)
    assert data["status"] == "pass" and all(
        t["status"] == "pass" for t in _check_classroom_schema(data)
    )
    assert all(case.is_passed for name, case in _cases(junit).items() if name != "accuracy band")


def test_a_notebook_points_at_its_json_line(
    tmp_path: Path, github: GitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    notebook = (FIXTURES / "rules" / "HW3_epochs_plus5.ipynb").read_text()
    # the .ipynb is graded
    repo = _repo(tmp_path, {"HW3_bob.ipynb": notebook, "HW3_bob.py": TINYOK})
    assert main(["ci", str(repo), "--static"]) == ExitCode.FAILED
    (error,) = _annotations(capsys.readouterr().out)
    assert (
        error["file"] == "HW3_bob.ipynb"
        and error["message"].startswith("code cell ")
        and (", line 8: ") in error["message"]
    )
    cell = nbformat.reads(notebook, as_version=4).cells[9].source.splitlines()[7]
    assert cell == "n_epochs += 5"
    assert (
        json.loads(notebook.splitlines()[int(error["line"]) - 1].strip().rstrip(",")) == cell + "\n"
    )


@pytest.mark.parametrize("path", sorted(FIXTURES.rglob("*.ipynb")), ids=lambda p: p.name)
def test_every_source_line_maps_to_the_json_line_holding_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8-sig")
    raw = text.splitlines()
    lines = notebook_lines(text)
    for cell in read_submission(path).cells:
        source = cell.source.splitlines()
        assert len(lines[cell.number]) == len(source)
        for line, json_line in zip(source, lines[cell.number]):
            written = {json.dumps(line, ensure_ascii=ascii)[1:-1] for ascii in (False, True)}
            assert any(w in raw[json_line - 1] for w in written), (cell.number, line)


def test_source_written_as_one_string_and_broken_json(tmp_path: Path) -> None:
    text = json.dumps(
        {
            "cells": [
                {"cell_type": "markdown", "source": ["# a\n", "b"]},
                {"cell_type": "code", "source": "x = 1\ny = '\u2028'\n\nz = 3"},
            ]
        },
        indent=1,
    )
    lines = notebook_lines(text)  # lines counted as str.splitlines (and the rule checks) count them
    assert lines[1] == (6, 7) and lines[2] == (12,) * 5
    assert notebook_lines('{"cells": [') == {} and notebook_lines("[1, 2]") == {}
    assert notebook_lines("[" * 100_000) == {}


def _hostile_outcome(
    rubric: Rubric, status: Status = Status.VIOLATION, ran: bool = False
) -> ci.Outcome:
    checks = (
        Check("epochs", False, HOSTILE, "HW3_eve.py", None, 3),
        Check("valid_size", None, HOSTILE, "HW3_eve.py"),
        Check("linear_layers", True, "fine", "HW3_eve.py"),
    )
    result = Result(
        student="eve",
        source="HW3_eve.py",
        status=status,
        accuracy=None,
        reported_accuracy=None,
        score=0,
        max_score=60,
        bonus=0,
        checks=checks,
        flags=(HOSTILE,),
        duration_s=1.5,
        reason=HOSTILE,
        notes=(HOSTILE,),
    )
    return ci.Outcome(
        result, "dir,with:odd%name/HW3_eve.py", ran, rubric, ci.rule_verdicts(checks, None)
    )


def test_student_text_cannot_inject_commands_markup_or_xml(tmp_path: Path, rubric: Rubric) -> None:
    outcome = _hostile_outcome(rubric)
    environment = ci.CiEnvironment(
        github=True,
        workspace=tmp_path,
        step_summary=tmp_path / "summary.md",
        output=tmp_path / "output",
    )
    out = io.StringIO()
    ci.publish(outcome, environment, out, None, tmp_path / "junit.xml")
    # the human text, with its "::set-output" line, stays fenced
    shown = _annotations(out.getvalue())
    assert [(m["level"], m["line"]) for m in shown] == [("error", "3"), ("warning", None)]
    assert _unescape(shown[0]["file"]) == "dir,with:odd%name/HW3_eve.py"
    assert _unescape(shown[0]["message"]) == "line 3: " + re.sub(
        r"[\x00\x1b\uffff]", "\ufffd", HOSTILE
    )

    summary = (tmp_path / "summary.md").read_text()
    assert (
        "<img" not in summary
        and "]]>" not in summary
        and "\x1b" not in summary
        and "\x00" not in summary
    )
    assert "&lt;img src=x onerror=alert\\(1\\)&gt;" in summary
    rows = _table_rows(summary, "| rule | verdict | where | message |")
    assert [len(r) for r in rows] == [4, 4, 4] and [r[0] for r in rows] == [
        "epochs",
        "valid\\_size",
        "linear\\_layers",
    ]
    assert not any(
        line.startswith(("::", "<", "#")) and "set" in line for line in summary.splitlines()
    )
    assert summary.count("\n- ") == 2  # one flag, one note: each stays one list item

    cases = _cases(tmp_path / "junit.xml")  # still well-formed XML
    failure = cases["rule epochs"].result[0]
    assert isinstance(failure, Failure)
    # report.py's finalize replaced the control characters; XML reads the newline in an attribute as
    # a space
    assert failure.message == "line 3: " + re.sub(r"[\x00\x1b\uffff\r]", "\ufffd", HOSTILE).replace(
        "\n", " "
    )
    assert isinstance(cases["rule valid_size"].result[0], Skipped)
    data = json.loads(base64.b64decode((tmp_path / "output").read_text().removeprefix("result=")))
    assert data["tests"][0]["message"] == f"line 3: {HOSTILE}"  # JSON carries it as it is


@pytest.mark.parametrize(
    "payload",
    [
        "<img src=x onerror=alert(1)>",
        "| a | b |",
        "a\nb\r\nc\u2028## heading",
        "[link](javascript:alert(1)) ![x](y) `code` *em* _u_ ~s~ $x$ @user \\",
    ],
)
def test_the_md_filter_keeps_text_literal(payload: str) -> None:
    escaped = markdown_text(payload)
    assert "\n" not in escaped and "\r" not in escaped and "<" not in escaped and ">" not in escaped
    assert not _CELL.search(escaped)
    unescaped = (
        re.sub(r"\\(.)", r"\1", escaped)
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )
    assert unescaped == re.sub(r"\r\n|[\r\n\u2028]", " ", payload)


def test_exit_codes_and_band_of_failed_and_tampered_results(rubric: Rubric) -> None:
    for status, passed in (
        (Status.GRADED, True),
        (Status.VIOLATION, False),
        (Status.ERROR, False),
        (Status.TIMEOUT, False),
    ):
        outcome = _hostile_outcome(rubric, status, ran=True)
        assert outcome.passed is passed
        band = ci.cases(outcome)[-1]
        if status in (Status.ERROR, Status.TIMEOUT):
            assert (band.name, band.status, band.score) == ("accuracy band", "error", 0)
            assert ci.classroom_result(outcome)["status"] == "error"
    checks = (Check("epochs", None, "cannot tell"),)
    result = Result(
        student="u",
        source="HW3_u.py",
        status=Status.GRADED,
        accuracy=None,
        reported_accuracy=None,
        score=0,
        max_score=60,
        bonus=0,
        checks=checks,
        flags=(),
        duration_s=0.0,
    )
    undecided = ci.Outcome(result, "HW3_u.py", False, rubric, ci.rule_verdicts(checks, None))
    assert undecided.passed and ci.classroom_result(undecided)["status"] == "pass"
    review = Result(
        student="u",
        source="HW3_u.py",
        status=Status.REVIEW,
        accuracy=91.0,
        reported_accuracy=None,
        score=0,
        max_score=60,
        bonus=0,
        checks=(),
        flags=(),
        duration_s=1.0,
        reason="to review: the captured model could not be evaluated",
        pending_score=60,
        pending_bonus=5,
    )
    reviewed = ci.Outcome(review, "HW3_u.py", True, rubric, ())
    band = ci.cases(reviewed)[-1]
    assert not reviewed.passed and (band.status, band.score) == ("fail", 0)
    assert "could not be evaluated" in band.message and "would be 60 + 5, withheld" in band.message


def test_a_run_from_the_command_line_on_tiny_data(
    tmp_path: Path,
    github: GitHub,
    tiny_dataset: Dataset,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The whole `grader ci` with a run; the tiny dataset stands in for the prepared FashionMNIST
    (whose checksums it would fail)."""
    monkeypatch.setattr("grader.intake.dataset.prepare", lambda *_args, **_kwargs: tiny_dataset)
    repo = _repo(tmp_path, {"HW3_alice.py": TINYOK})
    junit = tmp_path / "junit.xml"
    args = [
        "ci",
        str(repo),
        "--no-sandbox",
        "--rubric",
        str(ROOT / "rubric.yaml"),
        "--junit",
        str(junit),
    ]
    assert main(args) == ExitCode.OK
    stdout = capsys.readouterr().out
    assert _annotations(stdout) == [] and "status:   graded" in stdout
    accuracy = float(re.findall(r"accuracy: ([0-9.]+)%", stdout)[0])
    data = _classroom(github.output)
    tests = _check_classroom_schema(data)
    assert data["status"] == "pass" and data["max_score"] == 60
    assert (
        tests[-1]["name"] == "accuracy band"
        and tests[-1]["status"] == "pass"
        and tests[-1]["score"] == 65
    )
    assert sum(t["score"] for t in tests) == 65  # what the reporter adds up
    assert [t["name"] for t in tests[:-1]] == [
        "rule epochs",
        "rule valid_size",
        "rule linear_layers",
    ]
    summary = github.summary.read_text()
    assert summary.startswith("## ✅ HW3: graded\n")
    assert f"| measured by the grader | {accuracy:.2f}% |" in summary
    assert (
        "| automatic points | 60/60 + 5 bonus |" in summary and "| 90% | +5 bonus | ✅ |" in summary
    )
    band = _cases(junit)["accuracy band"]
    assert band.is_passed and band.system_out is not None and "60/60 + 5 bonus" in band.system_out


def test_without_ci_variables_it_prints_the_check_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (
        "GITHUB_ACTIONS",
        "GITHUB_STEP_SUMMARY",
        "GITHUB_OUTPUT",
        "GITHUB_WORKSPACE",
        "CI_PROJECT_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    repo = _repo(tmp_path, {"HW3_alice.py": VIOLATING})
    monkeypatch.chdir(repo)
    assert (
        main(["ci", "--static", "--rubric", str(ROOT / "rubric.yaml"), "--junit", "report.xml"])
        == ExitCode.FAILED
    )
    stdout = capsys.readouterr().out
    assert not any(line.startswith("::") for line in stdout.splitlines())
    assert main(["check", "HW3_alice.py", "--rubric", str(ROOT / "rubric.yaml")]) == ExitCode.FAILED
    # the same text as `grader check`, but for the closing hint, which names ci's own options
    assert (
        capsys.readouterr().out.replace("add --run", "run `grader ci` without --static") == stdout
    )
    assert "run `grader ci` without --static" in stdout and "--run" not in stdout
    cases = _cases(repo / "report.xml")
    assert {name for name, c in cases.items() if any(isinstance(r, Failure) for r in c.result)} == {
        "rule epochs",
        "rule linear_layers",
    }
    assert [type(r) for r in cases["accuracy band"].result] == [Skipped]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"README.md": "nothing"},
            "no submission found; expected a file named HW3_ACCOUNT.ipynb (or HW3_ACCOUNT.py)",
        ),
        (
            {"HW3_alice.py": TINYOK, "HW3_bob.ipynb": "{}"},
            "files of 2 accounts (HW3_alice.py, HW3_bob.ipynb)",
        ),
        ({"HW3_alice.ipynb": '{"cells": ['}, "HW3_alice.ipynb: not a notebook (broken JSON"),
        (
            {"HW3_Report_alice.pdf": "%PDF"},
            "HW3_Report_alice.pdf: only the report PDF was submitted",
        ),
    ],
)
def test_what_is_not_one_submission_is_a_one_line_error(
    tmp_path: Path, files: dict[str, str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path, files)
    assert main(["ci", str(repo), "--static"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("grader: ") and err.count("\n") == 1 and expected in err, err
    assert main(["ci", str(tmp_path / "nowhere"), "--static"]) == ExitCode.USAGE


def test_the_ci_files_are_valid_and_wire_the_grader() -> None:
    workflow = yaml.safe_load((ROOT / "templates" / "ci" / "github-classroom.yml").read_text())
    assert workflow["name"] == "Autograding Tests" and set(workflow["on"]) >= {"push"}
    (job,) = workflow["jobs"].values()
    assert list(workflow["jobs"]) == ["run-autograding-tests"]
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses) and any(
        u.startswith("actions/setup-python@") for u in uses
    )
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "~/.cache/grader"
    runs = [s.get("run", "") for s in steps]
    assert any("pip install" in r and "git+https://" in r for r in runs) and "grader data" in runs
    grading = next(s for s in steps if s.get("run", "").startswith("grader ci"))
    reporter = next(
        s
        for s in steps
        if s.get("uses", "").startswith("classroom-resources/autograding-grading-reporter@v1")
    )
    runner = grading["id"]
    assert reporter["with"]["runners"] == runner
    assert reporter["env"] == {
        f"{runner.upper()}_RESULTS": f"${{{{ steps.{runner}.outputs.result }}}}"
    }

    gitlab = yaml.safe_load((ROOT / "templates" / "ci" / "gitlab-ci.yml").read_text())
    (job,) = gitlab.values()
    assert any(
        line.startswith("grader ci") and "--junit report.xml" in line for line in job["script"]
    )
    assert "grader data" in job["script"] and any("pip install" in line for line in job["script"])
    assert (
        job["artifacts"]["when"] == "always"
        and job["artifacts"]["reports"]["junit"] == "report.xml"
    )
    assert job["cache"]["paths"]
