"""``teachloop run``: the main job, stage by stage, in one run directory, resumable after a kill.

Stages (``STAGES``; each finished one is marked in ``RUN_DIR/stages.json`` with its wall time,
so ``--resume`` skips it; each is also safe to re-run, because the pool writes are idempotent
or exactly-once):

1. setup       the run directory, its resolved ``config.yaml``, the pool
2. seeds       seed items from the configured families (content-hash ids: idempotent)
3. teacher     the LangGraph teacher loop (teachloop/generate.py): measure the seeds, then
               ``teacher.max_turns`` easier/harder turns per chain; its SQLite checkpointer
               and per-slot ledger make a killed loop resume without loss or duplicates
4. probe       M student attempts for any item still unmeasured (chunked; each chunk's stats
               committed in one transaction)
5. eval_before the initial model on held-out items (never in the pool): pass@k, avg@k
6. train       curriculum GRPO (VCRL + AdaCuRL buckets) on the pool; checkpoints every
               ``train.save_steps``; a killed run resumes from the last one. ``--online``
               adds teacher rounds every K steps (teachloop/online.py)
7. eval_after  the trained model on the same held-out items
8. export      the pool as a Hugging Face dataset with a card (teachloop/export.py)
9. report      one HTML page with plots (teachloop/report.py), screenshot by headless Chromium

File names: teachloop/rundir.py. The student, the probes and the evaluation share one loaded
model; the teacher is a separate, frozen backend (the same weights by default).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from teachloop.curriculum.items import Item
from teachloop.curriculum.pool import PoolStore, open_pool
from teachloop import rundir
from teachloop.agents.build import Backends, needs_llm_teacher
from teachloop.agents.config import from_run_config
from teachloop.config import apply_process_settings, config_from_dict, dump_yaml, to_dict, yaml_load
from teachloop.errors import UserError
from teachloop.heldout import eval_bench_name, eval_ci, eval_settings, harder_family_args  # noqa: F401

CONFIG_FILE = rundir.CONFIG
STAGES = ("seeds", "teacher", "probe", "eval_before", "train", "eval_after", "export", "report")


@dataclass
class RunResult:
    out: Path
    seeded: int
    probed: int
    wall_s: float
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


# ------------------------------------------------------------------------------ stages file


class StageBook:
    """``stages.json``: which stages finished, with their wall times and a few numbers."""

    def __init__(self, out: Path) -> None:
        self.path = out / rundir.STAGES
        self.data: dict[str, dict[str, Any]] = rundir.read_json(self.path, {}) or {}

    def done(self, stage: str) -> bool:
        return bool(self.data.get(stage, {}).get("done"))

    def finish(self, stage: str, wall_s: float, **info: Any) -> None:
        self.data[stage] = {"done": True, "wall_s": round(wall_s, 2), **info}
        rundir.write_json_atomic(self.path, self.data)


# ------------------------------------------------------------------------------ setup


def _setup(cfg: Any, resume: bool, console: Console) -> tuple[Any, Path, PoolStore]:
    out = Path(cfg.run.out)
    cfg_file = out / CONFIG_FILE
    if cfg_file.exists() and not resume:
        raise UserError(f"{out} already holds a run; pass --resume to continue it, "
                        "or choose another --out")
    if resume and not cfg_file.exists():
        raise UserError(f"nothing to resume in {out} (no {CONFIG_FILE})")
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        saved_cfg = config_from_dict(yaml_load(cfg_file.read_text()))
        if to_dict(saved_cfg) != to_dict(cfg):
            console.print(f"[yellow]note:[/] resuming with the config saved in {cfg_file}")
        cfg = saved_cfg
    else:
        cfg = config_from_dict(to_dict(cfg))
        tmp = cfg_file.with_suffix(".tmp")
        tmp.write_text(dump_yaml(cfg))
        tmp.replace(cfg_file)
    if cfg.run.pool:  # the pool lives on a server; the run directory points at it
        (out / rundir.POOL_URL).write_text(cfg.run.pool + "\n")
    return cfg, out, open_pool(out)


def student_model_path(cfg: Any) -> str | None:
    """The student's weights for training/evaluation (None: the embedded model)."""
    m = cfg.student
    if m.backend != "local":
        raise UserError("training needs local student weights: set student.backend=local and "
                        "student.model=PATH (the OpenAI-compatible backend can only probe), "
                        "or set train.max_steps=0")
    return None if m.model == "embedded" else m.model


# ------------------------------------------------------------------------------ stage bodies


def _teacher(cfg: Any, out: Path, backends: Backends, console: Console) -> dict[str, Any]:
    if cfg.run.workers > 0:
        from teachloop.workers import run_worker_processes

        return run_worker_processes(cfg, out, console)
    from teachloop.generate import RUN_FILE
    from teachloop.generate import main as generate

    loop = from_run_config(cfg)
    student = backends.student()
    teacher = backends.teacher() if needs_llm_teacher(loop, list(cfg.seeds.families)) else None
    res = generate(cfg, out=out, resume=(out / RUN_FILE).exists(), console=console,
                   student=student, teacher=teacher)
    summary = {
        "run_id": res.run_id, "chains": res.chains, "proposals": res.proposals,
        "accepted": res.accepted, "rejected": res.rejected,
        "pool_accepted": res.pool_accepted, "pool_rejected": res.pool_rejected,
        "by_turn": [{"turn": t, "direction": d, **c} for (t, d), c in res.by_turn.items()],
        "reasons": [{"stage": s, "reason": r, "n": n} for (s, r), n in res.reasons.items()],
        "chain_ends": res.chain_ends, "pass_rates": res.pass_rates, "wall_s": res.wall_s,
        "visits": res.visits,
    }
    rundir.write_json_atomic(out / rundir.GENERATE_RESULT, summary)
    return {"proposals": res.proposals, "accepted": res.accepted, "rejected": res.rejected}


def _probe(cfg: Any, store: PoolStore, backends: Backends, console: Console) -> int:
    from teachloop.agents.probe import probe
    from teachloop.evals.families import get_family

    todo: list[Item] = store.query(measured=False)
    if not todo:
        console.print("[bold]probe[/] nothing to probe: every item is measured")
        return 0
    backend = backends.student()

    def score(item: Item, text: str) -> float:
        return get_family(item.family).score(item, text)

    M = cfg.probe.attempts
    # Items per chunk: one batched generate of ~chunk_seqs sequences; each chunk's stats
    # are committed at once, so a kill loses at most the chunk in flight.
    chunk = max(1, cfg.probe.chunk_seqs // M)
    with Progress(TextColumn("[bold]probe[/] {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=False) as bar:
        task = bar.add_task(f"M={M} attempts per item", total=len(todo))
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            results = probe(part, M, backend, score, temperature=cfg.student.temperature,
                            max_tokens=cfg.student.max_tokens, fewshot=cfg.student.fewshot)
            store.record_many([(r.item_id, r.attempts, sum(r.rewards)) for r in results],
                              policy=student_model_path(cfg) or "embedded")
            bar.advance(task, len(part))
    return len(todo)


def _eval(cfg: Any, out: Path, store: PoolStore, which: str, backends: Backends,
          console: Console) -> dict[str, Any]:
    from teachloop.evals.bench import evaluate, save_result

    if which == "before":
        model = student_model_path(cfg) or "embedded"
        backend = getattr(backends.student(), "inner", backends.student())
        path = out / rundir.EVAL_BEFORE
    else:
        model = str(out / rundir.FINAL_MODEL)
        backend = None
        path = out / rundir.EVAL_AFTER
    sets = [("", False)]
    if cfg.eval.harder and harder_family_args(cfg):
        sets.append(("_harder", True))
    metrics: dict[str, Any] = {}
    for suffix, harder in sets:
        kw = eval_settings(cfg, store, harder=harder)
        res = evaluate(model, kw.pop("bench"), backend=backend, console=console, **kw)
        save_result(res, path.with_name(path.stem + suffix + path.suffix))
        console.print(f"[bold]eval {which}{suffix.replace('_', ' ')}[/] {res.bench}: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in res.metrics.items())
                      + f" ({res.n_items} items, {res.wall_s:.1f} s)", highlight=False)
        metrics.update({f"{k}{suffix}": v for k, v in res.metrics.items()})
    return metrics


def adacurl_settings(cfg: Any, store: PoolStore, console: Console) -> dict[str, Any]:
    """AdaCuRL's bucket settings for this pool: ``train.num_buckets`` buckets over the items in
    the fine band; when too few measured items fall in it (a small student scores 0 on most
    seeds) the band widens to [0, 1] and, if still short, the bucket count drops. Said aloud."""
    from teachloop.curriculum.adacurl import AdaCuRLConfig, filter_fine

    base = AdaCuRLConfig()
    diffs = {it.id: it.difficulty for it in store.query(measured=True) if it.difficulty is not None}
    k = cfg.train.num_buckets
    lo, hi = base.fine_low, base.fine_high
    if len(filter_fine(diffs, lo, hi)) < k:
        lo, hi = 0.0, 1.0
        n = len(filter_fine(diffs, lo, hi))
        if n < k:
            k = max(1, n)
        console.print(f"[yellow]note:[/] fewer than {cfg.train.num_buckets} measured items with "
                      f"difficulty in [{base.fine_low}, {base.fine_high}]; AdaCuRL uses {k} "
                      f"bucket(s) over [0, 1]", highlight=False)
    return {"num_buckets": k, "fine_low": lo, "fine_high": hi}


def _train(cfg: Any, out: Path, store: PoolStore, backends: Backends, console: Console
           ) -> dict[str, Any]:
    from teachloop.train import main as train_main
    from teachloop.training.trainer import last_complete_checkpoint

    train_dir = out / rundir.TRAIN_DIR
    last = last_complete_checkpoint(train_dir)
    if last is None and train_dir.exists():  # killed before the first checkpoint: start over
        console.print("[yellow]note:[/] no training checkpoint yet; training starts over")
        shutil.rmtree(train_dir)
    t = cfg.train
    adacurl = adacurl_settings(cfg, store, console) if "adacurl" in t.mode else None
    hook = None
    if cfg.online.enabled:
        from teachloop.online import make_online_callback

        needs_llm = needs_llm_teacher(from_run_config(cfg), list(cfg.seeds.families))
        teacher = backends.frozen_teacher() if needs_llm else None

        def hook(trainer: Any) -> list[Any]:
            return [make_online_callback(trainer, cfg, out, teacher=teacher, console=console)]

    extra = {"save_total_limit": 1, "report_to": t.report_to, **t.args}
    if cfg.online.enabled:  # the trainer loads the round's variants itself after each round
        extra.setdefault("pool_refresh_steps", 0)
    item_ids = band = None
    if t.difficulty_filter:
        from teachloop.curriculum.adacurl import filter_fine

        band = adacurl or adacurl_settings(cfg, store, console)
        diffs = {it.id: it.difficulty for it in store.query(measured=True)
                 if it.difficulty is not None}
        item_ids = set(filter_fine(diffs, band["fine_low"], band["fine_high"]))
        console.print(f"[bold]train[/] difficulty filter: {len(item_ids)} of {len(store)} items "
                      f"with difficulty in [{band['fine_low']}, {band['fine_high']}]",
                      highlight=False)
        if not item_ids:
            raise UserError("train.difficulty_filter keeps no item: no measured item has a "
                            "difficulty inside AdaCuRL's band")
    if t.completion_budget > 0:
        inner = hook

        def hook(trainer: Any) -> list[Any]:
            return [*(inner(trainer) if inner else []), budget_callback(store, t, console)]

    if cfg.eval.curve_every > 0:
        from teachloop.curve import make_curve_callback

        outer = hook

        def hook(trainer: Any) -> list[Any]:
            return [*(outer(trainer) if outer else []),
                    make_curve_callback(trainer, cfg, out, console=console)]

    res = train_main(out, mode=t.mode, max_steps=t.max_steps, out=train_dir,
                     model=student_model_path(cfg), seed=cfg.run.seed,
                     num_generations=t.num_generations, batch_size=t.batch_size,
                     max_completion_length=t.max_completion_length,
                     learning_rate=t.learning_rate, beta=None if t.beta < 0 else t.beta,
                     save_steps=t.save_steps or t.max_steps, save_final=True,
                     resume=last is not None, adacurl=adacurl, extra_args=extra,
                     console=console, trainer_hook=hook, fewshot=cfg.student.fewshot,
                     item_ids=item_ids)
    out_stats: dict[str, Any] = {"steps": res.steps}
    band = adacurl or band
    if band:  # what the fine band kept: studies flag a band widened to [0, 1] (see adacurl_settings)
        from teachloop.curriculum.adacurl import AdaCuRLConfig, filter_fine

        diffs = {it.id: it.difficulty for it in store.query(measured=True)
                 if it.difficulty is not None}
        base = AdaCuRLConfig()
        out_stats.update({"fine_band": [band["fine_low"], band["fine_high"]],
                          "band_items": len(filter_fine(diffs, band["fine_low"], band["fine_high"])),
                          "band_widened": (band["fine_low"], band["fine_high"])
                          != (base.fine_low, base.fine_high)})
    return out_stats


def budget_callback(store: PoolStore, t: Any, console: Console) -> Any:
    """Stops training before a step would take the run's training completions (the pool's
    training stats: every rolled-out group, VCRL's re-rolls included) past
    ``train.completion_budget``; a grpo step costs exactly ``batch_size`` completions, a VCRL
    step at least that."""
    from transformers import TrainerCallback

    class CompletionBudget(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            spent = store.train_totals()[1]
            if spent + t.batch_size > t.completion_budget:
                console.print(f"[bold]train[/] completion budget: {spent} of "
                              f"{t.completion_budget} completions spent after step "
                              f"{state.global_step}; stopping", highlight=False)
                control.should_training_stop = True

    return CompletionBudget()


# ------------------------------------------------------------------------------ main


def main(cfg: Any, *, resume: bool = False, console: Console | None = None) -> RunResult:
    """Run every stage on ``cfg`` (or continue a killed run); see the module docstring."""
    console = console or Console()
    t0 = time.monotonic()
    # ---------------------------------------------------------------- setup
    cfg, out, store = _setup(cfg, resume, console)
    apply_process_settings(cfg)
    with open(out / rundir.ENV, "a") as f:  # where each (re)start ran: results name their machine
        f.write(json.dumps({**rundir.environment(), "resume": resume}) + "\n")
    book = StageBook(out)
    backends = Backends(cfg)
    seeded = probed = 0
    console.print(f"[bold]teachloop run[/] {out}" + (" (resumed)" if resume else "")
                  + f": {', '.join(s for s in STAGES if not book.done(s))} to do", highlight=False)

    def stage(name: str, enabled: bool, body: Any) -> Any:
        if book.done(name):
            console.print(f"[dim]{name}: done earlier ({book.data[name].get('wall_s')} s)[/]")
            return None
        if not enabled:
            book.finish(name, 0.0, skipped=True)
            return None
        ts = time.monotonic()
        info = body() or {}
        book.finish(name, time.monotonic() - ts, **(info if isinstance(info, dict) else {}))
        return info

    try:
        with store:
            # -------------------------------------------------------- seeds
            from teachloop.seeding import seed_items

            stage("seeds", True, lambda: {"new": seed_items(cfg, store, console)})
            # -------------------------------------------------------- teacher turns
            stage("teacher", cfg.teacher.max_turns > 0,
                  lambda: _teacher(cfg, out, backends, console))
            # -------------------------------------------------------- probe the rest
            info = stage("probe", True, lambda: {"probed": _probe(cfg, store, backends, console)})
            probed = (info or {}).get("probed", 0)
            # -------------------------------------------------------- pool summary
            from teachloop.stats import pool_summary, render_summary

            render_summary(pool_summary(store), console)
            training = cfg.train.max_steps > 0
            # -------------------------------------------------------- eval before
            stage("eval_before", cfg.eval.enabled and cfg.eval.before and training,
                  lambda: _eval(cfg, out, store, "before", backends, console))
            # -------------------------------------------------------- train
            if training and not book.done("train"):
                backends.close()  # free the probe model's memory and threads for training
            stage("train", training, lambda: _train(cfg, out, store, backends, console))
            # -------------------------------------------------------- eval after
            stage("eval_after", cfg.eval.enabled and training,
                  lambda: _eval(cfg, out, store, "after", backends, console))
            _print_eval(out, console)
        # ------------------------------------------------------------ export
        stage("export", cfg.export.enabled, lambda: _export(cfg, out, console))
        # ------------------------------------------------------------ report
        stage("report", cfg.report.enabled, lambda: _report(cfg, out, console))
    finally:
        backends.close()
    wall = time.monotonic() - t0
    console.print(f"[bold green]done[/] in {wall:.1f} s; run directory {out}")
    return RunResult(out=out, seeded=seeded, probed=probed, wall_s=wall, stages=book.data)


def _export(cfg: Any, out: Path, console: Console) -> dict[str, Any]:
    from teachloop.export import export

    res = export(out, fmt=cfg.export.format, console=console)
    return {"rows": res.n_rows}


def _report(cfg: Any, out: Path, console: Console) -> dict[str, Any]:
    from teachloop.report import build_report

    res = build_report(out, screenshot=cfg.report.screenshot, console=console)
    console.print(f"[bold]report[/] {res.html}")
    return {"html": str(res.html)}


def _print_eval(out: Path, console: Console) -> None:
    before = rundir.read_json(out / rundir.EVAL_BEFORE)
    after = rundir.read_json(out / rundir.EVAL_AFTER)
    if not before or not after:
        return
    t = Table(title=f"eval on {before.get('bench')} ({before.get('n_items')} held-out items, "
              f"k={before.get('k')})", title_justify="left", box=None)
    for col in ("metric", "before", "after", "Δ"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for k, b in before.get("metrics", {}).items():
        a = after.get("metrics", {}).get(k)
        if a is None:
            continue
        t.add_row(k, f"{b:.3f}", f"{a:.3f}", f"{a - b:+.3f}")
    ci = eval_ci(before, after)
    if ci:
        t.add_row("pass@1 95 % CI", *(f"[{lo:+.3f}, {hi:+.3f}]" if key == "delta" else
                                      f"[{lo:.3f}, {hi:.3f}]"
                                      for key in ("before", "after", "delta")
                                      for _, lo, hi in [ci[key]]))
    console.print(t)
    if ci:
        console.print("[dim]CI: paired bootstrap over the held-out items (2000 replicates); "
                      "an interval that contains 0 means the change is not distinguishable "
                      "from sampling noise[/]")
