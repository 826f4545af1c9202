"""Informative-group fraction of ``vcrl+adacurl`` vs plain ``grpo``, over several seeds.

    python benchmarks/bench_trainer.py                     # 3 seeds x 5 steps, ~20 min on 2 shared cores
    python benchmarks/bench_trainer.py --seeds 0 --steps 4 --items 8 --probe 4   # a quick look

1. pool   - reasoning-gym ``basic_arithmetic`` seeds at knob level 0, the bottom of its
            range (so no procedural "easier" variant exists: the embedded 135M model solves
            almost nothing above it, and a pool where every p = 0 has no informative group
            to find); every item probed ``--probe`` times by the student (agents/probe.py,
            local backend), so AdaCuRL has measured difficulties to bucket. Built once and
            shared by every seed
2. train  - per seed, the same probed pool copied once per mode (so neither run sees the
            other's stats), ``--steps`` steps through ``teachloop.train.main``; AdaCuRL's
            reward buffer M = ``--window`` (8, as the CPU presets: the paper's 512 would not
            fill in a few CPU steps)
3. report - per seed and mean ± std over seeds: the informative-group fraction (groups whose
            accuracy rewards are not all equal, among the groups that train), the AdaCuRL
            merges and the steps they were decided at, the wall time per step of the
            curriculum run over grpo's (TRL's ``step_time``, VCRL re-rolls included), and
            the curriculum's own overhead (binding, selection, bank, scheduler, batch
            surgery, pool writes; not the re-roll generation) as % of step time

Both modes use beta = 0.04 (a reference model), so step times compare. Step times vary with
the machine's load.
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


def run_mode(pool_src: Path, work: Path, mode: str, args, seed: int, console: Console):
    from teachloop.train import main as train_main

    run_dir = work / mode.replace("+", "-")
    shutil.rmtree(run_dir, ignore_errors=True)  # the bench's own scratch: start from the pool
    run_dir.mkdir(parents=True)
    shutil.copy(pool_src / "pool.sqlite", run_dir / "pool.sqlite")
    return train_main(run_dir, mode=mode, max_steps=args.steps, seed=seed,
                      num_generations=args.G, batch_size=args.batch,
                      max_completion_length=args.tokens, learning_rate=args.lr, beta=0.04,
                      save_final=False, console=console,
                      adacurl={"window": args.window} if "adacurl" in mode else None)


def per_step(result, key: str) -> list[float]:
    return [x[key] for x in result.logs if key in x]


def merge_steps(result) -> list[int]:
    """Log steps (1-based) whose batch decided an AdaCuRL merge."""
    out, before = [], 0.0
    for x in result.logs:
        if "adacurl/merges" in x:
            out += [x["step"]] * int(x["adacurl/merges"] - before)
            before = x["adacurl/merges"]
    return out


def mean_std(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--items", type=int, default=12, help="pool size")
    ap.add_argument("--probe", type=int, default=4, help="student attempts per item")
    ap.add_argument("--tokens", type=int, default=32, help="max completion tokens")
    ap.add_argument("--G", type=int, default=4, help="group size")
    ap.add_argument("--batch", type=int, default=8, help="completions per step")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--window", type=int, default=8, help="AdaCuRL reward buffer M")
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
        build_probed_pool(pool_dir, args.items, args.probe, args.tokens, 0, console)
    rows = []
    for seed in args.seeds:
        res = {}
        for mode in ("grpo", args.mode):
            console.rule(f"seed {seed}: {mode}")
            res[mode] = run_mode(pool_dir, work / f"seed{seed}", mode, args, seed, console)
        g, c = res["grpo"], res[args.mode]
        st_g, st_c = per_step(g, "step_time"), per_step(c, "step_time")
        rows.append({
            "seed": seed,
            "grpo": statistics.fmean(per_step(g, "curriculum/informative_frac")),
            "cur": statistics.fmean(per_step(c, "curriculum/informative_frac")),
            "rolled": statistics.fmean(per_step(c, "curriculum/informative_frac_rolled")),
            "merges": merge_steps(c),
            "step_ratio": statistics.fmean(st_c) / statistics.fmean(st_g),
            "step_g": statistics.fmean(st_g), "step_c": statistics.fmean(st_c),
            "overhead": 100 * sum(per_step(c, "curriculum/overhead_s")) / sum(st_c),
            "reroll": 100 * sum(per_step(c, "vcrl/reroll_s") or [0.0]) / sum(st_c),
        })

    # ---- report
    m = args.mode
    console.rule(f"{len(args.seeds)} seeds x {args.steps} steps, G={args.G}, batch {args.batch}, "
                 f"M={args.window}")
    console.print(f"seed  informative grpo  {m} (before selection)  merges at steps  "
                  f"step time grpo / {m} (ratio)  overhead  re-roll")
    for r in rows:
        console.print(f"{r['seed']:4d}  {r['grpo']:16.3f}  {r['cur']:.3f} ({r['rolled']:.3f})"
                      f"{'':14s}{str(r['merges']):16s} {r['step_g']:5.1f} s / {r['step_c']:5.1f} s "
                      f"({r['step_ratio']:.2f})   {r['overhead']:.3f}%   {r['reroll']:.1f}%",
                      highlight=False)
    console.print(f"informative-group fraction, mean ± std over seeds: grpo {mean_std([r['grpo'] for r in rows])}, "
                  f"{m} {mean_std([r['cur'] for r in rows])} (before selection "
                  f"{mean_std([r['rolled'] for r in rows])})", highlight=False)
    console.print(f"merges per run: {[len(r['merges']) for r in rows]}; wall per step {m} / grpo: "
                  f"{mean_std([r['step_ratio'] for r in rows])}; curriculum overhead "
                  f"{mean_std([r['overhead'] for r in rows])} % of step time", highlight=False)
    console.print(f"runs in {work}")


if __name__ == "__main__":
    main()
