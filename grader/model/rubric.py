"""Load rubric.yaml into typed, validated dataclasses. Errors name the field."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from grader.model.datasets import KINDS, DataChoice
from grader.model.errors import RubricError
from grader.model.findings import RuleId

EARLY_STOPPING = ("flag", "violation", "allowed")
TEST_IN_TRAINING = ("violation", "flag")  # a training step whose rows included test images
# which run of a borderline result's seeds decides its points
SEED_POLICIES = ("fixed", "median", "best")
LAYER_GROUPS = ("normalization", "dropout", "activation")


@dataclass(frozen=True)
class LatePolicy:
    """What a late submission costs: a percentage of its automatic points per started day late,
    and the day count from which it gets none (0: never)."""

    penalty_per_day: float = 0.0
    zero_after_days: int = 0


@dataclass(frozen=True)
class Threshold:
    at_least: float
    points: int


@dataclass(frozen=True)
class AccuracyPolicy:
    thresholds: tuple[Threshold, ...]  # ascending by at_least
    max_points: int
    bonus: Threshold
    report_points: int
    mismatch_tolerance: float
    # points from a threshold within which a result is listed as borderline
    borderline_margin: float = 0.3
    # what the frozen model reaches honestly at most: a test accuracy above goes to review
    ceiling: float | None = None

    @property
    def total_max(self) -> int:
        """The most a total can reach: the automatic points, the bonus and the report's."""
        return self.max_points + self.bonus.points + self.report_points


@dataclass(frozen=True)
class SimilarityPolicy:
    threshold: float = 0.85  # Jaccard of two submissions' own statements (the template's left out)
    min_lines: int = 8  # statements of its own a submission needs to be compared at all


@dataclass(frozen=True)
class FilePatterns:
    notebook: str
    script: str
    report: str
    # the account in the handed-out template's name ("template"): no student's
    handout: str | None = None

    def account_of(self, name: str) -> tuple[str, str] | None:
        """(account, kind) for a file name that matches a pattern, kind in notebook/script/report;
        None for a name that matches none, or names the handout (HW3_template.ipynb)."""
        for kind in ("report", "notebook", "script"):
            match = _pattern_regex(getattr(self, kind)).fullmatch(name)
            if match:
                return (
                    None
                    if match.group("account") == self.handout
                    else (match.group("account"), kind)
                )
        return None

    def is_handout(self, name: str) -> bool:
        """Whether ``name`` is the handed-out template's (a student submitting it forgot to rename
        it)."""
        return self.handout is not None and account_in(self, name) == self.handout


def account_in(patterns: FilePatterns, name: str) -> str | None:
    """The account a name matches, the handout's included."""
    found = replace(patterns, handout=None).account_of(name)
    return found[0] if found else None


@dataclass(frozen=True)
class Limits:
    total_timeout_s: float
    cell_timeout_s: float
    memory_mb: int
    max_processes: int
    max_file_mb: int
    max_output_mb: int
    scratch_mb: int  # each RAM-backed writable place of a sandbox: the work dir, /tmp, /dev/shm
    per_gpu_memory_mb: int  # a job's share of its GPU's memory; 0: no cap


@dataclass(frozen=True)
class LinearLayer:
    in_features: int | None
    out_features: int | None
    name: str | None  # attribute it is assigned to (fc1), when there is one


# A constructor argument as the template wrote it: a number, a bool, a string, a tuple of numbers
# (``kernel_size=(3, 3)``); None where it is not a constant.
ArgValue = int | float | str | tuple[int | float, ...] | None


@dataclass(frozen=True, kw_only=True)
class WeightLayer:
    """A weight layer the template builds (nn.Linear, nn.Conv1d, nn.Conv2d): its kind, the name it
    is assigned to (None in an nn.Sequential), and the arguments the template passes, by parameter
    name, positional ones first (defaults it leaves out are not listed)."""

    kind: str  # "Linear", "Conv1d", "Conv2d"
    name: str | None
    args: tuple[tuple[str, ArgValue], ...]

    def arg(self, name: str) -> ArgValue:
        """The argument ``name`` as given (None: not given, or not a constant)."""
        return dict(self.args).get(name)


@dataclass(frozen=True, kw_only=True)
class FrozenFacts:
    """What the reference template fixes (static/reference.py derives them from it)."""

    epochs_name: str
    epochs: int
    valid_name: str
    valid_size: float
    linear_layers: tuple[LinearLayer, ...]
    # the template's own text (static/tamper.code_text): a submission's is measured beyond it
    text: bytes = b""
    # every nn.Linear, nn.Conv1d and nn.Conv2d the template builds, in order (no rule reads them)
    weight_layers: tuple[WeightLayer, ...] = ()
    # the template's other top-level numeric constants (BATCH = 128), name -> value, in order
    constants: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Rubric:
    homework: str
    seed: int
    cpu_threads: int
    files: FilePatterns
    template: Path
    accuracy: AccuracyPolicy
    frozen: tuple[RuleId, ...]  # the rules of static/rules/ this course enforces
    allowed_layers: tuple[str, ...]
    violation_points: int
    limits: Limits
    hide_test_labels: bool  # the kernel gets the test labels shuffled (see ``for_grading``)
    # a complete run that trains fewer epochs than fixed: "flag", "violation" or "allowed"
    early_stopping: str
    allowed_packages: tuple[str, ...]
    path: Path
    deadline: datetime | None = None  # timezone-aware; None: no deadline
    similarity: SimilarityPolicy = SimilarityPolicy()
    late: LatePolicy = LatePolicy()
    # a borderline result run with more seeds: "fixed", "median" or "best" (grader.scoring.seeds)
    seed_policy: str = "fixed"
    labels_chosen: bool = True  # the rubric itself says ``test_labels``; else the command decides
    # test images in a training step: "violation" or "flag" (graded, flagged)
    test_in_training: str = "violation"
    # the torchvision dataset, its files' checksums and class names (none given: FashionMNIST)
    dataset: DataChoice = DataChoice()

    def for_grading(self) -> Rubric:
        """The rubric as `grader grade` and Gradescope use it: hidden test labels unless the rubric
        says ``test_labels: visible`` (`grader check` and `grader ci` keep visible ones by default,
        since there the student reads their own notebook's output)."""
        return self if self.labels_chosen else replace(self, hide_test_labels=True)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    head, _, tail = pattern.partition("{account}")
    # At most 64 characters: an account names files (OUT/results/<account>.json,
    # similar/<a>--<b>.html).
    return re.compile(
        re.escape(head) + r"(?P<account>[A-Za-z0-9][A-Za-z0-9_.-]{0,63}?)" + re.escape(tail)
    )


def default_rubric_path() -> Path:
    """--rubric, else $GRADER_RUBRIC, else ./rubric.yaml, else the one the grader ships."""
    env = os.environ.get("GRADER_RUBRIC")
    if env:
        return Path(env)
    here = Path("rubric.yaml")
    if here.is_file():
        return here
    from grader.model.resources import shipped

    return shipped("rubric.yaml")


class _Fields:
    """Typed access to one YAML mapping; every error names the dotted field. Every key read or
    looked up (``has``) is known; ``unknown()`` lists the others, which the rubric refuses."""

    def __init__(self, data: Any, where: str, opened: list[_Fields] | None = None) -> None:
        if not isinstance(data, dict):
            raise RubricError(f"rubric: {where or 'the file'} must be a mapping of fields")
        self.data = data
        self.where = where
        self.known: set[str] = set()
        # every mapping read, to check for unknown keys
        self.opened = opened if opened is not None else []
        self.opened.append(self)

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        self.known.add(key)
        return key in self.data

    def get(self, key: str) -> Any:
        self.known.add(key)
        if key not in self.data:
            near = difflib.get_close_matches(key, [str(k) for k in self.data], n=1, cutoff=0.75)
            hint = f" ({self._name(near[0])} is not a field: a typo?)" if near else ""
            raise RubricError(f"rubric: field {self._name(key)} is missing{hint}")
        return self.data[key]

    def unknown(self) -> str | None:
        """The first key nobody read, as an error line with the closest known name."""
        for key in self.data:
            if key not in self.known:
                near = difflib.get_close_matches(str(key), sorted(self.known), n=1, cutoff=0.6)
                hint = (
                    f"; did you mean {near[0]}?"
                    if near
                    else (f"; known here: {', '.join(sorted(self.known))}")
                )
                return f"rubric: {self._name(str(key))}: unknown field{hint}"
        return None

    def sub(self, key: str) -> _Fields:
        return _Fields(self.get(key), self._name(key), self.opened)

    def number(self, key: str, minimum: float = 0) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise RubricError(
                f"rubric: {self._name(key)} must be a number >= {minimum:g}, got {value!r}"
            )
        return float(value)

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise RubricError(
                f"rubric: {self._name(key)} must be an integer >= {minimum}, got {value!r}"
            )
        return value

    def text(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not value.strip():
            raise RubricError(
                f"rubric: {self._name(key)} must be a non-empty string, got {value!r}"
            )
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.get(key)
        if value not in allowed:
            raise RubricError(
                f"rubric: {self._name(key)} must be one of {', '.join(allowed)}, got {value!r}"
            )
        return str(value)

    def strings(self, key: str) -> list[str]:
        value = self.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RubricError(f"rubric: {self._name(key)} must be a list of strings, got {value!r}")
        return value


def _threshold(data: Any, where: str, opened: list[_Fields]) -> Threshold:
    fields = _Fields(data, where, opened)
    at_least = fields.number("at_least")
    if at_least > 100:
        raise RubricError(
            f"rubric: {where}.at_least is a test accuracy in percent (0-100), got {at_least:g}"
        )
    return Threshold(at_least=at_least, points=fields.integer("points"))


def _accuracy(fields: _Fields) -> AccuracyPolicy:
    raw = fields.get("thresholds")
    if not isinstance(raw, list) or not raw:
        raise RubricError(
            "rubric: accuracy.thresholds must be a non-empty list of {at_least, points}"
        )
    levels = [
        _threshold(item, f"accuracy.thresholds[{i}]", fields.opened) for i, item in enumerate(raw)
    ]
    for i, (low, high) in enumerate(zip(levels, levels[1:]), start=1):
        if high.at_least <= low.at_least or high.points < low.points:
            raise RubricError(
                f"rubric: accuracy.thresholds[{i}] must have a higher at_least and no fewer points "
                "than the one before"
            )
    max_points = fields.integer("max_points")
    if levels[-1].points > max_points:
        raise RubricError(
            f"rubric: accuracy.max_points ({max_points}) is below the top threshold's points"
        )
    return AccuracyPolicy(
        thresholds=tuple(levels),
        max_points=max_points,
        bonus=_threshold(fields.get("bonus"), "accuracy.bonus", fields.opened),
        report_points=fields.integer("report_points"),
        mismatch_tolerance=fields.number("mismatch_tolerance"),
        borderline_margin=fields.number("borderline_margin")
        if fields.has("borderline_margin")
        else 0.3,
        ceiling=_ceiling(fields, levels),
    )


def _ceiling(fields: _Fields, levels: list[Threshold]) -> float | None:
    if not fields.has("ceiling"):
        return None
    ceiling = fields.number("ceiling")
    if not levels[-1].at_least < ceiling <= 100:
        raise RubricError(
            "rubric: accuracy.ceiling is a test accuracy in percent above the top threshold "
            f"({levels[-1].at_least:g}) and at most 100, got {ceiling:g}"
        )
    return ceiling


def _files(fields: _Fields) -> FilePatterns:
    patterns = {key: fields.text(key) for key in ("notebook", "script", "report")}
    for key, pattern in patterns.items():
        if pattern.count("{account}") != 1:
            raise RubricError(
                f"rubric: files.{key} must contain {{account}} exactly once, got {pattern!r}"
            )
    return FilePatterns(**patterns)


def _allowed_layers(fields: _Fields) -> tuple[str, ...]:
    unknown = sorted(set(fields.data) - set(LAYER_GROUPS))
    if unknown:
        raise RubricError(
            f"rubric: allowed_layers.{unknown[0]} is not a group; use {', '.join(LAYER_GROUPS)}"
        )
    return tuple(
        name for group in LAYER_GROUPS if fields.has(group) for name in fields.strings(group)
    )


def _deadline(value: Any) -> datetime | None:
    """An ISO 8601 time with its offset ("2026-12-01T23:59:00+08:00"), or a time and a zone name
    ("2026-12-01 23:59 Asia/Taipei"); YAML may already have read the first as a datetime."""
    if value is None:
        return None
    example = 'e.g. "2026-12-01T23:59:00+08:00" or "2026-12-01 23:59 Asia/Taipei"'
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            head, _, zone = value.strip().rpartition(" ")
            try:
                parsed = datetime.fromisoformat(head).replace(tzinfo=ZoneInfo(zone))
            except (ValueError, ZoneInfoNotFoundError):
                raise RubricError(
                    f"rubric: deadline {value!r} is not a time with a time zone; {example}"
                ) from None
    else:
        raise RubricError(
            f"rubric: deadline must be a time with a time zone, {example}; got {value!r}"
        )
    if parsed.tzinfo is None:
        raise RubricError(f"rubric: deadline {value!s} has no time zone; {example}")
    return parsed


def _similarity(top: _Fields) -> SimilarityPolicy:
    if not top.has("similarity"):
        return SimilarityPolicy()
    fields = top.sub("similarity")
    threshold = fields.number("threshold")
    if threshold > 1:
        raise RubricError(
            f"rubric: similarity.threshold must be between 0 and 1, got {threshold:g}"
        )
    return SimilarityPolicy(threshold, fields.integer("min_lines", minimum=1))


def _late(top: _Fields) -> LatePolicy:
    if not top.has("late"):
        return LatePolicy()
    late = top.sub("late")
    return LatePolicy(
        penalty_per_day=late.number("penalty_per_day"),
        zero_after_days=late.integer("zero_after_days"),
    )


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _dataset(top: _Fields) -> DataChoice:
    """``dataset:``: the torchvision class by name, the sha256 of the TA's own copy of some of its
    files, its class names; without the section, FashionMNIST (HW3's)."""
    if not top.has("dataset"):
        return DataChoice()
    fields = top.sub("dataset")
    name = fields.choice("name", tuple(KINDS))
    kind, files = KINDS[name], []
    if fields.has("files"):
        given = fields.sub("files")
        for file, value in given.data.items():
            given.known.add(file)
            if file not in kind.files:
                raise RubricError(
                    f"rubric: dataset.files.{file} is not a file of {name}; "
                    f"its files: {', '.join(kind.files)}"
                )
            if not isinstance(value, str) or not _SHA256.fullmatch(value.lower()):
                raise RubricError(
                    f"rubric: dataset.files.{file} must be a sha256 (64 hex digits), got {value!r}"
                )
            files.append((str(file), value.lower()))
    classes = tuple(fields.strings("classes")) if fields.has("classes") else ()
    if fields.has("classes") and (len(classes) < 2 or len(set(classes)) != len(classes)):
        raise RubricError(
            f"rubric: dataset.classes must name two classes or more, each once, got {classes!r}"
        )
    choice = DataChoice(name=name, files=tuple(files), classes=classes)
    unknown = [f for f in kind.files if f not in choice.checksums()]
    if unknown:
        raise RubricError(
            f"rubric: dataset.files must give the sha256 of {name}'s {', '.join(unknown)}: "
            "the grader knows no checksum of them"
        )
    return choice


def parse_rubric(data: Any, path: Path) -> Rubric:
    """Validate parsed YAML; ``path`` anchors the relative paths inside it."""
    top = _Fields(data, "")
    rubric = _parse(top, path)
    for fields in top.opened:
        problem = fields.unknown()
        if problem is not None:
            raise RubricError(problem)
    bonus, levels = rubric.accuracy.bonus, rubric.accuracy.thresholds
    if bonus.points and bonus.at_least <= levels[-1].at_least:
        raise RubricError(
            f"rubric: accuracy.bonus.at_least ({bonus.at_least:g}) must be above the top threshold "
            f"({levels[-1].at_least:g})"
        )
    ceiling = rubric.accuracy.ceiling
    if ceiling is not None and bonus.points and ceiling <= bonus.at_least:
        raise RubricError(
            f"rubric: accuracy.ceiling ({ceiling:g}) must be above the bonus's "
            f"at_least ({bonus.at_least:g})"
        )
    return rubric


def _parse(top: _Fields, path: Path) -> Rubric:
    frozen = top.strings("frozen")
    known = [rule.value for rule in RuleId]
    for item in frozen:
        if item not in known:
            raise RubricError(
                f"rubric: frozen item {item!r} is unknown; allowed: {', '.join(known)}"
            )
    if RuleId.LINEAR_LAYERS in frozen and RuleId.WEIGHT_LAYERS in frozen:
        raise RubricError(
            "rubric: frozen lists linear_layers and weight_layers, two names of one rule "
            "(the template's weight layers); keep one"
        )
    limits = top.sub("limits")
    template = path.parent / top.sub("reference").text("template")
    files = _files(top.sub("files"))
    return Rubric(
        homework=top.text("homework"),
        seed=top.integer("seed"),
        cpu_threads=top.integer("cpu_threads", minimum=1),
        files=replace(files, handout=account_in(files, template.name)),
        template=template,
        accuracy=_accuracy(top.sub("accuracy")),
        frozen=tuple(RuleId(item) for item in frozen),
        allowed_layers=_allowed_layers(top.sub("allowed_layers")),
        violation_points=top.sub("on_violation").integer("automatic_points"),
        limits=Limits(
            total_timeout_s=limits.number("total_timeout_s", minimum=1),
            cell_timeout_s=limits.number("cell_timeout_s", minimum=1),
            memory_mb=limits.integer("memory_mb", minimum=256),
            max_processes=limits.integer("max_processes", minimum=16),
            max_file_mb=limits.integer("max_file_mb", minimum=1),
            max_output_mb=limits.integer("max_output_mb", minimum=1),
            scratch_mb=limits.integer("scratch_mb", minimum=64),
            per_gpu_memory_mb=limits.integer("per_gpu_memory_mb"),
        ),
        hide_test_labels=(
            top.has("test_labels") and top.choice("test_labels", ("visible", "hidden")) == "hidden"
        ),
        labels_chosen=top.has("test_labels"),
        early_stopping=top.choice("early_stopping", EARLY_STOPPING)
        if top.has("early_stopping")
        else "flag",
        allowed_packages=tuple(top.sub("environment").strings("allowed_packages")),
        path=path,
        deadline=_deadline(top.get("deadline") if top.has("deadline") else None),
        late=_late(top),
        similarity=_similarity(top),
        seed_policy=top.choice("seed_policy", SEED_POLICIES) if top.has("seed_policy") else "fixed",
        test_in_training=top.choice("test_in_training", TEST_IN_TRAINING)
        if top.has("test_in_training")
        else "violation",
        dataset=_dataset(top),
    )


def load_rubric(path: Path | None = None) -> Rubric:
    """Read and validate rubric.yaml (see ``default_rubric_path`` for where it is looked up); a
    homework's folder (``homeworks/hw4-cnn``) stands for the rubric.yaml in it, and a shipped
    homework's relative path is found where the grader is installed when it is not here."""
    from grader.model.resources import shipped

    path = path or default_rubric_path()
    if not path.exists() and not path.is_absolute() and shipped(str(path)).exists():
        path = shipped(str(path))
    if path.is_dir():
        path = path / "rubric.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RubricError(
            f"rubric: cannot read {path}: {exc.strerror}; pass --rubric FILE"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RubricError(f"rubric: {path} is not valid YAML{where} ({problem})") from None
    return parse_rubric(data, path.resolve())
