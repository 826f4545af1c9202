"""The pool as training data: TRL rows, a draw over the active buckets, stats write-back.

What is covered:

- :class:`PoolData` — the pool's items as TRL rows ``{"prompt": [chat], "item_id": id}``
  (the reward functions look the item up by ``item_id``); a ``datasets.Dataset`` of every
  item for the plain ``grpo`` baseline; per-item training stats written back with
  ``PoolStore.record_many(kind="train")``, apart from the probe stats that difficulty is
  read from; items the teacher
  added during training picked up by :meth:`PoolData.refresh`.
- :class:`DatasetData` — a plain ``datasets.Dataset`` in the same role (the TRL drop-in):
  one row per item, difficulty from an optional ``difficulty`` column or measured by the
  trainer before training, training stats kept in memory (no pool, no refresh).
- :class:`ItemSampler` — which items the next generation batch trains on, drawn from the
  *current* active set (AdaCuRL's merged buckets, or every item): passes without
  replacement over the set, reshuffled whenever the set changes; seeded, checkpointable.

Read-ahead, and why curriculum modes bind items at generation time. DESIGN.md measured that
an ``IterableDataset`` train set saw an active-set change 2–3 steps late (shuffle buffer and
dataloader read-ahead). A lazy ``torch`` sampler does not fix it: accelerate's
``DataLoaderShard.__iter__`` always fetches one batch ahead ("We iterate one batch ahead to
check when we are at the end"), so a merge decided while scoring step t could reach batch
t+2 at the earliest. The curriculum trainer therefore gives TRL's dataloader placeholder
rows (:meth:`PoolData.slots`, as TRL itself does when an environment owns the data) and
binds real items to them inside ``_generate_and_score_completions``, right before
generation, with :class:`ItemSampler`: after a merge decided at step t, the draw of step
t+1 is made over the merged set, whatever the read-ahead, process count or resume
skipping. ``tests/test_trainer.py`` checks both the read-ahead and the merge on real runs.

Not covered: items are loaded once (plus :meth:`PoolData.refresh`), so edits to an item's
text during training are not seen; unmeasured items have no difficulty and are left out of
AdaCuRL's buckets (they still train in ``grpo`` and ``vcrl`` modes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from teachloop.curriculum.items import Item
from teachloop.curriculum.pool import PoolStore

__all__ = ["DatasetData", "ItemSampler", "PoolData"]

_SLOT_ID = ""  # the item_id of a placeholder row; no item has an empty id


class PoolData:
    """A pool's items as TRL rows, and the way back for per-item stats."""

    def __init__(self, store: PoolStore, items: Mapping[str, Item], *,
                 family: str | None = None, system_prompt: str | None = None,
                 fewshot: int = 0) -> None:
        self.store = store
        self.fewshot = fewshot
        self.items: dict[str, Item] = dict(items)  # live: reward functions hold this dict
        self.family = family
        self.system_prompt = system_prompt

    @classmethod
    def from_pool(cls, store: PoolStore, *, family: str | None = None,
                  system_prompt: str | None = None, fewshot: int = 0,
                  ids: Iterable[str] | None = None) -> PoolData:
        """Every item of ``store`` (``family`` may be a ``"math.*"`` prefix; ``ids``: only
        these items, e.g. the difficulty filter's)."""
        items = {it.id: it for it in store.query(family=family)}
        if ids is not None:
            keep = set(ids)
            items = {i: it for i, it in items.items() if i in keep}
        if not items:
            where = f" of family {family!r}" if family else ""
            raise ValueError(f"the pool {store.path} holds no items{where}; run "
                             "`teachloop run` first to seed and probe it")
        return cls(store, items, family=family, system_prompt=system_prompt, fewshot=fewshot)

    def __len__(self) -> int:
        return len(self.items)

    # --- rows ----------------------------------------------------------------------
    def prompt(self, item_id: str) -> list[dict[str, str]]:
        """The conversation the student sees (TRL applies the chat template); with
        ``fewshot`` solved examples first (``evals/fewshot.py``)."""
        from teachloop.evals.fewshot import student_messages

        return student_messages(self.items[item_id], fewshot=self.fewshot,
                                system_prompt=self.system_prompt)

    def row(self, item_id: str) -> dict[str, Any]:
        return {"prompt": self.prompt(item_id), "item_id": item_id}

    def rows(self, item_ids: Iterable[str], repeat: int = 1) -> list[dict[str, Any]]:
        """One row per id, each repeated ``repeat`` times in a row (a GRPO group)."""
        return [self.row(i) for i in item_ids for _ in range(repeat)]

    def dataset(self):
        """A ``datasets.Dataset`` of every item (the ``grpo`` baseline's train set)."""
        from datasets import Dataset

        ids = sorted(self.items)
        return Dataset.from_dict({"prompt": [self.prompt(i) for i in ids], "item_id": ids})

    @staticmethod
    def slots(n: int):
        """``n`` placeholder rows for TRL's dataloader; the trainer binds items to them."""
        from datasets import Dataset

        if n < 1:
            raise ValueError(f"need at least one slot, got {n}")
        return Dataset.from_dict({"prompt": [[{"role": "user", "content": ""}]] * n,
                                  "item_id": [_SLOT_ID] * n})

    @staticmethod
    def is_slot(row: Mapping[str, Any]) -> bool:
        return row.get("item_id") == _SLOT_ID

    # --- difficulties and the pool -------------------------------------------------
    def difficulties(self, item_ids: Iterable[str] | None = None) -> dict[str, float]:
        """Measured difficulty (1 − p, from the pool) of the given (default: all) items."""
        ids = self.items if item_ids is None else item_ids
        return {i: float(self.items[i].difficulty) for i in ids
                if self.items[i].difficulty is not None}

    def record(self, updates: Sequence[tuple[str, int, float]], once_key: str | None = None) -> int:
        """Add training rollouts ``(id, attempts, successes)`` to the pool's *training* stats
        in one transaction (at most once per ``once_key``, see ``PoolStore.record_many``);
        the probe stats that difficulty is read from are left alone."""
        return self.store.record_many([u for u in updates if u[0] != _SLOT_ID],
                                      once_key=once_key, kind="train")

    def ensure(self, item_ids: Iterable[str]) -> None:
        """Load items by id that are not held yet (a resumed run's buckets may name items
        that :meth:`refresh` added); an id missing from the pool is an error."""
        for i in item_ids:
            if i not in self.items:
                it = self.store.get(i)
                if it is None:
                    raise ValueError(f"item {i} is in the curriculum state but not in the pool "
                                     f"{self.store.path}")
                self.items[i] = it

    def add(self, items: Iterable[Item]) -> None:
        """Hold these items too (other ranks receive what rank 0's :meth:`refresh` found)."""
        for it in items:
            self.items[it.id] = it

    def set_buckets(self, pairs: Sequence[tuple[str, int | None]]) -> None:
        """Each item's AdaCuRL bucket in the pool, for the teacher (rank 0 only)."""
        self.store.set_bucket(list(pairs))

    def refresh(self) -> list[Item]:
        """Items the pool gained since they were loaded (measured ones only: a new item
        needs a difficulty before AdaCuRL can bucket it). Adds them and returns them."""
        new = [it for it in self.store.query(family=self.family, measured=True)
               if it.id not in self.items]
        for it in new:
            self.items[it.id] = it
        return new


@dataclass
class RowStats:
    """What :class:`DatasetData` knows of one row: its difficulty and the attempts behind it."""

    difficulty: float | None = None
    attempts: int = 0
    successes: float = 0.0
    train_attempts: int = 0
    train_successes: float = 0.0


class DatasetData:
    """A plain ``datasets.Dataset`` as the curriculum's items (the TRL drop-in).

    As for TRL's ``GRPOTrainer``: a ``prompt`` column (text or a conversation) and the
    columns the reward functions read, passed to them as keyword arguments. Each row is one
    item; its id is the ``item_id`` column when there is one (ids must be unique), else the
    row index. Difficulty is the optional ``difficulty`` column (in [0, 1], 1 = never
    solved); without it, the trainer measures it before training when AdaCuRL needs it
    (:meth:`measured`). Training stats are kept in memory (there is no pool); items never
    change during training.
    """

    store = None  # no pool behind it

    def __init__(self, dataset: Any) -> None:
        cols = list(getattr(dataset, "column_names", None) or [])
        if "prompt" not in cols:
            raise ValueError(f"train_dataset needs a 'prompt' column, as TRL's GRPOTrainer does; "
                             f"it has {cols}")
        if len(dataset) == 0:
            raise ValueError("train_dataset is empty")
        ids = ([str(x) for x in dataset["item_id"]] if "item_id" in cols
               else [str(k) for k in range(len(dataset))])
        if len(set(ids)) != len(ids) or _SLOT_ID in ids:
            raise ValueError("train_dataset's item_id column must hold unique, non-empty ids")
        self.source = dataset
        self._rows = {i: dict(row) for i, row in zip(ids, dataset)}
        self.items: dict[str, RowStats] = {}
        has_d = "difficulty" in cols
        for i, row in self._rows.items():
            d = row.get("difficulty") if has_d else None
            if d is not None and not 0.0 <= float(d) <= 1.0:
                raise ValueError(f"train_dataset row {i}: difficulty must lie in [0, 1] "
                                 f"(1 = never solved), got {d!r}")
            self.items[i] = RowStats(difficulty=None if d is None else float(d))

    def __len__(self) -> int:
        return len(self.items)

    def prompt(self, item_id: str) -> Any:
        return self._rows[item_id]["prompt"]

    def row(self, item_id: str) -> dict[str, Any]:
        return {**self._rows[item_id], "item_id": item_id}

    def rows(self, item_ids: Iterable[str], repeat: int = 1) -> list[dict[str, Any]]:
        return [self.row(i) for i in item_ids for _ in range(repeat)]

    def dataset(self):
        """The user's dataset with the ``item_id`` column the trainer reads."""
        if "item_id" in self.source.column_names:
            return self.source
        return self.source.add_column("item_id", list(self.items))

    slots = staticmethod(PoolData.slots)
    is_slot = staticmethod(PoolData.is_slot)

    @property
    def unmeasured(self) -> list[str]:
        return [i for i, s in self.items.items() if s.difficulty is None]

    def measured(self, results: Mapping[str, Sequence[float]]) -> None:
        """Set each row's difficulty ``1 − mean accuracy`` from the given attempts."""
        for i, acc in results.items():
            s = self.items[i]
            s.attempts, s.successes = len(acc), float(sum(acc))
            s.difficulty = 1.0 - s.successes / s.attempts

    def difficulties(self, item_ids: Iterable[str] | None = None) -> dict[str, float]:
        ids = self.items if item_ids is None else item_ids
        return {i: self.items[i].difficulty for i in ids if self.items[i].difficulty is not None}

    def record(self, updates: Sequence[tuple[str, int, float]], once_key: str | None = None) -> int:
        for i, n, k in updates:
            if i != _SLOT_ID:
                self.items[i].train_attempts += n
                self.items[i].train_successes += k
        return len(updates)

    def ensure(self, item_ids: Iterable[str]) -> None:
        missing = [i for i in item_ids if i not in self.items]
        if missing:
            raise ValueError(f"items {missing[:3]} are in the curriculum state but not in "
                             "train_dataset; resume with the dataset the run started with")

    def add(self, items: Iterable[Any]) -> None:
        pass

    def set_buckets(self, pairs: Sequence[tuple[str, int | None]]) -> None:
        pass

    def refresh(self) -> list[Any]:
        return []


class ItemSampler:
    """Draws the item ids of one generation batch from the current active set.

    Passes over the active set without replacement, in an order shuffled by a seeded
    ``random.Random``; a new pass starts when the current one is used up, and a fresh one
    whenever the active set changes (a bucket merge, new items), so the change reaches the
    very next draw. Within one draw an id repeats only when the active set is smaller than
    the draw. ``state_dict()`` is JSON-serialisable and restores the sequence exactly.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        self._active: list[str] = []
        self._queue: list[str] = []  # the rest of the current pass, next first
        self.draws = 0

    def draw(self, n: int, active: Sequence[str]) -> list[str]:
        if n < 1:
            raise ValueError(f"need n >= 1, got {n}")
        active = list(active)
        if not active:
            raise ValueError("the active set is empty: nothing to train on")
        if active != self._active:
            self._active = active
            self._queue = self._shuffled(active)
        out: list[str] = []
        while len(out) < n:
            if not self._queue:
                fresh = self._shuffled(self._active)
                # a new pass mid-draw: ids already drawn now go last, to avoid repeats
                taken = set(out)
                self._queue = [i for i in fresh if i not in taken] + [i for i in fresh if i in taken]
            out.append(self._queue.pop(0))
        self.draws += 1
        return out

    def _shuffled(self, ids: Sequence[str]) -> list[str]:
        out = list(ids)
        self._rng.shuffle(out)
        return out

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {"seed": self.seed, "rng": [version, list(internal), gauss],
                "active": list(self._active), "queue": list(self._queue), "draws": self.draws}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.seed = state["seed"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._active = list(state["active"])
        self._queue = list(state["queue"])
        self.draws = int(state["draws"])
