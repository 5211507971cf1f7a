"""The probe's record parsed once (grader/model/probe_facts.py) against its declaration
(grader/probe/schema.py): another version refused, every malformed field read as nothing seen, and
every key the parser reads declared."""

from __future__ import annotations

import ast
import base64
import inspect
import json
import typing
from typing import Any

import pytest

from grader.model import probe_facts
from grader.model.probe_facts import RecordRefused, from_json, parse
from grader.probe import RECORD_VERSION, schema


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "version",
    [
        RECORD_VERSION - 1,
        RECORD_VERSION + 1,
        str(RECORD_VERSION),
        float(RECORD_VERSION),
        True,
        None,
    ],
)
def test_a_record_of_another_version_is_refused(version: Any) -> None:
    record = {"train_size": 8} if version is None else {"version": version, "train_size": 8}
    with pytest.raises(
        RecordRefused, match=f"not {RECORD_VERSION}: it was not written by this grader's probe"
    ):
        from_json(json.dumps(record).encode())


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_bytes_that_are_no_record_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(RecordRefused, match=why):
        from_json(data)


def test_the_current_version_is_read_and_its_history_says_what_changed() -> None:
    facts = from_json(json.dumps({"version": RECORD_VERSION}).encode())
    assert (
        facts == parse({})
        and facts.train.size is None
        and facts.model is None
        and not facts.model_found
    )
    assert sorted(schema.VERSIONS) == list(range(1, RECORD_VERSION + 1))


JUNK = [None, True, 1.5, "text", [1], {"a": 1}, -3, 10**400]


# Kinds of value a field may take where the facts rightly differ from an empty record's.
KEPT = {("architecture", dict), ("probe_pass", dict), ("probe_faults", list)}


@pytest.mark.parametrize("junk", JUNK)
def test_any_field_of_the_wrong_type_reads_as_nothing_seen(junk: Any) -> None:
    """Every top-level field replaced by a value of another kind: no exception, and the facts are
    those of an empty record (an int is a count, a found model and an error are shown: tested below;
    an object where one is declared is read as one with every field missing)."""
    empty = parse({})
    for name in typing.get_type_hints(schema.ProbeRecord):
        facts = parse({name: junk})
        if name in ("model", "probe_error") or type(junk) is int or (name, type(junk)) in KEPT:
            continue
        assert facts == empty, name
    assert parse({"architecture": {}}).architecture == probe_facts.Architecture(
        owners=None, ops=None, error="None"
    )


def test_counts_are_ints_and_nothing_else() -> None:
    for value in (True, 3.0, "3", None):
        facts = parse(
            {
                "test_steps": value,
                "lost_steps": value,
                "unwatched_steps": value,
                "loader_mismatch": value,
                "unread_rows": value,
                "test_images_trained": value,
                "test_rows_trained": 4,
            }
        )
        assert (
            facts.test.steps,
            facts.health.lost_steps,
            facts.health.unwatched_steps,
            facts.train.loader_mismatch,
            facts.train.unread_rows,
            facts.test.images_trained,
            facts.test.rows_trained,
        ) == (0, 0, 0, 0, 0, 0, 0)
    facts = parse({"test_images_trained": 3, "test_rows_trained": 5, "test_steps": 12})
    assert (facts.test.images_trained, facts.test.rows_trained, facts.test.steps) == (3, 5, 12)
    assert parse({"test_images_trained": -3, "test_rows_trained": 5}).test.rows_trained == 0


def test_the_model_found_and_its_error_as_text() -> None:
    assert parse({"model": 5}).model_found and parse({"model": 5}).model is None
    assert not parse({"model": None}).model_found
    model = parse(
        {
            "model": {
                "param_serials": [1, "2", 3.0, True, 4],
                "param_versions": "9",
                "has_grad": 1,
                "explained": 0,
            }
        }
    ).model
    assert model is not None and model.param_serials == {1, 4} and model.param_versions == 0
    assert not model.has_grad and model.explained is None
    assert (
        parse({"probe_error": {"x": 1}}).probe_error == "{'x': 1}"
        and parse({}).probe_error == "None"
    )
    assert len(parse({"probe_error": "e" * 1000}).probe_error) == 200


def test_training_passes_are_read_against_the_records_training_set() -> None:
    drawn = _b64(bytes([0b11110000]))
    item = {
        "source": "loader",
        "drawn": drawn,
        "loose": _b64(bytes([0b10001000])),
        "stepping": True,
        "rows": 10**12,
        "steps": {"1": 5, "²": 3, "2": 0, "3": True},
        "predictions": _b64(bytes(4)),
        "start_step": "1",
    }
    (p,) = parse(
        {
            "train_size": 8,
            "train_passes": [
                item,
                "junk",
                {**item, "source": "other"},
                {**item, "drawn": _b64(bytes(2))},
            ],
        }
    ).train.passes
    assert (p.drawn, p.loose, p.stepping, p.rows, p.steps, p.start_step) == (
        0xF0,
        0x80,
        True,
        10**9,
        {1: 5},
        0,
    )
    assert p.predictions == bytes(4)
    assert (
        parse({"train_size": 8, "train_passes": [{**item, "predictions": _b64(bytes(3))}]})
        .train.passes[0]
        .predictions
        is None
    )
    assert (
        parse({"train_passes": [item]}).train.passes == ()
    )  # no training set: nothing drawn from it
    assert parse({"train_size": 8, "train_passes": [item] * 2001}).train.passes == (p,) * 2000
    bits = parse({"train_size": 8, "stepped_rows": drawn, "stepped_loose": _b64(bytes(3))}).train
    assert (bits.stepped_rows, bits.stepped_loose) == (0xF0, 0)


def test_test_passes_keep_their_predictions_for_the_judge_to_measure() -> None:
    item = {
        "predictor": [1, 2],
        "complete": True,
        "covered": 4,
        "predictions": _b64(bytes([0, 1, 2, 255])),
        "confidence": _b64(bytes(8)),
        "end_step": 10**400,
    }
    (p,) = parse(
        {"test_passes": [item, {**item, "predictor": [1, "2"]}, {**item, "predictor": [1, 2, 3]}]}
    ).test.passes
    assert p.predictor == (1, 2) and p.complete and p.covered == 4 and p.end_step == 10**400
    assert p.of(4) == bytes([0, 1, 2, 255]) and p.of(10) is None and p.confidence == bytes(8)
    odd = parse(
        {"test_passes": [{**item, "predictions": "not base64!", "confidence": _b64(bytes(6))}]}
    ).test.passes[0]
    assert odd.predictions is None and odd.confidence is None
    assert (
        parse({"test_passes": [{**item, "confidence": _b64(bytes(6))}]}).test.passes[0].confidence
        is None
    )


def test_optimizers_and_their_curves() -> None:
    curve = {"every": 2, "loss": [1.0, None, float("inf")], "lr": [0.1, 0.1, "x"]}
    record = {
        "optimizers": {
            "1": {"params": [1, 2, "3"], "steps": 10, "moved_at_end": 1, "curve": curve},
            "²": {"params": [4]},
            "2": {"params": "all"},
            "3": "junk",
        }
    }
    ((serial, optimizer),) = parse(record).optimizers.items()
    assert (
        serial == 1
        and optimizer.params == {1, 2}
        and optimizer.steps == 10
        and not optimizer.moved_at_end
    )
    assert optimizer.curve == probe_facts.Curve(
        every=2, loss=(1.0, None, None), lr=(0.1, 0.1, None)
    )
    for broken in (
        {**curve, "every": 0},
        {**curve, "every": 10**10},
        {**curve, "lr": [0.1]},
        {**curve, "loss": [None] * 3, "lr": [None] * 3},
        {**curve, "loss": [1.0] * 2001, "lr": [1.0] * 2001},
    ):
        assert (
            parse({"optimizers": {"1": {"params": [1], "curve": broken}}}).optimizers[1].curve
            is None
        )


def test_loads_gradients_and_health() -> None:
    load = {
        "param": True,
        "params": [1, 2.0],
        "step": "3",
        "restored": 2,
        "explained": 0,
        "from_param": 7,
    }
    (read,) = parse({"loads": [load, "junk"]}).loads
    assert (read.param, read.params, read.step, read.restored, read.explained, read.from_param) == (
        None,
        {1},
        None,
        2,
        None,
        7,
    )
    assert parse({"loads": [{"params": "x"}]}).loads[0].params is None
    gradients = parse(
        {"gradients": [{"param": 1, "unexplained": 2}, {"param": "1", "unexplained": 9}, 3]}
    ).gradients
    assert [(g.param, g.unexplained) for g in gradients] == [(1, 2)]
    health = parse(
        {"integrity": ["a", 1], "probe_faults": [{"x": 1}, "f" * 300], "capture": {"error": 5}}
    ).health
    assert (
        health.integrity is None
        and health.faults == ("{'x': 1}", "f" * 200)
        and health.capture_error is None
    )
    assert parse({"integrity": []}).health.integrity == () and parse({}).health.integrity is None


def test_the_architecture_keeps_integer_shapes_only() -> None:
    record = {
        "architecture": {
            "parameters": [
                {"module": "fc1", "type": "Linear", "shapes": [[512, 784], [512]]},
                {"module": 5, "shapes": [[3, "x"], "y", [2, 2, 2]]},
                {"shapes": []},
                "junk",
            ],
            "ops": [{"op": "addmm", "shapes": [[512], [2, 784], [784, 512]]}, {"op": None}],
            "error": "e" * 500,
        }
    }
    architecture = parse(record).architecture
    assert (
        architecture is not None
        and architecture.owners is not None
        and architecture.ops is not None
    )
    assert [(o.module, o.type, o.shapes) for o in architecture.owners] == [
        ("fc1", "Linear", ((512, 784), (512,))),
        ("5", "None", ((2, 2, 2),)),
        ("None", "None", ((),)),
    ]
    assert [(o.name, o.shapes) for o in architecture.ops] == [
        ("addmm", ((512,), (2, 784), (784, 512))),
        ("None", ()),
    ]
    assert len(architecture.error) == 120
    untraced = parse({"architecture": {"parameters": [], "ops": "x"}}).architecture
    assert untraced is not None and untraced.ops is None and untraced.error == "None"


def test_the_probes_own_pass() -> None:
    own = parse(
        {"probe_pass": {"predictions": [1, 2], "confidence": [0.5, 1], "preprocessing": "assumed"}}
    ).probe_pass
    assert own == probe_facts.ProbePass(
        predictions=(1, 2), confidence=(0.5, 1.0), preprocessing="assumed"
    )
    bad = parse(
        {"probe_pass": {"predictions": [1, True], "confidence": [0.5, 1.5], "preprocessing": 3}}
    ).probe_pass
    assert bad == probe_facts.ProbePass(predictions=None, confidence=None, preprocessing=None)
    assert parse({"probe_pass": [1, 2]}).probe_pass is None


# The parser's functions and the part of the record each reads.
READS: dict[str, tuple[Any, ...]] = {
    "_train_pass": (schema.TrainPass,),
    "_test_pass": (schema.TestPass,),
    "_optimizers": (schema.Optimizer,),
    "_curve": (schema.Curve,),
    "_load": (schema.Load,),
    "_gradients": (schema.Gradient,),
    "_model": (schema.Model,),
    "_architecture": (schema.Architecture, schema.Owner, schema.Op),
    "_probe_pass": (schema.ProbePass,),
    "_health": (schema.ProbeRecord, schema.Capture),
    "_train": (schema.ProbeRecord,),
    "_test": (schema.ProbeRecord,),
    "parse": (schema.ProbeRecord,),
    "from_json": (schema.ProbeRecord,),
}


def test_every_key_the_parser_reads_is_declared_in_the_schema() -> None:
    tree = ast.parse(inspect.getsource(probe_facts))
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    undeclared = []
    for name, parts in READS.items():
        declared = set().union(*(typing.get_type_hints(part) for part in parts))
        for node in ast.walk(functions[name]):
            key = (
                node.args[0]
                if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and node.args
                else node.slice
                if isinstance(node, ast.Subscript)
                else None
            )
            if (
                isinstance(key, ast.Constant)
                and isinstance(key.value, str)
                and key.value not in declared
            ):
                undeclared.append(f"{name}: {key.value}")
    assert set(READS) <= set(functions) and undeclared == []


def test_what_the_recorder_exports_is_declared(tiny_dataset: Any) -> None:
    from grader.probe.content import ImageIndex
    from grader.probe.identity import Serials
    from grader.probe.recorder import Recorder

    exported = Recorder(ImageIndex(tiny_dataset.raw), 10, Serials()).export()
    assert set(exported) <= set(typing.get_type_hints(schema.ProbeRecord))
    assert (
        type(exported["train_size"]) is int and parse(exported).train.size == exported["train_size"]
    )


@pytest.mark.parametrize(
    "record",
    [
        {"optimizers": {"9" * 5000: {"params": [1]}}},
        {
            "optimizers": {
                "1": {"params": [1], "curve": {"every": 1, "loss": [10**400], "lr": [0.1]}}
            }
        },
    ],
)
def test_numbers_no_probe_writes_refuse_the_record(record: dict[str, object]) -> None:
    """A key of thousands of digits, an integer beyond a float: refused, never a crash."""
    with pytest.raises(RecordRefused, match="a value no probe writes"):
        from_json(json.dumps({"version": RECORD_VERSION, **record}).encode())
