"""The batch's warm notebook renderer (run/renderer.py, render_notebook.py ``--serve``): the same
page, byte for byte, as a fresh renderer; each notebook rendered in a fork of its own that only it
reads, so a render that crashes, hangs or ends the server costs only its own page (rendered once
instead when the server failed), and the next notebook's page is as ever."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import nbformat
import pytest

from grader.model.context import Context
from grader.model.results import failed_result
from grader.model.rubric import FrozenFacts, Rubric
from grader.pipeline.executors.local import Graded, Job, Listener
from grader.run import renderer
from grader.run.children import notebook_body
from grader.run.render_notebook import MEMORY
from grader.run.renderer import RENDER_SCRIPT, WarmRenderer, once, warm_renderer

FIXTURES = Path(__file__).parent / "fixtures"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="  # noqa: E501
SVG = "<svg xmlns='http://www.w3.org/2000/svg' onload=\"alert(1)\"><circle r='2'/></svg>"
# A server whose children do what a render gone wrong could (the notebook names the fault): for
# tests only, started by its own program; no notebook reaches it in the grader.
FAULTY = f"""
import importlib.util, os, signal, socket, sys, time
spec = importlib.util.spec_from_file_location("render_notebook", {str(RENDER_SCRIPT)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
real = module.render

def faulty(raw, html):
    if b"HANG-THE-RENDERER" in raw:  # as a loop in nbconvert would, without the CPU
        time.sleep(3600)
    if b"ABORT-THE-RENDERER" in raw:
        os.abort()
    if b"KILL-THE-SERVER" in raw:
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(60)
    if b"STOP-THE-SERVER" in raw:
        os.kill(os.getppid(), signal.SIGSTOP)
    if b"SAY-THE-LIMIT" in raw:
        import resource
        raise RuntimeError(f"limit {{resource.getrlimit(resource.RLIMIT_AS)}}")
    return real(raw, html)

module.render = faulty
module.serve(socket.socket(fileno=int(sys.argv[2])), float(sys.argv[3]))
"""


def _executed(source: Path, note: str = "") -> bytes:
    """A fixture notebook as if executed: markdown with a script and a link, printed text, an SVG
    figure alone, an image, HTML with a frame, and an error with colours."""
    notebook = nbformat.read(source, as_version=4)
    notebook.cells.insert(
        0,
        nbformat.v4.new_markdown_cell(
            f"# HW3 {note}<script>alert('md')</script>\n[a](javascript:alert(1)) <b>kept</b>"
        ),
    )
    outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="Test accuracy: 88.1%\n<script>\n"),
        nbformat.v4.new_output("display_data", data={"image/svg+xml": SVG, "text/plain": "<F>"}),
        nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<F>"}),
        nbformat.v4.new_output(
            "display_data", data={"text/html": "<i>i</i><iframe src='http://x.invalid/'></iframe>"}
        ),
        nbformat.v4.new_output(
            "error", ename="E", evalue="<b>e</b>", traceback=["\x1b[31mE\x1b[0m: <b>e</b>"]
        ),
    ]
    code = next(c for c in notebook.cells if c.cell_type == "code")
    code.outputs, code.execution_count = outputs, 1
    return nbformat.writes(notebook).encode()


NOTEBOOKS = [
    FIXTURES / "HW3_quickeval.ipynb",
    FIXTURES / "rules" / "HW3_adam_steplr.ipynb",
    FIXTURES / "patterns" / "HW3_crash_in_training.ipynb",
]


def test_warm_pages_are_byte_identical_to_fresh_ones(tmp_path: Path) -> None:
    """Through notebook_body, in a batch and outside it: the same bytes, for notebooks as they
    come and with every kind of output (an SVG alone among them), and the same one-line error."""
    paths: list[Path] = []
    for k, source in enumerate(NOTEBOOKS):
        for data in (source.read_bytes(), _executed(source, str(k))):
            paths.append(tmp_path / f"s{len(paths)}.ipynb")
            paths[-1].write_bytes(data)
    broken = tmp_path / "broken.ipynb"
    broken.write_bytes(b'{"cells": "not a list"')
    fresh = [notebook_body(path) for path in paths]
    with pytest.raises(ValueError) as alone:
        notebook_body(broken)
    with warm_renderer() as warm:
        with pytest.raises(ValueError) as warmed:
            notebook_body(broken)
        assert [notebook_body(path) for path in paths] == fresh
        assert warm.started == 1 and warm.server is not None
    assert str(warmed.value) == str(alone.value) and "\n" not in str(alone.value)
    assert "could not be rendered as a page" in str(alone.value)
    page = fresh[1]
    assert "data:image/svg+xml;base64," in page and f"data:image/png;base64,{PNG}" in page
    assert "Test accuracy: 88.1%" in page and "kept</p>" in page
    assert "<script" not in page and "<iframe" not in page and "javascript:" not in page


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def test_a_render_that_crashes_or_hangs_costs_only_its_own_page(tmp_path: Path) -> None:
    """The one-line errors a fresh renderer gives, under its limits; the server lives on, nothing
    of the hung child is left, and the next notebook's page is the same as ever."""
    good = _executed(NOTEBOOKS[0])
    expected = once(good)
    with warm_renderer(program=("-c", FAULTY), seconds=5) as warm:
        assert warm.render(good) == expected
        assert warm.server is not None
        server = warm.server.process.pid
        pages = {}
        for fault in ("HANG-THE-RENDERER", "ABORT-THE-RENDERER", "SAY-THE-LIMIT"):
            path = tmp_path / f"{fault}.ipynb"
            path.write_bytes(_executed(NOTEBOOKS[0], fault))
            with pytest.raises(ValueError) as failed:
                notebook_body(path)
            pages[fault] = str(failed.value)
            assert warm.render(good) == expected
        assert warm.started == 1 and warm.server is not None
        assert warm.server.process.pid == server and _children(server) == []
    assert pages == {
        "HANG-THE-RENDERER": "HANG-THE-RENDERER.ipynb took over 120 s to render as a page",
        "ABORT-THE-RENDERER": "ABORT-THE-RENDERER.ipynb could not be rendered as a page (-6)",
        # each child under the one-shot renderer's memory limit
        "SAY-THE-LIMIT": "SAY-THE-LIMIT.ipynb could not be rendered as a page (RuntimeError: "
        f"limit ({MEMORY}, {MEMORY}))",
    }


def test_a_server_that_dies_or_stops_answering_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """That notebook is rendered once instead (its page as ever), the next one by a fresh server;
    after ``MAX_SERVERS`` servers, every notebook once."""
    monkeypatch.setattr(renderer, "ANSWER_S", 1)
    good = _executed(NOTEBOOKS[0])
    expected = once(good)
    calls: list[bytes] = []

    def counted(data: bytes) -> renderer.Rendered:
        calls.append(data)
        return once(data)

    monkeypatch.setattr(renderer, "once", counted)
    with warm_renderer(program=("-c", FAULTY), seconds=5) as warm:
        assert warm.render(good) == expected and calls == []
        servers = []
        for fault in ("STOP-THE-SERVER", "KILL-THE-SERVER", "KILL-THE-SERVER"):
            assert warm.server is not None
            servers.append(warm.server.process)
            bad = _executed(NOTEBOOKS[0], fault)
            assert warm.render(bad).code == 0  # rendered once instead
            assert calls[-1] == bad and warm.server is None
            if len(servers) < renderer.MAX_SERVERS:
                assert warm.render(good) == expected and len(calls) == len(servers)
        assert [s.poll() for s in servers] == [-9, -9, -9]
        assert warm.started == renderer.MAX_SERVERS
        assert warm.render(good) == expected and calls[-1] == good and warm.server is None


def _rchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def test_the_server_reads_no_byte_of_a_notebook() -> None:
    """Its child reads the notebook (8 MB here); the server, its own few bytes of control. A child
    ends with its server."""
    warm = WarmRenderer(program=("-c", FAULTY), seconds=8)
    try:
        assert warm.render(_executed(NOTEBOOKS[0])).code == 0  # started and warm
        assert warm.server is not None
        server = warm.server.process.pid
        before = _rchar(server)
        big = _executed(NOTEBOOKS[0], "HANG-THE-RENDERER" + "x" * 8_000_000)
        sent = warm.server.render  # the child hangs after reading it all: look meanwhile
        answer: list[renderer.Rendered | None] = []
        thread = threading.Thread(target=lambda: answer.append(sent(big)))
        thread.start()
        deadline = time.monotonic() + 7
        child = None
        while time.monotonic() < deadline:
            found = _children(server)
            if found and _rchar(found[0]) >= len(big):
                child = found[0]
                break
            time.sleep(0.05)
        assert child is not None, "the child never read the notebook"
        assert _rchar(server) - before < 64 * 1024
        os.kill(server, signal.SIGKILL)  # and the child ends with it
        thread.join()
        assert answer == [None] and warm.server is not None
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{child}").exists()
    finally:
        warm.close()


class _Landing:
    """An executor that runs nothing: each job lands at once with its executed notebook."""

    device_kind = "cpu"
    width = 1

    def __init__(self, executed: dict[str, bytes]) -> None:
        self.executed = executed

    def run(self, jobs: Sequence[Job], context: Context, listener: Listener) -> None:
        for job in jobs:
            sub = job.submission
            result = failed_result(sub.account, sub.path, "not run here", 60)
            listener.finished(Graded(job, result, self.executed[sub.account]))


def test_a_batch_renders_its_pages_on_the_warm_renderer(
    tmp_path: Path, rubric: Rubric, facts: FrozenFacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grader.pipeline.batch import grade_directory

    folder, out = tmp_path / "class", tmp_path / "out"
    folder.mkdir()
    executed = {account: _executed(NOTEBOOKS[0], account) for account in ("amy", "bob")}
    for account in executed:
        (folder / f"HW3_{account}.ipynb").write_bytes(NOTEBOOKS[0].read_bytes())
    expected = {account: once(data).out for account, data in executed.items()}
    calls: list[bytes] = []

    def counted(data: bytes) -> renderer.Rendered:
        calls.append(data)
        return once(data)

    monkeypatch.setattr(renderer, "once", counted)
    grade_directory(folder, out, Context(rubric, facts, None), _Landing(executed))
    assert calls == []  # none rendered once
    for account, body in expected.items():
        assert body in (out / "executed" / f"{account}.html").read_text()
    assert renderer._WARM is None  # ended with the batch
