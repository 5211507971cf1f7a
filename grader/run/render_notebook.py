"""Run as a script in a child process (``python -I``; run/renderer.py ``once``): an executed
notebook on stdin, its cells as HTML on stdout. Imports nothing of the grader.

The notebook's markdown and outputs are the student's: everything nbconvert renders is cleaned with
an allow-list (bleach), so no script, event handler, frame, style or remote resource survives; a
link may go to http(s) or mailto, an image only to inline data. SVG outputs become inline images
(an ``<img>`` never runs what an SVG carries).

``python -I render_notebook.py --serve FD SECONDS``: the same for every notebook of a batch
(run/renderer.py ``WarmRenderer``), as a warm server: nbconvert, nbformat and bleach imported and
the exporter built once (its templates compiled on a tiny notebook of its own), then each notebook
rendered in a fresh fork of the server. The grader sends, over the control socket FD, the child's
standard input, output and error (three pipe ends); the child reads the notebook on the first and
writes its page on the second exactly as this script does, then exits (and dies with the server).
The server never reads a byte of a notebook: a notebook's render can only end its own child, never
reach the next one's. A child still running after SECONDS is killed; the server then answers on the
control socket with the child's exit code and whether it was killed for time (``STATUS``)."""

from __future__ import annotations

import base64
import ctypes
import json
import logging
import os
import re
import resource
import select
import signal
import socket
import struct
import sys
import traceback
from typing import Any

MEMORY = 2 * 1024 * 1024 * 1024  # address space of this process (and of each child of the server)
STATUS = struct.Struct("!i?")  # the child's exit code, and whether it was killed for time
# The server's own notebook, rendered before the first child: the templates compiled, the markdown
# parser and the code's highlighter loaded once (a cell and output of each kind).
_PNG = (  # 1x1
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
WARM_UP = json.dumps(
    {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# A *heading*\n\n- [a](#a)"},
            {
                "cell_type": "code",
                "execution_count": 1,
                "metadata": {},
                "source": "print(1)",
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": "1\n"},
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {"image/png": _PNG, "text/html": "<b>b</b>", "text/plain": "b"},
                    },
                    {"output_type": "error", "ename": "E", "evalue": "e", "traceback": ["E"]},
                ],
            },
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
).encode()
_PR_SET_PDEATHSIG = 1
TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "code",
    "dd",
    "del",
    "details",
    "div",
    "dl",
    "dt",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "kbd",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "span",
    "strong",
    "sub",
    "summary",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
}
PLAIN = {"class", "id", "title", "alt", "colspan", "rowspan", "align", "width", "height"}
# content too, not only the tags
_ACTIVE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.S | re.I)


def allowed(tag: str, name: str, value: str) -> bool:
    if name in PLAIN:
        return True
    if tag == "a" and name == "href":
        return value.startswith(("http://", "https://", "mailto:", "#"))
    return tag == "img" and name == "src" and value.startswith("data:image/")


def _limited() -> None:
    """This process's memory limit (its children's too), and no logging of nbconvert's."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    logging.disable(logging.CRITICAL)


def exporter() -> Any:
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="basic", embed_images=True)  # type: ignore[no-untyped-call]


def render(raw: bytes, html: Any) -> str:
    """The notebook ``raw`` as cleaned HTML, by the exporter ``html``."""
    import bleach  # type: ignore[import-untyped]
    import nbformat

    text = raw.decode("utf-8", errors="replace")
    notebook = nbformat.reads(text, as_version=4)  # type: ignore[no-untyped-call]
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            svg = data.pop("image/svg+xml", None)
            if isinstance(svg, str) and not {"image/png", "text/html"} & set(data):
                data["text/html"] = (
                    '<img alt="figure" '
                    f'src="data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()}">'
                )
            data.pop("application/javascript", None)
    body, _ = html.from_notebook_node(notebook)
    clean: str = bleach.clean(
        _ACTIVE.sub("", body),
        tags=TAGS,
        attributes=allowed,
        protocols={"http", "https", "mailto", "data"},
        strip=True,
        strip_comments=True,
    )
    return clean


def main() -> None:
    _limited()
    html = exporter()
    sys.stdout.write(render(sys.stdin.buffer.read(), html))


def serve(control: socket.socket, seconds: float) -> None:
    """Render each notebook the grader sends over ``control`` in a fresh fork, until it closes
    the socket."""
    _limited()
    html = exporter()
    render(WARM_UP, html)
    server = os.getpid()
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 16, 3)
        except OSError:
            return
        if not message or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            return
        pid = os.fork()
        if pid == 0:
            _child(control, fds, html, server)
        for fd in fds:
            os.close(fd)
        try:
            control.sendall(STATUS.pack(*_waited(pid, seconds)))
        except OSError:
            return


def _child(control: socket.socket, fds: list[int], html: Any, server: int) -> None:
    """Render the notebook on the standard input that came in ``fds``, then exit; ends with the
    server."""
    code = 0
    try:
        control.close()
        if ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError("prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != server:  # the server ended before the line above
            raise SystemExit("the server is gone")
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdout.write(render(sys.stdin.buffer.read(), html))
    except BaseException:  # noqa: BLE001 - the child reports every failure by its exit code
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - a closed stream: nothing more to say
                code = code or 1
        os._exit(code)


def _waited(pid: int, seconds: float) -> tuple[int, bool]:
    """The child's exit code once it has ended, killed after ``seconds``; and whether it was."""
    handle = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([handle], [], [], seconds)
        if not ready:
            signal.pidfd_send_signal(handle, signal.SIGKILL)
    finally:
        os.close(handle)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), not ready


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(socket.socket(fileno=int(sys.argv[2])), float(sys.argv[3]))
    else:
        main()
