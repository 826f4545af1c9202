"""Tests for evals/answers.py: the math reward ``score_completion`` (math-verify on the whole
completion), its few normalisations, timeouts, threads and fork.

Expected values come from the mathematics and the decisions in the module docstring.  Every
normalisation the module keeps has a case below that math-verify alone (same configuration,
no normalisation) gets wrong: ``test_each_fix_is_needed`` checks that it still does, so a fix
that math-verify no longer needs shows up as a failing test, not as dead code.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import threading
import time

import pytest

from teachloop.evals.answers import (
    has_boxed,
    normalize_completion,
    normalize_gold,
    score_completion,
)


def mv_alone(gold: str, completion: str) -> float:
    """math-verify with score_completion's configuration and none of its normalisations."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    cfg = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return float(verify(parse(gold, cfg, parsing_timeout=None), parse(completion, cfg, parsing_timeout=None),
                        timeout_seconds=None))


# (gold, completion) pairs that should score 1.0, which math-verify alone scores 0.0
FIXES = [
    pytest.param("1000", "so \\boxed{1\\,000}", id="thin-space-thousands"),  # mv: 1*0
    pytest.param("1000000", "\\boxed{1\\,000\\,000}", id="thin-space-millions"),
    pytest.param("1000.5", "\\boxed{1\\,000.5}", id="thin-space-decimal"),
    pytest.param("1000", "\\boxed{1~000}", id="tilde-thousands"),
    pytest.param("1024", "\\boxed{2**10}", id="python-power-completion"),  # mv: unparsed string
    pytest.param("0.5", "\\boxed{2**(-1)}", id="python-power-parenthesised"),
    pytest.param("x^2+1", "\\boxed{x**2+1}", id="python-power-symbolic"),
    pytest.param("0.001", "\\boxed{1e-3}", id="sci-completion"),  # mv: 1*e - 3
    pytest.param("1e-05", "\\boxed{0.00001}", id="sci-gold-python-float"),  # mv: gold 1
    pytest.param("2.5e+10", "\\boxed{25000000000}", id="sci-gold-big"),
    pytest.param("{1, 2}", "\\boxed{\\{2, 1\\}}", id="python-set-gold"),  # mv: gold 2
    pytest.param("{1, 2}", "\\boxed{1}, \\boxed{2}", id="python-set-gold-two-boxes"),
    pytest.param("set()", "\\boxed{\\emptyset}", id="python-empty-set-gold"),  # mv: no gold
    pytest.param("[1, 2]", "\\boxed{1, 2}", id="python-list-gold-as-set"),  # mv: gold 2
    pytest.param("[1, 2]", "\\boxed{[1, 2]}", id="python-list-gold-as-bracket"),
    pytest.param("(1, 2)", "\\boxed{(1, 2)}", id="python-tuple-gold"),  # mv: gold 2
    pytest.param("sqrt(2)/2", "\\boxed{\\frac{1}{\\sqrt{2}}}", id="sympy-sqrt-gold"),  # mv: no gold
    pytest.param("pi/2", "\\boxed{\\frac{\\pi}{2}}", id="sympy-pi-gold"),
    pytest.param("oo", "\\boxed{\\infty}", id="sympy-infinity-gold"),
    pytest.param("x**2 + 2*x + 1", "\\boxed{(x+1)^2}", id="sympy-power-gold"),  # mv: no gold
]


@pytest.mark.parametrize("gold, completion", FIXES)
def test_each_fix_is_needed(gold: str, completion: str) -> None:
    assert mv_alone(gold, completion) == 0.0, "math-verify alone now passes: drop the fix"
    assert score_completion(gold, completion) == 1.0


# math-verify's own semantics, kept (gold, completion, expected)
SEMANTICS = [
    # numbers
    pytest.param("7", "The answer is \\boxed{007}.", 1.0, id="leading-zeros-aime"),
    pytest.param("24", "\\boxed{024}", 1.0, id="leading-zeros-two"),
    pytest.param("0.5", "\\boxed{\\frac{1}{2}}", 1.0, id="decimal-vs-frac"),
    pytest.param("3/4", "\\boxed{0.75}", 1.0, id="fraction-vs-decimal"),
    pytest.param("1/2", "\\boxed{-0.5}", 0.0, id="sign-matters"),
    pytest.param("-7", "\\boxed{-7.0}", 1.0, id="int-vs-float"),
    pytest.param("1/3", "\\boxed{0.333}", 0.0, id="third-3dp-rejected"),
    pytest.param("1/3", "\\boxed{0.333333}", 1.0, id="third-6dp-accepted"),
    pytest.param("0.30000000000000004", "\\boxed{0.3}", 1.0, id="python-float-noise"),
    pytest.param("2", "\\boxed{\\sqrt{4}}", 1.0, id="sqrt4"),
    pytest.param("1000", "\\boxed{1,000}", 1.0, id="thousands-comma"),
    pytest.param("1000000", "\\boxed{1{,}000{,}000}", 1.0, id="thousands-braces"),
    pytest.param("1000.99", "It costs 1000,99 euros", 1.0, id="decimal-comma"),
    pytest.param("0.3", "\\boxed{30\\%}", 1.0, id="percent"),
    pytest.param("45", "\\boxed{45^\\circ}", 1.0, id="degrees"),
    pytest.param("12", "\\boxed{\\$12}", 1.0, id="currency"),
    # units: dropped by math-verify, never checked (both math families' golds are unit-less)
    pytest.param("5", "\\boxed{5\\text{ cm}}", 1.0, id="unit-ignored"),
    # symbolic
    pytest.param("(x+1)^2", "\\boxed{x^2+2x+1}", 1.0, id="expanded-square"),
    pytest.param("(x+1)^2", "\\boxed{x^2+1}", 0.0, id="wrong-expansion"),
    pytest.param("x^2", "\\boxed{y^2}", 0.0, id="variable-names-matter"),
    pytest.param("5", "\\boxed{x = 5}", 1.0, id="assignment"),
    # sets, intervals, several boxes
    pytest.param("{1, 2}", "\\boxed{1}\\boxed{2}", 1.0, id="two-boxes-are-a-set"),
    pytest.param("{1, 2}", "\\boxed{\\{1, 2, 3\\}}", 0.0, id="set-extra-element"),
    pytest.param("$[0,1)$", "\\boxed{[0,1]}", 0.0, id="interval-ends-matter"),
    pytest.param("$(0, 1]$", "\\boxed{\\left(0,1\\right]}", 1.0, id="interval-left-right"),
    # where the answer is
    pytest.param("7", "First \\boxed{5}, no wait, \\boxed{7}", 0.0, id="two-boxes-hedge"),
    pytest.param("42", "The final answer is 42", 1.0, id="prose-final-answer"),
    pytest.param("42", "The answer is 41.", 0.0, id="prose-wrong"),
    pytest.param("13", "so $\\frac13$", 0.0, id="frac-is-not-its-digits"),
    pytest.param("5", "$x \\geq 5$", 0.0, id="inequality-is-not-its-bound"),
    # empty and unparseable
    pytest.param("7", "", 0.0, id="empty"),
    pytest.param("7", "   ", 0.0, id="blank"),
    pytest.param("", "\\boxed{7}", 0.0, id="empty-gold"),
    pytest.param("7", "banana", 0.0, id="garbage"),
]


@pytest.mark.parametrize("gold, completion, expected", SEMANTICS)
def test_semantics(gold: str, completion: str, expected: float) -> None:
    assert score_completion(gold, completion) == expected


def test_require_boxed() -> None:
    assert score_completion("42", "The final answer is 42") == 1.0
    assert score_completion("42", "The final answer is 42", require_boxed=True) == 0.0
    assert score_completion("42", "The final answer is \\boxed{42}", require_boxed=True) == 1.0
    assert score_completion("42", "\\fbox{42}", require_boxed=True) == 0.0  # math-verify reads no fbox
    assert has_boxed("a \\boxed {x}") and not has_boxed("boxed{42}")


def test_a_box_before_the_scanned_tail_scores_zero() -> None:
    from teachloop.evals.answers import MAX_SCAN_CHARS

    filler = "and so on. " * (MAX_SCAN_CHARS // 10)
    assert score_completion("7", f"\\boxed{{5}} {filler} \\boxed{{7}}") == 0.0
    assert score_completion("7", f"{filler} \\boxed{{7}}") == 1.0


def test_normalisers_are_pure_string_functions() -> None:
    assert normalize_completion("pay 1\\,000\\,000 or 2**(n+1) or 1e-3") == "pay 1000000 or 2^{n+1} or 0.001"
    assert normalize_completion("**Answer:** **5**") == "**Answer:** **5**"  # markdown bold kept
    assert normalize_completion("x" * 50_000).__len__() < 50_000
    assert normalize_gold("12.5") == ["12.5"]
    assert normalize_gold("{1, 2}") == ["$\\{1, 2\\}$"]
    assert normalize_gold("[1, 2]") == ["$[1, 2]$", "$\\{1, 2\\}$"]
    assert normalize_gold("$[1, 2]$") == ["$[1, 2]$"]  # LaTeX golds are math-verify's


def test_non_strings_score_zero() -> None:
    assert score_completion("7", None) == 0.0  # type: ignore[arg-type]
    assert score_completion(None, "7") == 0.0  # type: ignore[arg-type]
    assert score_completion("7", "\\boxed{7}", timeout_s=float("nan")) == 1.0


# ------------------------------------------------------------------ time limits, threads, fork
PATHOLOGICAL = [
    pytest.param("2**2**2**2**2**2**2**2", "\\boxed{5}", id="python-power-tower-gold"),
    pytest.param("3", "\\boxed{\\left(10^{10^{10^{10}}}\\right)!}", id="latex-huge-factorial"),
]


@pytest.mark.parametrize("gold, completion", PATHOLOGICAL)
def test_pathological_scores_zero_within_timeout(gold: str, completion: str) -> None:
    score_completion("1", "1")  # the pool is up: its start is not timed
    t0 = time.monotonic()
    assert score_completion(gold, completion, timeout_s=1.0) == 0.0
    assert time.monotonic() - t0 < 1.0 + 1.5
    # the killed worker was replaced
    assert score_completion("\\frac{1}{2}", "\\boxed{0.5}") == 1.0
    assert score_completion("3", "\\boxed{4}") == 0.0


def test_from_threads_concurrently() -> None:
    cases = [
        ("1/2", "\\boxed{0.5}", 1.0),
        ("3", "\\boxed{4}", 0.0),
        ("{1, 2}", "\\boxed{\\{2,1\\}}", 1.0),
        ("$[0,1)$", "\\boxed{[0,1]}", 0.0),
        ("(x+1)^2", "\\boxed{x^2+2x+1}", 1.0),
        ("7", "either \\boxed{5} or \\boxed{7}", 0.0),
        ("1e-3", "\\boxed{10^{-3}}", 1.0),
        ("2**2**2**2**2**2**2**2", "\\boxed{5}", 0.0),  # a timeout amid the others
    ]
    results: dict[int, list[float]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def run(k: int) -> None:
        try:
            barrier.wait(30)
            results[k] = [score_completion(*cases[(k + j) % len(cases)][:2], timeout_s=1.0)
                          for j in range(len(cases))]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for k in range(6):
        assert results[k] == [cases[(k + j) % len(cases)][2] for j in range(len(cases))], k


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_builds_its_own_pool() -> None:
    assert score_completion("1/2", "\\boxed{0.5}") == 1.0  # the parent's pool is up
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            ok = (score_completion("\\frac{1}{4}", "\\boxed{0.25}") == 1.0
                  and score_completion("1", "\\boxed{2}") == 0.0)
            os.write(w, b"1" if ok else b"0")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        chunk = os.read(r, 16)
        if not chunk:
            break
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert data == b"1"
    assert score_completion("2/4", "\\boxed{0.5}") == 1.0  # the parent's pool still works


def test_timing_report(capsys) -> None:
    """Sanity bound only; benchmarks/bench_rewards.py measures against math-verify."""
    score_completion("1", "1")
    secs = []
    for i in range(60):
        t0 = time.perf_counter()
        score_completion("1/2", f"\\boxed{{0.{5 + i % 2}}}")
        secs.append(time.perf_counter() - t0)
    with capsys.disabled():
        print(f"\n[answers timing] score_completion median {statistics.median(secs) * 1e3:.2f} ms",
              file=sys.stderr)
    assert statistics.median(secs) < 0.5
