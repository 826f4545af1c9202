"""AdaCuRL difficulty, buckets, capability score and scheduler.  pytest tests/test_adacurl.py -q"""

from __future__ import annotations

import collections
import dataclasses
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teachloop.curriculum.adacurl import (
    AdaCuRLConfig,
    AdaCuRLScheduler,
    CapabilityScore,
    MergeEvent,
    capability_update,
    coarse_bin,
    coarse_bins,
    filter_fine,
    fine_difficulty,
    make_buckets,
    sample_by_ratio,
)

FAST = settings(max_examples=60, deadline=None)
ids = st.text("abcdefghij", min_size=1, max_size=4)
diffs = st.floats(0.0, 1.0, allow_nan=False)
# coarse difficulty values on a grid, so ties happen
grid_diffs = st.integers(0, 20).map(lambda x: x / 20)


# --- coarse difficulty -----------------------------------------------------------------

def test_coarse_bins_follow_the_paper():
    assert [coarse_bin(c) for c in range(6)] == [0, 0, 1, 1, 2, 2]  # G1, G1, G2, G2, G3, G3
    for bad in (-1, 6):
        with pytest.raises(ValueError):
            coarse_bin(bad)
    for bad in (2.0, True):
        with pytest.raises(TypeError):
            coarse_bin(bad)
    assert coarse_bins({"a": 5, "b": 0, "c": 3, "d": 1}) == [["b", "d"], ["c"], ["a"]]


def test_sample_by_ratio_by_hand():
    bins = [[f"h{i}" for i in range(100)], [f"m{i}" for i in range(100)],
            [f"e{i}" for i in range(100)]]
    got = sample_by_ratio(bins, 10, random.Random(0))
    assert collections.Counter(i[0] for i in got) == {"h": 2, "m": 3, "e": 5}
    assert got == sample_by_ratio(bins, 10, random.Random(0))  # same rng state, same draw
    # bin 0 holds 1 item for a quota of 2: the missing 1 is split 0.3 : 0.5 between the
    # others by largest remainder (0.375 vs 0.625) and goes to the easy bin: 1 / 3 / 6
    got = sample_by_ratio([["h0"], bins[1], bins[2]], 10, random.Random(0))
    assert collections.Counter(i[0] for i in got) == {"h": 1, "m": 3, "e": 6}
    assert sample_by_ratio([["a"], ["b"], ["c"]], 10, random.Random(0)) == ["a", "b", "c"]
    assert sample_by_ratio([["a"], ["b"], ["c"]], 10, random.Random(0), (0, 0.5, 0.5)) == [
        "b", "c"]  # a ratio of 0 is never drawn from


@FAST
@given(st.lists(st.integers(0, 30), min_size=3, max_size=3), st.integers(0, 60),
       st.lists(st.integers(0, 10), min_size=3, max_size=3).filter(lambda w: sum(w) > 0),
       st.integers(0, 2**16))
def test_sample_by_ratio_properties(sizes, n, weights, seed):
    ratios = [w / sum(weights) for w in weights]
    bins = [[f"{b}:{i}" for i in range(size)] for b, size in enumerate(sizes)]
    got = sample_by_ratio(bins, n, random.Random(seed), ratios)
    reachable = sum(s for s, r in zip(sizes, ratios) if r > 0)
    assert len(got) == min(n, reachable) and len(set(got)) == len(got)
    counts = [sum(1 for g in got if g.startswith(f"{b}:")) for b in range(3)]
    assert all(c <= s for c, s in zip(counts, sizes))
    assert all(c == 0 for c, r in zip(counts, ratios) if r == 0)
    if all(s >= n for s in sizes):  # nobody runs short: within 1 of the exact share
        assert all(abs(c - n * r) < 1 for c, r in zip(counts, ratios))


# --- fine difficulty and buckets -------------------------------------------------------

def test_fine_difficulty_and_filter():
    assert fine_difficulty(25, 100) == 0.75 and fine_difficulty(100, 100) == 0.0
    with pytest.raises(ValueError):
        fine_difficulty(101, 100)
    d = {"e": 0.9, "too_easy": 0.04, "a": 0.05, "too_hard": 0.96, "b": 0.95, "c": 0.5,
         "c0": 0.5}
    assert list(filter_fine(d).items()) == [("a", 0.05), ("c", 0.5), ("c0", 0.5), ("e", 0.9),
                                            ("b", 0.95)]  # bounds kept; ties by id
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        filter_fine({"x": 1.2})


def test_buckets_by_hand_remainder_goes_to_the_easiest():
    d = {f"q{i}": i / 10 for i in range(1, 11)}  # q1 (0.1) easiest .. q10 (1.0) hardest
    assert make_buckets(d, 3) == [["q1", "q2", "q3", "q4"], ["q5", "q6", "q7"],
                                  ["q8", "q9", "q10"]]
    assert make_buckets({"b": 0.5, "a": 0.5, "c": 0.1}, 3) == [["c"], ["a"], ["b"]]
    with pytest.raises(ValueError, match="lower num_buckets"):
        make_buckets({"a": 0.1}, 2)


@FAST
@given(st.dictionaries(ids, grid_diffs, min_size=1, max_size=40), st.integers(1, 6),
       st.randoms(use_true_random=False))
def test_buckets_partition_in_order_with_balanced_sizes(d, k, rnd):
    if len(d) < k:
        return
    buckets = make_buckets(d, k)
    sizes = [len(b) for b in buckets]
    assert len(buckets) == k and sum(sizes) == len(d)
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    flat = [i for b in buckets for i in b]
    assert sorted(flat) == sorted(d)  # a partition of the input
    assert flat == sorted(d, key=lambda i: (d[i], i))  # consecutive, easy -> hard
    shuffled = list(d.items())
    rnd.shuffle(shuffled)
    assert make_buckets(dict(shuffled), k) == buckets  # input order does not matter


@FAST
@given(st.dictionaries(ids, grid_diffs, min_size=3, max_size=40), diffs)
def test_assign_bucket_uses_the_recorded_ranges(d, new):
    s = AdaCuRLScheduler(d)
    for i, di in d.items():
        b, got = s.bucket_of(i), s.assign_bucket(di)
        # its own bucket, or an easier one whose upper bound it sits exactly on
        assert got == b or (got < b and s.bounds[got] == di)
    b = s.assign_bucket(new)
    assert b == 0 or s.bounds[b - 1] < new
    assert b == s.num_buckets - 1 or new <= s.bounds[b]


def test_add_items_lands_in_the_right_bucket_and_active_ones_train_at_once():
    s = AdaCuRLScheduler({f"q{i}": i / 10 for i in range(1, 10)})  # bounds 0.3, 0.6, 0.9
    assert s.bounds == [0.3, 0.6, 0.9]
    assert s.add_items({"easy": 0.25, "mid": 0.45, "edge": 0.6, "hard": 0.99}) == {
        "easy": 0, "mid": 1, "edge": 1, "hard": 2}
    assert "easy" in s.active_items() and "mid" not in s.active_items()
    assert s.is_active("easy") and not s.is_active("hard") and not s.is_active("nope")
    assert s.add_items({"easy": 0.9}) == {"easy": 0}  # idempotent: keeps its bucket
    s.observe(0, {0: [1.0] * 4})  # cs 0 -> 0.5 >= 1/3: B_1 merged
    assert s.n_active == 2 and "mid" in s.active_items() and "hard" not in s.active_items()


# --- capability score --------------------------------------------------------------------

def test_capability_update_by_hand():
    # cs + (r - 0.5) * max(1 - cs, 0.5)
    assert capability_update(0.0, 1.0) == 0.5  # 0 + 0.5 * 1
    assert capability_update(0.5, 1.0) == 0.75  # 0.5 + 0.5 * 0.5
    assert capability_update(0.75, 1.0) == 1.0  # 0.75 + 0.5 * max(0.25, 0.5): γ floor
    assert capability_update(0.25, 0.75) == 0.4375  # 0.25 + 0.25 * 0.75
    assert capability_update(0.25, 0.5) == 0.25  # r = 0.5 never moves cs
    assert capability_update(0.0, 0.0) == -0.5  # the paper's update, unclamped
    assert capability_update(-0.5, 0.0) == -1.25  # 1.5 * cs - 0.5: diverges
    assert capability_update(0.0, 0.0, floor=0.0) == 0.0  # teachloop's default floor
    assert capability_update(0.5, 0.25, gamma=0.8) == 0.3  # 0.5 - 0.25 * max(0.5, 0.8)


def test_capability_window_keeps_the_last_m_and_waits_for_min_samples():
    c = CapabilityScore(window=4, min_samples=3)
    assert c.observe([1.0, 1.0]) is None and c.value == 0.0  # 2 < min_samples
    assert c.observe([0.0]) == pytest.approx(2 / 3)  # window [1, 1, 0]
    assert c.observe([0.0, 0.0]) == 0.25  # window keeps the last 4: [1, 0, 0, 0]
    v = c.value
    assert c.observe([]) is None and c.value == v  # no new evidence, no update
    with pytest.raises(ValueError):
        c.observe([1.5])


# --- the scheduler ---------------------------------------------------------------------

ITEMS = {f"q{i}": i / 10 for i in range(1, 10)}  # K = 3: B_0 = q1..q3, B_1 = q4..q6, B_2 ..


def test_index_convention_thresholds():
    s = AdaCuRLScheduler(ITEMS)
    assert (s.n_active, s.newest, s.cs, s.next_threshold()) == (1, 0, 0.0, 1 / 3)
    assert s.active_items() == ["q1", "q2", "q3"]
    four = AdaCuRLScheduler({f"q{i}": i / 10 for i in range(1, 9)},
                            AdaCuRLConfig(num_buckets=4))
    thresholds = []
    for step in range(50):
        thresholds.append(four.next_threshold())
        four.observe(step, {four.newest: [1.0]})
    assert sorted(set(thresholds) - {None}) == [0.25, 0.5, 0.75]  # k/K for k = 1, 2, 3
    assert [e.reset_to for e in four.merges] == [0.25, 0.5, 0.75]


def test_acceptance_rising_accuracy_merges_at_the_predicted_steps():
    """K = 3, γ = 0.5, window M = 8, 4 newest-bucket rewards per step (r̄ spans 2 steps).

    Thresholds: merge B_1 when cs >= 1/3, B_2 when cs >= 2/3. Update:
    cs <- cs + (r̄ - 0.5) * max(1 - cs, 0.5).

    step newest  rewards    window (last 8)      r̄     cs
     0   B_0     0 1 0 1    0101                 1/2   0 + 0 * 1                 = 0
     1   B_0     1 1 0 1    0101 1101            5/8   0 + 1/8 * 1               = 1/8
     2   B_0     1 1 1 1    1101 1111            7/8   1/8 + 3/8 * 7/8 = 29/64   = 0.453
         29/64 >= 1/3: MERGE B_1 at step 2; cs <- 1/3, window cleared
     3   B_1     0 0 1 0    0010                 1/4   1/3 - 1/4 * 2/3           = 1/6
     4   B_1     1 0 1 0    0010 1010            3/8   1/6 - 1/8 * 5/6 = 1/6 - 5/48 = 1/16
     5   B_1     1 1 1 1    1010 1111            3/4   1/16 + 1/4 * 15/16        = 19/64
     6   B_1     1 1 1 1    1111 1111            1     19/64 + 1/2 * 45/64       = 83/128
         83/128 = 0.648 < 2/3: no merge yet
     7   B_1     1 1 1 1    1111 1111            1     83/128 + 1/2 * max(45/128, 1/2)
                                                       = 83/128 + 32/128         = 115/128
         115/128 = 0.898 >= 2/3: MERGE B_2 at step 7; cs <- 2/3, window cleared
     8   B_2     1 1 1 1    1111                 1     2/3 + 1/2 * 1/2           = 11/12
         every bucket merged: no more events

    B_0 rewards of 1.0 are sent on every step after step 2; if they counted, B_2 would be
    merged at step 3 (cs = 1/3 + 1/2 * 2/3 = 2/3).
    """
    stream = [[0, 1, 0, 1], [1, 1, 0, 1], [1, 1, 1, 1], [0, 0, 1, 0], [1, 0, 1, 0],
              [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    expected_cs = [0, 1 / 8, 1 / 3, 1 / 6, 1 / 16, 19 / 64, 83 / 128, 2 / 3, 11 / 12]
    s = AdaCuRLScheduler(ITEMS, AdaCuRLConfig(window=8))
    merged_at = {}
    for step, rewards in enumerate(stream):
        noise = {0: [1.0] * 4} if s.newest > 0 else {}
        events = s.observe(step, {**noise, s.newest: rewards})
        merged_at.update({e.bucket: e.step for e in events})
        assert s.cs == pytest.approx(expected_cs[step], abs=1e-12), step
    assert merged_at == {1: 2, 2: 7}
    assert [(e.cs, e.reset_to) for e in s.merges] == [
        (29 / 64, pytest.approx(1 / 3)), (115 / 128, pytest.approx(2 / 3))]
    assert s.all_merged and s.next_threshold() is None
    assert s.active_items() == [f"q{i}" for i in range(1, 10)]  # merged buckets stay


def test_acceptance_default_window_and_a_threshold_hit_exactly():
    """Default config (M = 512), 64 newest-bucket rewards per step.

    steps 0-3: accuracy 1/2, r̄ = 1/2, cs stays 0.
    step 4: 64 ones: window 320 = 256 rewards at 1/2 (128 ones) + 64 ones, r̄ = 192/320 = 3/5,
            cs = 0 + 1/10 * 1 = 1/10
    step 5: window 384, ones 256, r̄ = 2/3, cs = 1/10 + 1/6 * 9/10 = 1/4
    step 6: window 448, ones 320, r̄ = 5/7, cs = 1/4 + 3/14 * 3/4 = 1/4 + 9/56 = 23/56 = 0.41
            >= 1/3: MERGE B_1 at step 6; cs <- 1/3, window cleared
    step 7: B_1 all ones, r̄ = 1, cs = 1/3 + 1/2 * 2/3 = 2/3 exactly: MERGE B_2 at step 7
            (in floats 2/3 may round either side; the scheduler allows 1e-12 of slack)
    """
    s = AdaCuRLScheduler(ITEMS)
    half = [0.0, 1.0] * 32
    stream = [half] * 4 + [[1.0] * 64] * 4
    merged_at, cs = {}, []
    for step, rewards in enumerate(stream):
        merged_at.update({e.bucket: e.step for e in s.observe(step, {s.newest: rewards})})
        cs.append(s.cs)
    assert merged_at == {1: 6, 2: 7}
    assert cs[:6] == pytest.approx([0, 0, 0, 0, 1 / 10, 1 / 4], abs=1e-12)
    assert s.merges[0].cs == pytest.approx(23 / 56)


def test_a_threshold_met_in_exact_arithmetic_merges_despite_float_rounding():
    # K = 5, r̄ = 7/10: cs = 0 + (0.7 - 0.5) * 1 = 1/5 exactly, but 0.7 - 0.5 is
    # 0.19999999999999996 in floats, just under the threshold 0.2
    s = AdaCuRLScheduler({f"q{i}": i / 10 for i in range(1, 11)}, AdaCuRLConfig(num_buckets=5))
    events = s.observe(0, {0: [1.0] * 7 + [0.0] * 3})
    assert s.merges[0].cs < 0.2 and [e.bucket for e in events] == [1]


def test_window_is_cleared_at_a_merge_and_early_batches_do_not_move_cs():
    s = AdaCuRLScheduler(ITEMS)
    s.observe(0, {0: [1.0] * 10})
    assert s.n_active == 2 and len(s.capability.window) == 0 and s.cs == pytest.approx(1 / 3)
    # a batch drawn before the merge (only B_0 rewards) reaches the trainer: cs must not move
    s.observe(1, {0: [0.0] * 10})
    assert s.cs == pytest.approx(1 / 3) and len(s.capability.window) == 0


def test_cs_floor_and_paper_mode():
    low = [0.0] * 8
    clamped = AdaCuRLScheduler(ITEMS)
    paper = AdaCuRLScheduler(ITEMS, AdaCuRLConfig(cs_floor=None))
    for step in range(3):
        clamped.observe(step, {0: low})
        paper.observe(step, {0: low})
    assert clamped.cs == 0.0
    assert paper.cs == -2.375  # -0.5 -> -1.25 -> 1.5 * -1.25 - 0.5


def test_format_reward_switches_off_after_t_f():
    s = AdaCuRLScheduler(ITEMS)
    assert all(s.format_reward_active(t) for t in range(64))
    assert not s.format_reward_active(64) and not s.format_reward_active(1000)


def test_observe_guards():
    with pytest.raises(ValueError, match="no buckets"):
        AdaCuRLScheduler().observe(0, {0: [1.0]})
    s = AdaCuRLScheduler(ITEMS)
    s.observe(3, {0: [0.5]})
    with pytest.raises(ValueError, match="once per optimisation step"):
        s.observe(3, {0: [0.5]})
    assert s.observe(5, {7: [1.0]}) == [] and s.cs == 0.0  # unknown buckets are ignored


def test_re_adacurl_drops_easy_items_and_restarts():
    s = AdaCuRLScheduler(ITEMS)
    for step in range(3):
        s.observe(step, {s.newest: [1.0] * 4})
    assert s.all_merged
    new = {f"q{i}": d for i, d in zip(range(1, 10), [0.0, 0.1, 0.19, 0.2, 0.3, 0.5, 0.6,
                                                     0.8, 0.9])}
    assert s.re_bucket(new) == ["q1", "q2", "q3"]
    assert s.buckets == [["q4", "q5"], ["q6", "q7"], ["q8", "q9"]]
    assert (s.n_active, s.cs, len(s.capability.window), s.round) == (1, 0.0, 0, 1)
    assert s.last_step == 2 and len(s.merges) == 2  # history and step counter kept
    assert s.observe(3, {0: [1.0]})[0] == MergeEvent(3, 1, 0.5, 1 / 3)


def test_config_fields_have_help_and_cross_checks_say_what_to_set():
    assert all(f.metadata.get("help") for f in dataclasses.fields(AdaCuRLConfig))
    for kw, needle in (({"min_samples": 600}, "set min_samples <= window"),
                       ({"coarse_ratios": [0.5, 0.5, 0.5]}, "e.g. \\[0.2, 0.3, 0.5\\]"),
                       ({"re_drop_below": 0.96}, "lower re_drop_below"),
                       ({"cs_floor": 0.1}, "set 0"),
                       ({"fine_low": 0.9, "fine_high": 0.5}, "fine_low < adacurl.fine_high")):
        with pytest.raises(ValueError, match=needle):
            AdaCuRLConfig(**kw)


# --- checkpointing -------------------------------------------------------------------------

steps = st.lists(st.tuples(st.lists(st.sampled_from([0.0, 0.25, 1.0, 1.0]), max_size=6),
                           st.lists(st.sampled_from([0.0, 1.0]), max_size=3),
                           st.one_of(st.none(), st.tuples(ids, diffs))),
                 min_size=1, max_size=30)


def drive(s: AdaCuRLScheduler, script, start: int) -> list:
    out = []
    for n, (newest, other, new_item) in enumerate(script):
        step = start + n
        if new_item is not None:
            out.append(s.add_items({"n" + new_item[0]: new_item[1]}))
        out.append(s.observe(step, {s.newest: newest, 0: other}))
        out.append((s.cs, s.n_active, s.active_items()))
    return out


@FAST
@given(steps, st.data())
def test_resume_mid_stream_equals_an_uninterrupted_run(script, data):
    cfg = AdaCuRLConfig(window=5)
    split = data.draw(st.integers(0, len(script)))
    whole = AdaCuRLScheduler(ITEMS, cfg)
    expected = drive(whole, script, 0)
    first = AdaCuRLScheduler(ITEMS, cfg)
    got = drive(first, script[:split], 0)
    state = json.loads(json.dumps(first.state_dict()))
    assert state == first.state_dict()  # JSON-serialisable, exactly
    resumed = AdaCuRLScheduler.from_state_dict(state)
    assert resumed.state_dict() == first.state_dict()
    got += drive(resumed, script[split:], split)
    assert got == expected and resumed.state_dict() == whole.state_dict()


def test_load_refuses_a_different_config():
    s = AdaCuRLScheduler(ITEMS)
    with pytest.raises(ValueError, match="different config"):
        AdaCuRLScheduler(config=AdaCuRLConfig(window=8)).load_state_dict(s.state_dict())
