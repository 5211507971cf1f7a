"""The probe's record parsed, once, into facts: the one place that reads it by key.

The record (declared in grader/probe/schema.py) is JSON the student's process could write, so
every field is checked here: a field of the wrong type, or missing, reads as the probe's "nothing
seen" (0, False, None, an empty set), exactly as the judges read it before this module (run_facts,
measure, tamper, the rules); a bit set or a byte string of the wrong length, or an item that is not
an object, is dropped. ``from_json`` refuses a record of another ``RECORD_VERSION``. What the
facts mean (lineage, the graded pass, staleness) is decided by the judges, never here.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grader.probe.schema import RECORD_VERSION

MAX_PASSES = 2000  # passes of each kind read from a record (the probe writes at most that many)
MAX_CURVE = 2000  # points of an optimizer's curve
MAX_STEP = 10**9  # optimizer steps a run could take; a forged record's larger numbers are dropped


class RecordRefused(ValueError):
    """The bytes are no record of this grader's probe (the message says why, in one line)."""


@dataclass(frozen=True, kw_only=True)
class TrainPassFacts:
    # "loader" (a DataLoader over the training set) or "content" (model inputs recognised)
    source: str
    stepping: bool
    drawn: int  # bit set of training indices
    batches: int
    complete: bool
    steps: dict[int, int]  # optimizer serial -> steps during the pass
    start_step: int  # optimizer steps taken before it began
    # evaluated without training: a signed byte per drawn image, in index order
    predictions: bytes | None = None
    end_step: int = 0  # the last optimizer step it carried
    rows: int = 0  # indices drawn, repeats included
    # of ``drawn``, the images named only by their row's key (a row changed in part): no evidence
    loose: int = 0

    @property
    def times(self) -> int:
        """How many passes' worth of images it drew: 2 when its sampler listed each index twice (a
        sampler drawing with replacement, about 1.6 draws per image it reaches, stays one)."""
        unique = self.drawn.bit_count()
        return max(1, int(self.rows / unique + 0.1)) if self.rows and unique else 1

    @property
    def stepped(self) -> bool:
        return any(self.steps.values())


@dataclass(frozen=True, kw_only=True)
class Curve:
    """An optimizer's loss and learning rate as means over ``every`` steps (None: not finite)."""

    every: int  # 1 to MAX_STEP
    loss: tuple[float | None, ...]  # at most MAX_CURVE points, one value at least among loss and lr
    lr: tuple[float | None, ...]  # as many as ``loss``


@dataclass(frozen=True, kw_only=True)
class Optimizer:
    params: frozenset[int]
    steps: int
    first_step: int
    last_step: int
    # steps after which no batch of training images had been drawn since its previous one
    unattributed: int = 0
    # steps over training images fed beside a DataLoader, none of its batches since the last step
    beside: int = 0
    # steps before which its parameters had changed since its previous step (probe/continuity.py)
    moved: int = 0
    # its parameters changed after its last step (and no load explained it)
    moved_at_end: bool = False
    curve: Curve | None = None  # its loss and learning rate, when well formed


@dataclass(frozen=True, kw_only=True)
class TestPassFacts:
    predictor: tuple[int, int]
    covered: int
    complete: bool
    start_step: int
    end_step: int
    first_batch: int
    last_batch: int
    # one signed byte per test image, -1 where not predicted (any length: see ``of``)
    predictions: bytes | None
    # per test image, float16: the softmax at the prediction (see half_floats)
    confidence: bytes | None = None

    def of(self, total: int) -> bytes | None:
        """Its predictions when there is one per image of a test set of ``total``, else None."""
        return (
            self.predictions
            if self.predictions is not None and len(self.predictions) == total
            else None
        )


@dataclass(frozen=True, kw_only=True)
class Load:
    """Weights loaded into a module; a field of the wrong type is None."""

    param: int | None  # the serial of its first parameter
    params: frozenset[int] | None  # the serials listed (None: no list)
    step: int | None
    event: int | None
    restored: int | None  # the step of the state it put back
    restored_event: int | None
    from_param: int | None  # another model's first parameter (a warm start)
    test_batch: int | None
    explained: bool | None  # within the hull of the states the counted steps made


@dataclass(frozen=True, kw_only=True)
class Gradient:
    param: int  # a watched Linear weight's serial
    unexplained: int  # backward passes or steps with a gradient its layer's calls do not explain


@dataclass(frozen=True, kw_only=True)
class ModelFacts:
    """The graded model as the probe described it."""

    param_serials: frozenset[int]
    param_versions: int  # in-place changes of its parameters
    has_grad: bool  # a backward pass reached it
    explained: bool | None  # its weights within the hull of what the counted steps made


@dataclass(frozen=True, kw_only=True)
class Owner:
    """A module owning parameters, in the traced architecture."""

    module: str
    type: str
    shapes: tuple[
        tuple[int, ...], ...
    ]  # its parameters' shapes that are lists of integers; ((),) for none


@dataclass(frozen=True, kw_only=True)
class Op:
    """A weight-applying op of one forward pass."""

    name: str
    shapes: tuple[tuple[int, ...], ...]  # its operands' shapes (lists of integers only)


@dataclass(frozen=True, kw_only=True)
class Architecture:
    owners: tuple[Owner, ...] | None  # None: no list of them
    ops: tuple[Op, ...] | None  # None: the forward pass was not traced
    error: str  # why it was not traced, as text (cut)


@dataclass(frozen=True, kw_only=True)
class ProbePass:
    """The probe's own pass over the test images (``probe_pass``)."""

    predictions: tuple[int, ...] | None  # None unless a list of integers
    confidence: tuple[float, ...] | None  # None unless a list of numbers in [0, 1]
    preprocessing: str | None


@dataclass(frozen=True, kw_only=True)
class TrainFacts:
    """What the probe saw of the training images."""

    size: int | None  # the training set's size (None: not an integer)
    passes: tuple[TrainPassFacts, ...]  # read only when ``size`` is set
    stepped_rows: int = 0  # bit set: images recognised in a call an optimizer step followed
    stepped_loose: int = 0  # of those, the images named by their row's key alone
    loader_mismatch: int = 0  # batches whose images were not those the sampler named
    unread_rows: int = 0  # rows of training batches that were no image the probe could name


@dataclass(frozen=True, kw_only=True)
class TestFacts:
    """What the probe saw of the test images."""

    passes: tuple[TestPassFacts, ...]
    steps: int = 0  # optimizer steps right after test images went through the model with gradients
    images_trained: int = 0  # test images whose rows got a gradient in a call a step followed
    rows_trained: int = 0


@dataclass(frozen=True, kw_only=True)
class Health:
    """What the probe says of itself."""

    integrity: tuple[str, ...] | None  # None: no list of strings (its export was replaced)
    faults: tuple[str, ...] = ()  # its own failures, caught, as text (cut)
    lost_steps: int = 0  # optimizer steps that began and never ended
    unwatched_steps: int = 0  # steps inside a DataLoader's fetch
    capture_error: str | None = None  # why the graded pass was not captured


@dataclass(frozen=True, kw_only=True)
class ProbeFacts:
    """The probe's record, every field checked."""

    train: TrainFacts
    test: TestFacts
    optimizers: dict[int, Optimizer]  # by serial
    loads: tuple[Load, ...]
    gradients: tuple[Gradient, ...]
    model: ModelFacts | None  # None unless the record describes one
    model_found: bool  # the record's model is not null (a malformed one included)
    architecture: Architecture | None
    probe_pass: ProbePass | None
    probe_error: str  # the probe's error running the model, as text (cut; "None" without one)
    health: Health

    @property
    def graded_params(self) -> frozenset[int]:
        return self.model.param_serials if self.model is not None else frozenset()


# -- reading one value ------------------------------------------------------------------------
def integer(value: Any) -> int | None:
    """An int that is really an int (not a bool, not a string), else None."""
    return value if type(value) is int else None


def _count(value: Any) -> int:
    return integer(value) or 0


def _section(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _bytes(text: Any, size: int | None = None) -> bytes | None:
    """Bytes sent as base64 (exactly ``size`` of them when given), else None."""
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if size is None or len(raw) == size else None


def _bits(text: Any, size: int) -> int | None:
    """A bit set of ``size`` bits sent as base64 of numpy's packbits, as one integer (index 0 the
    top bit)."""
    raw = _bytes(text, (size + 7) // 8)
    return None if raw is None else int.from_bytes(raw, "big")


def _serial(key: Any) -> int | None:
    """A serial sent as an object's key: ASCII digits only ("²".isdigit(), yet int("²") fails)."""
    return int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else None


def _serials(value: Any) -> frozenset[int] | None:
    return frozenset(p for p in value if type(p) is int) if isinstance(value, list) else None


def _text(value: Any, most: int) -> str:
    return str(value)[:most]


def _series(value: Any, length: int) -> tuple[float | None, ...] | None:
    if not isinstance(value, list) or len(value) != length:
        return None
    return tuple(
        float(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        else None
        for v in value
    )


def _numbers(value: Any) -> tuple[float, ...] | None:
    """Numbers in [0, 1], else None."""
    if not isinstance(value, list):
        return None
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in value
    ):
        return None
    return tuple(float(v) for v in value)


# -- reading each part ------------------------------------------------------------------------
def _steps(value: Any) -> dict[int, int]:
    if not isinstance(value, dict):
        return {}
    return {
        serial: v
        for k, v in value.items()
        if (serial := _serial(k)) is not None and type(v) is int and v > 0
    }


def _train_pass(item: Any, size: int) -> TrainPassFacts | None:
    if not isinstance(item, dict):
        return None
    drawn = _bits(item.get("drawn"), size)
    if drawn is None or item.get("source") not in ("loader", "content"):
        return None
    return TrainPassFacts(
        source=str(item["source"]),
        stepping=item.get("stepping") is True,
        drawn=drawn,
        batches=_count(item.get("batches")),
        complete=item.get("complete") is True,
        steps=_steps(item.get("steps")),
        start_step=_count(item.get("start_step")),
        predictions=_bytes(item.get("predictions"), drawn.bit_count()),
        end_step=_count(item.get("end_step")),
        rows=min(_count(item.get("rows")), 10**9),
        loose=(_bits(item.get("loose"), size) or 0) & drawn,
    )


def _train(record: Mapping[str, Any]) -> TrainFacts:
    size = integer(record.get("train_size"))
    raw = record.get("train_passes")
    items = raw[-MAX_PASSES:] if size and isinstance(raw, list) else []
    return TrainFacts(
        size=size,
        passes=tuple(p for item in items if (p := _train_pass(item, size or 0)) is not None),
        stepped_rows=(_bits(record.get("stepped_rows"), size) or 0) if size else 0,
        stepped_loose=(_bits(record.get("stepped_loose"), size) or 0) if size else 0,
        loader_mismatch=_count(record.get("loader_mismatch")),
        unread_rows=_count(record.get("unread_rows")),
    )


def _test_pass(item: Any) -> TestPassFacts | None:
    if not isinstance(item, dict):
        return None
    predictor = item.get("predictor")
    if not (
        isinstance(predictor, list)
        and len(predictor) == 2
        and all(type(p) is int for p in predictor)
    ):
        return None
    predictions = _bytes(item.get("predictions"))
    return TestPassFacts(
        predictor=(predictor[0], predictor[1]),
        covered=_count(item.get("covered")),
        complete=item.get("complete") is True,
        start_step=_count(item.get("start_step")),
        end_step=_count(item.get("end_step")),
        first_batch=_count(item.get("first_batch")),
        last_batch=_count(item.get("last_batch")),
        predictions=predictions,
        confidence=_bytes(item.get("confidence"), 2 * len(predictions)) if predictions else None,
    )


def _test(record: Mapping[str, Any]) -> TestFacts:
    raw = record.get("test_passes")
    items = raw[-MAX_PASSES:] if isinstance(raw, list) else []
    images = integer(record.get("test_images_trained"))
    trained = images is not None and images > 0
    return TestFacts(
        passes=tuple(p for item in items if (p := _test_pass(item)) is not None),
        steps=_count(record.get("test_steps")),
        images_trained=images or 0 if trained else 0,
        rows_trained=_count(record.get("test_rows_trained")) if trained else 0,
    )


def _curve(value: Any) -> Curve | None:
    every = value.get("every") if isinstance(value, dict) else None
    if type(every) is not int or not 1 <= every <= MAX_STEP:
        return None
    assert isinstance(value, dict)
    raw = value.get("loss")
    if not isinstance(raw, list) or len(raw) > MAX_CURVE:
        return None
    loss, lr = _series(raw, len(raw)), _series(value.get("lr"), len(raw))
    if loss is None or lr is None or not any(v is not None for v in loss + lr):
        return None
    return Curve(every=every, loss=loss, lr=lr)


def _optimizers(value: Any) -> dict[int, Optimizer]:
    found = {}
    for key, item in value.items() if isinstance(value, dict) else []:
        serial = _serial(key)
        params = _serials(item.get("params")) if isinstance(item, dict) else None
        if serial is None or params is None:
            continue
        found[serial] = Optimizer(
            params=params,
            steps=_count(item.get("steps")),
            first_step=_count(item.get("first_step")),
            last_step=_count(item.get("last_step")),
            unattributed=_count(item.get("unattributed")),
            beside=_count(item.get("beside")),
            moved=_count(item.get("moved")),
            moved_at_end=item.get("moved_at_end") is True,
            curve=_curve(item.get("curve")),
        )
    return found


def _load(item: Any) -> Load | None:
    if not isinstance(item, dict):
        return None
    explained = item.get("explained")
    return Load(
        param=integer(item.get("param")),
        params=_serials(item.get("params")),
        step=integer(item.get("step")),
        event=integer(item.get("event")),
        restored=integer(item.get("restored")),
        restored_event=integer(item.get("restored_event")),
        from_param=integer(item.get("from_param")),
        test_batch=integer(item.get("test_batch")),
        explained=explained if isinstance(explained, bool) else None,
    )


def _gradients(value: Any) -> tuple[Gradient, ...]:
    return tuple(
        Gradient(param=item["param"], unexplained=_count(item.get("unexplained")))
        for item in (value if isinstance(value, list) else [])
        if isinstance(item, dict) and type(item.get("param")) is int
    )


def _model(value: Any) -> ModelFacts | None:
    if not isinstance(value, dict):
        return None
    explained = value.get("explained")
    return ModelFacts(
        param_serials=_serials(value.get("param_serials")) or frozenset(),
        param_versions=_count(value.get("param_versions")),
        has_grad=value.get("has_grad") is True,
        explained=explained if isinstance(explained, bool) else None,
    )


def _shapes(value: Any, least: int = 0) -> tuple[tuple[int, ...], ...]:
    """The lists of integers (of ``least`` items at least) among ``value``'s items."""
    return tuple(
        tuple(shape)
        for shape in (value if isinstance(value, list) else [])
        if isinstance(shape, list) and len(shape) >= least and all(type(d) is int for d in shape)
    )


def _architecture(value: Any) -> Architecture | None:
    if not isinstance(value, dict):
        return None
    owners, ops = value.get("parameters"), value.get("ops")
    return Architecture(
        owners=tuple(
            Owner(
                module=str(o.get("module")),
                type=str(o.get("type")),
                shapes=_shapes(o.get("shapes") or [[]]),
            )
            for o in owners
            if isinstance(o, dict)
        )
        if isinstance(owners, list)
        else None,
        ops=tuple(
            Op(name=str(o.get("op")), shapes=_shapes(o.get("shapes")))
            for o in ops
            if isinstance(o, dict)
        )
        if isinstance(ops, list)
        else None,
        error=_text(value.get("error"), 120),
    )


def _probe_pass(value: Any) -> ProbePass | None:
    if not isinstance(value, dict):
        return None
    predictions, preprocessing = value.get("predictions"), value.get("preprocessing")
    return ProbePass(
        predictions=tuple(predictions)
        if isinstance(predictions, list) and all(type(v) is int for v in predictions)
        else None,
        confidence=_numbers(value.get("confidence")),
        preprocessing=preprocessing if isinstance(preprocessing, str) else None,
    )


def _health(record: Mapping[str, Any]) -> Health:
    integrity, faults = record.get("integrity"), record.get("probe_faults")
    error = _section(record.get("capture")).get("error")
    return Health(
        integrity=tuple(integrity)
        if isinstance(integrity, list) and all(isinstance(p, str) for p in integrity)
        else None,
        faults=tuple(_text(f, 200) for f in faults) if isinstance(faults, list) else (),
        lost_steps=_count(record.get("lost_steps")),
        unwatched_steps=_count(record.get("unwatched_steps")),
        capture_error=error if isinstance(error, str) else None,
    )


def parse(record: Mapping[str, Any]) -> ProbeFacts:
    """The facts of a record read as a JSON object (its version is ``from_json``'s to check)."""
    loads = record.get("loads")
    return ProbeFacts(
        train=_train(record),
        test=_test(record),
        optimizers=_optimizers(record.get("optimizers")),
        loads=tuple(
            load
            for item in (loads if isinstance(loads, list) else [])
            if (load := _load(item)) is not None
        ),
        gradients=_gradients(record.get("gradients")),
        model=_model(record.get("model")),
        model_found=record.get("model") is not None,
        architecture=_architecture(record.get("architecture")),
        probe_pass=_probe_pass(record.get("probe_pass")),
        probe_error=_text(record.get("probe_error"), 200),
        health=_health(record),
    )


def from_json(data: bytes) -> ProbeFacts:
    """The facts of the probe's file; RecordRefused when it is no record of this probe's format."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RecordRefused("the probe's file is not valid JSON") from None
    if not isinstance(record, dict):
        raise RecordRefused("the probe's file is not a JSON object")
    version = record.get("version")
    if version != RECORD_VERSION or type(version) is not int:
        raise RecordRefused(
            f"the probe's file has format {str(version)[:20]!r}, not {RECORD_VERSION}: "
            "it was not written by this grader's probe"
        )
    try:
        return parse(record)
    except (ValueError, OverflowError, RecursionError) as exc:  # a number no probe writes
        raise RecordRefused(
            f"the probe's file holds a value no probe writes ({exc})"[:200]
        ) from None
