"""``CurriculumGRPOTrainer``: TRL's ``GRPOTrainer`` with VCRL selection + replay and AdaCuRL buckets.

A thin adapter (DESIGN.md "Trainer"): the curriculum decisions live in ``curriculum/``
(``vcrl.py``, ``adacurl.py``: pure Python, tested without torch); this module only feeds
them rewards and applies their decisions to TRL's batch. TRL is pinned (``trl>=1.16,<1.17``)
and five methods are extended, each calling TRL's own, none copied:

=====================================  ==============================================================
``_calculate_rewards``                 keeps the gathered per-function rewards of the batch just scored
``_generate_and_score_completions``    binds items to the rows before generation (see
                                       ``training/data.py`` on read-ahead), then applies VCRL
                                       and AdaCuRL to the scored batch and adds the per-row
                                       sparse-KL weight ``kl_weight`` to TRL's batch dict (TRL's
                                       shuffle and split carry it with its row)
``compute_loss``                       sparse KL: for one call ``self.beta`` becomes a
                                       :class:`RowBeta`, so TRL's single product
                                       ``self.beta * per_token_kl`` reads ``beta · w[row] · KL``;
                                       the policy term, masks and normaliser are TRL's own (a
                                       count of the products catches a TRL change)
``_save_checkpoint``                   writes ``curriculum_state.json`` beside TRL's checkpoint
``_load_optimizer_and_scheduler``      reads it back on resume (TRL restores its entropy
                                       controller the same way)
=====================================  ==============================================================

The decisions made once per batch (draw, VCRL selection and bank, AdaCuRL observation,
Re-AdaCuRL, pool stats, the checkpointed state) are the mixin
:class:`~teachloop.training.decisions.CurriculumDecisions`; with several processes they run
on rank 0 and are broadcast (``training/dist.py``).

``tests/test_trainer.py`` fails loudly when the signatures of these methods, the keys of the
batch dict, or the TRL calls they rely on change.

Per generation batch (training only; evaluation is TRL's, untouched):

1. **Bind** (curriculum modes): draw ``generation_batch_size / G`` item ids from the active
   set (every item, or AdaCuRL's merged buckets) and build the rows; TRL generates and scores.
2. **Pool stats**: ``(id, G, successes)`` per rolled-out group, written to the pool's
   *training* stats in one transaction, in every mode including ``grpo``. They never move
   an item's difficulty: difficulty and buckets read the probe stats only (METHODS.md §3).
3. **VCRL** (arXiv 2509.19803): groups with variance score ``p < κ`` (on the accuracy reward)
   are dropped; the memory bank names refill items, which are **re-rolled on-policy** by a
   second call of TRL's generation + scoring and spliced into the dropped groups' rows, so
   the batch stays full. Dropped groups the bank cannot refill are removed from the loss.
4. **AdaCuRL** (arXiv 2511.09478): the accuracy rewards, grouped by bucket, go to
   ``AdaCuRLScheduler.observe``; at a merge, π_ref ← π_θ with TRL's
   ``SyncRefModelCallback.sync_target_model(..., alpha=1)``. The very next draw is made
   over the enlarged active set.
5. **Sparse KL** (AdaCuRL modes with beta > 0): a group whose *accuracy* rewards are all
   equal gets KL weight 0 on its rows; only its KL term goes (``compute_loss`` above). Its
   policy term (zero when every reward is equal, the format reward can still move it) and
   its tokens in TRL's loss normaliser stay, so the effective learning rate is the same as
   plain GRPO's. ``tests/test_trainer.py`` checks that with beta = 0 the loss is TRL's, bit
   for bit, and that with beta > 0 it equals TRL's loss with that group's KL made zero.

Where this departs from the papers or from TRL:

- VCRL's refill groups are kept whatever their new ``p`` (re-filtering could loop); their
  new ``p`` updates their bank priority. TRL's own logged ``reward``/``frac_reward_zero_std``
  then average the first roll and the refill roll; ``curriculum/informative_frac`` is the
  exact fraction of groups in the batch that trains.
- The pass over the active set is uniform (AdaCuRL samples D_c uniformly). The coarse
  stage (``adacurl_config.coarse_size``) bins by the pool's probe stats scaled to 5
  attempts, not 5 fresh rollouts; fine difficulty reads the same probe stats, not N = 100
  rollouts. Re-AdaCuRL (``adacurl_config.re_passes``) re-measures with one group of G
  rollouts per active item through TRL's generation; those rollouts are not trained on,
  not written to the pool, and TRL's per-step reward metrics of that step include them.
  See ``curriculum/adacurl.py`` for what "a full pass" means here.
- Exactly once across a kill -9 at any point of a step: pool training stats are written
  when a batch is scored, at most once per (output dir, step, call), so steps re-run after a
  resume are not counted again (the first run's rollouts of a re-run step are the ones
  counted); the curriculum state lives in the checkpoint, written before transformers'
  files, and :func:`last_complete_checkpoint` skips a checkpoint a kill cut short;
  ``teachloop train --resume`` truncates ``train_log.jsonl`` to the checkpoint's step.
  The once-keys name the output directory, so a run started afresh in the same directory
  after its checkpoints were deleted does not count the steps its predecessor counted.
- VCRL groups dropped that the bank cannot refill leave the loss (completion mask zeroed,
  TRL's token count recounted): VCRL trains on the kept queries only.
- AdaCuRL's cs buffer M defaults to the paper's 512; the CPU presets (configs/smoke.yaml,
  quickstart.yaml) lower it to 8 so cs can move within a few steps. cs is clamped at 0 from
  below (``cs_floor``; see ``curriculum/adacurl.py``).
- Sparse KL follows the paper (accuracy reward, KL term only); TRL's logged ``kl`` stays the
  mean over every token, ``adacurl/kl_groups_frac`` is the fraction of groups with a KL term.

- Several processes (``training/dist.py``): rank 0 decides (the draw, pool refresh, VCRL
  selection and refill ids, bank updates, AdaCuRL observation and merges, Re-AdaCuRL) from
  the rewards TRL gathered, and broadcasts; each rank binds its slice of the rows, re-rolls
  its share of a refill (padded with repeats of the last refill id until its rows divide
  over the processes; the padding groups are rolled out and dropped), gathers the refill
  batch and splices the rows it holds, and resets its own reference model at a merge. Only
  rank 0 writes the pool, the logs and the checkpointed curriculum state. The other ranks'
  copies of the sampler, bank and scheduler are not kept in step (they never decide; a
  resume loads rank 0's state on every rank). ``self.rollouts`` (the online teacher's
  input) holds completion texts only with one process.
- TRL drop-in: ``train_dataset`` may be a plain ``datasets.Dataset``
  (:class:`~teachloop.training.data.DatasetData`). Without a ``difficulty`` column, AdaCuRL
  modes measure every row before training with one group of G rollouts by the initial
  policy (fine difficulty 1 − c/G, not the paper's N = 100; the coarse stage reads the same
  counts scaled to 5); those rollouts are not trained on. The accuracy reward defaults to
  the only reward function. AdaCuRL's format-reward cut-off T_f belongs to teachloop's own
  format reward; a user's reward functions are used as given at every step.
- ``steps_per_generation < gradient_accumulation_steps`` is refused (several generation
  batches per optimisation step would break the once-per-step κ schedule, capability score
  and once-keys), as is the Liger loss with sparse KL (its KL term is inside the kernel).

Not covered: an ``IterableDataset`` or a dict of datasets as ``train_dataset`` (the
curriculum re-draws rows by id); multimodal batches (the splice refuses unknown keys); PEFT
with AdaCuRL's reference reset (TRL has no separate reference model under PEFT); DeepSpeed
ZeRO-3 / FSDP (the reference reset and the refill gather assume whole parameters and
unsharded batches; untested); the online teacher (``teachloop/online.py``) with several
processes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.trainer.callbacks import SyncRefModelCallback

from teachloop.curriculum.adacurl import (
    AdaCuRLScheduler,
    MergeEvent,
    coarse_bin,
    coarse_correct,
    coarse_select,
    filter_fine,
)
from teachloop.curriculum.vcrl import VCRLState
from teachloop.training.batch import (
    KL_WEIGHT_KEY,
    SPLICE_KEYS,
    RowBeta,
    _varies,
    informative_fraction,
    kl_weights,
    mask_groups,
    splice_groups,
)
from teachloop.training.config import CurriculumGRPOConfig
from teachloop.training.data import DatasetData, ItemSampler, PoolData
from teachloop.training.decisions import CurriculumDecisions
from teachloop.training.dist import decide, gather_batch, pad_groups, recount_tokens
from teachloop.training.rewards import make_correctness_reward, make_format_reward

# Offline (HF_HUB_OFFLINE=1, as teachloop's own runs are), transformers >= 5.2 on CUDA still
# tries to fetch Hub kernels (e.g. kernels-community/rotary) at the first forward when the
# `kernels` package is installed, and raises; measured on an H200 with transformers 5.25. Use
# the built-in layers instead, unless the user chose otherwise.
if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
    os.environ.setdefault("USE_HUB_KERNELS", "NO")

# transformers 5 renamed gradient_checkpointing to activation_checkpointing; TRL 1.16 still
# uses the old names, so every run printed four FutureWarnings the user can do nothing about.
warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)

log = logging.getLogger(__name__)

# batch-surgery names are re-exported: they lived here before training/batch.py
__all__ = ["CURRICULUM_STATE_FILE", "KL_WEIGHT_KEY", "CurriculumGRPOTrainer", "RowBeta", "SPLICE_KEYS",
           "informative_fraction", "kl_weights", "last_complete_checkpoint", "mask_groups",
           "splice_groups"]

CURRICULUM_STATE_FILE = "curriculum_state.json"



class CurriculumGRPOTrainer(CurriculumDecisions, GRPOTrainer):
    """``GRPOTrainer`` whose batches follow the curriculum, fed by a pool or a plain dataset.

    Called as TRL's ``GRPOTrainer`` (``model, reward_funcs, args, train_dataset, ...``) with a
    :class:`CurriculumGRPOConfig`: ``train_dataset`` is a ``datasets.Dataset`` with a
    ``prompt`` column, the columns the reward functions read and an optional ``difficulty``
    column (:class:`~teachloop.training.data.DatasetData`; without it AdaCuRL measures each
    row's difficulty with the policy before training). Or ``data=`` a
    :class:`~teachloop.training.data.PoolData`, and ``reward_funcs`` defaults to the
    correctness and format rewards bound to its items. TRL's dataloader then reads every item
    (``grpo``) or placeholder rows (the curriculum modes, whose items are bound at generation
    time). Other keyword arguments go to ``GRPOTrainer``.
    """

    def __init__(self, model: Any, reward_funcs: Any = None, args: CurriculumGRPOConfig | None = None,
                 train_dataset: Any = None, *, data: PoolData | DatasetData | None = None,
                 **kwargs: Any) -> None:
        if not isinstance(args, CurriculumGRPOConfig):
            raise TypeError(f"args must be a CurriculumGRPOConfig, got {type(args).__name__}")
        if (data is None) == (train_dataset is None):
            raise TypeError("pass train_dataset (a datasets.Dataset, as to TRL's GRPOTrainer) or "
                            "data (a teachloop PoolData), not both or neither")
        if data is None:
            if isinstance(train_dataset, dict) or not hasattr(train_dataset, "column_names"):
                raise TypeError("train_dataset must be one datasets.Dataset (an IterableDataset "
                                "or a dict of datasets cannot be re-drawn by the curriculum)")
            if reward_funcs is None:
                raise TypeError("reward_funcs is required with a train_dataset, as in GRPOTrainer")
            data = DatasetData(train_dataset)
        self.data = data
        self.mode = args.curriculum_mode
        self.vcrl_state = VCRLState(args.vcrl()) if args.uses_vcrl else None
        self.scheduler: AdaCuRLScheduler | None = None
        self.item_sampler = ItemSampler(args.seed)
        self.merge_log: list[MergeEvent] = []
        self.re_log: list[dict[str, Any]] = []  # Re-AdaCuRL rounds
        self.ref_resets = 0  # π_ref ← π_θ done by this process
        self._pass_seen: set[str] = set()  # ids drawn since every bucket was merged
        self.history: list[dict[str, Any]] = []  # one record per training generation batch
        self._last_rewards: torch.Tensor | None = None
        self._last_completions: list[str] | None = None
        # newest rollout of each item: (completion texts, accuracy rewards, global step); the
        # online teacher reads these as the student's performance summary (teachloop/online.py)
        self.rollouts: dict[str, tuple[list[str], list[float], int]] = {}
        self._generations = 0
        if reward_funcs is None:
            fmt = args.adacurl().format_steps
            reward_funcs = [make_correctness_reward(data.items), make_format_reward(data.items, fmt)]
        n_groups = args.generation_batch_size // args.num_generations
        train_rows = data.dataset() if self.mode == "grpo" else data.slots(n_groups)
        super().__init__(model=model, reward_funcs=reward_funcs, args=args,
                         train_dataset=train_rows, **kwargs)
        self._acc_col = self.reward_func_names.index(_accuracy_name(args, self.reward_func_names))
        if args.uses_adacurl:
            if isinstance(data, DatasetData) and data.unmeasured:
                self._measure_dataset(data)
            self.scheduler = self._build_scheduler(args)
        if self.scheduler is not None and args.ref_reset_at_merge and self.beta != 0.0 \
                and self.ref_model is None:
            raise NotImplementedError("AdaCuRL's reference reset needs a separate reference "
                                      "model; TRL has none under PEFT. Set ref_reset_at_merge=False")
        self._write_buckets()

    # --- setup ---------------------------------------------------------------------
    def _measure_dataset(self, data: DatasetData) -> None:
        """Difficulty of the rows without a ``difficulty`` column: one group of G rollouts
        each by the initial policy, scored by the accuracy reward (AdaCuRL's fine
        difficulty 1 − c/N with N = G, not the paper's 100). Not trained on, not logged."""
        ids = data.unmeasured
        t0 = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        acc: list[list[float]] = []
        chunk = max(16, self.args.generation_batch_size // self.num_generations)  # groups per call
        for k in range(0, len(ids), chunk):
            acc += self._roll(ids[k:k + chunk])[1]
        self.model.train(was_training)
        self._metrics["eval"].clear()  # TRL's eval-mode metrics of these rollouts
        data.measured(dict(zip(ids, acc)))
        log.warning("AdaCuRL: measured the difficulty of %d rows without a 'difficulty' column "
                    "(%d rollouts each) in %.1f s", len(ids), self.num_generations,
                    time.perf_counter() - t0)

    def _build_scheduler(self, args: CurriculumGRPOConfig) -> AdaCuRLScheduler:
        cfg = args.adacurl()
        diffs = self.data.difficulties()
        if cfg.coarse_size:  # AdaCuRL's coarse stage: bins of correct-of-5, drawn at ρ
            items = self.data.items
            counts = {i: coarse_correct(items[i].successes, items[i].attempts) if items[i].attempts
                      else coarse_correct(5 * (1 - diffs[i]), 5) for i in diffs}
            chosen = coarse_select(counts, cfg.coarse_size, random.Random(args.seed),
                                   cfg.coarse_ratios)
            by_bin = [sum(coarse_bin(counts[i]) == b for i in chosen) for b in range(3)]
            log.info("AdaCuRL coarse stage: %d of %d measured items, G1/G2/G3 = %s",
                     len(chosen), len(diffs), by_bin)
            diffs = {i: diffs[i] for i in chosen}
        kept = filter_fine(diffs, cfg.fine_low, cfg.fine_high)
        if len(kept) < cfg.num_buckets:
            raise ValueError(
                f"AdaCuRL needs at least num_buckets={cfg.num_buckets} measured items with "
                f"difficulty in [{cfg.fine_low}, {cfg.fine_high}]; the data has {len(kept)} "
                f"(of {len(self.data)} items, {len(diffs)} measured). Probe more items, add easier "
                "or harder variants, lower num_buckets, widen fine_low/fine_high, or use "
                "curriculum_mode='vcrl'")
        return AdaCuRLScheduler(kept, cfg)

    # --- TRL hooks -----------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards = rewards_per_func  # gathered over processes: (global rows, funcs)
        self._last_completions = [_completion_text(c) for c in completions]  # this process's rows
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:  # evaluation is TRL's own
            return super()._generate_and_score_completions(inputs)
        if self.mode == "grpo":
            return self._observe_only(inputs)
        return self._curriculum_batch(inputs)

    def _observe_only(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """``grpo``: TRL's batch unchanged; only metrics and pool stats (written by rank 0)."""
        out = super()._generate_and_score_completions(inputs)
        t0 = time.perf_counter()
        G = self.num_generations
        row_ids = gather_object([x["item_id"] for x in inputs])
        ids = row_ids[::G]
        acc, _ = self._split_rewards(self._last_rewards, len(ids))
        decide(self.accelerator, self._record, ids, acc)
        informative = informative_fraction(acc)
        self._log_step(ids, informative, informative, time.perf_counter() - t0, extra={},
                       local_ids=[x["item_id"] for x in inputs])
        return out

    def _curriculum_batch(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """One generation batch of a curriculum mode. Every decision is rank 0's
        (``training/dist.py``); every rank generates its slice and applies the decisions."""
        G, acc_ = self.num_generations, self.accelerator
        step = self.state.global_step
        t0 = time.perf_counter()
        n_groups = self.args.generation_batch_size // G
        # ---- rank 0: new pool items, and whether a Re-AdaCuRL round is due
        new_items, re_ids = decide(acc_, self._plan)
        if not acc_.is_main_process:
            self.data.add(new_items)
        extra: dict[str, float] = {}
        if re_ids:
            t_re = time.perf_counter()
            _, re_acc, _ = self._roll(re_ids)
            extra.update(decide(acc_, self._re_apply, re_ids, re_acc))
            extra["adacurl/re_s"] = time.perf_counter() - t_re
        # ---- bind: rank 0 draws the items of this batch from the current active set
        ids, active = decide(acc_, self._draw, n_groups)
        drawn = list(ids)
        local = len(inputs)
        start = acc_.process_index * local
        rows = self.data.rows(ids, G)[start:start + local]
        overhead = time.perf_counter() - t0

        out = super()._generate_and_score_completions(rows)

        t0 = time.perf_counter()
        acc, tot = self._split_rewards(self._last_rewards, n_groups)  # gathered: same on every rank
        informative_rolled = informative_fraction(acc)
        rolled = list(zip(ids, acc))  # every group rolled out this step: AdaCuRL's evidence
        masked: set[int] = set()
        # ---- VCRL (rank 0): record, drop p < κ, name refills from the bank
        sel = decide(acc_, self._select, step, ids, acc)
        if self.vcrl_state is not None:
            dropped, refill = sel["dropped"], sel["refill"]
            reroll_s = 0.0
            if refill:  # every rank re-rolls its share, then takes the rows it holds
                overhead += time.perf_counter() - t0
                t_r = time.perf_counter()
                out_r, acc_r, tot_r = self._roll(refill)
                full_r = gather_batch(out_r, acc_, self._tokenizer.pad_token_id)
                reroll_s = time.perf_counter() - t_r
                t0 = time.perf_counter()
                decide(acc_, self._refilled, refill, acc_r)
                dst = dropped[:len(refill)]
                out = splice_groups(out, full_r, dst, G, self._tokenizer.pad_token_id, start=start)
                recount_tokens(out, acc_)
                for k, g in enumerate(dst):
                    ids[g], acc[g], tot[g] = refill[k], acc_r[k], tot_r[k]
                rolled += list(zip(refill, acc_r))
            masked.update(dropped[len(refill):])
            extra.update(sel["extra"])
            extra["vcrl/reroll_s"] = reroll_s
        # ---- AdaCuRL (rank 0): capability score; every rank resets its π_ref at a merge
        if self.scheduler is not None:
            events, ada_extra = decide(acc_, self._observe_buckets, step, rolled)
            for event in events:
                if not acc_.is_main_process:
                    self.merge_log.append(event)
                self._reset_reference()
            extra.update(ada_extra)

        if masked:  # VCRL drops the bank could not refill leave the loss
            mask_groups(out, sorted(masked), G, start, acc_)
        # ---- sparse KL: no KL term for groups whose accuracy rewards are all equal
        if self.uses_sparse_kl:
            no_kl = [g for g, a in enumerate(acc) if not _varies(a)]
            out[KL_WEIGHT_KEY] = kl_weights(no_kl, n_groups, G, start, len(inputs),
                                            out["advantages"].device)
            extra["adacurl/kl_groups_frac"] = 1.0 - len(no_kl) / n_groups
        informative = sum(_varies(a) for g, a in enumerate(acc) if g not in masked) / n_groups
        extra["curriculum/masked_groups"] = float(len(masked))
        self._generations += 1
        self._log_step(ids, informative, informative_rolled,
                       overhead + time.perf_counter() - t0, extra, drawn=drawn,
                       local_ids=[r["item_id"] for r in rows], active=active)
        return out

    def _roll(self, ids: Sequence[str]) -> tuple[dict[str, Any], list[list[float]], list[list[float]]]:
        """One group of G rollouts per id through TRL's generation and scoring, the rows
        split evenly over the processes (padded, ``training/dist.pad_groups``). Returns this
        process's batch dict and each id's accuracy and total rewards (padding dropped)."""
        G, acc_ = self.num_generations, self.accelerator
        padded = pad_groups(ids, G, acc_.num_processes)
        rows = self.data.rows(padded, G)
        local = len(rows) // acc_.num_processes
        start = acc_.process_index * local
        out = super()._generate_and_score_completions(rows[start:start + local])
        acc, tot = self._split_rewards(self._last_rewards, len(padded))
        return out, acc[:len(ids)], tot[:len(ids)]

    @property
    def uses_sparse_kl(self) -> bool:
        """AdaCuRL's sparse KL is on: an AdaCuRL mode, ``sparse_kl`` and a KL term (beta ≠ 0)."""
        return self.args.uses_adacurl and self.args.sparse_kl and self.beta != 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss, with the KL term of each row weighted by ``inputs[KL_WEIGHT_KEY]``.

        TRL 1.16 adds the KL term as ``per_token_loss + self.beta * per_token_kl`` (the only
        product with ``self.beta`` in ``_compute_loss``). For this call ``self.beta`` is a
        :class:`RowBeta`, whose product is ``beta · w[row] · per_token_kl``; everything else
        (policy term, masks, normaliser, metrics) is TRL's own. Rows without a weight (TRL's
        evaluation batches) get TRL's loss unchanged.
        """
        w = inputs.get(KL_WEIGHT_KEY) if isinstance(inputs, dict) else None
        if w is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = {k: v for k, v in inputs.items() if k != KL_WEIGHT_KEY}
        beta, row_beta = self.beta, RowBeta(self.beta, w)
        self.beta = row_beta
        try:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self.beta = beta
        if beta != 0.0 and row_beta.applied != 1:
            raise RuntimeError("TRL's loss no longer adds its KL term as `self.beta * per_token_kl` "
                               "once per call; re-check CurriculumGRPOTrainer.compute_loss")
        return loss

    # --- pieces --------------------------------------------------------------------
    def _split_rewards(self, rewards_per_func: torch.Tensor | None, n_groups: int
                       ) -> tuple[list[list[float]], list[list[float]]]:
        """Per group: accuracy rewards (NaN → 0) and total weighted rewards (TRL's nansum)."""
        if rewards_per_func is None:
            raise RuntimeError("TRL scored a batch without calling _calculate_rewards; the "
                               "trainer's hook no longer matches this TRL version")
        G = self.num_generations
        r = rewards_per_func.detach().float().cpu()
        if r.shape[0] != n_groups * G:
            raise RuntimeError(f"expected {n_groups * G} scored completions, got {r.shape[0]}")
        acc = torch.nan_to_num(r[:, self._acc_col], nan=0.0)
        if acc.min() < 0 or acc.max() > 1:
            raise ValueError(f"the accuracy reward {self.args.accuracy_reward!r} must lie in "
                             f"[0, 1], got values in [{acc.min():.3g}, {acc.max():.3g}]")
        tot = (r * self.reward_weights.cpu().unsqueeze(0)).nansum(dim=1)
        return ([acc[g * G:(g + 1) * G].tolist() for g in range(n_groups)],
                [tot[g * G:(g + 1) * G].tolist() for g in range(n_groups)])

    def _reset_reference(self) -> bool:
        """π_ref ← π_θ: TRL's reference sync with α = 1 (AdaCuRL's adaptive reference)."""
        if not self.args.ref_reset_at_merge or self.ref_model is None:
            return False
        SyncRefModelCallback.sync_target_model(self.accelerator.unwrap_model(self.model),
                                               self.ref_model, 1.0)
        self.ref_resets += 1
        return True

    def _log_step(self, ids: Sequence[str], informative: float, informative_rolled: float,
                  overhead_s: float, extra: dict[str, float],
                  drawn: Sequence[str] | None = None, local_ids: Sequence[str] = (),
                  active: str | None = None) -> None:
        m = self._metrics["train"]
        m["curriculum/informative_frac"].append(informative)
        m["curriculum/informative_frac_rolled"].append(informative_rolled)
        m["curriculum/overhead_s"].append(overhead_s)
        for k, v in extra.items():
            m[k].append(v)
        self.history.append({"step": self.state.global_step, "ids": list(ids),
                             "drawn": list(ids if drawn is None else drawn),
                             "local_ids": list(local_ids), "active": active,
                             "informative_frac": informative,
                             "informative_frac_rolled": informative_rolled,
                             "overhead_s": overhead_s, **extra})

    # --- checkpoints ---------------------------------------------------------------

    def _save_checkpoint(self, model, trial):
        # Written first: TRL/transformers write trainer_state.json near the end and then delete
        # older checkpoints, so a checkpoint with a readable trainer_state.json also holds the
        # curriculum state (see last_complete_checkpoint), whatever the moment of a kill.
        if self.args.should_save:
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            path = os.path.join(self._get_output_dir(trial=trial), folder, CURRICULUM_STATE_FILE)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.curriculum_state_dict(), f)
            os.replace(tmp, path)
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, CURRICULUM_STATE_FILE)
        if not os.path.exists(path):
            raise ValueError(f"{checkpoint} has no {CURRICULUM_STATE_FILE}: it was not written by "
                             "CurriculumGRPOTrainer, so the curriculum cannot resume from it")
        with open(path) as f:
            self.load_curriculum_state_dict(json.load(f))


def last_complete_checkpoint(output_dir: str | os.PathLike[str]) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` that a kill did not cut short: its
    ``trainer_state.json`` (written last by transformers) and ``curriculum_state.json``
    (written first, above) both parse. ``transformers.trainer_utils.get_last_checkpoint``
    returns the newest folder even when a kill -9 left it half written."""
    from transformers.trainer import TRAINER_STATE_NAME

    root = os.fspath(output_dir)
    if not os.path.isdir(root):
        return None
    steps = []
    for name in os.listdir(root):
        head, _, n = name.rpartition("-")
        if head == PREFIX_CHECKPOINT_DIR and n.isdigit():
            steps.append(int(n))
    for n in sorted(steps, reverse=True):
        ckpt = os.path.join(root, f"{PREFIX_CHECKPOINT_DIR}-{n}")
        try:
            for name in (TRAINER_STATE_NAME, CURRICULUM_STATE_FILE):
                with open(os.path.join(ckpt, name)) as f:
                    json.load(f)
        except (OSError, ValueError):
            continue
        return ckpt
    return None


def _accuracy_name(args: CurriculumGRPOConfig, names: Sequence[str]) -> str:
    """The reward function whose values are the binary accuracy: ``args.accuracy_reward``;
    unset, ``correctness_reward`` (teachloop's own) or the only reward function."""
    name = args.accuracy_reward
    if name is None:
        if "correctness_reward" in names:
            return "correctness_reward"
        if len(names) == 1:
            return names[0]
        raise ValueError(f"with several reward functions {list(names)}, set accuracy_reward in "
                         "CurriculumGRPOConfig to the one that returns the binary accuracy")
    if name not in names:
        raise ValueError(f"accuracy_reward={name!r} is not one of the reward functions "
                         f"{list(names)}; name the one that returns the binary accuracy")
    return name


def _completion_text(c: Any) -> str:
    """A completion as TRL hands it to reward functions: text, or a list of messages."""
    if isinstance(c, str):
        return c
    if isinstance(c, list) and c and isinstance(c[-1], dict):
        return str(c[-1].get("content", ""))
    return str(c)
