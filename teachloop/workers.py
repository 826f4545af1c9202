"""Generation workers: many ``teachloop generate --pool URL --worker NAME`` processes (on one
machine or many) expand one pool's frontier together, and no item is expanded twice.

Each worker loops: **claim** up to ``batch`` frontier items with a lease (curriculum/
pool_leases.py: ``SELECT ... FOR UPDATE SKIP LOCKED`` + a guarded upsert into ``claims``),
**expand** each claimed item with the LangGraph teacher loop (one graph run per item, its
chains in parallel, the items of a batch concurrently so their model calls coalesce), renew
the leases from a thread while it works, then mark the claims **done**. When nothing is left
to claim it waits while other workers still hold leases (one of them may die), and stops
when the whole frontier is done.

Exactly-once across workers:

- the expansion of item X has the run id ``expand-X`` everywhere: its LangGraph thread (the
  checkpointer is shared: ``AsyncPostgresSaver`` in the pool's database when the pool is on
  PostgreSQL, a SQLite file beside a SQLite pool) and its proposal slots
  (``expand-X/<chain>/<turn>``, agents/ledger.py). A worker killed with ``kill -9`` stops
  renewing its leases; once they expire another worker claims X, resumes the same thread from
  its last checkpoint and finds the slots the dead worker recorded: nothing lost, nothing twice;
- two workers that produce the same problem text make the same item id (a content hash,
  curriculum/items.py); the pool inserts it once and the loser records a ``dedup`` rejection.

What it does not guard: a worker that is alive but stalled past its lease (the lease thread
could not reach the database for ``lease_s``) may finish an expansion another worker has
taken over; items stay exactly-once (the insert is the guard), a rejection may be recorded by
both. Choose ``lease_s`` well above a database outage you want to ride out.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from teachloop.errors import UserError

RUN_PREFIX = "expand-"
SQLITE_CHECKPOINTS = "checkpoints-workers.sqlite"


def expansion_run_id(item_id: str) -> str:
    """The run id (LangGraph thread, slot prefix) of the expansion of ``item_id``."""
    return RUN_PREFIX + item_id


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerResult:
    worker: str
    expanded: list[str] = field(default_factory=list)  # items this worker marked done
    takeovers: list[str] = field(default_factory=list)  # of those, taken over from a dead lease
    lost: list[str] = field(default_factory=list)  # leases lost while expanding
    proposals: int = 0
    accepted: int = 0
    rejected: int = 0
    wall_s: float = 0.0


class LeaseKeeper:
    """Renews a worker's leases every ``lease_s / 3`` seconds from a thread (the event loop may
    be busy in a model call); ids whose lease was lost are collected in ``lost``."""

    def __init__(self, store: Any, worker: str, ids: list[str], lease_s: float) -> None:
        self.store, self.worker, self.ids, self.lease_s = store, worker, list(ids), lease_s
        self.lost: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{worker}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                held = set(self.store.renew_leases(self.worker, self.ids, self.lease_s))
            except Exception:  # the database is unreachable for a moment: try again
                continue
            self.lost |= set(self.ids) - held

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _checkpointer(store: Any) -> Any:
    """An async context manager yielding the shared LangGraph checkpointer for this pool."""
    if store.dialect == "postgresql":
        try:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        except ImportError:
            raise UserError("workers on a postgresql:// pool need langgraph-checkpoint-postgres: "
                            "pip install 'teachloop[postgres]'") from None
        return AsyncPostgresSaver.from_conn_string(store.url.url)
    from teachloop.agents.checkpoint import sqlite_saver

    return sqlite_saver(Path(store.path).parent / SQLITE_CHECKPOINTS)


async def _setup_saver(saver: Any, store: Any) -> None:
    """Create the checkpointer's tables once: several workers starting together serialise on
    an advisory lock (its migrations are not safe to run concurrently)."""
    if store.dialect != "postgresql":
        return
    import sqlalchemy as sa

    # Autocommit, and *try* the lock in a loop: setup runs CREATE INDEX CONCURRENTLY, which waits
    # for every transaction in flight, including a statement blocked in pg_advisory_lock, and
    # PostgreSQL does not see that cycle (measured: 3 workers starting together hung for good).
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        while not c.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": 0x7443_4350}).scalar():
            await asyncio.sleep(0.2)
        try:
            await saver.setup()
        finally:
            c.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": 0x7443_4350})


def run_worker(cfg: Any, pool: str, worker: str | None = None, *, lease_s: float = 60.0,
               batch: int = 2, poll_s: float = 1.0, console: Console | None = None,
               student: Any = None, teacher: Any = None) -> WorkerResult:
    """Expand the frontier of the pool at ``pool`` as worker ``worker`` until it is done.

    ``teacher.max_frontier`` (when > 0) caps the items this worker claims. ``student`` /
    ``teacher``: ready backends instead of the configured ones (kept open, as in generate).
    """
    from teachloop.agents.build import Backends, backend_label, needs_llm_teacher
    from teachloop.agents.config import from_run_config
    from teachloop.agents.graph import run_loop, summarise_outcomes
    from teachloop.agents.ledger import Ledger
    from teachloop.agents.state import LoopContext
    from teachloop.agents.teacher import PromptLibrary
    from teachloop.config import apply_process_settings
    from teachloop.curriculum.pool import PoolError, open_pool
    from teachloop.evals.families import family_names
    from teachloop.seeding import seed_items

    console = console or Console()
    worker = worker or default_worker_name()
    if lease_s <= 0 or batch < 1:
        raise UserError(f"--lease-s must be > 0 and --batch >= 1 (got {lease_s}, {batch})")
    t0 = time.monotonic()
    apply_process_settings(cfg)
    loop = from_run_config(cfg)
    try:
        store = open_pool(pool)
    except PoolError as e:
        raise UserError(str(e)) from None
    res = WorkerResult(worker=worker)
    with store:
        seed_items(cfg, store, console)
        families = [f for f in (loop.families or sorted(store.counts("family"))) if f in family_names()]
        direction = "seed" if loop.frontier == "seeds" else None
        needs_teacher = needs_llm_teacher(loop, families)
        own = Backends(cfg) if student is None else None
        if own is not None:
            student = own.student()
            teacher = own.teacher() if needs_teacher else None
        elif needs_teacher and teacher is None:
            raise UserError("the llm teacher needs a teacher backend (pass teacher=...)")
        ledger = Ledger(store, RUN_PREFIX + worker, near_dup_threshold=loop.near_dup_threshold,
                        shingle_size=loop.shingle_size)
        ledger.worker = worker
        teacher_name = f"llm:{backend_label(teacher)}" if teacher is not None else "llm"
        prompts = PromptLibrary(loop.prompts_dir or None)
        console.print(f"[bold]worker {worker}[/] pool {store.path}: teacher {loop.kind}, student "
                      f"{backend_label(student)}, lease {lease_s:g} s, batch {batch}", highlight=False)

        async def expand(saver: Any, item_id: str) -> dict[str, Any]:
            conf = loop.model_copy(update={"head_ids": [item_id], "max_frontier": 0})
            ctx = LoopContext(config=conf, store=store, ledger=ledger, student=student,
                              teacher=teacher, teacher_name=teacher_name, prompts=prompts)
            return await run_loop(ctx, expansion_run_id(item_id), checkpointer=saver)

        async def work() -> None:
            async with _checkpointer(store) as saver:
                await _setup_saver(saver, store)
                while not (loop.max_frontier and len(res.expanded) >= loop.max_frontier):
                    n = batch if not loop.max_frontier else min(batch, loop.max_frontier - len(res.expanded))
                    got = store.claim_frontier(worker, n, lease_s=lease_s, direction=direction,
                                               families=families)
                    if not got:
                        st = store.frontier_status(direction=direction, families=families)
                        if st["open"] + st["leased"] + st["expired"] == 0:
                            break  # the whole frontier is expanded
                        await asyncio.sleep(poll_s)  # others hold leases; one may yet expire
                        continue
                    ids = [c.item_id for c in got]
                    ledger.refresh_index()  # items other workers inserted meanwhile
                    resumed = sum(ledger.add_run(expansion_run_id(i)) for i in ids)
                    over = [c for c in got if c.takeover]
                    console.print(f"[bold]worker {worker}[/] claimed {len(ids)}"
                                  + (f" ({len(over)} taken over from "
                                     f"{', '.join(sorted({str(c.previous_worker) for c in over}))}; "
                                     f"{resumed} proposals recorded before)" if over else ""),
                                  highlight=False)
                    with LeaseKeeper(store, worker, ids, lease_s) as keeper:
                        states = await asyncio.gather(*(expand(saver, i) for i in ids))
                    for c, state in zip(got, states):
                        s = summarise_outcomes(state)
                        res.proposals += len(state.get("outcomes", []))
                        res.accepted += s["accepted"]
                        res.rejected += s["rejected"]
                    done = store.finish_claims(worker, ids)
                    res.expanded += done
                    res.takeovers += [c.item_id for c in over if c.item_id in done]
                    res.lost += sorted(set(ids) - set(done) | keeper.lost)

        try:
            asyncio.run(work())
        finally:
            if own is not None:
                own.close()
    res.wall_s = time.monotonic() - t0
    console.print(f"[bold green]worker {worker} done[/]: {len(res.expanded)} items expanded "
                  f"({len(res.takeovers)} taken over), {res.proposals} proposals = "
                  f"{res.accepted} accepted + {res.rejected} rejected"
                  + (f", {len(res.lost)} leases lost" if res.lost else "")
                  + f", {res.wall_s:.1f} s", highlight=False)
    return res


def pool_worker_report(store: Any) -> dict[str, Any]:
    """Per worker: items expanded (claims done), takeovers; and the pool's totals of the
    workers' proposals (items and rejections whose slot starts with ``expand-``)."""
    from teachloop.agents.ledger import slot_of_rejection

    by: dict[str, dict[str, int]] = {}
    for r in store.claim_rows():
        w = by.setdefault(r["worker"], {"done": 0, "leased": 0, "takeovers": 0})
        w["done" if r["state"] == "done" else "leased"] += 1
        w["takeovers"] += int(r["takeovers"] > 0 and r["state"] == "done")
    slots = [it.metadata.get("slot") for it in store.query()]
    item_slots = [s for s in slots if isinstance(s, str) and s.startswith(RUN_PREFIX)]
    rej_slots = [s for s in map(slot_of_rejection, store.rejections()) if s and s.startswith(RUN_PREFIX)]
    return {"workers": by, "items": len(item_slots), "rejections": len(rej_slots),
            "distinct_slots": len(set(item_slots) | set(rej_slots)),
            "duplicate_slots": len(item_slots) + len(rej_slots) - len(set(item_slots) | set(rej_slots))}


def run_worker_processes(cfg: Any, out: Path, console: Console, *, lease_s: float = 60.0,
                         batch: int = 2) -> dict[str, Any]:
    """``teachloop run --workers N``: the teacher stage as N ``teachloop generate --pool``
    processes beside this one, on the run's pool (``run.pool``, or RUN_DIR's SQLite pool),
    with the run's resolved config; each one's output goes to ``RUN_DIR/workers/<name>.log``.
    Waits for all of them; a worker that fails fails the stage (its leases expire and a
    resumed run's workers take its items over)."""
    import subprocess
    import sys

    from teachloop import rundir
    from teachloop.curriculum.pool import open_pool

    pool = cfg.run.pool or str(out)
    logs = out / rundir.WORKERS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    procs = []
    for k in range(cfg.run.workers):
        name = f"{out.name}-w{k}"
        cmd = [sys.executable, "-c", "from teachloop.cli import main; main()", "generate",
               "--config", str(out / rundir.CONFIG), "--pool", pool, "--worker", name,
               "--lease-s", str(lease_s), "--batch", str(batch)]
        log = open(logs / f"{name}.log", "w")
        procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    console.print(f"[bold]teacher[/] {len(procs)} generation workers on {pool} "
                  f"(logs in {logs})", highlight=False)
    failed = []
    for name, p, log in procs:
        if p.wait() != 0:
            failed.append(f"{name} (exit {p.returncode})")
        log.close()
    if failed:
        raise UserError(f"generation workers failed: {', '.join(failed)}; see {logs}")
    with open_pool(out) as store:
        rep = pool_worker_report(store)
    console.print(f"[bold]teacher[/] workers done in {time.monotonic() - t0:.1f} s: "
                  + ", ".join(f"{w} {v['done']} items" for w, v in sorted(rep["workers"].items()))
                  + f"; pool: {rep['items']} items + {rep['rejections']} rejections from workers",
                  highlight=False)
    return {"workers": len(procs), "accepted": rep["items"], "rejected": rep["rejections"],
            "proposals": rep["items"] + rep["rejections"]}
