"""What the TA (or the student) has -> Submissions: one collect() for a batch (a folder, a zip, an
LMS
export, mails) and one collect_one() for one student's work (a file, or a repository's folder)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from grader.intake.read import read_submission
from grader.model.errors import SubmissionError
from grader.model.findings import Finding, Flag
from grader.model.rubric import FilePatterns, Rubric
from grader.model.submission import Arrival, Discovery, Submission


@dataclass(frozen=True)
class Collected:
    """A class's submissions, those that could not be read, and the files set aside with why."""

    submissions: tuple[Submission, ...]
    unreadable: tuple[tuple[str, Path, str], ...]  # (account, path, one-line reason)
    skipped: tuple[tuple[str, str], ...]  # (file name as found, why it was not graded)
    # (account, a file, why): several LMS uploaders, a person decides
    disputed: tuple[tuple[str, Path, str], ...] = ()


def collect(source: Path, rubric: Rubric, into: Path) -> Collected:
    """Every submission under ``source`` (a folder, a zip, an .mbox or a folder of .eml files);
    archives and mails are unpacked under ``into``. Raises a one-line SubmissionError when none is
    found."""
    from grader.intake.archive import unpack
    from grader.intake.discover import discover
    from grader.intake.mail import is_mail, unpack_mail

    unpacked: tuple[Path, ...] = ()
    arrivals: dict[Path, Arrival] = {}
    mail_skipped: tuple[tuple[str, str], ...] = ()
    if is_mail(source):  # an mbox or .eml files: the attachments, dated by their mails
        bag = unpack_mail(source, into / "mail", rubric.homework)
        root, arrivals, mail_skipped = bag.folder, bag.arrivals, bag.skipped
    else:
        root, unpacked = unpack(source, into)
    found = _one_sender(
        discover(root, rubric.files, *unpacked, arrivals=arrivals), arrivals, rubric
    )
    if not found.submissions and not found.unreadable and not found.disputed:
        raise SubmissionError(
            f"{source}: no submissions found; expected files named like "
            f"{rubric.files.notebook.format(account='ACCOUNT')}"
        )
    roots = (root, *unpacked)
    skipped = tuple(
        (
            _shown(p, roots),
            "the handout's own name, no student's: rename it to the student's account"
            if rubric.files.is_handout(p.name)
            else f"name matches no pattern ({rubric.files.notebook})",
        )
        for p in found.unmatched
    )
    skipped += tuple((_shown(p, roots), why) for p, why in found.set_aside)
    return Collected(found.submissions, found.unreadable, skipped + mail_skipped, found.disputed)


def collect_one(path: Path, patterns: FilePatterns) -> Submission:
    """One student's submission: ``path`` itself when it is a file (its account from its name, else
    its stem), else the one submission in the folder (a repository: its .ipynb, else its .py)."""
    if path.is_dir():
        return _in_repository(path, patterns)
    matched = patterns.account_of(path.name)
    return read_submission(path, matched[0] if matched else None)


def _shown(path: Path, roots: tuple[Path, ...]) -> str:
    """A file's name relative to the folder it was found in."""
    for root in roots:
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return path.name


def _in_repository(root: Path, patterns: FilePatterns) -> Submission:
    """The one submission in a repository (its .ipynb, else its .py), found by the rubric's names;
    hidden folders (.git, .ipynb_checkpoints) are ignored. Raises a one-line SubmissionError."""
    from grader.intake.discover import discover

    if not root.is_dir():
        raise SubmissionError(
            f"{root}: no such directory; give the repository's folder (default: .)"
        )
    expected = (
        f"{patterns.notebook.format(account='ACCOUNT')} (or "
        f"{patterns.script.format(account='ACCOUNT')})"
    )
    found = discover(root, patterns)
    subs = [s for s in found.submissions if not _hidden(s.path, root)]
    broken = [
        (account, path, why) for account, path, why in found.unreadable if not _hidden(path, root)
    ]
    accounts = sorted({s.account for s in subs} | {account for account, _, _ in broken})
    if not accounts:
        raise SubmissionError(f"{root}: no submission found; expected a file named {expected}")
    if len(accounts) > 1:
        names = ", ".join(sorted({s.path.name for s in subs} | {p.name for _, p, _ in broken}))
        raise SubmissionError(
            f"{root}: files of {len(accounts)} accounts ({names}); keep only your own {expected}"
        )
    if broken:
        _, path, why = broken[0]
        raise SubmissionError(why if why.startswith(path.name) else f"{path.name}: {why}")
    return subs[0]


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts[:-1])


def _one_sender(found: Discovery, arrivals: dict[Path, Arrival], rubric: Rubric) -> Discovery:
    """Flag ``sender-mismatch`` where one account's files came in mails from more than one address
    (a classmate's mail can replace a file: the newest is graded, so the TA must see who sent
    what)."""
    if not arrivals:
        return found
    others: dict[str, set[str]] = {}
    for path, _why in found.set_aside:
        named = rubric.files.account_of(path.name)
        sender = arrivals[path].sender if path in arrivals else None
        if named and sender:
            others.setdefault(named[0], set()).add(sender)
    changed = []
    for sub in found.submissions:
        own = arrivals[sub.path].sender if sub.path in arrivals else None
        extra = sorted(others.get(sub.account, set()) - {own}) if own else []
        if extra:
            note = (
                f"{sub.path.name} came from {own}, an older copy of {sub.account}'s files from "
                f"{', '.join(extra)}"
            )
            sub = replace(sub, findings=sub.findings + (Finding(Flag.SENDER_MISMATCH, note),))
        changed.append(sub)
    return replace(found, submissions=tuple(changed))
