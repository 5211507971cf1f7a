"""Submissions by mail: an mbox (or .eml files) graded to the right accounts, dated by the mails,
the newest of a student's mails used, and every mail with nothing to grade listed."""

from __future__ import annotations

import dataclasses
import mailbox
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from pdfs import make_pdf

from grader.intake.mail import is_mail, unpack_mail
from grader.model.context import Context
from grader.model.rubric import LatePolicy
from grader.pipeline.batch import grade_directory
from grader.pipeline.executors.local import LocalExecutor
from grader.run.slots import plan_slots

FIXTURES = Path(__file__).parent / "fixtures"
TAIPEI = timezone(timedelta(hours=8))
DEADLINE = datetime(2024, 7, 21, 23, 59, tzinfo=TAIPEI)


def _mail(sender: str, subject: str, when: datetime, files: dict[str, bytes]) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, "ta@course.edu", subject
    message["Date"] = format_datetime(when)
    message.set_content("HW3 attached.")
    for name, data in files.items():
        kind = ("application", "pdf") if name.endswith(".pdf") else ("application", "octet-stream")
        message.add_attachment(data, maintype=kind[0], subtype=kind[1], filename=name)
    return message


def _class_mails(tmp_path: Path) -> list[EmailMessage]:
    code = (FIXTURES / "HW3_tinyok.py").read_bytes()
    report = make_pdf(tmp_path / "r.pdf", ["Best accuracy: 88.00%"]).read_bytes()
    return [
        _mail(
            "王小明 <amy@uni.edu>",
            "王小明_HW3",
            DEADLINE - timedelta(days=1),
            {"HW3_amy01.py": code, "HW3_Report_amy01.pdf": report},
        ),
        _mail(
            "Bob <bob@uni.edu>", "鮑伯_HW3", DEADLINE + timedelta(hours=30), {"HW3_bob02.py": code}
        ),
        _mail(
            "王小明 <amy@uni.edu>",
            "Re: 王小明_HW3 (fixed)",
            DEADLINE - timedelta(hours=2),
            {"HW3_amy01.py": code + b"\nprint('resubmitted')\n"},
        ),
        _mail("Cat <cat@uni.edu>", "HW3", DEADLINE - timedelta(hours=5), {}),
        _mail(
            "Dan <dan@uni.edu>",
            "homework",
            DEADLINE - timedelta(hours=3),
            {"homework3.py": code, "../../etc/x.py": b"x"},
        ),
    ]


def test_an_mbox_grades_to_the_right_accounts_with_the_right_dates(
    tmp_path: Path, tiny_context: Context
) -> None:
    box = mailbox.mbox(tmp_path / "class.mbox")
    for message in _class_mails(tmp_path):
        box.add(message)
    box.flush()
    assert is_mail(tmp_path / "class.mbox")
    rubric = dataclasses.replace(tiny_context.rubric, deadline=DEADLINE, late=LatePolicy(10, 0))
    # static: the round trip, not the runs
    context = dataclasses.replace(tiny_context, rubric=rubric, dataset=None)
    out = tmp_path / "out"
    summary = grade_directory(
        tmp_path / "class.mbox", out, context, LocalExecutor(plan_slots(1, 2, (), 1, 1))
    )
    results = {r.student: r for r in summary.results}
    assert sorted(results) == ["amy01", "bob02"]
    amy, bob = results["amy01"], results["bob02"]
    assert (
        amy.late_days == 0 and "late" not in amy.flags and amy.report_pdf == "HW3_Report_amy01.pdf"
    )
    # the newest mail
    assert any("came by mail from 王小明 <amy@uni.edu>" in n and "(fixed)" in n for n in amy.notes)
    assert bob.late_days == 2 and "late" in bob.flags
    assert any("by its mail date" in n and "2 started days late" in n for n in bob.notes)
    skipped = dict(summary.skipped)
    assert any("older, different copy of amy01" in why for why in skipped.values())
    assert any(
        "Cat <cat@uni.edu>" in name and why == "no attachment to grade"
        for name, why in skipped.items()
    )
    # a wrong name: listed, not dropped
    assert any(name.endswith("homework3.py") for name in skipped)
    # Dan's subject "homework" does not name HW3: listed; every other subject does
    # (鮑伯_HW3, Re: ..., HW3).
    wrong_subject = [name for name, why in skipped.items() if "subject does not name HW3" in why]
    assert len(wrong_subject) == 1 and "Dan <dan@uni.edu>" in wrong_subject[0]
    # a path in a name stays a name
    assert not (out / "etc").exists() and not (tmp_path / "etc").exists()
    unpacked = {p.name for p in (out / "unpacked" / "mail").rglob("*") if p.is_file()}
    assert unpacked == {
        "HW3_amy01.py",
        "HW3_Report_amy01.pdf",
        "HW3_bob02.py",
        "homework3.py",
        "x.py",
    }


def test_a_folder_of_eml_files_is_mail_and_a_class_folder_is_not(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    for number, message in enumerate(_class_mails(tmp_path)[:2]):
        (folder / f"{number}.eml").write_bytes(bytes(message))
    assert is_mail(folder)
    bag = unpack_mail(folder, tmp_path / "u")
    assert sorted(p.name for p in bag.arrivals) == [
        "HW3_Report_amy01.pdf",
        "HW3_amy01.py",
        "HW3_bob02.py",
    ]
    late = next(a for p, a in bag.arrivals.items() if p.name == "HW3_bob02.py")
    assert late.submitted is not None and late.submitted.at == DEADLINE + timedelta(hours=30)
    from grader.intake.mail import _names_homework

    assert [
        _names_homework(s, "HW3")
        for s in ("楊荏宏_HW3", "hw 3 楊", "Re: HW-3", "HW3.", "HW31", "HW13", "hw")
    ] == [True, True, True, True, False, False, False]
    (folder / "HW3_x.py").write_text("x = 1\n")
    assert not is_mail(folder)  # a class folder with a stray mail in it


def test_a_mail_the_parser_chokes_on_or_a_long_name_costs_only_itself(tmp_path: Path) -> None:
    """`From: <` makes the header parser raise; a 300-character attachment name is longer than a
    file
    system takes. Each is one listed line; the other mails are unpacked."""
    code = (FIXTURES / "HW3_tinyok.py").read_text().replace("\nFrom ", "\n>From ")

    def raw(sender: str, name: str) -> str:
        return (
            f"From MAILER-DAEMON Mon Jul 20 10:00:00 2026\nFrom: {sender}\nSubject: x_HW3\n"
            "Date: Mon, 20 Jul 2026 10:00:00 +0800\nMIME-Version: 1.0\nContent-Type: "
            "multipart/mixed; boundary=BB\n\n"
            "--BB\nContent-Type: text/plain\n\nhi\n--BB\nContent-Type: text/x-python\n"
            f'Content-Disposition: attachment; filename="{name}"\n\n{code}\n--BB--\n\n'
        )

    box = tmp_path / "class.mbox"
    box.write_text(
        raw("amy <amy@uni.edu>", "HW3_amy01.py")
        + raw("<", "HW3_bob02.py")
        + raw("cat <cat@uni.edu>", "m" * 300 + ".py")
    )
    bag = unpack_mail(box, tmp_path / "u", "HW3")
    names = sorted(p.name for p in bag.arrivals)
    assert (
        names[0] == "HW3_amy01.py"
        and len(names) == 2
        and len(names[1]) <= 120
        and names[1].endswith(".py")
    )
    assert bag.skipped == (
        ("mail 2", "its headers could not be read (IndexError); nothing of it was graded"),
    )


def test_the_servers_stamp_dates_a_mail_and_another_senders_copy_is_flagged(
    tmp_path: Path, tiny_context: Context
) -> None:
    """A sender writes `Date:` themselves; the receiving server's `Received:` stamp on top is what
    counts. A classmate's later mail carrying amy01's file replaces it (the newest is graded), and
    the result says so: the flag sender-mismatch and both addresses."""
    code = (FIXTURES / "HW3_tinyok.py").read_bytes()
    backdated = _mail(
        "Larry <larry@uni.edu>", "賴瑞_HW3", DEADLINE - timedelta(days=1), {"HW3_larry03.py": code}
    )
    backdated["Received"] = (
        f"from mail.uni.edu by mx.course.edu; {format_datetime(DEADLINE + timedelta(days=3))}"
    )
    box = mailbox.mbox(tmp_path / "class.mbox")
    for message in (
        backdated,
        _mail(
            "Amy <amy@uni.edu>", "王小明_HW3", DEADLINE - timedelta(days=2), {"HW3_amy01.py": code}
        ),
        _mail(
            "Mallory <mal@evil.example>",
            "HW3",
            DEADLINE - timedelta(days=1),
            {"HW3_amy01.py": code + b"\nn_epochs = 12\n"},
        ),
    ):
        box.add(message)
    box.flush()
    rubric = dataclasses.replace(tiny_context.rubric, deadline=DEADLINE, late=LatePolicy(10, 0))
    context = dataclasses.replace(tiny_context, rubric=rubric, dataset=None)
    summary = grade_directory(
        tmp_path / "class.mbox",
        tmp_path / "out",
        context,
        LocalExecutor(plan_slots(1, 2, (), 1, 1)),
    )
    results = {r.student: r for r in summary.results}
    larry, amy = results["larry03"], results["amy01"]
    assert larry.late_days == 3 and "late" in larry.flags
    assert any("by its mail's arrival time (Received)" in n for n in larry.notes)
    assert "sender-mismatch" in amy.flags and "sender-mismatch" not in larry.flags
    assert any("came from mal@evil.example" in n and "amy@uni.edu" in n for n in amy.notes)


def test_an_identical_copy_from_another_sender_is_not_other_copies(
    tmp_path: Path, tiny_context: Context
) -> None:
    """Two senders mail the same bytes for one account: sender-mismatch (who sent what), but no
    other-copies, which says that copies differ (a sender's note alone once raised it)."""
    code = (FIXTURES / "HW3_tinyok.py").read_bytes()
    box = mailbox.mbox(tmp_path / "class.mbox")
    box.add(_mail("Amy <amy@uni.edu>", "HW3", DEADLINE - timedelta(days=2), {"HW3_amy01.py": code}))
    box.add(
        _mail(
            "Amy <amy.wang@gmail.com>", "HW3", DEADLINE - timedelta(days=1), {"HW3_amy01.py": code}
        )
    )
    box.flush()
    context = dataclasses.replace(tiny_context, dataset=None)
    summary = grade_directory(
        tmp_path / "class.mbox",
        tmp_path / "out",
        context,
        LocalExecutor(plan_slots(1, 2, (), 1, 1)),
    )
    amy = summary.results[0]
    assert "sender-mismatch" in amy.flags and "other-copies" not in amy.flags, (
        amy.flags,
        amy.notes,
    )
