"""Informative-group fraction of ``vcrl+adacurl`` vs plain ``grpo``, over several seeds.

    python benchmarks/bench_trainer.py                     # 3 seeds x 5 steps
    python benchmarks/bench_trainer.py --steps 2 --window 4  # what fits ~20 min on 2 loaded cores

(A step of 8 completions x 16 tokens takes ~15 s on 2 idle cores and ~65 s when the cores
are shared with other work; the curriculum run also measures 16 rows x G first.)

1. data   - 16 additions from 1-digit to 3-digit operands as a plain ``datasets.Dataset``
            (``examples/trl_dropin.py``'s task), one accuracy reward (the last number of the
            completion equals the sum). Chosen because the embedded SmolLM2-135M solves
            some of them: on the pool's reasoning-gym items (boxed answers) it solved none
            of 12 in 4 probes each at 24 and 32 tokens, and with every reward 0 there is no
            informative group for a curriculum to find
2. train  - per seed and mode, ``CurriculumGRPOTrainer`` on that dataset (the TRL drop-in
            path): ``grpo`` (TRL's batches, observed) and ``--mode``; the curriculum run
            measures each row's difficulty with the initial policy first (one group of G,
            outside TRL's step time); AdaCuRL's reward buffer M = ``--window`` (8, as the
            CPU presets: the paper's 512 would not fill in a few CPU steps); beta = 0.04
            in both, so step times compare
3. report - per seed and mean ± std over seeds: the informative-group fraction (groups whose
            accuracy rewards are not all equal, among the groups that train), the AdaCuRL
            merges and the steps (0-based) they were decided at, the wall time per step of
            the curriculum run over grpo's (TRL's ``step_time``, VCRL re-rolls included), and
            the curriculum's own overhead (binding, selection, bank, scheduler, batch
            surgery; not the re-roll generation) as % of step time

Step times vary with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402

PAIRS = [(2, 3), (7, 1), (4, 4), (6, 7), (9, 8), (12, 9), (23, 45), (31, 17), (88, 13), (56, 77),
         (40, 60), (105, 32), (250, 250), (317, 486), (999, 1), (128, 256)]


def dataset():
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": f"What is {a} + {b}? Reply with the number only."}]
                   for a, b in PAIRS],
        "solution": [str(a + b) for a, b in PAIRS]})


def accuracy_reward(completions, solution, **kwargs):
    """1.0 when the last number in the completion is the solution, else 0.0."""
    out = []
    for completion, sol in zip(completions, solution):
        numbers = re.findall(r"-?\d+", completion[-1]["content"])
        out.append(1.0 if numbers and numbers[-1] == sol else 0.0)
    return out


class Result:
    def __init__(self, trainer, wall: float) -> None:
        self.logs = list(trainer.state.log_history)
        self.merges = [e.step for e in trainer.merge_log]
        self.wall = wall


def run_mode(work: Path, mode: str, args, seed: int) -> Result:
    from teachloop.agents.embedded import embedded_model_path
    from teachloop.training import CurriculumGRPOConfig, CurriculumGRPOTrainer

    cfg = CurriculumGRPOConfig(
        output_dir=str(work / f"seed{seed}-{mode.replace('+', '-')}"), curriculum_mode=mode,
        max_steps=args.steps, seed=seed, use_cpu=True, bf16=False, report_to="none",
        disable_tqdm=True, logging_steps=1, save_strategy="no", num_generations=args.G,
        per_device_train_batch_size=args.batch, max_completion_length=args.tokens,
        learning_rate=args.lr, beta=0.04,
        # G = 4 measurements put most rows at difficulty 0 or 1, which the paper's [0.05,
        # 0.95] filter drops (seed 0 kept 1 of 16, fewer than K = 3): keep every row
        adacurl_config={"window": args.window, "fine_low": 0.0, "fine_high": 1.0})
    t0 = time.monotonic()
    trainer = CurriculumGRPOTrainer(model=str(embedded_model_path()), reward_funcs=accuracy_reward,
                                    args=cfg, train_dataset=dataset())
    trainer.train()
    return Result(trainer, time.monotonic() - t0)


def per_step(result, key: str) -> list[float]:
    return [x[key] for x in result.logs if key in x]


def mean_std(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--tokens", type=int, default=16, help="max completion tokens")
    ap.add_argument("--G", type=int, default=4, help="group size")
    ap.add_argument("--batch", type=int, default=8, help="completions per step")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--window", type=int, default=8, help="AdaCuRL reward buffer M")
    ap.add_argument("--mode", default="vcrl+adacurl", choices=["vcrl", "adacurl", "vcrl+adacurl"],
                    help="the curriculum mode compared with grpo")
    args = ap.parse_args()
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="bench_trainer_"))
    rows = []
    for seed in args.seeds:
        res = {}
        for mode in ("grpo", args.mode):
            res[mode] = run_mode(work, mode, args, seed)
            console.print(f"seed {seed} {mode}: {res[mode].wall:.0f} s", highlight=False)
        g, c = res["grpo"], res[args.mode]
        st_g, st_c = per_step(g, "step_time"), per_step(c, "step_time")
        rows.append({
            "seed": seed,
            "grpo": statistics.fmean(per_step(g, "curriculum/informative_frac")),
            "cur": statistics.fmean(per_step(c, "curriculum/informative_frac")),
            "rolled": statistics.fmean(per_step(c, "curriculum/informative_frac_rolled")),
            "merges": c.merges,
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
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
