"""The evaluator's process: ``python -I grader/evaluator/__main__.py [--spec SPEC] [--widest N]
TEST_IMAGES [TRAIN_IMAGES]`` (run/evaluate.py ``Evaluator``), the capture on standard input, the
answer (answer.py) as one JSON object on standard output; a refused capture answers ``{"refused":
why}``. SPEC: the images' geometry and class count (key.py ``ImageSpec.to_text``), FashionMNIST's
without; N: the most values per image the image's way may hold (static/layers.py ``widest_way``,
from the template), four images' without.

``python -I grader/evaluator/__main__.py --serve FD [--sweep] [--spec SPEC] [--widest N]
TEST_IMAGES [TRAIN_IMAGES]``: the same for every capture the grader sends over the control socket
FD, each in a forked child (serve.py, run/evaluate.py ``Warm``)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import tempfile
from pathlib import Path


def _own_package() -> None:
    """Started by its path under -I, nothing of the grader is on the import path, and nothing is
    added to it: the ``grader`` package is the one this file is in, imported from there."""
    folder = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "grader", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    sys.modules["grader"] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if not __package__:
    _own_package()

# The evaluator writes nothing (in its sandbox nothing is writable), yet torch's imports ask for a
# cache folder, which must exist, and for a temporary folder's name: /tmp for both, never written.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.tempdir = "/tmp"

# Imported while the notebook still runs (Evaluator starts this early), before any byte of the
# capture is read: torch, and torch.export's deserializer and shape propagation (half of this
# process's work on a small test set).
from grader.evaluator.answer import evaluate  # noqa: E402
from grader.evaluator.key import FASHION_MNIST, ImageSpec  # noqa: E402
from grader.evaluator.manifest import Refused  # noqa: E402
from grader.evaluator.serve import serve  # noqa: E402


def answer(test: Path, train: Path | None, spec: ImageSpec, widest: int | None) -> None:
    """One capture: read on standard input, answered on standard output."""
    data = sys.stdin.buffer.read()
    try:
        found = evaluate(data, test, train_images=train, spec=spec, widest=widest)
    except Refused as exc:
        found = {"refused": str(exc)}
    sys.stdout.write(json.dumps(found))
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    control, sweep = None, False
    if argv[:1] == ["--serve"]:
        control, argv = socket.socket(fileno=int(argv[1])), argv[2:]
        sweep = argv[:1] == ["--sweep"]
        argv = argv[1:] if sweep else argv
    spec = FASHION_MNIST
    if argv[:1] == ["--spec"]:
        spec, argv = ImageSpec.parse(argv[1]), argv[2:]
    widest = None
    if argv[:1] == ["--widest"]:
        widest, argv = int(argv[1]), argv[2:]
    test, train = Path(argv[0]), Path(argv[1]) if len(argv) > 1 else None
    if control is None:
        answer(test, train, spec, widest)
    else:
        serve(control, lambda: answer(test, train, spec, widest), sweep)


if __name__ == "__main__":
    main(sys.argv[1:])
