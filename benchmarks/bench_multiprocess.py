"""Wall time of ``teachloop train`` on one process vs two (CPU, gloo), in each mode.

    python benchmarks/bench_multiprocess.py                  # 5 steps per run, 8 runs
    python benchmarks/bench_multiprocess.py --steps 2 --modes grpo

1. pool   - reasoning-gym ``basic_arithmetic`` seeds at level 0 with probe stats written as
            if each item had been probed 10 times (difficulties spread over 0.1 .. 0.9, so
            every item survives AdaCuRL's filter); no real probing: this measures the
            trainer, not the probe
2. runs   - per mode, the CLI twice with the same global batch (``--batch-size 8`` on one
            process; ``accelerate launch --multi_gpu --num_processes 2`` with
            ``--batch-size 4`` per process) and the same threads in all (one process: 2
            OpenMP threads; two: 1 each), each on a fresh copy of the pool
3. report - per mode: wall time of the whole command (start-up, model load, training) and
            the median TRL ``step_time``, one vs two processes, and their ratio

On a 2-core machine shared with other work two processes cannot be faster than one; the
point is that every mode runs and what the curriculum's synchronisation costs. The numbers
vary with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODES = ("grpo", "vcrl", "adacurl", "vcrl+adacurl")


def build_pool(run_dir: Path, n: int) -> None:
    from teachloop.curriculum.pool import open_pool
    from teachloop.evals.families import get_family

    items = get_family("math.rg.basic_arithmetic", start_level=0).seeds(n, seed=0)
    store = open_pool(run_dir)
    store.insert_many(items)
    store.record_many([(it.id, 10, float(10 - 1 - (k % 9))) for k, it in enumerate(items)])
    store.close()


def run(pool_src: Path, work: Path, mode: str, procs: int, args) -> dict:
    run_dir = work / f"{mode.replace('+', '-')}-{procs}p"
    shutil.rmtree(run_dir, ignore_errors=True)  # the bench's own scratch
    run_dir.mkdir(parents=True)
    shutil.copy(pool_src / "pool.sqlite", run_dir / "pool.sqlite")
    cli = ["-m", "teachloop", "train", "--pool", str(run_dir), "--mode", mode,
           "--max-steps", str(args.steps), "--batch-size", str(args.batch // procs),
           "--max-completion-length", str(args.tokens), "--no-save-final",
           "--arg", 'adacurl_config={"window": 8}']
    if procs == 1:
        cmd = [sys.executable, *cli]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", str(procs), "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", str(args.port), *cli]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": str(max(1, args.threads // procs))}
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"{mode} on {procs} process(es) failed:\n{r.stderr[-3000:]}")
    out = run_dir / f"train-{mode.replace('+', '-')}" / "train_log.jsonl"
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    steps = [x["step_time"] for x in recs if "step_time" in x]
    if len(steps) != args.steps:
        raise SystemExit(f"{mode} on {procs} process(es): {len(steps)} steps logged, "
                         f"expected {args.steps}")
    return {"wall": wall, "step": statistics.median(steps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--items", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8, help="global completions per step")
    ap.add_argument("--tokens", type=int, default=16, help="max completion tokens")
    ap.add_argument("--threads", type=int, default=2, help="OpenMP threads in all")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--port", type=int, default=29531)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_multiprocess_"))
    pool = work / "pool"
    pool.mkdir()
    build_pool(pool, args.items)
    rows = []
    for mode in args.modes:
        one, two = run(pool, work, mode, 1, args), run(pool, work, mode, 2, args)
        rows.append((mode, one, two))
        print(f"{mode}: done (1 process {one['wall']:.0f} s, 2 processes {two['wall']:.0f} s)",
              flush=True)
    print(f"\n{args.steps} steps, global batch {args.batch} (G=4), {args.tokens} tokens, "
          f"{args.threads} threads in all; wall = whole command, step = median TRL step_time")
    print(f"{'mode':14s} {'wall 1p':>8s} {'wall 2p':>8s} {'2p/1p':>6s} {'step 1p':>8s} "
          f"{'step 2p':>8s} {'2p/1p':>6s}")
    for mode, one, two in rows:
        print(f"{mode:14s} {one['wall']:7.1f}s {two['wall']:7.1f}s {two['wall'] / one['wall']:6.2f} "
              f"{one['step']:7.2f}s {two['step']:7.2f}s {two['step'] / one['step']:6.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
