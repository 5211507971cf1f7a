"""The class page and a student page in a real headless Chromium: they render (screenshots taken,
not blank), run no failing script, carry the plot inline with its text alternative, and show the
bands, the borderline list, the review list and the per-class matrix."""

from __future__ import annotations

import base64
import dataclasses
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from browser import leads_with_verdict

from grader.model.findings import HIDDEN_LABELS_NOTE
from grader.model.results import Check, Fit, Result, Status
from grader.model.rubric import Rubric
from grader.outputs.pages import write_batch_reports

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (make test installs it)"
)


def _class() -> list[Result]:
    rng = random.Random(3)
    results = []
    for i, accuracy in enumerate([55.72, 88.95, 89.10, 90.08, 84.20, 79.90, None]):
        confusion = (
            None
            if accuracy is None
            else tuple(
                tuple(900 if row == column else rng.randint(0, 30) for column in range(10))
                for row in range(10)
            )
        )
        results.append(
            Result(
                student=f"s{i}",
                source=f"HW3_s{i}.ipynb",
                status=Status.GRADED if accuracy else Status.ERROR,
                accuracy=accuracy,
                reported_accuracy=accuracy,
                score=0,
                max_score=60,
                bonus=0,
                checks=(
                    Check(
                        "epochs",
                        True,
                        "n_epochs = 10 and the training loop runs it",
                        f"HW3_s{i}.ipynb",
                        3,
                        2,
                    ),
                ),
                flags=("reported-accuracy-mismatch",) if i == 3 else (),
                duration_s=50.0,
                reason=None
                if accuracy
                else "cell 4 raised RuntimeError: <script>alert(1)</script>",
                confusion=confusion,
            )
        )
    steps = 7500
    curve = {
        "every": 13,
        "first_step": 1,
        "loss": [2.0 / (1 + k / 50) for k in range(577)],
        "lr": [0.001] * 577,
        "epochs": [750 * e for e in range(10)],
        "validation": [[750 * e, 80 + e] for e in range(1, 11)],
        "test": [[steps, 90.08]],
    }
    pixels = bytes(rng.randrange(256) for _ in range(3 * 784))
    fit = Fit(
        sample=20000,
        sample_accuracy=92.96,
        trained=15993,
        trained_accuracy=93.1,
        held_out=4007,
        held_out_accuracy=92.41,
    )
    results[3] = dataclasses.replace(
        results[3],
        curve=curve,
        wrong=((12, 6, 0, 0.99), (7, 2, 4, 0.9), (3, 9, 7, 0.5)),
        wrong_images=base64.b64encode(pixels).decode(),
        fit=fit,
    )
    return results


def _browse(page: Path, screenshot: Path) -> tuple[str, str]:
    """(the rendered DOM, what the browser logged), and a screenshot of the page."""
    common = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
    ]
    shown = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    subprocess.run(
        [*common, "--window-size=1200,2000", f"--screenshot={screenshot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return shown.stdout, shown.stderr


def test_the_class_and_student_pages_in_a_real_browser(tmp_path: Path, rubric: Rubric) -> None:
    write_batch_reports(
        tmp_path,
        _class(),
        rubric,
        [("notes.txt", "name matches no pattern"), ("HW3_\u202eyp.bob", "name matches no pattern")],
    )
    raw = (tmp_path / "index.html").read_text()
    assert "HW3_\ufffdyp.bob" in raw and "\u202e" not in raw  # a name never shows written backwards
    index, log = _browse(tmp_path / "index.html", tmp_path / "index.png")
    # the sorting script ran without an error
    assert "Uncaught" not in log and ":CONSOLE" not in log
    assert (
        '<figure role="img" aria-label="Histogram of the measured test accuracies' in index
        and "<svg" in index
    )
    assert "84% to 89%: 50 points" in index and "not measured" in index
    borderline = index[index.index("Borderline") : index.index("Review first")]
    assert 'href="students/s1.html"' in borderline and "-0.05 from 89.0%" in borderline
    assert 'href="students/s0.html"' not in borderline  # 55.72% is near no threshold
    review = index[index.index("Review first") : index.index("All submissions")]
    assert "s3" in review and "s6" in review and "&lt;script&gt;alert(1)&lt;/script&gt;" in review
    student, log = _browse(tmp_path / "students" / "s3.html", tmp_path / "s3.png")
    assert "Uncaught" not in log and "Per class" in student and "9 Ankle boot" in student
    # The curve's accuracy panel (validation scored by the grader, the test passes, the thresholds)
    # ...
    assert (
        "validation and test accuracy by step" in student
        and "10 evaluations, last 90.00%" in student
    )
    # ... and the surest mistakes: thumbnails embedded in the SVG (no file, no CDN), with their
    # classes.
    mistakes = student[student.index("Surest mistakes") : student.index("Per class")]
    assert (
        mistakes.count("data:image/png;base64,") == 3 and "#12" in mistakes and "Shirt" in mistakes
    )
    for screenshot in (tmp_path / "index.png", tmp_path / "s3.png"):
        data = screenshot.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 20_000  # a page, not a blank screen
    # The class page opens with the count per status, the mean and the median of the graded.
    summary = index[index.index('id="summary"') : index.index("</p>", index.index('id="summary"'))]
    assert (
        "6 graded, 1 error" in summary and "mean 81.33%" in summary and "median 86.58%" in summary
    )
    # s3 printed another accuracy than measured (a flag): its banner is not a success's, and the
    # flag with its meaning comes before the plots.
    assert 'class="banner mismatch"' in student and student.index(
        "What needs attention"
    ) < student.index("Training")
    assert "the printed test accuracy differs from the measured one" in student
    assert "no report PDF was found" in student and "still to grade" not in student
    assert "<td>no PDF</td>" in index  # the report's column, not the status `missing`
    # The trusted fit of the training images, beside the test accuracy.
    assert (
        "92.96% of 20000; 93.10% of the 15993 it trained on; 92.41% of the 4007 it held out"
        in student
    )
    # Printed 9.8% under hidden labels (every `grader grade`), not flagged by the judge: a success's
    # banner.
    hidden = dataclasses.replace(_class()[1], reported_accuracy=9.8, notes=(HIDDEN_LABELS_NOTE,))
    write_batch_reports(tmp_path / "hidden", [hidden], rubric, [])
    page = (tmp_path / "hidden" / "students" / "s1.html").read_text()
    assert (
        'class="banner graded"' in page
        and "test labels were hidden" in page
        and "as measured" not in page
    )
    assert "What needs attention" not in page  # the banner says it; nothing there to act on


@pytest.mark.slow
def test_pages_lead_with_what_needs_attention_on_a_phone_and_a_desktop(
    tmp_path: Path, rubric: Rubric
) -> None:
    """Every page of a class with a violation, a hostile error and a mismatch: at 1400 and 420 px
    wide
    the verdict is the first thing on the page, no script fails, and nothing is wider than the
    screen
    (tables scroll inside their box, plots scale); each student also gets a page to be sent back
    (OUT/feedback, and one zip), without the TA's notes or the links into OUT."""
    import zipfile

    from grader.scoring.overrides import Override

    results = _class()
    results[2] = dataclasses.replace(
        results[2],
        status=Status.VIOLATION,
        reason="rule broken: fc1 is 784->1024",
        flags=("sender-mismatch",),
        notes=("files from a@x.org and b@y.org",),
        checks=(
            Check(
                "linear_layers",
                False,
                "nn.Linear(784, 1024) differs",
                "HW3_s2.ipynb",
                3,
                10,
                excerpt=((10, "self.fc1 = nn.Linear(784, 1024)"),),
                instead="keep the three nn.Linear layers as they are",
            ),
        ),
    )
    write_batch_reports(
        tmp_path, results, rubric, [], {"s2": Override(note="talked to them <b>today</b>")}
    )
    for name in (
        "index.html",
        "students/s2.html",
        "students/s3.html",
        "students/s6.html",
        "feedback/s2.html",
    ):
        assert leads_with_verdict(tmp_path / name) == []
        for width in (1400, 420):
            shot = (tmp_path / name).with_name(f"{(tmp_path / name).stem}-{width}.png")
            assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
    ta, sent = (
        (tmp_path / "students" / "s2.html").read_text(),
        (tmp_path / "feedback" / "s2.html").read_text(),
    )
    # not "broken: rule broken: ..."
    assert "A rule of the homework was broken: fc1 is 784-&gt;1024" in ta
    assert "sender-mismatch" in ta and "a@x.org" in ta and "today" in ta and "all students" in ta
    assert (
        "sender-mismatch" not in sent
        and "a@x.org" not in sent
        and "today" not in sent
        and "../" not in sent
    )
    assert "self.fc1 = nn.Linear(784, 1024)" in sent and "What may be changed instead" in sent
    with zipfile.ZipFile(tmp_path / "feedback.zip") as archive:
        assert sorted(archive.namelist()) == [f"s{i}.html" for i in range(7)]


def test_a_broken_rule_shows_its_lines_and_the_page_names_the_environment(
    tmp_path: Path, rubric: Rubric, tiny_context: object
) -> None:
    import dataclasses

    from grader.pipeline.batch import grade_directory
    from grader.pipeline.executors.local import LocalExecutor
    from grader.run.slots import plan_slots

    folder = tmp_path / "class"
    folder.mkdir()
    code = (Path(__file__).parent / "fixtures" / "HW3_tinyok.py").read_text()
    (folder / "HW3_bo.py").write_text(code.replace("n_epochs = 10", "n_epochs = 12  # <b>more</b>"))
    out = tmp_path / "out"
    static = dataclasses.replace(tiny_context, dataset=None)  # type: ignore[type-var]
    grade_directory(folder, out, static, LocalExecutor(plan_slots(1, 2, (), 1, 1)))
    page = (out / "students" / "bo.html").read_text()
    line = next(n for n, text in enumerate(code.splitlines(), 1) if "n_epochs = 10" in text)
    assert f'<span class="hit">{line:4d}  n_epochs = 12  # &lt;b&gt;more&lt;/b&gt;</span>' in page
    assert "not run (static checks only)" in page and 'href="../results/bo.json"' in page
    assert "<b>0 of 105 points</b>" in page
    # The page leads with the verdict, then the broken rule with its line and what may be changed
    # instead.
    assert (
        page.index('id="verdict"') < page.index('id="attention"') < page.index("<h2>Details</h2>")
    )
    attention = page[page.index('id="attention"') : page.index("<h2>Details</h2>")]
    assert (
        "Rule broken: epochs" in attention
        and "n_epochs = 12" in attention
        and ("What may be changed instead") in attention
    )


def test_numbers_no_plot_can_draw_cost_only_that_plot(tmp_path: Path, rubric: Rubric) -> None:
    """The curve comes from a record the student's process wrote: a forged step of 10**400 is
    dropped
    where it is read, and a curve that still cannot be drawn leaves the page without it, never the
    class without its pages."""
    from grader.judge.run_facts import test_points
    from grader.model.probe_facts import parse

    record = {
        "test_passes": [
            {
                "predictor": [1, 2],
                "covered": 2,
                "complete": True,
                "start_step": 0,
                "end_step": 10**400,
                "predictions": base64.b64encode(bytes([1, 2])).decode(),
            }
        ]
    }
    assert test_points(parse(record), (1, 2)) == []
    broken = dataclasses.replace(
        _class()[3],
        curve={
            "every": 1,
            "first_step": 10**400,
            "loss": [1.0],
            "lr": [0.1],
            "epochs": [0],
            "validation": [],
            "test": [],
        },
    )
    write_batch_reports(tmp_path, [broken, _class()[0]], rubric, [])
    page = (tmp_path / "students" / "s3.html").read_text()
    assert "Per class" in page and "Training, as the grader saw it" not in page
    assert (tmp_path / "students" / "s0.html").is_file()


def test_the_bands_count_graded_results_only(rubric: Rubric) -> None:
    """A violation at 90.47% is not one of the class's 60-point results; it is counted apart."""
    from grader.outputs.class_summary import bands, measured
    from grader.scoring.overrides import Grade, Override

    def result(name: str, status: Status, accuracy: float | None) -> Grade:
        return Grade(
            Result(
                student=name,
                source=f"HW3_{name}.ipynb",
                status=status,
                accuracy=accuracy,
                reported_accuracy=None,
                score=60 if status is Status.GRADED else 0,
                max_score=60,
                bonus=0,
                checks=(),
                flags=(),
                duration_s=1.0,
            ),
            Override(),
        )

    rows = [
        result("a", Status.GRADED, 89.5),
        result("b", Status.VIOLATION, 90.47),
        result("c", Status.REVIEW, 91.0),
        result("d", Status.ERROR, None),
        result("e", Status.GRADED, 70.0),
    ]
    counts = {c.label: c.count for c in bands(rows, rubric)}
    assert counts["89% and above: 60 points"] == 1 and counts["below 80%"] == 1
    assert (
        counts["violations"],
        counts["to review"],
        counts["failed runs (error, time limit)"],
    ) == (1, 1, 1)
    assert measured(rows) == [89.5, 70.0]


def test_the_executed_notebook_is_a_page_where_nothing_runs_or_loads(
    tmp_path: Path, rubric: Rubric
) -> None:
    """OUT/executed/<account>.html: the cells, their text and images, offline; the student's
    scripts,
    event handlers, frames and javascript: links (in markdown, in HTML and SVG outputs, in printed
    text) are gone or shown as text, and the browser logs no script at all."""
    import nbformat

    from grader.outputs.pages import notebook_page
    from grader.run.children import notebook_body

    # 1x1
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="  # noqa: E501
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell(
            "# My HW3 <script>console.log('md-script')</script>\n"
            "[click](javascript:console.log('md-link')) <img src=x "
            "onerror=\"console.log('md-img')\">"
        ),
        nbformat.v4.new_code_cell(
            "print('hello')",
            outputs=[
                nbformat.v4.new_output(
                    "stream",
                    name="stdout",
                    text="Test accuracy: 88.1%\n<script>console.log('stream')</script>\n",
                ),
                nbformat.v4.new_output(
                    "display_data",
                    data={
                        "text/html": "<b>bold</b><script>console.log('html')</script><iframe "
                        "src='http://example.invalid/'></iframe>"
                        "<img src='http://example.invalid/x.png'><a "
                        "href='javascript:console.log(1)'>a</a>",
                        "image/svg+xml": "<svg xmlns='http://www.w3.org/2000/svg' "
                        "onload=\"console.log('svg')\"><script>console.log('svg2')</script></svg>",
                        "text/plain": "<Figure>",
                    },
                ),
                nbformat.v4.new_output(
                    "display_data", data={"image/png": png, "text/plain": "<Figure>"}
                ),
                nbformat.v4.new_output(
                    "error",
                    ename="RuntimeError",
                    evalue="<script>console.log('error')</script>",
                    traceback=["\x1b[31mRuntimeError\x1b[0m: <script>console.log('tb')</script>"],
                ),
            ],
        ),
    ]
    executed = tmp_path / "executed" / "s3.ipynb"
    executed.parent.mkdir()
    executed.write_text(nbformat.writes(notebook))
    page = executed.with_suffix(".html")
    page.write_text(notebook_page(rubric.homework, "s3", notebook_body(executed)))
    raw = page.read_text()
    cells = raw[raw.index('<div class="notebook">') :]
    assert (
        "<script" not in cells.lower()
        and "onerror" not in cells.lower()
        and "onload" not in cells.lower()
    )
    assert (
        "javascript:" not in cells.lower()
        and "<iframe" not in cells.lower()
        and "example.invalid" not in cells
    )
    assert (
        "Test accuracy: 88.1%" in cells
        and "print" in cells
        and "data:image/png;base64," in cells
        and "bold" in cells
    )
    shown, log = _browse(page, tmp_path / "notebook.png")
    assert "CONSOLE" not in log and "Uncaught" not in log, log[-2000:]
    assert "RuntimeError" in shown and "My HW3" in shown
    write_batch_reports(tmp_path, _class(), rubric, [])
    student = (tmp_path / "students" / "s3.html").read_text()
    assert 'href="../executed/s3.html"' in student and 'href="../executed/s3.ipynb"' in student
    assert 'href="../executed/s2.html"' not in (tmp_path / "students" / "s2.html").read_text()


def test_an_override_is_the_outcome_the_banner_and_the_class_summary_show(
    tmp_path: Path, rubric: Rubric
) -> None:
    """A violation and a review the TA settled by hand: the student's banner leads with the staff's
    decision (the automatic outcome beside it, the note only on the TA's page), and the class page
    counts them as decided."""
    from grader.scoring.overrides import Override

    results = _class()
    broken = Check("linear_layers", False, "nn.Linear(784, 1024) differs", "HW3_s2.ipynb", 3, 10)
    results[2] = dataclasses.replace(
        results[2],
        status=Status.VIOLATION,
        checks=(broken,),
        reason="rule broken: fc1 is 784->1024",
    )
    results[4] = dataclasses.replace(
        results[4],
        status=Status.REVIEW,
        pending_score=50,
        reason="to review: 12 rows are not test images",
    )
    overrides = {
        "s2": Override(points=40, note="fc1 was the handout's bug"),
        "s4": Override(points=50),
    }
    write_batch_reports(tmp_path, results, rubric, [], overrides)
    for name in ("students/s2.html", "feedback/s2.html", "index.html"):
        assert leads_with_verdict(tmp_path / name) == []
    ta = (tmp_path / "students" / "s2.html").read_text()
    sent = (tmp_path / "feedback" / "s2.html").read_text()
    for page in (ta, sent):
        banner = page[page.index('id="verdict"') : page.index("</p>", page.index('id="verdict"'))]
        assert 'class="banner graded"' in page
        assert "Decided by the course staff: 40/60 points" in banner
        assert (
            "(replacing the automatic outcome: A rule of the homework was broken: "
            "fc1 is 784-&gt;1024)"
        ) in banner
        assert "40 of 105 points" in banner
    assert "fc1 was the handout&#39;s bug" in ta and "fc1 was the handout" not in sent
    review = (tmp_path / "students" / "s4.html").read_text()
    assert (
        'id="verdict"><b>Decided by the course staff: 50/60 points</b> (replacing the '
        "automatic outcome: To be decided by a TA"
    ) in review
    index = (tmp_path / "index.html").read_text()
    summary = index[index.index('id="summary"') : index.index("</p>", index.index('id="summary"'))]
    assert "2 decided by the TA (overrides.yaml)" in summary
    listed = index[index.index("Review first") : index.index("All submissions")]
    assert "(decided by the TA: 40/60 points)" in listed
    assert "(decided by the TA: 50/60 points)" in listed
    assert listed.index("s6") < listed.index("s2")  # what still needs a look comes first
    table = index[index.index("All submissions") :]
    status = '<td class="violation">violation <span class="muted">(decided by the TA)</span></td>'
    assert status in table
