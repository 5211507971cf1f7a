"""Where each source line of a notebook's cells is written in the notebook's JSON text, so that a
CI annotation can point at the line of the file as stored (json.loads keeps no positions)."""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from typing import Any

_SPACE = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null|NaN|-?Infinity")


@dataclass(frozen=True)
class _Node:
    """A JSON value and the offset in the text where it starts."""

    start: int
    value: Any  # dict[str, _Node], list[_Node], or a scalar


def _skip(text: str, i: int) -> int:
    """The offset after the JSON blanks at ``i``."""
    blanks = _SPACE.match(text, i)
    return blanks.end() if blanks else i


def _parse(text: str, i: int) -> tuple[_Node, int]:
    """The JSON value at ``i`` (after blanks) with the offsets of everything in it; ValueError if
    broken."""
    start = _skip(text, i)
    head = text[start : start + 1]
    if head == '"':
        quoted = _STRING.match(text, start)
        if quoted is None:
            raise ValueError(f"unterminated string at {start}")
        return _Node(start, json.loads(quoted.group())), quoted.end()
    if head in ("{", "["):
        return _container(text, start)
    scalar = _SCALAR.match(text, start)
    if scalar is None:
        raise ValueError(f"no JSON value at {start}")
    return _Node(start, scalar.group()), scalar.end()


def _container(text: str, start: int) -> tuple[_Node, int]:
    """The object or array that starts at ``start``."""
    items: dict[str, _Node] | list[_Node] = {} if text[start] == "{" else []
    close = "}" if text[start] == "{" else "]"
    i = _skip(text, start + 1)
    if text.startswith(close, i):
        return _Node(start, items), i + 1
    while True:
        if isinstance(items, dict):
            key, i = _parse(text, i)
            i = _skip(text, i)
            if not isinstance(key.value, str) or not text.startswith(":", i):
                raise ValueError(f"no object key at {i}")
            items[key.value], i = _parse(text, i + 1)
        else:
            item, i = _parse(text, i)
            items.append(item)
        i = _skip(text, i)
        if text.startswith(close, i):
            return _Node(start, items), i + 1
        if not text.startswith(",", i):
            raise ValueError(f"expected , or {close} at {i}")
        i += 1


def notebook_lines(text: str) -> dict[int, tuple[int, ...]]:
    """For each cell number (1-based), the line of the notebook's JSON text on which each line of
    the
    cell's source is written (where a cell's source is one string, all of its lines are on one).
    Empty when the text is not a notebook this can follow."""
    try:
        root, _ = _parse(text, 0)
    except (ValueError, RecursionError):
        return {}
    cells = root.value.get("cells") if isinstance(root.value, dict) else None
    if cells is None or not isinstance(cells.value, list):
        return {}
    found = {}
    for number, cell in enumerate(cells.value, start=1):
        parts = _source_parts(cell)
        if parts is None:
            continue
        offsets, joined = [], ""  # where each part starts in the joined source
        for part in parts:
            offsets.append(len(joined))
            joined += part.value
        found[number] = tuple(
            _json_line(text, parts[bisect.bisect_right(offsets, at) - 1].start)
            for at in _line_starts(joined)
        )
    return found


def _source_parts(cell: _Node) -> list[_Node] | None:
    """The strings a cell's source is written in (a list of strings, or one string)."""
    source = cell.value.get("source") if isinstance(cell.value, dict) else None
    if source is None:
        return None
    parts = source.value if isinstance(source.value, list) else [source]
    return parts if all(isinstance(p.value, str) for p in parts) else None


def _line_starts(source: str) -> list[int]:
    """Where each line starts, with lines as `str.splitlines` (and so the rule checks) count
    them."""
    starts, at = [], 0
    for line in source.splitlines(keepends=True):
        starts.append(at)
        at += len(line)
    return starts


def _json_line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1
