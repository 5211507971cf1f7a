"""Cache keys: a finished result is reused while what it was graded from is unchanged."""

from __future__ import annotations

import hashlib
import platform
from dataclasses import replace
from pathlib import Path

import grader
from grader.model.context import Context
from grader.model.findings import notes_of
from grader.model.resources import installed_version
from grader.model.results import Result
from grader.model.submission import Submission


def _code_digest() -> str:
    """The grader's own code: an editable install keeps its version string while its code
    changes."""
    package = Path(grader.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def environment_key(device_kind: str) -> str:
    """What, besides the submission and the rubric, can change a grade: versions, code and device
    kind."""
    return "|".join(
        [
            grader.__version__,
            _code_digest(),
            platform.python_version(),
            installed_version("torch"),
            installed_version("torchvision"),
            device_kind,
        ]
    )


def batch_key(context: Context, environment: str) -> str:
    """A digest of what every submission of a batch is graded against: the rubric as in effect
    (command-line overrides such as --timeout included), the reference template, the environment
    and whether runs are sandboxed (read once per batch). The rubric's seed policy is left out: it
    only combines runs already made (grader.scoring.seeds), so changing it runs nothing again."""
    digest = hashlib.sha256()
    rubric = replace(context.rubric, seed_policy="fixed")
    for part in (
        repr(rubric).encode(),
        context.rubric.template.read_bytes(),
        environment.encode(),
        str(context.sandboxed).encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def cache_key(sub: Submission, batch: str, timed: bool = False) -> str:
    """A digest of everything of the student's that the result depends on (the graded file, its
    .py twin, the report PDF, the copies set aside; when it came in if ``timed``) and the batch's
    key
    (see ``batch_key``)."""
    digest = hashlib.sha256()
    for path in (sub.path, sub.script, sub.report):
        digest.update(hashlib.sha256(path.read_bytes()).digest() if path is not None else b"-")
    digest.update(
        hashlib.sha256("\0".join(notes_of(sub.findings)).encode()).digest() + batch.encode()
    )
    if timed:  # the rubric has a deadline: when it came in can change the score
        digest.update(sub.submitted.at.isoformat().encode() if sub.submitted else b"-")
    return digest.hexdigest()


def reusable(path: Path, key: str) -> Result | None:
    """The result stored at ``path`` if it was graded under ``key``; None if absent, damaged or
    stale."""
    try:
        result = Result.read(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # a missing or damaged result is graded again
    return result if result.cache_key == key else None
