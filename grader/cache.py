"""Cache keys: a finished result is reused while what it was graded from is unchanged."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from pathlib import Path

import grader
from grader.grade import Context
from grader.results import Result
from grader.submission import Submission


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def environment_key(device_kind: str) -> str:
    """What, besides the submission and the rubric, can change a grade: versions and device kind."""
    return "|".join([grader.__version__, platform.python_version(), _version("torch"), _version("torchvision"), device_kind])


def batch_key(context: Context, environment: str) -> str:
    """A digest of what every submission of a batch is graded against: the rubric, the reference
    template, the environment and whether runs are sandboxed (read once per batch)."""
    digest = hashlib.sha256()
    for part in (context.rubric.path.read_bytes(), context.rubric.template.read_bytes(), environment.encode(),
                 str(context.sandboxed).encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def cache_key(sub: Submission, batch: str) -> str:
    """A digest of the submission's content and the batch's key (see ``batch_key``)."""
    return hashlib.sha256(hashlib.sha256(sub.path.read_bytes()).digest() + batch.encode()).hexdigest()


def reusable(path: Path, key: str) -> Result | None:
    """The result stored at ``path`` if it was graded under ``key``; None if absent, damaged or stale."""
    try:
        result = Result.read(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # a missing or damaged result is graded again
    return result if result.cache_key == key else None
