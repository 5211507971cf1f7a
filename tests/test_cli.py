"""The command line: exit codes and one-line errors (static paths only; runs are in test_e2e)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.cli import ExitCode, main

ROOT = Path(__file__).resolve().parent.parent


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("grader: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_check_the_template_statically(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(ROOT / "reference" / "HW3_template.ipynb")]) == ExitCode.OK
    out = capsys.readouterr().out
    assert out.count("ok ") == 3 and "add --run" in out
    # refused as a name, still checked
    assert "HW3_template.ipynb is the handout's name, no student's" in out


def test_check_json_and_a_violation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = (
        (ROOT / "reference" / "HW3_template.py")
        .read_text()
        .replace("n_epochs = 10", "n_epochs = 20")
    )
    path = tmp_path / "HW3_alice.py"
    path.write_text(source)
    assert main(["check", str(path), "--json"]) == ExitCode.FAILED
    result = json.loads(capsys.readouterr().out)
    assert result["student"] == "alice" and result["status"] == "violation"
    epochs = next(c for c in result["checks"] if c["id"] == "epochs")
    assert (
        epochs["ok"] is False and "n_epochs is 20; the homework fixes it at 10" in epochs["message"]
    )
    assert source.splitlines()[epochs["line"] - 1].strip() == "n_epochs = 20"
    # In a terminal: the offending line under the broken rule, and what may be changed instead.
    assert main(["check", str(path)]) == ExitCode.FAILED
    text = capsys.readouterr().out
    assert (
        f"line {epochs['line']}: n_epochs = 20" in text
        and "instead: keep the number of epochs" in text
    )
    # A notebook's cell is named as Colab shows it: no numbers, so the code cells counted and the
    # first line quoted.
    assert main(["check", str(ROOT / "submissions" / "HW3_wideboy.ipynb")]) == ExitCode.FAILED
    text = capsys.readouterr().out
    assert (
        'linear_layers: code cell 3 ("# ## Define the Network Architecture"), line 10: '
        "nn.Linear(784, 1024)"
    ) in text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["check", "nowhere/HW3_x.ipynb"], "no such file"),
        (["check", "rubric.yaml"], "not a notebook or script"),
        (["grade", "nowhere", "--out", "out"], "no such directory"),
        (["check", "reference/HW3_template.ipynb", "--rubric", "nowhere.yaml"], "cannot read"),
        (
            ["check", "reference/HW3_template.ipynb", "--timeout", "-3"],
            "--timeout must be a positive",
        ),
        (["frobnicate"], "invalid choice"),
        (["grade", "submissions"], "--out"),
        (
            [
                "grade",
                "submissions",
                "--out",
                "o",
                "--no-sandbox",
                "--executor",
                "ray",
                "--jobs",
                "2",
            ],
            "Ray places the jobs: drop --jobs",
        ),
        (
            ["grade", "submissions", "--out", "o", "--no-sandbox", "--address", "10.0.0.5:6379"],
            "--address is for --executor ray",
        ),
        (
            ["grade", "submissions", "--out", "o", "--no-sandbox", "--gpus", "first"],
            "GPU first is not on this machine",
        ),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(
    args: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(args) == ExitCode.USAGE
    assert expected in _one_line_error(capsys)


def test_broken_notebook_and_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "HW3_bob.ipynb"
    broken.write_text('{"cells": [')
    assert main(["check", str(broken)]) == ExitCode.USAGE
    assert "broken JSON" in _one_line_error(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    assert main(["grade", str(empty), "--out", str(tmp_path / "out")]) == ExitCode.USAGE
    assert "no submissions found; expected files named like HW3_ACCOUNT.ipynb" in _one_line_error(
        capsys
    )


def test_an_unmatched_name_is_still_checked_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "my homework.ipynb"
    shutil.copy(ROOT / "reference" / "HW3_template.ipynb", path)
    assert main(["check", str(path)]) == ExitCode.OK
    assert "note: the file name should be HW3_{account}.ipynb" in capsys.readouterr().out


def test_console_script_and_module_entry_points() -> None:
    for command in (["grader", "--help"], [sys.executable, "-m", "grader", "--help"]):
        executable = shutil.which(command[0]) or str(Path(sys.executable).parent / command[0])
        done = subprocess.run(
            [executable, *command[1:]], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and "check" in done.stdout and "grade" in done.stdout


def test_the_local_executor_needs_no_ray(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = (
        "import sys, grader.cli, grader.pipeline.batch, grader.pipeline.executors.local, "
        "grader.outputs.progress; print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "ray", None)  # as where the extra is not installed
    monkeypatch.chdir(ROOT)
    assert (
        main(["grade", "submissions", "--out", "o", "--no-sandbox", "--executor", "ray"])
        == ExitCode.USAGE
    )
    assert "--executor ray needs Ray: pip install 'grader[ray]'" in _one_line_error(capsys)


@pytest.mark.slow
def test_grade_prints_a_line_per_student_and_a_final_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real batch on the real dataset, with a fast notebook (an untrained model evaluated
    once)."""
    folder = tmp_path / "class"
    folder.mkdir()
    for account in ("ann", "bo"):
        shutil.copy(
            ROOT / "tests" / "fixtures" / "HW3_quickeval.ipynb", folder / f"HW3_{account}.ipynb"
        )
    (folder / "HW3_bo (1).ipynb").write_text(
        (folder / "HW3_bo.ipynb").read_text().replace("batch_size=500", "batch_size=250")
    )
    out = tmp_path / "out"
    args = ["grade", str(folder), "--out", str(out), "--jobs", "2"]
    from grader.run.sandbox import unavailable_reason

    assert main(args + (["--no-sandbox"] if unavailable_reason() else [])) == ExitCode.OK
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    # one line each
    assert sorted(line.split()[1] for line in lines if line.startswith("[")) == ["ann", "bo"]
    assert "\x1b" not in printed  # not a terminal: no live bar
    header = lines.index(next(line for line in lines if line.startswith("account")))
    assert lines[header].split() == ["account", "status", "accuracy", "score", "flags"]
    assert [line.split()[0] for line in lines[header + 1 : header + 3]] == ["ann", "bo"]
    assert "other-copies" in lines[header + 2]
    assert (
        "skipped HW3_bo.ipynb: older, different copy of bo's notebook; HW3_bo (1).ipynb was used"
        in printed
    )
    assert "2 students into" in printed and (out / "gradebook.csv").is_file()
    assert lines[-6:] == [  # what it wrote, one line each
        f"wrote {out / 'results'}/: a result (JSON) per student",
        f"wrote {out / 'gradebook.csv'}: the gradebook, a row per student (totals with the "
        "overrides)",
        f"wrote {out / 'index.html'}: the class page (Review first, bands, every student)",
        f"wrote {out / 'students'}/: a page per student, for staff (with the overrides' notes)",
        f"wrote {out / 'feedback.zip'}: a page per student to send back (also in "
        f"{out / 'feedback'}/; no staff notes)",
        f"no overrides ({out / 'overrides.yaml'} not found)",
    ]
    # the copy set aside is listed for the TA
    assert "HW3_bo.ipynb" in (out / "index.html").read_text()
    assert "check which one was meant" in (out / "students" / "bo.html").read_text()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == ExitCode.OK and capsys.readouterr().out.startswith("grader 0.")


def test_ci_names_the_junit_file_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)
    shutil.copy(ROOT / "reference" / "HW3_template.py", tmp_path / "HW3_alice.py")
    junit = tmp_path / "reports" / "junit.xml"
    main(
        [
            "ci",
            str(tmp_path),
            "--static",
            "--rubric",
            str(ROOT / "rubric.yaml"),
            "--junit",
            str(junit),
        ]
    )
    assert junit.is_file()
    said = f"grader: wrote {junit}: JUnit XML, a test case per rule and one for the accuracy band"
    assert said in capsys.readouterr().err.splitlines()
