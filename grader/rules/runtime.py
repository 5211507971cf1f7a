"""Run-time rule checks: judge what the probe recorded about the real run (in the grader's process).

The probe only records (passes over the training data, optimizer steps, the trained model's
parameters and the weight ops of one forward pass); every verdict is made here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from grader.probe_file import integer, section
from grader.reference import FrozenFacts
from grader.results import Check
from grader.rubric import Rubric

_MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "linear"}
SPLIT_TOLERANCE = 0.005  # of the training set: a few images either way is not a changed valid_size


def _run_check(rule: str, ok: bool | None, message: str) -> Check:
    return Check(rule, ok, message, stage="run")


def check_epochs(record: dict[str, Any], facts: FrozenFacts, rubric: Rubric) -> Check:
    training = section(record, "training")
    passes = training.get("passes")
    passes = [p for p in passes if isinstance(p, dict)] if isinstance(passes, list) else []
    direct = [p for p in passes if p.get("updates_model") is True]
    if direct:
        complete = sum(1 for p in direct if p.get("complete") is True)
        if len(direct) == facts.epochs:
            return _run_check("epochs", True, f"the graded model was trained for {len(direct)} passes over the training data")
        return _run_check("epochs", False, f"the graded model was trained for {len(direct)} passes over the training data "
                                           f"({complete} complete); the homework fixes {facts.epochs} epochs")
    counts = Counter(p["trained_model"] for p in passes if type(p.get("trained_model")) is int)
    if not counts:
        return _run_check("epochs", None, "no pass over the training data updated a model; epochs not counted")
    # The graded model loaded its weights (a checkpoint of one of the trained candidates).
    shown = ", ".join(str(n) for n in counts.values())
    if all(n == facts.epochs for n in counts.values()):
        return _run_check("epochs", True, f"the graded model loaded trained weights; every trained model ran "
                                          f"{facts.epochs} passes over the training data")
    if all(n != facts.epochs for n in counts.values()):
        return _run_check("epochs", False, f"the graded model loaded trained weights; the trained models ran {shown} "
                                           f"passes over the training data; the homework fixes {facts.epochs} epochs")
    return _run_check("epochs", None, f"the graded model loaded trained weights; the trained models ran {shown} passes, "
                                      "so which one it came from decides")


def check_split(record: dict[str, Any], facts: FrozenFacts, rubric: Rubric) -> Check:
    training = section(record, "training")
    size, trained, overlap = (integer(training.get(k)) for k in ("dataset_size", "trained_indices", "overlap"))
    if not size or not trained:
        return _run_check("valid_size", None, "no training images were seen being drawn; the split was not measured")
    expected = round((1 - facts.valid_size) * size)
    if overlap:
        return _run_check("valid_size", False, f"{overlap} images were used both to train the graded model and to validate it")
    if abs(trained - expected) > max(1, SPLIT_TOLERANCE * size):
        return _run_check("valid_size", False, f"the graded model was trained on {trained} of {size} training images; "
                                               f"{facts.valid_name} = {facts.valid_size:g} leaves {expected}")
    return _run_check("valid_size", True, f"trained on {trained} of {size} training images, none of them used for validation")


def _weight_shape(op: dict[str, Any]) -> tuple[int, int] | None:
    """(in_features, out_features) of the weight operand of a matrix-product op."""
    shapes = [s for s in op.get("shapes", []) if isinstance(s, list) and len(s) >= 2 and all(type(d) is int for d in s)]
    if not shapes:
        return None
    if op.get("op") == "linear":
        out_features, in_features = shapes[1][-2:] if len(shapes) > 1 else (None, None)
        return (in_features, out_features) if in_features is not None and out_features is not None else None
    in_features, out_features = shapes[-1][-2:]
    return in_features, out_features


def check_architecture(record: dict[str, Any], facts: FrozenFacts, rubric: Rubric) -> Check:
    architecture = section(record, "architecture")
    owners, ops = architecture.get("parameters"), architecture.get("ops")
    if not isinstance(owners, list):
        return _run_check("linear_layers", None, "the trained model was not found; its layers were not checked")
    frozen = Counter((layer.in_features, layer.out_features) for layer in facts.linear_layers)
    fixed = ", ".join(f"{i}->{o}" for i, o in frozen.elements())
    linear: Counter[tuple[int, int]] = Counter()
    for owner in (o for o in owners if isinstance(o, dict)):
        kind, name, shapes = str(owner.get("type")), str(owner.get("module")), owner.get("shapes") or [[]]
        if kind == "Linear" and isinstance(shapes[0], list) and len(shapes[0]) == 2:
            linear[(shapes[0][1], shapes[0][0])] += 1
        elif kind not in rubric.allowed_layers:
            return _run_check("linear_layers", False, f"the trained model holds weights in {name} ({kind}); only the "
                                                      "Linear layers and normalization layers may")
    if linear != frozen:
        found = ", ".join(f"{i}->{o}" for i, o in linear.elements()) or "none"
        return _run_check("linear_layers", False, f"the trained model's Linear layers are {found}; the homework fixes {fixed}")
    if not isinstance(ops, list):
        return _run_check("linear_layers", None, f"the Linear layers are {fixed}, but the forward pass could not be traced "
                                                 f"({str(architecture.get('error'))[:120]})")
    products: Counter[tuple[int, int] | None] = Counter()
    for op in (o for o in ops if isinstance(o, dict)):
        if op.get("op") not in _MATMUL_OPS:
            return _run_check("linear_layers", False, f"the forward pass applies {op.get('op')}; only the three Linear "
                                                      "layers may apply weights")
        products[_weight_shape(op)] += 1
    if products != frozen:
        found = ", ".join("?" if s is None else f"{s[0]}->{s[1]}" for s in products.elements()) or "none"
        return _run_check("linear_layers", False, f"the forward pass multiplies by weights of {found}; the homework fixes {fixed}")
    return _run_check("linear_layers", True, f"the trained model's forward pass uses exactly the Linear layers {fixed}")


_RULES: dict[str, Callable[[dict[str, Any], FrozenFacts, Rubric], Check]] = {
    "epochs": check_epochs,
    "valid_size": check_split,
    "linear_layers": check_architecture,
}


def check_runtime(record: dict[str, Any] | None, facts: FrozenFacts, rubric: Rubric) -> tuple[Check, ...]:
    """Every frozen rule of the rubric, judged on what the run recorded."""
    if record is None:
        return ()
    return tuple(_RULES[rule](record, facts, rubric) for rule in rubric.frozen)


def disagreements(checks: tuple[Check, ...]) -> tuple[str, ...]:
    """Notes for the rules where the static and the run-time verdicts are both decided and differ."""
    static = {c.id: c.ok for c in checks if c.stage == "static" and c.ok is not None}
    run = {c.id: c.ok for c in checks if c.stage == "run" and c.ok is not None}
    return tuple(f"{rule}: the static check says {'ok' if static[rule] else 'violated'}, the run says "
                 f"{'ok' if run[rule] else 'violated'}" for rule in static if rule in run and static[rule] != run[rule])
