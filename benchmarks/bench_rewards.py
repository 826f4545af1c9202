"""The math reward against Math-Verify's own test suite: agreement and time per call.

Run: ``python benchmarks/bench_rewards.py PATH_TO_MATH_VERIFY_CHECKOUT [--baseline-module PATH]``

PATH is a checkout of https://github.com/huggingface/Math-Verify (e.g. its 0.8.0 tag: ``git
archive 0.8.0 | tar -x -C /tmp/mv``); nothing of it is kept in this repository.  Its
parametrized gold-vs-prediction cases under ``tests/`` that run with default options
(precision 6, strict, no set-relation comparison) are scored three ways:

* ``score_completion(gold, pred)`` (teachloop.evals.answers, through its process pool);
* math-verify alone as its own test runs it (each test's extraction targets), in-process;
* math-verify alone with the one configuration ``score_completion`` uses (LaTeX with boxed
  first + expressions), in-process: the baseline of the timing ratio.

Each scorer sees every case once untimed (warm caches), then once timed.  It prints the agreement of each with the tests' expected verdicts, every disagreement of
``score_completion``, and the median and 99th percentile time per call.  ``--baseline-module``
loads another scorer module by path (e.g. the previous ``evals/answers.py`` from git) and
scores ``verify_math(gold, pred)`` and ``verify_math(gold, extract_answer(pred))`` with it too.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import logging
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TEST_MODULES = ("test_all", "test_boxed", "test_numina_cases", "test_open_thoughts", "test_strict",
                "test_yujianll")


def collect_cases(checkout: Path) -> list[dict]:
    """Every parametrized (gold, pred, expected) case of the checkout's tests, with its options."""
    if not (checkout / "tests" / "test_all.py").is_file():
        sys.exit(f"error: {checkout} is not a Math-Verify checkout (no tests/test_all.py)")
    sys.path.insert(0, str(checkout))
    cases = []
    for name in TEST_MODULES:
        mod = importlib.import_module(f"tests.{name}")
        for fname, fn in vars(mod).items():
            if not fname.startswith("test_") or not callable(fn):
                continue
            for mark in getattr(fn, "pytestmark", []):
                if mark.name != "parametrize":
                    continue
                keys = [k.strip() for k in mark.args[0].split(",")]
                body = inspect.getsource(fn)
                mt = re.search(r"match_types=\[([^\]]*)\]", body)
                fixed_prec = re.search(r"precision=(\d+)", body)
                for values in mark.args[1]:
                    d = dict(zip(keys, values))
                    prec = d.get("precision", int(fixed_prec.group(1)) if fixed_prec else 6)
                    cases.append({
                        "where": f"{name}::{fname}",
                        "gold": d["gold"], "pred": d["pred"],
                        "expected": int(d.get("expected", d.get("result"))),
                        # parse() defaults when the test calls parse/verify directly
                        "targets": re.findall(r'"(\w+)"', mt.group(1)) if mt else None,
                        "default": prec == 6 and d.get("strict", True) is True
                        and d.get("allow_set_relation_comp", False) is False,
                    })
    return cases


def math_verify_alone(gold: str, pred: str, targets: list[str] | None) -> int:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if targets is None:
        cfg = [LatexExtractionConfig(), ExprExtractionConfig()]
    else:
        cfg = [LatexExtractionConfig(boxed_match_priority=0) if t == "latex" else ExprExtractionConfig()
               for t in targets]
    return int(verify(parse(gold, cfg, parsing_timeout=None), parse(pred, cfg, parsing_timeout=None),
                      timeout_seconds=None))


def timed(fn, cases) -> tuple[list[int], list[float]]:
    """Verdicts and seconds per call; one untimed pass first, so every scorer is timed with
    warm caches (sympy's, math-verify's, each pool worker's)."""
    for c in cases:
        fn(c)
    got, secs = [], []
    for c in cases:
        t0 = time.perf_counter()
        got.append(int(fn(c)))
        secs.append(time.perf_counter() - t0)
    return got, secs


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def report(label: str, cases, got, secs) -> int:
    ok = sum(g == c["expected"] for g, c in zip(got, cases))
    print(f"{label:<52} {ok:>4}/{len(cases)} agree   median {statistics.median(secs) * 1e3:7.2f} ms"
          f"   p99 {pct(secs, 0.99) * 1e3:8.2f} ms")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path, help="a Math-Verify checkout (its tests/ are read)")
    ap.add_argument("--baseline-module", type=Path, help="an older scorer module (verify_math, "
                    "extract_answer) to score the same cases with")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    cases = [c for c in collect_cases(args.checkout.resolve()) if c["default"]]
    print(f"{len(cases)} default-option cases from {args.checkout}")

    from teachloop.evals.answers import score_completion, score_local

    score_completion("1", "1")  # start the pool: its start-up is not a call
    sc_got, sc_secs = timed(lambda c: score_completion(c["gold"], c["pred"]), cases)
    mv_got, mv_secs = timed(lambda c: math_verify_alone(c["gold"], c["pred"], c["targets"]), cases)
    one_got, one_secs = timed(lambda c: math_verify_alone(c["gold"], c["pred"], ["latex", "expr"]), cases)
    loc_got, loc_secs = timed(lambda c: score_local(c["gold"], c["pred"]), cases)
    report("score_completion (process pool, per-call timeout)", cases, sc_got, sc_secs)
    report("  same verdict in-process (score_local, no timeout)", cases, loc_got, loc_secs)
    report("math-verify alone, each test's own targets", cases, mv_got, mv_secs)
    report("math-verify alone, latex(boxed first)+expr", cases, one_got, one_secs)
    if args.baseline_module:
        spec = importlib.util.spec_from_file_location("baseline_answers", args.baseline_module)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        old.verify_math("1", "1")
        got, secs = timed(lambda c: old.verify_math(c["gold"], c["pred"]), cases)
        report("baseline verify_math(gold, pred)", cases, got, secs)
        got, secs = timed(lambda c: bool((a := old.extract_answer(c["pred"])) and old.verify_math(c["gold"], a)),
                          cases)
        report("baseline verify_math(gold, extract_answer(pred))", cases, got, secs)
        # the pools alone: one cheap pair (no fast path in either), 200 calls each
        pair = [{"gold": "1/2", "pred": "0.5", "expected": 1}] * 200
        _, new_secs = timed(lambda c: score_completion(c["gold"], c["pred"]), pair)
        _, old_secs = timed(lambda c: old.verify_math(c["gold"], c["pred"]), pair)
        print(f"pool round trip on ('1/2', '0.5'), median: pebble {statistics.median(new_secs) * 1e3:.2f} ms, "
              f"baseline pool {statistics.median(old_secs) * 1e3:.2f} ms "
              f"({statistics.median(new_secs) / statistics.median(old_secs):.2f}x)")
    print(f"score_completion / math-verify in-process, median time per call: "
          f"{statistics.median(sc_secs) / statistics.median(one_secs):.2f}x")
    print("\nscore_completion disagreements with the expected verdict:")
    for c, g, m in zip(cases, sc_got, mv_got):
        if g != c["expected"]:
            print(f"  {c['where']}: gold={c['gold']!r} pred={c['pred']!r} expected={c['expected']} "
                  f"got={g} (math-verify alone: {m})")
    print("\nmath-verify alone (latex+expr) disagreements:")
    for c, g in zip(cases, one_got):
        if g != c["expected"]:
            print(f"  {c['where']}: gold={c['gold']!r} pred={c['pred']!r} expected={c['expected']} got={g}")


if __name__ == "__main__":
    main()
