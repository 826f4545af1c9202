"""Online mode: teacher rounds *during* curriculum GRPO training (``teachloop run --online``).

Every ``online.every_steps`` training steps, :class:`OnlineTeacher` (a ``TrainerCallback``)
runs one round of the LangGraph teacher loop (agents/graph.py) on the current frontier:

1. **Frontier**: the items the trainer rolled out since the last round, farthest outside the
   target band first (p > ``harder_above`` or p <= ``easier_at`` by their newest rollout),
   at most ``online.max_heads``.
2. **Summary**: the newest training rollout of each head (its G completions and accuracy
   rewards, kept by ``CurriculumGRPOTrainer.rollouts``) *is* the student performance summary
   (``LoopContext.rollouts``): no extra probing of items already rolled out.
3. **Propose / validate / dedup / probe / keep** as in the offline loop, ``online.max_turns``
   turns per chain; new variants are probed with the *current policy* (the training model,
   in eval mode, through ``LocalBackend.from_loaded``), so their p is what the student can do
   now. The teacher is a separate frozen model (never fine-tuned) or procedural.
4. **Merge**: ``trainer.refresh_items()`` loads the accepted variants; AdaCuRL puts each in
   the bucket its measured difficulty belongs to, so training continues on them.

Exactly once across kills: each round is its own LangGraph thread (``online-s<step>``) in
``RUN_DIR/checkpoints.sqlite`` with ledger slots keyed by that id, so a round re-run after a
resume replays from its checkpoint and cannot write the pool twice; its ``online_rounds.jsonl``
record is written once per step. The torch RNG state is saved and restored around a round,
so a round does not shift the training samples that follow it.

No peer implementation to follow: METHODS.md §1 describes the offline loop only. Choices
made here: a round after step ``s`` sees rollouts of steps ``(s - K, s]``; in-band heads end
their chains at once (``in_band = "stop"``); a round's wall time is part of the step's time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from teachloop import rundir


@dataclass
class RoundResult:
    round: int
    step: int
    frontier: int
    proposals: int
    accepted: int
    rejected: int
    new_items: int
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pick_heads(rollouts: dict[str, tuple], since_step: int, loop_cfg: Any, limit: int) -> list[str]:
    """Items rolled out after ``since_step``, farthest outside the target band first."""
    mid = (loop_cfg.easier_at + loop_cfg.harder_above) / 2
    scored = []
    for item_id, (texts, rewards, step) in rollouts.items():
        if step <= since_step or not rewards:
            continue
        p = sum(rewards) / len(rewards)
        outside = p > loop_cfg.harder_above or p <= loop_cfg.easier_at
        scored.append((not outside, -abs(p - mid), item_id))
    scored.sort()
    return [i for _, _, i in scored[:limit]]


def make_online_callback(trainer: Any, cfg: Any, run_dir: Path, *, teacher: Any = None,
                         console: Console | None = None) -> Any:
    """The ``TrainerCallback`` that runs teacher rounds; ``cfg`` is the run's TeachloopConfig,
    ``teacher`` a frozen teacher backend (None when every family is procedural)."""
    from transformers import TrainerCallback

    console = console or Console()

    class OnlineTeacher(TrainerCallback):
        def __init__(self) -> None:
            done = rundir.read_jsonl(run_dir / rundir.ONLINE_ROUNDS)
            self.done_steps = {int(r["step"]) for r in done if "step" in r}
            self.last_step = 0

        def on_step_end(self, args, state, control, **kw):
            step, every = state.global_step, cfg.online.every_steps
            if step % every or step >= state.max_steps:
                return
            res = run_round(trainer, cfg, run_dir, step=step, since_step=step - every,
                            teacher=teacher, console=console)
            m = trainer._metrics["train"]
            m["online/round"].append(float(res.round))
            m["online/accepted"].append(float(res.accepted))
            m["online/new_items"].append(float(res.new_items))
            m["online/wall_s"].append(res.wall_s)
            if step not in self.done_steps:
                rundir.append_jsonl(run_dir / rundir.ONLINE_ROUNDS, res.to_dict())
                self.done_steps.add(step)

    return OnlineTeacher()


def run_round(trainer: Any, cfg: Any, run_dir: Path, *, step: int, since_step: int,
              teacher: Any = None, console: Console | None = None) -> RoundResult:
    """One teacher round on the trainer's newest rollouts; see the module docstring."""
    import torch

    from teachloop.agents.backends import LocalBackend
    from teachloop.agents.batching import CoalescingBackend
    from teachloop.agents.build import backend_label
    from teachloop.agents.config import from_run_config
    from teachloop.agents.graph import summarise_outcomes
    from teachloop.agents.ledger import Ledger
    from teachloop.agents.state import LoopContext
    from teachloop.agents.teacher import PromptLibrary

    console = console or Console()
    t0 = time.monotonic()
    base = from_run_config(cfg)
    heads = pick_heads(trainer.rollouts, since_step, base, cfg.online.max_heads)
    round_no = step // cfg.online.every_steps
    if not heads:
        return RoundResult(round_no, step, 0, 0, 0, 0, 0, time.monotonic() - t0)
    loop = base.replace(head_ids=heads, max_turns=cfg.online.max_turns, frontier="pool",
                        max_frontier=0, chains_per_item=1, seed=base.seed + step)
    model = trainer.accelerator.unwrap_model(trainer.model)
    student = CoalescingBackend(LocalBackend.from_loaded(model, trainer.processing_class),
                                window_s=loop.batch_window_s)
    run_id = f"online-s{step}"
    store = trainer.data.store
    ctx = LoopContext(config=loop, store=store,
                      ledger=Ledger(store, run_id, near_dup_threshold=loop.near_dup_threshold,
                                    shingle_size=loop.shingle_size),
                      student=student, teacher=teacher,
                      teacher_name=f"llm:{backend_label(teacher)}" if teacher is not None else "llm",
                      prompts=PromptLibrary(loop.prompts_dir or None),
                      rollouts={i: trainer.rollouts[i] for i in heads})
    rng = torch.get_rng_state()
    was_training = model.training
    model.eval()
    try:
        state = asyncio.run(_arun(ctx, run_id, run_dir / "checkpoints.sqlite"))
    finally:
        if was_training:
            model.train()
        torch.set_rng_state(rng)
    new = trainer.refresh_items()
    s = summarise_outcomes(state)
    res = RoundResult(round_no, step, len(heads), len(state.get("outcomes", [])), s["accepted"],
                      s["rejected"], len(new), time.monotonic() - t0)
    console.print(f"[bold magenta]teacher round {res.round}[/] after step {step}: "
                  f"{res.frontier} heads, {res.proposals} proposals, {res.accepted} accepted, "
                  f"{res.rejected} rejected, {res.new_items} new items in the curriculum "
                  f"({res.wall_s:.1f} s)", highlight=False)
    return res


async def _arun(ctx: Any, run_id: str, checkpoint_path: Path) -> dict[str, Any]:
    from teachloop.agents.checkpoint import sqlite_saver
    from teachloop.agents.graph import run_loop

    async with sqlite_saver(checkpoint_path) as saver:
        return await run_loop(ctx, run_id, checkpointer=saver)
