"""Reward functions in TRL's contract, scored by the item's own task family.

TRL calls a reward function as ``f(prompts=..., completions=..., completion_ids=...,
**columns, trainer_state=..., log_extra=..., log_metric=...)`` with one entry per completion
and the dataset columns (here ``item_id``) as keyword lists; it returns one float per
completion, or ``None`` where the reward does not apply (TRL turns ``None`` into NaN and
leaves it out of sums and means). STYLE.md §4.

- :func:`correctness_reward`: the family's binary checker (``Family.score``: never raises;
  ``teachloop.evals.answers.score_completion`` on the whole completion for math, the sandbox
  for code). This is the accuracy that VCRL, AdaCuRL and the
  pool's stats read (``CurriculumGRPOConfig.accuracy_reward``).
- :func:`format_reward`: 1.0 when the family can extract an answer from the completion
  (``\\boxed{}`` for math, a code block for code), else 0.0; ``None`` for every completion
  once the step reaches ``T_f`` (AdaCuRL, arXiv 2511.09478: format + accuracy, then accuracy
  only after ``T_f = 64`` steps).

Both need the items (id → :class:`~teachloop.curriculum.items.Item`); bind them with the factories
:func:`make_correctness_reward` / :func:`make_format_reward`, which return a
``functools.partial`` that TRL logs under the function's real name.

Not covered: partial credit (families score 0/1), reward models, async scoring.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from teachloop.curriculum.items import Item

__all__ = [
    "correctness_reward",
    "format_reward",
    "make_correctness_reward",
    "make_format_reward",
]


def _family(item: Item):
    from teachloop.evals.families import get_family  # registry import is light; families load lazily

    return get_family(item.family)


def correctness_reward(completions: Sequence[Any], item_id: Sequence[str], *,
                       items: Mapping[str, Item], **kwargs: Any) -> list[float | None]:
    """1.0 if the item's family checker accepts the completion, else 0.0; ``None`` for an
    id that is not in ``items`` (nothing to score against)."""
    out: list[float | None] = []
    for completion, iid in zip(completions, item_id, strict=True):
        item = items.get(iid)
        out.append(None if item is None else _family(item).score(item, completion))
    return out


def format_reward(completions: Sequence[Any], item_id: Sequence[str], *,
                  items: Mapping[str, Item], active: Callable[[int], bool],
                  trainer_state: Any = None, **kwargs: Any) -> list[float | None]:
    """1.0 if the family can extract an answer (the format is right), else 0.0, while
    ``active(step)``; afterwards ``None`` for every completion (the reward is off)."""
    step = int(getattr(trainer_state, "global_step", 0) or 0)
    if not active(step):
        return [None] * len(completions)
    out: list[float | None] = []
    for completion, iid in zip(completions, item_id, strict=True):
        item = items.get(iid)
        if item is None:
            out.append(None)
            continue
        ans = _family(item).extract(completion)
        out.append(1.0 if ans is not None and ans.strip() else 0.0)
    return out


def make_correctness_reward(items: Mapping[str, Item]) -> Callable[..., list[float | None]]:
    """:func:`correctness_reward` bound to ``items`` (a live mapping: items added later are
    scored too); TRL logs it as ``correctness_reward``."""
    return functools.update_wrapper(functools.partial(correctness_reward, items=items),
                                    correctness_reward)


def make_format_reward(items: Mapping[str, Item],
                       format_steps: int | Callable[[int], bool] = 64
                       ) -> Callable[..., list[float | None]]:
    """:func:`format_reward` bound to ``items``, on for 0-based steps ``< format_steps`` (or
    while a given ``active(step)`` predicate, e.g. ``AdaCuRLScheduler.format_reward_active``,
    says so); TRL logs it as ``format_reward``."""
    if callable(format_steps):
        active = format_steps
    else:
        if format_steps < 0:
            raise ValueError(f"format_steps must be >= 0, got {format_steps}")
        active = functools.partial(_before, format_steps)
    return functools.update_wrapper(functools.partial(format_reward, items=items, active=active),
                                    format_reward)


def _before(limit: int, step: int) -> bool:
    return step < limit
