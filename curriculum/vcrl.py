"""VCRL: variance-based sample selection with a replay memory bank.

Implements VCRL, variance-based curriculum RL (Jiang et al., Alibaba, arXiv 2509.19803),
as pure Python, for a TRL ``GRPOTrainer`` subclass to call once per generation batch
(METHODS.md §2):

1. score every query of the batch by the normalised variance ``p`` of its group rewards;
2. drop queries with ``p < κ(step)``;
3. keep high-``p`` queries in a bounded priority queue (the memory bank);
4. refill the dropped slots from the bank, so the batch stays full.

Where teachloop departs from, or fills gaps in, the paper:

- **Non-binary rewards.** The paper's score is defined for binary rewards. For rewards in
  [0, 1] that are not all 0/1, ``p`` = unbiased sample variance / 0.25, clipped to [0, 1].
- **κ schedule.** ``κ = 0.3`` for the first 20 steps, then 0.8, as reported by secondary
  sources; the paper's own schedule is not public. Steps are 0-based (TRL's
  ``state.global_step`` before the update): steps 0..19 use the warm-up value.
- **β in the priority update** ``P ← α·P + (1−α)·β`` is undefined in the paper; here it is
  the query's latest ``p``. A query entering the bank starts at ``P = p``.
- **Bank size and eviction** are unspecified in the paper; here the bank is bounded
  (``bank_capacity``) and evicts the lowest priority.
- **Replay is on-policy.** The bank stores item ids only, never trajectories: a replayed
  query is re-rolled by the current policy.
- **Replay limit** (2) counts over the bank's lifetime, not per stay: a query replayed
  ``replay_limit`` times leaves the bank and is never admitted again. Otherwise a replayed
  query, re-rolled and still high-``p``, would re-enter the bank and be replayed forever.
  The bank therefore remembers the replay count of every id it ever replayed (ids only).
- **Bank updates from dropped queries.** A dropped query that is already in the bank has
  its priority updated with its new (low) ``p``; a dropped query is never inserted.
- **Refills exclude the batch's own ids**, so a query is never twice in one batch.
- **κ and G.** The paper's κ = 0.8 was set for its large groups; with binary rewards p
  takes ⌊G/2⌋ + 1 values, so what κ keeps depends on G (G = 4: κ 0.8 keeps only k = 2 of
  4; G = 8: k = 3..5). :func:`kept_counts` / :meth:`VCRLConfig.keeps` say it; the training
  config logs and stores it (``vcrl_keeps``) and refuses a κ that keeps no count.

What is not covered: rollouts, advantage computation and the batch re-roll itself (the
trainer's job); the bank holds no text and no trajectories.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "MemoryBank",
    "Selection",
    "VCRLConfig",
    "VCRLState",
    "kept_counts",
    "max_unbiased_variance",
    "select_batch",
    "variance_score",
]

ItemId = Hashable  # teachloop.curriculum.items.item_id gives str; anything JSON-serialisable works


# --- the score -----------------------------------------------------------------------

def max_unbiased_variance(group_size: int) -> float:
    """σ²_max for G binary rewards (VCRL, arXiv 2509.19803): G/(4(G−1)) even, (G+1)/(4G) odd."""
    g = group_size
    if g < 2:
        raise ValueError(f"need a group of at least 2 rewards, got {g}")
    return g / (4 * (g - 1)) if g % 2 == 0 else (g + 1) / (4 * g)


def _check_rewards(rewards: Sequence[float]) -> list[float]:
    out = []
    for r in rewards:
        x = float(r)
        if not (0.0 <= x <= 1.0):  # also rejects NaN
            raise ValueError(f"VCRL needs rewards in [0, 1], got {r!r}; rescale the reward "
                             "functions (or their weights) so the total lies in [0, 1]")
        out.append(x)
    return out


def variance_score(rewards: Sequence[float]) -> float:
    """Normalised group variance ``p ∈ [0, 1]`` of one query's G rollout rewards.

    VCRL (Jiang et al., arXiv 2509.19803), METHODS.md §2. Binary rewards, k correct of G:
    ``p = σ²/σ²_max`` with the unbiased ``σ² = k(G−k)/(G(G−1))`` and ``σ²_max`` from
    :func:`max_unbiased_variance`, i.e. ``4k(G−k)/G²`` for even G and ``4k(G−k)/(G²−1)``
    for odd G; computed from integers, so ``k = ⌊G/2⌋`` gives exactly 1.0.
    Other rewards in [0, 1] (teachloop): unbiased sample variance / 0.25, clipped to [0, 1].
    Fewer than 2 rewards: 0.0. A reward outside [0, 1] (or NaN) raises ``ValueError``.
    """
    xs = _check_rewards(rewards)
    g = len(xs)
    if g < 2:
        return 0.0
    if all(x == 0.0 or x == 1.0 for x in xs):
        k = sum(1 for x in xs if x == 1.0)
        denom = g * g if g % 2 == 0 else g * g - 1
        return 4 * k * (g - k) / denom
    return min(1.0, statistics.variance(xs) / 0.25)


def kept_counts(kappa: float, group_size: int) -> tuple[int, int] | None:
    """The smallest and largest correct count k (of G binary rewards) with ``p(k) ≥ κ``, or
    None when κ keeps no count. p(k) is symmetric and peaks at k = ⌊G/2⌋, so the kept counts
    are one interval. At G = 4, κ = 0.8 keeps only k = 2 (p(1) = 0.75); at G = 8, k = 3..5."""
    kept = [k for k in range(group_size + 1)
            if variance_score([1.0] * k + [0.0] * (group_size - k)) >= kappa]
    return (kept[0], kept[-1]) if kept else None


# --- config and κ schedule -----------------------------------------------------------

@dataclass
class VCRLConfig:
    """VCRL knobs (arXiv 2509.19803); defaults follow METHODS.md §2."""

    kappa_warmup: float = field(default=0.3, metadata={
        "help": "variance threshold κ during warm-up: queries with p < κ are dropped"})
    warmup_steps: int = field(default=20, metadata={
        "help": "steps (0-based, step < warmup_steps) that use kappa_warmup"})
    kappa: float = field(default=0.8, metadata={
        "help": "variance threshold κ after warm-up"})
    bank_capacity: int = field(default=1024, metadata={
        "help": "memory bank size in queries (ids only); 0 disables replay. "
                "Unspecified in the paper"})
    alpha: float = field(default=0.9, metadata={
        "help": "bank priority momentum: P <- alpha*P + (1-alpha)*latest p"})
    replay_limit: int = field(default=2, metadata={
        "help": "times one query may be replayed from the bank over the run"})

    def __post_init__(self) -> None:
        for name in ("kappa_warmup", "kappa", "alpha"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"vcrl.{name} must lie in [0, 1], got {v}")
        if self.warmup_steps < 0:
            raise ValueError(f"vcrl.warmup_steps must be >= 0, got {self.warmup_steps}; "
                             "set 0 to use kappa from the first step")
        if self.warmup_steps > 0 and self.kappa_warmup > self.kappa:
            raise ValueError(
                f"vcrl.kappa_warmup ({self.kappa_warmup}) is above vcrl.kappa ({self.kappa}): "
                "the warm-up threshold is the looser one; set kappa_warmup <= kappa, "
                "or warmup_steps=0 for a constant threshold")
        if self.bank_capacity < 0:
            raise ValueError(f"vcrl.bank_capacity must be >= 0, got {self.bank_capacity}; "
                             "set 0 to disable replay")
        if self.replay_limit < 1:
            raise ValueError(f"vcrl.replay_limit must be >= 1, got {self.replay_limit}; "
                             "set bank_capacity=0 to disable replay")

    def kappa_at(self, step: int) -> float:
        """κ at a 0-based optimisation step: ``kappa_warmup`` while ``step < warmup_steps``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self.kappa_warmup if step < self.warmup_steps else self.kappa

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def keeps(self, group_size: int) -> dict[str, Any]:
        """What each κ phase keeps at group size G (binary accuracy): ``{"G": G, "warmup":
        {...} or None, "after": {...}}``, each phase ``{"kappa", "steps", "k_min", "k_max"}``
        (k_min/k_max None when the phase keeps no count)."""
        def phase(kappa: float, steps: str) -> dict[str, Any]:
            k = kept_counts(kappa, group_size)
            return {"kappa": kappa, "steps": steps, "k_min": k and k[0], "k_max": k and k[1]}

        warm = phase(self.kappa_warmup, f"0..{self.warmup_steps - 1}") if self.warmup_steps else None
        return {"G": group_size, "warmup": warm, "after": phase(self.kappa, f"{self.warmup_steps}..")}


def describe_keeps(keeps: Mapping[str, Any]) -> str:
    """One line: which correct counts each κ phase keeps, e.g. ``κ 0.3 (steps 0..19) keeps
    k = 1..3 of G = 4; κ 0.8 (steps 20..) keeps k = 2..2 of G = 4``."""
    parts = []
    for name in ("warmup", "after"):
        ph = keeps.get(name)
        if ph is None:
            continue
        kept = "nothing" if ph["k_min"] is None else f"k = {ph['k_min']}..{ph['k_max']}"
        parts.append(f"κ {ph['kappa']:g} (steps {ph['steps']}) keeps {kept} of G = {keeps['G']}")
    return "; ".join(parts)


# --- memory bank ---------------------------------------------------------------------

class MemoryBank:
    """A bounded priority queue of high-``p`` query ids (VCRL's replay memory bank).

    Entries are ranked by priority, highest first; ties go to the entry inserted earlier
    (an insertion counter, so the order never depends on the id's type or hash). Eviction
    removes the lowest-ranked entry, which may be the one just inserted. Stores ids and
    numbers only, never rollouts. ``state_dict`` is JSON-serialisable and
    ``load_state_dict`` restores it exactly.
    """

    def __init__(self, capacity: int = 1024, alpha: float = 0.9, replay_limit: int = 2):
        VCRLConfig(bank_capacity=capacity, alpha=alpha, replay_limit=replay_limit)  # validate
        self.capacity = capacity
        self.alpha = alpha
        self.replay_limit = replay_limit
        self._entries: dict[ItemId, list[Any]] = {}  # id -> [priority, beta, seq]
        self._replays: dict[ItemId, int] = {}  # every id ever replayed -> times replayed
        self._next_seq = 0

    @classmethod
    def from_config(cls, config: VCRLConfig) -> MemoryBank:
        return cls(config.bank_capacity, config.alpha, config.replay_limit)

    # read-only views
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._entries

    def priority(self, item_id: ItemId) -> float:
        return self._entries[item_id][0]

    def beta(self, item_id: ItemId) -> float:
        """The latest ``p`` seen for this id."""
        return self._entries[item_id][1]

    def replays(self, item_id: ItemId) -> int:
        return self._replays.get(item_id, 0)

    def ids(self) -> list[ItemId]:
        """Ids in rank order, highest priority first."""
        return sorted(self._entries, key=self._rank, reverse=True)

    def _rank(self, item_id: ItemId) -> tuple[float, int]:
        prio, _, seq = self._entries[item_id]
        return (prio, -seq)  # higher priority first, then earlier insertion

    # updates
    def update(self, item_id: ItemId, p: float) -> bool:
        """``P ← α·P + (1−α)·p`` for an id already in the bank; ``False`` if it is not."""
        e = self._entries.get(item_id)
        if e is None:
            return False
        e[0] = self.alpha * e[0] + (1.0 - self.alpha) * p
        e[1] = p
        return True

    def add(self, item_id: ItemId, p: float) -> bool:
        """Insert at ``P = p``, or update ``P ← α·P + (1−α)·p`` if present; evict to capacity.

        Returns whether the id is in the bank afterwards: ``False`` when the bank is
        disabled, when the id has used up its replay limit, or when it ranked lowest and
        was evicted at once.
        """
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        if self.update(item_id, p):
            return True
        if self.capacity == 0 or self._replays.get(item_id, 0) >= self.replay_limit:
            return False
        self._entries[item_id] = [float(p), float(p), self._next_seq]
        self._next_seq += 1
        while len(self._entries) > self.capacity:
            del self._entries[min(self._entries, key=self._rank)]
        return item_id in self._entries

    def pop(self, n: int, exclude: Iterable[ItemId] = ()) -> list[ItemId]:
        """Up to ``n`` distinct ids to replay, highest priority first, skipping ``exclude``.

        Each returned id counts one replay; an id reaching ``replay_limit`` leaves the bank
        (the others stay, to be replayed again later).
        """
        if n <= 0:
            return []
        skip = set(exclude)
        out = [i for i in self.ids() if i not in skip][:n]
        for i in out:
            self._replays[i] = self._replays.get(i, 0) + 1
            if self._replays[i] >= self.replay_limit:
                del self._entries[i]
        return out

    # checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "alpha": self.alpha,
            "replay_limit": self.replay_limit,
            "entries": [[i, e[0], e[1], e[2]] for i, e in self._entries.items()],
            "replays": [[i, c] for i, c in self._replays.items()],
            "next_seq": self._next_seq,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        VCRLConfig(bank_capacity=state["capacity"], alpha=state["alpha"],
                   replay_limit=state["replay_limit"])  # validate
        self.capacity = int(state["capacity"])
        self.alpha = float(state["alpha"])
        self.replay_limit = int(state["replay_limit"])
        self._entries = {_key(i): [float(pr), float(b), int(s)]
                         for i, pr, b, s in state["entries"]}
        self._replays = {_key(i): int(c) for i, c in state["replays"]}
        self._next_seq = int(state["next_seq"])


def _key(i: Any) -> ItemId:
    # JSON turns tuple ids into lists; make them hashable again.
    return tuple(_key(x) for x in i) if isinstance(i, list) else i


# --- batch selection -----------------------------------------------------------------

class Selection(NamedTuple):
    """What :func:`select_batch` decided; unpacks as ``kept, dropped, refill``."""

    kept: list[ItemId]
    dropped: list[ItemId]
    refill: list[ItemId]


def select_batch(
    groups: Mapping[ItemId, Sequence[float]],
    step: int,
    bank: MemoryBank,
    config: VCRLConfig | None = None,
) -> Selection:
    """One VCRL selection over a generation batch (arXiv 2509.19803, METHODS.md §2).

    ``groups`` maps each query's id to its G rollout rewards. Queries with
    ``variance_score < κ(step)`` are dropped; kept queries are added to the bank (priority
    update if present), dropped ones already in the bank get their priority updated; then
    the bank is asked for ``len(dropped)`` refill ids, excluding the batch's own ids. The
    trainer re-rolls the refill ids on-policy. Fewer refills than drops means the bank ran
    short. Orders: kept and dropped follow ``groups``; refill is highest priority first.
    """
    config = config or VCRLConfig()
    kappa = config.kappa_at(step)
    kept: list[ItemId] = []
    dropped: list[ItemId] = []
    for item_id, rewards in groups.items():
        p = variance_score(rewards)
        if p >= kappa:
            kept.append(item_id)
            bank.add(item_id, p)
        else:
            dropped.append(item_id)
            bank.update(item_id, p)
    refill = bank.pop(len(dropped), exclude=groups.keys())
    return Selection(kept, dropped, refill)


class VCRLState:
    """The VCRL state a trainer checkpoints: config, step counter and memory bank."""

    def __init__(self, config: VCRLConfig | None = None):
        self.config = config or VCRLConfig()
        self.step = 0
        self.bank = MemoryBank.from_config(self.config)
        self.last: Selection | None = None

    @property
    def kappa(self) -> float:
        return self.config.kappa_at(self.step)

    def select(self, groups: Mapping[ItemId, Sequence[float]]) -> Selection:
        """:func:`select_batch` at the current step, then advance the step counter by one.

        Call once per generation batch. If one generation batch serves several optimisation
        steps, set ``self.step = trainer.state.global_step`` before the call, so κ follows
        optimisation steps.
        """
        self.last = select_batch(groups, self.step, self.bank, self.config)
        self.step += 1
        return self.last

    def log_dict(self) -> dict[str, float]:
        """What to log beside TRL's metrics (STYLE.md §12): κ, bank size, last selection."""
        out = {"vcrl/kappa": self.kappa, "vcrl/bank_size": float(len(self.bank))}
        if self.last is not None:
            n = len(self.last.kept) + len(self.last.dropped)
            out["vcrl/frac_dropped"] = len(self.last.dropped) / n if n else 0.0
            out["vcrl/refilled"] = float(len(self.last.refill))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "step": self.step,
                "bank": self.bank.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpoint; refuses one written with a different config."""
        saved = VCRLConfig(**state["config"])
        if saved != self.config:
            diff = {k: (v, getattr(self.config, k)) for k, v in saved.to_dict().items()
                    if getattr(self.config, k) != v}
            raise ValueError(f"VCRL checkpoint has a different config (saved, current): {diff}; "
                             "resume with the config the run was started with")
        self.step = int(state["step"])
        self.bank.load_state_dict(state["bank"])
        self.last = None
