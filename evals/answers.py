"""The math reward: one scorer from a student's whole completion to 1.0 or 0.0.

``score_completion(gold, completion, *, timeout_s=5.0, require_boxed=False) -> float``

The completion goes whole to math-verify's own extraction (Kydlíček et al., HuggingFace
Math-Verify: ``math_verify.parse`` with ``LatexExtractionConfig(boxed_match_priority=0)`` and
``ExprExtractionConfig()``, the configuration of its own test suite), and the gold the same
way; ``math_verify.verify`` decides.  So its semantics hold and are not re-implemented here:

* boxed answers first; several boxes form one set (``\\boxed{1}\\boxed{2}`` == {1, 2}), so a
  hedge ``\\boxed{5} or \\boxed{7}`` is the set {5, 7} and does not match a single gold;
* no "last number in the text" fallback: a number is taken from prose only where it stands
  alone (``AZYUK2A`` holds no 2; ``$\\frac{1+\\sqrt{5}}{2}$`` is not 2);
* numbers: exact for integers and fractions, 6 decimals once a float is involved; leading
  zeros are the same number (``\\boxed{007}`` == 7, AIME's padding); ``1,000`` / ``1{,}000`` /
  ``1000,99`` (decimal comma) as math-verify reads them; ``30\\%`` == 0.3 == 30;
* units and ``\\text{}`` words after a number are dropped by math-verify, not checked.  Both
  math families have unit-less golds (reasoning-gym's numbers; math.word's printed program
  output, which ``MathWordFamily`` rejects when it carries a unit), so a unit in the student's
  box is ignored, never compared with another unit: there is no "5 m == 5 cm" to win.

``require_boxed``: where the family's prompt asks for ``\\boxed{}`` (every math family and
the math benchmarks), a completion with no ``\\boxed{...}`` scores 0.0 whatever it says;
compliance is taught by the format reward, not guessed here.

Normalisations kept, each because math-verify alone fails the case (tests/test_answers.py
pins every one with math-verify's own verdict next to ours):

1. completion and gold: LaTeX spaced thousands ``1\\,000`` / ``1\\ 000`` / ``1~000`` (math-verify:
   ``1\\,000`` is 1*0 = 0) -> ``1000``;
2. completion and gold: Python powers ``2**10`` (math-verify keeps the unparsed string) ->
   ``2^{10}``;
3. completion and gold: scientific notation ``1e-3`` (math-verify: 1*e - 3) -> ``0.001``;
4. gold only, when it is plain Python output (no ``$``, no backslash, e.g. a math.word
   program's print): set literals ``{1, 2}`` (math-verify reads the last number, 2) ->
   ``\\{1, 2\\}``; ``set()`` -> ``\\emptyset``; ``sqrt(x)``, ``pi``, ``oo`` (math-verify: no
   parse at all) -> LaTeX; a list or tuple is read as LaTeX (``$[1, 2, 3]$`` a tuple,
   ``$[1, 2]$`` a closed interval) and, for a list, also as the set of its elements.

Safety.  math-verify's own timeouts use ``signal.alarm`` (main thread only), so they are off
(``parsing_timeout=None``, ``timeout_seconds=None``) and every call runs in a pebble
``ProcessPool`` worker with ``schedule(..., timeout=timeout_s)``: a call past its time has its
worker killed and replaced and scores 0.0; a worker that dies on an input scores that input
0.0.  Any number of threads may call concurrently.  Workers are forked from the caller with
math-verify already imported (a replacement starts in milliseconds); a process forked from the
caller builds its own pool on its first call and never touches its parent's.  Pool size:
``TEACHLOOP_VERIFY_WORKERS`` (default ``min(4, cpu_count)``).  Completions are cut to their
last ``MAX_SCAN_CHARS`` characters (the answer is at the end; math-verify's regexes are
linear but not free); a completion with a box before that tail scores 0.0 (a hedge split by
filler would otherwise hide its first half), and so does a completion longer than that with no
box in its tail (its "answer" would be whichever number came last); golds longer than ``MAX_GOLD_CHARS`` score 0.0.

Not covered: word answers ("Yes", "True": math-verify parses none of them; no math family
has them), multiple-choice letters, unit conversion, degrees vs radians.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import re
import threading
from decimal import Decimal, InvalidOperation

__all__ = ["MAX_GOLD_CHARS", "MAX_SCAN_CHARS", "has_boxed", "normalize_completion",
           "normalize_gold", "score_completion", "score_local"]

log = logging.getLogger(__name__)

MAX_SCAN_CHARS = 20_000  # tail of the completion handed to math-verify
MAX_GOLD_CHARS = 2_000
_MAX_TIMEOUT_S = 600.0

# --------------------------------------------------------------------------- normalisations
# 1. "1\,000", "1\ 000", "1~000", "1\;000", "1\!000": a whole digit-group run (first group 1-3
#    digits, then groups of exactly 3) separated by LaTeX spaces.
_SPACE_SEP = r"(?:\\[,;: !]|~)"
_SPACED_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:" + _SPACE_SEP + r"\d{3})+(?![\d])")
# 2. Python power: "**" between operands; markdown bold ("**Answer**", "**5**") has no operand
#    on one side.  The exponent: a signed number/name or one level of parentheses.
_PY_POWER = re.compile(r"(?<=[\w)\]}])\*\*([-+]?(?:[\w.]+|\([^()]*\)))")
# 3. scientific notation as Python prints it ("1e-05", "2.5E+10")
_SCI = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?|\.\d+)[eE]([-+]?\d+)(?![\w.])")
_BOXED = re.compile(r"\\boxed\s*\{")
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:/\d+)?")


def _sci_to_decimal(m: re.Match) -> str:
    mant, exp = m.group(1), int(m.group(2))
    if abs(exp) > 60:  # keep absurd exponents short: a power of ten, not 60+ zeros
        return f"{mant}\\cdot 10^{{{exp}}}"
    try:
        out = format(Decimal(f"{mant}e{exp}"), "f")
    except InvalidOperation:
        return m.group(0)
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    return out or "0"


def _python_power(m: re.Match) -> str:
    exp = m.group(1)
    if exp.startswith("(") and exp.endswith(")"):
        exp = exp[1:-1]
    return "^{" + exp + "}"


def _common(s: str) -> str:
    s = _SPACED_THOUSANDS.sub(lambda m: re.sub(_SPACE_SEP, "", m.group(0)), s)
    if "**" in s:
        s = _PY_POWER.sub(_python_power, s)
    return _SCI.sub(_sci_to_decimal, s)


def normalize_completion(completion: str) -> str:
    """Fixes 1-3 of the module docstring on the completion's last ``MAX_SCAN_CHARS``."""
    return _common(completion[-MAX_SCAN_CHARS:])


def _balanced_end(s: str, i: int) -> int:
    """Index of the parenthesis closing the one at ``s[i]``; -1 when unbalanced."""
    depth = 0
    for k in range(i, len(s)):
        depth += {"(": 1, ")": -1}.get(s[k], 0)
        if depth == 0:
            return k
    return -1


def _sqrt_to_latex(s: str) -> str:
    out, i = [], 0
    while (j := s.find("sqrt(", i)) >= 0:
        end = _balanced_end(s, j + 4)
        if end < 0:
            break
        out.append(s[i:j] + "\\sqrt{" + _sqrt_to_latex(s[j + 5:end]) + "}")
        i = end + 1
    return "".join(out) + s[i:]


def normalize_gold(gold: str) -> list[str]:
    """The gold's readings (math-verify accepts if any matches): fix 1-3, and fix 4 for plain
    Python output."""
    g = _common(gold.strip())
    if "$" in g or "\\" in g or _PLAIN_NUMBER.fullmatch(g):
        return [g]
    python_like = bool(re.search(r"[\[\]{}()]|\*\*|\^|\bsqrt\b|\bpi\b|\boo\b|\binf\b", gold))
    if not python_like:
        return [g]
    if g in ("set()", "frozenset()"):
        return ["$\\emptyset$"]
    g = _sqrt_to_latex(g)
    g = re.sub(r"\bpi\b", r"\\pi ", g)
    g = re.sub(r"\b(?:oo|inf)\b", r"\\infty ", g)
    if g.startswith("{") and g.endswith("}"):
        return ["$\\{" + g[1:-1] + "\\}$"]
    readings = ["$" + g + "$"]
    if g.startswith("[") and g.endswith("]") and "," in g:
        readings.append("$\\{" + g[1:-1] + "\\}$")
    return readings


def has_boxed(completion: str) -> bool:
    """Whether the completion holds a ``\\boxed{...}`` (the asked form; math-verify reads no
    ``\\fbox``)."""
    return _BOXED.search(completion) is not None


# --------------------------------------------------------------------------- the work itself
_CONFIGS = None


def _configs():
    global _CONFIGS
    if _CONFIGS is None:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig

        _CONFIGS = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return _CONFIGS


def _quiet_math_verify() -> None:
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    import math_verify.grader
    import math_verify.parser

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True  # we time out from outside
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True


def score_local(gold: str, completion: str) -> float:
    """The verdict, in this process and with no time limit: only call it where a hang is
    acceptable (a pool worker, a benchmark).  ``score_completion`` is the safe entry point."""
    from math_verify import parse, verify

    g = []
    for reading in normalize_gold(gold):
        g += parse(reading, _configs(), parsing_timeout=None)
    if not g:
        return 0.0
    p = parse(normalize_completion(completion), _configs(), parsing_timeout=None)
    return 1.0 if p and verify(g, p, timeout_seconds=None) else 0.0


def _worker_init() -> None:  # pragma: no cover - runs in the pool's workers
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides our fate
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    _quiet_math_verify()


# --------------------------------------------------------------------------- the pool
_lock = threading.Lock()
_pool = None
_pool_pid = -1
_orphans: list = []  # pools inherited through fork: never stopped (their workers are not ours)


def _pool_size() -> int:
    try:
        return max(1, int(os.environ.get("TEACHLOOP_VERIFY_WORKERS", "")))
    except ValueError:
        return max(1, min(4, os.cpu_count() or 1))


def _get_pool():
    global _pool, _pool_pid
    with _lock:
        if _pool is not None and _pool_pid == os.getpid() and _pool.active:
            return _pool
        if _pool is not None and _pool_pid != os.getpid():
            _orphans.append(_pool)  # forked: the parent's pool, left alone
        import multiprocessing

        import math_verify  # noqa: F401 - imported once here, inherited by every forked worker
        from pebble import ProcessPool

        _quiet_math_verify()
        _configs()
        _pool = ProcessPool(max_workers=_pool_size(), max_tasks=2000, initializer=_worker_init,
                            context=multiprocessing.get_context("fork"))
        _pool_pid = os.getpid()
        return _pool


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _shutdown() -> None:
    if _pool is not None and _pool_pid == os.getpid():
        _pool.stop()
        _pool.join(timeout=5)


def score_completion(gold: str, completion: str, *, timeout_s: float = 5.0,
                     require_boxed: bool = False) -> float:
    """1.0 iff math-verify finds ``completion``'s final answer equivalent to ``gold``, else 0.0.

    Never raises on text and never runs past ``timeout_s`` of work (a timeout scores 0.0);
    thread- and fork-safe.  See the module docstring for the semantics.
    """
    if not isinstance(gold, str) or not isinstance(completion, str):
        return 0.0
    if not gold.strip() or not completion.strip() or len(gold) > MAX_GOLD_CHARS:
        return 0.0
    if require_boxed and not has_boxed(completion):
        return 0.0
    if len(completion) > MAX_SCAN_CHARS:
        if has_boxed(completion[:-MAX_SCAN_CHARS]):
            return 0.0  # a box the scan would not see: it could be the other half of a hedge
        if not has_boxed(completion[-MAX_SCAN_CHARS:]):
            # an unboxed answer in a completion this long is a guess among its numbers (200 KB
            # of "7 7 7 ..." would match gold 7): only a boxed final answer counts there. The
            # verdict must not depend on whether math-verify happens to time out on it.
            return 0.0
    try:
        timeout_s = min(max(float(timeout_s), 0.05), _MAX_TIMEOUT_S)
    except (TypeError, ValueError):
        timeout_s = 5.0
    if timeout_s != timeout_s:  # NaN
        timeout_s = 5.0
    for _attempt in range(2):
        try:
            future = _get_pool().schedule(score_local, args=(gold, completion[-MAX_SCAN_CHARS:]),
                                          timeout=timeout_s)
            return float(future.result())
        except concurrent.futures.TimeoutError:
            return 0.0
        except RuntimeError as e:  # pool stopped under us (interpreter exit, a broken pool)
            log.debug("math verification pool failed (%s); retrying once", e)
            continue
        except Exception:  # noqa: BLE001 - the worker died on this input, or math-verify raised
            log.debug("math verification of %r failed; 0.0", completion[-200:], exc_info=True)
            return 0.0
    return 0.0
