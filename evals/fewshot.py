"""Few-shot solved examples before the student's question (``student.fewshot = N``).

A 135M instruct model asked to "put your final answer in \\boxed{}" almost never does
(measured on 24 level-0 ``basic_arithmetic`` items x 4 samples, 32 tokens: p = 0.016 with the
instruction alone, 0.010-0.021 with three reworded instructions or a system prompt), so
every honest reward (``require_boxed``) is 0 and GRPO has nothing to learn from. Three solved
examples of the same family as earlier chat turns (user: a problem, assistant: the family's
``reference_completion``) bring it to p = 0.062 with the answer boxed in nearly every
sample: the student then learns arithmetic, not the answer format. This is the standard
few-shot chat prompt of evaluation harnesses (lm-eval's ``--num_fewshot`` with
``--apply_chat_template --fewshot_as_multiturn``).

The examples are drawn from the family itself with ``FEWSHOT_SEED`` (never a run's seed
stream, ``seed=run.seed``, nor the held-out stream at ``evals.bench.HELDOUT_SEED_OFFSET``),
at the family's default configuration, so they are the same in probing, training and
evaluation, and their ids are excluded from held-out sets (``fewshot_ids``).

The same conversation prefix is used everywhere the student answers: ``agents/probe.py``
(the probe stage and the teacher's probes), ``training/data.py`` (GRPO prompts) and
``evals/bench.py`` (evaluation).
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["FEWSHOT_SEED", "fewshot_ids", "fewshot_messages", "student_messages"]

FEWSHOT_SEED = 20_000


@functools.lru_cache(maxsize=64)
def _shots(family: str, n: int) -> tuple[tuple[str, str, str], ...]:
    from teachloop.evals.families import UnknownFamilyError, get_family

    try:
        fam = get_family(family)
    except UnknownFamilyError:  # a benchmark's own items (jsonl, humaneval): no examples
        return ()
    items = fam.seeds(n, seed=FEWSHOT_SEED)[:n]
    return tuple((it.id, it.prompt, fam.reference_completion(it)) for it in items)


def fewshot_messages(family: str, n: int) -> list[dict[str, str]]:
    """``n`` solved examples of ``family`` as alternating user / assistant messages."""
    if n <= 0:
        return []
    out: list[dict[str, str]] = []
    for _id, prompt, answer in _shots(family, n):
        out += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return out


def fewshot_ids(families: list[str] | tuple[str, ...], n: int) -> set[str]:
    """Ids of the example items (never evaluated on)."""
    return {sid for f in families for sid, _, _ in (_shots(f, n) if n > 0 else ())}


def student_messages(item: Any, *, fewshot: int = 0,
                     system_prompt: str | None = None) -> list[dict[str, str]]:
    """The conversation the student answers for ``item`` (``.prompt``, ``.family``)."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    family = getattr(item, "family", None)
    if fewshot > 0 and family:
        msgs += fewshot_messages(family, fewshot)
    msgs.append({"role": "user", "content": item.prompt})
    return msgs
