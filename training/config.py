"""``CurriculumGRPOConfig``: TRL's ``GRPOConfig`` plus the curriculum's own fields, nothing else.

Beside ``training/trainer.py`` as TRL keeps ``grpo_config.py`` beside ``grpo_trainer.py``
(STYLE.md §3). The VCRL and AdaCuRL knobs are not repeated here: ``vcrl_config`` and
``adacurl_config`` take the keyword arguments of :class:`teachloop.curriculum.vcrl.VCRLConfig` and
:class:`teachloop.curriculum.adacurl.AdaCuRLConfig` (a dict, or a JSON string from a command line), so
their help strings live in one place and cannot drift. ``__post_init__`` validates them and
rejects TRL settings the curriculum cannot honour, saying what to set instead, in one line
(``teachloop train`` shows it without a traceback): ``steps_per_generation <
gradient_accumulation_steps`` (the curriculum decides once per optimisation step), VCRL with
``multi_objective_aggregation != 'sum_then_normalize'`` or ``scale_rewards='batch'`` (the
splice needs per-group advantages), AdaCuRL with TRL's periodic ``sync_ref_model``, and
the Liger loss with sparse KL. Several processes are supported in every mode
(``training/dist.py``).

Every TRL field keeps its TRL default. Settings the CPU path needs (``use_cpu=True``,
``bf16=False``) are the caller's choice (``teachloop/train.py`` sets them).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from teachloop.curriculum.adacurl import AdaCuRLConfig
from teachloop.curriculum.vcrl import VCRLConfig, describe_keeps

__all__ = ["MODES", "CurriculumGRPOConfig"]

log = logging.getLogger(__name__)

MODES = ("grpo", "vcrl", "adacurl", "vcrl+adacurl")


def _as_dict(name: str, value: dict | str | None) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name} must be a dict or a JSON object string, got {value!r} ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict or a JSON object string, got {value!r}")
    return dict(value)


@dataclass
class CurriculumGRPOConfig(GRPOConfig):
    """``GRPOConfig`` with VCRL selection + replay and AdaCuRL buckets (METHODS.md §2–3)."""

    _VALID_DICT_FIELDS = GRPOConfig._VALID_DICT_FIELDS + ["vcrl_config", "adacurl_config",
                                                          "vcrl_keeps"]

    curriculum_mode: str = field(default="vcrl+adacurl", metadata={
        "help": "grpo: plain TRL GRPO (the trainer only observes: metrics and pool stats); "
                "vcrl: drop groups with variance score p < κ and refill from the memory bank with "
                "on-policy re-rolls; adacurl: train on the merged difficulty buckets, reset the "
                "reference model at each merge; vcrl+adacurl: both"})
    vcrl_config: dict | str | None = field(default=None, metadata={
        "help": "keyword arguments of teachloop.curriculum.vcrl.VCRLConfig (kappa_warmup, warmup_steps, "
                "kappa, bank_capacity, alpha, replay_limit); a dict or a JSON string; "
                "unset keys keep the METHODS.md §2 defaults"})
    adacurl_config: dict | str | None = field(default=None, metadata={
        "help": "keyword arguments of teachloop.curriculum.adacurl.AdaCuRLConfig (num_buckets, gamma, "
                "window (M, the reward buffer: 512), cs_floor, format_steps, fine_low, fine_high, "
                "...); a dict "
                "or a JSON string; unset keys keep the METHODS.md §3 defaults"})
    accuracy_reward: str | None = field(default=None, metadata={
        "help": "name of the reward function whose values are the binary accuracy that VCRL's "
                "variance score, AdaCuRL's capability score, the informative-group metric and "
                "the pool's stats read (other reward functions, e.g. format, only shape the "
                "advantage); unset: correctness_reward when present, else the only reward "
                "function"})
    sparse_kl: bool = field(default=True, metadata={
        "help": "AdaCuRL sparse KL (AdaCuRL modes, beta > 0): no KL term for a group whose "
                "accuracy rewards are all equal; its policy-gradient term and its tokens in the "
                "loss normaliser stay as TRL computes them; ignored in grpo and vcrl modes"})
    ref_reset_at_merge: bool = field(default=True, metadata={
        "help": "AdaCuRL adaptive reference: π_ref ← π_θ at every bucket merge (TRL's ref "
                "sync with α = 1); needs beta > 0, else there is no reference model"})
    vcrl_keeps: dict | str | None = field(default=None, metadata={
        "help": "derived, not set by hand: the smallest and largest correct counts k of G that "
                "each κ phase keeps (warm-up and after), so a config dump says what κ means at "
                "this G; None outside the VCRL modes"})
    pool_refresh_steps: int = field(default=0, metadata={
        "help": "every this many generation batches, load items the teacher added to the pool "
                "since the start (measured ones; AdaCuRL puts each in the bucket its "
                "difficulty belongs to); 0 = never"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.curriculum_mode not in MODES:
            raise ValueError(f"curriculum_mode must be one of {MODES}, got {self.curriculum_mode!r}")
        # validate now, keep plain dicts (TrainingArguments must stay JSON-serialisable)
        self.vcrl_config = VCRLConfig(**_as_dict("vcrl_config", self.vcrl_config)).to_dict()
        self.adacurl_config = AdaCuRLConfig(**_as_dict("adacurl_config", self.adacurl_config)).to_dict()
        if self.pool_refresh_steps < 0:
            raise ValueError(f"pool_refresh_steps must be >= 0, got {self.pool_refresh_steps}; "
                             "set 0 to never reload the pool")
        if self.steps_per_generation < self.gradient_accumulation_steps:
            raise ValueError(
                f"steps_per_generation={self.steps_per_generation} < gradient_accumulation_steps="
                f"{self.gradient_accumulation_steps}: TRL would generate several batches per "
                "optimisation step, and the curriculum decides once per step (κ schedule, "
                "capability score, pool stats); leave steps_per_generation unset or >= "
                "gradient_accumulation_steps")
        if self.use_liger_kernel and self.uses_adacurl and self.sparse_kl and self.beta != 0.0:
            raise ValueError("AdaCuRL's sparse KL weights TRL's KL term per row, which the Liger "
                             "GRPO loss computes inside its kernel; set use_liger_kernel=False "
                             "or sparse_kl=False")
        self.vcrl_keeps = None
        if self.uses_vcrl:
            keeps = self.vcrl().keeps(self.num_generations)
            for name in ("warmup", "after"):
                ph = keeps[name]
                if ph is not None and ph["k_min"] is None:
                    raise ValueError(f"vcrl κ={ph['kappa']} keeps no group of G="
                                     f"{self.num_generations} binary rewards (largest p is 1 at "
                                     f"k={self.num_generations // 2}); lower κ")
            self.vcrl_keeps = keeps
            log.info("VCRL: %s", describe_keeps(keeps))
            if self.multi_objective_aggregation != "sum_then_normalize":
                raise ValueError(
                    "VCRL splices re-rolled groups into the batch, which needs per-group "
                    "advantages; set multi_objective_aggregation='sum_then_normalize'")
            if self.scale_rewards == "batch":
                raise ValueError(
                    "VCRL splices re-rolled groups into the batch, so a batch-level reward std "
                    "would mix two batches; set scale_rewards='group' or 'none'")
        if self.uses_adacurl:
            if self.sync_ref_model:
                raise ValueError(
                    "AdaCuRL resets the reference model itself at each bucket merge; set "
                    "sync_ref_model=False (or ref_reset_at_merge=False to keep TRL's periodic sync)")
            if self.beta == 0.0 and self.ref_reset_at_merge:
                log.warning("curriculum_mode=%s with beta=0: there is no reference model, so the "
                            "reset at bucket merges and the sparse KL have no effect; set beta "
                            "(e.g. 0.04) to use them", self.curriculum_mode)

    # --- derived views -------------------------------------------------------------
    @property
    def uses_vcrl(self) -> bool:
        return "vcrl" in self.curriculum_mode

    @property
    def uses_adacurl(self) -> bool:
        return "adacurl" in self.curriculum_mode

    def vcrl(self) -> VCRLConfig:
        return VCRLConfig(**self.vcrl_config)

    def adacurl(self) -> AdaCuRLConfig:
        return AdaCuRLConfig(**self.adacurl_config)
