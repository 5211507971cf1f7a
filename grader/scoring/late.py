"""The rubric's deadline: how late a submission came in, and what lateness costs (the one place the
late policy is applied). When it came in is intake's evidence (``Submission.submitted``)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime

from grader.model.results import Score
from grader.model.rubric import LatePolicy
from grader.model.submission import Submitted


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
    return replace(
        verdict, score=math.floor(verdict.score * keep), bonus=math.floor(verdict.bonus * keep)
    )


def describe(submitted: Submitted, deadline: datetime, days: int) -> str:
    """One line for the TA: when it came in against the deadline."""
    delta = submitted.at - deadline
    hours = abs(delta.total_seconds()) / 3600
    span = f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"
    side = (
        f"{span} after the deadline ({days} started day{'s' if days != 1 else ''} late)"
        if days
        else f"{span} before the deadline"
    )
    return f"submitted {submitted.at.isoformat(timespec='minutes')} by its {submitted.how}, {side}"
