"""Proposals per minute with 1, 2, 3 generation workers on one PostgreSQL pool.

    python benchmarks/bench_workers.py [--workers 1 2 3] [--seeds 6] [--repeats 1]

Each setting gets a fresh pool (a new schema in a throw-away cluster, tests/pg_cluster.py),
the same seeds (procedural teacher, embedded student, smoke-sized: M=2 probes of 24 tokens,
one teacher turn), and N ``teachloop generate --pool URL --worker wK`` processes started at
once. Two rates per run: **wall** (proposals / time from launch to the last exit: includes
each process loading Python, torch and the model) and **work** (proposals / time from the
first claim to the last finished claim, on the database clock: the expansion itself).
Medians over ``--repeats``; ratios against 1 worker from the same process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import pg_cluster  # noqa: E402

from teachloop.curriculum.pool import open_pool  # noqa: E402

SETS = ["teacher.kind=procedural", "teacher.max_turns=1", "probe.attempts=2",
        "student.max_tokens=24", "seeds.families=[math.rg.basic_arithmetic]"]


def one_run(cluster: pg_cluster.PgCluster, n: int, seeds: int, logdir: Path) -> dict[str, float]:
    from rich.console import Console

    from teachloop.config import load_config
    from teachloop.generate import seed_items
    from teachloop.workers import pool_worker_report

    url = cluster.new_schema("bench")
    sets = SETS + [f"seeds.per_family={seeds}"]
    with open_pool(url) as store:
        seed_items(load_config("smoke", None, sets), store, Console(file=open(os.devnull, "w")))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    args = [a for s in sets for a in ("--set", s)]
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", "from teachloop.cli import main; main()",
                               "generate", "--preset", "smoke", *args, "--pool", url, "--worker", f"w{k}",
                               "--batch", "1"], env=env, stdout=open(logdir / f"n{n}-w{k}.log", "w"),
                              stderr=subprocess.STDOUT) for k in range(n)]
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - t0
    if any(codes):
        raise SystemExit(f"a worker failed ({codes}); logs in {logdir}")
    with open_pool(url, create=False) as store:
        rep = pool_worker_report(store)
        rows = store.claim_rows()
    work = max(r["finished_at"] for r in rows) - min(r["claimed_at"] for r in rows)
    props = rep["distinct_slots"]
    assert rep["duplicate_slots"] == 0 and all(r["state"] == "done" for r in rows)
    return {"proposals": props, "wall_s": wall, "work_s": work,
            "wall_per_min": 60 * props / wall, "work_per_min": 60 * props / work,
            "items_per_worker": [v["done"] for v in rep["workers"].values()]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    why = pg_cluster.why_not()
    if why:
        raise SystemExit(f"no PostgreSQL here: {why}")
    cluster = pg_cluster.start_cluster()
    logdir = Path(cluster.root).with_name(Path(cluster.root).name + "-logs")
    logdir.mkdir(exist_ok=True)
    try:
        res: dict[int, list[dict[str, float]]] = {}
        for _ in range(a.repeats):
            for n in a.workers:
                r = one_run(cluster, n, a.seeds, logdir)
                print(f"  {n} worker(s): {r}", flush=True)
                res.setdefault(n, []).append(r)
    finally:
        cluster.stop()
    base = {k: statistics.median(r[k] for r in res[a.workers[0]]) for k in ("wall_per_min", "work_per_min")}
    print(f"\nproposals per minute, median of {a.repeats} (os.cpu_count() = {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f})")
    print(f"{'workers':>8} {'proposals':>10} {'wall s':>8} {'work s':>8} {'wall/min':>9} {'x':>6} "
          f"{'work/min':>9} {'x':>6}")
    for n in a.workers:
        m = {k: statistics.median(r[k] for r in res[n])
             for k in ("proposals", "wall_s", "work_s", "wall_per_min", "work_per_min")}
        print(f"{n:>8} {m['proposals']:>10.0f} {m['wall_s']:>8.1f} {m['work_s']:>8.1f} "
              f"{m['wall_per_min']:>9.2f} {m['wall_per_min'] / base['wall_per_min']:>6.2f} "
              f"{m['work_per_min']:>9.2f} {m['work_per_min'] / base['work_per_min']:>6.2f}")


if __name__ == "__main__":
    main()
