"""The records passed between pipeline stages, and the result JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.evaluator.key import FASHION_MNIST
from grader.model.findings import Finding, Flag, flags_of, notes_of

if TYPE_CHECKING:
    from grader.model.probe_facts import ProbeFacts


class Status(str, Enum):
    GRADED = "graded"
    VIOLATION = "violation"
    # what the grade rests on could not be established: a person decides (the reason says what)
    REVIEW = "review"
    ERROR = "error"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Check:
    """One rule's verdict. ``ok`` is None when static analysis cannot decide."""

    id: str
    ok: bool | None
    message: str
    file: str | None = None
    cell: int | None = None
    line: int | None = None
    stage: str = "static"  # "static" (the code as written) or "run" (what the run recorded)
    # (line as the student counts it, its text) around ``line``
    excerpt: tuple[tuple[int, str], ...] = ()
    instead: str = ""  # a broken rule's: what the student may change instead (the rule's own text)
    # where, as the student finds it (Submission.where): 'code cell 3 ("class Net…"), line 10'
    place: str = ""

    @property
    def violated(self) -> bool:
        return self.ok is False

    @property
    def text(self) -> str:
        """The message without the place it starts with, for where the place is shown beside it."""
        prefix = f"{self.place}: "
        return (
            self.message[len(prefix) :]
            if self.place and self.message.startswith(prefix)
            else self.message
        )


@dataclass(frozen=True)
class StaticReport:
    checks: tuple[Check, ...]
    # evidence that the code reaches into the grader (see tamper.py)
    tampering: tuple[str, ...] = ()
    reachable: tuple[str, ...] = ()  # weaker signs: code that can reach the grader's objects
    # why the code's literal data sends a graded result to review (tamper.py)
    literal_data: str | None = None


class _Found:
    """A record that carries findings: its flags and its notes, read off them."""

    findings: tuple[Finding, ...]

    @property
    def flags(self) -> tuple[Flag, ...]:
        return flags_of(self.findings)

    @property
    def notes(self) -> tuple[str, ...]:
        return notes_of(self.findings)


@dataclass(frozen=True)
class ExecutionRecord(_Found):
    """What running a submission produced. The executed notebook lies in a folder of the grader's
    own."""

    status: Status  # GRADED here means "ran to the end"
    reason: str | None
    failed_cell: int | None
    duration_s: float
    executed_notebook: Path | None
    probe: ProbeFacts | None  # the probe's record, parsed and checked (model/probe_facts.py)
    outputs_text: str  # everything the notebook printed, for the reported accuracy
    findings: tuple[Finding, ...] = ()
    # the graded pass captured (untrusted bytes; run/evaluate.py)
    capture: bytes | None = field(default=None, repr=False)
    # of all the run's processes together (where a cgroup measured it)
    peak_memory_mb: float | None = None


@dataclass(frozen=True, kw_only=True)
class Fit:
    """The graded model on a secret sample of the official training images (judge/fit.py),
    percent."""

    sample: int
    sample_accuracy: float
    trained: int  # of the sample, images the run trained on (the probe's reading)
    trained_accuracy: float | None
    held_out: int
    held_out_accuracy: float | None


@dataclass(frozen=True)
class Measurement(_Found):
    accuracy: float | None
    reported_accuracy: float | None
    correct: int | None
    total: int | None
    source: str | None  # "student-test-pass" or "probe-pass"
    findings: tuple[Finding, ...]
    problem: str | None = None  # why there is no accuracy, when the run itself went fine
    # [true class][predicted class] of the graded predictions
    confusion: tuple[tuple[int, ...], ...] | None = None
    # surest mistakes: (test index, label, predicted, confidence)
    wrong: tuple[tuple[int, int, int, float], ...] = ()
    # why the accuracy cannot be established (judge/recompute.py): the result goes to review
    review: str | None = None
    # the accuracy is the trusted evaluator's, from the captured pass (judge/recompute.py)
    recomputed: bool = False
    # evidence the kernel's record was bent (its predictions differ from the recomputed)
    tampering: tuple[str, ...] = ()
    # the graded model on the training images, by the trusted evaluator (judge/fit.py)
    fit: Fit | None = None


# characters of any one text a result shows the TA (a reason, a note, a rule's message)
TEXT_LIMIT = 400


def cut(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` as a result keeps it: at most ``limit`` characters, saying how many were cut (a
    notebook controls its error messages; the full text, capped, stays in the executed notebook)."""
    # cut already
    if len(text) <= limit or (len(text) <= limit + 40 and text.endswith(" characters cut)")):
        return text
    return f"{text[:limit]}... ({len(text) - limit} characters cut)"


@dataclass(frozen=True)
class Score:
    status: Status
    score: int
    max_score: int
    bonus: int
    reason: str | None
    # review: the (points, bonus) withheld, what the measurement would give
    pending: tuple[int, int] | None = None


@dataclass(frozen=True)
class SeedRun:
    """One run of a borderline submission with one seed (grader.scoring.seeds): what it measured,
    not a result."""

    seed: int
    status: Status
    accuracy: float | None
    correct: int | None
    total: int | None
    reported_accuracy: float | None = None  # what the notebook printed in this run
    reason: str | None = None  # why it failed or which rule it broke
    flags: tuple[Flag, ...] = ()  # what that run raised (grading it like any run)

    def __post_init__(self) -> None:
        if self.reason is not None:
            object.__setattr__(self, "reason", cut(self.reason))

    @property
    def counted(self) -> bool:
        """Whether the seed policy may use it: it ran to the end, broke no rule and was measured
        (grader.scoring.seeds also leaves out a re-run raising a flag the rubric seed's run did
        not)."""
        return self.status is Status.GRADED and self.correct is not None and bool(self.total)

    def counts_beside(self, first: SeedRun) -> bool:
        """Whether its accuracy may be used beside the rubric seed's run ``first``: counted, and
        raising
        no flag ``first`` did not (a notebook that reads its seed and, say, trains on the test
        images
        only under the others must not win by it)."""
        return self.counted and set(self.flags) <= set(first.flags)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SeedRun:
        known = {
            f: data.get(f) for f in ("accuracy", "correct", "total", "reported_accuracy", "reason")
        }
        return cls(
            seed=int(data["seed"]),
            status=Status(data["status"]),
            flags=tuple(Flag(f) for f in data.get("flags", ())),
            **known,
        )


@dataclass(frozen=True)
class Result:
    """One student's result; ``to_json`` is the stable contract of ARCHITECTURE.md."""

    student: str
    source: str
    status: Status
    accuracy: float | None
    reported_accuracy: float | None
    score: int
    max_score: int
    bonus: int
    checks: tuple[Check, ...]
    flags: tuple[Flag, ...]
    duration_s: float
    reason: str | None = None
    measured_by: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    report_pdf: str | None = None
    peak_memory_mb: float | None = None
    # what it was graded from; a batch re-run reuses it while this matches
    cache_key: str | None = None
    submitted_at: str | None = None  # ISO time it came in (commit or file time), where known
    # started days after the rubric's deadline (0: on time); None: no deadline
    late_days: int | None = None
    # [true class][predicted class], where measured
    confusion: tuple[tuple[int, ...], ...] | None = None
    environment: str | None = None  # what ran it: torch, torchvision, device, threads, seed
    # the graded model's loss and learning rate per step (run_facts.training_curve)
    curve: dict[str, Any] | None = None
    # test images predicted right by the run with the rubric's seed, where measured
    correct: int | None = None
    total: int | None = None  # test images of that measurement
    # a borderline result's runs, the rubric's seed first (grader.scoring.seeds)
    seed_runs: tuple[SeedRun, ...] = ()
    seed_policy: str | None = None  # the rubric's seed_policy that chose the run giving the points
    seed_accuracy: float | None = None  # the accuracy of the run the points came from
    seed_chosen: int | None = None  # that run's seed
    # surest mistakes: (official test index, label, predicted, confidence)
    wrong: tuple[tuple[int, int, int, float], ...] = ()
    # their pixels from the official file, base64, channel by channel, of wrong_shape each
    wrong_images: str | None = None
    wrong_shape: tuple[int, int, int] = FASHION_MNIST.shape  # channels, height, width
    # printed in the outputs saved in the submitted notebook (the student's run)
    saved_accuracy: float | None = None
    report_accuracy: float | None = None  # "Best accuracy: xx%" on the report PDF's first page
    # the graded model on a secret sample of the training images (judge/fit.py)
    fit: Fit | None = None

    def __post_init__(self) -> None:
        # Every text the TA reads from a result is bounded, however it was built (TEXT_LIMIT).
        if self.reason is not None:
            object.__setattr__(self, "reason", cut(self.reason))
        object.__setattr__(self, "notes", tuple(cut(note) for note in self.notes))
        object.__setattr__(
            self,
            "checks",
            tuple(
                replace(c, message=cut(c.message)) if len(c.message) > TEXT_LIMIT else c
                for c in self.checks
            ),
        )

    # the accuracy was recomputed outside the notebook's process (run/evaluate.py)
    recomputed: bool = False
    pending_score: int | None = None  # review: the automatic points withheld until a person decides
    pending_bonus: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["checks"] = [asdict(c) for c in self.checks]
        data["flags"] = list(self.flags)
        data["notes"] = list(self.notes)
        data["seed_runs"] = [run.to_json() for run in self.seed_runs]
        return data

    @property
    def counted_runs(self) -> tuple[SeedRun, ...]:
        """The seed runs whose accuracy the policy may use (SeedRun.counts_beside the rubric
        seed's)."""
        return tuple(run for run in self.seed_runs if run.counts_beside(self.seed_runs[0]))

    @property
    def seed_spread(self) -> tuple[float, float] | None:
        """(lowest, highest) accuracy of the seed runs the policy counts; None without seed runs."""
        counted = [run.accuracy for run in self.counted_runs if run.accuracy is not None]
        return (min(counted), max(counted)) if counted else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        fields = dict(data)
        fields["status"] = Status(fields["status"])
        fields["checks"] = tuple(
            Check(**{**c, "excerpt": tuple((int(n), str(t)) for n, t in c.get("excerpt", ()))})
            for c in fields.get("checks", [])
        )
        fields["flags"] = tuple(Flag(f) for f in fields.get("flags", []))
        fields["notes"] = tuple(fields.get("notes", []))
        if fields.get("confusion") is not None:
            fields["confusion"] = tuple(tuple(int(n) for n in row) for row in fields["confusion"])
        fields["seed_runs"] = tuple(SeedRun.from_json(run) for run in fields.get("seed_runs", []))
        fields["wrong"] = tuple(
            (int(i), int(y), int(p), float(c)) for i, y, p, c in fields.get("wrong", ())
        )
        fields["fit"] = Fit(**fields["fit"]) if fields.get("fit") else None
        if "wrong_shape" in fields:
            channels, height, width = (int(n) for n in fields["wrong_shape"])
            fields["wrong_shape"] = channels, height, width
        return cls(**fields)

    def write(self, path: Path) -> None:
        """Write atomically, so a killed batch never leaves half a file."""
        write_atomic(path, (json.dumps(self.to_json(), indent=2) + "\n").encode())

    @classmethod
    def read(cls, path: Path) -> Result:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


def failed_result(
    account: str, source: Path, reason: str, max_score: int, status: Status = Status.ERROR
) -> Result:
    """A result for a submission that could not be graded at all (``review``: a person must first
    say
    which file it is)."""
    return Result(
        student=account,
        source=source.name,
        status=status,
        accuracy=None,
        reported_accuracy=None,
        score=0,
        max_score=max_score,
        bonus=0,
        checks=(),
        flags=(),
        duration_s=0.0,
        reason=reason,
    )


def write_atomic(path: Path, content: bytes) -> None:
    """Write, flush to disk, then rename: after a crash or power loss the file is whole or
    absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
