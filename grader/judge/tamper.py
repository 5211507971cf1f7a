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


def probe_faults(record: dict[str, Any] | None) -> str | None:
    """Why the probe's record may be incomplete: optimizer steps it saw begin and never end, or its
    own code failed while watching the run (caught there, so the notebook ran on as written); None
    when neither happened."""
    if record is None:
        return None
    lost = record.get("lost_steps")
    if type(lost) is int and lost > 0:
        return (f"{lost} optimizer step{'s' if lost != 1 else ''} began but the grader's probe never saw "
                f"{'them' if lost != 1 else 'it'} end (a step hook of the notebook's own stopped it), so what "
                "they trained on is unknown")
    faults = record.get("probe_faults")
    if not isinstance(faults, list) or not faults:
        return None
    first = str(faults[0])[:200]
    more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
    return (f"the grader's probe failed while watching the run, so what it recorded may be incomplete: "
            f"{first}{more}")
