"""Run one study's runs as separate processes at once, then tabulate it.

    python scripts/study_parallel.py configs/studies/evidence.yaml [--out DIR] [-j 8]
        [--gpus 0,1,2,3] [--threads 1]

`teachloop study` runs its arms x seeds one after the other in one process, which is what a
2-core machine wants. On a GPU machine a 135M student leaves the card mostly idle, so this
starts `teachloop study FILE --run ARM:SEED` for every run (and `--run base`, the initial
model's held-out eval) as its own process, at most ``-j`` at a time, each pinned to one GPU of
``--gpus`` in turn (several processes share a GPU), then `teachloop study FILE --report-only`
makes the table. Each run is an ordinary resumable run directory: run the script again after
a kill and the finished runs are kept. Each process's output goes to OUT/logs/<run>.log.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", help="the study file (YAML)")
    ap.add_argument("--out", default=None, help="study directory (default: the file's 'out')")
    ap.add_argument("-j", "--jobs", type=int, default=0, help="most runs at once (0: all)")
    ap.add_argument("--gpus", default=os.environ.get("CUDA_VISIBLE_DEVICES"),
                    help="comma-separated GPU ids to deal the runs over (default: "
                         "CUDA_VISIBLE_DEVICES, else every GPU torch sees; '' leaves the "
                         "processes' GPUs alone)")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads per process (OMP_NUM_THREADS); the processes share the cores")
    a = ap.parse_args()

    from teachloop.errors import UserError
    from teachloop.study import load_spec

    try:
        spec = load_spec(a.study, a.out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs = ["base"] + [f"{arm.name}:{s}" for s in spec.seeds for arm in spec.arms]
    logs = spec.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if a.gpus is None:
        import torch

        a.gpus = ",".join(str(i) for i in range(torch.cuda.device_count()))
    gpus = [g for g in a.gpus.split(",") if g.strip()]
    jobs = a.jobs if a.jobs > 0 else len(runs)
    out = ["--out", str(spec.out)]
    pending = list(enumerate(runs))
    live: dict[str, tuple[subprocess.Popen, float, Path]] = {}
    failed: list[str] = []
    t0 = time.monotonic()
    while pending or live:
        while pending and len(live) < jobs:
            i, r = pending.pop(0)
            env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PYTHONUNBUFFERED="1")
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            log = logs / (r.replace(":", "-seed-") + ".log")
            cmd = [sys.executable, "-P", "-m", "teachloop", "study", a.study, *out, "--run", r]
            live[r] = (subprocess.Popen(cmd, env=env, stdout=log.open("a"),
                                        stderr=subprocess.STDOUT), time.monotonic(), log)
        time.sleep(2)
        for r, (p, ts, log) in list(live.items()):
            if p.poll() is None:
                continue
            del live[r]
            ok = p.returncode == 0
            if not ok:
                failed.append(r)
            print(f"[{time.monotonic() - t0:6.0f} s] {r}: {'done' if ok else 'FAILED'} in "
                  f"{time.monotonic() - ts:.0f} s ({len(runs) - len(pending) - len(live)}/"
                  f"{len(runs)}){'' if ok else f', see {log}'}", flush=True)
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}; run the script again to "
              "continue them", file=sys.stderr)
    rc = subprocess.call([sys.executable, "-P", "-m", "teachloop", "study", a.study, *out,
                          "--report-only"])
    return 1 if failed else rc


if __name__ == "__main__":
    sys.exit(main())
