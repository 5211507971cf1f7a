"""What a result tells the TA besides its points: every flag (one enum, each with its meaning),
the rules' ids, and ``Finding``, the one way any stage raises a flag or leaves a note."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


class _Name(str, Enum):
    """A name written as its value in text, JSON and templates."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class RuleId(_Name):
    """The homework's frozen items: the rubric's ``frozen`` names them, the rules table implements
    them."""

    EPOCHS = "epochs"
    VALID_SIZE = "valid_size"
    # the template's weight layers kept: HW3's name (a template of Linear layers only), or the
    # same rule under the name for a template with other weight layers (nn.Conv2d); a rubric
    # names one of the two
    LINEAR_LAYERS = "linear_layers"
    WEIGHT_LAYERS = "weight_layers"


HIDDEN_LABELS_NOTE = (
    "the test labels were hidden from the notebook, so its printed accuracy is not compared"
)
RULE_BROKEN = "rule broken: "  # how a violation's reason begins


class Flag(_Name):
    """Every flag a result can carry. The README's list of flags is checked against ``MEANING``."""

    # How the files came in (intake)
    OTHER_COPIES = "other-copies"
    SCRIPT_DIFFERS = "script-differs"
    SENDER_MISMATCH = "sender-mismatch"
    LATE = "late"
    # The run (run/)
    OUTPUT_TRUNCATED = "output-truncated"
    MEMORY_LIMIT = "memory-limit"
    PROBE_FILE_REJECTED = "probe-file-rejected"
    # The measurement (judge/)
    NO_TEST_PASS = "no-test-pass"
    ASSUMED_PREPROCESSING = "assumed-preprocessing"
    PROBE_OUTPUT_INVALID = "probe-output-invalid"
    STALE_TEST_PASS = "stale-test-pass"
    TEST_PASS_INCOMPLETE = "test-pass-incomplete"
    SEVERAL_MODELS = "several-models"
    TEST_SET_SELECTION = "test-set-selection"
    TRAINED_ON_TEST_IMAGES = "trained-on-test-images"
    TRAINING_UNWATCHED = "training-unwatched"
    NO_REPORTED_ACCURACY = "no-reported-accuracy"
    REPORTED_ACCURACY_MISMATCH = "reported-accuracy-mismatch"
    REPORT_ACCURACY_DIFFERS = "report-accuracy-differs"
    # The rules (static/rules/)
    EARLY_STOPPING = "early-stopping"
    TRAINING_NOT_FOLLOWED = "training-not-followed"
    STATIC_RUN_DISAGREE = "static-run-disagree"
    # Tampering (static/tamper.py, judge/tamper.py)
    PROBE_TAMPERED = "probe-tampered"
    PROBE_REACHABLE = "probe-reachable"
    LITERAL_DATA = "literal-data"
    # Borderline seeds (scoring/seeds.py)
    SEED_RERUN_EXCLUDED = "seed-rerun-excluded"

    @property
    def meaning(self) -> str:
        return MEANING[self]


MEANING: dict[Flag, str] = {
    Flag.OTHER_COPIES: "several copies of a file were found and they differ; the newest was graded",
    Flag.SCRIPT_DIFFERS: "the .py kept beside the graded .ipynb has other code than the notebook",
    Flag.SENDER_MISMATCH: "one account's files came in mails from more than one sender address",
    Flag.LATE: "submitted after the rubric's deadline; the late policy was applied",
    Flag.OUTPUT_TRUNCATED: "the notebook printed more than limits.max_output_mb; the rest was cut",
    Flag.MEMORY_LIMIT: "the run reached the memory limit of all its processes together",
    Flag.PROBE_FILE_REJECTED: "the probe's record was not a plain file of the sandbox's user "
    "within the cap",
    Flag.NO_TEST_PASS: "the model was never seen predicting the test images; the grader predicted "
    "them itself",
    Flag.ASSUMED_PREPROCESSING: "the grader's own test pass had to assume the test images' "
    "preprocessing",
    Flag.PROBE_OUTPUT_INVALID: "the probe's record of the graded test pass could not be read",
    Flag.STALE_TEST_PASS: "the last test pass does not show the final model; the grader predicted "
    "with the final one",
    Flag.TEST_PASS_INCOMPLETE: "the notebook's test pass did not cover every test image; the "
    "grader completed it",
    Flag.SEVERAL_MODELS: "several models predicted the test images together; the last one alone "
    "was graded",
    Flag.TEST_SET_SELECTION: "a model or checkpoint was chosen after test passes (selection on the "
    "test set)",
    Flag.TRAINED_ON_TEST_IMAGES: "optimizer steps followed test images going through the model in "
    "training mode",
    Flag.TRAINING_UNWATCHED: "optimizer steps ran inside a data loader's fetch, where the probe "
    "does not watch",
    Flag.NO_REPORTED_ACCURACY: "no printed test accuracy was found in the notebook's output",
    Flag.REPORTED_ACCURACY_MISMATCH: (
        "the printed test accuracy differs from the measured one by more than the tolerance "
        "(labels hidden: it is above chance, so it was not computed on the test set)"
    ),
    Flag.REPORT_ACCURACY_DIFFERS: 'the report PDF\'s "Best accuracy" differs from the measured '
    "one beyond the tolerance",
    Flag.EARLY_STOPPING: "a complete run trained fewer epochs than the homework fixes (rubric: "
    "early_stopping: flag)",
    Flag.TRAINING_NOT_FOLLOWED: "the optimizer stepped over images the grader could not match to "
    "the training set",
    Flag.STATIC_RUN_DISAGREE: "the static and the run-time verdicts of a rule differ (the run's "
    "counts)",
    Flag.PROBE_TAMPERED: (
        "evidence honest code cannot produce (code reaching into the probe, the probe changed, or "
        "the kernel's record unlike the grader's own run beyond its arithmetic): "
        "an error, graded by the TA"
    ),
    Flag.PROBE_REACHABLE: "the code can reach the grader's objects (e.g. a gc.get_objects() walk); "
    "only flagged",
    Flag.LITERAL_DATA: "the code's text holds kilobytes of data beyond the template's (strings, "
    "comments, docstrings, numbers, names): to review",
    Flag.SEED_RERUN_EXCLUDED: "a borderline re-run with another seed failed, broke a rule or "
    "raised a new flag",
}


@dataclass(frozen=True)
class Finding:
    """Something the TA should know: a flag (None: a note alone) and the one line that explains
    it."""

    flag: Flag | None
    note: str | None = None


def flags_of(findings: Iterable[Finding]) -> tuple[Flag, ...]:
    """The distinct flags, in the order first raised."""
    return tuple(dict.fromkeys(f.flag for f in findings if f.flag is not None))


def notes_of(findings: Iterable[Finding]) -> tuple[str, ...]:
    """The notes, in order."""
    return tuple(f.note for f in findings if f.note)


def noted(notes: Iterable[str]) -> tuple[Finding, ...]:
    """Notes that raise no flag."""
    return tuple(Finding(None, note) for note in notes)
