"""OUT/plots: a plot is kept under the numbers it draws, so identical plots are drawn once;
`grader grade` draws a student's plots when their result lands (the pages at the end only read
them); `grader report` draws only the missing ones and removes the files no page shows; the surest
mistakes are the official pixels, exactly."""

from __future__ import annotations

import base64
import dataclasses
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from markupsafe import Markup

from grader.model.context import Context
from grader.model.results import Check, Result, Status
from grader.model.rubric import FrozenFacts, Rubric
from grader.outputs import plot_store
from grader.outputs.pages import write_batch_reports
from grader.outputs.plots import wrong_strip
from grader.pipeline.executors.local import Graded, Job, Listener

CURVE = {
    "every": 13,
    "first_step": 1,
    "loss": [2.0 / (1 + k / 50) for k in range(77)],
    "lr": [0.001] * 77,
    "epochs": [100 * e for e in range(10)],
    "validation": [[100 * e, 80 + e] for e in range(1, 11)],
    "test": [[1000, 88.0]],
}
PIXELS = bytes(range(256)) * 6 + bytes(32)  # two test images


def _result(account: str, accuracy: float = 88.0, pixels: bytes = PIXELS) -> Result:
    return Result(
        student=account,
        source=f"HW3_{account}.ipynb",
        status=Status.GRADED,
        accuracy=accuracy,
        reported_accuracy=accuracy,
        score=50,
        max_score=60,
        bonus=0,
        duration_s=1.0,
        curve=CURVE,
        flags=(),
        checks=(Check("epochs", True, "kept", f"HW3_{account}.ipynb"),),
        wrong=((12, 6, 0, 0.99), (7, 2, 4, 0.5)),
        wrong_images=base64.b64encode(pixels).decode(),
    )


def _counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many times each kind of plot is drawn from now on."""
    counts = {"curve": 0, "wrong": 0}
    for kind, name in (("curve", "training_curve"), ("wrong", "wrong_strip")):

        def counted(
            *args: object, kind: str = kind, draw: object = getattr(plot_store, name)
        ) -> Markup:
            counts[kind] += 1
            return draw(*args)  # type: ignore[operator, no-any-return]

        monkeypatch.setattr(plot_store, name, counted)
    return counts


def test_identical_plots_are_drawn_once_and_a_render_again_draws_none(
    tmp_path: Path, rubric: Rubric, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = _counting(monkeypatch)
    same = [_result("amy"), _result("bob")]  # the same numbers: the same curve and mistakes
    write_batch_reports(tmp_path, [*same, _result("cat", 89.5)], rubric, [])
    assert counts == {"curve": 2, "wrong": 1}
    kept = sorted(p.name.split("-")[0] for p in (tmp_path / "plots").iterdir())
    assert kept == ["curve", "curve", "histogram", "wrong"]
    pages = {a: (tmp_path / "students" / f"{a}.html").read_text() for a in ("amy", "bob", "cat")}
    assert "graded 88.00%" in pages["amy"] and "graded 89.50%" in pages["cat"]  # each its own
    assert all(p.count("data:image/png;base64,") == 2 for p in pages.values())
    write_batch_reports(tmp_path, [*same, _result("cat", 89.5)], rubric, [])
    assert counts == {"curve": 2, "wrong": 1}  # all read from OUT/plots


def test_plots_no_page_shows_are_removed(tmp_path: Path, rubric: Rubric) -> None:
    write_batch_reports(tmp_path, [_result("amy"), _result("bob", 89.5)], rubric, [])
    earlier = tmp_path / "plots" / "amy-curve-0123456789abcdef0123.svg"  # the layout of version 2
    earlier.write_text("<svg/>")
    write_batch_reports(tmp_path, [_result("amy")], rubric, [])
    kept = sorted(p.name.split("-")[0] for p in (tmp_path / "plots").iterdir())
    assert kept == ["curve", "histogram", "wrong"]
    assert "graded 88.00%" in (tmp_path / "students" / "amy.html").read_text()


def test_only_missing_plots_are_drawn_and_one_that_cannot_be_is_left_to_its_page(
    tmp_path: Path, rubric: Rubric, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = dataclasses.replace(_result("amy"), curve={**CURVE, "first_step": 10**400})
    plots = [p for r in (broken, _result("bob")) for p in plot_store.student_plots(r, rubric)]
    assert plot_store.draw_missing(tmp_path, plots) == 3  # amy's mistakes are bob's
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {p.file for p in plots[1:]}

    def crash(*args: object) -> None:
        raise RuntimeError("a bug of the grader's")

    monkeypatch.setattr(plot_store, "training_curve", crash)
    assert plot_store.draw_missing(tmp_path, plots) == 1  # the broken curve, tried again: no raise
    unrendered = write_batch_reports(tmp_path, [broken, _result("bob")], rubric, [])
    assert len(unrendered) == 1 and "amy's page" in unrendered[0]  # said by the page, again
    assert "a bug of the grader's" in unrendered[0]
    assert "graded 88.00%" in (tmp_path / "students" / "bob.html").read_text()  # read, not drawn


def test_the_surest_mistakes_are_the_official_pixels_with_their_titles() -> None:
    pixels = bytes((7 * i) % 256 for i in range(3 * 784))
    wrong = [(12, 6, 0, 0.99), (7, 2, 4, 0.9), (3, 9, 99, 0.5)]
    svg = str(wrong_strip(wrong, pixels, ["<T>"] * 9 + ["Ankle boot"]))
    titles = re.findall(r"<text [^>]*>([^<]*)</text>", svg)
    assert titles == [
        "#12",
        "&lt;T&gt;",
        "→ &lt;T&gt; 99%",
        "#7",
        "&lt;T&gt;",
        "→ &lt;T&gt; 90%",
        "#3",
        "Ankle boot",
        "→ 99 50%",
    ]
    images = re.findall(r'base64,([A-Za-z0-9+/=]+)"', svg)
    assert len(images) == 3 and 'viewBox="0 0 237.6 136.8"' in svg
    for k, png in enumerate(images):
        data = base64.b64decode(png)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert data[16:26] == bytes([0, 0, 0, 28, 0, 0, 0, 28, 8, 0])  # 28 by 28, 8-bit gray
        start = data.index(b"IDAT") + 4
        size = int.from_bytes(data[start - 8 : start - 4], "big")
        rows = zlib.decompress(data[start : start + size])
        shown = b"".join(
            rows[r * 29 + 1 : (r + 1) * 29] for r in range(28)
        )  # after each filter byte
        assert shown == bytes(255 - v for v in pixels[k * 784 : (k + 1) * 784])  # gray_r: 0 white


def test_rgb_mistakes_are_drawn_in_colour_from_a_results_shape(rubric: Rubric) -> None:
    """Images of three channels (stored channel by channel) become RGB thumbnails, each pixel its
    red, green and blue; a result says its images' shape, kept through its JSON."""
    pixels = bytes((5 * i + i // 1024) % 256 for i in range(2 * 3 * 32 * 32))
    wrong = ((4, 1, 3, 0.8), (9, 0, 2, 0.7))
    svg = str(wrong_strip(wrong, pixels, ["a", "b", "c", "d", "e"], (3, 32, 32)))
    images = re.findall(r'base64,([A-Za-z0-9+/=]+)"', svg)
    assert len(images) == 2
    for k, png in enumerate(images):
        data = base64.b64decode(png)
        assert data[16:26] == bytes([0, 0, 0, 32, 0, 0, 0, 32, 8, 2])  # 32 by 32, 8-bit RGB
        start = data.index(b"IDAT") + 4
        size = int.from_bytes(data[start - 8 : start - 4], "big")
        rows = zlib.decompress(data[start : start + size])
        shown = b"".join(rows[r * 97 + 1 : (r + 1) * 97] for r in range(32))
        image = pixels[k * 3072 : (k + 1) * 3072]
        assert shown == bytes(image[c * 1024 + p] for p in range(1024) for c in range(3))
    result = dataclasses.replace(
        _result("amy"), wrong=wrong, wrong_images=base64.b64encode(pixels).decode()
    )
    coloured = Result.from_json(dataclasses.replace(result, wrong_shape=(3, 32, 32)).to_json())
    assert coloured.wrong_shape == (3, 32, 32) and result.wrong_shape == (1, 28, 28)
    drawn = plot_store.student_plots(coloured, rubric)[1].draw()
    assert drawn is not None and str(drawn).count("data:image/png;base64,") == 2
    assert plot_store.student_plots(result, rubric)[1].draw() is None  # 784 bytes each: not these


class _Landing:
    """An executor that runs nothing: each job's result lands at once, and what OUT/plots then
    holds is kept, before the pages are written."""

    def __init__(self, out: Path, rubric: Rubric) -> None:
        self.out, self.rubric = out, rubric
        self.present: dict[str, bool] = {}

    device_kind = "cpu"
    width = 1

    def run(self, jobs: Sequence[Job], context: Context, listener: Listener) -> None:
        for job in jobs:
            account = job.submission.account
            result = dataclasses.replace(
                _result(account, 80.0 + len(self.present)), cache_key=job.key
            )
            listener.started(account)
            listener.finished(Graded(job, result, None))
            self.present[account] = all(
                (self.out / "plots" / p.file).is_file()
                for p in plot_store.student_plots(result, self.rubric)
            )


def test_grade_draws_a_students_plots_when_their_result_lands(
    tmp_path: Path, rubric: Rubric, facts: FrozenFacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grader.pipeline.batch import grade_directory

    folder, out = tmp_path / "class", tmp_path / "out"
    folder.mkdir()
    code = (Path(__file__).parent / "fixtures" / "HW3_tinyok.py").read_text()
    for account in ("amy", "bob"):
        (folder / f"HW3_{account}.py").write_text(code)
    landing = _Landing(out, rubric)
    grade_directory(folder, out, Context(rubric, facts, None), landing)
    assert landing.present == {"amy": True, "bob": True}
    counts = _counting(monkeypatch)
    grade_directory(folder, out, Context(rubric, facts, None), landing)  # reused; pages again
    assert counts == {"curve": 0, "wrong": 0}
    assert "graded 80.00%" in (out / "students" / "amy.html").read_text()
