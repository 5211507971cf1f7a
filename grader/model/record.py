"""Read what the probe wrote inside the kernel: untrusted JSON of the probe's format (``RECORD_VERSION``,
checked here), its fields validated by whoever uses them (judge/run_facts.py, judge/measure.py).

The file lies in a folder student code could write, so it is opened without following links and
without blocking, and taken only when it is a regular file of the sandbox's user, within a size cap.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.probe import RECORD_VERSION

MAX_BYTES = 64 * 1024 * 1024  # far above a real record (predictions for 10,000 images are ~30 KB)


@dataclass(frozen=True)
class ProbeRead:
    """The probe's record, or None and why it was not taken (None: the probe wrote nothing)."""

    record: dict[str, Any] | None
    problem: str | None = None


def read_untrusted(folder: Path, name: str, owner: int | None, max_bytes: int) -> bytes:
    """The bytes of ``folder/name``, refusing links, FIFOs, devices, other owners and big files.

    Raises ValueError with one line saying what was found instead, FileNotFoundError when absent.
    """
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=directory)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise ValueError(f"{name} could not be opened as a plain file ({exc.strerror})") from None
    finally:
        os.close(directory)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{name} is not a regular file")
        if owner is not None and info.st_uid != owner:
            raise ValueError(f"{name} belongs to uid {info.st_uid}, not to the sandbox's user")
        if info.st_size > max_bytes:
            raise ValueError(f"{name} is {info.st_size} bytes, over the {max_bytes}-byte cap")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ValueError(f"{name} grew over the {max_bytes}-byte cap while read")
        return data
    finally:
        os.close(fd)


def read_probe(folder: Path, name: str, owner: int | None) -> ProbeRead:
    """The probe's record from ``folder/name`` (see ``read_untrusted``); problems are kept as text."""
    try:
        data = read_untrusted(folder, name, owner, MAX_BYTES)
    except FileNotFoundError:
        return ProbeRead(None)
    except (OSError, ValueError) as exc:
        return ProbeRead(None, f"the probe's file was not read: {exc}")
    if not data:
        return ProbeRead(None)  # created empty by the grader; the probe never exported
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ProbeRead(None, "the probe's file is not valid JSON")
    if not isinstance(record, dict):
        return ProbeRead(None, "the probe's file is not a JSON object")
    version = record.get("version")
    if version != RECORD_VERSION or type(version) is not int:
        return ProbeRead(None, f"the probe's file has format {str(version)[:20]!r}, not {RECORD_VERSION}: "
                               "it was not written by this grader's probe")
    return ProbeRead(record)


def section(record: dict[str, Any] | None, key: str) -> dict[str, Any]:
    """One sub-object of the record, or {} when absent or of the wrong type."""
    value = record.get(key) if record else None
    return value if isinstance(value, dict) else {}


def integer(value: Any) -> int | None:
    """An int that is really an int (not a bool, not a string), else None."""
    return value if type(value) is int else None
