"""The curriculum GRPO trainer on TRL: hooks, batch surgery, rewards, data, and real CPU runs.

Run: pytest tests/test_trainer.py -q           (a few minutes on 2 cores: the embedded
                                               SmolLM2-135M, 16-token completions)
     pytest tests/test_trainer.py -q -m slow   (10 steps in each mode, ~10+ minutes)

The fast half needs no model. The rest trains the real embedded model on a pool built in a
temp dir from reasoning-gym seeds; scripted reward functions (TRL's contract) make the
curriculum's decisions predictable where a test must predict them.
"""

from __future__ import annotations

import collections
import functools
import inspect
import json
import math
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import trl  # noqa: E402
from trl import GRPOTrainer  # noqa: E402
from trl.trainer.callbacks import SyncRefModelCallback  # noqa: E402
from trl.trainer.utils import get_callable_name, shuffle_sequence_dict, split_tensor_dict  # noqa: E402

from teachloop.curriculum.items import Item  # noqa: E402
from teachloop.curriculum.pool import open_pool  # noqa: E402
from teachloop.curriculum.vcrl import variance_score  # noqa: E402
from teachloop.training.config import CurriculumGRPOConfig  # noqa: E402
from teachloop.training.data import ItemSampler, PoolData  # noqa: E402
from teachloop.training.rewards import make_correctness_reward, make_format_reward  # noqa: E402
from teachloop.training.trainer import (  # noqa: E402
    CURRICULUM_STATE_FILE,
    KL_WEIGHT_KEY,
    SPLICE_KEYS,
    CurriculumGRPOTrainer,
    kl_weights,
    mask_groups,
    splice_groups,
)

MODES = ("grpo", "vcrl", "adacurl", "vcrl+adacurl")


# ===================================================================== TRL internals
def _params(f) -> list[str]:
    return list(inspect.signature(f).parameters)


def test_trl_internals_we_extend_keep_their_shape():
    """Fails loudly when TRL changes what CurriculumGRPOTrainer extends or relies on."""
    assert trl.__version__.startswith("1.16."), f"re-check training/trainer.py for TRL {trl.__version__}"
    assert _params(GRPOTrainer._generate_and_score_completions) == ["self", "inputs"]
    assert _params(GRPOTrainer._calculate_rewards) == [
        "self", "inputs", "prompts", "completions", "completion_ids_list"]
    assert _params(GRPOTrainer._save_checkpoint) == ["self", "model", "trial"]
    assert _params(GRPOTrainer._load_optimizer_and_scheduler) == ["self", "checkpoint"]
    assert _params(SyncRefModelCallback.sync_target_model) == ["model", "target_model", "alpha"]
    # our hooks are on TRL's path
    assert "self._generate_and_score_completions(generation_batch)" in inspect.getsource(
        GRPOTrainer._prepare_inputs)
    gen_src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert "self._calculate_rewards(inputs, prompts, completions, completion_ids_list)" in gen_src
    # sparse KL weights the KL term through the one product with self.beta in TRL's loss
    loss_src = inspect.getsource(GRPOTrainer._compute_loss)
    assert 'mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]' in loss_src
    assert "per_token_loss = per_token_loss + self.beta * per_token_kl" in loss_src
    assert loss_src.count("self.beta *") == 1 and loss_src.count("* self.beta") == 0
    assert "return self._compute_loss(model, inputs)" in inspect.getsource(GRPOTrainer.compute_loss)
    # every text-only key TRL can put in the batch dict is one the VCRL splice knows
    import re
    keys = set(re.findall(r'output\["(\w+)"\]', gen_src)) | set(
        re.findall(r'"(\w+)": \w+,', gen_src.split("output = {", 1)[1].split("}", 1)[0]))
    multimodal = {"pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes",
                  "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
                  "num_images", "num_tiles"}
    assert keys - multimodal == SPLICE_KEYS, keys - multimodal ^ SPLICE_KEYS


# ===================================================================== config
def _cfg(tmp_path, **kw) -> CurriculumGRPOConfig:
    base = dict(output_dir=str(tmp_path / "o"), use_cpu=True, bf16=False, report_to="none",
                num_generations=4, per_device_train_batch_size=4, max_steps=1)
    base.update(kw)
    return CurriculumGRPOConfig(**base)


def test_config_validates_curriculum_fields(tmp_path):
    c = _cfg(tmp_path, vcrl_config='{"kappa": 0.5, "kappa_warmup": 0.2}', adacurl_config={"num_buckets": 2})
    assert c.vcrl().kappa == 0.5 and c.adacurl().num_buckets == 2 and c.vcrl().alpha == 0.9
    assert json.loads(c.to_json_string())["vcrl_config"]["kappa"] == 0.5  # stays serialisable
    for fld in ("curriculum_mode", "vcrl_config", "adacurl_config", "accuracy_reward", "sparse_kl",
                "ref_reset_at_merge", "pool_refresh_steps"):
        assert CurriculumGRPOConfig.__dataclass_fields__[fld].metadata["help"]
    with pytest.raises(ValueError, match="curriculum_mode"):
        _cfg(tmp_path, curriculum_mode="dapo")
    with pytest.raises(TypeError):
        _cfg(tmp_path, vcrl_config={"kapa": 0.5})
    with pytest.raises(ValueError, match="kappa_warmup"):
        _cfg(tmp_path, vcrl_config={"kappa": 0.2, "kappa_warmup": 0.5})
    with pytest.raises(ValueError, match="sync_ref_model=False"):
        _cfg(tmp_path, beta=0.1, sync_ref_model=True)
    with pytest.raises(ValueError, match="sum_then_normalize"):
        _cfg(tmp_path, multi_objective_aggregation="normalize_then_sum")
    with pytest.raises(ValueError, match="scale_rewards"):
        _cfg(tmp_path, scale_rewards="batch")


def test_config_reports_what_kappa_keeps_at_this_group_size(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="teachloop.training.config"):
        c = _cfg(tmp_path, curriculum_mode="vcrl", num_generations=4)
    assert "κ 0.8 (steps 20..) keeps k = 2..2 of G = 4" in caplog.text  # the start-up log line
    dumped = json.loads(c.to_json_string())["vcrl_keeps"]  # and the config dump
    assert (dumped["warmup"]["k_min"], dumped["warmup"]["k_max"]) == (1, 3)
    assert (dumped["after"]["k_min"], dumped["after"]["k_max"]) == (2, 2)
    c8 = _cfg(tmp_path, curriculum_mode="vcrl+adacurl", num_generations=8,
              per_device_train_batch_size=8, beta=0.04)
    assert (c8.vcrl_keeps["after"]["k_min"], c8.vcrl_keeps["after"]["k_max"]) == (3, 5)
    assert _cfg(tmp_path, curriculum_mode="adacurl").vcrl_keeps is None
    from teachloop.curriculum import vcrl

    real = vcrl.kept_counts
    vcrl.kept_counts = lambda kappa, G: None if kappa > 0.5 else real(kappa, G)  # as if κ kept none
    try:
        with pytest.raises(ValueError, match=r"^vcrl κ=0.8 keeps no group of G=4 .*lower κ$"):
            _cfg(tmp_path, curriculum_mode="vcrl")
    finally:
        vcrl.kept_counts = real


# ===================================================================== rewards
def _items(n=3, seed=0, family="math.rg.basic_arithmetic", start_level=0):
    from teachloop.evals.families import get_family

    return get_family(family, start_level=start_level).seeds(n, seed=seed)


def test_rewards_follow_trl_contract_and_keep_their_names():
    from teachloop.evals.families import get_family

    items = {it.id: it for it in _items(2)}
    a, b = list(items.values())
    fam = get_family(a.family)
    correct = make_correctness_reward(items)
    fmt = make_format_reward(items, 3)
    assert get_callable_name(correct) == "correctness_reward" == correct.__name__
    assert get_callable_name(fmt) == "format_reward"
    comps = [[{"role": "assistant", "content": fam.reference_completion(a)}],
             [{"role": "assistant", "content": "no idea"}],
             [{"role": "assistant", "content": "\\boxed{123456789}"}],
             [{"role": "assistant", "content": fam.reference_completion(b)}]]
    ids = [a.id, a.id, a.id, "unknown"]
    assert correct(prompts=[None] * 4, completions=comps, item_id=ids) == [1.0, 0.0, 0.0, None]

    class State:
        global_step = 2

    assert fmt(completions=comps, item_id=ids, trainer_state=State()) == [1.0, 0.0, 1.0, None]
    State.global_step = 3  # T_f reached: the format reward is off
    assert fmt(completions=comps, item_id=ids, trainer_state=State()) == [None] * 4


# ===================================================================== data
def test_item_sampler_passes_without_replacement_and_follows_changes():
    s = ItemSampler(seed=1)
    active = [f"i{k}" for k in range(5)]
    first = s.draw(3, active) + s.draw(2, active)
    assert sorted(first) == active  # one pass: every item once
    d = s.draw(4, active)
    assert len(set(d)) == 4  # a pass boundary inside a draw does not repeat ids
    assert s.draw(3, ["x", "y"]) in (["x", "y", "x"], ["y", "x", "y"])  # set smaller than draw
    merged = active + ["new"]
    state = s.state_dict()
    json.dumps(state)
    seq = [s.draw(2, merged) for _ in range(4)]
    assert "new" in {i for d in seq[:3] for i in d}  # a changed set starts a fresh pass
    s2 = ItemSampler(seed=99)
    s2.load_state_dict(json.loads(json.dumps(state)))
    assert [s2.draw(2, merged) for _ in range(4)] == seq  # restored exactly
    with pytest.raises(ValueError):
        s.draw(1, [])


def test_accelerate_reads_one_batch_ahead_which_is_why_items_bind_at_generation():
    """The reason for training/data.py's design: even a lazy sampler is read one batch early
    by accelerate's DataLoaderShard, so a draw made by the dataloader would miss a merge
    decided while the previous batch was scored."""
    from accelerate.data_loader import DataLoaderShard

    drawn: list[int] = []

    class Lazy(torch.utils.data.Sampler):
        def __iter__(self):
            for i in range(40):
                drawn.append(i)
                yield i

        def __len__(self):
            return 40

    it = iter(DataLoaderShard(list(range(40)), batch_size=4, sampler=Lazy()))
    next(it)
    assert len(drawn) == 8  # batch 2 was drawn before batch 1 was handed out


# ===================================================================== batch surgery
def _batch(prompt_w, comp_w, n_rows, fill, adv):
    pm = torch.zeros(n_rows, prompt_w, dtype=torch.long)
    pm[:, -2:] = 1  # left padded
    cm = torch.zeros(n_rows, comp_w, dtype=torch.long)
    cm[:, :3] = 1  # right padded
    return {
        "prompt_ids": torch.full((n_rows, prompt_w), fill), "prompt_mask": pm,
        "completion_ids": torch.full((n_rows, comp_w), fill), "completion_mask": cm,
        "advantages": torch.full((n_rows,), adv),
        "old_per_token_logps": torch.full((n_rows, comp_w), float(fill)),
        "num_items_in_batch": cm.sum(),
    }


def test_splice_replaces_whole_groups_and_repads():
    G = 2
    out = _batch(4, 5, 3 * G, fill=7, adv=0.5)
    new = _batch(6, 3, 2 * G, fill=9, adv=-1.0)
    res = splice_groups(out, new, [2, 0], G, pad_token_id=0)
    assert res["prompt_ids"].shape == (6, 6) and res["completion_ids"].shape == (6, 5)
    # group 2 <- new group 0, group 0 <- new group 1, group 1 untouched
    assert res["prompt_ids"][4:, -1].tolist() == [9, 9] and res["prompt_ids"][:2, -1].tolist() == [9, 9]
    assert res["prompt_ids"][2:4].tolist() == [[0, 0, 7, 7, 7, 7]] * 2  # left-padded with pad id
    assert res["completion_ids"][0].tolist() == [9, 9, 9, 0, 0]  # right-padded
    assert res["prompt_mask"][2].tolist() == [0, 0, 0, 0, 1, 1]
    assert res["advantages"].tolist() == [-1, -1, 0.5, 0.5, -1, -1]
    assert res["num_items_in_batch"].item() == res["completion_mask"].sum().item() == 18
    with pytest.raises(RuntimeError, match="pixel_values"):
        splice_groups({**out, "pixel_values": torch.zeros(1)}, new, [0], G, 0)


def test_mask_groups_zeroes_rows_and_recounts_tokens():
    class Acc:
        @staticmethod
        def gather(t):
            return t.reshape(1)

    out = _batch(4, 5, 6, fill=1, adv=0.0)
    mask_groups(out, [1], 2, 0, Acc())
    assert out["completion_mask"].sum(1).tolist() == [3, 3, 0, 0, 3, 3]
    assert out["num_items_in_batch"].item() == 12
    out = _batch(4, 5, 4, fill=1, adv=0.0)  # this process holds global rows 4..7
    mask_groups(out, [1, 2], 2, 4, Acc())  # group 1 is on another process
    assert out["completion_mask"].sum(1).tolist() == [0, 0, 3, 3]


# ===================================================================== real runs
def build_pool(run_dir: Path, n: int = 6, seed: int = 0) -> list[Item]:
    """A pool of reasoning-gym arithmetic at the lowest knob level (where the embedded 135M
    model has some success) with measured difficulties spread over 0.1 .. 0.9."""
    items = _items(n, seed=seed)
    store = open_pool(run_dir)
    store.insert_many(items)
    # as if each item had been probed 10 times: every item survives AdaCuRL's [0.05, 0.95] filter
    store.record_many([(it.id, 10, float(10 - 1 - (k % 9))) for k, it in enumerate(items)])
    store.close()
    return items


@pytest.fixture(scope="module")
def model_path():
    from teachloop.agents.embedded import embedded_model_path

    return str(embedded_model_path())


def _args(out, mode, **kw) -> CurriculumGRPOConfig:
    base = dict(output_dir=str(out), curriculum_mode=mode, max_steps=3, seed=0, use_cpu=True,
                bf16=False, report_to="none", disable_tqdm=True, logging_steps=1,
                num_generations=4, per_device_train_batch_size=4, max_completion_length=16,
                learning_rate=1e-5, beta=0.04 if "adacurl" in mode else 0.0, save_strategy="no",
                adacurl_config={"num_buckets": 3})
    base.update(kw)
    return CurriculumGRPOConfig(**base)


# grpo and vcrl+adacurl in the fast tier; the single-component modes in make test-all
@pytest.mark.parametrize("mode", [m if m in ("grpo", "vcrl+adacurl") else
                                  pytest.param(m, marks=pytest.mark.full) for m in MODES])
def test_each_mode_trains_and_logs_informative_fraction(tmp_path, model_path, mode):
    items = build_pool(tmp_path)
    store = open_pool(tmp_path, create=False)
    probes = {it.id: (it.attempts, it.difficulty) for it in store.query()}
    trainer = CurriculumGRPOTrainer(model_path, args=_args(tmp_path / "out", mode),
                                    data=PoolData.from_pool(store))
    trainer.train()
    assert trainer.state.global_step == 3
    logs = [x for x in trainer.state.log_history if "curriculum/informative_frac" in x]
    assert [x["step"] for x in logs] == [1, 2, 3]  # one per step
    for x in logs:
        assert 0.0 <= x["curriculum/informative_frac"] <= 1.0
        assert x["curriculum/overhead_s"] >= 0
        assert ("vcrl/kappa" in x) == ("vcrl" in mode) and ("adacurl/cs" in x) == ("adacurl" in mode)
    if "vcrl" in mode:
        assert logs[0]["vcrl/kappa"] == 0.3
    if "adacurl" in mode:
        assert logs[0]["adacurl/n_active"] >= 1
        # the first draw came from bucket 0 only
        assert set(trainer.history[0]["drawn"]) <= set(trainer.scheduler.buckets[0])
        assert {it.bucket for it in store.query()} >= {0, 1, 2}  # buckets written to the pool
    # every rolled-out completion is in the pool's training stats; probe stats never move
    rolled = sum(4 * (1 + h.get("vcrl/refilled", 0)) for h in trainer.history)
    after = store.query()
    assert sum(it.train_attempts for it in after) == rolled
    assert {it.id: (it.attempts, it.difficulty) for it in after} == probes
    assert len(items) == len(after)


def _positional(values):
    """A scripted reward: the k-th completion of each group gets values[k % len(values)]."""
    def scripted(completions, item_id, **kw):
        return [values[k % len(values)] for k in range(len(completions))]
    return scripted


def scripted_accuracy(completions, item_id, *, pattern, **kw):
    """Accuracy by item: pattern[item_id] repeated over the group."""
    return [pattern[i][k % len(pattern[i])] for k, i in enumerate(item_id)]


def test_vcrl_refills_dropped_groups_with_on_policy_rerolls(tmp_path, model_path):
    items = build_pool(tmp_path, n=4)
    hi, lows = items[0].id, [it.id for it in items[1:]]
    pattern = {hi: [1.0, 0.0, 1.0, 0.0], **{i: [0.0] * 4 for i in lows}}
    acc = functools.update_wrapper(functools.partial(scripted_accuracy, pattern=pattern),
                                   scripted_accuracy)
    store = open_pool(tmp_path, create=False)
    trainer = CurriculumGRPOTrainer(
        model_path, args=_args(tmp_path / "out", "vcrl", max_steps=2,
                               accuracy_reward="scripted_accuracy"),
        data=PoolData.from_pool(store), reward_funcs=[acc])
    trainer.vcrl_state.bank.add(hi, 1.0)  # the bank already knows a high-variance item
    prompts_seen: list[list] = []
    real_generate = trainer._generate

    def counting_generate(prompts):
        prompts_seen.append(prompts)
        return real_generate(prompts)

    trainer._generate = counting_generate
    batches = []
    real_gsc = trainer._generate_and_score_completions

    def keep(inputs):
        out = real_gsc(inputs)
        batches.append(out)
        return out

    trainer._generate_and_score_completions = keep
    trainer.train()
    refilled = [h for h in trainer.history if h["vcrl/refilled"]]
    assert refilled, trainer.history  # one of two draws from 4 items is a low-variance one
    h = refilled[0]
    assert h["drawn"][0] in lows and h["ids"] == [hi]  # the dropped group was replaced
    # on-policy: the refill prompt was generated afresh, by the policy, in its own call
    refill_prompt = trainer.data.prompt(hi)
    assert len(prompts_seen) == 2 + len(refilled)
    assert any(p == [refill_prompt] * 4 for p in prompts_seen)
    k = trainer.history.index(h)
    out = batches[k]
    assert out["prompt_ids"].shape[0] == 4 and set(out) <= SPLICE_KEYS  # the batch stays full
    assert out["completion_mask"].sum() > 0 and out["num_items_in_batch"] == out["completion_mask"].sum()
    assert out["advantages"].abs().sum() > 0  # the refill group is informative: it trains
    assert h["informative_frac"] == 1.0 and h["informative_frac_rolled"] == 0.0
    assert trainer.vcrl_state.bank.replays(hi) == len(refilled)
    assert math.isclose(variance_score(pattern[hi]), 1.0)


def test_adacurl_merge_reaches_next_batch_and_resets_reference(tmp_path, model_path):
    """K=3 buckets of one item each, reward buffer M=4 (one group); accuracy always 1 => cs
    0.5 >= 1/3 at step 0 (merge B_1), then cs = 1/3 + 0.5*(2/3) = 2/3 at step 1 (merge B_2). A positional reward keeps the
    groups informative, so the policy moves and the reset at step 1 is visible."""
    store = open_pool(tmp_path)
    items = _items(3, seed=5)
    store.insert_many(items)
    store.record_many([(it.id, 10, s) for it, s in zip(items, (8.0, 5.0, 2.0))])  # easy -> hard
    a, b, c = (it.id for it in items)
    always = functools.update_wrapper(functools.partial(scripted_accuracy, pattern={
        i: [1.0] for i in (a, b, c)}), scripted_accuracy)
    jitter = _positional([0.0, 0.1, 0.2, 0.3])
    trainer = CurriculumGRPOTrainer(
        model_path, args=_args(tmp_path / "out", "adacurl", max_steps=2, per_device_train_batch_size=8,
                               learning_rate=1e-4, beta=0.1, accuracy_reward="scripted_accuracy",
                               adacurl_config={"num_buckets": 3, "window": 4}),
        data=PoolData.from_pool(store), reward_funcs=[always, jitter])
    assert trainer.scheduler.buckets == [[a], [b], [c]]
    initial = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    snap = {}

    from transformers import TrainerCallback

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step == 1:
                snap.update({n: p.detach().clone() for n, p in model.named_parameters()})

    trainer.add_callback(Snapshot())
    trainer.train()
    assert [e.step for e in trainer.merge_log] == [0, 1]
    assert trainer.history[0]["drawn"] == [a, a]  # only B_0 before the merge
    assert b in trainer.history[1]["drawn"]  # the merge at step 0 is in step 1's batch
    ref = dict(trainer.ref_model.named_parameters())
    moved = [n for n in snap if not torch.equal(snap[n], initial[n])]
    assert moved, "the policy did not move at step 0"
    for n in moved:
        assert torch.equal(ref[n], snap[n])  # π_ref ← π_θ at the step-1 merge
    logs = [x for x in trainer.state.log_history if "adacurl/merges" in x]
    assert [x["adacurl/merges"] for x in logs] == [1.0, 2.0]
    assert logs[-1]["adacurl/n_active"] == 3.0


def test_kl_weights_rows_and_travel_with_trl_shuffle_and_split():
    assert kl_weights([1], 3, 2, 0, 6).tolist() == [1, 1, 0, 0, 1, 1]
    assert kl_weights([0, 2], 3, 2, 2, 4).tolist() == [1, 1, 0, 0]  # this process: rows 2..5
    # TRL shuffles and splits the generation batch by row: the weight must follow its row
    b = {"advantages": torch.arange(6.0), KL_WEIGHT_KEY: torch.arange(6.0) * 10,
         "num_items_in_batch": torch.tensor(6)}
    for part in split_tensor_dict(shuffle_sequence_dict(b), 3):
        assert torch.equal(part[KL_WEIGHT_KEY], part["advantages"] * 10)


def _loss_batch(trainer, G=2, T=6):
    tok = trainer.processing_class
    prompt = tok(["What is 2+2?"] * (2 * G), return_tensors="pt")
    comp_ids = torch.tensor(tok(["The answer is four, since two plus two is four."] * (2 * G))["input_ids"])[:, :T]
    assert comp_ids.shape == (2 * G, T)
    return {
        "prompt_ids": prompt["input_ids"], "prompt_mask": prompt["attention_mask"],
        "completion_ids": comp_ids, "completion_mask": torch.ones_like(comp_ids),
        "advantages": torch.tensor([0.0, 0.0, 1.0, -0.5]),  # group 0: all equal; group 1: not
        "ref_per_token_logps": torch.full(comp_ids.shape, -1.0),
        "num_items_in_batch": torch.tensor(2 * G * T),
    }


def _loss(trainer, batch, trl=False):
    trainer.model.zero_grad()
    b = {k: v.clone() for k, v in batch.items()}
    f = GRPOTrainer.compute_loss if trl else type(trainer).compute_loss
    loss = f(trainer, trainer.model, b)
    loss.backward()
    return loss.item()


def test_sparse_kl_beta0_equals_trl_loss(tmp_path, model_path):
    """beta = 0: the curriculum's loss on a batch carrying KL weights is TRL's loss on the
    same batch, bit for bit; the previous completion-mask approach changed it (the all-equal
    group left TRL's normaliser)."""
    build_pool(tmp_path, n=3)
    store = open_pool(tmp_path, create=False)
    trainer = CurriculumGRPOTrainer(model_path, args=_args(tmp_path / "out", "adacurl", beta=0.0),
                                    data=PoolData.from_pool(store))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; we call the loss directly
    batch = _loss_batch(trainer)
    del batch["ref_per_token_logps"]  # no reference model at beta = 0
    trl_loss = _loss(trainer, batch, trl=True)
    ours = _loss(trainer, {**batch, KL_WEIGHT_KEY: torch.tensor([0.0, 0.0, 1.0, 1.0])})
    print(f"\nbeta=0: TRL loss {trl_loss!r}, curriculum loss {ours!r}")
    assert ours == trl_loss
    old = {k: v.clone() for k, v in batch.items()}
    mask_groups(old, [0], 2, 0, trainer.accelerator)
    assert _loss(trainer, old) != pytest.approx(trl_loss, rel=1e-3)  # what the old masking did


def test_sparse_kl_drops_only_the_kl_of_all_equal_groups(tmp_path, model_path):
    """beta > 0, group 0 all equal (weight 0): the loss equals TRL's loss with group 0's
    reference set to the policy itself (KL exactly 0, same normaliser, same policy term), and
    no longer depends on group 0's reference."""
    build_pool(tmp_path, n=3)
    store = open_pool(tmp_path, create=False)
    trainer = CurriculumGRPOTrainer(model_path, args=_args(tmp_path / "out", "adacurl", beta=0.5),
                                    data=PoolData.from_pool(store))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    G = 2
    batch = _loss_batch(trainer, G=G)
    w = torch.tensor([0.0, 0.0, 1.0, 1.0])
    other_ref = dict(batch, ref_per_token_logps=batch["ref_per_token_logps"].clone())
    other_ref["ref_per_token_logps"][:G] = -5.0  # change only the all-equal group's reference
    full = _loss(trainer, batch, trl=True)
    assert abs(full - _loss(trainer, other_ref, trl=True)) > 1e-3  # TRL: group 0's KL counts
    sparse = _loss(trainer, {**batch, KL_WEIGHT_KEY: w})
    assert sparse == pytest.approx(_loss(trainer, {**other_ref, KL_WEIGHT_KEY: w}), abs=1e-7)
    # TRL's loss with group 0's KL made exactly 0 (reference = the policy's own log-probs)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    att = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        logps = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, att, batch["completion_ids"].shape[1])[0]
    self_ref = dict(batch, ref_per_token_logps=batch["ref_per_token_logps"].clone())
    self_ref["ref_per_token_logps"][:G] = logps[:G]
    expected = _loss(trainer, self_ref, trl=True)
    print(f"\nbeta=0.5: TRL loss {full!r}, sparse-KL loss {sparse!r}, TRL with group 0's KL "
          f"zeroed {expected!r}")
    assert sparse == pytest.approx(expected, abs=1e-6) and abs(sparse - full) > 1e-3
    assert trainer.beta == 0.5  # restored after the call


def test_sparse_kl_weights_reach_the_batch_from_accuracy(tmp_path, model_path):
    """In a real step, a group whose accuracy is all equal gets KL weight 0 even when its
    format reward varies; its completion mask and the batch's token count are TRL's."""
    items = build_pool(tmp_path, n=3)
    store = open_pool(tmp_path, create=False)
    flat = functools.update_wrapper(functools.partial(scripted_accuracy, pattern={
        it.id: [0.0] for it in items}), scripted_accuracy)
    trainer = CurriculumGRPOTrainer(
        model_path, args=_args(tmp_path / "out", "adacurl", max_steps=1,
                               accuracy_reward="scripted_accuracy"),
        data=PoolData.from_pool(store), reward_funcs=[flat, _positional([0.0, 1.0])])
    batches = []
    real = trainer._generate_and_score_completions

    def keep(inputs):
        out = real(inputs)
        batches.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in out.items()})
        return out

    trainer._generate_and_score_completions = keep
    trainer.train()
    out = batches[0]
    assert out[KL_WEIGHT_KEY].tolist() == [0.0] * 4
    assert out["advantages"].abs().sum() > 0  # the format reward still trains the group
    assert out["num_items_in_batch"] == out["completion_mask"].sum() > 0
    vcrl = CurriculumGRPOTrainer(model_path, args=_args(tmp_path / "o2", "vcrl", beta=0.04),
                                 data=PoolData.from_pool(store))
    assert not vcrl.uses_sparse_kl  # AdaCuRL modes only


@pytest.mark.full  # heavy: make test-all / CI
def test_resume_restores_scheduler_kappa_and_bank_exactly(tmp_path, model_path):
    build_pool(tmp_path)
    store = open_pool(tmp_path, create=False)
    out = tmp_path / "out"
    kw = dict(save_strategy="steps", save_steps=2, vcrl_config={"warmup_steps": 2})
    first = CurriculumGRPOTrainer(model_path, args=_args(out, "vcrl+adacurl", max_steps=2, **kw),
                                  data=PoolData.from_pool(store))
    first.vcrl_state.bank.add(next(iter(first.data.items)), 0.9)
    first.train()
    ckpt = out / "checkpoint-2"
    saved = json.loads((ckpt / CURRICULUM_STATE_FILE).read_text())
    assert saved == json.loads(json.dumps(first.curriculum_state_dict()))
    assert saved["vcrl"]["step"] == 2 and saved["adacurl"]["last_step"] == 1

    restored = {}
    from transformers import TrainerCallback

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            restored.update(json.loads(json.dumps(second.curriculum_state_dict())))

    second = CurriculumGRPOTrainer(model_path, args=_args(out, "vcrl+adacurl", max_steps=3, **kw),
                                   data=PoolData.from_pool(store), callbacks=[Capture()])
    assert second.curriculum_state_dict() != saved  # a fresh trainer starts elsewhere
    second.train(resume_from_checkpoint=str(ckpt))
    assert restored == saved  # scheduler, κ position, bank and sampler, exactly
    assert second.state.global_step == 3
    step3 = [x for x in second.state.log_history if "vcrl/kappa" in x]
    assert step3[-1]["vcrl/kappa"] == 0.8  # κ continued past warm-up (step 2 >= warmup_steps)
    assert second.vcrl_state.step == 3 and second.scheduler.last_step == 2

    wrong = CurriculumGRPOTrainer(model_path, args=_args(out, "vcrl", max_steps=3),
                                  data=PoolData.from_pool(store))
    with pytest.raises(ValueError, match="curriculum_mode"):
        wrong.load_curriculum_state_dict(saved)


def test_train_command_prints_informative_fraction_per_step(tmp_path):
    import typer
    from typer.testing import CliRunner

    from teachloop.errors import UserError
    from teachloop.train import main, train_command

    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("train")(train_command)
    build_pool(tmp_path, n=3)
    r = CliRunner().invoke(app, ["train", "--pool", str(tmp_path), "--mode", "vcrl", "--max-steps", "1",
                                 "--batch-size", "4", "--max-completion-length", "8",
                                 "--no-save-final", "--arg", 'vcrl_config={"kappa_warmup": 0.0}'],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "step 1/1" in r.output and "informative" in r.output and "κ 0.00" in r.output
    log = [json.loads(x) for x in (tmp_path / "train-vcrl" / "train_log.jsonl").read_text().splitlines()]
    assert "curriculum/informative_frac" in log[0]
    with pytest.raises(UserError, match="--mode"):
        main(tmp_path, mode="ppo")
    with pytest.raises(UserError, match="no pool"):
        main(tmp_path / "nowhere")
    with pytest.raises(UserError, match="already holds"):
        main(tmp_path, mode="vcrl", out=tmp_path / "train-vcrl")
    with pytest.raises(UserError, match="training config"):
        main(tmp_path, mode="vcrl", out=tmp_path / "o2", extra_args={"scale_rewards": "batch"})


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_ten_steps_each_mode(tmp_path, model_path, mode):
    """Acceptance: 10 steps per mode on CPU with the embedded model; the informative-group
    fraction is logged every step. Prints the per-step fractions and the wall time."""
    import time

    build_pool(tmp_path, n=12)
    store = open_pool(tmp_path, create=False)
    t0 = time.monotonic()
    trainer = CurriculumGRPOTrainer(
        model_path, args=_args(tmp_path / "out", mode, max_steps=10, per_device_train_batch_size=8,
                               max_completion_length=32),
        data=PoolData.from_pool(store))
    trainer.train()
    logs = [x for x in trainer.state.log_history if "curriculum/informative_frac" in x]
    assert [x["step"] for x in logs] == list(range(1, 11))
    print(f"\n{mode}: {time.monotonic() - t0:.0f} s; informative per step "
          f"{[round(x['curriculum/informative_frac'], 2) for x in logs]}")


_KILL_DRIVER = r"""
import os, signal, sys
from teachloop.training.trainer import CurriculumGRPOTrainer
from trl import GRPOTrainer
pool, point, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "1"

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "after_log":  # step 2 logged and its stats in the pool, no checkpoint yet
    real = CurriculumGRPOTrainer._save_checkpoint
    def save(self, model, trial):
        if self.state.global_step == 2: die()
        return real(self, model, trial)
    CurriculumGRPOTrainer._save_checkpoint = save
elif point == "mid_save":  # checkpoint-2 half written: model saved, no trainer_state.json
    real = GRPOTrainer._save_optimizer_and_scheduler
    def save(self, out):
        if self.state.global_step == 2: die()
        return real(self, out)
    GRPOTrainer._save_optimizer_and_scheduler = save
elif point == "after_save":  # checkpoint-2 complete, checkpoint-1 rotated away
    real = CurriculumGRPOTrainer._save_checkpoint
    def save(self, model, trial):
        real(self, model, trial)
        if self.state.global_step == 2: die()
    CurriculumGRPOTrainer._save_checkpoint = save
from teachloop.train import main
main(pool, mode="adacurl", max_steps=3, num_generations=4, batch_size=4, max_completion_length=8,
     save_steps=1, save_final=False, resume=resume, extra_args={"save_total_limit": 1})
"""


@pytest.mark.full
@pytest.mark.parametrize("point", ["after_log", "mid_save", "after_save"])
def test_kill_9_at_any_point_of_a_step_then_resume_counts_each_step_once(tmp_path, point):
    """kill -9 during step 2 (after its log line, in the middle of its checkpoint, right after
    it), then --resume: the training log, the pool's training stats and the curriculum state
    each hold steps 1..3 exactly once."""
    import subprocess
    import sys

    build_pool(tmp_path, n=6)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = [sys.executable, "-c", _KILL_DRIVER, str(tmp_path), point]
    first = subprocess.run(run + ["0"], env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == -9, first.stderr[-2000:]
    out = tmp_path / "train-adacurl"
    steps_before = [json.loads(x).get("step") for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert 2 in steps_before  # step 2 was logged before the kill
    second = subprocess.run(run[:-1] + ["none", "1"], env=env, capture_output=True, text=True,
                            timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    recs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "step" in r] == [1, 2, 3]
    store = open_pool(tmp_path, create=False)
    assert sum(it.train_attempts for it in store.query()) == 3 * 4  # 3 steps x one group of G=4
    state = json.loads((out / "checkpoint-3" / CURRICULUM_STATE_FILE).read_text())
    assert state["adacurl"]["last_step"] == 2 and state["sampler"]["draws"] == 3
    assert state["generations"] == 3


def test_coarse_stage_picks_the_bucketed_items_at_the_ratios(tmp_path, model_path):
    store = open_pool(tmp_path)
    items = _items(10, seed=3)
    store.insert_many(items)
    # probed 5 times: 4 items at 1/5 correct (G1), 3 at 3/5 (G2), 3 at 4/5 (G3)
    correct = [1] * 4 + [3] * 3 + [4] * 3
    store.record_many([(it.id, 5, float(c)) for it, c in zip(items, correct)])
    trainer = CurriculumGRPOTrainer(
        model_path, args=_args(tmp_path / "out", "adacurl", adacurl_config={
            "num_buckets": 2, "coarse_size": 5, "coarse_ratios": [0.2, 0.4, 0.4]}),
        data=PoolData.from_pool(store))
    bucketed = [i for b in trainer.scheduler.buckets for i in b]
    by_c = collections.Counter(correct[[it.id for it in items].index(i)] for i in bucketed)
    assert by_c == {1: 1, 3: 2, 4: 2}  # 5 items at 0.2/0.4/0.4


@pytest.mark.full  # 5 real steps plus a re-measurement: ~90 s on 2 cores
def test_re_adacurl_remeasures_drops_easy_items_and_restarts(tmp_path, model_path):
    """K = 1 (every bucket merged from the start), 3 items, one group per step: steps 0-2 are
    one pass; before step 3 the active items are re-measured with the policy. Item a is
    always right (difficulty 0 < 0.2: dropped), b and c 1 of 4 (0.75): kept and re-bucketed."""
    store = open_pool(tmp_path)
    items = _items(3, seed=7)
    store.insert_many(items)
    store.record_many([(it.id, 10, 5.0) for it in items])
    a, b, c = (it.id for it in items)
    pattern = {a: [1.0], b: [1.0, 0.0, 0.0, 0.0], c: [0.0, 0.0, 0.0, 1.0]}
    acc = functools.update_wrapper(functools.partial(scripted_accuracy, pattern=pattern),
                                   scripted_accuracy)
    trainer = CurriculumGRPOTrainer(
        model_path, args=_args(tmp_path / "out", "adacurl", max_steps=5, max_completion_length=8,
                               accuracy_reward="scripted_accuracy",
                               adacurl_config={"num_buckets": 1, "re_passes": 1}),
        data=PoolData.from_pool(store), reward_funcs=[acc])
    trainer.train()
    assert [h["drawn"][0] for h in trainer.history[:3]] and \
        {h["drawn"][0] for h in trainer.history[:3]} == {a, b, c}  # one pass
    assert len(trainer.re_log) == 1 and trainer.re_log[0]["step"] == 3
    assert trainer.re_log[0]["dropped"] == [a] and trainer.scheduler.round == 1
    assert trainer.scheduler.buckets == [sorted([b, c])] and trainer.scheduler.difficulty == {b: 0.75, c: 0.75}
    assert {h["drawn"][0] for h in trainer.history[3:]} <= {b, c}
    assert trainer.history[3]["adacurl/re_round"] == 1.0
    assert store.get(a).bucket is None and store.get(a).attempts == 10  # probe stats untouched
