"""Deterministic chat backends for teacher-loop tests (tests/test_graph.py) and the
kill -9 driver (tests/loop_driver.py).

They are real ``ChatBackend`` implementations, not mocks of the graph: every node, the
pool, the sandbox, the checkpointer and the ledger run for real. What they replace is the
model's *randomness*, so that a test can assert routing (which stage rejects what, which
direction follows which pass rate) exactly. The embedded-model runs are in test_graph.py too
(``test_llm_teacher_on_embedded_model``) and in benchmarks/bench_teacher.py.

- ``ArithmeticStudent`` answers arithmetic prompts ("Calculate 3 + 4.", "... problem: 3 + 4 =",
  "What is 3 + 4?") by evaluating them, correctly with a probability that falls with the
  number of operators (1 op: 1.0, 2: 0.75, 3: 0.5, 4: 0.25, more: 0.0), drawn from a hash of
  (prompt, attempt) so results do not depend on batching or timing.
- ``ScriptedTeacher`` writes the next text of a script for each proposal (continuing a
  prefilled or block-by-block answer the way a model would).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from fractions import Fraction

from teachloop.agents.backends import ChatBackend, Completion

_EXPR = re.compile(r"(?:Calculate|problem:|What is)\s*([-\d\s+*/().]+?)\s*(?:=|\?|\.\s*\n|\.$)", re.M)


def arithmetic_answer(prompt: str) -> tuple[str, int] | None:
    """(gold answer, number of operators) of an arithmetic prompt, or None."""
    m = _EXPR.search(prompt)
    if not m:
        return None
    expr = m.group(1).strip()
    try:
        val = eval(re.sub(r"(\d+)", r"Fraction(\1)", expr), {"Fraction": Fraction})  # noqa: S307 - digits/ops only
    except Exception:  # noqa: BLE001
        return None
    ops = len(re.findall(r"(?<=[\d)])\s*[-+*/]", expr))
    ans = str(val.numerator) if val.denominator == 1 else f"{val.numerator}/{val.denominator}"
    return ans, ops


def success_rate(ops: int) -> float:
    return {0: 1.0, 1: 1.0, 2: 0.75, 3: 0.5, 4: 0.25}.get(ops, 0.0)


def _u(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


class ArithmeticStudent(ChatBackend):
    name = "arithmetic-student"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self.conversations = 0

    async def agenerate(self, conversations: Sequence, *, n: int = 1, **kw) -> list[list[Completion]]:
        self.calls += 1
        self.conversations += len(conversations)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        out = []
        for conv in conversations:
            prompt = conv[-1]["content"]
            got = arithmetic_answer(prompt)
            comps = []
            for k in range(n):
                if got is not None and _u(f"{prompt}|{k}") < success_rate(got[1]):
                    text = f"The result is \\boxed{{{got[0]}}}."
                else:
                    text = "I think it is \\boxed{12345678}."
                comps.append(Completion(text, 10, 8, "stop"))
            out.append(comps)
        return out


class ScriptedTeacher(ChatBackend):
    """Writes the texts of ``script`` in order (cycling), one per proposal, like a model would.

    A conversation that ends in an assistant message (prefill, or guided decoding by blocks)
    is continued: the answer is the script text after that prefix, cut at the first stop
    string (OpenAI semantics: "stop" when one was found, else "length"). A prefix that opens a
    new answer (no closing tag in it) takes the next script text; later blocks of the same
    conversation continue the same text.
    """

    name = "scripted-teacher"

    def __init__(self, script: Sequence[str], delay_s: float = 0.0) -> None:
        self.script = list(script)
        self.delay_s = delay_s
        self.i = 0
        self.prompts: list[list[dict]] = []
        self._current: dict[str, str] = {}  # conversation (without the prefix) -> its script text

    def _answer(self, conv: Sequence, stop: Sequence[str] | None) -> Completion:
        prefix = conv[-1]["content"] if conv and conv[-1]["role"] == "assistant" else None
        key = repr([m for m in conv if m is not conv[-1] or prefix is None])
        if prefix is None or "</" not in prefix or key not in self._current:
            self._current[key] = self.script[self.i % len(self.script)]
            self.i += 1
        text = self._current[key]
        if prefix is None:
            return Completion(text, 100, 50, "stop")
        start = text.find(prefix.split("\n")[0]) if prefix.strip() else 0
        body = text[start:] if start >= 0 else text
        cont = body[len(prefix):] if body.startswith(prefix) else body
        cut = min((j for j in (cont.find(s) for s in stop or () if s) if j >= 0), default=-1)
        if cut >= 0:
            return Completion(cont[:cut], 100, max(1, cut // 4), "stop")
        return Completion(cont, 100, max(1, len(cont) // 4), "length")

    async def agenerate(self, conversations: Sequence, *, n: int = 1, **kw) -> list[list[Completion]]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        out = []
        for conv in conversations:
            self.prompts.append(list(conv))
            out.append([self._answer(conv, kw.get("stop")) for _ in range(n)])
        return out


def math_proposal(expr: str, *, answer: str | None = None, program: str | None = None) -> str:
    """A well-formed math teacher output asking 'What is <expr>?'."""
    got = arithmetic_answer(f"What is {expr}?")
    assert got is not None, expr
    return (f"Sure! Here is the new problem.\n<problem>\nWhat is {expr}?\n</problem>\n"
            f"<program>\n{program or f'print({expr})'}\n</program>\n"
            f"<answer>\n{answer if answer is not None else got[0]}\n</answer>\n")


class LatencyBackend(ChatBackend):
    """Wraps a backend and sleeps ``delay(conversation)`` seconds before each call (the longest
    of a batch): injected per-chain latency variance for the independent-chains test and
    benchmark (a real model's latency varies with the length of what it writes)."""

    name = "latency"

    def __init__(self, inner: ChatBackend, delay) -> None:
        self.inner = inner
        self.delay = delay
        self.calls = 0

    async def agenerate(self, conversations: Sequence, **kw) -> list[list[Completion]]:
        self.calls += 1
        wait = max((self.delay(conv) for conv in conversations), default=0.0)
        if wait > 0:
            await asyncio.sleep(wait)
        return await self.inner.agenerate(conversations, **kw)


def lognormal_delay(mean_s: float, sigma: float, salt: str = ""):
    """A deterministic heavy-tailed delay per conversation: exp(N(mu, sigma)) with mean
    ``mean_s``, drawn from a hash of the conversation (the same call waits the same)."""
    import math
    from statistics import NormalDist

    mu = math.log(mean_s) - sigma * sigma / 2

    def delay(conv: Sequence) -> float:
        u = min(max(_u(salt + repr(list(conv))), 1e-9), 1 - 1e-9)
        return math.exp(mu + sigma * NormalDist().inv_cdf(u))

    return delay
