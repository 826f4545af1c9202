"""The curriculum's decisions, made on rank 0, for :class:`~teachloop.training.trainer.CurriculumGRPOTrainer`.

A mixin of the trainer: everything here reads and updates the curriculum's own state (the
item sampler, VCRL's memory bank, AdaCuRL's scheduler, Re-AdaCuRL's pass, the pool's
training stats) and touches neither tensors nor TRL. With several processes the trainer
calls the decision methods through :func:`teachloop.training.dist.decide`: they run on rank
0 only, and what they return (plain ids, numbers and ``MergeEvent`` objects) is broadcast
to the other ranks, which apply it. Their order in a generation batch (``_curriculum_batch``):

1. :meth:`_plan` - items the pool gained (every ``pool_refresh_steps`` batches) and whether a
   Re-AdaCuRL round is due (:meth:`_re_due`; the trainer rolls out, then :meth:`_re_apply`);
2. :meth:`_draw` - the batch's item ids from the current active set;
3. :meth:`_select` - pool stats of the batch and VCRL's dropped groups and refill ids;
   :meth:`_refilled` - pool stats and bank priorities of the re-rolled groups;
4. :meth:`_observe_buckets` - AdaCuRL's capability score and merges.

The state is checkpointed from rank 0 (:meth:`curriculum_state_dict`) and loaded on every
rank; the other ranks' copies are not kept in step between checkpoints (they never decide).
The trainer provides ``args``, ``state``, ``accelerator``, ``data``, ``scheduler``,
``vcrl_state``, ``item_sampler``, ``num_generations`` and the logs these methods append to.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from teachloop.curriculum.adacurl import MergeEvent, filter_fine
from teachloop.curriculum.vcrl import variance_score

__all__ = ["CurriculumDecisions"]

log = logging.getLogger("teachloop.training.trainer")


class CurriculumDecisions:
    """Rank 0's side of the curriculum trainer (see the module docstring)."""

    def _write_buckets(self) -> None:
        """Each item's bucket in the pool (None: not in AdaCuRL's buckets), for the teacher."""
        if self.scheduler is not None and self.accelerator.is_main_process:
            self.data.set_buckets([(i, self.scheduler.bucket_of(i)) for i in self.data.items])

    def active_ids(self) -> list[str]:
        """Ids the next generation batch may draw: the merged buckets, or every item."""
        if self.scheduler is not None:
            return self.scheduler.active_items()
        return sorted(self.data.items)

    def _plan(self) -> tuple[list[Any], list[str] | None]:
        """Items the pool gained (every ``pool_refresh_steps`` batches), and the ids a
        Re-AdaCuRL round re-measures now (None: no round)."""
        new: list[Any] = []
        if self.args.pool_refresh_steps and self._generations \
                and self._generations % self.args.pool_refresh_steps == 0:
            new = self._refresh()
        return new, self._re_due() if self.scheduler is not None else None

    def _draw(self, n_groups: int) -> tuple[list[str], str]:
        """The batch's item ids, and a digest of the active set they were drawn from."""
        active = self.active_ids()
        ids = self.item_sampler.draw(n_groups, active)
        if self.scheduler is not None and self.scheduler.all_merged:
            self._pass_seen.update(ids)
        digest = hashlib.sha1("\n".join(sorted(map(str, active))).encode()).hexdigest()[:16]
        return ids, f"{len(active)}:{digest}"

    def _select(self, step: int, ids: list[str], acc: list[list[float]]) -> dict[str, Any]:
        """Pool stats of the batch; VCRL: the dropped groups and the bank's refill ids."""
        self._record(ids, acc)
        if self.vcrl_state is None:
            return {}
        by_id: dict[str, list[float]] = {}
        for i, a in zip(ids, acc):
            by_id.setdefault(i, []).extend(a)  # an id twice in a batch: one query
        self.vcrl_state.step = step
        kappa = self.vcrl_state.kappa
        sel = self.vcrl_state.select(by_id)
        dropped_ids = set(sel.dropped)
        dropped = [g for g, i in enumerate(ids) if i in dropped_ids]
        refill = list(sel.refill)[:len(dropped)]
        return {"dropped": dropped, "refill": refill,
                "extra": {"vcrl/kappa": kappa, "vcrl/bank_size": float(len(self.vcrl_state.bank)),
                          "vcrl/dropped": float(len(dropped)), "vcrl/refilled": float(len(refill))}}

    def _refilled(self, refill: list[str], acc_r: list[list[float]]) -> None:
        self._record(refill, acc_r)
        for i, a in zip(refill, acc_r):
            self.vcrl_state.bank.update(i, variance_score(a))

    def _observe_buckets(self, step: int, rolled: list[tuple[str, list[float]]]
                         ) -> tuple[list[MergeEvent], dict[str, float]]:
        by_bucket: dict[int, list[float]] = {}
        for i, a in rolled:
            b = self.scheduler.bucket_of(i)
            if b is not None:
                by_bucket.setdefault(b, []).extend(a)
        events = list(self.scheduler.observe(step, by_bucket))
        self.merge_log.extend(events)
        return events, {"adacurl/cs": self.scheduler.cs,
                        "adacurl/n_active": float(self.scheduler.n_active),
                        "adacurl/merges": float(len(self.scheduler.merges))}

    def _re_due(self) -> list[str] | None:
        """Re-AdaCuRL: the active ids to re-measure when a round is due (every bucket merged
        and every active item drawn since, fewer than ``re_passes`` rounds so far), else None."""
        s, cfg = self.scheduler, self.scheduler.config
        if not cfg.re_passes or s.round >= cfg.re_passes or not s.all_merged:
            return None
        active = s.active_items()
        return active if set(active) <= self._pass_seen else None

    def _re_apply(self, active: list[str], acc: list[list[float]]) -> dict[str, float]:
        """Re-AdaCuRL (arXiv 2511.09478) with the re-measured accuracy of ``active`` (one
        group of G rollouts each by the current policy, TRL's own generation and scoring):
        drop difficulty < ``re_drop_below``, re-bucket and restart the curriculum (cs ← 0,
        B_0 only). A round that would keep fewer than K items is skipped."""
        s, cfg = self.scheduler, self.scheduler.config
        new = {i: 1.0 - sum(a) / len(a) for i, a in zip(active, acc)}
        self._pass_seen = set()
        kept = sum(d >= cfg.re_drop_below for d in new.values())
        step = self.state.global_step
        if kept < s.num_buckets:
            s.round += 1
            event = {"step": step, "round": s.round, "skipped": True, "measured": len(new),
                     "kept": kept}
            log.warning("Re-AdaCuRL round %d at step %d skipped: %d of %d items keep difficulty "
                        ">= %g, fewer than K=%d", s.round, step, kept, len(new),
                        cfg.re_drop_below, s.num_buckets)
        else:
            dropped = s.re_bucket(new)
            self._write_buckets()
            event = {"step": step, "round": s.round, "skipped": False, "measured": len(new),
                     "kept": kept, "dropped": list(dropped),
                     "sizes": [len(b) for b in s.buckets]}
            log.warning("Re-AdaCuRL round %d at step %d: re-measured %d items with the current "
                        "policy, dropped %d (difficulty < %g), buckets %s; cs reset to 0",
                        s.round, step, len(new), len(dropped), cfg.re_drop_below, event["sizes"])
        self.re_log.append(event)
        return {"adacurl/re_round": float(s.round), "adacurl/re_kept": float(kept)}

    def _record(self, ids: Sequence[str], acc: Sequence[Sequence[float]]) -> None:
        step = self.state.global_step
        self._record_calls = self._record_calls + 1 if getattr(self, "_record_step", None) == step else 0
        self._record_step = step
        if self.accelerator.is_main_process:
            # once per (run, step, call): steps re-run after a resume are not counted twice
            key = f"train:{os.path.abspath(self.args.output_dir)}:s{step}:c{self._record_calls}"
            self.data.record([(i, len(a), float(sum(a))) for i, a in zip(ids, acc)], once_key=key)
        texts, G = self._last_completions, self.num_generations
        if texts is not None and len(texts) == len(ids) * G:  # one process: texts are all rows
            for g, (i, a) in enumerate(zip(ids, acc)):
                # stamped with the step this batch trains (global_step counts finished steps)
                self.rollouts[i] = (texts[g * G:(g + 1) * G], list(a), self.state.global_step + 1)

    def refresh_items(self) -> list[str]:
        """Load items the pool gained (e.g. from a teacher round); AdaCuRL buckets them by
        difficulty. Returns the new ids (one process; with several, the trainer refreshes
        on rank 0 every ``pool_refresh_steps`` batches and broadcasts the new items)."""
        return [it.id for it in self._refresh()]

    def _refresh(self) -> list[Any]:
        new = self.data.refresh()
        if new and self.scheduler is not None:
            cfg = self.scheduler.config
            placed = self.scheduler.add_items(
                filter_fine(self.data.difficulties(it.id for it in new), cfg.fine_low, cfg.fine_high))
            if placed and self.accelerator.is_main_process:
                self.data.set_buckets(list(placed.items()))
        return new

    def curriculum_state_dict(self) -> dict[str, Any]:
        """Everything the curriculum needs to continue exactly (JSON-serialisable)."""
        return {
            "mode": self.mode,
            "sampler": self.item_sampler.state_dict(),
            "vcrl": self.vcrl_state.state_dict() if self.vcrl_state is not None else None,
            "adacurl": self.scheduler.state_dict() if self.scheduler is not None else None,
            "generations": self._generations,
            "re_pass_seen": sorted(self._pass_seen),
            "re_log": self.re_log,
        }

    def load_curriculum_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(f"the checkpoint was written in curriculum_mode={state.get('mode')!r}, "
                             f"not {self.mode!r}; resume with the mode the run was started with")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["adacurl"])
            self.data.ensure(self.scheduler.difficulty)
        if self.vcrl_state is not None:
            self.vcrl_state.load_state_dict(state["vcrl"])
            self.data.ensure(self.vcrl_state.bank.ids())
        self.item_sampler.load_state_dict(state["sampler"])
        self._generations = int(state["generations"])
        self._pass_seen = set(state.get("re_pass_seen", []))
        self.re_log = list(state.get("re_log", []))
        self.merge_log = list(self.scheduler.merges) if self.scheduler is not None else []
        self._write_buckets()
