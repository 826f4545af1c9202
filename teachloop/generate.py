"""``teachloop generate``: the LangGraph teacher loop over one run directory, resumable.

Stages (banner-marked in ``main``): setup (RUN_DIR, its ``generate.yaml`` and run id) ->
seeds (idempotent) -> backends -> teacher loop (live progress; checkpoints in
``RUN_DIR/checkpoints.sqlite``) -> report (yield per turn and direction, rejection reasons,
chain ends, pass-rate histogram).

``--resume`` continues the run in RUN_DIR after a kill (even ``kill -9``): LangGraph's SQLite
checkpointer restarts the unfinished tasks of the last superstep, and the pool writes are
exactly-once per proposal slot (agents/ledger.py), so nothing is lost and nothing is counted
twice. A finished run resumed does nothing and prints its report again.

Register with the CLI (teachloop/cli.py)::

    from teachloop.generate import generate_command
    app.command("generate")(generate_command)

Also runnable alone: ``python -m teachloop.generate --preset quickstart --out runs/gen``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from teachloop.agents.build import Backends, backend_label, endpoint_summary, needs_llm_teacher
from teachloop.agents.config import from_run_config
from teachloop.config import (
    DEFAULT_PRESET,
    apply_process_settings,
    config_from_dict,
    dump_yaml,
    load_config,
    to_dict,
    yaml_load,
)
from teachloop.errors import UserError
from teachloop.seeding import seed_items  # noqa: F401  (public here too)

CONFIG_FILE = "generate.yaml"
RUN_FILE = "generate.json"
CHECKPOINT_FILE = "checkpoints.sqlite"

# ---------------------------------------------------------------------------- result


@dataclass
class GenerateResult:
    out: Path
    run_id: str
    chains: int
    proposals: int
    accepted: int
    rejected: int
    pool_accepted: int  # counted in the pool (items carrying this run's slots)
    pool_rejected: int  # counted in the rejections table
    by_turn: dict[tuple[int, str], dict[str, int]]
    reasons: dict[tuple[str, str], int]
    chain_ends: dict[str, int]
    pass_rates: list[float]  # of the accepted items
    wall_s: float
    state: dict[str, Any] = field(repr=False, default_factory=dict)
    visits: dict[str, int] = field(default_factory=dict)
    paused: int = 0  # chains waiting at the spent teacher.budget_tokens (--resume continues)


# ---------------------------------------------------------------------------- stages


def _setup(cfg: Any, out: Path | None, resume: bool, console: Console) -> tuple[Any, Path, str]:
    out = Path(out) if out is not None else Path(cfg.run.out)
    run_file, cfg_file = out / RUN_FILE, out / CONFIG_FILE
    if run_file.exists() and not resume:
        raise UserError(f"{out} already holds a generate run; pass --resume to continue it, "
                        "or choose another --out")
    if resume and not run_file.exists():
        raise UserError(f"nothing to resume in {out} (no {RUN_FILE})")
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        run_id = json.loads(run_file.read_text())["run_id"]
        saved_cfg = config_from_dict(yaml_load(cfg_file.read_text()))
        given = to_dict(cfg)
        given["run"]["out"] = saved_cfg.run.out
        budget = cfg.teacher.budget_tokens
        if budget and budget != saved_cfg.teacher.budget_tokens:  # the one key a resume may change
            console.print(f"[bold]teacher.budget_tokens[/] {saved_cfg.teacher.budget_tokens:,} -> "
                          f"{budget:,}", highlight=False)
            saved_cfg.teacher.budget_tokens = budget
            _write_atomic(cfg_file, dump_yaml(saved_cfg))
        given["teacher"]["budget_tokens"] = saved_cfg.teacher.budget_tokens
        if to_dict(saved_cfg) != given:
            console.print(f"[yellow]note:[/] resuming with the config saved in {cfg_file}")
        return saved_cfg, out, run_id
    cfg = config_from_dict(to_dict(cfg))  # a copy: the caller's object is left as it was
    cfg.run.out = str(out)
    run_id = f"gen-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    for path, text in ((cfg_file, dump_yaml(cfg)),
                       (run_file, json.dumps({"run_id": run_id, "started_at": time.time()}))):
        _write_atomic(path, text)  # generate.json last: its presence means "resumable"
    return cfg, out, run_id


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ---------------------------------------------------------------------------- display


class Progress:
    """Live table: proposed / accepted / rejected per turn, chains finished."""

    def __init__(self, chains: int = 0) -> None:
        self.rows: dict[int, Counter] = {}
        self.chains = chains
        self.done = 0

    def absorb(self, state: dict[str, Any]) -> None:
        for o in state.get("outcomes", []):
            self._add(o)
        self.done += len(state.get("chains_done", []))
        self.chains = state.get("frontier_size", self.chains)

    def _add(self, o: dict[str, Any]) -> None:
        c = self.rows.setdefault(o["turn"], Counter())
        c["proposed"] += 1
        c[o["status"]] += 1

    def update(self, node: str, upd: dict[str, Any]) -> None:
        for o in upd.get("outcomes", []):
            self._add(o)
        self.done += len(upd.get("chains_done", []))
        if "frontier_size" in upd:
            self.chains = upd["frontier_size"]

    def render(self) -> Table:
        t = Table(title=f"teacher loop: {self.done}/{self.chains} chains finished", title_justify="left",
                  box=None)
        for col in ("turn", "proposed", "accepted", "rejected"):
            t.add_column(col, justify="right")
        for turn in sorted(self.rows):
            c = self.rows[turn]
            t.add_row(str(turn), str(c["proposed"]), f"[green]{c['accepted']}[/]", f"[red]{c['rejected']}[/]")
        return t


def render_report(res: GenerateResult, console: Console) -> None:
    t = Table(title="yield per turn and direction", title_justify="left", box=None)
    for col in ("turn", "direction", "proposed", "accepted", "rejected", "yield"):
        t.add_column(col, justify="right" if col not in ("direction",) else "left")
    for (turn, direction), c in res.by_turn.items():
        y = c["accepted"] / c["proposed"] if c["proposed"] else 0.0
        t.add_row(str(turn), direction, str(c["proposed"]), str(c["accepted"]), str(c["rejected"]), f"{y:.0%}")
    console.print(t)
    if res.reasons:
        r = Table(title="rejection reasons", title_justify="left", box=None)
        r.add_column("stage")
        r.add_column("reason")
        r.add_column("n", justify="right")
        for (stage, reason), n in list(res.reasons.items())[:15]:
            r.add_row(stage, reason, str(n))
        if len(res.reasons) > 15:
            r.add_row("…", f"{len(res.reasons) - 15} more distinct reasons", "")
        console.print(r)
    if res.chain_ends:
        e = Table(title="why chains stopped", title_justify="left", box=None)
        e.add_column("reason")
        e.add_column("chains", justify="right")
        for reason, n in res.chain_ends.items():
            e.add_row(reason, str(n))
        console.print(e)
    if res.pass_rates:
        from teachloop.stats import histogram

        h = histogram(res.pass_rates)
        mean = sum(res.pass_rates) / len(res.pass_rates)
        console.print(f"[bold]pass rate p of accepted items[/] ({len(res.pass_rates)}, mean {mean:.3f})")
        top = max(h) or 1
        for i, n in enumerate(h):
            close = "]" if i == len(h) - 1 else ")"
            console.print(f"  [{i / len(h):.1f}, {(i + 1) / len(h):.1f}{close} {'█' * round(30 * n / top):<30} {n}",
                          highlight=False)
    ok = res.proposals == res.accepted + res.rejected == res.pool_accepted + res.pool_rejected
    mark = "[green]ok[/]" if ok else "[red]MISMATCH[/]"
    console.print(f"[bold]proposals[/] {res.proposals} = accepted {res.accepted} + rejected {res.rejected}; "
                  f"pool: {res.pool_accepted} items + {res.pool_rejected} rejections {mark}")


# ---------------------------------------------------------------------------- main


def main(cfg: Any, out: Path | str | None = None, resume: bool = False,
         console: Console | None = None, *, student: Any = None, teacher: Any = None) -> GenerateResult:
    """Run (or resume) the teacher loop on ``cfg`` into ``out`` (default ``cfg.run.out``).

    ``student`` / ``teacher``: ready ``ChatBackend`` objects to use instead of the ones the
    config describes (benchmarks reuse one loaded model across runs; tests script them).
    The caller keeps ownership of backends it passes in (they are not closed here).
    """
    console = console or Console()
    t0 = time.monotonic()
    # ---------------------------------------------------------------- setup
    cfg, out, run_id = _setup(cfg, Path(out) if out is not None else None, resume, console)
    apply_process_settings(cfg)
    loop = from_run_config(cfg)
    from teachloop.agents.graph import summarise_outcomes
    from teachloop.agents.ledger import Ledger, recorded_slots
    from teachloop.agents.state import LoopContext
    from teachloop.agents.teacher import PromptLibrary, PromptError, target_family, teacher_kind_for
    from teachloop.curriculum.pool import open_pool
    from teachloop.evals.families import family_names, get_family

    store = open_pool(out)
    with store:
        # ------------------------------------------------------------ seeds
        seed_items(cfg, store, console)
        families = [f for f in (loop.families or sorted(store.counts("family"))) if f in family_names()]
        # ------------------------------------------------------------ backends
        needs_teacher = needs_llm_teacher(loop, families)
        prompts = PromptLibrary(loop.prompts_dir or None)
        if needs_teacher:
            try:  # a broken template override fails now, not after the first probe
                for f in families:
                    if teacher_kind_for(f, loop.kind, get_family(f).supports_variants) == "llm":
                        for kind in ("first", "easier", "harder"):
                            prompts.template(target_family(f), kind)
            except PromptError as e:
                raise UserError(str(e)) from None
        own = Backends(cfg) if student is None else None
        if own is not None:  # built and checked here, closed at the end
            student = own.student()
            teacher = own.teacher() if needs_teacher else None
        else:
            if not needs_teacher:
                teacher = None
            elif teacher is None:
                raise UserError("the llm teacher needs a teacher backend (pass teacher=...)")
            student.check()
            if teacher is not None and teacher is not student:
                teacher.check()
        ledger = Ledger(store, run_id, near_dup_threshold=loop.near_dup_threshold,
                        shingle_size=loop.shingle_size)
        budget = None
        if loop.budget_tokens and needs_teacher:  # spent so far: every proposal in the pool
            from teachloop.agents.budget import TokenBudget
            from teachloop.stats import spent_tokens, teacher_totals

            budget = TokenBudget(loop.budget_tokens, spent=spent_tokens(teacher_totals(store)))
        ctx = LoopContext(config=loop, store=store, ledger=ledger, student=student, teacher=teacher,
                          teacher_name=f"llm:{backend_label(teacher)}" if teacher is not None else "llm",
                          prompts=prompts, budget=budget)
        console.print(f"[bold]generate[/] run {run_id}: teacher {loop.kind}"
                      + (f" ({ctx.teacher_name})" if teacher is not None else "")
                      + f", student {backend_label(student)}, M={loop.attempts}, max_turns={loop.max_turns}"
                      + (", stepping stones" if loop.stepping_stones else "")
                      + (" (resumed)" if resume else ""), highlight=False)
        # ------------------------------------------------------------ teacher loop
        try:
            state = asyncio.run(_arun(ctx, run_id, out / CHECKPOINT_FILE, console))
        finally:  # per-endpoint statistics (agents/endpoints.py), also when all went down
            for line in endpoint_summary(student, teacher):
                console.print(f"[bold]endpoint[/] {line}", highlight=False)
        # ------------------------------------------------------------ report
        pool_side = recorded_slots(store, run_id)
        s = summarise_outcomes(state)
        res = GenerateResult(
            out=out, run_id=run_id, chains=state.get("frontier_size", 0),
            proposals=len(state.get("outcomes", [])), accepted=s["accepted"], rejected=s["rejected"],
            pool_accepted=sum(1 for r in pool_side.values() if r.status == "accepted"),
            pool_rejected=sum(1 for r in pool_side.values() if r.status == "rejected"),
            by_turn=s["by_turn"], reasons=s["reasons"], chain_ends=s["chain_ends"],
            pass_rates=s["pass_rates"], wall_s=time.monotonic() - t0, state=state, visits=dict(ctx.visits),
            paused=int(state.get("paused", 0)),
        )
        render_report(res, console)
        if budget is not None and (state.get("paused") or budget.stopped):
            console.print(f"[bold yellow]{budget.message()}[/]", highlight=False)
        if own is not None:
            own.close()
    console.print(f"[bold green]done[/] in {res.wall_s:.1f} s; run directory {out}")
    return res


async def _arun(ctx: Any, run_id: str, checkpoint_path: Path, console: Console) -> dict[str, Any]:
    from teachloop.agents.checkpoint import sqlite_saver
    from teachloop.agents.graph import build_graph, loop_state, run_loop

    async with sqlite_saver(checkpoint_path) as saver:
        progress = Progress()
        # a resumed run shows what was done before the kill (or the budget's pause)
        progress.absorb(await loop_state(build_graph(saver), {"configurable": {"thread_id": run_id}}))
        with Live(progress.render(), console=console, refresh_per_second=4, transient=False) as live:
            def on_update(node: str, upd: dict[str, Any]) -> None:
                progress.update(node, upd)
                live.update(progress.render())

            state = await run_loop(ctx, run_id, checkpointer=saver, on_update=on_update)
        console.print()
        return state


# ---------------------------------------------------------------------------- typer command

PresetOpt = Annotated[str, typer.Option("--preset", help="a preset from configs/ (quickstart, smoke, ...)")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="a YAML config file, layered over the preset")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="override one key, e.g. --set teacher.max_turns=3 (repeatable)")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="run directory (default: run.out)")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue the generate run in --out after a "
                                         "kill; nothing is lost or done twice")]


PoolOpt = Annotated[Optional[str], typer.Option("--pool", help="work as one of many generation "
                   "workers on this pool (postgresql://user@host/db, or a SQLite pool on this "
                   "machine); see teachloop/workers.py")]
WorkerOpt = Annotated[Optional[str], typer.Option("--worker", help="this worker's name (default "
                     "host-pid)")]
LeaseOpt = Annotated[float, typer.Option("--lease-s", help="with --pool: seconds a claimed item "
                     "stays leased without renewal (a killed worker's items are taken over after)")]
BatchOpt = Annotated[int, typer.Option("--batch", help="with --pool: frontier items claimed at once")]


def generate_command(preset: PresetOpt = DEFAULT_PRESET, config: ConfigOpt = None, set_: SetOpt = None,
                     out: OutOpt = None, resume: ResumeOpt = False, pool: PoolOpt = None,
                     worker: WorkerOpt = None, lease_s: LeaseOpt = 60.0, batch: BatchOpt = 2) -> None:
    """The teacher loop: rewrite seeds into easier/harder variants from student summaries.

    Chains start from the pool's seeds; each turn the teacher (llm, procedural or auto)
    proposes one variant, which is parsed, validated by execution, deduplicated, probed
    (M student attempts) and kept when its pass rate is inside the keep band. Prints live
    progress, then yield per turn and direction, rejection reasons and a pass-rate histogram.
    With --pool URL this process is one of many workers expanding that pool's frontier
    (leases: no item is expanded twice; start it N times, on any machines).
    """
    cfg = load_config(preset, config, list(set_ or []))
    if pool is not None:  # one of many workers on a shared pool
        from teachloop.workers import run_worker

        run_worker(cfg, pool, worker, lease_s=lease_s, batch=batch)
        return
    if worker is not None:
        raise UserError("--worker needs --pool (the pool the workers share)")
    main(cfg, out=out, resume=resume)


def _standalone() -> None:  # python -m teachloop.generate (until the CLI registers the command)
    from teachloop.errors import user_error_types

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(generate_command)
    try:
        app(prog_name="teachloop generate")
    except Exception as e:
        if not isinstance(e, user_error_types()):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        Console(stderr=True).print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    _standalone()
