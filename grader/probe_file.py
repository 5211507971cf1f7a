"""Read what the probe wrote inside the kernel: untrusted JSON, validated by whoever uses a field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_BYTES = 64 * 1024 * 1024  # far above a real record (predictions for 10,000 images are ~30 KB)


def read_probe(path: Path | None) -> dict[str, Any] | None:
    """The probe's record as a dict, or None when it is missing, too large or not a JSON object."""
    if path is None:
        return None
    try:
        if path.stat().st_size > MAX_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def section(record: dict[str, Any] | None, key: str) -> dict[str, Any]:
    """One sub-object of the record, or {} when absent or of the wrong type."""
    value = record.get(key) if record else None
    return value if isinstance(value, dict) else {}


def integer(value: Any) -> int | None:
    """An int that is really an int (not a bool, not a string), else None."""
    return value if type(value) is int else None
