"""VCRL scoring, κ schedule, memory bank and batch selection.  pytest tests/test_vcrl.py -q"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teachloop.curriculum.vcrl import (
    MemoryBank,
    VCRLConfig,
    VCRLState,
    describe_keeps,
    kept_counts,
    max_unbiased_variance,
    select_batch,
    variance_score,
)

FAST = settings(max_examples=60, deadline=None)


def binary(k: int, g: int) -> list[float]:
    return [1.0] * k + [0.0] * (g - k)


# --- variance_score ------------------------------------------------------------------

@pytest.mark.parametrize("g", range(2, 65))
def test_binary_score_is_unbiased_variance_over_its_maximum(g):
    direct = [statistics.variance(binary(k, g)) for k in range(g + 1)]
    # σ²_max from METHODS §2 is the largest unbiased variance a binary group can have
    assert math.isclose(max(direct), max_unbiased_variance(g), rel_tol=1e-12)
    for k in range(g + 1):
        p = variance_score(binary(k, g))
        assert math.isclose(p, direct[k] / max_unbiased_variance(g), rel_tol=1e-12, abs_tol=0)
        assert p == variance_score(binary(g - k, g))  # symmetric in k <-> G-k
        assert 0.0 <= p <= 1.0
        if g % 2 == 0:
            assert p == 4 * k * (g - k) / g**2
    assert variance_score(binary(g // 2, g)) == 1.0  # exactly, for even and odd G
    assert variance_score(binary((g + 1) // 2, g)) == 1.0
    assert variance_score(binary(0, g)) == 0.0 == variance_score(binary(g, g))


@FAST
@given(st.integers(2, 64).flatmap(lambda g: st.permutations(binary(g // 3, g))))
def test_binary_score_ignores_order(rewards):
    assert variance_score(rewards) == variance_score(sorted(rewards))


def test_small_groups_score_zero_and_bad_rewards_raise():
    assert variance_score([]) == 0.0
    assert variance_score([1.0]) == 0.0
    assert variance_score([0.4]) == 0.0
    for bad in ([0.0, 1.5], [-0.1, 0.0], [0.0, float("nan")], [float("inf"), 0.0], [2.0]):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            variance_score(bad)


def test_binary_examples_by_hand():
    assert variance_score([1, 0]) == 1.0  # G=2, k=1: 4*1*1/2^2
    assert variance_score([1, 0, 0, 0]) == 0.75  # G=4, k=1: 4*1*3/4^2 = 12/16
    assert variance_score([1, 0, 0]) == 1.0  # G=3, k=1: 4*1*2/(3^2-1) = 8/8
    assert variance_score([True, False, False, False, False]) == 16 / 24  # G=5: 4*1*4/24


unit = st.floats(0.0, 1.0, allow_nan=False)


@FAST
@given(st.lists(unit, min_size=2, max_size=64).filter(lambda xs: any(0 < x < 1 for x in xs)))
def test_continuous_score_is_clipped_variance_over_a_quarter(rewards):
    p = variance_score(rewards)
    assert p == min(1.0, statistics.variance(rewards) / 0.25)
    assert 0.0 <= p <= 1.0


def test_continuous_examples():
    assert variance_score([0.2, 0.4]) == pytest.approx(0.02 / 0.25)
    assert variance_score([0.3] * 6) == 0.0  # all equal
    assert variance_score([0.0, 1.0, 0.9]) == 1.0  # variance 0.303 > 0.25: clipped
    assert variance_score([0.0, 0.5, 1.0]) == 1.0  # variance exactly 0.25


# --- config and κ ----------------------------------------------------------------------

def test_kappa_schedule():
    c = VCRLConfig()
    assert [c.kappa_at(s) for s in range(20)] == [0.3] * 20
    assert [c.kappa_at(s) for s in (20, 21, 1000)] == [0.8] * 3
    assert VCRLConfig(warmup_steps=0).kappa_at(0) == 0.8
    with pytest.raises(ValueError):
        c.kappa_at(-1)


def test_config_fields_have_help_and_cross_checks_say_what_to_set():
    assert all(f.metadata.get("help") for f in dataclasses.fields(VCRLConfig))
    with pytest.raises(ValueError, match="set kappa_warmup <= kappa"):
        VCRLConfig(kappa_warmup=0.9, kappa=0.5)
    VCRLConfig(kappa_warmup=0.9, kappa=0.5, warmup_steps=0)  # no warm-up: allowed
    with pytest.raises(ValueError, match="bank_capacity=0"):
        VCRLConfig(replay_limit=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        VCRLConfig(alpha=1.5)


# --- memory bank ---------------------------------------------------------------------

def test_priority_update_formula():
    b = MemoryBank(capacity=4, alpha=0.9)
    assert b.add("a", 0.6) and b.priority("a") == 0.6 and b.beta("a") == 0.6
    b.add("a", 0.2)
    assert b.priority("a") == pytest.approx(0.9 * 0.6 + 0.1 * 0.2) and b.beta("a") == 0.2
    b.add("a", 1.0)
    assert b.priority("a") == pytest.approx(0.9 * (0.9 * 0.6 + 0.1 * 0.2) + 0.1 * 1.0)
    assert not b.update("zz", 0.5) and "zz" not in b


def test_eviction_removes_lowest_priority_and_ties_go_by_insertion():
    b = MemoryBank(capacity=3)
    for i, p in (("a", 0.9), ("b", 0.5), ("c", 0.7)):
        b.add(i, p)
    assert b.add("d", 0.8) and "b" not in b  # lowest (0.5) evicted
    assert not b.add("e", 0.1) and len(b) == 3  # the newcomer is the lowest: evicted at once
    t = MemoryBank(capacity=2)
    t.add("x", 0.5), t.add("y", 0.5)
    assert t.ids() == ["x", "y"]  # equal priority: earlier insertion ranks higher
    t.add("z", 0.5)
    assert t.ids() == ["x", "y"]  # ... and the newest equal one is evicted


def test_replay_limit_two_then_the_query_leaves_for_good():
    b = MemoryBank(capacity=8, replay_limit=2)
    b.add("a", 1.0), b.add("b", 0.9)
    assert b.pop(1) == ["a"] and "a" in b and b.replays("a") == 1
    assert b.pop(1) == ["a"] and "a" not in b and b.replays("a") == 2
    assert not b.add("a", 1.0)  # used up: never admitted again
    assert b.pop(5) == ["b"] and b.pop(5) == ["b"] and b.pop(5) == [] and len(b) == 0


def test_pop_order_exclude_and_disabled_bank():
    b = MemoryBank(capacity=8)
    for i, p in enumerate([0.1, 0.9, 0.5, 0.7]):
        b.add(i, p)
    assert b.pop(3, exclude={1}) == [3, 2, 0]
    assert b.pop(0) == []
    off = MemoryBank(capacity=0)
    assert not off.add("a", 1.0) and off.pop(3) == []


class RefBank:
    """A deliberately naive model of the bank's contract, to compare against."""

    def __init__(self, cap, alpha, limit):
        self.cap, self.alpha, self.limit = cap, alpha, limit
        self.rows: list[list] = []  # [id, priority, seq]
        self.replayed: dict = {}
        self.seq = 0

    def ordered(self):
        return sorted(self.rows, key=lambda r: (-r[1], r[2]))

    def add(self, i, p):
        for r in self.rows:
            if r[0] == i:
                r[1] = self.alpha * r[1] + (1 - self.alpha) * p
                return
        if self.cap == 0 or self.replayed.get(i, 0) >= self.limit:
            return
        self.rows.append([i, float(p), self.seq])
        self.seq += 1
        if len(self.rows) > self.cap:
            self.rows.remove(self.ordered()[-1])

    def pop(self, n):
        out = [r[0] for r in self.ordered()[:n]]
        for i in out:
            self.replayed[i] = self.replayed.get(i, 0) + 1
            if self.replayed[i] >= self.limit:
                self.rows = [r for r in self.rows if r[0] != i]
        return out


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from("abcdefghij"), st.sampled_from(
            [0.0, 0.25, 0.5, 0.75, 1.0, 0.3, 0.9])),
        st.tuples(st.just("pop"), st.integers(0, 4), st.just(None)),
    ),
    max_size=60,
)


def apply(bank, op):
    kind, a, p = op
    return bank.add(a, p) if kind == "add" else bank.pop(a)


@FAST
@given(ops, st.integers(0, 5), st.sampled_from([0.0, 0.5, 0.9]), st.integers(1, 3))
def test_bank_matches_its_reference_model(seq, cap, alpha, limit):
    bank, ref = MemoryBank(cap, alpha, limit), RefBank(cap, alpha, limit)
    for op in seq:
        got = apply(bank, op)
        want = ref.pop(op[1]) if op[0] == "pop" else ref.add(op[1], op[2])
        if op[0] == "pop":
            assert got == want and len(set(got)) == len(got)
        assert len(bank) <= cap
        assert bank.ids() == [r[0] for r in ref.ordered()]
        assert all(math.isclose(bank.priority(r[0]), r[1]) for r in ref.rows)
        assert all(bank.replays(i) <= limit for i in "abcdefghij")


@FAST
@given(ops, ops, st.integers(1, 5))
def test_bank_state_round_trips_exactly_through_json(before, after, cap):
    bank = MemoryBank(cap, 0.9, 2)
    for op in before:
        apply(bank, op)
    state = json.loads(json.dumps(bank.state_dict()))
    assert state == bank.state_dict()
    copy = MemoryBank()
    copy.load_state_dict(state)
    assert copy.state_dict() == bank.state_dict()
    for op in after:
        assert apply(copy, op) == apply(bank, op)
    assert copy.state_dict() == bank.state_dict()


# --- select_batch --------------------------------------------------------------------

def test_refill_never_repeats_a_batch_id():
    bank = MemoryBank(capacity=10)
    bank.add("old1", 0.9), bank.add("old2", 0.8)
    groups = {"q_half": binary(4, 8), "q_one": binary(1, 8), "q_none": binary(0, 8)}
    kept, dropped, refill = select_batch(groups, 0, bank)
    assert kept == ["q_half", "q_one"] and dropped == ["q_none"]
    assert refill == ["old1"]  # q_half ranks higher (P = 1) but is already in the batch
    assert "q_half" in bank and "q_one" in bank and "q_none" not in bank
    kept, dropped, refill = select_batch({"q_one": binary(0, 8)}, 20, bank)
    assert kept == [] and dropped == ["q_one"] and refill == ["q_half"]
    # dropped but already banked: its priority still follows its latest p
    assert bank.beta("q_one") == 0.0 and bank.priority("q_one") == pytest.approx(0.9 * 0.4375)


def test_a_score_equal_to_kappa_is_kept():
    cfg = VCRLConfig(kappa=0.75, warmup_steps=0)
    kept, dropped, _ = select_batch({"a": [1, 0, 0, 0], "b": [1, 1, 1, 1]}, 0, MemoryBank(), cfg)
    assert (kept, dropped) == (["a"], ["b"])  # p = 0.75 is not below κ = 0.75


@FAST
@given(
    st.dictionaries(st.text("abcdef", min_size=1, max_size=3),
                    st.integers(0, 8).map(lambda k: binary(k, 8)), min_size=1, max_size=12),
    st.integers(0, 40),
    st.lists(st.tuples(st.text("uvwxyz", min_size=1, max_size=3), unit), max_size=20),
)
def test_select_batch_partitions_and_keeps_the_batch_full(groups, step, banked):
    bank = MemoryBank(capacity=64)
    for i, p in banked:
        bank.add(i, p)
    spare = len(bank)  # bank ids never collide with batch ids here (other alphabet)
    kept, dropped, refill = select_batch(groups, step, bank)
    kappa = VCRLConfig().kappa_at(step)
    assert set(kept) | set(dropped) == set(groups) and not set(kept) & set(dropped)
    assert all(variance_score(groups[i]) >= kappa for i in kept)
    assert all(variance_score(groups[i]) < kappa for i in dropped)
    assert not set(refill) & set(groups) and len(set(refill)) == len(refill)
    assert len(refill) == min(len(dropped), spare)
    if spare >= len(dropped):
        assert len(kept) + len(refill) == len(groups)  # the batch stays full


# --- VCRLState ---------------------------------------------------------------------

def random_groups(rng, step):
    return {f"s{step}_{j}": binary(rng.randint(0, 8), 8) for j in range(6)}


def test_state_resume_equals_an_uninterrupted_run():
    import random

    def run(split):
        rng, state, out = random.Random(7), VCRLState(), []
        for step in range(40):
            if step == split:
                saved = json.loads(json.dumps(state.state_dict()))
                state = VCRLState()
                state.load_state_dict(saved)
            out.append(state.select(random_groups(rng, step)))
        return out, state.state_dict()

    base = run(split=-1)
    assert run(split=13) == base and run(split=25) == base
    assert base[1]["step"] == 40 and base[1]["bank"]["entries"]


def test_state_logs_and_refuses_a_different_config():
    s = VCRLState()
    s.select({"a": binary(4, 8), "b": binary(0, 8)})
    log = s.log_dict()
    assert log["vcrl/kappa"] == 0.3 and log["vcrl/bank_size"] == 1.0
    assert log["vcrl/frac_dropped"] == 0.5
    with pytest.raises(ValueError, match="different config"):
        VCRLState(VCRLConfig(kappa=0.9)).load_state_dict(s.state_dict())


def test_curriculum_modules_stay_pure_python():
    code = ("import sys, teachloop.curriculum.vcrl, teachloop.curriculum.adacurl; "
            "bad = [m for m in ('torch', 'trl', 'langgraph', 'numpy', 'transformers') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_kappa_keeps_depend_on_group_size():
    """METHODS.md §2: at G = 4, κ = 0.8 keeps only k = 2 (p(1) = 0.75); at G = 8, k = 3..5
    (p(2) = 0.75, p(3) = 15/16)."""
    table = {(G, kappa): kept_counts(kappa, G) for G in (4, 8) for kappa in (0.3, 0.8)}
    print("\n" + "\n".join(f"G={G} κ={k}: keeps k={v[0]}..{v[1]}" for (G, k), v in table.items()))
    assert table == {(4, 0.3): (1, 3), (4, 0.8): (2, 2), (8, 0.3): (1, 7), (8, 0.8): (3, 5)}
    assert kept_counts(0.75, 4) == (1, 3)  # p(1) = 0.75 exactly: kept (p >= κ)
    assert kept_counts(0.0, 4) == (0, 4)
    assert kept_counts(1.01, 4) is None  # only a κ above 1 keeps nothing with binary rewards
    keeps = VCRLConfig().keeps(4)
    assert keeps["warmup"] == {"kappa": 0.3, "steps": "0..19", "k_min": 1, "k_max": 3}
    assert keeps["after"] == {"kappa": 0.8, "steps": "20..", "k_min": 2, "k_max": 2}
    assert VCRLConfig(warmup_steps=0).keeps(8)["warmup"] is None
    assert describe_keeps(keeps) == ("κ 0.3 (steps 0..19) keeps k = 1..3 of G = 4; "
                                     "κ 0.8 (steps 20..) keeps k = 2..2 of G = 4")
