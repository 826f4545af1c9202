"""Exactly-once recording of proposal outcomes in the pool.

Every teacher proposal has a *slot*, ``<run_id>/<chain_id>/<turn>``, and ends in exactly one
place: an item in the pool (its ``metadata["slot"]``) or a row in the rejections table (the
``proposal`` column holds a JSON envelope with the slot). The slot travels inside the row it
describes, so "recorded" and "written" are one transaction: there is no separate ledger to
fall out of step after a kill.

Why it is needed: LangGraph re-runs a task whose pending writes were not checkpointed. If the
process dies after the pool commit and before the checkpoint, the ``record`` task runs again
with the same input; here it finds its slot already recorded and writes nothing. On start-up
the ledger is rebuilt from the pool, so a resumed run sees what the killed one wrote.

Also here: the last duplicate check under the ledger lock (two chains in the same superstep
may propose the same problem; only the first is inserted, the second becomes a "dedup"
rejection), and the pool's near-duplicate index.

The generate process is the only writer of its run's slots (one process per run directory);
the lock serialises the parallel branches inside it. Generation workers sharing one pool
(teachloop/workers.py) give each expansion its own run id (one per leased frontier item) and
add it with :meth:`Ledger.add_run`; two workers that produce the same problem at the same time
both pass the dedup check, but the pool's insert (``ON CONFLICT DO NOTHING RETURNING``) lets
only one of them in, and the other records its proposal as a ``dedup`` rejection: every
proposal is inserted once.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from teachloop.agents.dedup import NearDupIndex
from teachloop.curriculum.items import Item
from teachloop.curriculum.pool import PoolStore

MAX_RAW_CHARS = 20_000  # a rejected teacher output is stored cut to this length


@dataclass(frozen=True)
class Recorded:
    status: str  # accepted / rejected
    item_id: str = ""
    stage: str = ""
    reason: str = ""


def envelope(slot: str, *, raw: str = "", proposal: dict[str, Any] | None = None,
             item: dict[str, Any] | None = None, **extra: Any) -> str:
    """The JSON stored in a rejection's ``proposal`` column."""
    d: dict[str, Any] = {"slot": slot}
    if raw:
        d["raw"] = raw[:MAX_RAW_CHARS]
        if len(raw) > MAX_RAW_CHARS:
            d["raw_chars"] = len(raw)
    if proposal is not None:
        d["proposal"] = proposal
    if item is not None:
        d["item"] = item
    d.update(extra)
    return json.dumps(d, ensure_ascii=False, sort_keys=True, default=str)


def slot_of_rejection(row: dict[str, Any]) -> str | None:
    try:
        d = json.loads(row.get("proposal") or "")
    except (ValueError, TypeError):
        return None
    s = d.get("slot") if isinstance(d, dict) else None
    return s if isinstance(s, str) else None


def recorded_slots(store: PoolStore, run_id: str) -> dict[str, Recorded]:
    """Every slot of run ``run_id`` recorded in the pool: items (``metadata["slot"]``) and
    rejections (the slot in the proposal envelope)."""
    prefix = run_id + "/"
    out: dict[str, Recorded] = {}
    for it in store.query():
        slot = it.metadata.get("slot")
        if isinstance(slot, str) and slot.startswith(prefix):
            out[slot] = Recorded("accepted", item_id=it.id)
    for row in store.rejections():
        slot = slot_of_rejection(row)
        if slot and slot.startswith(prefix):
            out[slot] = Recorded("rejected", stage=row["stage"], reason=row["reason"])
    return out


class Ledger:
    """Slot -> recorded outcome, rebuilt from the pool; all pool writes of the loop go here."""

    def __init__(self, store: PoolStore, run_id: str, *, near_dup_threshold: float = 0.85,
                 shingle_size: int = 3) -> None:
        self.store = store
        self.run_id = run_id
        self.prefix = run_id + "/"
        self.index = NearDupIndex(threshold=near_dup_threshold, k=shingle_size)
        self._lock = threading.Lock()
        for it in store.query():
            self.index.add(it.id, it.family, it.prompt, it.answer)
        self._slots: dict[str, Recorded] = recorded_slots(store, run_id)
        self._claims: dict[str, str] = {}  # candidate id -> the slot that probes it (this process)
        self.worker = ""  # a generation worker's name, recorded with each outcome when set

    def __len__(self) -> int:
        return len(self._slots)

    def add_run(self, run_id: str) -> int:
        """Also track the slots of run ``run_id`` (a worker's next expansion, perhaps one a
        dead worker started: what it recorded is read back from the pool). Returns how many
        slots of that run were recorded already."""
        got = recorded_slots(self.store, run_id)
        with self._lock:
            self._slots.update(got)
        return len(got)

    def refresh_index(self) -> int:
        """Add the items other processes inserted since this ledger looked to the
        near-duplicate index; returns how many were new to it."""
        n = 0
        for it in self.store.query():
            if it.id not in self.index:
                with self._lock:
                    self.index.add(it.id, it.family, it.prompt, it.answer)
                n += 1
        return n

    def get(self, slot: str) -> Recorded | None:
        with self._lock:
            return self._slots.get(slot)

    def slots(self) -> dict[str, Recorded]:
        with self._lock:
            return dict(self._slots)

    def is_duplicate(self, item: Item, *, exclude: str = "") -> tuple[str, str] | None:
        """(kind, reason) when ``item`` duplicates an item in the pool, else None."""
        if item.id in self.store or item.id in self.index:
            return "exact", f"exact duplicate of item {item.id}"
        m = self.index.query(item.family, item.prompt, item.answer, exclude=exclude)
        if m is not None:
            return "near", f"near duplicate of item {m.item_id} (jaccard {m.jaccard:.2f}, same answer)"
        return None

    def claim(self, slot: str, item: Item) -> tuple[str, str] | None:
        """Dedup before probing: a duplicate of the pool, or of a candidate another slot has
        already taken to probing in this process (in flight or probed and rejected: a teacher
        that copies its example proposes the same item in many chains), else None and the
        candidate is this slot's."""
        with self._lock:
            dup = self.is_duplicate(item)
            if dup is not None:
                return dup
            owner = self._claims.setdefault(item.id, slot)
            if owner != slot:
                return "exact", f"exact duplicate of candidate {item.id} already probed ({owner})"
            return None

    def accept(self, slot: str, item: Item) -> Recorded:
        """Insert ``item`` (its metadata carries the slot) unless the slot is recorded or the
        item duplicates one inserted since the dedup node looked; then it is a rejection."""
        with self._lock:
            done = self._slots.get(slot)
            if done is not None:
                return done
            dup = self.is_duplicate(item)
            if dup is not None:
                return self._reject_locked(slot, "dedup", dup[1], item=item, raw="")
            item.metadata["slot"] = slot
            if self.worker:
                item.metadata["worker"] = self.worker
            if not self.store.insert_many([item]):  # another process inserted it just now
                self.index.add(item.id, item.family, item.prompt, item.answer)
                return self._reject_locked(slot, "dedup", f"exact duplicate of item {item.id} "
                                           "(inserted by another worker)", item=item, raw="")
            self.index.add(item.id, item.family, item.prompt, item.answer)
            rec = Recorded("accepted", item_id=item.id)
            self._slots[slot] = rec
            return rec

    def reject(self, slot: str, stage: str, reason: str, *, item: Item | None = None, raw: str = "",
               proposal: dict[str, Any] | None = None, family: str, parent_id: str | None,
               direction: str | None, turn: int | None, teacher: str, prompt_version: str,
               **extra: Any) -> Recorded:
        """Record a rejection (``extra``: more JSON fields of the envelope, e.g. the teacher's
        messages)."""
        with self._lock:
            done = self._slots.get(slot)
            if done is not None:
                return done
            return self._reject_locked(slot, stage, reason, item=item, raw=raw, proposal=proposal,
                                       family=family, parent_id=parent_id, direction=direction,
                                       turn=turn, teacher=teacher, prompt_version=prompt_version, **extra)

    def _reject_locked(self, slot: str, stage: str, reason: str, *, item: Item | None, raw: str,
                       proposal: dict[str, Any] | None = None, family: str | None = None,
                       parent_id: str | None = None, direction: str | None = None,
                       turn: int | None = None, teacher: str | None = None,
                       prompt_version: str | None = None, **extra: Any) -> Recorded:
        if item is not None:  # defaults from the candidate itself
            family = family or item.family
            parent_id = parent_id if parent_id is not None else item.parent_id
            direction = direction or item.direction
            turn = turn if turn is not None else item.turn
            teacher = teacher if teacher is not None else item.teacher
            prompt_version = prompt_version if prompt_version is not None else item.prompt_version
        if self.worker:
            extra.setdefault("worker", self.worker)
        self.store.reject(
            family=family or "?", stage=stage, reason=reason[:500],
            proposal=envelope(slot, raw=raw, proposal=proposal,
                              item=item.to_dict() if item is not None else None, **extra),
            parent_id=parent_id, direction=direction, turn=turn, teacher=teacher or "",
            prompt_version=prompt_version or "",
        )
        rec = Recorded("rejected", stage=stage, reason=reason[:500])
        self._slots[slot] = rec
        return rec
