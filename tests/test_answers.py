"""Tests for evals/answers.py: math equivalence, extraction, timeouts, threads, fork.

Expected values were chosen from the mathematics (and the documented decisions in
the module docstring), not by running the code.  Where math-verify on its own
disagrees, the case says so in its id.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time

import pytest

from teachloop.evals.answers import extract_answer, normalize_answer, verify_math

# (gold, answer, expected).  Golds are mostly Python-printed outputs, answers are
# student free text / LaTeX.
EQUIV_CASES = [
    # --- fractions / decimals -------------------------------------------------
    pytest.param("0.5", "1/2", True, id="decimal-vs-slash-fraction"),
    pytest.param("0.5", "\\frac{1}{2}", True, id="decimal-vs-frac"),
    pytest.param("1/2", "0.5", True, id="slash-fraction-vs-decimal"),
    pytest.param("0.25", "\\dfrac{1}{4}", True, id="dfrac"),
    pytest.param("3/4", "0.75", True, id="three-quarters"),
    pytest.param("-1/2", "-0.5", True, id="negative-half"),
    pytest.param("1/2", "-0.5", False, id="sign-matters-fraction"),
    pytest.param("0.5", "0.51", False, id="close-decimal-wrong"),
    pytest.param("-7", "-7.0", True, id="int-vs-float-repr"),
    # 1/3 = 0.333333... ; a 3-digit rounding is a different number.  math-verify
    # compares at 6 decimals, so "0.333333" passes and "0.333" does not (decided: keep).
    pytest.param("1/3", "0.333", False, id="rounded-third-3dp-rejected"),
    pytest.param("1/3", "0.333333", True, id="rounded-third-6dp-accepted"),
    pytest.param("0.3333333333333333", "\\frac{1}{3}", True, id="python-float-third"),
    pytest.param("0.30000000000000004", "0.3", True, id="python-float-noise"),
    # --- integers, signs --------------------------------------------------------
    pytest.param("3", "\\boxed{3}", True, id="boxed"),
    pytest.param("3", "4", False, id="different-ints"),
    pytest.param("-3", "3", False, id="sign-matters"),
    pytest.param("1000", "100", False, id="order-of-magnitude"),
    pytest.param("2", "\\sqrt{4}", True, id="sqrt4"),
    pytest.param("2", "2x", False, id="number-vs-monomial"),
    pytest.param("2**10", "1024", True, id="python-power"),
    # --- thousands separators, units, currency, percent, degrees --------------
    pytest.param("1000", "1,000", True, id="thousands-comma"),
    pytest.param("1000000", "1{,}000{,}000", True, id="thousands-latex-braces"),
    pytest.param("1000", "1\\,000", True, id="thousands-thin-space"),  # mv alone: 1*0
    pytest.param("5", "5 cm", True, id="units-cm"),
    pytest.param("5", "5\\,\\text{cm}^2", True, id="units-latex-area"),
    pytest.param("12", "\\$12", True, id="currency-dollar"),
    pytest.param("12", "12 dollars", True, id="currency-word"),  # mv alone: 12*d*o*l*...
    pytest.param("12", "21 dollars", False, id="currency-wrong-amount"),
    pytest.param("45", "45^\\circ", True, id="degrees-circ"),
    pytest.param("45", "45°", True, id="degrees-symbol"),
    pytest.param("50", "50\\%", True, id="percent-vs-number"),
    pytest.param("0.5", "50\\%", True, id="percent-vs-fraction"),
    pytest.param("30", "30%", True, id="plain-percent"),
    pytest.param("0.3", "3%", False, id="percent-wrong"),
    # --- scientific notation -----------------------------------------------
    pytest.param("1e-3", "0.001", True, id="sci-vs-decimal"),  # mv alone: 1*e - 3
    pytest.param("0.001", "1e-3", True, id="decimal-vs-sci"),
    pytest.param("1e-3", "10^{-3}", True, id="sci-vs-power"),
    pytest.param("2.5e+10", "25000000000", True, id="sci-big"),
    # math-verify rounds to 6 decimals, so on its own 1e-9 == 0 and 1e-7 == 2e-7;
    # the tiny-number guard adds a relative check below 1e-2.
    pytest.param("1e-9", "0", False, id="tiny-vs-zero"),
    pytest.param("1e-7", "2e-7", False, id="tiny-vs-double"),
    pytest.param("1.5e-7", "1.5 \\times 10^{-7}", True, id="tiny-equal"),
    # --- radicals, symbolic ----------------------------------------------------
    pytest.param("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", True, id="sqrt-forms"),
    pytest.param("sqrt(2)/2", "\\frac{\\sqrt{2}}{2}", True, id="sympy-print-sqrt"),
    pytest.param("\\sqrt{2}", "1.41", False, id="sqrt2-too-rough"),
    pytest.param("(x+1)^2", "x^2+2x+1", True, id="expanded-square"),
    pytest.param("(x+1)**2", "x^2 + 2x + 1", True, id="python-power-symbolic"),
    pytest.param("(x+1)^2", "x^2+1", False, id="wrong-expansion"),
    pytest.param("x^2", "y^2", False, id="variable-names-matter"),
    pytest.param("pi", "\\pi", True, id="pi"),
    pytest.param("2*pi", "2\\pi", True, id="two-pi"),
    pytest.param("log(2)", "\\ln 2", True, id="python-log-is-ln"),
    pytest.param("oo", "\\infty", True, id="sympy-infinity"),
    pytest.param("5", "x = 5", True, id="assignment"),
    # --- sets, lists, tuples, intervals ---------------------------------------
    pytest.param("{1, 2}", "{2,1}", True, id="set-order"),
    pytest.param("{1, 2}", "\\{2, 1\\}", True, id="set-latex"),
    pytest.param("{1, 2}", "1, 2", True, id="set-vs-enumeration"),
    pytest.param("{1, 2}", "\\{1, 2, 3\\}", False, id="set-extra-element"),
    pytest.param("set()", "\\emptyset", True, id="empty-set"),
    pytest.param("[1, 2]", "1, 2", True, id="python-list-vs-enumeration"),
    pytest.param("[1, 2]", "[1,2]", True, id="python-list-vs-bracket"),
    pytest.param("[1, 2]", "(1, 2)", False, id="list-not-open-interval"),
    pytest.param("[1, 2, 3]", "(1, 2, 3)", True, id="list-vs-tuple"),
    pytest.param("(1, 2)", "(2, 1)", False, id="tuple-order"),
    pytest.param("[0,1)", "[0,1]", False, id="interval-half-open-vs-closed"),
    pytest.param("[0,1]", "[0,1)", False, id="interval-closed-vs-half-open"),
    pytest.param("(0, 1]", "\\left(0,1\\right]", True, id="interval-left-right"),
    pytest.param("(0, 1]", "[0, 1]", False, id="interval-open-end"),
    # --- words, garbage, empty --------------------------------------------------
    pytest.param("True", "true", True, id="word-case"),
    pytest.param("7", "banana", False, id="garbage-vs-number"),
    pytest.param("7", "", False, id="empty-answer"),
    pytest.param("7", "   ", False, id="blank-answer"),
    pytest.param("", "", False, id="both-empty"),
    pytest.param("42", "The answer is 42.", True, id="prose-answer"),
    pytest.param("42", "The answer is 41.", False, id="prose-wrong-answer"),
]


@pytest.mark.parametrize("gold, answer, expected", EQUIV_CASES)
def test_equivalence(gold: str, answer: str, expected: bool) -> None:
    assert verify_math(gold, answer) is expected


def test_case_count() -> None:
    assert len(EQUIV_CASES) >= 40
    assert sum(1 for p in EQUIV_CASES if p.values[2] is False) >= 15


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("$\\boxed{3}$", "3"),
        ("5 cm", "5"),
        ("\\$12", "12"),
        ("1,000", "1000"),
        ("50\\%", "50"),
        ("\\text{Yes}", "yes"),
        ("\\left(0, 1\\right]", "(0,1]"),
        ("3.", "3"),
        ("1e-3", "0.001"),
        ("2**2**3", "2^{2^{3}}"),
        ("1,2", "1,2"),  # not a thousands separator: kept as a list
        (None, ""),
        ("", ""),
    ],
)
def test_normalize_answer(raw, norm) -> None:
    assert normalize_answer(raw) == norm


def test_fast_path_needs_no_worker(monkeypatch) -> None:
    import teachloop.evals.answers as A

    def boom():  # the worker pool must not be touched for identical strings
        raise AssertionError("worker used on the fast path")

    monkeypatch.setattr(A, "_get_pool", boom)
    assert verify_math("1,000 dollars", "$1000$")
    assert verify_math("\\boxed{\\frac{1}{2}}", "\\dfrac{1}{2}.")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $x = \\boxed{\\frac{1}{\\sqrt{2}}}$.", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}"),
        ("first \\boxed{1} then \\boxed{x^{2}}", "x^{2}"),
        ("The answer is 42.", "42"),
        ("Some work.\nFinal answer: $\\frac{3}{4}$", "\\frac{3}{4}"),
        ("**Answer:** 17", "17"),
        ("Final Answer: The final answer is $9$. I hope it is correct.", "9"),
        ("we get 3 and then 1,000 apples", "1,000"),
        ("x went from -2.5 to nothing", "-2.5"),
        ("no digits or anything", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_answer(text, expected) -> None:
    assert extract_answer(text) == expected


def test_extract_then_verify() -> None:
    completion = "Let me think... $2 + 2 = 4$, so the answer is $\\boxed{4}$."
    assert verify_math("4", extract_answer(completion))
    assert verify_math("4", completion)  # a whole completion works too


PATHOLOGICAL = [
    pytest.param("2**2**2**2**2**2**2**2", "5", id="python-power-tower"),
    pytest.param("3", "\\left(10^{10^{10^{10}}}\\right)!", id="latex-huge-factorial"),
]


@pytest.mark.parametrize("gold, answer", PATHOLOGICAL)
def test_pathological_returns_false_within_timeout(gold: str, answer: str) -> None:
    verify_math("1", "2")  # make sure a worker is up, so startup is not timed
    timeout_s = 1.5
    t0 = time.monotonic()
    assert verify_math(gold, answer, timeout_s=timeout_s) is False
    elapsed = time.monotonic() - t0
    assert elapsed < timeout_s + 1.0, elapsed
    # the killed worker was replaced: normal calls still work
    assert verify_math("\\frac{1}{2}", "0.5") is True
    assert verify_math("3", "4") is False


def test_pathological_from_thread() -> None:
    out: list = []

    def run() -> None:
        verify_math("1", "2")  # warm, so worker startup is not timed
        t0 = time.monotonic()
        out.append(verify_math("2**2**2**2**2**2**2**2", "7", timeout_s=1.0))
        out.append(time.monotonic() - t0)

    th = threading.Thread(target=run)
    th.start()
    th.join(60)
    assert out[0] is False
    assert out[1] < 1.0 + 1.0, out[1]
    assert verify_math("0.5", "1/2")


def test_non_main_thread() -> None:
    out: list = []
    th = threading.Thread(target=lambda: out.append(verify_math("(x+1)^2", "x^2+2x+1")))
    th.start()
    th.join(60)
    assert out == [True]


def test_concurrent_threads_mixed() -> None:
    cases = [
        ("1/2", "0.5", True),
        ("3", "4", False),
        ("{1, 2}", "\\{2,1\\}", True),
        ("[0,1)", "[0,1]", False),
        ("(x+1)^2", "x^2+2x+1", True),
        ("-3", "3", False),
        ("1e-3", "10^{-3}", True),
        ("\\sqrt{2}", "1.41", False),
    ]
    results: dict[int, list[bool]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def run(k: int) -> None:
        try:
            barrier.wait(30)
            got = []
            for j in range(len(cases)):
                g, a, _ = cases[(k + j) % len(cases)]
                got.append(verify_math(g, a))
            results[k] = got
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for k in range(8):
        expected = [cases[(k + j) % len(cases)][2] for j in range(len(cases))]
        assert results[k] == expected, k


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_after_fork_child_gets_its_own_worker() -> None:
    assert verify_math("1/2", "0.5")  # parent pool is up
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            ok = verify_math("\\frac{1}{4}", "0.25") and not verify_math("1", "2")
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
    # the parent's workers are untouched by the child
    assert verify_math("2/4", "0.5")


def test_worker_killed_from_outside_is_replaced() -> None:
    import teachloop.evals.answers as A

    assert verify_math("1/2", "0.5")
    pool = A._get_pool()
    with pool.cond:
        idle = list(pool.idle)
    for w in idle:
        w.proc.kill()
        w.proc.wait()
    assert verify_math("1/3", "\\frac{2}{6}") is True
    assert verify_math("1/3", "\\frac{2}{5}") is False


def test_timing_report(capsys) -> None:
    """Not an assertion about speed beyond sanity; prints medians for the report."""
    verify_math("1", "2")
    fast, slow = [], []
    for _ in range(100):
        t0 = time.perf_counter()
        verify_math("1,000", "1000")
        fast.append(time.perf_counter() - t0)
    for i in range(100):
        t0 = time.perf_counter()
        verify_math("1/2", f"0.{5 + i % 2}")
        slow.append(time.perf_counter() - t0)
    with capsys.disabled():
        print(
            f"\n[answers timing] fast path median {statistics.median(fast) * 1e6:.0f} us, "
            f"worker path median {statistics.median(slow) * 1e3:.2f} ms",
            file=sys.stderr,
        )
    assert statistics.median(fast) < 0.01
    assert statistics.median(slow) < 1.0
