"""Find the submissions in a folder: group files by account, pick the newest of several copies,
note how each came in (file time, or a mail's date and sender)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from grader.intake.read import read_submission
from grader.model.errors import SubmissionError
from grader.model.findings import Finding, Flag
from grader.model.rubric import FilePatterns
from grader.model.submission import Arrival, Discovery, Submission, Submitted


def file_time(path: Path) -> Submitted:
    return Submitted(datetime.fromtimestamp(path.stat().st_mtime, timezone.utc), "file time")


_COPY_SUFFIX = re.compile(
    r"^(?P<stem>.+?)(?: ?\((?P<paren>\d+)\)| - Copy(?: \((?P<win>\d+)\))?| "
    r"copy(?: (?P<mac>\d+))?)$",
    re.IGNORECASE,
)
_NUMBERED = re.compile(r"^(?P<account>.+)-(?P<n>\d+)$")  # Canvas's resubmission: HW3_x-1.ipynb


@dataclass(frozen=True)
class _Found:
    path: Path
    copy: int  # 0 for the file's own name, N for its Nth copy
    # who the LMS says uploaded it (the prefix of its name), where it says
    uploader: str | None = None


_LMS_MARKERS = re.compile(r"_assignsubmission_(?:file|onlinetext)_?|(?<=_)LATE_", re.IGNORECASE)


def _uploader(prefix: str) -> str | None:
    """The uploader an LMS names before the file's own name, with the LMS: Moodle's "Full
    Name_1002_assignsubmission_file_", Canvas's "doejane_12345_67890_" (name and user id; the last
    number is the file's)."""
    lms = "Moodle" if "_assignsubmission_" in prefix.lower() else "Canvas"
    fields = [f for f in _LMS_MARKERS.sub("_", prefix).strip("_- ").split("_") if f]
    return f"{lms} {'_'.join(fields[:2])}" if fields else None


def _identify(name: str, patterns: FilePatterns) -> tuple[str, str, int, str | None] | None:
    """(account, kind, copy number, uploader) of a file name; an LMS prefix before the pattern
    ("Jane Doe_1234_assignsubmission_file_HW3_x.ipynb", naming the uploader) and a copy suffix are
    allowed."""
    stem, dot, suffix = name.rpartition(".")
    copy, bare = 0, name
    dup = _COPY_SUFFIX.match(stem) if dot else None
    if dup:
        copy = int(dup.group("paren") or dup.group("win") or dup.group("mac") or 1)
        bare = f"{dup.group('stem')}.{suffix}"
    for candidate, number in ((name, 0), (bare, copy)) if copy else ((name, 0),):
        starts = [0] + [i + 1 for i, ch in enumerate(candidate) if ch in "_- "]
        for start in starts:
            matched = patterns.account_of(candidate[start:])
            if matched:
                return matched[0], matched[1], number, _uploader(candidate[:start])
    return None


def _pick(
    account: str, kind: str, found: list[_Found]
) -> tuple[Path, list[tuple[Path, str]], str | None]:
    """The copy to use (the newest; the highest copy number on a tie), the others with why they were
    set aside, and a note for the student's result when the copies differ."""
    if len(found) == 1:
        return found[0].path, [], None
    content = {f.path: f.path.read_bytes() for f in found}
    newest = max(found, key=lambda f: (int(f.path.stat().st_mtime), f.copy))
    # same: plain name
    newest = min(
        (f for f in found if content[f.path] == content[newest.path]), key=lambda f: f.copy
    )
    aside, differ = [], []
    for other in found:
        if other is newest:
            continue
        same = content[other.path] == content[newest.path]
        aside.append(
            (
                other.path,
                f"{'identical' if same else 'older, different'} copy of {account}'s {kind}; "
                f"{newest.path.name} was used",
            )
        )
        if not same:
            differ.append(other.path.name)
    note = (
        (
            f"{len(found)} copies of the {kind} were found; graded {newest.path.name}, the newest, "
            "and set aside "
            f"{', '.join(differ)}, which differ{'s' if len(differ) == 1 else ''}: check which one "
            "was meant"
        )
        if differ
        else None
    )
    return newest.path, aside, note


def discover(
    directory: Path,
    patterns: FilePatterns,
    *more: Path,
    arrivals: Mapping[Path, Arrival] | None = None,
) -> Discovery:
    """Group the files under ``directory`` (and the ``more`` folders, e.g. unpacked zips) by
    account;
    the .ipynb is graded when both exist; of several copies of one file the newest is used.
    Zip archives themselves are not listed as unmatched. ``arrivals``: how files came in (mail)."""
    if not directory.is_dir():
        raise SubmissionError(
            f"{directory}: no such directory; give the folder of submissions (or its .zip)"
        )
    by_account: dict[str, dict[str, list[_Found]]] = {}
    unmatched = []
    files = (
        p
        for root in (directory, *more)
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    for path in sorted(p for p in files if p.suffix != ".zip"):
        identified = _identify(path.name, patterns)
        if identified is None:
            unmatched.append(path)
            continue
        account, kind, copy, uploader = identified
        by_account.setdefault(account, {}).setdefault(kind, []).append(_Found(path, copy, uploader))
    # HW3_x-1.ipynb beside HW3_x.ipynb is x's resubmission, not student "x-1"
    for account in list(by_account):
        numbered = _NUMBERED.match(account)
        if numbered and numbered.group("account") in by_account:
            for kind, found in by_account.pop(account).items():
                by_account[numbered["account"]].setdefault(kind, []).extend(
                    _Found(f.path, int(numbered["n"]), f.uploader) for f in found
                )
    submissions, unreadable, set_aside, disputed = [], [], [], []
    for account, kinds in sorted(by_account.items()):
        theirs = [f for group in kinds.values() for f in group]
        uploaders = sorted({f.uploader for f in theirs if f.uploader})
        by_lms = Counter(u.split(" ", 1)[0] for u in uploaders)
        # never merged: whose file is whose is for a person to say
        if any(n > 1 for n in by_lms.values()):
            listed = "; ".join(f"{f.uploader or 'no LMS name'}: {f.path.name}" for f in theirs)
            disputed.append(
                (
                    account,
                    theirs[0].path,
                    f"files named for {account} were uploaded by {len(uploaders)} "
                    f"people ({listed}); none was graded: a person decides whose is whose",
                )
            )
            continue
        chosen: dict[str, Path] = {}
        notes = []
        for kind, found in sorted(kinds.items()):
            chosen[kind], aside, note = _pick(account, kind, found)
            set_aside += aside
            notes += [note] if note else []
        main = chosen.get("notebook") or chosen.get("script")
        if main is None:
            unreadable.append(
                (
                    account,
                    chosen["report"],
                    "only the report PDF was submitted, no notebook or script",
                )
            )
            continue
        try:
            sub = read_submission(main, account)
        except SubmissionError as exc:
            unreadable.append((account, main, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one file the reader cannot handle never stops the class
            unreadable.append(
                (
                    account,
                    main,
                    f"{main.name}: could not be read ({type(exc).__name__}); "
                    "download it again from Colab or Jupyter",
                )
            )
            continue
        script = chosen.get("script") if main.suffix == ".ipynb" else None
        arrival = (arrivals or {}).get(main)
        submissions.append(
            Submission(
                account,
                main,
                sub.cells,
                script,
                chosen.get("report"),
                tuple(Finding(Flag.OTHER_COPIES, note) for note in notes),
                arrival.submitted if arrival else file_time(main),
                arrival.note if arrival else None,
                sub.saved_output,
            )
        )
    return Discovery(
        tuple(submissions), tuple(unmatched), tuple(unreadable), tuple(set_aside), tuple(disputed)
    )
