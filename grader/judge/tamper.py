"""Tampering evidence the run left: what the probe found at export about its own integrity (the
static half, in the code as written, is static/tamper.py)."""

from __future__ import annotations

from typing import Any


def runtime_evidence(record: dict[str, Any] | None) -> tuple[str, ...]:
    """What the probe found at export about its own integrity (untrusted JSON, checked here)."""
    if record is None:
        return ()
    problems = record.get("integrity")
    if not isinstance(problems, list) or not all(isinstance(p, str) for p in problems):
        return ("the probe's record has no integrity check: its export was replaced",)
    return tuple(f"at export: {p[:200]}" for p in problems[:20])
