"""Math answer extraction and equivalence checking, safe under threads and forks.

Public API
----------
``verify_math(gold, answer, *, timeout_s=5.0) -> bool``
    True when ``answer`` is mathematically equivalent to ``gold`` according to
    math-verify (plus the normalisations below).  ``gold`` is normally the printed
    output of an executed Python program ("0.5", "3/4", "[1, 2]", "{1, 2}", "-7",
    "1e-3", "sqrt(2)/2", "2**10"); ``answer`` is a student's final answer in free text
    or LaTeX (a whole completion also works: the last ``\\boxed{}`` is used, and prose
    goes through math-verify's own extraction).
``extract_answer(text) -> str | None``
    The final answer of a completion: last ``\\boxed{...}`` (balanced braces), else the
    last "final answer is ..." / "answer: ..." / "answer is ..." line, else the last
    number; None when there is nothing.
``normalize_answer(s) -> str``
    Cheap, string-only canonical form used for the fast path (identical normalised
    strings are equivalent without starting a worker).

How the work is isolated
------------------------
math-verify's own timeouts use ``signal.alarm`` (main thread only), so they are
disabled (``parsing_timeout=None``, ``timeout_seconds=None``).  Parsing and comparison
run instead in small persistent helper processes started lazily from a *fresh*
interpreter (``subprocess`` + ``sys.executable``; the worker loads this file by path,
so neither the caller's ``__main__`` nor ``evals/__init__`` nor torch is imported
there).  A call that exceeds ``timeout_s`` SIGKILLs its worker, which is replaced
(the replacement is started at once, in the background) and the call returns False.
Each worker also limits its own address space (``TEACHLOOP_VERIFY_MEM_MB``, default
4096) and CPU time per request (``RLIMIT_CPU``), so an orphaned worker cannot spin
forever.  Workers form a pool (``TEACHLOOP_VERIFY_WORKERS``, default
``min(4, cpu_count)``); any number of threads may call ``verify_math`` concurrently.
After ``os.fork`` the child notices the pid change and starts its own workers (the
parent's are left untouched).  ``timeout_s`` bounds the work of one call inside a
worker; time spent waiting for a free worker or for a worker to start is not counted.
Failure to start a worker at all raises ``RuntimeError`` (rather than silently
scoring everything False).  POSIX only (``select`` on pipes, ``resource``).

Semantics (decisions, also pinned in tests/test_answers.py)
-----------------------------------------------------------
* Numbers: exact for integers/fractions; if either side is a decimal (Float),
  math-verify rounds both to 6 decimals ("1/3" == "0.333333", "0.333" != "1/3",
  Python float noise "0.30000000000000004" == "0.3").  Extra guard added here: when
  both sides are plain numbers below 1e-2 in magnitude, they must also agree to a
  relative 1e-4 (math-verify alone says "1e-9" == "0" and "1e-7" == "2e-7").
* Scientific notation ("1e-3", "2.5E+10") is rewritten to a plain decimal before
  parsing (LaTeX would read it as 1*e - 3).
* Percent: "30%" == "30" and "30%" == "0.3" (math-verify's convention).
* Units and currency are stripped and *not* checked: "5 cm" == "5" == "5 m",
  "\\$12" == "12 dollars" == "12", "45°" == "45^\\circ" == "45".
* Thousands separators: "1,000" / "1{,}000" / "1\\,000" == "1000" (a whole answer of
  the form d{1,3}(,ddd)+ is read as one number, never as a list).
* Sets: "{1, 2}" (Python) == "\\{2,1\\}" == "1, 2".  Python "set()" == "\\emptyset".
* Square-bracket lists with two elements are ambiguous (closed interval in LaTeX,
  list in Python).  "[a, b]" is read both ways: "[1, 2]" matches "[1,2]", "1, 2" and
  "\\{1,2\\}", but never "(1,2)", "[1,2)" or "(1,2]".  Lists are compared as sets
  (order and multiplicity ignored); Python tuples "(1, 2)" keep math-verify's
  reading (open interval / ordered tuple).  Intervals are otherwise exact:
  "[0,1)" != "[0,1]", "(0, 1]" == "\\left(0,1\\right]".
* Python/sympy output syntax in plain strings: "**" -> power, "pi" -> \\pi,
  "oo"/"inf" -> \\infty, "sin(x)"/"log(2)"/"exp(1)" -> LaTeX functions,
  "sqrt(2)/2" == "\\frac{\\sqrt{2}}{2}", numpy "[1 2 3]" -> "[1, 2, 3]".
  Python "log(x)" (natural log) becomes "\\ln(x)"; note math-verify reads a
  student's LaTeX "\\log x" as log base 10 (kept).
* math-verify equates a finite set with the open interval of its two elements
  ("\\{1,2\\}" == "(1,2)"); kept, except for the list reading above.
* Symbolic expressions: "x^2+2x+1" == "(x+1)^2"; variable names matter (strict).
* "x = 5" == "5" (math-verify's assignment handling).
* Word answers ("Yes", "True", "no solution") compare case-insensitively as strings.
* Anything empty or unparseable on either side is False.

Not covered: complex numbers in Python syntax ("1+2j"), matrices/arrays beyond flat
lists, unit conversion (units are ignored, not converted), degrees vs radians,
multiple-choice letters, equivalence of different word answers, sympy objects printed
in constructor form ("Interval.Ropen(0, 1)", "FiniteSet(1, 2)"), and answers longer
than ``_MAX_LEN`` characters (False).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal, InvalidOperation

__all__ = ["verify_math", "extract_answer", "normalize_answer"]

_MAX_LEN = 20_000  # longer gold/answer strings are rejected outright
_STARTUP_TIMEOUT_S = 120.0  # worker import of sympy/math-verify on a slow box
_TINY = 1e-2  # below this magnitude numbers also need relative agreement
_TINY_REL_TOL = 1e-4


# ---------------------------------------------------------------------------
# String helpers (pure, linear-time; run in the caller's thread)
# ---------------------------------------------------------------------------


def _last_braced_after(text: str, commands: tuple[str, ...]) -> str | None:
    """Contents of the last ``\\cmd{...}`` (balanced braces) for cmd in commands."""
    best_start = -1
    best_cmd = ""
    for cmd in commands:
        i = text.rfind(cmd)
        # skip e.g. "\boxedx" (command prefix of a longer name)
        while i >= 0:
            after = text[i + len(cmd) : i + len(cmd) + 1]
            if not (after.isalpha()):
                break
            i = text.rfind(cmd, 0, i)
        if i > best_start:
            best_start, best_cmd = i, cmd
    if best_start < 0:
        return None
    j = best_start + len(best_cmd)
    n = len(text)
    while j < n and text[j] in " \t":
        j += 1
    if j >= n:
        return None
    if text[j] != "{":
        # "\boxed 5": one token
        m = re.match(r"[^\s$]+", text[j:])
        return m.group(0) if m else None
    depth = 0
    for k in range(j, n):
        c = text[k]
        if c == "\\":
            continue
        if c == "{" and text[k - 1] != "\\":
            depth += 1
        elif c == "}" and text[k - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[j + 1 : k]
    return None  # unbalanced


_BOX_CMDS = ("\\boxed", "\\fbox")


def _strip_math_delims(s: str) -> str:
    while True:
        t = s.strip()
        if len(t) >= 4 and t.startswith("$$") and t.endswith("$$") and "$" not in t[2:-2]:
            s = t[2:-2]
        elif len(t) >= 2 and t[0] == "$" and t[-1] == "$" and "$" not in t[1:-1].replace("\\$", ""):
            s = t[1:-1]
        elif t.startswith("\\(") and t.endswith("\\)") and "\\(" not in t[2:-2]:
            s = t[2:-2]
        elif t.startswith("\\[") and t.endswith("\\]") and "\\[" not in t[2:-2]:
            s = t[2:-2]
        else:
            return t


def _balanced_group_end(s: str, start: int, open_c: str = "{", close_c: str = "}") -> int:
    """Index of the brace closing the one at ``start``; -1 if unbalanced."""
    depth = 0
    for k in range(start, len(s)):
        if s[k] == open_c:
            depth += 1
        elif s[k] == close_c:
            depth -= 1
            if depth == 0:
                return k
    return -1


_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mathit|mbox|operatorname)\s*\{")


def _unwrap_text(s: str) -> str:
    while True:
        m = _TEXT_WRAP_RE.match(s)
        if not m:
            return s
        end = _balanced_group_end(s, m.end() - 1)
        if end != len(s) - 1:
            return s
        s = s[m.end() : end].strip()


_UNIT_WORDS = {
    # length / area / volume
    "mm", "cm", "m", "km", "in", "inch", "inches", "ft", "feet", "foot", "yd", "yard",
    "yards", "mi", "mile", "miles", "meter", "meters", "metre", "metres", "centimeter",
    "centimeters", "millimeter", "millimeters", "kilometer", "kilometers", "ml", "mL", "l",
    "L", "liter", "liters", "litre", "litres", "gallon", "gallons", "cc",
    # mass / time / speed
    "g", "kg", "mg", "gram", "grams", "kilogram", "kilograms", "lb", "lbs", "pound",
    "pounds", "oz", "ounce", "ounces", "ton", "tons", "s", "sec", "secs", "second",
    "seconds", "min", "mins", "minute", "minutes", "h", "hr", "hrs", "hour", "hours",
    "day", "days", "week", "weeks", "month", "months", "year", "years", "mph", "kph",
    # money / misc
    "dollar", "dollars", "cent", "cents", "usd", "USD", "euro", "euros", "unit", "units",
    "sq", "square", "cubic", "degree", "degrees", "deg", "point", "points", "per",
    "people", "students", "apples", "items", "ways", "times",
}
# words that are mathematics, never units
_MATH_WORDS = {
    "pi", "e", "i", "oo", "inf", "infty", "infinity", "sqrt", "sin", "cos", "tan", "cot",
    "sec", "csc", "log", "ln", "exp", "arcsin", "arccos", "arctan", "frac", "and", "or",
    "mod",
}
_UNIT_TAIL_RE = re.compile(
    r"(?:\s|\\[,;: !]|~)*"
    r"(?:"
    r"\\(?:text|mathrm|mbox|textrm)\s*\{[^{}]*\}"  # \text{ cm}
    r"|[A-Za-z]+(?:\s+[A-Za-z]+){0,2}"  # plain words (checked below)
    r")"
    r"(?:\s*\^\s*(?:\{?\s*[23]\s*\}?))?"  # ^2 / ^{3}
    r"\s*$"
)
_DEGREE_RE = re.compile(r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|°|\\degree)\s*$")
_CURRENCY_PREFIX_RE = re.compile(r"^(?:\\\$|\$|US\$|USD|€|£|¥|₹|\\euro|\\pounds)\s*(?=[-+]?\.?\d)")
_CURRENCY_SUFFIX_RE = re.compile(r"(?<=\d)\s*(?:€|£|¥|₹|\\\$|\$)$")
_CMD_RE = re.compile(r"\\[A-Za-z]+")


def _strip_units(s: str) -> str:
    if len(s) > 200:  # units only follow short answers; keeps the regexes cheap
        return s
    s = _CURRENCY_PREFIX_RE.sub("", s)
    s = _CURRENCY_SUFFIX_RE.sub("", s)
    for _ in range(3):
        before = s
        s = _DEGREE_RE.sub("", s).rstrip()
        m = _UNIT_TAIL_RE.search(s)
        if m and m.start() > 0:
            head, tail = s[: m.start()], s[m.start() :]
            # the part before the unit must be a number-like expression
            if re.search(r"\d", head) and not re.search(r"[A-Za-z]", _CMD_RE.sub("", head)):
                tail_s = tail.strip()
                if tail_s.startswith("\\"):
                    ok = True  # \text{...} after a number is a unit
                else:
                    words = re.findall(r"[A-Za-z]+", tail_s)
                    spaced = tail[:1].isspace() or tail.startswith("\\") or tail.startswith("~")
                    ok = bool(words) and all(
                        w not in _MATH_WORDS
                        and (
                            (w in _UNIT_WORDS and (spaced or len(w) >= 2))
                            or (spaced and len(w) >= 3)
                        )
                        for w in words
                    )
                if ok:
                    s = head.rstrip()
                    s = re.sub(r"(?:\\[,;: !]|~)+$", "", s).rstrip()
        if s == before:
            break
    return s


_SCI_RE = re.compile(r"(?<![\w.])(\d+\.?\d*|\.\d+)[eE]([-+]?\d+)(?![\w.])")


def _sci_to_decimal(m: re.Match) -> str:
    """"1e-3" -> "0.001" (kept a decimal so it parses as a Float, like Python's)."""
    mant, exp = m.group(1), int(m.group(2))
    if abs(exp) > 60:
        return f"({mant}\\times 10^{{{exp}}})"
    try:
        out = format(Decimal(f"{mant}e{exp}"), "f")
    except InvalidOperation:
        return m.group(0)
    if "." in out:
        out = out.rstrip("0")
    else:
        out += "."
    return out + "0" if out.endswith(".") else out


_PY_FUNCS = ("arcsin", "arccos", "arctan", "sin", "cos", "tan", "ln", "exp")
_POW_TOKEN_RE = re.compile(r"[A-Za-z0-9_.]+")


def _read_exponent(s: str, i: int) -> tuple[str, int]:
    """Operand of ``**`` starting at ``i`` (right-associative chains included)."""
    n = len(s)
    while i < n and s[i] == " ":
        i += 1
    j = i
    if j < n and s[j] in "+-":
        j += 1
    if j < n and s[j] == "(":
        end = _balanced_group_end(s, j, "(", ")")
        if end < 0:
            return s[i:], n
        operand = s[i:j] + "(" + _py_power(s[j + 1 : end]) + ")"
        k = end + 1
    else:
        m = _POW_TOKEN_RE.match(s, j)
        if not m:
            return s[i:j], j
        operand = s[i : m.end()]
        k = m.end()
    rest = k
    while rest < n and s[rest] == " ":
        rest += 1
    if s.startswith("**", rest):
        sub, k = _read_exponent(s, rest + 2)
        operand = operand + "^{" + sub + "}"
    return operand, k


def _py_power(s: str) -> str:
    """Rewrite Python ``a**b`` as LaTeX ``a^{b}`` (right-associative, balanced)."""
    out = []
    i = 0
    n = len(s)
    while i < n:
        if s.startswith("**", i):
            exp, i = _read_exponent(s, i + 2)
            out.append("^{" + exp + "}")
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _python_to_latex(s: str) -> str:
    """Plain-text/Python-printed syntax to something math-verify's LaTeX parser reads."""
    if s in ("set()", "frozenset()", "{}"):
        return "\\emptyset"
    s = _SCI_RE.sub(_sci_to_decimal, s)
    # numpy arrays print as "[1 2 3]" / "[1. 2.5]"
    if re.fullmatch(r"\[\s*[-+]?[\d.]+(?:\s+[-+]?[\d.]+)+\s*\]", s):
        s = "[" + ", ".join(s[1:-1].split()) + "]"
    if "**" in s:
        s = _py_power(s)
    s = re.sub(r"\b(?:oo|inf|infinity|Infinity)\b", r"\\infty ", s)
    s = re.sub(r"\bpi\b", r"\\pi ", s)
    s = re.sub(r"\blog\s*\(", r"\\ln(", s)  # Python/sympy log is the natural log
    s = re.sub(r"\b(" + "|".join(_PY_FUNCS) + r")\s*\(", r"\\\1(", s)
    return s


def _prepare(s: str) -> str:
    """Cleanup shared by the fast path and the worker; keeps %, spacing meaningful."""
    s = str(s).strip()
    if not s:
        return ""
    boxed = _last_braced_after(s, _BOX_CMDS)
    if boxed is not None:
        s = boxed.strip()
    s = _strip_math_delims(s)
    # markdown bold / trailing sentence punctuation
    s = re.sub(r"^\*\*(.*)\*\*$", r"\1", s).strip()
    s = s.rstrip(" \t\n.;,")
    s = _strip_math_delims(s)
    if "\\" not in s:
        s = _python_to_latex(s)
    s = re.sub(r"\\(?:left|right)\s*\.", "", s)
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])\s*", "", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = s.replace("{,}", ",").replace("\\!", "")
    s = re.sub(r"(?<=\d)(?:\\[,;: ]|~)(?=\d{3}(?!\d))", "", s)  # 1\,000
    s = _unwrap_text(s.strip())
    s = s.rstrip(" \t\n.;,")
    s = _strip_units(s)
    s = s.strip()
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    return s


def normalize_answer(s: str | None) -> str:
    """Canonical string for the no-worker fast path ("" for nothing).

    Equal outputs imply equivalent answers; different outputs imply nothing.
    """
    if s is None:
        return ""
    s = str(s)
    if len(s) > _MAX_LEN:
        return s.strip()
    try:
        t = _prepare(s)
    except RecursionError:  # absurdly nested input; no fast path for it
        return s.strip()
    t = re.sub(r"\s*(?:\\%|%|\s+percent)$", "", t)
    t = re.sub(r"\s+", "", t)
    t = re.sub(r"\\[,;: !]|~", "", t)
    if t.startswith("+"):
        t = t[1:]
    if re.fullmatch(r"[A-Za-z]{2,}", t):
        t = t.casefold()
    return t


# ---------------------------------------------------------------------------
# extract_answer
# ---------------------------------------------------------------------------

_ANSWER_ANCHOR_RE = re.compile(r"(?i)\banswer\b(?:\*\*)?\s*(?:is\b|:|=)(?:\*\*)?\s*[:=]?\s*")
_LAST_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?![\d])|-?\.\d+")


def extract_answer(text: str | None) -> str | None:
    """Final answer of a completion (see module docstring); None if none found."""
    if not text:
        return None
    text = str(text)
    boxed = _last_braced_after(text, _BOX_CMDS)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    for line in reversed(text.splitlines()):
        matches = list(_ANSWER_ANCHOR_RE.finditer(line))
        if not matches:
            continue
        ans = line[matches[-1].end() :].strip()
        # "The final answer is $9$. I hope it is correct." -> "$9$"
        ans = re.split(r"\.\s+(?=[A-Z])", ans, maxsplit=1)[0]
        ans = re.sub(r"^\*\*|\*\*$", "", ans).strip()
        ans = ans.rstrip(" .;,").strip()
        ans = re.sub(r"^\*\*|\*\*$", "", ans).strip()
        ans = _strip_math_delims(ans).strip()
        if ans:
            return ans
    nums = _LAST_NUMBER_RE.findall(text)
    if nums:
        return nums[-1]
    return None


# ---------------------------------------------------------------------------
# Worker side: parsing and comparison (runs only inside helper processes)
# ---------------------------------------------------------------------------

_PROSE_WORD_RE = re.compile(r"[A-Za-z]{3,}")
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")


def _is_prose(t: str) -> bool:
    stripped = re.sub(r"\\(?:text|mathrm|mbox)\s*\{[^{}]*\}", " ", t)
    stripped = _CMD_RE.sub(" ", stripped)
    words = [w for w in _PROSE_WORD_RE.findall(stripped) if w.lower() not in _MATH_WORDS]
    return len(words) >= 2


def _split_top_level(inner: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for c in inner:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def _candidates(s: str) -> list[tuple[object, bool]]:
    """Possible readings of one side: (math-verify parse result, is_list_reading).

    ``is_list_reading`` marks the set reading of a "[a, b, ...]" list; it is never
    compared with an interval (math-verify equates {a, b} with the open interval
    (a, b), which must not make "[0, 1]" match "(0, 1)").
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]

    def _parse(x: str) -> list:
        return parse(x, configs, parsing_timeout=None)

    def _has_expr(res: list) -> bool:
        return any(not isinstance(r, str) for r in res)

    raw = str(s)
    t = _prepare(raw)
    if not t:
        return []
    if _is_prose(t):
        return [(r, False) for r in _parse(raw) if not isinstance(r, str)]
    if re.fullmatch(r"[A-Za-z]+(?: [A-Za-z]+)*", t) and (
        len(t) >= 3 and t.lower() not in _MATH_WORDS
    ):
        return [(t.casefold(), False)]
    pct = re.fullmatch(r"(.*?)\s*(?:\\%|%)", t)
    num_str = pct.group(1) if pct else t
    if _PLAIN_NUMBER_RE.fullmatch(num_str):
        import sympy
        from latex2sympy2_extended.latex2sympy2 import convert_to_pct

        num = sympy.Number(num_str.lstrip("+"))
        return [(convert_to_pct(num) if pct else num, False)]

    res = _parse("$" + t + "$")
    if not _has_expr(res) and raw.strip() != t:
        res = _parse(raw)
    out = [(r, False) for r in res]
    # square-bracket list: also read as an (unordered) collection of values
    if len(t) >= 2 and t[0] == "[" and t[-1] == "]":
        inner = t[1:-1]
        if _balanced_group_end(t, 0, "[", "]") == len(t) - 1:
            parts = _split_top_level(inner)
            if len(parts) >= 2 and all(p.strip() for p in parts):
                out += [(r, True) for r in _parse("$\\{" + inner + "\\}$")]
    return out


def _plain_number(x):
    """float value when x is a real sympy number (not a percentage), else None."""
    import sympy

    if isinstance(x, sympy.Number) and x.is_real and x.is_finite:
        return float(x)
    return None


def _tiny_ok(g, a) -> bool:
    """Reject math-verify's 6-decimal rounding verdicts on tiny numbers."""
    import sympy

    gv, av = _plain_number(g), _plain_number(a)
    if gv is None or av is None:
        return True
    if not (isinstance(g, sympy.Float) or isinstance(a, sympy.Float)):
        return True
    m = max(abs(gv), abs(av))
    if m == 0 or m >= _TINY:
        return True
    return abs(gv - av) <= _TINY_REL_TOL * m


def _verify_local(gold: str, answer: str) -> bool:
    """Parse + verify in this process, no timeout.  Only call inside a worker."""
    from math_verify import verify

    if not gold or not answer or len(gold) > _MAX_LEN or len(answer) > _MAX_LEN:
        return False
    g_c = _candidates(gold)
    if not g_c:
        return False
    a_c = _candidates(answer)
    if not a_c:
        return False
    from sympy import Interval

    for g, g_list in g_c:
        for a, a_list in a_c:
            if (g_list and isinstance(a, Interval)) or (a_list and isinstance(g, Interval)):
                continue
            if verify(g, a, timeout_seconds=None) and _tiny_ok(g, a):
                return True
    return False


def _worker_main() -> None:  # pragma: no cover - runs in the helper process
    """Request loop of a helper process: JSON lines on stdin, JSON lines out."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides our fate
    try:
        import resource

        mem_mb = int(os.environ.get("TEACHLOOP_VERIFY_MEM_MB", "4096"))
        if mem_mb > 0:
            lim = mem_mb * 1024 * 1024
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard == resource.RLIM_INFINITY or hard > lim:
                resource.setrlimit(resource.RLIMIT_AS, (lim, hard))
    except (ImportError, ValueError, OSError):
        resource = None  # type: ignore[assignment]
    import logging

    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    import math_verify.grader
    import math_verify.parser

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    _verify_local("1", "1")  # warm up antlr / sympy caches before "ready"
    out.write("ready\n")
    for line in sys.stdin:
        try:
            req = json.loads(line)
        except ValueError:
            continue
        if resource is not None:
            try:
                ru = resource.getrusage(resource.RUSAGE_SELF)
                used = ru.ru_utime + ru.ru_stime
                soft = int(math.ceil(used + float(req.get("timeout", 5.0)) + 5))
                _, hard = resource.getrlimit(resource.RLIMIT_CPU)
                if hard == resource.RLIM_INFINITY or soft < hard:
                    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
            except (ValueError, OSError):
                pass
        err = None
        try:
            ok = bool(_verify_local(req["gold"], req["answer"]))
        except BaseException as e:  # MemoryError, RecursionError, anything
            ok, err = False, f"{type(e).__name__}: {e}"[:500]
        out.write(json.dumps({"id": req.get("id"), "ok": ok, "error": err}) + "\n")


# ---------------------------------------------------------------------------
# Caller side: worker handles and pool
# ---------------------------------------------------------------------------

_BOOT = (
    "import sys\n"
    "sys.path[:] = [p for p in sys.path if p not in ('', '.')]\n"
    "import importlib.util\n"
    "spec = importlib.util.spec_from_file_location('_teachloop_answers_worker', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = mod\n"
    "spec.loader.exec_module(mod)\n"
    "mod._worker_main()\n"
)


class _WorkerDied(Exception):
    pass


class _Timeout(Exception):
    pass


class _WorkerGone(Exception):
    """The worker was already dead before the request was sent (safe to retry)."""


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            close_fds=True,
            env=env,
            bufsize=0,
        )
        self.ready = False
        self._buf = b""
        self._next_id = 0

    def _readline(self, deadline: float) -> str:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout()
            r, _, _ = select.select([fd], [], [], remaining)
            if not r:
                raise _Timeout()
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _WorkerDied(f"worker exited (rc={self.proc.poll()})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace")

    def wait_ready(self) -> None:
        if self.ready:
            return
        try:
            line = self._readline(time.monotonic() + _STARTUP_TIMEOUT_S)
        except _Timeout:
            raise _WorkerDied("worker did not start in time") from None
        if line.strip() != "ready":
            raise _WorkerDied(f"unexpected worker greeting {line[:200]!r}")
        self.ready = True

    def call(self, gold: str, answer: str, timeout_s: float) -> bool:
        self._next_id += 1
        req = {"id": self._next_id, "gold": gold, "answer": answer, "timeout": timeout_s}
        data = (json.dumps(req) + "\n").encode()
        if self.proc.poll() is not None:
            raise _WorkerGone()
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _WorkerGone() from None
        deadline = time.monotonic() + timeout_s
        while True:
            line = self._readline(deadline)
            try:
                resp = json.loads(line)
            except ValueError:
                continue
            if resp.get("id") == self._next_id:
                return bool(resp.get("ok"))

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._close_fds()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_fds()

    def _close_fds(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass


def _default_pool_size() -> int:
    env = os.environ.get("TEACHLOOP_VERIFY_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    return max(1, min(4, os.cpu_count() or 1))


class _Pool:
    def __init__(self, size: int) -> None:
        self.pid = os.getpid()
        self.size = size
        self.cond = threading.Condition()
        self.idle: list[_Worker] = []
        self.count = 0  # workers alive or being started (idle + busy)
        self.closed = False

    def acquire(self) -> _Worker:
        with self.cond:
            while True:
                if self.idle:
                    return self.idle.pop()
                if self.count < self.size:
                    self.count += 1
                    break
                self.cond.wait()
        try:
            return _Worker()
        except BaseException:
            with self.cond:
                self.count -= 1
                self.cond.notify()
            raise

    def release(self, w: _Worker) -> None:
        with self.cond:
            if self.closed:
                w.close()
                return
            self.idle.append(w)
            self.cond.notify()

    def discard(self, w: _Worker, respawn: bool) -> None:
        """Kill ``w``; start its replacement right away so the next call is warm."""
        w.kill()
        new = None
        if respawn and not self.closed:
            try:
                new = _Worker()
            except OSError:
                new = None
        with self.cond:
            if new is not None:
                self.idle.append(new)
            else:
                self.count -= 1
            self.cond.notify()

    def shutdown(self) -> None:
        with self.cond:
            self.closed = True
            idle, self.idle = self.idle, []
        for w in idle:
            w.close()


_pool_lock = threading.Lock()
_pool: _Pool | None = None


def _get_pool() -> _Pool:
    global _pool, _pool_lock
    p = _pool
    if p is not None and p.pid == os.getpid():
        return p
    if p is not None and p.pid != os.getpid():
        _after_fork_in_child()
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = _Pool(_default_pool_size())
        return _pool


def _after_fork_in_child() -> None:
    """Forget the parent's workers (never signal them) and any held locks."""
    global _pool, _pool_lock
    _pool_lock = threading.Lock()
    old, _pool = _pool, None
    if old is not None:
        for w in old.idle:
            w._close_fds()  # our copies of the parent's pipes only
            w.proc.returncode = 0  # stop Popen.__del__ from tracking a non-child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _shutdown_pool() -> None:
    p = _pool
    if p is not None and p.pid == os.getpid():
        p.shutdown()


def verify_math(gold: str, answer: str, *, timeout_s: float = 5.0) -> bool:
    """True iff ``answer`` is mathematically equivalent to ``gold``.

    Thread- and fork-safe; never hangs longer than ``timeout_s`` of worker time
    (pathological inputs return False).  See the module docstring for semantics.
    """
    if gold is None or answer is None:
        return False
    gold, answer = str(gold), str(answer)
    if not gold.strip() or not answer.strip():
        return False
    if len(gold) > _MAX_LEN or len(answer) > _MAX_LEN:
        return False
    ng, na = normalize_answer(gold), normalize_answer(answer)
    if ng and ng == na:
        return True
    if not ng or not na:
        return False
    try:
        timeout_s = float(timeout_s)
    except (TypeError, ValueError):
        timeout_s = 5.0
    if not timeout_s > 0.05:  # also catches NaN
        timeout_s = 0.05
    pool = _get_pool()
    for _attempt in range(pool.size + 2):  # skip workers that died while idle
        w = pool.acquire()
        try:
            w.wait_ready()
        except _WorkerDied as e:
            pool.discard(w, respawn=False)
            raise RuntimeError(f"math verification worker failed to start: {e}") from None
        except BaseException:
            pool.discard(w, respawn=False)
            raise
        try:
            ok = w.call(gold, answer, timeout_s)
        except _Timeout:
            pool.discard(w, respawn=True)
            return False
        except _WorkerGone:
            # died while idle (e.g. killed from outside): retry on another worker
            pool.discard(w, respawn=True)
            continue
        except _WorkerDied:
            # crashed on this very input (segfault, rlimit): that input is False
            pool.discard(w, respawn=True)
            return False
        except BaseException:
            pool.discard(w, respawn=True)  # e.g. KeyboardInterrupt mid-call
            raise
        pool.release(w)
        return ok
    return False
