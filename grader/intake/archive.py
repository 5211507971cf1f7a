"""Unpack the zip a TA gets from the mail or the LMS, safely, before discovery."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path, PurePosixPath

from grader.model.errors import SubmissionError

MAX_BYTES = 4 * 1024**3  # a whole class, unpacked
MAX_MEMBERS = 100_000


def _safe_members(archive: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    if len(members) > MAX_MEMBERS or sum(m.file_size for m in members) > MAX_BYTES:
        raise SubmissionError(
            f"{name}: too large to unpack ({len(members)} files); unpack it "
            "yourself and grade the folder"
        )
    for member in members:
        path = PurePosixPath(member.filename)
        if path.is_absolute() or ".." in path.parts:
            raise SubmissionError(
                f"{name}: entry {member.filename!r} points outside the archive; unpack it by hand"
            )
    return [
        m for m in members if not m.is_dir() and "__MACOSX" not in PurePosixPath(m.filename).parts
    ]


def _stored_time(member: zipfile.ZipInfo) -> float | None:
    """The time the archive stored for ``member`` (local time, as `unzip` reads it); None if
    impossible."""
    year, month, day, hour, minute, second = member.date_time
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        return None
    try:
        return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
    except (OverflowError, ValueError):
        return None


def _keep_time(
    path: Path, member: zipfile.ZipInfo, archive_time: float, trust_entries: bool
) -> None:
    """Date the unpacked file by when it was submitted, which the deadline is checked against: the
    entry's stored time in the LMS's own export, else (a zip a student made, or an impossible
    stored date) the time of the zip file itself."""
    stamp = (_stored_time(member) if trust_entries else None) or archive_time
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def unpack(source: Path, into: Path) -> tuple[Path, tuple[Path, ...]]:
    """(the folder to discover in, the extra folders holding unpacked zips): ``source`` may be a zip
    (the LMS's export: its entries keep their stored times), or a folder with zips in it (students'
    own: their entries get the zip file's time); each is unpacked under ``into``, never beside the
    TA's files."""
    if source.is_file() and zipfile.is_zipfile(source):
        zips, root = [source], into
    elif source.is_dir():
        zips, root = sorted(p for p in source.rglob("*.zip") if p.is_file()), source
    else:
        return source, ()
    unpacked = []
    for path in zips:
        target = into / path.stem
        try:
            with zipfile.ZipFile(path) as archive:
                for member in _safe_members(archive, path.name):
                    written = archive.extract(member, target)
                    _keep_time(
                        Path(written), member, path.stat().st_mtime, trust_entries=path == source
                    )
        except zipfile.BadZipFile:
            raise SubmissionError(
                f"{path.name}: not a readable zip archive; download it again"
            ) from None
        unpacked.append(target)
    return (root, ()) if root == into else (root, tuple(unpacked))
