"""Read what the probe wrote inside the kernel: untrusted JSON of the probe's format, parsed into
facts (its version and every field checked) by probe_facts.py.

The file lies in a folder student code could write, so it is opened without following links and
without blocking, and taken only when it is a regular file of the sandbox's user, within a size cap.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from grader.model.probe_facts import ProbeFacts, RecordRefused, from_json

MAX_BYTES = 64 * 1024 * 1024  # far above a real record (predictions for 10,000 images are ~30 KB)


@dataclass(frozen=True)
class ProbeRead:
    """The probe's record as facts, or None and why it was not taken (None: nothing written)."""

    record: ProbeFacts | None
    problem: str | None = None


def read_untrusted(folder: Path, name: str, owner: int | None, max_bytes: int) -> bytes:
    """The bytes of ``folder/name``, refusing links, FIFOs, devices, other owners and big files.

    Raises ValueError with one line saying what was found instead, FileNotFoundError when absent.
    """
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=directory
            )
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise ValueError(
                f"{name} could not be opened as a plain file ({exc.strerror})"
            ) from None
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
    """The probe's record from ``folder/name`` (see ``read_untrusted``); problems are kept as
    text."""
    try:
        data = read_untrusted(folder, name, owner, MAX_BYTES)
    except FileNotFoundError:
        return ProbeRead(None)
    except (OSError, ValueError) as exc:
        return ProbeRead(None, f"the probe's file was not read: {exc}")
    if not data:
        return ProbeRead(None)  # created empty by the grader; the probe never exported
    try:
        return ProbeRead(from_json(data))
    except RecordRefused as refused:
        return ProbeRead(None, str(refused))
