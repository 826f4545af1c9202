"""Shared prefill in LocalBackend: n samples per prompt with the prompt's forward pass run once
(``share_prefill=True``, the default) vs once per sample (``model.generate`` with
``num_return_sequences=n``), on the embedded model, same process, same inputs.

    python benchmarks/bench_prefill.py [--items 8] [--n 4] [--fewshot 3] [--repeats 3]

Prints the median wall time of each and the ratio, and checks that both give the same
completions (same seed).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--fewshot", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from teachloop.agents.backends import LocalBackend, LocalBackendConfig
    from teachloop.evals.families import get_family
    from teachloop.evals.fewshot import student_messages

    fam = get_family("math.rg.basic_arithmetic", start_level=0)
    convs = [student_messages(it, fewshot=a.fewshot) for it in fam.seeds(a.items, seed=3)]
    times: dict[bool, list[float]] = {False: [], True: []}
    outs: dict[bool, list] = {}
    backends = {s: LocalBackend(LocalBackendConfig(seed=0, share_prefill=s)) for s in times}
    for b in backends.values():
        b.check()
    for _ in range(a.repeats):
        for share, b in backends.items():
            b.generate_calls = 0
            t = time.perf_counter()
            outs[share] = b.generate(convs, n=a.n, temperature=1.0, max_tokens=a.max_tokens)
            times[share].append(time.perf_counter() - t)
    same = ([[c.text for c in x] for x in outs[False]] == [[c.text for c in x] for x in outs[True]])
    prompt = statistics.fmean(c.prompt_tokens for x in outs[True] for c in x)
    m0, m1 = statistics.median(times[False]), statistics.median(times[True])
    print(f"{a.items} prompts x n={a.n}, {prompt:.0f} prompt tokens, {a.max_tokens} new tokens")
    print(f"  unshared prefill  median {m0:6.2f} s  ({times[False]})")
    print(f"  shared prefill    median {m1:6.2f} s  ({times[True]})")
    print(f"  speed-up {m0 / m1:.2f}x; identical completions: {same}")


if __name__ == "__main__":
    main()
