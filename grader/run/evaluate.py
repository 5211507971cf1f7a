"""The trusted evaluator's process handle: the grader starts the evaluator (the leaf package
grader/evaluator/, which imports nothing of the grader) before the notebook runs, so that its
imports overlap the run, then hands it the capture and reads its answer.

Started as ``python -I grader/evaluator/__main__.py --spec SPEC [--widest N] TEST_IMAGES
[TRAIN_IMAGES]`` (SPEC: the images' geometry and class count, grader/evaluator/key.py ``ImageSpec``;
N: the most values per image a graph's way may hold, static/layers.py ``widest_way``), in a sandbox
of its own when the run is sandboxed (run/launch.py ``start_evaluator``). The capture goes to its
standard input (bytes the grader read from the kernel's folder, capped); one JSON object comes back
on its standard output, for judge/recompute.py.

In a batch (``warm_evaluators``), a sandboxed run's evaluator is instead a fork of a warm server
(``Warm``, grader/evaluator/serve.py) that imported torch once for the slot: the same answer for
the same capture, without the 4 s of imports per student.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from grader import evaluator
from grader.evaluator.key import FASHION_MNIST, ImageSpec
from grader.evaluator.serve import STATUS
from grader.run.pipes import PIPES_CLOSE_S, hand_over, receive

EVALUATE_SECONDS = 600  # a graph of three Linear layers over 10,000 images takes about a second
MAIN = Path(evaluator.__file__).resolve().parent / "__main__.py"


@dataclass(frozen=True)
class Evaluated:
    """What the evaluator said, as text (JSON) for judge/recompute.py, or why it could not run."""

    output: str | None
    problem: str | None


TIMED_OUT = Evaluated(None, f"the trusted evaluation took over {EVALUATE_SECONDS} s")


def _failed(stderr: str, code: int) -> Evaluated:
    """A failed evaluation, said by the last line of its standard error (else its exit code)."""
    lines = stderr.strip().splitlines()
    return Evaluated(None, f"the trusted evaluation failed ({lines[-1][:300] if lines else code})")


def _widest(widest: int | None) -> list[str]:
    """The evaluator's ``--widest`` argument, or none."""
    return ["--widest", str(widest)] if widest is not None else []


class Evaluation(Protocol):
    """A trusted evaluation of one run's capture: ``finish`` hands it the capture and waits for
    the answer; ``close`` ends it, used or not."""

    def finish(self, capture: bytes) -> Evaluated: ...

    def close(self) -> None: ...


class Evaluator:
    """The evaluator's process, started before the notebook runs so that importing torch overlaps
    the run; ``finish`` hands it the capture and waits for its answer, ``close`` ends it unused."""

    def __init__(
        self,
        test_images: Path,
        prefix: Sequence[str] = (),
        fds: tuple[int, ...] = (),
        train_images: Path | None = None,
        spec: ImageSpec = FASHION_MNIST,
        widest: int | None = None,
    ) -> None:
        """``prefix``: the sandbox's command (run/launch.py ``start_evaluator``), or none; ``fds``:
        what the prefix needs passed on; ``train_images``: the official training images, for the
        fit of the training set (judge/fit.py); ``spec``: the images' geometry and class count;
        ``widest``: the most values per image on a graph's way (the evaluator's own bound without).
        The ops it may run are its own (grader/evaluator/ops.py ``RUNNABLE``)."""
        train = [str(train_images)] if train_images else []
        command = [*prefix, sys.executable, "-I", str(MAIN), "--spec", spec.to_text()]
        command += [*_widest(widest), str(test_images), *train]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=fds,
        )

    def finish(self, capture: bytes) -> Evaluated:
        try:
            out, err = self.process.communicate(capture, timeout=EVALUATE_SECONDS)
        except subprocess.TimeoutExpired:
            self.close()
            return TIMED_OUT
        if self.process.returncode != 0:
            return _failed(err.decode(errors="replace"), self.process.returncode)
        return Evaluated(out.decode("utf-8", errors="replace"), None)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


SERVER_START_S = (
    120  # the server's imports (6 s on a loaded two-core machine) before the first child
)
MAX_ERROR_BYTES = 64 * 1024
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # 10,000 rows' classes, margins and graph facts: about 1 MB


class Warm:
    """A warm evaluator server (grader/evaluator/serve.py), sandboxed: one capture at a time, each
    in a fresh fork. ``holds`` closes what the server needs for its life (its slot index, its
    folder) when it ends."""

    def __init__(
        self,
        test_images: Path,
        prefix: Sequence[str],
        fds: tuple[int, ...],
        train_images: Path | None,
        holds: contextlib.ExitStack,
        uid: int,
        program: Sequence[str] = (str(MAIN),),
        spec: ImageSpec = FASHION_MNIST,
        widest: int | None = None,
    ) -> None:
        """``uid``: the sandbox's user; ``program``: what the interpreter runs (tests give a server
        of compromised children); ``spec``, ``widest``: as ``Evaluator``'s."""
        self.holds, self.uid = holds, uid
        self.control, theirs = socket.socketpair()
        train = [str(train_images)] if train_images else []
        command = [*prefix, sys.executable, "-I", *program, "--serve", str(theirs.fileno())]
        command += ["--sweep", "--spec", spec.to_text(), *_widest(widest)]
        command += [str(test_images), *train]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(*fds, theirs.fileno()),
        )
        theirs.close()
        self.served = 0
        self.usable = True  # no child left it unclean, and it answered every time

    def evaluate(self, capture: bytes) -> Evaluated | None:
        """The answer for ``capture`` from a fork of the server; None when the server was gone
        or ended without a word (no longer usable: evaluate it elsewhere)."""
        exchange = hand_over(self.control, b"c", capture, MAX_ANSWER_BYTES, MAX_ERROR_BYTES)
        if exchange is None:
            self.usable = False
            return None
        deadline = time.monotonic() + EVALUATE_SECONDS + (0 if self.served else SERVER_START_S)
        status = self._status(deadline)
        self.served += 1
        if status is None:
            self.close()
            exchange.join(None)
            return TIMED_OUT if time.monotonic() >= deadline else None
        code, clean = status
        if not clean:  # something of the child's still runs (and may hold its pipes): end it all
            self.close()
        if not exchange.join(PIPES_CLOSE_S):  # a pipe still open: not clean after all
            self.close()
        out = exchange.out
        if code != 0:
            return _failed(exchange.err.text(), code)
        if out.size > out.cap:
            return Evaluated(None, f"the trusted evaluation's answer is over {out.cap} bytes")
        return Evaluated(out.text(), None)

    def _status(self, deadline: float) -> tuple[int, bool] | None:
        """The child's exit code and whether the sandbox is clean; None at the deadline or when the
        server ended without a word."""
        data = receive(self.control, STATUS.size, deadline)
        if data is None:
            return None
        code, clean = STATUS.unpack(data)
        return code, clean

    def close(self) -> None:
        """End the server and its sandbox."""
        self.usable = False
        self.control.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.holds.close()


class _Pooled:
    """An evaluation on a warm server taken from the pool; given back on ``close``."""

    def __init__(
        self, pool: Pool, key: tuple[object, ...], warm: Warm, fallback: Callable[[], Evaluator]
    ):
        self.pool, self.key, self.warm, self.fallback = pool, key, warm, fallback

    def finish(self, capture: bytes) -> Evaluated:
        found = self.warm.evaluate(capture)
        if found is not None:
            return found
        # the server was gone: a fresh evaluator answers (a capture that ended it only runs again)
        once = self.fallback()
        try:
            return once.finish(capture)
        finally:
            once.close()

    def close(self) -> None:
        self.pool.give(self.key, self.warm)


class Pool:
    """Warm servers by what they serve (the images, the sandbox's cores and limits); each is lent
    to one run at a time and ended with the pool."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[object, ...], list[Warm]] = {}
        self._all: list[Warm] = []

    def take(
        self, key: tuple[object, ...], start: Callable[[], Warm], fallback: Callable[[], Evaluator]
    ) -> Evaluation:
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                warm = idle.pop()
                if warm.usable and warm.process.poll() is None:
                    return _Pooled(self, key, warm, fallback)
                warm.close()
        warm = start()
        with self._lock:
            self._all.append(warm)
        return _Pooled(self, key, warm, fallback)

    def give(self, key: tuple[object, ...], warm: Warm) -> None:
        if not warm.usable or warm.process.poll() is not None:
            warm.close()
            return
        with self._lock:
            self._idle.setdefault(key, []).append(warm)

    def close(self) -> None:
        with self._lock:
            everyone, self._all, self._idle = self._all, [], {}
        for warm in everyone:
            warm.close()


_POOL: Pool | None = None


def pool() -> Pool | None:
    """The batch's pool of warm servers, or None outside ``warm_evaluators``."""
    return _POOL


@contextlib.contextmanager
def warm_evaluators() -> Iterator[Pool]:
    """Within the block, sandboxed runs of this process evaluate on warm servers, one per slot;
    they end with the block."""
    global _POOL
    if _POOL is not None:
        yield _POOL  # an outer batch's
        return
    _POOL = Pool()
    try:
        yield _POOL
    finally:
        current, _POOL = _POOL, None
        current.close()
