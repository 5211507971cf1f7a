"""Real end-to-end runs on the real FashionMNIST, through the installed `grader` command
(minutes)."""

from __future__ import annotations

import base64
import csv
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from browser import CHROMIUM, leads_with_verdict, seen_at

ROOT = Path(__file__).resolve().parent.parent
GRADER = shutil.which("grader") or str(Path(sys.executable).parent / "grader")

pytestmark = pytest.mark.slow


def _grader(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRADER, *args], cwd=ROOT, capture_output=True, text=True, timeout=1800)


def test_grading_the_shipped_submissions_and_hand_built_test_sets(tmp_path: Path) -> None:
    """One real class, two jobs at a time: two shipped submissions (the template as handed out, and
    the
    reference solution with its .py twin and report), and two legal notebooks that once scored
    10.01%
    (0/60): a TensorDataset normalized by hand, and the whole test set in one forward call, which
    must
    be measured as they count. (The shipped violation and the notebook that prints 95% are judged on
    the tiny data in test_batch and test_execute: the same mechanisms, without two more real
    trainings.)"""
    batch = tmp_path / "class"
    batch.mkdir()
    for name in (
        "HW3_baseline01.ipynb",
        "HW3_M112rhyang.ipynb",
        "HW3_M112rhyang.py",
        "HW3_Report_M112rhyang.pdf",
    ):
        shutil.copy2(ROOT / "submissions" / name, batch / name)
    patterns = ROOT / "tests" / "fixtures" / "patterns"
    shutil.copy(patterns / "HW3_tensordataset.py", batch / "HW3_tds.py")
    shutil.copy(patterns / "HW3_one_call_eval.py", batch / "HW3_onecall.py")
    out = tmp_path / "out"
    done = _grader("grade", str(batch), "--out", str(out), "--jobs", "2")
    assert done.returncode == 0, done.stderr
    results = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    assert set(results) == {"baseline01", "M112rhyang", "tds", "onecall"}

    baseline = results["baseline01"]  # the template as handed out
    assert (
        baseline["status"] == "graded"
        and 50 <= baseline["accuracy"] <= 61
        and baseline["score"] == 0
    )

    solution = results["M112rhyang"]  # the reference solution with its .py twin and report
    assert solution["status"] == "graded" and solution["measured_by"] == "student-test-pass"
    assert (
        solution["accuracy"] >= 89
        and solution["score"] == 60
        and solution["bonus"] == (5 if solution["accuracy"] >= 90 else 0)
    )
    # `grader grade` hides the test labels: what the notebook printed is at chance, and not compared
    assert solution["recomputed"] and solution["reported_accuracy"] < 20 and solution["flags"] == []
    assert solution["report_pdf"] == "HW3_Report_M112rhyang.pdf"
    # its report's "Best accuracy", read in the batch
    assert solution["report_accuracy"] is not None
    # What only the grader records: a validation pass after each of the 10 epochs, scored against
    # the official training labels, the final test pass, and the ten surest mistakes with their
    # pixels.
    curve = solution["curve"]
    assert len(curve["validation"]) == 10 and all(
        80 < accuracy < 95 for _, accuracy in curve["validation"]
    )
    assert curve["test"][-1][1] == solution["accuracy"]
    assert len(solution["wrong"]) == 10 and all(p != y for _, y, p, _ in solution["wrong"])
    assert len(base64.b64decode(solution["wrong_images"])) == 10 * 784

    for account in ("tds", "onecall"):
        result = results[account]
        assert result["status"] == "graded" and result["measured_by"] == "student-test-pass", result
        assert (
            result["accuracy"] > 80 and result["recomputed"] and result["reported_accuracy"] < 20
        ), result

    rows = {r["account"]: r for r in csv.DictReader((out / "gradebook.csv").open())}
    assert set(rows) == set(results) and rows["M112rhyang"]["automatic_score"] == "60"
    assert (out / "index.html").is_file() and len(list((out / "students").glob("*.html"))) == 4
    # The pages a TA opens first, in a real browser: the class histogram, and the solution's curve
    # and matrix.
    index, page = (
        (out / "index.html").read_text(),
        (out / "students" / "M112rhyang.html").read_text(),
    )
    assert "Histogram of the measured test accuracies" in index and "<svg" in index
    assert (
        "Training, as the grader saw it" in page and "Per class" in page and "9 Ankle boot" in page
    )
    assert "validation accuracy (scored by the grader)" in page and "Surest mistakes" in page
    # every page leads with its verdict at 1400 and 420 px, no script fails
    if CHROMIUM is not None:
        pages = (out / "index.html", *sorted((out / "students").glob("*.html")))
        assert [problem for page in pages for problem in leads_with_verdict(page)] == []
        for shot in (out / "index-1400.png", out / "students" / "M112rhyang-420.png"):
            assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
        # the executed notebook, offline (it draws no plot)
        notebook = out / "executed" / "M112rhyang.html"
        text = html.unescape(re.sub(r"<[^>]+>", "", notebook.read_text()))  # what the reader sees
        assert (
            seen_at(notebook, 1400).quiet
            and "class Net(nn.Module):" in text
            and ("Accuracy (Overall): ") in text
        )
    assert len(list((out / "executed").glob("*.ipynb"))) == 4
