"""Informative-group fraction of ``vcrl+adacurl`` vs plain ``grpo`` on one pool and seed.

    python benchmarks/bench_trainer.py                 # 20 steps per mode, ~15-30 min on 2 cores
    python benchmarks/bench_trainer.py --steps 5 --items 12 --probe 4   # a quick look

1. pool   - reasoning-gym ``basic_arithmetic`` seeds at knob level 0, the bottom of its
            range (so no procedural "easier" variant exists: the embedded 135M model solves
            almost nothing above it, and a pool where every p = 0 has no informative group
            to find); every item probed ``--probe`` times by the student (agents/probe.py,
            local backend), so AdaCuRL has measured difficulties to bucket
2. train  - the same probed pool copied once per mode (so neither run sees the other's
            stats), the same seed, ``--steps`` steps through ``teachloop.train.main``
3. report - per step and on average: the informative-group fraction (groups whose accuracy
            rewards are not all equal, among the groups that train), their ratio, and the
            curriculum's own overhead (binding, selection, bank, scheduler, batch surgery,
            pool writes; not the VCRL re-roll generation, reported apart) as % of TRL's
            ``step_time``

Both modes use beta = 0.04 (a reference model), so step times compare. Numbers vary with
the machine's load; the fractions depend on the seed (one seed here, no error bars).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402

from teachloop.curriculum.pool import open_pool  # noqa: E402


def build_probed_pool(run_dir: Path, n_items: int, attempts: int, max_tokens: int, seed: int,
                      console: Console) -> None:
    from teachloop.agents.backends import LocalBackendConfig, make_backend
    from teachloop.agents.probe import probe
    from teachloop.evals.families import get_family

    fam = get_family("math.rg.basic_arithmetic", start_level=0)
    items = fam.seeds(n_items, seed=seed)
    store = open_pool(run_dir)
    store.insert_many(items)
    t0 = time.monotonic()
    backend = make_backend(LocalBackendConfig(seed=seed))
    results = probe(items, attempts, backend, fam.score, max_tokens=max_tokens)
    backend.close()
    store.record_many([(r.item_id, r.attempts, sum(r.rewards)) for r in results])
    ps = sorted(r.p for r in results)
    console.print(f"[bold]pool[/] {len(items)} items probed {attempts}x in "
                  f"{time.monotonic() - t0:.0f} s; pass rates {[round(p, 2) for p in ps]}")
    store.close()


def run_mode(pool_src: Path, work: Path, mode: str, args, console: Console):
    from teachloop.train import main as train_main

    run_dir = work / mode.replace("+", "-")
    shutil.rmtree(run_dir, ignore_errors=True)  # the bench's own scratch: start from the pool
    run_dir.mkdir(parents=True)
    shutil.copy(pool_src / "pool.sqlite", run_dir / "pool.sqlite")
    return train_main(run_dir, mode=mode, max_steps=args.steps, seed=args.seed,
                      num_generations=args.G, batch_size=args.batch,
                      max_completion_length=args.tokens, learning_rate=args.lr, beta=0.04,
                      save_final=False, console=console)


def per_step(result, key: str) -> list[float]:
    return [x[key] for x in result.logs if key in x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--items", type=int, default=12, help="pool size")
    ap.add_argument("--probe", type=int, default=8, help="student attempts per item")
    ap.add_argument("--tokens", type=int, default=32, help="max completion tokens")
    ap.add_argument("--G", type=int, default=4, help="group size")
    ap.add_argument("--batch", type=int, default=8, help="completions per step")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--mode", default="vcrl+adacurl", choices=["vcrl", "adacurl", "vcrl+adacurl"],
                    help="the curriculum mode compared with grpo")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    args = ap.parse_args()
    console = Console()
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_trainer_"))
    work.mkdir(parents=True, exist_ok=True)
    pool_dir = work / "pool"
    pool_dir.mkdir(exist_ok=True)
    if not (pool_dir / "pool.sqlite").exists():
        build_probed_pool(pool_dir, args.items, args.probe, args.tokens, args.seed, console)
    results = {}
    for mode in ("grpo", args.mode):
        console.rule(mode)
        results[mode] = run_mode(pool_dir, work, mode, args, console)

    # ---- report
    g, c = results["grpo"], results[args.mode]
    fg, fc = per_step(g, "curriculum/informative_frac"), per_step(c, "curriculum/informative_frac")
    rolled = per_step(c, "curriculum/informative_frac_rolled")
    st_g, st_c = per_step(g, "step_time"), per_step(c, "step_time")
    ov = per_step(c, "curriculum/overhead_s")
    rr = per_step(c, "vcrl/reroll_s") or [0.0]
    console.rule("informative-group fraction per step")
    console.print(f"step  grpo  {args.mode} (before selection)  step_time grpo / curriculum")
    for k in range(len(fg)):
        console.print(f"{k + 1:4d}  {fg[k]:.2f}  {fc[k]:.2f} ({rolled[k]:.2f})"
                      f"                    {st_g[k]:6.1f} s / {st_c[k]:6.1f} s")
    mg, mc = statistics.fmean(fg), statistics.fmean(fc)
    ratio = mc / mg if mg > 0 else float("inf")
    console.print(f"mean informative-group fraction: grpo {mg:.3f}, {args.mode} {mc:.3f}, "
                  f"ratio {ratio:.2f}")
    console.print(f"curriculum overhead: {sum(ov):.3f} s of {sum(st_c):.1f} s step time = "
                  f"{100 * sum(ov) / sum(st_c):.3f}% (mean {1000 * statistics.fmean(ov):.1f} ms/step)")
    console.print(f"VCRL on-policy re-rolls: {sum(rr):.1f} s = {100 * sum(rr) / sum(st_c):.1f}% of "
                  f"step time; mean step time grpo {statistics.fmean(st_g):.1f} s, "
                  f"{args.mode} {statistics.fmean(st_c):.1f} s")
    merges = per_step(c, "adacurl/merges")
    if merges:
        console.print(f"AdaCuRL merges by the end: {merges[-1]:.0f}; "
                      f"final cs {per_step(c, 'adacurl/cs')[-1]:.3f}")
    console.print(f"runs in {work}")


if __name__ == "__main__":
    main()
