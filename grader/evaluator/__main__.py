"""The evaluator's process: ``python -I grader/evaluator/__main__.py TEST_IMAGES [TRAIN_IMAGES]``
(run/evaluate.py ``Evaluator``), the capture on standard input, the answer (answer.py) as one JSON
object on standard output; a refused capture answers ``{"refused": why}``."""

from __future__ import annotations

import importlib.util
import json
import sys
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

# Imported while the notebook still runs (Evaluator starts this early), before any byte of the
# capture is read: torch, and torch.export's deserializer and shape propagation (half of this
# process's work on a small test set).
from grader.evaluator.answer import evaluate  # noqa: E402
from grader.evaluator.manifest import Refused  # noqa: E402


def main() -> None:
    data = sys.stdin.buffer.read()
    train = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    try:
        answer = evaluate(data, Path(sys.argv[1]), train_images=train)
    except Refused as exc:
        answer = {"refused": str(exc)}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
