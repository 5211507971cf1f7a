"""The captured graph's JSON checked before torch's deserializer reads it: nothing in it may reach
code the deserializer would run (size expressions go to sympy's eval, guards to exec, metadata
targets to getattr chains). Only tensor ops of ``RUNNABLE``, plain names, the batch's size
symbols; no guards, custom objects or nested graphs."""

from __future__ import annotations

import re
from typing import Any

from grader.evaluator.manifest import Refused

_TARGET = re.compile(
    r"torch\.ops\.(?:aten|prims)\.[a-z_][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*|_operator\.getitem"
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
_PATH = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+){0,20}")
# A size torch.export writes for the dynamic batch: the symbol itself, or sums and products of
# symbols and numbers. torch's deserializer hands these strings to sympy.sympify, which evaluates
# them.
_SIZE = re.compile(
    r"Symbol\('s\d{1,9}', positive=True, integer=True\)|(?:s\d{1,9}|\d{1,12}|[ +*()-])+"
)
_TOP = {
    "graph_module",
    "opset_version",
    "range_constraints",
    "schema_version",
    "verifiers",
    "torch_version",
    "guards_code",
}
_TO_THE_END = 2**63 - 1  # the end torch.export writes for an open slice (x[:, 10:])
_REFUSED_KINDS = {
    "as_custom_obj",
    "as_graph",
    "as_operator",
    "as_custom_objs",
    "as_sym_float",
    "as_sym_floats",
}
_NAMED = ("target", "fqn", "parameter_name", "buffer_name", "tensor_constant_name")
MAX_NODES = 5_000


def checked(graph: Any, allowed: frozenset[str]) -> list[str]:
    """The graph's op targets, after checking that nothing in its JSON reaches code torch's
    deserializer would run and that it computes only ``allowed`` ops. Metadata is dropped (in
    place): running the graph needs none."""
    if not isinstance(graph, dict) or set(graph) - _TOP:
        raise Refused("the captured graph has fields torch.export does not write")
    if graph.get("guards_code") not in ([], None):
        raise Refused("the captured graph carries guard code")
    constraints = graph.get("range_constraints")
    if not isinstance(constraints, dict) or not all(
        isinstance(k, str) and re.fullmatch(r"s\d{1,9}", k) for k in constraints
    ):
        raise Refused("the captured graph's size constraints are not the batch's")
    module = graph.get("graph_module")
    if not isinstance(module, dict) or not isinstance(module.get("graph"), dict):
        raise Refused("the captured graph has no nodes")
    nodes = module["graph"].get("nodes")
    if not isinstance(nodes, list):
        raise Refused("the captured graph has no nodes")
    if len(nodes) > MAX_NODES:
        raise Refused("the captured graph has over 5,000 operations")
    targets = []
    for node in nodes:
        target = node.get("target") if isinstance(node, dict) else None
        if not isinstance(target, str) or not _TARGET.fullmatch(target) or "__" in target:
            raise Refused(f"the captured graph calls {str(target)[:120]}, which is not a tensor op")
        name = target.split(".")[3] if target.startswith("torch.ops.") else "getitem"
        if name not in allowed:  # no op that reads or writes files, allocates or mutates
            raise Refused(
                f"the captured graph computes {name}, which is none of the weight layers "
                "(Linear, convolution), pooling, normalization, dropout, activations or "
                "reshaping a homework's model uses"
            )
        targets.append(target)
        node["metadata"] = {}
    module["metadata"] = {}
    _walk(graph, 0)
    return targets


def _walk(value: Any, depth: int) -> None:
    if depth > 64:
        raise Refused("the captured graph is nested too deeply")
    if isinstance(value, list):
        for item in value:
            _walk(item, depth + 1)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key in _REFUSED_KINDS or (key == "custom_obj_values" and item):
            kind = key.removeprefix("as_").replace("_", " ")
            raise Refused(f"the captured graph holds {kind}, not tensors")
        if key in ("as_int", "as_ints") and any(
            type(v) is int and abs(v) > 1_000_000 and v != _TO_THE_END
            for v in (item if isinstance(item, list) else [item])
        ):
            raise Refused("the captured graph has a size over a million")
        if key == "expr_str" and not (
            isinstance(item, str)
            and len(item) <= 200
            and _SIZE.fullmatch(item)
            and "**" not in item
        ):
            raise Refused("the captured graph has a size expression other than the batch's")
        if key == "name" and isinstance(item, str) and not _NAME.fullmatch(item):
            raise Refused("the captured graph has a name that is not an identifier")
        if (
            key in _NAMED
            and isinstance(item, str)
            and item
            and ("__" in item or not (_PATH.fullmatch(item) or _TARGET.fullmatch(item)))
        ):
            raise Refused("the captured graph names a tensor with characters no module path has")
        _walk(item, depth + 1)
