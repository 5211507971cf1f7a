"""An executed notebook rendered as a page's body by render_notebook.py (children.py
``notebook_body``): a fresh process per notebook (``once``), or, in a batch (``warm_renderer``), a
fresh fork of a warm server that imported nbconvert, nbformat and bleach and built its exporter
once (0.65 s of CPU per notebook otherwise, the notebook itself a small part of it).

The server (``render_notebook.py --serve``) runs as the grader's user, unsandboxed, as the one-shot
renderer does: it runs no student code, and only its forked children read a notebook's bytes (it
hands them the pipes, as run/evaluate.py ``Warm`` hands the evaluator's children theirs). Each
child has the one-shot renderer's memory and time limits. A server that fails to answer is ended,
that notebook is rendered once instead, and the next one gets a fresh server.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from grader.run.pipes import PIPES_CLOSE_S, hand_over, receive
from grader.run.render_notebook import MEMORY, STATUS

RENDER_SECONDS = 120
# run as a script: it imports nothing of the grader
RENDER_SCRIPT = Path(__file__).with_name("render_notebook.py")
SERVER_START_S = 60  # the server's imports (under a second alone) before its first answer
ANSWER_S = 30  # after a child's time limit, the server's answer is this late at most
MAX_SERVERS = 3  # started in one batch; then every notebook is rendered once
MAX_ERROR_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Rendered:
    """What rendering one notebook gave: the renderer's exit code, its standard output (the page's
    body) and error, and whether it was ended for time."""

    code: int
    out: str
    err: str
    late: bool = False


def once(data: bytes) -> Rendered:
    """``data`` rendered by a fresh render_notebook.py."""
    try:
        done = subprocess.run(
            [sys.executable, "-I", str(RENDER_SCRIPT)],
            input=data,
            capture_output=True,
            timeout=RENDER_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return Rendered(code=-9, out="", err="", late=True)
    out, err = done.stdout.decode("utf-8", errors="replace"), done.stderr.decode(errors="replace")
    return Rendered(code=done.returncode, out=out, err=err)


class _Server:
    """One warm server and its control socket; ``render`` gives None once it failed to answer
    (it is then ended)."""

    def __init__(self, program: Sequence[str], seconds: float) -> None:
        self.control, theirs = socket.socketpair()
        fd = theirs.fileno()
        self.process = subprocess.Popen(
            [sys.executable, "-I", *program, "--serve", str(fd), str(seconds)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(fd,),
        )
        theirs.close()
        self.seconds = seconds
        self.wait_s = seconds + ANSWER_S + SERVER_START_S  # the first answer waits for its imports

    def render(self, data: bytes) -> Rendered | None:
        exchange = hand_over(self.control, b"r", data, MEMORY, MAX_ERROR_BYTES)
        if exchange is None:
            self.close()
            return None
        status = self._status(time.monotonic() + self.wait_s)
        self.wait_s = self.seconds + ANSWER_S
        if status is None:
            self.close()  # its child with it (it dies with the server)
        if not exchange.join(PIPES_CLOSE_S) or status is None:
            self.close()
            return None
        code, late = status
        out = exchange.out
        if out.size > out.cap:
            return Rendered(code=1, out="", err=f"its page is over {out.cap} bytes")
        return Rendered(code=code, out=out.text(), err=exchange.err.text(), late=late)

    def _status(self, deadline: float) -> tuple[int, bool] | None:
        """The child's exit code and whether it was ended for time; None at the deadline or when
        the server ended without a word."""
        data = receive(self.control, STATUS.size, deadline)
        if data is None:
            return None
        code, late = STATUS.unpack(data)
        return code, late

    def close(self) -> None:
        self.control.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class WarmRenderer:
    """The batch's renderer: one warm server, one notebook at a time (a render asked for while it
    is busy runs once); a server that failed is replaced, up to ``MAX_SERVERS``."""

    def __init__(
        self, program: Sequence[str] = (str(RENDER_SCRIPT),), seconds: float = RENDER_SECONDS
    ) -> None:
        """``program``: what the interpreter runs (tests give a server of faulty children);
        ``seconds``: each child's time limit."""
        self.program, self.seconds = program, seconds
        self.lock = threading.Lock()
        self.server: _Server | None = None
        self.started = 0

    def render(self, data: bytes) -> Rendered:
        done = self._warm(data)
        return done if done is not None else once(data)

    def _warm(self, data: bytes) -> Rendered | None:
        if not self.lock.acquire(blocking=False):
            return None
        try:
            if self.server is None and self.started < MAX_SERVERS:
                self.started += 1
                try:
                    self.server = _Server(self.program, self.seconds)
                except OSError:
                    return None
            done = self.server.render(data) if self.server is not None else None
            if done is None:
                self.server = None  # ended by its failure
            return done
        finally:
            self.lock.release()

    def close(self) -> None:
        with self.lock:
            if self.server is not None:
                self.server.close()
                self.server = None


_WARM: WarmRenderer | None = None


def render(data: bytes) -> Rendered:
    """``data`` rendered by the batch's warm renderer, or once outside ``warm_renderer``."""
    warm = _WARM
    return warm.render(data) if warm is not None else once(data)


@contextlib.contextmanager
def warm_renderer(
    program: Sequence[str] = (str(RENDER_SCRIPT),), seconds: float = RENDER_SECONDS
) -> Iterator[WarmRenderer]:
    """Within the block, this process's notebooks are rendered by a warm server, started on the
    first; it ends with the block. ``program``, ``seconds``: for tests (``WarmRenderer``)."""
    global _WARM
    if _WARM is not None:
        yield _WARM  # an outer batch's
        return
    _WARM = WarmRenderer(program, seconds)
    try:
        yield _WARM
    finally:
        current, _WARM = _WARM, None
        current.close()
