"""Per-run cost of ``teachloop.evals.sandbox.run_python`` against starting a fresh interpreter.

    python benchmarks/bench_sandbox.py [--runs 50] [--threads 8] [--baseline FILE]
    python tests/as_unprivileged.py -- python benchmarks/bench_sandbox.py   # as uid 65534 (from root)

For each program, sandbox runs and fresh-interpreter runs (``subprocess.run([sys.executable,
"-c", code])``, the naive way to isolate a snippet) are interleaved, so that background load
hits both equally, and the medians are compared.  ``python -S -c`` (no site-packages at all)
is shown as the floor of any fresh-interpreter design.  The zygote is started before timing.
``--baseline FILE`` adds another version of sandbox.py (e.g. ``git show REV:evals/sandbox.py``),
interleaved with the others in the same process, to compare two designs under the same load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from teachloop.evals.sandbox import isolation, run_python


def _load(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_sandbox", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod

PROGRAMS = {
    "pass": "pass",
    "print": "print('hello, world')\nfor i in range(3):\n    print(i * i)",
}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _sandbox(code: str, run=run_python):
    def go():
        r = run(code)
        assert r.status == "ok", r
    return go


def _fresh(*flags: str, code: str):
    return lambda: subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--baseline", help="another sandbox.py to time alongside (same process, interleaved)")
    args = ap.parse_args()
    base = _load(args.baseline) if args.baseline else None

    iso = isolation()  # starts the zygote; not timed
    active = [k for k, v in iso.items() if v is True]
    print(f"python {sys.version.split()[0]}, uid {os.getuid()}, isolation active: {', '.join(active)}")
    for note in iso["notes"]:
        print(f"  note: {note}")
    print(f"median of {args.runs} runs each (ms):")
    for name, code in PROGRAMS.items():
        variants = {"sandbox": _sandbox(code), "fresh -c": _fresh(code=code), "fresh -S -c": _fresh("-S", code=code)}
        if base is not None:
            variants["baseline"] = _sandbox(code, base.run_python)
        for fn in variants.values():  # warm caches
            fn()
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.runs):
            for k, fn in variants.items():
                times[k].append(_timed(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"  {name:6s} sandbox {med['sandbox']:6.2f}   fresh -c {med['fresh -c']:6.2f}"
              f" (x{med['fresh -c'] / med['sandbox']:.1f})   fresh -S -c {med['fresh -S -c']:6.2f}"
              f" (x{med['fresh -S -c'] / med['sandbox']:.1f})"
              + (f"   baseline {med['baseline']:6.2f} (x{med['baseline'] / med['sandbox']:.2f})" if base else ""))

    n = args.runs * 2
    for name, run in (("sandbox", run_python), ("baseline", base.run_python if base else None)):
        if run is None:
            continue
        start = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            results = list(pool.map(lambda _: run(PROGRAMS["print"]).status, range(n)))
        elapsed = time.perf_counter() - start
        assert set(results) == {"ok"}, results
        print(f"throughput ({name}): {n} runs of 'print' from {args.threads} threads in {elapsed:.2f} s"
              f" = {n / elapsed:.0f} runs/s")


if __name__ == "__main__":
    main()
