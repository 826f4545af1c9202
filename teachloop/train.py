"""``teachloop train``: GRPO on a run's pool with the VCRL / AdaCuRL curriculum.

    teachloop train --pool runs/quickstart --mode vcrl+adacurl --max-steps 10

Stages (open-r1 style, top to bottom in :func:`main`):

1. setup  - open the pool, resolve the model (the embedded SmolLM2-135M by default) and the
            output directory (``RUN_DIR/train-<mode>``), build ``CurriculumGRPOConfig``
2. load   - the pool's items (``PoolData``) and ``CurriculumGRPOTrainer`` (model, reference
            model when ``beta > 0``, reward functions bound to the items)
3. train  - TRL's loop; one line per step with the informative-group fraction, κ, bank,
            buckets, cs and merges, a rich progress bar, every log also in
            ``OUT/train_log.jsonl``; ``--resume`` continues from the last checkpoint in OUT
4. save   - the final model and tokenizer in ``OUT/final`` (unless ``--no-save-final``)

Several processes: ``accelerate launch --multi_gpu --num_processes 2 -m teachloop train ...``
(on CPU too: gloo; note that ``accelerate launch --cpu --num_processes 2`` starts *one*
process). Rank 0 decides the curriculum and alone writes the pool, logs and checkpoints
(``training/dist.py``).

CPU defaults (``use_cpu`` when no GPU is visible, float32, small batches) are this module's
choice, not the trainer's: on a GPU pass ``--arg bf16=true --arg use_vllm=true ...`` (see
``training/GPU.md``). ``beta`` defaults to 0.04 in the AdaCuRL modes (their reference reset and
sparse KL act on the KL term) and to TRL's 0 otherwise.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from teachloop.errors import UserError

MODES = ("grpo", "vcrl", "adacurl", "vcrl+adacurl")
LOG_FILE = "train_log.jsonl"


@dataclass
class TrainResult:
    out: Path
    steps: int
    wall_s: float
    history: list[dict[str, Any]] = field(default_factory=list)  # per generation batch
    logs: list[dict[str, Any]] = field(default_factory=list)  # TRL's log_history


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    import yaml

    from teachloop.config import yaml_load  # 1e-6 is a float (YAML 1.2)

    out: dict[str, Any] = {}
    for s in pairs:
        key, eq, raw = s.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--arg {s!r} must look like key=value")
        try:
            out[key.strip()] = yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def make_callback(console: Console, out: Path, max_steps: int):
    """A TrainerCallback: rich progress bar, one line per logged step, ``train_log.jsonl``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers import TrainerCallback

    class CurriculumProgress(TrainerCallback):
        def __init__(self) -> None:
            self.bar: Progress | None = None
            self.task = None

        def on_train_begin(self, args, state, control, **kw):
            if not state.is_world_process_zero:
                return
            self.bar = Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("steps", total=max_steps, completed=state.global_step)

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs:
                return
            # the end-of-training summary is not a step: keyed apart, so each step's record is
            # the only one with its "step" (a resumed run that has nothing left to train
            # writes only a summary)
            key = "summary_at_step" if "train_runtime" in logs else "step"
            rec = {key: state.global_step, **logs}
            with open(out / LOG_FILE, "a") as f:
                f.write(json.dumps(rec, default=float) + "\n")
            if "curriculum/informative_frac" in logs:
                console.print(format_step(rec, max_steps), highlight=False)

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

    return CurriculumProgress()


def format_step(rec: dict[str, Any], max_steps: int) -> str:
    """One log line: the step's reward and what the curriculum did."""
    def g(k, fmt="{:.2f}"):
        v = rec.get(k)
        return "-" if v is None else fmt.format(v)

    parts = [f"step {rec['step']}/{max_steps}", f"reward {g('reward')}",
             f"informative {g('curriculum/informative_frac')} "
             f"(rolled {g('curriculum/informative_frac_rolled')})"]
    if "vcrl/kappa" in rec:
        parts += [f"κ {g('vcrl/kappa')}", f"bank {g('vcrl/bank_size', '{:.0f}')}",
                  f"refilled {g('vcrl/refilled', '{:.0f}')}/{g('vcrl/dropped', '{:.0f}')}"]
    if "adacurl/cs" in rec:
        parts += [f"buckets {g('adacurl/n_active', '{:.0f}')}", f"cs {g('adacurl/cs')}",
                  f"merges {g('adacurl/merges', '{:.0f}')}"]
    parts += [f"step {g('step_time', '{:.1f}')}s", f"curriculum {g('curriculum/overhead_s', '{:.3f}')}s"]
    return "  ".join(parts)


def main(
    pool: str | os.PathLike[str],
    *,
    mode: str = "vcrl+adacurl",
    max_steps: int = 10,
    out: str | os.PathLike[str] | None = None,
    model: str | None = None,
    seed: int = 0,
    num_generations: int = 4,
    batch_size: int = 8,
    max_completion_length: int = 64,
    learning_rate: float = 1e-6,
    beta: float | None = None,
    family: str | None = None,
    save_steps: int = 0,
    save_final: bool = True,
    resume: bool = False,
    vcrl: dict[str, Any] | None = None,
    adacurl: dict[str, Any] | None = None,
    extra_args: dict[str, Any] | None = None,
    console: Console | None = None,
    trainer_hook: Any = None,
    fewshot: int = 0,
    item_ids: Any = None,
) -> TrainResult:
    """Train on the pool at ``pool`` (a run directory or pool URL); see the module docstring.
    ``fewshot``: solved examples before every prompt (evals/fewshot.py); ``item_ids``: train
    on these items only (``train.difficulty_filter``)."""
    # several processes (`accelerate launch --multi_gpu --num_processes N -m teachloop train`):
    # rank 0 alone prints and writes the log and the config dump (the trainer: pool, state)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    console = console or Console(quiet=not main_rank)
    t_start = time.monotonic()
    # ---------------------------------------------------------------- setup
    if mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if max_steps < 1:
        raise UserError(f"--max-steps must be >= 1, got {max_steps}")
    from teachloop.curriculum.pool import PoolError, open_pool, resolve_pool_path

    from teachloop.curriculum.pool_schema import parse_pool_url

    local = None if "://" in str(pool) else parse_pool_url(pool).path  # None: a server pool
    if local is not None and not local.exists():
        raise UserError(f"no pool at {pool} (expected {local}); run `teachloop run` first")
    try:
        store = open_pool(pool, create=False)
    except PoolError as e:
        raise UserError(str(e)) from None
    if "://" not in str(pool) and Path(pool).is_dir():
        run_dir = Path(pool)
    elif store.dialect == "postgresql":  # a server pool given by URL: ./runs/train-<mode>
        run_dir = Path("runs")
    else:
        run_dir = resolve_pool_path(pool).parent
    out_dir = Path(out) if out is not None else run_dir / f"train-{mode.replace('+', '-')}"
    last_ckpt = None
    if resume:
        from teachloop.training.trainer import last_complete_checkpoint

        last_ckpt = last_complete_checkpoint(out_dir)  # skips one a kill left half written
        if last_ckpt is None:
            raise UserError(f"--resume: no checkpoint in {out_dir} (train with --save-steps N)")
        if main_rank:
            _truncate_log(out_dir / LOG_FILE, int(Path(last_ckpt).name.rsplit("-", 1)[1]))
    elif (out_dir / LOG_FILE).exists():
        raise UserError(f"{out_dir} already holds a training run; pass --resume to continue it "
                        "or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)

    import torch

    from teachloop.training.config import CurriculumGRPOConfig
    from teachloop.training.data import PoolData
    from teachloop.training.trainer import CurriculumGRPOTrainer

    if model is None:
        from teachloop.agents.embedded import embedded_model_path

        model = str(embedded_model_path())
    if beta is None:
        beta = 0.04 if "adacurl" in mode else 0.0
    on_cpu = not torch.cuda.is_available()
    kwargs: dict[str, Any] = dict(
        output_dir=str(out_dir), curriculum_mode=mode, max_steps=max_steps, seed=seed,
        num_generations=num_generations, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1, max_completion_length=max_completion_length,
        learning_rate=learning_rate, beta=beta, logging_steps=1, report_to="none",
        disable_tqdm=True, use_cpu=on_cpu, bf16=False if on_cpu else None,
        save_strategy="steps" if save_steps > 0 else "no", save_steps=max(save_steps, 1),
        vcrl_config=vcrl, adacurl_config=adacurl, reward_weights=[1.0, 0.2],
    )
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    extra = dict(extra_args or {})
    for key in ("vcrl_config", "adacurl_config"):  # --arg / train.args add to, not replace, these
        if isinstance(extra.get(key), str):
            try:
                extra[key] = json.loads(extra[key])
            except ValueError:
                pass  # CurriculumGRPOConfig says what is wrong with it
        if isinstance(extra.get(key), dict) and isinstance(kwargs.get(key), dict):
            extra[key] = {**kwargs[key], **extra[key]}
    kwargs.update(extra)
    try:
        args = CurriculumGRPOConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"training config: {e}") from None
    # ---------------------------------------------------------------- load
    try:
        data = PoolData.from_pool(store, family=family, fewshot=fewshot, ids=item_ids)
        trainer = CurriculumGRPOTrainer(model=model, args=args, data=data,
                                        callbacks=[make_callback(console, out_dir, max_steps)])
    except (PoolError, ValueError) as e:
        raise UserError(str(e).splitlines()[0]) from None
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our callback prints one line per step instead
    for cb in (trainer_hook(trainer) if trainer_hook is not None else []):
        trainer.add_callback(cb)
    console.print(f"[bold]train[/] mode {mode}, {len(data)} items, model {Path(model).name}, "
                  f"G={num_generations}, batch {batch_size}, {max_completion_length} tokens, "
                  f"beta {beta}; out {out_dir}")
    if args.vcrl_keeps is not None:
        from teachloop.curriculum.vcrl import describe_keeps

        console.print(f"[bold]vcrl[/] {describe_keeps(args.vcrl_keeps)}", highlight=False)
    if main_rank:
        (out_dir / "training_args.json").write_text(args.to_json_string())  # the config dump
    if trainer.scheduler is not None:
        sizes = [len(b) for b in trainer.scheduler.buckets]
        console.print(f"[bold]adacurl[/] buckets (easy → hard) {sizes}; starting with bucket 0")
    # ---------------------------------------------------------------- train
    trainer.train(resume_from_checkpoint=last_ckpt)
    # ---------------------------------------------------------------- save
    if save_final:
        trainer.save_model(str(out_dir / "final"))
    store.close()
    wall = time.monotonic() - t_start
    console.print(f"[bold green]done[/] {trainer.state.global_step} steps in {wall:.1f} s; {out_dir}")
    return TrainResult(out=out_dir, steps=trainer.state.global_step, wall_s=wall,
                       history=trainer.history, logs=list(trainer.state.log_history))


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records past ``step`` (the checkpoint a resumed run restarts from), so the
    re-run steps are not logged twice."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line torn by the kill
        if isinstance(rec, dict) and rec.get("step", 0) <= step:
            keep.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in keep))
    os.replace(tmp, path)


def train_command(
    pool: Annotated[str, typer.Option("--pool", help="run directory holding pool.sqlite "
                                       "(or a pool file / sqlite:/// URL)")],
    mode: Annotated[str, typer.Option(help="grpo, vcrl, adacurl or vcrl+adacurl")] = "vcrl+adacurl",
    max_steps: Annotated[int, typer.Option("--max-steps", help="optimisation steps")] = 10,
    out: Annotated[Optional[Path], typer.Option(help="output directory (default "
                                                "RUN_DIR/train-<mode>)")] = None,
    model: Annotated[Optional[str], typer.Option(help="HF checkpoint path or id (default: "
                                                 "the embedded SmolLM2-135M-Instruct)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    num_generations: Annotated[int, typer.Option("--num-generations", help="group size G")] = 4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="completions per step "
                                            "(per device), a multiple of G")] = 8,
    max_completion_length: Annotated[int, typer.Option("--max-completion-length",
                                                       help="max new tokens")] = 64,
    learning_rate: Annotated[float, typer.Option("--lr", help="learning rate")] = 1e-6,
    beta: Annotated[Optional[float], typer.Option(help="KL coefficient (default 0.04 with "
                                                  "AdaCuRL, else 0)")] = None,
    family: Annotated[Optional[str], typer.Option(help="train on one family (or a 'math.*' "
                                                  "prefix)")] = None,
    save_steps: Annotated[int, typer.Option("--save-steps", help="checkpoint every N steps "
                                            "(0: none)")] = 0,
    save_final: Annotated[bool, typer.Option("--save-final/--no-save-final",
                                             help="save the final model in OUT/final")] = True,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint "
                                         "in OUT")] = False,
    arg: Annotated[Optional[list[str]], typer.Option("--arg", help="any CurriculumGRPOConfig "
                   "field, e.g. --arg use_vllm=true --arg vcrl_config='{\"kappa\": 0.5}' "
                   "(repeatable)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="train.KEY=VALUE, the same as "
                    "--arg KEY=VALUE, e.g. --set train.pool_refresh_steps=2 to pick up items "
                    "generation workers add to the pool while training (repeatable)")] = None,
) -> None:
    """GRPO on the pool with VCRL variance selection + replay and AdaCuRL buckets."""
    for s in set_ or []:
        if not s.startswith("train."):
            raise UserError(f"--set {s!r}: teachloop train takes train.KEY=VALUE only")
    arg = list(arg or []) + [s[len("train."):] for s in set_ or []]
    main(pool, mode=mode, max_steps=max_steps, out=out, model=model, seed=seed,
         num_generations=num_generations, batch_size=batch_size,
         max_completion_length=max_completion_length, learning_rate=learning_rate, beta=beta,
         family=family, save_steps=save_steps, save_final=save_final, resume=resume,
         extra_args=_parse_args(arg or []))
