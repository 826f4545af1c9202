"""The learning curve: the policy being trained, evaluated every ``eval.curve_every`` steps.

``make_curve_callback`` returns a ``TrainerCallback`` that, after every K-th optimisation
step (and after the last), evaluates the current policy on the first ``eval.curve_items``
held-out items of the run's evaluation (the same draw as ``eval_before``/``eval_after``, so
the curve's points and the final eval share items) with ``eval.k`` samples each, and appends
one record ``{step, metrics, per_item, wall_s}`` to ``RUN_DIR/eval_curve.jsonl``. Step 0 (the
initial policy) is evaluated at the start of training unless ``eval.before`` is false (a
study evaluates the initial model once for all its runs and puts it at step 0).

Exactly once across kills: a step already in the file is not evaluated again. The torch RNG
state is saved and restored around each evaluation, so the curve does not shift the training
samples that follow it (a run with the curve trains exactly as one without). The evaluation
is done through ``LocalBackend.from_loaded`` on the training model in eval mode (no copy).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from teachloop import rundir

CURVE_FILE = "eval_curve.jsonl"


def done_steps(run_dir: Path) -> set[int]:
    return {int(r["step"]) for r in rundir.read_jsonl(run_dir / CURVE_FILE) if "step" in r}


def evaluate_policy(trainer: Any, cfg: Any, run_dir: Path, step: int,
                    console: Console | None = None) -> dict[str, Any]:
    """Evaluate the trainer's current model; append and return the record."""
    import torch

    from teachloop.agents.backends import LocalBackend
    from teachloop.evals.bench import evaluate
    from teachloop.heldout import eval_settings

    console = console or Console()
    model = trainer.accelerator.unwrap_model(trainer.model)
    backend = LocalBackend.from_loaded(model, trainer.processing_class)
    kw = eval_settings(cfg, trainer.data.store)
    kw["n_items"] = min(cfg.eval.curve_items, cfg.eval.n_items)
    rng = torch.get_rng_state()  # sampling on a GPU draws from the CUDA generators: keep them too
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    was_training = model.training
    model.eval()
    t0 = time.monotonic()
    try:
        res = evaluate(f"step-{step}", kw.pop("bench"), backend=backend, console=console, **kw)
    finally:
        if was_training:
            model.train()
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    rec = {"step": step, "metrics": res.metrics, "n_items": res.n_items, "k": res.k,
           "per_item": res.per_item, "wall_s": round(time.monotonic() - t0, 2)}
    with open(run_dir / CURVE_FILE, "a") as f:
        import json

        f.write(json.dumps(rec) + "\n")
    console.print(f"[bold]curve[/] step {step}: " + ", ".join(
        f"{k} {v:.3f}" for k, v in res.metrics.items()) + f" ({rec['wall_s']} s)",
        highlight=False)
    return rec


def make_curve_callback(trainer: Any, cfg: Any, run_dir: Path,
                        console: Console | None = None) -> Any:
    from transformers import TrainerCallback

    every = cfg.eval.curve_every
    run_dir = Path(run_dir)

    class LearningCurve(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            # eval.before=false: a study evaluates the initial model once for all its runs
            if (cfg.eval.before and state.is_world_process_zero
                    and 0 not in done_steps(run_dir)):
                evaluate_policy(trainer, cfg, run_dir, 0, console)

        def on_step_end(self, args, state, control, **kw):
            step = state.global_step
            if not state.is_world_process_zero:
                return
            if (step % every == 0 or step >= state.max_steps) and step not in done_steps(run_dir):
                evaluate_policy(trainer, cfg, run_dir, step, console)

    return LearningCurve()
