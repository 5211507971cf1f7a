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


def test_check_json_and_a_violation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = (ROOT / "reference" / "HW3_template.py").read_text().replace("n_epochs = 10", "n_epochs = 20")
    path = tmp_path / "HW3_alice.py"
    path.write_text(source)
    assert main(["check", str(path), "--json"]) == ExitCode.FAILED
    result = json.loads(capsys.readouterr().out)
    assert result["student"] == "alice" and result["status"] == "violation"
    epochs = next(c for c in result["checks"] if c["id"] == "epochs")
    assert epochs["ok"] is False and "n_epochs is 20; the homework fixes it at 10" in epochs["message"]
    assert source.splitlines()[epochs["line"] - 1].strip() == "n_epochs = 20"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["check", "nowhere/HW3_x.ipynb"], "no such file"),
        (["check", "rubric.yaml"], "not a notebook or script"),
        (["grade", "nowhere", "--out", "out"], "no such directory"),
        (["check", "reference/HW3_template.ipynb", "--rubric", "nowhere.yaml"], "cannot read"),
        (["check", "reference/HW3_template.ipynb", "--timeout", "-3"], "--timeout must be a positive"),
        (["frobnicate"], "invalid choice"),
        (["grade", "submissions"], "--out"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args: list[str], expected: str, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(args) == ExitCode.USAGE
    assert expected in _one_line_error(capsys)


def test_broken_notebook_and_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "HW3_bob.ipynb"
    broken.write_text('{"cells": [')
    assert main(["check", str(broken)]) == ExitCode.USAGE
    assert "broken JSON" in _one_line_error(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    assert main(["grade", str(empty), "--out", str(tmp_path / "out")]) == ExitCode.USAGE
    assert "no submissions found; expected files named like HW3_ACCOUNT.ipynb" in _one_line_error(capsys)


def test_an_unmatched_name_is_still_checked_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "my homework.ipynb"
    shutil.copy(ROOT / "reference" / "HW3_template.ipynb", path)
    assert main(["check", str(path)]) == ExitCode.OK
    assert "note: the file name should be HW3_{account}.ipynb" in capsys.readouterr().out


def test_console_script_and_module_entry_points() -> None:
    for command in (["grader", "--help"], [sys.executable, "-m", "grader", "--help"]):
        executable = shutil.which(command[0]) or str(Path(sys.executable).parent / command[0])
        done = subprocess.run([executable, *command[1:]], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "check" in done.stdout and "grade" in done.stdout

