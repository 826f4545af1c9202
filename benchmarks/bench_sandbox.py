"""Per-run cost of ``teachloop.evals.sandbox.run_python`` against starting a fresh interpreter.

    python benchmarks/bench_sandbox.py [--runs 50] [--threads 8]

For each program, sandbox runs and fresh-interpreter runs (``subprocess.run([sys.executable,
"-c", code])``, the naive way to isolate a snippet) are interleaved, so that background load
hits both equally, and the medians are compared.  ``python -S -c`` (no site-packages at all)
is shown as the floor of any fresh-interpreter design.  The zygote is started before timing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from teachloop.evals.sandbox import isolation, run_python  # noqa: E402

PROGRAMS = {
    "pass": "pass",
    "print": "print('hello, world')\nfor i in range(3):\n    print(i * i)",
}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _sandbox(code: str):
    def go():
        r = run_python(code)
        assert r.status == "ok", r
    return go


def _fresh(*flags: str, code: str):
    return lambda: subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()

    iso = isolation()  # starts the zygote; not timed
    active = [k for k, v in iso.items() if v is True]
    print(f"python {sys.version.split()[0]}, isolation active: {', '.join(active)}")
    for note in iso["notes"]:
        print(f"  note: {note}")
    print(f"median of {args.runs} runs each (ms):")
    for name, code in PROGRAMS.items():
        variants = {"sandbox": _sandbox(code), "fresh -c": _fresh(code=code), "fresh -S -c": _fresh("-S", code=code)}
        for fn in variants.values():  # warm caches
            fn()
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.runs):
            for k, fn in variants.items():
                times[k].append(_timed(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"  {name:6s} sandbox {med['sandbox']:6.2f}   fresh -c {med['fresh -c']:6.2f}"
              f" (x{med['fresh -c'] / med['sandbox']:.1f})   fresh -S -c {med['fresh -S -c']:6.2f}"
              f" (x{med['fresh -S -c'] / med['sandbox']:.1f})")

    n = args.runs * 2
    start = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        results = list(pool.map(lambda _: run_python(PROGRAMS["print"]).status, range(n)))
    elapsed = time.perf_counter() - start
    assert set(results) == {"ok"}, results
    print(f"throughput: {n} runs of 'print' from {args.threads} threads in {elapsed:.2f} s = {n / elapsed:.0f} runs/s")


if __name__ == "__main__":
    main()
