"""The student performance summary the teacher sees, and the progression rule.

Sancaktar et al. (arXiv 2603.24202; METHODS.md §1): the summary is the pass rate p over the
M attempts plus representative solved and failed attempts (their actual text); the
progression rule asks for a harder problem when p > 0.65 and an easier one when p = 0.

teachloop: at most ``k`` solved and ``k`` failed attempts, the first distinct ones in
sampling order, each cut to ``max_chars`` (head and tail kept, the middle elided: a
student's final answer is at the end). When the previous proposal of the chain was rejected,
the summary also says why, so the teacher can correct itself on the next turn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from teachloop.agents.state import Summary


def truncate(text: str, max_chars: int) -> str:
    """``text`` cut to about ``max_chars``: its head and tail with a marker between."""
    text = text.replace("\x00", "").strip()
    if len(text) <= max_chars:
        return text
    keep = max(max_chars - 20, 10)
    head, tail = keep * 2 // 3, keep - keep * 2 // 3
    return f"{text[:head]} [...cut...] {text[-tail:]}"


def summarise_attempts(
    completions: Sequence[str], rewards: Sequence[float], *, k: int = 2, max_chars: int = 400
) -> Summary:
    """Pass rate and up to ``k`` solved + ``k`` failed attempts (distinct, truncated)."""
    solved: list[str] = []
    failed: list[str] = []
    for text, r in zip(completions, rewards, strict=True):
        bucket = solved if r >= 1.0 else failed
        t = truncate(text, max_chars)
        if len(bucket) < k and t not in bucket:
            bucket.append(t)
    m = len(rewards)
    s = float(sum(rewards))
    return Summary(attempts=m, successes=s, p=(s / m if m else None), solved=solved, failed=failed,
                   recorded=True)


def stats_only(attempts: int, successes: float) -> Summary:
    """A summary of an item measured earlier, whose attempt texts were not kept."""
    p = successes / attempts if attempts else None
    return Summary(attempts=attempts, successes=float(successes), p=p, solved=[], failed=[],
                   recorded=False)


def render_summary(s: Summary, *, direction: str, last_rejection: str = "") -> str:
    """The summary as the teacher reads it (placed in the prompt templates as {{summary}})."""
    m, p = s.get("attempts", 0), s.get("p")
    lines = []
    if not m or p is None or (isinstance(p, float) and math.isnan(p)):
        lines.append("The student has not attempted this problem yet.")
    else:
        solved = round(s.get("successes", 0.0))
        lines.append(f"The student solved {solved} of {m} attempts (pass rate p = {p:.2f}).")
        for label, key in (("A solved attempt", "solved"), ("A failed attempt", "failed")):
            for text in s.get(key, []):
                lines.append(f"{label}:\n~~~\n{text}\n~~~")
        if not s.get("recorded", True):
            lines.append("(The attempts themselves were not recorded.)")
    if last_rejection:
        lines.append(f"Your previous proposal was rejected: {last_rejection}. Follow the format "
                     "exactly and make sure the program or code runs.")
    want = {"easier": "EASIER", "harder": "HARDER"}.get(direction, direction.upper())
    lines.append(f"Progression rule: the target is a problem the student solves sometimes but not "
                 f"always. Make the new problem {want}.")
    return "\n\n".join(lines)


# ------------------------------------------------------------- the multi-turn conversation


def render_measured(s: Summary) -> str:
    """The student's performance without the progression rule (one turn's outcome)."""
    m, p = s.get("attempts", 0), s.get("p")
    if not m or p is None or (isinstance(p, float) and math.isnan(p)):
        return "The student has not attempted this problem yet."
    lines = [f"The student solved {round(s.get('successes', 0.0))} of {m} attempts (pass rate p = {p:.2f})."]
    for label, key in (("A solved attempt", "solved"), ("A failed attempt", "failed")):
        for text in s.get(key, []):
            lines.append(f"{label}:\n~~~\n{text}\n~~~")
    if not s.get("recorded", True):
        lines.append("(The attempts themselves were not recorded.)")
    return "\n\n".join(lines)


def render_turn_outcome(turn: int, *, summary: Summary | None = None, kept: bool = False,
                        stage: str = "", reason: str = "") -> str:
    """What became of the teacher's proposal of ``turn``: measured (p over M, solved and
    failed attempts, kept or not) or rejected (the check that rejected it and why)."""
    if summary is None:
        return (f"Result of turn {turn}: your proposal was rejected by the {stage} check: {reason}. "
                "It does not count; the student never saw it.")
    where = ("It was kept for the curriculum." if kept
             else "It was not kept (its pass rate is outside the range used for training).")
    return f"Result of turn {turn}: {render_measured(summary)}\n\n{where}"


def render_rule(direction: str, *, target_min: float, target_max: float) -> str:
    """The progression rule of the next turn (METHODS.md §1: harder if p > 0.65, easier if p = 0,
    aiming at the medium band)."""
    want = {"easier": "EASIER", "harder": "HARDER"}.get(direction, direction.upper())
    return (f"Progression rule: the target is a problem the student solves sometimes but not always "
            f"(pass rate between {target_min:.2f} and {target_max:.2f}). Make the new problem {want}.")
