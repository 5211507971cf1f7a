"""The rubric's deadline: when a submission came in, how late that is, and what lateness costs.

When it came in is the best evidence at hand: the commit time in CI, the file's time in a batch
(zip entries keep the time the LMS stored, read as this machine's local time, as `unzip` does).
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from grader.results import Score


@dataclass(frozen=True)
class LatePolicy:
    """What a late submission costs: a percentage of its automatic points per started day late,
    and the day count from which it gets none (0: never)."""

    penalty_per_day: float = 0.0
    zero_after_days: int = 0


@dataclass(frozen=True)
class Submitted:
    """When a submission came in, and how that was known (shown to the TA)."""

    at: datetime  # timezone-aware
    how: str  # "file time", "commit time"


def file_time(path: Path) -> Submitted:
    return Submitted(datetime.fromtimestamp(path.stat().st_mtime, timezone.utc), "file time")


def commit_time(path: Path) -> Submitted | None:
    """The time of the last commit that touched ``path`` (None outside a git repository)."""
    try:
        done = subprocess.run(["git", "log", "-1", "--format=%cI", "--", path.name], cwd=path.parent,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.strip()
    return Submitted(datetime.fromisoformat(text), "commit time") if done.returncode == 0 and text else None


def days_late(submitted: datetime, deadline: datetime) -> int:
    """Started days after the deadline: 0 on time, 1 for a minute late."""
    seconds = (submitted - deadline).total_seconds()
    return 0 if seconds <= 0 else math.ceil(seconds / 86400)


def apply(verdict: Score, days: int, policy: LatePolicy) -> Score:
    """The score after the late policy; a late submission loses its bonus with its points."""
    if days <= 0 or (policy.penalty_per_day <= 0 and policy.zero_after_days <= 0):
        return verdict
    if policy.zero_after_days and days >= policy.zero_after_days:
        return replace(verdict, score=0, bonus=0)
    keep = max(0.0, 1 - policy.penalty_per_day * days / 100)
    return replace(verdict, score=math.floor(verdict.score * keep), bonus=math.floor(verdict.bonus * keep))


def describe(submitted: Submitted, deadline: datetime, days: int) -> str:
    """One line for the TA: when it came in against the deadline."""
    delta = submitted.at - deadline
    hours = abs(delta.total_seconds()) / 3600
    span = f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"
    side = f"{span} after the deadline ({days} started day{'s' if days != 1 else ''} late)" if days else f"{span} before the deadline"
    return f"submitted {submitted.at.isoformat(timespec='minutes')} by its {submitted.how}, {side}"
