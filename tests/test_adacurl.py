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
    coarse_correct,
    coarse_select,
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
    s = AdaCuRLScheduler({f"q{i}": i / 10 for i in range(1, 10)},
                         AdaCuRLConfig(window=4))  # bounds 0.3, 0.6, 0.9
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


def test_capability_score_updates_once_per_m_rewards_acceptance():
    """Acceptance (issue 16): γ = 0.5, M = 512, 8 accuracy rewards of 1.0 per call: cs stays
    0 for 63 calls (504 rewards) and the 64th call (the 512th reward) moves it to
    0 + (1 − 0.5)·max(1 − 0, 0.5) = 0.5."""
    c = CapabilityScore(gamma=0.5, window=512)
    for call in range(63):
        assert c.observe([1.0] * 8) == [] and c.value == 0.0, call
    assert c.observe([1.0] * 8) == [1.0] and c.value == 0.5
    assert c.buffer == []  # emptied after the update


def test_capability_buffer_splits_a_call_and_is_not_a_sliding_window():
    c = CapabilityScore(window=4)
    assert c.observe([1.0, 1.0, 1.0]) == [] and c.value == 0.0  # 3 < M: no update
    # the 4th reward completes the buffer; the 5th and 6th start the next one
    assert c.observe([0.0, 0.0, 0.0]) == [0.75] and c.value == pytest.approx(0.25)
    assert c.buffer == [0.0, 0.0] and c.mean() == 0.0
    # a sliding window would now read [1, 0, 0, 0]...; R_b only updates when full again
    assert c.observe([1.0]) == [] and c.value == pytest.approx(0.25)
    # [0, 0, 1] + 3 ones: one update at r̄ = 1/2 (cs stays), two ones start the next buffer
    assert c.observe([1.0] * 3) == [0.5] and c.buffer == [1.0] * 2
    assert c.value == pytest.approx(0.25)
    # a call longer than M makes several updates: [1, 1] + 6 ones = two full buffers
    assert c.observe([1.0] * 6) == [1.0, 1.0] and c.buffer == []
    assert c.value == pytest.approx(0.625 + 0.5 * 0.5)  # 0.25 + 0.5·0.75, then γ floor
    with pytest.raises(ValueError):
        c.observe([1.5])


# --- the scheduler ---------------------------------------------------------------------

ITEMS = {f"q{i}": i / 10 for i in range(1, 10)}  # K = 3: B_0 = q1..q3, B_1 = q4..q6, B_2 ..


def test_index_convention_thresholds():
    s = AdaCuRLScheduler(ITEMS)
    assert (s.n_active, s.newest, s.cs, s.next_threshold()) == (1, 0, 0.0, 1 / 3)
    assert s.active_items() == ["q1", "q2", "q3"]
    four = AdaCuRLScheduler({f"q{i}": i / 10 for i in range(1, 9)},
                            AdaCuRLConfig(num_buckets=4, window=1))
    thresholds = []
    for step in range(50):
        thresholds.append(four.next_threshold())
        four.observe(step, {four.newest: [1.0]})
    assert sorted(set(thresholds) - {None}) == [0.25, 0.5, 0.75]  # k/K for k = 1, 2, 3
    assert [e.reset_to for e in four.merges] == [0.25, 0.5, 0.75]


def test_acceptance_rising_accuracy_merges_at_the_predicted_steps():
    """K = 3, γ = 0.5, M = 8, 4 newest-bucket rewards per step: cs moves every 2nd step.

    Thresholds: merge B_1 when cs >= 1/3, B_2 when cs >= 2/3. Update once per full buffer:
    cs <- cs + (r̄ - 0.5) * max(1 - cs, 0.5).

    step newest  rewards    R_b after            r̄     cs
     0   B_0     0 1 0 1    0101                 -     0
     1   B_0     1 1 0 1    full -> update       5/8   0 + 1/8 * 1               = 1/8
     2   B_0     1 1 1 1    1111                 -     1/8
     3   B_0     1 1 1 1    full -> update       1     1/8 + 1/2 * 7/8 = 9/16    = 0.5625
         9/16 >= 1/3: MERGE B_1 at step 3; cs <- 1/3, R_b emptied
     4   B_1     0 0 1 0    0010                 -     1/3
     5   B_1     1 0 1 0    full -> update       3/8   1/3 - 1/8 * 2/3 = 1/4
     6   B_1     1 1 1 1    1111                 -     1/4
     7   B_1     1 1 1 1    full -> update       1     1/4 + 1/2 * 3/4           = 5/8
         5/8 < 2/3: no merge yet
     8   B_1     1 1 1 1    1111                 -     5/8
     9   B_1     1 1 1 1    full -> update       1     5/8 + 1/2 * max(3/8, 1/2) = 7/8
         7/8 >= 2/3: MERGE B_2 at step 9; cs <- 2/3

    B_0 rewards of 0.0 are sent on every step after the first merge; if they counted, cs
    would fall instead of rise.
    """
    ones = [1, 1, 1, 1]
    stream = [[0, 1, 0, 1], [1, 1, 0, 1], ones, ones, [0, 0, 1, 0], [1, 0, 1, 0],
              ones, ones, ones, ones]
    expected_cs = [0, 1 / 8, 1 / 8, 1 / 3, 1 / 3, 1 / 4, 1 / 4, 5 / 8, 5 / 8, 2 / 3]
    s = AdaCuRLScheduler(ITEMS, AdaCuRLConfig(window=8))
    merged_at = {}
    for step, rewards in enumerate(stream):
        noise = {0: [0.0] * 4} if s.newest > 0 else {}
        events = s.observe(step, {**noise, s.newest: rewards})
        merged_at.update({e.bucket: e.step for e in events})
        assert s.cs == pytest.approx(expected_cs[step], abs=1e-12), step
    assert merged_at == {1: 3, 2: 9}
    assert [(e.cs, e.reset_to) for e in s.merges] == [
        (9 / 16, pytest.approx(1 / 3)), (7 / 8, pytest.approx(2 / 3))]
    assert s.all_merged and s.next_threshold() is None
    assert s.active_items() == [f"q{i}" for i in range(1, 10)]  # merged buckets stay


def _groups(n_groups: int, correct: int, G: int = 8) -> list[float]:
    """n_groups GRPO groups of G binary accuracy rewards, ``correct`` of each group right."""
    return ([1.0] * correct + [0.0] * (G - correct)) * n_groups


def test_acceptance_paper_scale_buffer_of_512():
    """Paper scale: K = 3, M = 512, G = 8, 5 groups (40 rewards) per step, 7 of 8 right.

    Rewards after step s (0-based): 40(s+1). The 512th newest-bucket reward arrives at step
    12 (520 >= 512), so cs is 0 for steps 0..11.
      step 12: r̄ = 7/8, cs = 0 + 3/8 * 1 = 3/8 >= 1/3: MERGE B_1; cs <- 1/3. The other 8
               B_0 rewards of step 12 are discarded (R_b starts empty for B_1).
      B_1 from step 13: 13 steps = 520 rewards, the 512th at step 25:
      step 25: r̄ = 7/8, cs = 1/3 + 3/8 * 2/3 = 7/12 < 2/3; 8 rewards stay in R_b
      next 504 rewards: 13 more steps (8 + 520 >= 512) -> step 38:
      step 38: r̄ = 7/8, cs = 7/12 + 3/8 * max(5/12, 1/2) = 37/48 >= 2/3: MERGE B_2
    Older buckets get all-wrong rewards every step; they never enter R_b.
    """
    s = AdaCuRLScheduler(ITEMS, AdaCuRLConfig(num_buckets=3, window=512))
    cs, merged_at = [], {}
    for step in range(40):
        by_bucket = {b: _groups(2, 0) for b in range(s.newest)}
        by_bucket[s.newest] = _groups(5, 7)
        merged_at.update({e.bucket: e.step for e in s.observe(step, by_bucket)})
        cs.append(s.cs)
    assert cs[:12] == [0.0] * 12  # no move before 512 newest-bucket rewards
    assert merged_at == {1: 12, 2: 38}
    assert [e.cs for e in s.merges] == pytest.approx([3 / 8, 37 / 48])
    assert cs[25] == pytest.approx(7 / 12) and cs[24] == pytest.approx(1 / 3)
    assert cs[39] == pytest.approx(2 / 3)  # B_2's buffer is not full yet


def test_a_threshold_met_in_exact_arithmetic_merges_despite_float_rounding():
    # K = 5, r̄ = 7/10: cs = 0 + (0.7 - 0.5) * 1 = 1/5 exactly, but 0.7 - 0.5 is
    # 0.19999999999999996 in floats, just under the threshold 0.2
    s = AdaCuRLScheduler({f"q{i}": i / 10 for i in range(1, 11)},
                         AdaCuRLConfig(num_buckets=5, window=10))
    events = s.observe(0, {0: [1.0] * 7 + [0.0] * 3})
    assert s.merges[0].cs < 0.2 and [e.bucket for e in events] == [1]


def test_buffer_is_emptied_at_a_merge_and_early_batches_do_not_move_cs():
    s = AdaCuRLScheduler(ITEMS, AdaCuRLConfig(window=4))
    s.observe(0, {0: [1.0] * 10})  # the 4th reward merges B_1; the other 6 are discarded
    assert s.n_active == 2 and s.capability.buffer == [] and s.cs == pytest.approx(1 / 3)
    # a batch drawn before the merge (only B_0 rewards) reaches the trainer: cs must not move
    s.observe(1, {0: [0.0] * 10})
    assert s.cs == pytest.approx(1 / 3) and s.capability.buffer == []


def test_cs_floor_and_paper_mode():
    low = [0.0] * 8
    clamped = AdaCuRLScheduler(ITEMS, AdaCuRLConfig(window=8))
    paper = AdaCuRLScheduler(ITEMS, AdaCuRLConfig(window=8, cs_floor=None))
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
    s = AdaCuRLScheduler(ITEMS, AdaCuRLConfig(window=4))
    for step in range(3):
        s.observe(step, {s.newest: [1.0] * 4})
    assert s.all_merged
    new = {f"q{i}": d for i, d in zip(range(1, 10), [0.0, 0.1, 0.19, 0.2, 0.3, 0.5, 0.6,
                                                     0.8, 0.9])}
    assert s.re_bucket(new) == ["q1", "q2", "q3"]
    assert s.buckets == [["q4", "q5"], ["q6", "q7"], ["q8", "q9"]]
    assert (s.n_active, s.cs, len(s.capability.buffer), s.round) == (1, 0.0, 0, 1)
    assert s.last_step == 2 and len(s.merges) == 2  # history and step counter kept
    assert s.observe(3, {0: [1.0] * 4})[0] == MergeEvent(3, 1, 0.5, 1 / 3)


def test_config_fields_have_help_and_cross_checks_say_what_to_set():
    assert all(f.metadata.get("help") for f in dataclasses.fields(AdaCuRLConfig))
    for kw, needle in (({"window": 0}, "window must be >= 1"),
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


def test_coarse_stage_bins_probe_stats_and_draws_at_the_ratios():
    assert [coarse_correct(c, 5) for c in range(6)] == list(range(6))  # exact with 5 attempts
    # M = 8 probes scaled to 5, rounded half up: 0/8 -> 0, 3/8 -> 1.875 -> 2, 4/8 -> 2.5 -> 3
    assert [coarse_correct(c, 8) for c in (0, 1, 3, 4, 7, 8)] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        coarse_correct(3, 2)
    counts = {f"h{i}": 0 for i in range(10)} | {f"m{i}": 3 for i in range(10)} | {
        f"e{i}": 5 for i in range(10)}
    chosen = coarse_select(counts, 10, random.Random(0))
    assert collections.Counter(i[0] for i in chosen) == {"h": 2, "m": 3, "e": 5}  # 0.2/0.3/0.5
    assert chosen == coarse_select(counts, 10, random.Random(0))  # seeded
    with pytest.raises(ValueError, match="re_passes"):
        AdaCuRLConfig(re_passes=-1)
