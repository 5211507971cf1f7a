"""What the run did, computed in the grader's process from the probe's record (its facts, parsed and
checked by grader/model/probe_facts.py).

The probe only lists facts: the passes over training images (which indices each drew, which
optimizers stepped meanwhile), each optimizer's parameters, the checkpoints loaded, the test
passes and the graded model's parameters. Lineage (which passes trained the graded model), the
training and validation sets, their overlap, early stopping and test-set selection are decided
here, where the notebook cannot change them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grader.model.probe_facts import (
    MAX_STEP,
    Load,
    Optimizer,
    ProbeFacts,
    TestPassFacts,
    TrainPassFacts,
)


@dataclass(frozen=True, kw_only=True)
class Training:
    """How the graded model was trained, as the grader reads the record."""

    train_size: int | None
    # "direct": its own parameters were stepped; "loaded": it took a trained model's weights; "none"
    lineage: str
    # the passes that trained it (direct) or trained any model (loaded)
    passes: tuple[TrainPassFacts, ...]
    groups: tuple[int, ...]  # loaded: passes per trained model (one per optimized parameter set)
    trained: int  # bit set of the images it was trained on
    changed_without_optimizer: bool  # no optimizer step, yet its weights were changed in place
    # steps of its optimizers that no recognised pass over the training images carried
    unplaced_steps: int
    last_step: int  # the last optimizer step of its training (0 when none)
    first_step: int
    # steps of its optimizers over no batch of training images the grader followed
    unattributed_steps: int = 0
    steps: int = 0  # steps of the optimizers that made its weights (its own, or the loaded model's)
    # passes and steps whose weights a restore discarded before training went on trained over
    # DataLoader passes: its steps over images fed beside them (not in an epoch)
    undone: tuple[int, int] = (0, 0)
    beside_steps: int = 0
    # bit set of the images it was trained on and validated on, each time as the image itself
    overlap: int = 0
    # changes of its weights between (or after) the optimizer steps that made them, no step or load
    # explaining them
    moved: int = 0
    # loads into it of weights outside what any counted step made (and, for a model never stepped,
    # its own)
    foreign: int = 0
    # backward passes or steps that gave its Linear weights a gradient their layers' calls do not
    # explain
    unexplained: int = 0

    @property
    def pass_count(self) -> int:
        """Passes over the training data in its history, a pass drawing each image twice counting
        two."""
        return sum(p.times for p in self.passes)


def half_floats(raw: bytes | None) -> tuple[float, ...] | None:
    """Probabilities sent as little-endian float16 (decoded only for the graded pass); None unless
    all
    are in [0, 1]."""
    if raw is None or len(raw) % 2:
        return None
    size = len(raw) // 2
    values = struct.unpack(f"<{size}e", raw)
    return values if all(0.0 <= v <= 1.0 for v in values) else None  # NaN fails both comparisons


def graded_test_pass(passes: Sequence[TestPassFacts]) -> TestPassFacts | None:
    """The notebook's last complete test pass, else its most complete one (the probe exports by the
    same rule)."""
    complete = [p for p in passes if p.complete]
    if complete:
        return complete[-1]
    return max(passes, key=lambda p: p.covered, default=None)


def _whole(load: Load, params: frozenset[int]) -> bool:
    """Whether a load put weights into the whole graded model (a submodule's own state, loaded back,
    undoes nothing of the rest)."""
    return load.params is not None and bool(params) and load.params == params


MAX_LOADS = 1000  # loads read for the lineage (the probe writes at most that many)


# (optimizer steps taken, the probe's count of captures and loads): a point in the run
Moment = tuple[int, int]


def restores(loads: Sequence[Load], params: frozenset[int]) -> list[tuple[Moment, Moment]]:
    """(when, the moment of the state it put back) for every load into the graded model that put
    back
    a state taken earlier (``state_dict()``) and so discarded the steps between them."""
    found = []
    for item in loads[-MAX_LOADS:]:
        if _whole(item, params):
            step, restored = item.step, item.restored
            event, then = item.event or 0, item.restored_event or 0
            if (
                step is not None
                and restored is not None
                and 0 <= restored <= step <= MAX_STEP
                and then < event
            ):
                found.append(((step, event), (restored, then)))
    return found


def lineage_steps(loads: list[tuple[Moment, Moment]], end: int) -> list[tuple[int, int]]:
    """The intervals (a, b] of optimizer steps the final weights descend from, given the restores.

    Training after a restore continues the restored state, so the steps between that state and the
    restore are discarded (a learning-rate range test, a discarded warm-up). A restore after the
    last
    step is the choice of a checkpoint (the handout's best-validation model): the run that made that
    checkpoint counts whole, up to the next restore or the end, as the handout's own run does."""
    loads = sorted(loads)
    last: Moment = (end, 2**62)
    upto = last
    final = [load for load in loads if load[0][0] >= end]
    if final:
        chosen = final[-1][1]
        upto = min([when for when, _ in loads if when > chosen] + [last])
    intervals = []
    while True:
        before = [load for load in loads if load[0] < upto]
        if not before:
            intervals.append((0, upto[0]))
            return intervals
        when, restored = before[-1]
        intervals.append((when[0], upto[0]))
        upto = restored
        loads = [load for load in loads if load[0] < restored]


def _warm_started(
    loads: Sequence[Load],
    params: frozenset[int],
    opts: dict[int, Optimizer],
    stepping: list[TrainPassFacts],
) -> list[TrainPassFacts]:
    """The passes of another model whose trained weights the graded model loaded before it trained
    on
    (a warm start): they are in its history as much as its own."""
    found: list[TrainPassFacts] = []
    for item in loads[-MAX_LOADS:]:
        if not _whole(item, params):
            continue
        source, restored = item.from_param, item.restored
        if source is None or source in params or restored is None:
            continue
        theirs = {serial for serial, o in opts.items() if source in o.params}
        found += [
            p
            for p in stepping
            if theirs & set(p.steps)
            and max(p.end_step, p.start_step + 1) <= restored
            and p not in found
        ]
    return found


def foreign_weights(probe: ProbeFacts, params: frozenset[int], stepped: bool) -> int:
    """Loads into the graded model of weights outside the hull of what the counted steps made
    (probe/continuity.py ``explains``: a model trained further elsewhere, then loaded), and, for a
    graded model no optimizer stepped (an average graded as it is), its own weights at the end."""
    found = sum(
        1
        for item in probe.loads[-MAX_LOADS:]
        if item.explained is False and item.params is not None and params & item.params
    )
    return found + (not stepped and probe.model is not None and probe.model.explained is False)


def unexplained_gradients(probe: ProbeFacts, params: frozenset[int]) -> int:
    """Backward passes that gave one of ``params`` (Linear weights) a gradient its layer's own calls
    do not explain (probe/gradients.py): rows fed to the weight another way trained it."""
    return sum(item.unexplained for item in probe.gradients if item.param in params)


def _kept(p: TrainPassFacts, intervals: list[tuple[int, int]]) -> bool:
    """Whether any step the pass carried is in the intervals (a pass without its end step: by its
    start)."""
    last = max(p.end_step, p.start_step + 1)
    return any(p.start_step < b and last > a for a, b in intervals)


def training(probe: ProbeFacts) -> Training:
    size = probe.train.size
    model = probe.model
    # Weights changed in place after a backward pass, with no optimizer: a hand-written update.
    changed = model is not None and model.param_versions > 0 and model.has_grad
    if not size:
        return Training(
            train_size=None,
            lineage="none",
            passes=(),
            groups=(),
            trained=0,
            changed_without_optimizer=changed,
            unplaced_steps=0,
            last_step=0,
            first_step=0,
        )
    passes = probe.train.passes
    opts = probe.optimizers
    params = probe.graded_params
    stepping = [p for p in passes if p.stepped]
    # DataLoader passes over the training set are the epochs when they carry the training (they see
    # augmented images too); passes recognised by content when the notebook trains on preloaded
    # tensors (a look at one loader batch before that must not make the loader the source).
    by_source = {
        kind: sum(sum(p.steps.values()) for p in stepping if p.source == kind)
        for kind in ("loader", "content")
    }
    source = (
        "loader"
        if by_source["loader"] and by_source["loader"] * 2 >= by_source["content"]
        else "content"
    )
    stepping = [p for p in stepping if p.source == source]
    own = {serial for serial, o in opts.items() if o.params & params}
    direct = [p for p in stepping if own & set(p.steps)]
    undone = (0, 0)
    if direct:
        end = max((opts[s].last_step for s in own), default=0)
        intervals = lineage_steps(restores(probe.loads, params), end)
        kept = [p for p in direct if _kept(p, intervals)]
        dropped = [p for p in direct if not _kept(p, intervals)]
        undone = (
            len(dropped),
            sum(sum(n for serial, n in p.steps.items() if serial in own) for p in dropped),
        )
        direct = _warm_started(probe.loads, params, opts, stepping) + kept
    groups: dict[frozenset[int], int] = {}
    if direct:
        lineage, used = "direct", direct
        steps = [opts[s] for s in own if opts[s].steps]
    elif stepping:
        lineage, used = "loaded", stepping
        steps = [o for o in opts.values() if o.steps]
        for p in stepping:
            for serial in p.steps:
                if serial in opts:
                    groups[opts[serial].params] = groups.get(opts[serial].params, 0) + 1
    else:
        lineage, used, steps = "none", [], []
    # exact: drawn as the images themselves at least once, not only by their rows' keys
    trained, exact = 0, 0
    for p in used:
        trained |= p.drawn
        exact |= p.drawn & ~p.loose
    # training images recognised in a call a step followed trained it too (a batch padded with
    # images from anywhere)
    if lineage == "direct":
        stepped = probe.train.stepped_rows
        trained |= stepped
        exact |= stepped & ~probe.train.stepped_loose
    validated = 0  # images evaluated without training on them, each time as the image itself
    begun = min((o.first_step for o in steps), default=0)
    for p in passes:  # validation is read from the same kind of pass as training, never mixed
        if (
            p.source != source
            or p.stepped
            or (p.source == "content" and p.stepping)
            or p.start_step < begun
        ):
            # a pass before training began is a look at the data (a batch, its mean and std)
            continue
        outside = (p.drawn & ~trained).bit_count()
        if 2 * outside <= p.drawn.bit_count():
            continue  # mostly images it trained on: plotting a few, a training-accuracy pass
        validated |= p.drawn & ~p.loose
    own_steps = sum(opts[s].steps for s in own)
    # The optimizers whose steps made the graded weights: its own, or, when it loaded them, those of
    # the model it loaded (their steps' doubts count as much).
    makers = [opts[s] for s in own] if lineage != "loaded" else steps
    return Training(
        train_size=size,
        lineage=lineage,
        passes=tuple(used),
        groups=tuple(groups.values()),
        trained=trained,
        changed_without_optimizer=changed and not steps,
        unplaced_steps=own_steps if lineage == "none" else 0,
        last_step=max((o.last_step for o in steps), default=0),
        first_step=min((o.first_step for o in steps), default=0),
        unattributed_steps=sum(o.unattributed for o in makers),
        steps=sum(o.steps for o in makers),
        undone=undone,
        beside_steps=sum(o.beside for o in makers)
        if source == "loader" and lineage != "none"
        else 0,
        overlap=exact & validated,
        moved=sum(o.moved + o.moved_at_end for o in makers),
        foreign=(
            foreign_weights(probe, params, stepped=lineage == "direct") if lineage != "none" else 0
        ),
        unexplained=unexplained_gradients(
            probe, frozenset().union(params, *(o.params for o in makers))
        ),
    )


def stale(probe: ProbeFacts, graded: TestPassFacts, facts: Training | None) -> str | None:
    """Why the graded test pass no longer shows the graded model: it trained on, or took other
    weights, after that pass; None when the pass shows the model as it ended."""
    if facts is not None and facts.lineage == "direct" and facts.last_step > graded.end_step:
        return (
            f"its optimizer stepped {facts.last_step - graded.end_step} more times after that pass"
        )
    params = probe.graded_params
    for item in probe.loads:
        if item.param in params and (item.test_batch or 0) >= graded.last_batch:
            return "weights were loaded into it after that pass"
    return None


def loaded_after_training(probe: ProbeFacts, facts: Training) -> int | None:
    """The step after which a checkpoint was loaded into the graded model once its training
    ended."""
    params = probe.graded_params
    for item in reversed(probe.loads):
        if item.param in params and (item.step or 0) >= facts.last_step:
            return item.step
    return None


def members(bits: int, size: int) -> list[int]:
    """The indices in a bit set as _bits reads it (numpy's packbits order: index 0 is the first
    byte's top bit)."""
    text = format(bits, f"0{8 * ((size + 7) // 8)}b")[:size]
    return [i for i, bit in enumerate(text) if bit == "1"]


def _percent(predicted: list[tuple[int, int]], labels: tuple[int, ...]) -> float | None:
    """Accuracy (percent) of (index, predicted class) pairs; None when none was predicted."""
    scored = [(i, p) for i, p in predicted if p >= 0 and i < len(labels)]
    return (
        round(100.0 * sum(1 for i, p in scored if labels[i] == p) / len(scored), 2)
        if scored
        else None
    )


MAX_POINTS = 500  # evaluations plotted per curve (an epoch's validation pass is one)


def _step(value: int) -> bool:
    return 0 <= value <= MAX_STEP


def validation_points(
    probe: ProbeFacts, facts: Training, train_labels: tuple[int, ...]
) -> list[list[float]]:
    """[optimizer steps before it, accuracy %] of each pass that evaluated the model on training
    images
    it mostly did not train on (the validation set), scored here against the official labels."""
    size = facts.train_size or 0
    points = []
    evaluated = [
        p
        for p in (probe.train.passes if size else ())
        if p.predictions is not None
        and not p.stepped
        and _step(p.start_step)
        and 2 * (p.drawn & ~facts.trained).bit_count() > p.drawn.bit_count()
    ]
    # a forged record's thousands of passes cost no more than this
    for p in evaluated[-MAX_POINTS:]:
        drawn = members(p.drawn, size)
        accuracy = _percent(
            [(i, b - 256 if b > 127 else b) for i, b in zip(drawn, p.predictions or b"")],
            train_labels,
        )
        if accuracy is not None:
            points.append([p.start_step, accuracy])
    return points


def test_points(probe: ProbeFacts, test_labels: tuple[int, ...]) -> list[list[float]]:
    """[optimizer steps before its end, accuracy %] of each complete pass over the test images."""
    points = []
    for p in probe.test.passes:
        predictions = p.of(len(test_labels))
        if p.complete and predictions is not None and _step(p.end_step):
            accuracy = _percent(
                [(i, b - 256 if b > 127 else b) for i, b in enumerate(predictions)], test_labels
            )
            if accuracy is not None:
                points.append([p.end_step, accuracy])
    return points[-MAX_POINTS:]


def training_curve(
    probe: ProbeFacts,
    facts: Training,
    train_labels: tuple[int, ...] = (),
    test_labels: tuple[int, ...] = (),
) -> dict[str, Any] | None:
    """The graded model's optimizer (the one with the most steps) as the probe recorded it: the loss
    and the learning rate as means over ``every`` steps from ``first_step``, and the steps at which
    each training pass (epoch) began; with labels, the validation and test accuracy of the passes
    that evaluated a model (steps before them, percent). None without one, or when the record is
    not well formed."""
    opts = probe.optimizers
    params = probe.graded_params
    own = [s for s, o in opts.items() if o.params & params and o.steps]
    if not own:
        return None
    serial = max(own, key=lambda s: opts[s].steps)
    curve = opts[serial].curve
    if curve is None or not _step(opts[serial].first_step):
        return None
    return {
        "every": curve.every,
        "first_step": opts[serial].first_step,
        "loss": list(curve.loss),
        "lr": list(curve.lr),
        "epochs": [p.start_step for p in facts.passes if _step(p.start_step)],
        "validation": validation_points(probe, facts, train_labels) if train_labels else [],
        "test": test_points(probe, test_labels) if test_labels else [],
    }
