"""The trusted evaluator's process handle: the grader starts the evaluator (the leaf package
grader/evaluator/, which imports nothing of the grader) before the notebook runs, so that its
imports overlap the run, then hands it the capture and reads its answer.

Started as ``python -I grader/evaluator/__main__.py TEST_IMAGES [TRAIN_IMAGES]``, in a sandbox of
its own when the run is sandboxed (run/launch.py ``start_evaluator``). The capture goes to its
standard input (bytes the grader read from the kernel's folder, capped); one JSON object comes back
on its standard output, for judge/recompute.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from grader import evaluator

EVALUATE_SECONDS = 600  # a graph of three Linear layers over 10,000 images takes about a second
MAIN = Path(evaluator.__file__).resolve().parent / "__main__.py"


@dataclass(frozen=True)
class Evaluated:
    """What the evaluator said, as text (JSON) for judge/recompute.py, or why it could not run."""

    output: str | None
    problem: str | None


class Evaluator:
    """The evaluator's process, started before the notebook runs so that importing torch overlaps
    the run; ``finish`` hands it the capture and waits for its answer, ``close`` ends it unused."""

    def __init__(
        self,
        test_images: Path,
        prefix: Sequence[str] = (),
        fds: tuple[int, ...] = (),
        train_images: Path | None = None,
    ) -> None:
        """``prefix``: the sandbox's command (run/launch.py ``start_evaluator``), or none; ``fds``:
        what the prefix needs passed on; ``train_images``: the official training images, for the
        fit of the training set (judge/fit.py). The ops it may run are its own
        (grader/evaluator/ops.py ``RUNNABLE``)."""
        train = [str(train_images)] if train_images else []
        command = [*prefix, sys.executable, "-I", str(MAIN), str(test_images), *train]
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
            return Evaluated(None, f"the trusted evaluation took over {EVALUATE_SECONDS} s")
        if self.process.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            why = lines[-1][:300] if lines else self.process.returncode
            return Evaluated(None, f"the trusted evaluation failed ({why})")
        return Evaluated(out.decode("utf-8", errors="replace"), None)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
