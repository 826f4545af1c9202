"""The study's statistics (teachloop/study_stats.py) and the few-shot student prompt."""

from __future__ import annotations

import random

import pytest

from teachloop.study_stats import bootstrap, common_items, item_scores, mean_ci


def _scores(rng, items, p):
    return {i: float(rng.random() < p) for i in items}


def test_paired_bootstrap_sees_a_small_shift_that_unpaired_noise_hides():
    # item difficulty varies a lot; arm b solves every item a solves plus 10 % more items:
    # the paired difference is +0.1 with a tight interval even though both means are noisy
    rng = random.Random(0)
    items = [f"i{k}" for k in range(200)]
    hard = {i: rng.random() for i in items}
    a = {s: {i: float(hard[i] < 0.3) for i in items} for s in (0, 1, 2)}
    b = {s: {i: float(hard[i] < 0.4) for i in items} for s in (0, 1, 2)}
    st = bootstrap({"a": a, "b": b}, items, reference="a", B=500)
    est, lo, hi = st["b"]["vs_ref"]
    assert est == pytest.approx(sum(0.3 <= hard[i] < 0.4 for i in items) / len(items))
    assert 0 < lo <= est <= hi
    assert st["a"]["vs_ref"] == (0.0, 0.0, 0.0)
    # the arm's own interval is wider than the paired difference's (difficulty cancels)
    assert st["b"]["mean"][2] - st["b"]["mean"][1] > hi - lo


def test_bootstrap_interval_covers_the_truth_and_delta_uses_the_base():
    rng = random.Random(1)
    items = [f"i{k}" for k in range(300)]
    base = _scores(rng, items, 0.2)
    arm = {s: _scores(rng, items, 0.2) for s in (0, 1, 2)}
    st = bootstrap({"x": arm}, items, base=base, B=500)["x"]
    est, lo, hi = st["delta"]
    assert lo < 0 < hi  # same distribution: no detectable change
    assert st["mean"][1] < 0.2 < st["mean"][2]


def test_common_items_drops_items_in_any_pool_and_items_missing_anywhere():
    scores = {"a": {0: {"x": 1.0, "y": 0.0, "z": 1.0}}, "b": {0: {"x": 0.0, "y": 1.0}}}
    items, dropped = common_items(scores, pool_ids={"y"})
    assert items == ["x"] and dropped == 1


def test_item_scores_and_mean_ci():
    assert item_scores([{"id": "a", "n": 4, "c": 1}, {"id": "b", "n": 0, "c": 0}]) == {"a": 0.25}
    m, lo, hi = mean_ci([0.1, 0.2, 0.3])
    assert m == pytest.approx(0.2) and lo <= 0.2 <= hi and lo >= 0.1 and hi <= 0.3


def test_quickstart_eval_ci_is_paired_over_items():
    from teachloop.heldout import eval_ci

    before = {"per_item": [{"id": str(i), "n": 4, "c": i % 2} for i in range(40)]}
    after = {"per_item": [{"id": str(i), "n": 4, "c": i % 2 + 1} for i in range(40)]}
    ci = eval_ci(before, after)
    assert ci["delta"] == pytest.approx((0.25, 0.25, 0.25))  # every item gained one of 4
    assert ci["before"][1] < ci["before"][0] < ci["before"][2]


def test_fewshot_messages_are_solved_examples_kept_out_of_heldout_sets():
    from teachloop.evals.bench import load_bench
    from teachloop.evals.families import get_family
    from teachloop.evals.fewshot import fewshot_ids, fewshot_messages, student_messages

    fam = get_family("math.rg.chain_sum")
    shots = fewshot_messages(fam.name, 3)
    assert [m["role"] for m in shots] == ["user", "assistant"] * 3
    item = fam.seeds(1, seed=5)[0]
    msgs = student_messages(item, fewshot=3, system_prompt="sys")
    assert msgs[0] == {"role": "system", "content": "sys"} and msgs[1:-1] == shots
    assert msgs[-1] == {"role": "user", "content": item.prompt}
    assert student_messages(item) == [{"role": "user", "content": item.prompt}]
    # every example's answer is right by the family's own checker
    ex = fam.seeds(3, seed=20_000)
    for it, ans in zip(ex, shots[1::2]):
        assert fam.score(it, ans["content"]) == 1.0
    ids = fewshot_ids([fam.name], 3)
    assert len(ids) == 3
    drawn = load_bench("heldout:math.rg.chain_sum", 8, seed=0, exclude_ids=ids)
    assert not ids & {it.id for it, _ in drawn}


def test_training_prompts_carry_the_same_examples(tmp_path):
    from teachloop.curriculum.pool import open_pool
    from teachloop.evals.families import get_family
    from teachloop.evals.fewshot import fewshot_messages
    from teachloop.training.data import PoolData

    fam = get_family("math.rg.basic_arithmetic", start_level=0)
    with open_pool(tmp_path) as store:
        store.insert_many(fam.seeds(2, seed=0))
        data = PoolData.from_pool(store, fewshot=2)
        i = next(iter(data.items))
        assert data.prompt(i)[:-1] == fewshot_messages(fam.name, 2)
        assert len(PoolData.from_pool(store, ids=[i])) == 1


def test_seed_family_args_are_checked_and_reach_the_seeds_and_eval():
    from teachloop.config import ConfigError, load_config
    from teachloop.heldout import eval_settings, harder_family_args

    with pytest.raises(ConfigError, match="start_level"):
        load_config("smoke", None, ["seeds.family_args={math.rg.chain_sum: {start_level: -1}}"])
    with pytest.raises(ConfigError, match="unknown task family"):
        load_config("smoke", None, ["seeds.family_args={math.rg.nope: {}}"])
    cfg = load_config("smoke", None, ["seeds.families=[math.rg.chain_sum, code.deduction]",
                                      "seeds.family_args={math.rg.chain_sum: {start_level: 0}}",
                                      "eval.seed=7", "eval.exclude_pool=false"])
    assert harder_family_args(cfg) == {"math.rg.chain_sum": {"start_level": 1}}
    kw = eval_settings(cfg, None, harder=True)
    assert kw["bench"] == "heldout:math.rg.chain_sum" and kw["seed"] == 7
    assert kw["exclude_ids"] == ()
    assert eval_settings(cfg, None)["family_args"] == {"math.rg.chain_sum": {"start_level": 0}}
