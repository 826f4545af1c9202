"""Student probing: M sampled attempts per item, scored, summarised as a pass rate.

``probe(items, M, backend, score_fn)`` sends every item's prompt to the student backend in
ONE ``agenerate`` call with ``n=M``: the local backend turns that into as few batched
``model.generate`` calls as its ``max_batch_size`` allows, the OpenAI-compatible backend
into concurrent requests (bounded by its ``max_concurrency``).

What is covered: any item with ``.id`` and ``.prompt`` (the prompt is sent as a user message,
optionally after a system message and ``fewshot`` solved examples: ``evals/fewshot.py``); any ``score_fn(item, completion_text) ->
float`` in [0, 1] (the task-family checkers plug in here); the pass rate ``p`` is the mean
reward, so partial credit counts proportionally.

Scoring: with ``score_workers > 0`` (the teacher loop's default) the M attempts are scored
in a shared thread pool of that size, off the event loop, so one chain's sandboxed checks
never stall the other chains' requests; ``score_workers=0`` scores in the calling thread
(the event loop, when called from async code). ``score_fn`` must then be thread-safe (the
family checkers are: the sandbox runs subprocesses, math-verify runs without signal timeouts).

What is not covered: a reward outside [0, 1] is an error, not clipped, because it means the
checker is wrong.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from teachloop.agents.backends import ChatBackend, Completion, run_sync


class ProbeItem(Protocol):
    id: str
    prompt: str


ScoreFn = Callable[[Any, str], float]


@dataclass
class ProbeResult:
    """The M attempts at one item and their rewards."""

    item_id: str
    completions: list[str]
    rewards: list[float]
    completion_tokens: list[int] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return len(self.rewards)

    @property
    def p(self) -> float:
        """Pass rate: mean reward over the attempts (nan if there were none)."""
        return sum(self.rewards) / len(self.rewards) if self.rewards else math.nan

    @property
    def successes(self) -> int:
        """Attempts with full reward (1.0)."""
        return sum(1 for r in self.rewards if r >= 1.0)


_pools: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _score_pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="teachloop-score")
        return _pools[workers]


def _checked(score_fn: ScoreFn, item: Any, text: str) -> float:
    r = float(score_fn(item, text))
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"score_fn returned {r} for item {item.id}; rewards must lie in [0, 1]")
    return r


async def aprobe(
    items: Sequence[ProbeItem],
    M: int,
    backend: ChatBackend,
    score_fn: ScoreFn,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_tokens: int = 512,
    stop: Sequence[str] | None = None,
    system_prompt: str | None = None,
    score_workers: int = 0,
    fewshot: int = 0,
) -> list[ProbeResult]:
    """Async ``probe`` (``score_workers``: see the module docstring)."""
    if M < 1:
        raise ValueError(f"M must be >= 1, got {M}")
    if not items:
        return []
    from teachloop.evals.fewshot import student_messages

    conversations = [student_messages(item, fewshot=fewshot, system_prompt=system_prompt)
                     for item in items]
    outputs: list[list[Completion]] = await backend.agenerate(
        conversations, n=M, temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stop
    )
    results = []
    for item, completions in zip(items, outputs, strict=True):
        if score_workers > 0:
            loop, pool = asyncio.get_running_loop(), _score_pool(score_workers)
            rewards = list(await asyncio.gather(*[loop.run_in_executor(pool, _checked, score_fn, item, c.text)
                                                  for c in completions]))
        else:
            rewards = [_checked(score_fn, item, c.text) for c in completions]
        results.append(
            ProbeResult(
                item_id=item.id,
                completions=[c.text for c in completions],
                rewards=rewards,
                completion_tokens=[c.completion_tokens for c in completions],
            )
        )
    return results


def probe(
    items: Sequence[ProbeItem],
    M: int,
    backend: ChatBackend,
    score_fn: ScoreFn,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_tokens: int = 512,
    stop: Sequence[str] | None = None,
    system_prompt: str | None = None,
    fewshot: int = 0,
) -> list[ProbeResult]:
    """Sample ``M`` attempts per item from ``backend``, score them, return one result per item.

    Results are in the order of ``items``. Blocking; from async code use ``aprobe``.
    """
    return run_sync(
        aprobe(
            items, M, backend, score_fn,
            temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stop, system_prompt=system_prompt,
            fewshot=fewshot,
        )
    )
