"""``teachloop.generate.main`` with scripted backends, for the kill -9 test (tests/test_graph.py).

Usage: python tests/loop_driver.py RUN_DIR [--resume]

The student sleeps ``DELAY_S`` per call so that the run lasts long enough to be killed in the
middle; everything else (graph, checkpointer, pool, sandbox, ledger) is the real thing.

``LOOP_DRIVER_EXIT_AFTER_WRITES=N``: the process dies (``os._exit``) right after its N-th pool
write, inside the ``record`` task, before LangGraph can checkpoint that task: the most
dangerous moment for "nothing twice".
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from loop_helpers import ArithmeticStudent, ScriptedTeacher, math_proposal  # noqa: E402

from teachloop.config import load_config  # noqa: E402
from teachloop.generate import main  # noqa: E402

DELAY_S = float(os.environ.get("LOOP_DRIVER_DELAY_S", "0.25"))
OVERRIDES = [
    "seeds.families=[math.rg.basic_arithmetic, math.word]",
    "seeds.per_family=4",
    "teacher.kind=auto",
    "teacher.max_turns=4",
    "teacher.in_band=harder",
    "probe.attempts=4",
]
SCRIPT = [math_proposal(f"{a} + {b} * {a}") for a, b in zip(range(2, 40), range(7, 45))] + ["no blocks at all"]


def die_after_writes(n: int) -> None:
    import threading

    from teachloop.agents import ledger

    count = [0]
    lock = threading.Lock()

    def wrap(fn):
        def inner(*a, **kw):
            rec = fn(*a, **kw)
            with lock:
                count[0] += 1
                if count[0] >= n:
                    os._exit(137)
            return rec
        return inner

    ledger.Ledger._reject_locked = wrap(ledger.Ledger._reject_locked)
    ledger.Ledger.accept = wrap(ledger.Ledger.accept)


if __name__ == "__main__":
    out, resume = sys.argv[1], "--resume" in sys.argv[2:]
    if os.environ.get("LOOP_DRIVER_EXIT_AFTER_WRITES") and not resume:
        die_after_writes(int(os.environ["LOOP_DRIVER_EXIT_AFTER_WRITES"]))
    cfg = load_config("smoke", None, OVERRIDES)
    main(cfg, out=out, resume=resume, student=ArithmeticStudent(delay_s=DELAY_S),
         teacher=ScriptedTeacher(SCRIPT, delay_s=DELAY_S))
