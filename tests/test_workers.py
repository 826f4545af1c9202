"""Many generation workers and one trainer on one PostgreSQL pool (teachloop/workers.py).

The full-tier test is the acceptance run: 3 ``teachloop generate --pool URL --worker NAME``
processes (embedded model; procedural teacher for math.rg.basic_arithmetic, llm teacher for
math.word) and 1 ``teachloop train --pool URL --set train.pool_refresh_steps=1``, smoke-sized;
one worker is killed with -9 while it holds a lease. Checked: every frontier item is expanded
once (claims done, the dead worker's items taken over), no proposal slot is recorded twice,
every surviving worker's proposals are in the pool, the trainer wrote training stats back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from teachloop.curriculum.pool import open_pool

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--preset", "smoke",
         "--set", "seeds.families=[math.rg.basic_arithmetic,math.word]", "--set", "seeds.per_family=3",
         "--set", "teacher.kind=auto", "--set", "teacher.max_turns=1", "--set", "probe.attempts=2",
         "--set", "student.max_tokens=24", "--set", "teacher.model.max_tokens=48"]


def _teachloop(*args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", "from teachloop.cli import main; main()", *args],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=log.parent)


def _wait_for(cond, timeout: float, what: str, poll: float = 0.5) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


@pytest.mark.full
def test_three_workers_and_a_trainer_with_one_worker_killed(pg_server, tmp_path):
    url = pg_server.new_schema()
    with open_pool(url) as store:  # the seeds first, so every worker sees the same frontier
        from teachloop.config import load_config
        from teachloop.generate import seed_items
        from rich.console import Console

        cfg = load_config("smoke", None, SMOKE[3::2])
        seed_items(cfg, store, Console(file=open(os.devnull, "w")))
        seeds = {it.id for it in store.query(direction="seed")}
    assert len(seeds) == 6
    workers = {f"w{k}": _teachloop("generate", *SMOKE, "--pool", url, "--worker", f"w{k}",
                                   "--lease-s", "8", "--batch", "1", log=tmp_path / f"w{k}.log")
               for k in range(3)}
    store = open_pool(url, create=False)
    # kill w0 while it holds a lease, at least a few seconds into an expansion
    _wait_for(lambda: any(r["worker"] == "w0" and r["state"] == "leased" for r in store.claim_rows()),
              600, "w0 to claim an item")
    time.sleep(4)
    held = [r["item_id"] for r in store.claim_rows() if r["worker"] == "w0" and r["state"] == "leased"]
    workers["w0"].send_signal(signal.SIGKILL)
    workers["w0"].wait()
    # the trainer starts once a few items are measured
    _wait_for(lambda: len(store.query(measured=True)) >= 2, 600, "measured items")
    trainer = _teachloop("train", "--pool", url, "--mode", "vcrl", "--max-steps", "2",
                         "--batch-size", "4", "--max-completion-length", "24", "--no-save-final",
                         "--out", str(tmp_path / "train"), "--set", "train.pool_refresh_steps=1",
                         log=tmp_path / "train.log")
    for name in ("w1", "w2"):
        assert workers[name].wait(timeout=1500) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    assert trainer.wait(timeout=1500) == 0, (tmp_path / "train.log").read_text()[-3000:]

    from teachloop.workers import pool_worker_report

    claims = {r["item_id"]: r for r in store.claim_rows()}
    assert set(claims) == seeds and all(r["state"] == "done" for r in claims.values())  # none lost
    for iid in held:  # the killed worker's leased items were taken over by a live worker
        assert claims[iid]["worker"] in ("w1", "w2") and claims[iid]["takeovers"] >= 1
        assert claims[iid]["previous_worker"] == "w0"
    rep = pool_worker_report(store)
    assert rep["duplicate_slots"] == 0  # no proposal recorded twice
    assert rep["distinct_slots"] >= len(seeds) - 1  # max_turns=1: about one proposal per seed
    tagged = {}
    for it in store.query():
        if "worker" in it.metadata:
            tagged[it.metadata["worker"]] = tagged.get(it.metadata["worker"], 0) + 1
    import json

    for r in store.rejections():
        w = json.loads(r["proposal"]).get("worker")
        if w:
            tagged[w] = tagged.get(w, 0) + 1
    assert tagged.get("w1", 0) > 0 and tagged.get("w2", 0) > 0, tagged
    for name in ("w1", "w2"):  # each survivor's count of its proposals matches the pool's
        log = (tmp_path / f"{name}.log").read_text()
        assert f"worker {name} done" in log
    assert store.train_totals()[1] > 0  # the trainer wrote training stats back
    print(f"\nclaims by worker {rep['workers']}; proposals in pool {rep['distinct_slots']} "
          f"(items {rep['items']}, rejections {rep['rejections']}); by worker tag {tagged}; "
          f"w0 held {held} when killed; trained {store.train_totals()}")
    store.close()


def _setup_checkpointer(url: str, barrier) -> None:
    import asyncio

    from teachloop.workers import _checkpointer, _setup_saver

    store = open_pool(url)
    barrier.wait()

    async def go() -> None:
        async with _checkpointer(store) as saver:
            await _setup_saver(saver, store)

    asyncio.run(go())
    store.close()


def test_workers_starting_together_set_the_checkpointer_up_once(pg_server):
    """Four workers create LangGraph's PostgreSQL checkpoint tables at the same moment. A
    blocking advisory lock here deadlocked (undetected) with setup's CREATE INDEX
    CONCURRENTLY; every process must finish."""
    import multiprocessing as mp

    url = pg_server.new_schema()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_setup_checkpointer, args=(url, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive and [p.exitcode for p in procs] == [0] * 4
