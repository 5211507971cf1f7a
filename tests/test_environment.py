"""`grader env`: the modules a class needs, which are missing, and what the rubric lets the TA
install."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.cli import ExitCode, main
from grader.intake.read import read_submission
from grader.static import environment

NOTEBOOK = """
!pip install seaborn==0.13.2 einops
%pip install -q torch_optimizer
import os, json
import numpy as np
from sklearn.metrics import confusion_matrix
import cv2
from google.colab import drive
from . import local_thing
"""


def test_scan_finds_imports_and_pip_lines(tmp_path: Path) -> None:
    for account in ("ann", "bob"):
        (tmp_path / f"HW3_{account}.py").write_text(NOTEBOOK)
    subs = tuple(read_submission(tmp_path / f"HW3_{a}.py", a) for a in ("ann", "bob"))
    needs = {n.module: n for n in environment.scan(subs)}
    # no stdlib, Colab, relative
    assert set(needs) == {"numpy", "sklearn", "cv2", "seaborn", "einops", "torch_optimizer"}
    assert (
        needs["sklearn"].package == "scikit-learn"
        and needs["cv2"].package == "opencv-python-headless"
    )
    assert needs["torch_optimizer"].package == "torch-optimizer" and needs["numpy"].installed
    assert needs["einops"].students == ("ann", "bob")


def test_env_command_lists_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "HW3_ann.py").write_text("import numpy\nimport surely_absent_module_xyz\n")
    assert main(["env", str(tmp_path)]) == ExitCode.FAILED
    out = capsys.readouterr().out
    assert "surely_absent_module_xyz" in out and "MISSING" in out
    assert (
        "not in the rubric's environment.allowed_packages" in out
        and "surely-absent-module-xyz" in out
    )
