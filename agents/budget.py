"""The teacher's token budget (``teacher.budget_tokens``, issue 14): one run-wide counter.

``teachloop generate`` builds a ``TokenBudget`` from the pool's totals (teachloop/stats.py
``teacher_totals``: prompt + completion tokens of every recorded proposal, so a resumed run
starts from what it already spent) and hands it to the graph in ``LoopContext.budget``.
``propose`` adds each teacher call's tokens; ``route`` asks ``exhausted()`` before a chain
starts another llm turn. Once spent, no new proposal starts: chains in flight finish the
proposal they are making (all its calls) and then pause. With a checkpointer a paused chain
waits in a LangGraph ``interrupt`` (``--resume`` with a larger budget continues it where it
stopped, conversation and all); without one it ends (``ChainEnd.reason`` "teacher token
budget"). The overshoot is at most the calls of the proposals in flight.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

BUDGET_REASON = "teacher token budget"


@dataclass
class TokenBudget:
    """``limit`` tokens (prompt + completion) for the whole run; ``spent`` so far."""

    limit: int
    spent: int = 0
    pause: bool = True  # paused chains wait in an interrupt (needs a checkpointer) or end
    stopped: int = 0  # chains that this process paused or ended at the budget
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, tokens: int) -> None:
        with self._lock:  # sync nodes run in worker threads
            self.spent += int(tokens)

    def exhausted(self) -> bool:
        return self.limit > 0 and self.spent >= self.limit

    def stop(self) -> None:
        with self._lock:
            self.stopped += 1

    def message(self) -> str:
        """The one line ``generate`` prints when the budget stopped the run."""
        return (f"teacher token budget reached: {self.spent:,} of {self.limit:,} tokens; raise "
                "teacher.budget_tokens and --resume to continue")
