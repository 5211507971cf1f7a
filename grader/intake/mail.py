"""Submissions that came by mail: an mbox file or a folder of .eml files (what Thunderbird, Gmail's
export or any mail client saves) becomes a folder of attachments, one subfolder per mail.

Each attachment keeps the mail's date as its file time and as when it was submitted, with a note
naming the sender (the account comes from the file names), so discovery groups them by account from
the file names, resolves several mails of one
student to the newest, and the rubric's deadline is checked against the mail's date. Mails with
nothing to grade are listed, never dropped. Names and sizes are the sender's: an attachment is
written under its bare file name, without control characters, within a size cap.
"""

from __future__ import annotations

import email.policy
import mailbox
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path

from grader.model.submission import Arrival, Submitted

MAX_ATTACHMENT_BYTES = 200 * 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f/\\]")


@dataclass(frozen=True)
class Mailbag:
    folder: Path  # one subfolder per mail, holding its attachments
    # attachment file -> its mail's date, and a note naming the sender
    arrivals: dict[Path, Arrival]
    skipped: tuple[tuple[str, str], ...]  # (the mail, described; why nothing of it is graded)


def is_mail(source: Path) -> bool:
    """An mbox file, a single .eml, or a folder of .eml files only (a class folder with a stray mail
    in
    it is still a class folder)."""
    if source.is_dir():
        files = [p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")]
        return bool(files) and all(p.suffix.lower() == ".eml" for p in files)
    if source.suffix.lower() in (".mbox", ".eml"):
        return True
    try:
        with source.open("rb") as handle:
            return handle.read(5) == b"From "
    except OSError:
        return False


def _messages(source: Path) -> Iterator[tuple[str, EmailMessage]]:
    """(where it was found, the message) for every mail of ``source``."""
    parser = BytesParser(policy=email.policy.default)
    if source.is_dir() or source.suffix.lower() == ".eml":
        files = (
            sorted(p for p in source.iterdir() if p.suffix.lower() == ".eml" and p.is_file())
            if source.is_dir()
            else [source]
        )
        for path in files:
            yield path.name, _as_email(parser.parsebytes(path.read_bytes()))
        return
    box = mailbox.mbox(source, create=False)
    for number, key in enumerate(box.keys(), start=1):
        yield f"mail {number}", _as_email(parser.parsebytes(box.get_bytes(key)))


def _as_email(message: object) -> EmailMessage:
    assert isinstance(message, EmailMessage)  # what BytesParser gives with the default policy
    return message


def _parsed(text: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _date(message: EmailMessage) -> Submitted | None:
    """When the mail came in: the stamp the receiving server put on top (the last `Received:` hop,
    after its `;`), which the sender cannot set; else the `Date:` the sender's client wrote."""
    received = message.get_all("Received") or []
    when = _parsed(str(received[0]).rpartition(";")[2]) if received else None
    if when is not None:
        return Submitted(when, "mail's arrival time (Received)")
    when = _parsed(str(message["Date"] or ""))
    return Submitted(when, "mail date") if when is not None else None


def _address(sender: str) -> str:
    """The bare address of a From header, lower case ("Amy <Amy@Uni.edu>" -> "amy@uni.edu")."""
    return parseaddr(sender)[1].lower() or sender.strip().lower()


MAX_NAME = 120  # characters of an attachment's name kept (a file system allows 255 bytes)


def _safe_name(raw: str | None) -> str | None:
    """The attachment's bare file name, or None when it has none worth writing; a long name keeps
    its
    end (the suffix) within MAX_NAME characters."""
    name = _CONTROL.sub("", (raw or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1]).strip()
    name = name[-MAX_NAME:]
    # wide characters: bytes, not characters, are what the file system counts
    while len(name.encode()) > 240:
        name = name[1:]
    return name if name and name not in (".", "..") else None


def _names_homework(subject: str, homework: str) -> bool:
    """Whether a subject names the homework the way the handout asks (`<name>_HW3`), leniently: HW3,
    hw 3, HW-3 anywhere."""
    letters, digits = re.match(r"(\D*)(\d*)", homework).groups()  # type: ignore[union-attr]
    pattern = re.escape(letters) + r"[\s_-]*" + re.escape(digits) if digits else re.escape(homework)
    return re.search(rf"(?<![A-Za-z0-9]){pattern}(?![0-9])", subject, re.IGNORECASE) is not None


def _attachments(
    message: EmailMessage, described: str, skipped: list[tuple[str, str]]
) -> list[tuple[str | None, object]]:
    """(the name it was sent under, the decoded payload) of each attachment, each decoded once; a
    MIME
    structure the parser cannot walk is listed, and only that mail lost."""
    try:
        return [
            (part.get_filename(), part.get_payload(decode=True))
            for part in message.iter_attachments()
        ]
    except Exception as exc:  # noqa: BLE001 - any malformed part: this mail only
        skipped.append(
            (
                described,
                f"its attachments could not be read ({type(exc).__name__}); "
                "nothing of it was graded",
            )
        )
        return []


def unpack_mail(source: Path, into: Path, homework: str = "") -> Mailbag:
    """Write every mail's attachments under ``into`` (emptied first: it is the grader's own folder).
    A mail whose subject does not name ``homework`` is listed too, and its attachments graded."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    arrivals: dict[Path, Arrival] = {}
    skipped: list[tuple[str, str]] = []
    for number, (found_as, message) in enumerate(_messages(source), start=1):
        try:
            sender, subject, submitted = (
                str(message["From"] or "unknown sender"),
                str(message["Subject"] or ""),
                _date(message),
            )
        except Exception as exc:  # noqa: BLE001 - a header the mail parser cannot read stops only this mail
            skipped.append(
                (
                    found_as,
                    f"its headers could not be read ({type(exc).__name__}); "
                    "nothing of it was graded",
                )
            )
            continue
        described = f"{found_as} from {sender} «{subject}»"
        when = submitted.at.isoformat(timespec="minutes") if submitted else "no readable date"
        arrival = Arrival(
            submitted, f"came by mail from {sender} ({when}, subject «{subject}»)", _address(sender)
        )
        folder = into / f"mail-{number:04d}"
        written = []
        for sent_as, payload in _attachments(message, described, skipped):
            name = _safe_name(sent_as)
            if name is None or not isinstance(payload, bytes):
                continue
            if len(payload) > MAX_ATTACHMENT_BYTES:
                skipped.append(
                    (
                        f"{described}: {name}",
                        f"over {MAX_ATTACHMENT_BYTES // 2**20} MB; not unpacked",
                    )
                )
                continue
            path = folder / name
            if path in arrivals:
                skipped.append(
                    (
                        f"{described}: {name}",
                        "a second attachment of the same name in one mail; the first was kept",
                    )
                )
                continue
            try:
                folder.mkdir(exist_ok=True)
                path.write_bytes(payload)
            except OSError as exc:
                skipped.append(
                    (f"{described}: {name}", f"could not be written ({exc.strerror}); not unpacked")
                )
                continue
            if submitted is not None:
                os.utime(path, (submitted.at.timestamp(), submitted.at.timestamp()))
            arrivals[path] = arrival
            written.append(path)
        if not written:
            skipped.append((described, "no attachment to grade"))
        elif homework and not _names_homework(subject, homework):
            skipped.append(
                (
                    described,
                    f"its subject does not name {homework} (the handout asks for "
                    f"<name>_{homework}); its attachments were graded all the same",
                )
            )
    return Mailbag(into, arrivals, tuple(skipped))
