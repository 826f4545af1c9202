"""Execution harness of the code families: call untrusted ``f`` on inputs, or run a test suite,
inside ``teachloop.evals.sandbox.run_python``, and read the results back without trusting the program.

Used by code.deduction / code.abduction / code.induction (``run_calls``) and code.generation
(``run_check``), for teacher proposals (gold outputs, METHODS.md §1: "gold outputs always
obtained by executing the teacher's f") and for student answers alike.  Nothing is ever
``exec``-ed in this process; inputs are checked to be Python literals here before they travel.

What is covered
    - The request (code, inputs, tests) and a random per-call marker travel on the program's
      stdin; the harness reads stdin to EOF and closes fd 0 *before* any user code runs, so the
      marker is in no file, argument, source line or readable descriptor.  Results come back as
      marker-prefixed lines (hex-encoded payloads) written with a private dup of fd 1; the host
      accepts a run only with exactly one header and one trailer line carrying the marker, so
      output that imitates the protocol is just output.
    - Before user code runs, an audit hook (which Python code cannot remove) blocks the ways to
      read the marker back out of the harness: frame access (``sys._getframe``,
      ``tb_frame``/``gi_frame``/``cr_frame``/``ag_frame``, ``sys.settrace``/``setprofile``),
      ``gc`` object walks, ``ctypes``, ``/proc/*/mem``-style files, new processes, and
      re-binding a function's ``__code__``.  ``sys._getframe`` fails with ``ValueError`` so stdlib
      helpers that fall back on it (``namedtuple``, ``typing.NamedTuple``) still work.
    - Every builtin the harness uses after user code has run is bound to a local first, so
      patching ``builtins``/``json`` cannot change how results are encoded.  Results are
      rendered by the harness itself from *exact* builtin types only (None, bool, int, float,
      complex, str, bytes, list, tuple, dict, set, frozenset; recursion and size capped); any
      other object (a subclass with a lying ``__repr__`` or ``__eq__``) is an error, never a match.
      Sets render sorted, so their repr does not depend on the hash seed.
    - ``run_check`` runs the tests in their own namespace (the problem's prompt executed there
      first, for its helpers), whose builtins are a snapshot taken before the solution ran,
      and hands ``check`` a guard around the candidate that rejects non-plain return values
      (the "object whose ``__eq__`` is always True" hack).

What is not covered
    - A solution may still patch shared modules that the tests import (``math.isclose``...), and
      a determined program can always make *itself* fail.  Per-call time limits do not exist:
      one slow call times the whole run out.  Python-level hardening, not a proof: the sandbox
      (evals/sandbox.py) is what protects the host.
"""

from __future__ import annotations

import ast
import json
import secrets
from dataclasses import asdict, dataclass, field

from teachloop.evals import sandbox

__all__ = [
    "CallOutcome",
    "HarnessRun",
    "MAX_REPR_CHARS",
    "literal_args",
    "normalize_args",
    "outputs_match",
    "run_calls",
    "run_check",
]

MAX_REPR_CHARS = 100_000  # a rendered output longer than this is an error
MAX_LITERAL_CHARS = 20_000  # student answers / inputs longer than this are not parsed

# The program that runs inside the sandbox.  Everything lives in one function so that the marker
# is a local (reachable only through frames, which the audit hook blocks).
_HARNESS = r'''
def _teachloop_harness():
    import os, sys, io, ast, builtins
    _chunks = []
    while True:
        _b = os.read(0, 1 << 16)
        if not _b:
            break
        _chunks.append(_b)
    os.close(0)
    sys.stdin = io.StringIO("")
    import json as _json
    req = _json.loads(b"".join(_chunks).decode("utf-8"))
    del _chunks
    marker = req["marker"]
    out_fd = os.dup(1)
    _write, _type, _repr, _len, _str, _range = os.write, type, repr, len, str, range
    _sorted, _BaseException, _callable, _getattr = sorted, BaseException, callable, getattr
    _enumerate, _dict, _list, _tuple, _set = enumerate, dict, list, tuple, set
    _frozenset, _int, _float, _bool, _complex, _bytes = frozenset, int, float, bool, complex, bytes
    _NoneType, _FunctionType = type(None), type(lambda: 0)
    _ValueError, _AttributeError, _RuntimeError = ValueError, AttributeError, RuntimeError
    _PermissionError, _exec, _compile = PermissionError, exec, compile
    clean_builtins = _dict(builtins.__dict__)
    lines = []

    def emit(*parts):
        lines.append(marker + " " + " ".join(parts))

    def hx(s):
        return _str(s).encode("utf-8", "backslashreplace").hex()

    class _TooBig(Exception):
        pass

    class _NotPlain(Exception):
        pass

    _scalars = (_NoneType, _bool, _int, _float, _complex, _str, _bytes)
    budget = [0]

    def canon(x, depth):
        t = _type(x)
        if depth > 60:
            raise _TooBig("output nested too deeply")
        if t in _scalars:
            r = _repr(x)
        elif t is _list:
            r = "[" + ", ".join([canon(e, depth + 1) for e in x]) + "]"
        elif t is _tuple:
            parts = [canon(e, depth + 1) for e in x]
            r = "(" + parts[0] + ",)" if _len(parts) == 1 else "(" + ", ".join(parts) + ")"
        elif t is _dict:
            r = "{" + ", ".join([canon(k, depth + 1) + ": " + canon(v, depth + 1) for k, v in x.items()]) + "}"
        elif t is _set or t is _frozenset:
            parts = _sorted([canon(e, depth + 1) for e in x])
            if not parts:
                r = "set()" if t is _set else "frozenset()"
            else:
                r = "{" + ", ".join(parts) + "}"
                if t is _frozenset:
                    r = "frozenset(" + r + ")"
        else:
            raise _NotPlain("output of type " + _str(t.__name__)[:80] + " is not a plain Python value")
        budget[0] += _len(r)
        if budget[0] > req["max_repr"]:
            raise _TooBig("output too large")
        return r

    def plain(x):
        budget[0] = 0
        return canon(x, 0)

    def err_text(e):
        try:
            name = _type(e).__name__
            name = name if _type(name) is _str else "Exception"
        except _BaseException:
            name = "Exception"
        try:
            msg = _str(e)
            msg = msg if _type(msg) is _str else ""
        except _BaseException:
            msg = ""
        return (name + (": " + msg if msg else ""))[:300]

    # parse every input before any user code exists (ast could be patched afterwards)
    calls = []
    for src in req.get("inputs", []):
        try:
            calls.append((True, ast.literal_eval("(" + src + ",)")))
        except _BaseException as e:
            calls.append((False, err_text(e)))

    # --- the audit hook: no way back to the marker ---------------------------------------
    _blocked = {"sys._current_frames", "sys.settrace", "sys.setprofile", "gc.get_objects",
                "gc.get_referrers", "gc.get_referents", "subprocess.Popen", "os.system",
                "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn",
                "sys._current_exceptions", "sys.monitoring.register_callback"}
    _frame_attrs = {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"}

    def _hook(event, args):
        if event == "sys._getframe":
            raise _ValueError("frame access is disabled in the harness")
        if event == "object.__getattr__":
            if _len(args) > 1 and args[1] in _frame_attrs:
                raise _AttributeError("frame access is disabled in the harness")
            return
        if event == "object.__setattr__":
            if _len(args) > 1 and args[1] == "__code__":
                raise _RuntimeError("code replacement is disabled in the harness")
            return
        if event == "open":
            p = args[0] if args else None
            if _type(p) is _bytes:
                p = p.decode("utf-8", "replace")
            if _type(p) is _str and (p.startswith("/proc/") or p.startswith("/dev/fd")
                                     or p == "/dev/stdin" or p.startswith("/dev/mem")):
                if ("/mem" in p or "/fd" in p or "map_files" in p or "/stdin" in p
                        or "/environ" in p or "/syscall" in p):
                    raise _PermissionError("this file is disabled in the harness")
            return
        if event in _blocked or event.startswith("ctypes.") or event.startswith("_posixsubprocess"):
            raise _RuntimeError(event + " is disabled in the harness")

    sys.addaudithook(_hook)

    def load(code, namespace):
        try:
            _exec(_compile(code, "<solution>", "exec"), namespace)
            return None
        except _BaseException as e:
            return err_text(e)

    def pick(ns, name, lenient):
        fn = ns.get(name)
        if _callable(fn):
            return fn
        if lenient:
            fns = [v for k, v in _list(ns.items()) if _type(v) is _FunctionType and k[:1] != "_"]
            if fns:
                return fns[-1]
        return None

    mode = req["mode"]
    ns = {"__name__": "__solution__", "__builtins__": builtins}
    setup = load(req["code"], ns)
    if mode == "calls":
        if setup is not None:
            emit("S", "err", hx("code failed to load: " + setup))
        else:
            fn = pick(ns, req["fn_name"], req.get("lenient", False))
            if fn is None:
                emit("S", "err", hx("no function named " + req["fn_name"] + " is defined"))
            else:
                emit("S", "ok", "")
                for i, (parsed, args) in _enumerate(calls):
                    if not parsed:
                        emit("C", _str(i), "err", hx("input is not a literal: " + args))
                        continue
                    try:
                        out = fn(*args)
                    except _BaseException as e:
                        emit("C", _str(i), "err", hx(err_text(e)))
                        continue
                    try:
                        emit("C", _str(i), "ok", hx(plain(out)))
                    except _BaseException as e:
                        emit("C", _str(i), "err", hx(err_text(e)))
    else:  # "check": tests against the solution
        if setup is not None:
            emit("S", "err", hx("solution failed to load: " + setup))
        else:
            cand = ns.get(req["entry_point"])
            if not _callable(cand):
                emit("S", "err", hx("no function named " + req["entry_point"] + " is defined"))
            else:
                def guarded(*a, **k):
                    r = cand(*a, **k)
                    plain(r)  # raises on objects that are not plain values
                    return r
                tns = {"__name__": "__tests__", "__builtins__": _dict(clean_builtins)}
                terr = load(req.get("prelude") or "", tns)  # the prompt: helpers the tests use
                tns[req["entry_point"]] = guarded
                terr = terr or load(req["tests"], tns)
                if terr is not None:
                    emit("S", "err", hx("tests failed to load: " + terr))
                else:
                    emit("S", "ok", "")
                    check = tns.get("check")
                    try:
                        if not _callable(check):
                            raise _RuntimeError("the tests define no check()")
                        check(guarded)
                        emit("T", "ok", "")
                    except _BaseException as e:
                        emit("T", "err", hx(err_text(e)))
    emit("E")
    try:
        sys.stdout.flush()
    except _BaseException:
        pass
    data = ("\n" + "\n".join(lines) + "\n").encode("utf-8")
    while data:
        n = _write(out_fd, data)
        data = data[n:]


_teachloop_harness()
'''


@dataclass
class CallOutcome:
    """One call f(*args): its rendered output (``repr`` of a plain value) or its error."""

    ok: bool
    output: str | None = None
    error: str | None = None


@dataclass
class HarnessRun:
    """What one sandbox run of the harness reported."""

    status: str  # sandbox status, or "harness" when the protocol lines were missing/forged
    setup_ok: bool = False
    setup_error: str | None = None
    calls: list[CallOutcome] = field(default_factory=list)
    tests_passed: bool | None = None
    tests_error: str | None = None
    duration_s: float = 0.0
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        """The run finished, the code loaded, and (calls) every call returned a plain value."""
        if self.status != "ok" or not self.setup_ok:
            return False
        if self.tests_passed is not None:
            return self.tests_passed
        return all(c.ok for c in self.calls)

    @property
    def outputs(self) -> list[str | None]:
        return [c.output if c.ok else None for c in self.calls]

    def first_error(self) -> str:
        if self.status != "ok":
            tail = self.stderr_tail.strip().splitlines()[-1:] if self.stderr_tail.strip() else []
            return f"{self.status}" + (f": {tail[0][:200]}" if tail else "")
        if not self.setup_ok:
            return self.setup_error or "setup failed"
        if self.tests_passed is False:
            return self.tests_error or "tests failed"
        for i, c in enumerate(self.calls):
            if not c.ok:
                return f"input {i}: {c.error}"
        return ""

    def to_evidence(self) -> dict:
        d = asdict(self)
        d["stderr_tail"] = d["stderr_tail"][-500:]
        return d


def _unhex(s: str) -> str:
    try:
        return bytes.fromhex(s).decode("utf-8", "replace")
    except ValueError:
        return ""


def _parse(res: sandbox.SandboxResult, marker: str, n_calls: int, mode: str) -> HarnessRun:
    run = HarnessRun(status=res.status, duration_s=res.duration_s, stderr_tail=res.stderr[-2000:])
    if res.status != "ok":
        return run
    mine = [ln.split(" ")[1:] for ln in res.stdout.splitlines() if ln.startswith(marker + " ")]
    heads = [p for p in mine if p[:1] == ["S"]]
    ends = [p for p in mine if p[:1] == ["E"]]
    if len(heads) != 1 or len(ends) != 1 or mine[-1][:1] != ["E"]:
        run.status = "harness"
        run.stderr_tail = (run.stderr_tail + "\n[harness] result lines missing or duplicated")[-2000:]
        return run
    head = heads[0]
    run.setup_ok = len(head) >= 2 and head[1] == "ok"
    if not run.setup_ok:
        run.setup_error = _unhex(head[2]) if len(head) > 2 else "setup failed"
        return run
    if mode == "calls":
        got: dict[int, CallOutcome] = {}
        for p in mine:
            if p[:1] != ["C"] or len(p) < 4 or not p[1].isdigit():
                continue
            i = int(p[1])
            text = _unhex(p[3])
            got[i] = CallOutcome(ok=True, output=text) if p[2] == "ok" else CallOutcome(ok=False, error=text)
        run.calls = [got.get(i, CallOutcome(ok=False, error="no result")) for i in range(n_calls)]
    else:
        tests = [p for p in mine if p[:1] == ["T"]]
        if len(tests) != 1:
            run.status = "harness"
            return run
        run.tests_passed = len(tests[0]) >= 2 and tests[0][1] == "ok"
        if not run.tests_passed:
            run.tests_error = _unhex(tests[0][2]) if len(tests[0]) > 2 else "tests failed"
    return run


def _run(req: dict, *, timeout_s: float, memory_mb: int, n_calls: int) -> HarnessRun:
    marker = "@@TL" + secrets.token_hex(16)
    req = dict(req, marker=marker, max_repr=MAX_REPR_CHARS)
    res = sandbox.run_python(_HARNESS, timeout_s=timeout_s, memory_mb=memory_mb, stdin=json.dumps(req))
    return _parse(res, marker, n_calls, req["mode"])


def run_calls(
    code: str,
    inputs: list[str],
    *,
    fn_name: str = "f",
    lenient: bool = False,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
) -> HarnessRun:
    """Define ``code`` in the sandbox and call ``fn_name(<input>)`` for each argument source.

    ``inputs`` are argument lists as written inside the call parentheses (``"[1, 2], 3"``);
    the caller should have checked them with :func:`literal_args`.  ``lenient``: when no
    ``fn_name`` is defined, use the last public function the code defines (student code).
    """
    req = {"mode": "calls", "code": code, "inputs": list(inputs), "fn_name": fn_name, "lenient": lenient}
    return _run(req, timeout_s=timeout_s, memory_mb=memory_mb, n_calls=len(inputs))


def run_check(
    solution: str,
    tests: str,
    entry_point: str,
    *,
    prelude: str = "",
    timeout_s: float = 10.0,
    memory_mb: int = 512,
) -> HarnessRun:
    """Define ``solution``, then run HumanEval-style ``tests`` (a ``check(candidate)``) on it.

    The tests run in their own namespace: ``prelude`` (the problem's prompt: its imports and
    helpers such as HumanEval/32's ``poly``) is executed there first, and the entry point's
    name is bound to the (guarded) candidate, as HumanEval's tests sometimes call it by name.
    """
    req = {"mode": "check", "code": solution, "tests": tests, "entry_point": entry_point, "prelude": prelude}
    return _run(req, timeout_s=timeout_s, memory_mb=memory_mb, n_calls=0)


# --------------------------------------------------------------------------- host-side helpers
def normalize_args(src: str) -> str:
    """``"f(1, 2)"`` -> ``"1, 2"``; other text unchanged (stripped)."""
    s = src.strip()
    if s.startswith("f(") and s.endswith(")") and _balanced_close(s, 1) == len(s) - 1:
        s = s[2:-1].strip()
    return s


def _balanced_close(s: str, start: int) -> int:
    """Index of the parenthesis closing the one at ``start`` (string-aware); -1 if none."""
    depth = 0
    quote = None
    i = start
    n = len(s)
    while i < n:
        c = s[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if s.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
        elif c in "'\"":
            quote = s[i : i + 3] if s[i : i + 3] in ("'''", '"""') else c
            i += len(quote)
            continue
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def literal_args(src: str) -> tuple | None:
    """The argument tuple an argument-list source denotes, or None if it is not all literals."""
    if not isinstance(src, str) or not src.strip() or len(src) > MAX_LITERAL_CHARS:
        return None
    try:
        val = ast.literal_eval("(" + src + ",)")
    except Exception:  # SyntaxError, ValueError, RecursionError, MemoryError...
        return None
    return val if isinstance(val, tuple) else None


def _norm(x, depth: int = 0):
    """A hashable, type-strict normal form of a plain value (dict/set order ignored)."""
    if depth > 100:
        raise ValueError("too deep")
    t = type(x)
    if t is float and x != x:
        return ("float", "nan")
    if t in (type(None), bool, int, float, complex, str, bytes):
        return (t.__name__, x)
    if t in (list, tuple):
        return (t.__name__, tuple(_norm(e, depth + 1) for e in x))
    if t in (set, frozenset):
        return (t.__name__, frozenset(_norm(e, depth + 1) for e in x))
    if t is dict:
        return ("dict", frozenset((_norm(k, depth + 1), _norm(v, depth + 1)) for k, v in x.items()))
    raise ValueError(f"not a plain value: {t.__name__}")


def parse_value(text: str):
    """``(True, normal form)`` for a Python literal, ``(False, None)`` otherwise."""
    if not isinstance(text, str) or len(text) > MAX_LITERAL_CHARS:
        return False, None
    s = text.strip()
    if s in ("set()", "frozenset()"):
        return True, (s[:-2], frozenset())
    if s.startswith("frozenset(") and s.endswith(")"):
        ok, v = parse_value(s[len("frozenset(") : -1])
        return (True, ("frozenset", v[1])) if ok and v[0] == "set" else (False, None)
    if s == "nan":
        return True, ("float", "nan")
    try:
        return True, _norm(ast.literal_eval(s))
    except Exception:
        return False, None


def outputs_match(gold: str | None, got: str | None) -> bool:
    """Strict equality of two rendered outputs: same types, same values (dict/set order free)."""
    if gold is None or got is None:
        return False
    if gold.strip() == got.strip():
        return True
    ok_g, g = parse_value(gold)
    ok_a, a = parse_value(got)
    if not (ok_g and ok_a):
        return False
    try:
        return g == a
    except Exception:
        return False
