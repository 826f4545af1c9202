"""The SQLite checkpointer's close (agents/checkpoint.py, issue 14).

A dying teacher-loop run exits ``async with`` its checkpointer while orphaned checkpoint writes
are still in flight. These tests put the exit exactly between a write's INSERT and its COMMIT:
a TEMP trigger on the real ``writes`` table calls a Python SQL function that holds the
connection's thread inside the INSERT until a timer lets it go, so the close is queued
behind the INSERT, as on a dying run. With ``AsyncSqliteSaver.from_conn_string`` both tests fail:
the file stays write-locked (``BEGIN IMMEDIATE`` from another connection: "database is locked")
for as long as the writer's cursor lives. Run: ``pytest tests/test_checkpoint.py -q`` (~2 s).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

from teachloop.agents.checkpoint import sqlite_saver

CONFIG = {"configurable": {"thread_id": "t1", "checkpoint_ns": "", "checkpoint_id": "c1"}}


def _unlocked(path) -> bool:
    """True when another connection can take the write lock at once."""
    c = sqlite3.connect(str(path), timeout=0)
    try:
        c.execute("BEGIN IMMEDIATE")
        c.rollback()
        return True
    except sqlite3.OperationalError as e:
        assert "locked" in str(e), e
        return False
    finally:
        c.close()


def _rows(path) -> int:
    c = sqlite3.connect(str(path), timeout=5)
    try:
        return c.execute("SELECT COUNT(*) FROM writes WHERE thread_id = 't1'").fetchone()[0]
    finally:
        c.close()


async def _write_held_in_insert(saver, release_after_s: float):
    """Start ``saver.aput_writes``; return (task, timer) once its INSERT is running and held."""
    inside, release = threading.Event(), threading.Event()

    def gate() -> int:
        inside.set()
        release.wait(10)
        return 0

    await saver.setup()
    await saver.conn.create_function("gate", 0, gate)
    await saver.conn.execute("CREATE TEMP TRIGGER hold AFTER INSERT ON main.writes BEGIN SELECT gate(); END")
    task = asyncio.create_task(saver.aput_writes(CONFIG, [("x", 1), ("y", 2)], "task-1"))
    assert await asyncio.to_thread(inside.wait, 10), "the write never reached its INSERT"
    assert saver.conn.in_transaction
    timer = threading.Timer(release_after_s, release.set)  # fires after the exit has queued the close
    timer.start()
    return task, timer


def test_close_waits_for_the_write_in_flight(tmp_path):
    path = tmp_path / "ck.sqlite"

    async def scenario():
        async with sqlite_saver(path) as saver:
            task, timer = await _write_held_in_insert(saver, 0.3)
        timer.join()
        return task

    task = asyncio.run(scenario())
    assert _unlocked(path), "the closed checkpointer still holds the write lock"
    assert task.done() and task.exception() is None  # the write committed before the close
    assert _rows(path) == 2


def test_a_write_cancelled_before_its_commit_is_rolled_back(tmp_path):
    path = tmp_path / "ck.sqlite"

    async def scenario():
        async with sqlite_saver(path) as saver:
            task, timer = await _write_held_in_insert(saver, 0.3)
            task.cancel()  # the run dies: its checkpoint write is cancelled mid-way
        timer.join()
        return task

    task = asyncio.run(scenario())
    assert _unlocked(path), "the closed checkpointer still holds the write lock"
    assert task.cancelled()
    assert _rows(path) == 0  # a write its caller never saw succeed is not saved


def test_busy_timeout_waits_for_another_writer(tmp_path):
    """Another connection (a second worker process, teachloop/workers.py) holds the write lock for
    1 s: a checkpoint write waits for it when the busy timeout is longer, and fails when shorter."""
    path = tmp_path / "ck.sqlite"

    async def scenario(timeout_s: float) -> str:
        async with sqlite_saver(path, busy_timeout_s=timeout_s) as saver:
            await saver.setup()
            other = sqlite3.connect(str(path), check_same_thread=False)
            other.execute("BEGIN IMMEDIATE")
            timer = threading.Timer(1.0, other.commit)
            timer.start()
            try:
                await saver.aput_writes(CONFIG, [("x", 1)], f"task-{timeout_s}")
                return "ok"
            except sqlite3.OperationalError as e:
                return str(e)
            finally:
                await asyncio.to_thread(timer.join)
                other.close()

    assert asyncio.run(scenario(0.3)) == "database is locked"
    assert asyncio.run(scenario(10.0)) == "ok"
    assert _rows(path) == 1
