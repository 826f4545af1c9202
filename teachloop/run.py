"""``teachloop run``: one run directory, stage by stage, resumable after a kill.

Stages in this version (each reads and writes only the pool, so a stage can be re-run):

1. setup   - the run directory, its resolved ``config.yaml``, the pool
2. seeds   - seed items from the configured task families (idempotent: content-hash ids)
3. probe   - M student attempts per unmeasured item, scored by the family's checker;
             each chunk's stats land in the pool in one transaction, so a kill loses at
             most the chunk in flight and ``--resume`` probes only what is still unmeasured
4. summary - counts, rejections and the pass-rate histogram

Teacher turns (the LangGraph loop), curriculum training, evaluation, export and the report
are later stages of the same command; they are not part of this version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from curriculum.items import Item
from curriculum.pool import PoolStore, open_pool
from teachloop.config import ModelSection, TeachloopConfig, config_from_dict, dump_yaml, to_dict
from teachloop.errors import UserError

CONFIG_FILE = "config.yaml"


@dataclass
class RunResult:
    out: Path
    seeded: int
    probed: int
    wall_s: float


def make_student_backend(m: ModelSection) -> Any:
    """The chat backend a ``ModelSection`` describes (imports torch only for ``local``)."""
    from agents.backends import LocalBackendConfig, OpenAIBackendConfig, make_backend

    if m.backend == "local":
        model = None if m.model == "embedded" else m.model
        return make_backend(LocalBackendConfig(model=model))
    return make_backend(OpenAIBackendConfig(base_url=m.base_url or None,
                                            model=None if m.model == "embedded" else m.model))


def _setup(cfg: TeachloopConfig, resume: bool, console: Console
           ) -> tuple[TeachloopConfig, Path, PoolStore]:
    out = Path(cfg.run.out)
    cfg_file = out / CONFIG_FILE
    if cfg_file.exists() and not resume:
        raise UserError(f"{out} already holds a run; pass --resume to continue it, "
                        "or choose another --out")
    if resume and not cfg_file.exists():
        raise UserError(f"nothing to resume in {out} (no {CONFIG_FILE})")
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        saved = yaml.safe_load(cfg_file.read_text())
        if saved != to_dict(cfg):  # the run's own config wins: a resume finishes that run
            console.print(f"[yellow]note:[/] resuming with the config saved in {cfg_file}")
        cfg = config_from_dict(saved)
    else:
        tmp = cfg_file.with_suffix(".tmp")
        tmp.write_text(dump_yaml(cfg))
        tmp.replace(cfg_file)
    return cfg, out, open_pool(out)


def _seed(cfg: TeachloopConfig, store: PoolStore, console: Console) -> int:
    from evals.families import UnknownFamilyError, get_family

    new = 0
    for name in cfg.seeds.families:
        try:
            fam = get_family(name)
        except UnknownFamilyError as e:
            raise UserError(str(e)) from None
        items = fam.seeds(cfg.seeds.per_family, seed=cfg.run.seed)
        new += store.insert_many(items)
    console.print(f"[bold]seeds[/] {new} new items from {len(cfg.seeds.families)} families "
                  f"({len(store)} in the pool)")
    return new


def _probe(cfg: TeachloopConfig, store: PoolStore, console: Console) -> int:
    from agents.probe import probe
    from evals.families import get_family

    todo: list[Item] = store.query(measured=False)
    if not todo:
        console.print("[bold]probe[/] nothing to probe: every item is measured")
        return 0
    backend = make_student_backend(cfg.student)
    backend.check()  # a dead endpoint is one clear error now, not ten minutes later

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
                            max_tokens=cfg.student.max_tokens)
            store.record_many([(r.item_id, r.attempts, sum(r.rewards)) for r in results])
            bar.advance(task, len(part))
    backend.close()
    return len(todo)


def main(cfg: TeachloopConfig, *, resume: bool = False, console: Console | None = None
         ) -> RunResult:
    """Run every stage of this version on ``cfg``; see the module docstring."""
    console = console or Console()
    t0 = time.monotonic()
    # ---------------------------------------------------------------- setup
    cfg, out, store = _setup(cfg, resume, console)
    with store:
        # ------------------------------------------------------------ seeds
        seeded = _seed(cfg, store, console)
        # ------------------------------------------------------------ probe
        probed = _probe(cfg, store, console)
        # ------------------------------------------------------------ summary
        from teachloop.stats import pool_summary, render_summary

        render_summary(pool_summary(store), console)
    wall = time.monotonic() - t0
    console.print(f"[bold green]done[/] in {wall:.1f} s; run directory {out}")
    return RunResult(out=out, seeded=seeded, probed=probed, wall_s=wall)
