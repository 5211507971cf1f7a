"""Tampering evidence the run left: what the probe found at export about its own integrity (the
static half, in the code as written, is static/tamper.py)."""

from __future__ import annotations

from grader.model.probe_facts import ProbeFacts


def runtime_evidence(record: ProbeFacts | None) -> tuple[str, ...]:
    """What the probe found at export about its own integrity (a list of strings, or none)."""
    if record is None:
        return ()
    problems = record.health.integrity
    if problems is None:
        return ("the probe's record has no integrity check: its export was replaced",)
    return tuple(f"at export: {p[:200]}" for p in problems[:20])


def probe_faults(record: ProbeFacts | None) -> str | None:
    """Why the probe's record may be incomplete: optimizer steps it saw begin and never end, or its
    own code failed while watching the run (caught there, so the notebook ran on as written); None
    when neither happened."""
    if record is None:
        return None
    lost = record.health.lost_steps
    if lost > 0:
        return (
            f"{lost} optimizer step{'s' if lost != 1 else ''} began but the grader's probe "
            "never saw "
            f"{'them' if lost != 1 else 'it'} end (a step hook of the notebook's own stopped "
            "it), so what they trained on is unknown"
        )
    faults = record.health.faults
    if not faults:
        return None
    first = faults[0]
    more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
    return (
        "the grader's probe failed while watching the run, so what it recorded may be incomplete: "
        f"{first}{more}"
    )
