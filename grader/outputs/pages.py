"""The class's pages and gradebook: OUT/index.html, OUT/students/, gradebook.csv and the LMS
imports,
written from results (and rendered again from them by `grader report`); markup lives in
templates/."""

from __future__ import annotations

import csv
import json
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup

from grader.model.findings import HIDDEN_LABELS_NOTE, RULE_BROKEN, Flag
from grader.model.pairs import load as load_pairs
from grader.model.results import Check, Result, Status, cut, write_atomic
from grader.model.rubric import Rubric
from grader.outputs.class_summary import measured, summarize
from grader.outputs.exports import (
    CANVAS_FILE,
    KEPT_ROSTER,
    LMS_FILES,
    Roster,
    canvas_notes,
    csv_text,
    kept_roster,
    lms_files,
    missing,
)
from grader.outputs.plot_store import Plot, cached, class_histogram, prune, student_plots
from grader.outputs.text import render
from grader.scoring.overrides import Grade, Override, check_accounts, grades

GRADEBOOK_COLUMNS = (
    "account",
    "accuracy",
    "printed_accuracy",
    "automatic_score",
    "max_score",
    "bonus",
    "status",
    "flags",
    "report_present",
    "source",
    "reason",
    "submitted_at",
    "late_days",
    "override_points",
    "override_bonus",
    "report_points",
    "total",
    "total_max",
    "override_note",
    "seed_accuracies",
    "points_accuracy",
    "saved_accuracy",
    "report_accuracy",
    "pending_points",
)


def gradebook_csv(rows: list[Grade], rubric: Rubric, missing: Sequence[str] = ()) -> str:
    """One row per student, the columns a TA pastes into the LMS: the automatic result, what the
    TA set by hand (overrides.yaml) and the total beside the most it can be; a roster's student with
    no submission is `missing`. The automatic points columns (automatic_score, bonus, total) are
    filled once the points are decided and empty for a result to review that no override settled
    (pending_points says what it withholds); points_accuracy is the accuracy the scale was read at,
    empty wherever no accuracy gave the points (a violation, a failed run, a review)."""
    top = rubric.accuracy.total_max
    lines: list[list[object]] = []
    for g in rows:
        r, o = g.result, g.override
        decided = r.status is not Status.REVIEW
        lines.append(
            [
                r.student,
                _blank(r.accuracy, "{:.2f}"),
                _blank(r.reported_accuracy, "{:g}"),
                r.score if decided else "",
                r.max_score,
                r.bonus if decided else "",
                r.status.value,
                ";".join(r.flags),
                "yes" if r.report_pdf else "no",
                _cell(r.source),
                _cell(r.reason or ""),
                r.submitted_at or "",
                "" if r.late_days is None else r.late_days,
                _blank(o.points),
                _blank(o.bonus),
                _blank(o.report_points),
                g.total if g.settled else "",
                top,
                _cell(o.note or ""),
                *_seed_cells(r),
                _blank(r.saved_accuracy),
                _blank(r.report_accuracy),
                g.pending,
            ]
        )
    for account in missing:
        row = dict.fromkeys(GRADEBOOK_COLUMNS, "")
        row.update(
            account=account,
            status="missing",
            report_present="no",
            reason="no submission found",
            total_max=str(top),
        )
        lines.append(list(row.values()))
    return csv_text(GRADEBOOK_COLUMNS, lines)


def override_warnings(rows: list[Grade]) -> tuple[str, ...]:
    """What the TA typed that the results contradict: report points for a student with no report
    PDF."""
    return tuple(
        f"overrides: {g.result.student} gets report_points {g.override.report_points}, "
        "but no report PDF was found for them; check the report came in, or remove the points"
        for g in rows
        if g.override.report_points and not g.result.report_pdf
    )


def _seed_cells(r: Result) -> tuple[str, str]:
    """(each run's seed:accuracy, a failed or rule-breaking one as seed:status; the accuracy the
    automatic points came from: the seed policy's run, else the measured one of a graded result)."""
    runs = ";".join(
        f"{s.seed}:{s.accuracy:.2f}"
        if s.counted and s.accuracy is not None
        else f"{s.seed}:{s.status.value}"
        for s in r.seed_runs
    )
    used = r.seed_accuracy if r.seed_runs else r.accuracy if r.status is Status.GRADED else None
    return runs, "" if used is None else f"{used:.2f}"


def _cell(text: str) -> str:
    """Text a spreadsheet will not run as a formula (a student's exception message can start with
    =)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _blank(value: float | None, shape: str = "{}") -> str:
    return "" if value is None else shape.format(value)


def write_batch_reports(
    out: Path,
    results: list[Result],
    rubric: Rubric,
    skipped: list[tuple[str, str]],
    overrides: dict[str, Override] | None = None,
    roster: Roster | None = None,
) -> tuple[str, ...]:
    """OUT/gradebook.csv, OUT/index.html and OUT/students/<account>.html, from the results and the
    TA's overrides; with a roster, OUT/canvas.csv and OUT/moodle.csv for the columns it has;
    OUT/skipped.json keeps the files not graded, for `grader report` to show again. A page that
    cannot be rendered is replaced by one saying so, and the others are still written; an LMS file
    of an earlier run that this one does not write again is removed (its grades would be stale).
    Returns a line for the TA per such page and file."""
    rows = grades(results, overrides or {})
    write_atomic(out / "skipped.json", json.dumps(skipped).encode())
    absent = missing(roster, rows) if roster else []
    (out / "gradebook.csv").write_text(gradebook_csv(rows, rubric, absent), encoding="utf-8")
    failed: list[str] = []
    exports = lms_files(rows, roster, rubric.homework) if roster else {}
    for name in LMS_FILES:
        if name in exports:
            (out / name).write_text(exports[name], encoding="utf-8")
        elif (out / name).exists():
            (out / name).unlink()
            failed.append(
                f"removed {out / name} (written by an earlier run): "
                + (
                    "the roster has no columns for it"
                    if roster
                    else f"no roster to write it again from; run `grader report {out} --roster "
                    "FILE`"
                )
            )
    pairs = load_pairs(out)
    plots = {g.result.student: student_plots(g.result, rubric) for g in rows}  # in OUT/plots
    shown = [class_histogram(measured(rows), rubric), *(p for pair in plots.values() for p in pair)]

    def index() -> str:
        histogram = cached(out, shown[0])
        return render(
            "index.html.j2",
            rows=rows,
            rubric=rubric,
            skipped=skipped,
            summary=summarize(rows, rubric, histogram),
            pairs=pairs,
            absent=absent,
        )

    links = [("gradebook.csv", "the gradebook (CSV)")] + [
        (f"students/{g.result.student}.html", g.result.student) for g in rows
    ]
    (out / "index.html").write_text(
        _isolated(index, "the class page", rubric, failed, links=links)[0], encoding="utf-8"
    )
    similar = out / "similar"
    similar.mkdir(exist_ok=True)
    for pair in pairs:
        (similar / f"{pair.a}--{pair.b}.html").write_text(
            _isolated(
                lambda: render("similar.html.j2", p=pair, rubric=rubric),
                f"the page of {pair.a} and {pair.b}",
                rubric,
                failed,
                links=[("../index.html", "the class")],
            )[0],
            encoding="utf-8",
        )
    students, feedback = out / "students", out / "feedback"
    for folder in (students, feedback):
        folder.mkdir(parents=True, exist_ok=True)
    for g in rows:
        account = g.result.student
        links = [
            ("../index.html", "all students"),
            (f"../results/{account}.json", "raw result (JSON)"),
        ]
        ta, sent = _isolated(
            lambda: _student_pages(out, g, rubric, plots[account]),
            f"{account}'s page",
            rubric,
            failed,
            links,
        )
        (students / f"{account}.html").write_text(ta, encoding="utf-8")
        (feedback / f"{account}.html").write_text(sent, encoding="utf-8")
    _zip_feedback(feedback, [g.result.student for g in rows], out / "feedback.zip")
    prune(out, shown)
    return tuple(failed)


def _student_pages(
    out: Path, g: Grade, rubric: Rubric, plots: tuple[Plot, Plot]
) -> tuple[str, str]:
    """(the TA's page, the page sent back) of one student, plots read (or drawn) from OUT/plots."""
    result = g.result
    curve, wrong = (cached(out, plot) for plot in plots)
    notebook_html = (out / "executed" / f"{result.student}.html").is_file()
    ta, sent = (
        render(
            "student.html.j2",
            r=result,
            g=g,
            rubric=rubric,
            classes=rubric.dataset.class_names(),
            curve=curve,
            wrong=wrong,
            page=student_page(g, rubric, feedback, notebook_html),
            feedback=feedback,
        )
        for feedback in (False, True)
    )
    return ta, sent


def _isolated(
    draw: Callable[[], str | tuple[str, str]],
    what: str,
    rubric: Rubric,
    failed: list[str],
    links: list[tuple[str, str]],
) -> tuple[str, str]:
    """``draw()``'s page(s), or where it fails, a page saying in one line that ``what`` could not be
    rendered and why (added to ``failed``): one odd result never costs the class its pages. The
    second page is the one sent back to a student (their fallback names no cause and links
    nothing)."""
    try:
        drawn = draw()
        return (drawn, drawn) if isinstance(drawn, str) else drawn
    # whatever a renderer raises, including the grader's own bugs: said, not thrown
    except Exception as exc:
        why = cut(" ".join(f"{type(exc).__name__}: {exc}".split()), 200)
        failed.append(
            f"{what} could not be rendered ({why}); a page saying so was written in its place"
        )
        return (
            render("unrendered.html.j2", homework=rubric.homework, what=what, why=why, links=links),
            render("unrendered.html.j2", homework=rubric.homework, what=what, why=None, links=[]),
        )


def notebook_page(homework: str, account: str, body: str) -> str:
    """The executed notebook as a page of its own (``body``: nbconvert's sanitized cells)."""
    return render("notebook.html.j2", homework=homework, account=account, body=Markup(body))


def _zip_feedback(folder: Path, accounts: list[str], target: Path) -> None:
    """OUT/feedback.zip: every student's own page, for the TA to send back (one file per
    account)."""
    partial = target.with_suffix(".zip.part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for account in accounts:
            archive.write(folder / f"{account}.html", f"{account}.html")
    partial.replace(target)


# about mail addresses: not on the page sent to the student
TA_ONLY_FLAGS = frozenset({Flag.SENDER_MISMATCH})


@dataclass(frozen=True)
class StudentPage:
    """What a student's page leads with: its verdict's tone (the banner's colour and headline), then
    what needs the reader's action: broken and undecided rules, flags with their meaning."""

    tone: str  # the banner's colour: ``automatic``, or "graded" where the staff set the points
    automatic: str  # a status, or "mismatch": graded, but the notebook printed another accuracy
    overridden: bool  # the staff set the points (overrides.yaml): their decision leads the banner
    mismatch: bool  # flagged reported-accuracy-mismatch
    agrees: bool  # the printed accuracy is the measured one, within the rubric's tolerance
    broken: tuple[Check, ...]
    undecided: tuple[Check, ...]
    flags: tuple[Flag, ...]
    notebook_html: bool  # the executed notebook was rendered as a page beside its JSON
    # the banner's: a violation's without its "rule broken: " (the headline says it)
    reason: str | None
    notes: tuple[str, ...]  # the result's notes for the TA, less the one the banner already says


def student_page(
    g: Grade, rubric: Rubric, feedback: bool, notebook_html: bool = False
) -> StudentPage:
    """The lead of ``g``'s page; ``feedback``: the page sent to the student (no TA-only flags)."""
    r = g.result
    # The judge decides a mismatch (it knows when the test labels were hidden and the printed figure
    # is at chance); the page only says it, beside both figures (a result written before the judge
    # held to that can carry the flag without a measured accuracy).
    mismatch = (
        Flag.REPORTED_ACCURACY_MISMATCH.value in r.flags
        and r.reported_accuracy is not None
        and r.accuracy is not None
    )
    agrees = (
        r.reported_accuracy is not None
        and r.accuracy is not None
        and abs(r.reported_accuracy - r.accuracy) <= rubric.accuracy.mismatch_tolerance
    )
    graded_flagged = r.status is Status.GRADED and (mismatch or bool(r.flags))
    automatic = "mismatch" if graded_flagged else r.status.value
    broken = tuple(c for c in r.checks if c.ok is False)
    # A rule the run decided is not also listed as undecided statically (and the other way round).
    decided = {c.id for c in r.checks if c.ok is not None and c.stage == "run"}
    undecided = tuple(
        c for c in r.checks if c.ok is None and not (c.stage == "static" and c.id in decided)
    )
    flags = tuple(
        Flag(f)
        for f in r.flags
        if f in Flag._value2member_map_ and not (feedback and Flag(f) in TA_ONLY_FLAGS)
    )
    reason = (
        r.reason[len(RULE_BROKEN) :] if r.reason and r.reason.startswith(RULE_BROKEN) else r.reason
    )
    notes = tuple(n for n in r.notes if n != HIDDEN_LABELS_NOTE)
    return StudentPage(
        "graded" if g.overridden else automatic,
        automatic,
        g.overridden,
        mismatch,
        agrees,
        broken,
        undecided,
        flags,
        notebook_html,
        reason,
        notes,
    )


def rerender(
    out: Path, rubric: Rubric, overrides: dict[str, Override], roster: Roster | None = None
) -> tuple[str, ...]:
    """Every page and export again from OUT/results/*.json and the overrides, running nothing;
    returns what the TA should hear: how many results were read (a damaged one is skipped and
    listed), the pages that could not be rendered and, with a roster, who is graded but not in it
    and who is in it with no grade."""
    results, skipped = [], []
    for path in sorted((out / "results").glob("*.json")):
        try:
            results.append(Result.read(path))
        except (OSError, ValueError, TypeError, KeyError):
            skipped.append((path.name, "damaged result file; grade this student again"))
    try:
        stored = json.loads((out / "skipped.json").read_text(encoding="utf-8"))
        skipped += [(str(name), str(why)) for name, why in stored]
    except (OSError, ValueError, TypeError):
        pass
    check_accounts(overrides, {r.student for r in results})
    roster, kept = kept_roster(out, roster)
    unrendered = write_batch_reports(out, results, rubric, skipped, overrides, roster)
    said = [
        f"{len(results)} results in {out / 'results'}",
        *override_warnings(grades(results, overrides)),
        *unrendered,
    ]
    if roster is not None:
        graded = {r.student for r in results}
        outside = sorted(graded - set(roster.people))
        if outside:
            said.append(f"graded but not in the roster (no LMS row): {', '.join(outside)}")
        ungraded = sorted(set(roster.people) - graded)
        if ungraded:
            said.append(f"in the roster with no grade (no submission): {', '.join(ungraded)}")
        said += [*([kept] if kept else []), *canvas_notes(roster, rubric.homework, out)]
    return tuple(said)


@dataclass(frozen=True, kw_only=True)
class Written:
    """What a `grader grade` or `grader report` left in OUT, for its last lines (wrote.txt.j2)."""

    out: Path
    files: tuple[str, ...]  # of OUTPUTS, those in OUT after the run
    canvas_column: str | None  # canvas.csv's grade column


OUTPUTS = (
    "results",
    "gradebook.csv",
    "index.html",
    "students",
    "feedback.zip",
    *LMS_FILES,
    KEPT_ROSTER,
)


def written(out: Path, graded: bool, roster_given: bool) -> Written:
    """The outputs of a run over OUT, read back from OUT: its results/ where it ``graded``, the kept
    roster where one was given."""
    skip = {n for n, wrote in (("results", graded), (KEPT_ROSTER, roster_given)) if not wrote}
    files = tuple(n for n in OUTPUTS if (out / n).exists() and n not in skip)
    column = None
    if CANVAS_FILE in files:
        with (out / CANVAS_FILE).open(encoding="utf-8", newline="") as handle:
            column = next(csv.reader(handle), [""])[-1]
    return Written(out=out, files=files, canvas_column=column)
