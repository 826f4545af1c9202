"""AdaCuRL: difficulty buckets merged by a capability score.

Implements AdaCuRL (Li et al., AMAP/Alibaba, AAAI-2026, arXiv 2511.09478) as pure Python,
for a TRL ``GRPOTrainer`` subclass to call once per optimisation step (METHODS.md §3):

- coarse difficulty from 5 attempts, bins G1/G2/G3 sampled at preset ratios;
- fine difficulty ``1 − c/N``, filtered to [0.05, 0.95], sorted easy → hard, split into K
  equal consecutive buckets;
- a capability score ``cs`` computed from the newest merged bucket's accuracy rewards;
  the next bucket is merged when ``cs`` crosses its threshold (then π_ref ← π_θ);
- merged buckets stay trainable (historical revisiting); the format reward stops after
  ``T_f`` steps; Re-AdaCuRL re-buckets after a pass.

Index convention (the paper's is ambiguous, METHODS.md §3). Everything is **0-based**:
buckets ``B_0 .. B_{K−1}``, easy → hard; coarse bins 0, 1, 2 are the paper's G1, G2, G3;
steps are 0-based optimisation steps. The active set starts as ``{B_0}``. With
``n_active`` buckets merged, the next bucket is ``k = n_active`` and it is merged when
``cs ≥ k/K``, then ``cs ← k/K``. In the paper's 1-based numbering (``k' = k + 1``) this is
"merge when cs ≥ (k'−1)/K, reset cs ← (k'−1)/K". With K = 3: B_1 at cs ≥ 1/3, B_2 at
cs ≥ 2/3. Comparisons allow 1e-12 of float slack, so a cs that equals a threshold in exact
arithmetic merges.

Where teachloop departs from, or fills gaps in, the paper:

- **When cs is updated** (as published, METHODS.md §3): the newest bucket's accuracy
  rewards enter the reward buffer R_b; each time R_b holds M (``window``, default 512)
  rewards, cs is updated once with r̄ = their mean and R_b is emptied. Rewards from other
  buckets never enter R_b. Within one :meth:`AdaCuRLScheduler.observe` call the rewards are
  consumed in order; a call may complete a buffer part-way, the rest starting the next one.
- **The buffer is emptied at a merge**, and the merging call's remaining rewards (from the
  old newest bucket) are discarded: they say nothing about the new newest bucket.
- **cs is clamped below at** ``cs_floor`` (default 0). The paper's update is unbounded
  below: at r̄ = 0, ``cs ← 1.5·cs − 0.5`` diverges geometrically and the curriculum could
  never recover. ``cs_floor = None`` restores the paper's update. cs is not clamped above
  (with γ it can pass 1 once every bucket is merged; nothing reads it then).
- **Bucket sizes.** K equal consecutive buckets: sizes differ by at most one, the
  remainder going to the *easiest* buckets (``divmod(n, K)``: the first ``n mod K``
  buckets get one extra item). Equal difficulties are ordered by item id.
- **New items** go to the bucket whose difficulty range (recorded at bucketing time)
  holds their measured difficulty; an item in an active bucket is trainable at once.
- **Coarse sampling**: quotas by largest remainder; a bin with too few items gives its
  shortfall to the others in proportion to their ratios.
- **A band that keeps too little** (teachloop/run.py ``adacurl_settings``, not this module):
  when fewer than K measured items fall in [``fine_low``, ``fine_high``], ``teachloop run``
  widens the band to [0, 1] (and lowers K if still short), logs it and records
  ``band_widened`` in the run's stages.json; the paper would have nothing to train on.

- **Coarse stage** (``coarse_size``): the paper rolls out 5 fresh attempts per item; here
  the bins read the probe stats, scaled to 5 when the probe made M ≠ 5 attempts
  (:func:`coarse_correct`), and the fine difficulty comes from the same probe stats
  instead of N = 100 further rollouts. A plain ``datasets.Dataset`` without a
  ``difficulty`` column (the TRL drop-in, ``training/trainer.py``) is measured before
  training with one group of G rollouts per row by the initial policy (N = G).
- **Re-AdaCuRL** (``re_passes``): "after a full pass" is read as: every bucket merged and
  then every active item drawn once; the re-measurement is one group of G rollouts per
  item by the current policy (the paper does not give N for it), kept in the scheduler,
  not in the pool's probe stats. A round that would leave fewer than K items is skipped.

What is not covered: rollouts, the reference-model reset and sparse KL (the trainer's job;
:meth:`AdaCuRLScheduler.observe` returns the merge events that call for the reset), and
the difficulty estimation rollouts themselves (the caller measures correct counts).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

__all__ = [
    "COARSE_ATTEMPTS",
    "AdaCuRLConfig",
    "AdaCuRLScheduler",
    "CapabilityScore",
    "MergeEvent",
    "bucket_upper_bounds",
    "capability_update",
    "coarse_bin",
    "coarse_bins",
    "coarse_correct",
    "coarse_select",
    "filter_fine",
    "fine_difficulty",
    "make_buckets",
    "sample_by_ratio",
    "sort_easy_to_hard",
]

ItemId = Hashable  # teachloop.curriculum.items.item_id gives str; ids must be mutually comparable
COARSE_ATTEMPTS = 5
_EPS = 1e-12  # float slack for cs >= k/K


@dataclass
class AdaCuRLConfig:
    """AdaCuRL knobs (arXiv 2511.09478); defaults follow METHODS.md §3."""

    num_buckets: int = field(default=3, metadata={
        "help": "K: equal consecutive difficulty buckets (paper: 3 text, 4 multimodal)"})
    gamma: float = field(default=0.5, metadata={
        "help": "γ: smallest step size in cs <- cs + (r̄ - 0.5) * max(1 - cs, γ)"})
    window: int = field(default=512, metadata={
        "help": "M: cs is updated once each time the buffer of newest-bucket accuracy "
                "rewards holds M of them (r̄ = their mean), then the buffer is emptied "
                "(paper: 512; a short CPU run may lower it)"})
    cs_floor: float | None = field(default=0.0, metadata={
        "help": "lower clamp on cs (teachloop); null = the paper's unclamped update"})
    format_steps: int = field(default=64, metadata={
        "help": "T_f: the format reward is used for steps < T_f (0-based), then only accuracy"})
    coarse_ratios: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.5], metadata={
        "help": "sampling ratios of coarse bins G1={0,1}, G2={2,3}, G3={4,5} correct of 5"})
    fine_low: float = field(default=0.05, metadata={
        "help": "drop items with fine difficulty below this (too easy)"})
    fine_high: float = field(default=0.95, metadata={
        "help": "drop items with fine difficulty above this (too hard)"})
    re_drop_below: float = field(default=0.2, metadata={
        "help": "Re-AdaCuRL: drop items whose re-estimated difficulty is below this"})
    re_passes: int = field(default=0, metadata={
        "help": "Re-AdaCuRL rounds: after every bucket is merged and one pass over the active "
                "set, re-measure the active items with the current policy, drop difficulty < "
                "re_drop_below, re-bucket, reset cs; 0 = never"})
    coarse_size: int = field(default=0, metadata={
        "help": "coarse stage: keep this many items, drawn from the coarse bins G1/G2/G3 (correct "
                "of 5 probe attempts) at coarse_ratios, before fine bucketing; 0 = keep every "
                "measured item"})

    def __post_init__(self) -> None:
        if self.num_buckets < 1:
            raise ValueError(f"adacurl.num_buckets must be >= 1, got {self.num_buckets}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"adacurl.gamma must lie in (0, 1], got {self.gamma}")
        if self.window < 1:
            raise ValueError(f"adacurl.window must be >= 1, got {self.window}")
        if self.cs_floor is not None and self.cs_floor > 0.0:
            raise ValueError(f"adacurl.cs_floor ({self.cs_floor}) must be <= 0 since cs starts "
                             "at 0; set 0 (default) or null for the paper's unclamped update")
        if self.format_steps < 0:
            raise ValueError(f"adacurl.format_steps must be >= 0, got {self.format_steps}; "
                             "set 0 to never use the format reward")
        r = self.coarse_ratios
        if len(r) != 3 or any(x < 0 for x in r) or not math.isclose(sum(r), 1.0, abs_tol=1e-9):
            raise ValueError(f"adacurl.coarse_ratios must be 3 non-negative numbers summing to "
                             f"1 (G1, G2, G3), got {r}; e.g. [0.2, 0.3, 0.5]")
        if not 0.0 <= self.fine_low < self.fine_high <= 1.0:
            raise ValueError(f"need 0 <= adacurl.fine_low < adacurl.fine_high <= 1, got "
                             f"{self.fine_low}, {self.fine_high}")
        if self.re_passes < 0 or self.coarse_size < 0:
            raise ValueError(f"adacurl.re_passes ({self.re_passes}) and adacurl.coarse_size "
                             f"({self.coarse_size}) must be >= 0; 0 turns them off")
        if not 0.0 <= self.re_drop_below < self.fine_high:
            raise ValueError(f"adacurl.re_drop_below ({self.re_drop_below}) must lie in "
                             f"[0, fine_high={self.fine_high}), else Re-AdaCuRL drops every "
                             "item; lower re_drop_below")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- coarse difficulty ---------------------------------------------------------------

def coarse_bin(correct: int) -> int:
    """0-based coarse bin of ``correct`` successes out of 5 (AdaCuRL, arXiv 2511.09478).

    0 = G1 = {0, 1} (hardest), 1 = G2 = {2, 3}, 2 = G3 = {4, 5} (easiest).
    """
    if isinstance(correct, bool) or not isinstance(correct, int):
        raise TypeError(f"correct must be an int count, got {correct!r}")
    if not 0 <= correct <= COARSE_ATTEMPTS:
        raise ValueError(f"correct must lie in [0, {COARSE_ATTEMPTS}], got {correct}")
    return correct // 2 if correct < 4 else 2


def coarse_bins(correct_counts: Mapping[ItemId, int]) -> list[list[ItemId]]:
    """Group ids by :func:`coarse_bin`; each bin keeps the input order."""
    bins: list[list[ItemId]] = [[], [], []]
    for item_id, c in correct_counts.items():
        bins[coarse_bin(c)].append(item_id)
    return bins


def coarse_correct(successes: float, attempts: int) -> int:
    """Correct count out of 5 for :func:`coarse_bin`: exact with 5 attempts, else the pass
    rate scaled to 5 and rounded half up (teachloop: the probe may use M ≠ 5 attempts)."""
    if attempts < 1 or not 0 <= successes <= attempts:
        raise ValueError(f"need attempts >= 1 and 0 <= successes <= attempts, got "
                         f"{successes}/{attempts}")
    if attempts == COARSE_ATTEMPTS:
        return int(round(successes))
    return min(COARSE_ATTEMPTS, int(math.floor(COARSE_ATTEMPTS * successes / attempts + 0.5)))


def coarse_select(correct_counts: Mapping[ItemId, int], n: int, rng: random.Random,
                  ratios: Sequence[float] = (0.2, 0.3, 0.5)) -> list[ItemId]:
    """AdaCuRL's coarse stage: bin by correct-of-5 (:func:`coarse_bins`) and draw ``n`` ids
    at ``ratios`` (:func:`sample_by_ratio`); bins are taken in sorted id order, so the draw
    depends only on the counts and ``rng``."""
    bins = [sorted(b) for b in coarse_bins(correct_counts)]
    return sample_by_ratio(bins, n, rng, ratios)


def _quotas(n: int, ratios: Sequence[float], caps: Sequence[int]) -> list[int]:
    """Largest-remainder split of ``n`` by ``ratios``, capped; shortfalls flow to open bins."""
    take = [0] * len(ratios)
    left = n
    while left > 0:
        open_ = [b for b, r in enumerate(ratios) if r > 0 and take[b] < caps[b]]
        if not open_:
            break
        w = sum(Fraction(ratios[b]) for b in open_)
        exact = {b: left * Fraction(ratios[b]) / w for b in open_}
        base = {b: math.floor(exact[b]) for b in open_}
        rest = left - sum(base.values())
        for b in sorted(open_, key=lambda b: (-(exact[b] - base[b]), b))[:rest]:
            base[b] += 1
        for b in open_:
            add = min(base[b], caps[b] - take[b])
            take[b] += add
            left -= add
    return take


def sample_by_ratio(
    items_by_bin: Sequence[Sequence[ItemId]],
    n: int,
    rng: random.Random,
    ratios: Sequence[float] = (0.2, 0.3, 0.5),
) -> list[ItemId]:
    """Draw ``n`` distinct ids across bins at ``ratios`` (AdaCuRL coarse sampling).

    Bin quotas are ``n·ρ_b`` rounded by largest remainder (ties to the lower bin). A bin
    with fewer items than its quota gives all it has and the shortfall goes to the other
    bins with a positive ratio, in proportion; bins with ratio 0 are never drawn from.
    Returns fewer than ``n`` ids only when those bins run out. Ids come bin by bin, each
    bin's draw in ``rng.sample`` order; the same ``rng`` state gives the same draw.
    """
    if len(items_by_bin) != len(ratios):
        raise ValueError(f"{len(items_by_bin)} bins but {len(ratios)} ratios")
    if n < 0 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError("need n >= 0 and non-negative ratios with a positive sum")
    take = _quotas(n, ratios, [len(b) for b in items_by_bin])
    out: list[ItemId] = []
    for items, k in zip(items_by_bin, take):
        out.extend(rng.sample(list(items), k))
    return out


# --- fine difficulty and buckets -----------------------------------------------------

def fine_difficulty(correct: float, attempts: int) -> float:
    """Difficulty(q) = 1 − c(q)/N (AdaCuRL, arXiv 2511.09478); the paper uses N = 100."""
    if attempts < 1 or not 0 <= correct <= attempts:
        raise ValueError(f"need attempts >= 1 and 0 <= correct <= attempts, got "
                         f"{correct}/{attempts}")
    return 1.0 - correct / attempts


def _check_difficulty(item_id: ItemId, d: float) -> float:
    d = float(d)
    if not 0.0 <= d <= 1.0:
        raise ValueError(f"difficulty of {item_id!r} must lie in [0, 1], got {d}")
    return d


def sort_easy_to_hard(difficulties: Mapping[ItemId, float]) -> list[ItemId]:
    """Ids by difficulty ascending, equal difficulties by id."""
    return sorted(difficulties, key=lambda i: (_check_difficulty(i, difficulties[i]), i))


def filter_fine(
    difficulties: Mapping[ItemId, float], low: float = 0.05, high: float = 0.95
) -> dict[ItemId, float]:
    """Keep ``low <= d <= high`` (AdaCuRL drops > 0.95 and < 0.05), ordered easy → hard."""
    return {i: float(difficulties[i]) for i in sort_easy_to_hard(difficulties)
            if low <= difficulties[i] <= high}


def make_buckets(item_difficulties: Mapping[ItemId, float], k: int) -> list[list[ItemId]]:
    """Split the easy → hard order into ``k`` equal consecutive buckets B_0 .. B_{k−1}.

    AdaCuRL (arXiv 2511.09478). Sizes differ by at most one: with ``q, r = divmod(n, k)``
    the first (easiest) ``r`` buckets hold ``q + 1`` items, the rest ``q``. Equal
    difficulties are ordered by id. Needs at least ``k`` items (no empty bucket: an empty
    newest bucket would never yield the rewards that move cs).
    """
    if k < 1:
        raise ValueError(f"need k >= 1 buckets, got {k}")
    order = sort_easy_to_hard(item_difficulties)
    if len(order) < k:
        raise ValueError(f"{len(order)} items cannot fill {k} buckets; lower num_buckets "
                         "or add items")
    q, r = divmod(len(order), k)
    out, start = [], 0
    for b in range(k):
        size = q + 1 if b < r else q
        out.append(order[start:start + size])
        start += size
    return out


def bucket_upper_bounds(
    buckets: Sequence[Sequence[ItemId]], difficulties: Mapping[ItemId, float]
) -> list[float]:
    """The hardest difficulty in each bucket: bucket b covers (bound[b−1], bound[b]]."""
    return [max(float(difficulties[i]) for i in b) for b in buckets]


# --- capability score ----------------------------------------------------------------

def capability_update(cs: float, r_bar: float, gamma: float = 0.5,
                      floor: float | None = None) -> float:
    """``cs + (r̄ − 0.5)·max(1 − cs, γ)`` (AdaCuRL, arXiv 2511.09478), then ``max(floor, ·)``."""
    new = cs + (r_bar - 0.5) * max(1.0 - cs, gamma)
    return new if floor is None else max(floor, new)


def _check_reward(r: float) -> float:
    x = float(r)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"accuracy rewards must lie in [0, 1], got {r!r}")
    return x


class CapabilityScore:
    """cs and its reward buffer R_b (AdaCuRL, arXiv 2511.09478, METHODS.md §3).

    ``window`` is the buffer size M: rewards are added in order, and each time the buffer
    holds M of them cs is updated once with r̄ = their mean and the buffer is emptied.
    """

    def __init__(self, gamma: float = 0.5, window: int = 512, floor: float | None = 0.0):
        if window < 1:
            raise ValueError(f"the reward buffer size M must be >= 1, got {window}")
        self.gamma = gamma
        self.size = window
        self.floor = floor
        self.value = 0.0
        self.buffer: list[float] = []

    @property
    def room(self) -> int:
        """Rewards still needed before the next update."""
        return self.size - len(self.buffer)

    def mean(self) -> float | None:
        """Mean of the rewards buffered so far (``math.fsum``: exact), None if empty."""
        return math.fsum(self.buffer) / len(self.buffer) if self.buffer else None

    def observe(self, rewards: Iterable[float]) -> list[float]:
        """Add rewards in order; one update each time the buffer fills. Returns the r̄ used
        by each update made (empty when cs did not move)."""
        new = [_check_reward(r) for r in rewards]
        used: list[float] = []
        for x in new:
            self.buffer.append(x)
            if len(self.buffer) == self.size:
                r_bar = math.fsum(self.buffer) / self.size
                self.value = capability_update(self.value, r_bar, self.gamma, self.floor)
                self.buffer.clear()
                used.append(r_bar)
        return used

    def reset(self, value: float) -> None:
        self.value = value
        self.buffer.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "buffer": list(self.buffer)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "buffer" not in state:
            raise ValueError("this AdaCuRL state was written by an older teachloop (a sliding "
                             "cs window); it cannot be resumed exactly, start the run afresh")
        self.value = float(state["value"])
        self.buffer = [float(x) for x in state["buffer"]]


# --- the scheduler -------------------------------------------------------------------

@dataclass(frozen=True)
class MergeEvent:
    """Bucket ``bucket`` was merged at ``step``: the trainer sets π_ref ← π_θ."""

    step: int
    bucket: int
    cs: float  # the cs that crossed the threshold
    reset_to: float  # cs after the merge (= bucket / K)


class AdaCuRLScheduler:
    """Buckets, the active set and the capability score (AdaCuRL, arXiv 2511.09478).

    Build from fine difficulties already filtered (:func:`filter_fine`). Each step the
    trainer samples from :meth:`active_items`, then calls :meth:`observe` with the step's
    accuracy rewards grouped by bucket; a returned :class:`MergeEvent` means "reset the
    reference model". See the module docstring for the index convention.
    """

    def __init__(self, item_difficulties: Mapping[ItemId, float] | None = None,
                 config: AdaCuRLConfig | None = None):
        self.config = config or AdaCuRLConfig()
        self.buckets: list[list[ItemId]] = []
        self.bounds: list[float] = []
        self.difficulty: dict[ItemId, float] = {}
        self._bucket_of: dict[ItemId, int] = {}
        self.n_active = 0
        self.capability = self._new_capability()
        self.last_step: int | None = None
        self.merges: list[MergeEvent] = []
        self.round = 0  # Re-AdaCuRL passes done
        if item_difficulties is not None:
            self._set_items(item_difficulties, self.config.num_buckets)

    def _new_capability(self) -> CapabilityScore:
        c = self.config
        return CapabilityScore(c.gamma, c.window, c.cs_floor)

    def _set_items(self, difficulties: Mapping[ItemId, float], k: int) -> None:
        self.difficulty = {i: _check_difficulty(i, d) for i, d in difficulties.items()}
        self.buckets = make_buckets(self.difficulty, k)
        self.bounds = bucket_upper_bounds(self.buckets, self.difficulty)
        self._bucket_of = {i: b for b, items in enumerate(self.buckets) for i in items}
        self.n_active = 1
        self.capability = self._new_capability()

    # --- reading -----------------------------------------------------------------
    @property
    def num_buckets(self) -> int:
        return len(self.buckets)

    @property
    def cs(self) -> float:
        return self.capability.value

    @property
    def newest(self) -> int:
        """Index of the newest merged bucket, the only one whose rewards move cs."""
        return self.n_active - 1

    @property
    def all_merged(self) -> bool:
        return bool(self.buckets) and self.n_active == len(self.buckets)

    def next_threshold(self) -> float | None:
        """cs needed to merge the next bucket ``k = n_active``: ``k/K``; None when none is left."""
        return None if self.all_merged else self.n_active / len(self.buckets)

    def active_items(self) -> list[ItemId]:
        """Union of the merged buckets B_0 .. B_{n_active−1}, easiest bucket first."""
        return [i for b in self.buckets[:self.n_active] for i in b]

    def bucket_of(self, item_id: ItemId) -> int | None:
        return self._bucket_of.get(item_id)

    def is_active(self, item_id: ItemId) -> bool:
        b = self._bucket_of.get(item_id)
        return b is not None and b < self.n_active

    def format_reward_active(self, step: int) -> bool:
        """Format reward on for 0-based steps ``< T_f``; afterwards only accuracy counts."""
        return step < self.config.format_steps

    def log_dict(self) -> dict[str, float]:
        """What to log (STYLE.md §12): cs, merged buckets, buffer fill and mean."""
        r_bar = self.capability.mean()
        return {"adacurl/cs": self.cs, "adacurl/n_active": float(self.n_active),
                "adacurl/buffer": float(len(self.capability.buffer)),
                "adacurl/r_bar": r_bar if r_bar is not None else float("nan"),
                "adacurl/round": float(self.round)}

    # --- the step ----------------------------------------------------------------
    def observe(self, step: int, rewards_by_bucket: Mapping[int, Sequence[float]]
                ) -> list[MergeEvent]:
        """One optimisation step's accuracy rewards, keyed by 0-based bucket index.

        Only ``rewards_by_bucket[newest]`` enters the reward buffer R_b. Each time R_b holds
        M rewards cs is updated once and R_b emptied; if then ``cs ≥ k/K`` for
        ``k = n_active``, B_k is merged, ``cs ← k/K``, and the rest of this call's rewards
        (from the old newest bucket) are discarded. Returns the merges (at most one per
        call); call once per step.
        """
        if not self.buckets:
            raise ValueError("no buckets yet: build the scheduler from item difficulties")
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(f"observe() got step {step} after step {self.last_step}; call it "
                             "once per optimisation step with the step's rewards together")
        self.last_step = step
        rewards = [_check_reward(r) for r in rewards_by_bucket.get(self.newest, ())]
        events: list[MergeEvent] = []
        pos = 0
        while pos < len(rewards):
            chunk = rewards[pos:pos + self.capability.room]
            pos += len(chunk)
            if not self.capability.observe(chunk):
                continue
            k = self.n_active
            if k < len(self.buckets) and self.cs >= k / len(self.buckets) - _EPS:
                event = MergeEvent(step=step, bucket=k, cs=self.cs, reset_to=k / len(self.buckets))
                self.n_active += 1
                self.capability.reset(event.reset_to)
                self.merges.append(event)
                events.append(event)
                break
        return events

    # --- new items and Re-AdaCuRL ------------------------------------------------
    def assign_bucket(self, difficulty: float) -> int:
        """The bucket whose recorded range holds ``difficulty``.

        Bucket b covers ``(bound[b−1], bound[b]]`` with ``bound`` the hardest difficulty of
        each bucket at bucketing time; below B_0 goes to B_0, above B_{K−2}'s bound to
        B_{K−1}. A difficulty on a boundary goes to the easier bucket.
        """
        if not self.buckets:
            raise ValueError("no buckets yet: build the scheduler from item difficulties")
        d = _check_difficulty("new item", difficulty)
        return bisect.bisect_left(self.bounds[:-1], d)

    def add_items(self, item_difficulties: Mapping[ItemId, float]) -> dict[ItemId, int]:
        """Put new items into the bucket their difficulty belongs to; returns id → bucket.

        An item in an already merged bucket is trainable at once. An id already bucketed
        keeps its bucket (inserts are idempotent, like the pool's). Filter first with
        :func:`filter_fine` if the items may be too easy or too hard.
        """
        out: dict[ItemId, int] = {}
        for i, d in item_difficulties.items():
            if i in self._bucket_of:
                out[i] = self._bucket_of[i]
                continue
            b = self.assign_bucket(d)
            self.buckets[b].append(i)
            self.difficulty[i] = float(d)
            self._bucket_of[i] = b
            out[i] = b
        return out

    def re_bucket(self, new_difficulties: Mapping[ItemId, float], k: int | None = None,
                  drop_below: float | None = None) -> list[ItemId]:
        """Re-AdaCuRL: re-estimated difficulties, drop ``< drop_below``, re-bucket, restart.

        The active set goes back to {B_0}, cs to 0 and the reward buffer is emptied; the step
        counter and the merge history are kept. Returns the dropped ids.
        """
        k = self.config.num_buckets if k is None else k
        drop_below = self.config.re_drop_below if drop_below is None else drop_below
        keep = {i: d for i, d in new_difficulties.items()
                if _check_difficulty(i, d) >= drop_below}
        dropped = [i for i in new_difficulties if i not in keep]
        self._set_items(keep, k)
        self.round += 1
        return dropped

    # --- checkpointing -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable; :meth:`load_state_dict` restores it exactly."""
        return {
            "config": self.config.to_dict(),
            "buckets": [list(b) for b in self.buckets],
            "bounds": list(self.bounds),
            "difficulty": [[i, d] for i, d in self.difficulty.items()],
            "n_active": self.n_active,
            "capability": self.capability.state_dict(),
            "last_step": self.last_step,
            "merges": [[e.step, e.bucket, e.cs, e.reset_to] for e in self.merges],
            "round": self.round,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpoint; refuses one written with a different config."""
        saved = AdaCuRLConfig(**state["config"])
        if saved != self.config:
            diff = {k: (v, getattr(self.config, k)) for k, v in saved.to_dict().items()
                    if getattr(self.config, k) != v}
            raise ValueError(f"AdaCuRL checkpoint has a different config (saved, current): "
                             f"{diff}; resume with the config the run was started with")
        self.buckets = [list(b) for b in state["buckets"]]
        self.bounds = [float(x) for x in state["bounds"]]
        self.difficulty = {i: float(d) for i, d in state["difficulty"]}
        self._bucket_of = {i: b for b, items in enumerate(self.buckets) for i in items}
        self.n_active = int(state["n_active"])
        self.capability = self._new_capability()
        self.capability.load_state_dict(state["capability"])
        self.last_step = state["last_step"]
        self.merges = [MergeEvent(int(s), int(b), float(c), float(r))
                       for s, b, c, r in state["merges"]]
        self.round = int(state["round"])

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> AdaCuRLScheduler:
        sched = cls(config=AdaCuRLConfig(**state["config"]))
        sched.load_state_dict(state)
        return sched
