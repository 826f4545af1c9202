"""A study's statistics: per-item scores, a paired bootstrap over items and seeds, curves.

Scores. Each run's evaluation keeps, per held-out item, the number of samples ``n`` and of
correct samples ``c`` (``evals/bench.py``); an item's pass@1 is ``c / n`` (unbiased for k = n
samples). An arm's score on a seed is the mean over items; the arm's score is the mean over
its seeds.

Common items. Every arm and seed is evaluated on one fixed draw (``eval.seed`` fixed,
``eval.exclude_pool=false``); an item that is in *any* run's pool (a teacher variant may
coincide with a held-out item) is dropped from every arm afterwards, so all comparisons are
on the same items, none of which any run trained on. ``common_items`` returns them and the
number dropped; the item ids are the proof (content hashes, ``curriculum/items.py``).

Confidence intervals: a paired bootstrap (Efron & Tibshirani 1993, §6; the two-level
"resample seeds, then items" scheme of Bouthillier et al. 2021, *Accounting for Variance in
Machine Learning Benchmarks*). Each of ``B`` replicates draws seeds with replacement and
items with replacement, *the same draws for every arm*, and recomputes every arm's mean; the
95 % interval is the 2.5th-97.5th percentile of the replicates. Differences between two arms
(or between an arm and the initial model) are computed inside each replicate, so they are
paired: item difficulty, which dominates the variance, cancels.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["bootstrap", "common_items", "item_scores", "mean_ci"]


def item_scores(per_item: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``{item id: pass@1 estimate c / n}`` from an EvalResult's ``per_item``."""
    return {r["id"]: r["c"] / r["n"] for r in per_item if r.get("n")}


def common_items(scores: Mapping[str, Mapping[int, Mapping[str, float]]],
                 pool_ids: set[str]) -> tuple[list[str], int]:
    """Items every run was evaluated on, minus any item in a pool; (sorted ids, dropped)."""
    sets = [set(s) for per_seed in scores.values() for s in per_seed.values()]
    if not sets:
        return [], 0
    both = set.intersection(*sets)
    keep = sorted(both - pool_ids)
    return keep, len(both) - len(keep)


def _mean(scores: Mapping[int, Mapping[str, float]], seeds: Sequence[int],
          items: Sequence[str]) -> float:
    vals = [statistics.fmean(scores[s][i] for i in items) for s in seeds if s in scores]
    return statistics.fmean(vals) if vals else math.nan


def bootstrap(scores: Mapping[str, Mapping[int, Mapping[str, float]]], items: Sequence[str],
              *, base: Mapping[str, float] | None = None, reference: str | None = None,
              B: int = 2000, seed: int = 0) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Point estimate and 95 % CI per arm of: ``mean`` (pass@1), ``delta`` (vs ``base``, the
    initial model's per-item scores) and ``vs_ref`` (minus arm ``reference``), from a paired
    bootstrap over seeds and items. Returns ``{arm: {stat: (estimate, low, high)}}``."""
    rng = random.Random(seed)
    arms = list(scores)
    seeds = sorted({s for per in scores.values() for s in per})
    items = list(items)
    if not items or not seeds:
        return {a: {} for a in arms}

    def stats(ss: Sequence[int], ii: Sequence[str]) -> dict[str, dict[str, float]]:
        means = {a: _mean(scores[a], ss, ii) for a in arms}
        b = statistics.fmean(base[i] for i in ii) if base else math.nan
        out = {}
        for a in arms:
            out[a] = {"mean": means[a], "delta": means[a] - b}
            if reference is not None and reference in means:
                out[a]["vs_ref"] = means[a] - means[reference]
        return out

    point = stats(seeds, items)
    reps: dict[str, dict[str, list[float]]] = {a: {k: [] for k in point[a]} for a in arms}
    for _ in range(B):
        ss = [rng.choice(seeds) for _ in seeds]
        ii = [rng.choice(items) for _ in items]
        st = stats(ss, ii)
        for a in arms:
            for k, v in st[a].items():
                reps[a][k].append(v)
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for a in arms:
        out[a] = {}
        for k, est in point[a].items():
            xs = sorted(x for x in reps[a][k] if not math.isnan(x))
            if not xs:
                out[a][k] = (est, math.nan, math.nan)
                continue
            lo = xs[int(0.025 * (len(xs) - 1))]
            hi = xs[int(math.ceil(0.975 * (len(xs) - 1)))]
            out[a][k] = (est, lo, hi)
    return out


def mean_ci(xs: Sequence[float], B: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95 % bootstrap interval of independent values (e.g. per-seed numbers)."""
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return math.nan, math.nan, math.nan
    rng = random.Random(seed)
    reps = sorted(statistics.fmean(rng.choice(xs) for _ in xs) for _ in range(B))
    return statistics.fmean(xs), reps[int(0.025 * (B - 1))], reps[int(math.ceil(0.975 * (B - 1)))]
