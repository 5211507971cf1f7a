"""The wheel a TA publishes works anywhere: templates, rubric and template travel inside it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"


def test_a_plain_wheel_install_checks_a_notebook_from_any_folder(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("grader-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "grader/_data/rubric.yaml" in names and "grader/_data/templates/check.txt.j2" in names
    assert "grader/_data/reference/HW3_template.ipynb" in names
    assert "grader/_data/homeworks/hw4-cnn/rubric.yaml" in names
    # students install this: no reference solution in it
    assert not [n for n in names if "solution" in n]

    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "colab"
    elsewhere.mkdir()
    (elsewhere / "HW3_ann.py").write_text((FIXTURES / "HW3_tinyok.py").read_text())
    (elsewhere / "HW4_ann.py").write_text((ROOT / "homeworks/hw4-cnn/template.py").read_text())
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("GRADER_RUBRIC", None)
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import grader, grader.model.resources as r; print(grader.__file__); "
            "print(r.shipped('templates'))",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.splitlines() == [
        str(site / "grader" / "__init__.py"),
        str(site / "grader" / "_data" / "templates"),
    ]

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        """`grader check ...` as a TA runs it there, with only the wheel on the path."""
        return subprocess.run(
            [sys.executable, "-m", "grader", "check", *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    hw3 = check("HW3_ann.py")
    assert hw3.returncode == 0, hw3.stderr
    assert "epochs" in hw3.stdout and "valid_size" in hw3.stdout and "linear_layers" in hw3.stdout
    # the shipped second homework, named as in a checkout
    hw4 = check("HW4_ann.py", "--rubric", "homeworks/hw4-cnn")
    assert hw4.returncode == 0, hw4.stderr
    assert "weight_layers" in hw4.stdout and "linear_layers" not in hw4.stdout
