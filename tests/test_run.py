"""`teachloop run` end to end on the embedded model: every stage, kill -9 + --resume, online.

Run: pytest tests/test_run.py -q   (several minutes on 2 cores: real model, tiny budgets)
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from teachloop.curriculum.items import Item
from teachloop.curriculum.pool import open_pool
from teachloop import rundir

EXE = str(Path(sys.executable).parent / "teachloop")
# the smoke preset made smaller still: short completions, 2 attempts, 2 eval items
TINY = ["--set", "student.max_tokens=24", "--set", "probe.attempts=2",
        "--set", "eval.n_items=2", "--set", "eval.max_tokens=24",
        "--set", "train.max_completion_length=24"]


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="120")
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=900,
                          **kw)


def _log_steps(out: Path) -> list[int]:
    return [r["step"] for r in rundir.read_jsonl(out / rundir.TRAIN_LOG)
            if "curriculum/informative_frac" in r]


def test_smoke_every_stage_then_refuse_then_resume(tmp_path):
    out = tmp_path / "run"
    t0 = time.monotonic()
    r = run_cli("run", "--preset", "smoke", "--out", str(out), *TINY)
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    print(f"smoke run (tiny) wall {wall:.1f} s")
    stages = json.loads((out / rundir.STAGES).read_text())
    from teachloop.run import STAGES

    assert all(stages[s]["done"] for s in STAGES), stages
    # pool: the seeds plus the teacher's accepted variants, all measured
    store = open_pool(out, create=False)
    items = store.query()
    assert sum(it.direction == "seed" for it in items) == 4
    assert all(it.attempts >= 2 and it.p is not None for it in items)
    gen = json.loads((out / rundir.GENERATE_RESULT).read_text())
    assert gen["proposals"] == gen["accepted"] + gen["rejected"] == 4  # 4 chains x 1 turn
    assert len(items) == 4 + gen["accepted"]
    # training: 2 logged steps, the final model, a checkpoint
    assert _log_steps(out) == [1, 2]
    assert (out / rundir.FINAL_MODEL / "config.json").exists()
    assert list((out / rundir.TRAIN_DIR).glob("checkpoint-*"))
    # eval before/after, same held-out items, none of them in the pool
    before = json.loads((out / rundir.EVAL_BEFORE).read_text())
    after = json.loads((out / rundir.EVAL_AFTER).read_text())
    assert before["bench"] == after["bench"] and before["k"] == 2 and before["n_items"] == 2
    assert [p["id"] for p in before["per_item"]] == [p["id"] for p in after["per_item"]]
    assert not {p["id"] for p in before["per_item"]} & {it.id for it in items}
    assert "eval on" in r.stdout and "Δ" in r.stdout
    # export: round trip through datasets with every item field
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(out / "export" / "data" / "*.parquet"),
                      split="train")
    assert len(ds) == len(items)
    assert {f.name for f in dataclasses.fields(Item)} <= set(ds.column_names)
    assert (out / "export" / "README.md").exists()
    # report
    html = (out / rundir.REPORT_HTML).read_text()
    assert "curriculum timeline" in html.lower()
    # the same --out again without --resume: one clear error, nothing touched
    r2 = run_cli("run", "--preset", "smoke", "--out", str(out), *TINY)
    assert r2.returncode == 2 and "--resume" in r2.stderr and "Traceback" not in r2.stderr
    # --resume on a finished run: every stage done earlier, nothing counted twice
    attempts = {it.id: it.attempts for it in items}
    store.close()
    r3 = run_cli("run", "--preset", "smoke", "--out", str(out), "--resume", *TINY)
    assert r3.returncode == 0, r3.stderr
    assert "done earlier" in r3.stdout
    store = open_pool(out, create=False)
    assert {it.id: it.attempts for it in store.query()} == attempts
    # env.jsonl: one line per start, naming where it ran (the study's results cite it)
    envs = [json.loads(x) for x in (out / rundir.ENV).read_text().splitlines()]
    assert [e["resume"] for e in envs] == [False, True]
    assert envs[0]["accelerator"] == "cpu" and envs[0]["torch"].startswith("2.")


def _measured(pool: Path) -> int:
    try:
        c = sqlite3.connect(f"file:{pool}?mode=ro", uri=True, timeout=1)
        try:
            return c.execute("SELECT COUNT(*) FROM items WHERE attempts > 0").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return 0


def _kill_when(proc: subprocess.Popen, ready, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ready():
        if proc.poll() is not None:
            pytest.fail(f"run exited early with {proc.returncode}")
        time.sleep(0.2)
    assert ready(), "the kill point was never reached"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_during_probe_then_resume(tmp_path):
    out = tmp_path / "run"
    args = [EXE, "run", "--preset", "smoke", "--out", str(out), *TINY,
            "--set", "seeds.per_family=8", "--set", "probe.chunk_seqs=8",
            "--set", "teacher.max_turns=0", "--set", "train.max_steps=0"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    _kill_when(proc, lambda: _measured(out / "pool.sqlite") >= 4)  # first chunk in, more in flight
    measured_at_kill = _measured(out / "pool.sqlite")
    assert 4 <= measured_at_kill < 8, measured_at_kill
    r = run_cli("run", "--out", str(out), "--resume", "--preset", "smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    store = open_pool(out, create=False)
    items = store.query()
    assert len(items) == 8  # nothing lost, nothing duplicated
    assert all(it.attempts == 2 for it in items), [it.attempts for it in items]


@pytest.mark.full  # heavy: make test-all / CI
def test_online_kill_9_during_training_then_resume(tmp_path):
    """--online: teacher rounds after steps 1 and 2 of 3; killed once a checkpoint exists."""
    out = tmp_path / "run"
    args = [EXE, "run", "--preset", "smoke", "--out", str(out), "--online", *TINY,
            "--set", "train.max_steps=3", "--set", "online.every_steps=1"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    train_dir = out / rundir.TRAIN_DIR
    _kill_when(proc, lambda: any(train_dir.glob("checkpoint-*/curriculum_state.json")))
    store = open_pool(out, create=False)
    at_kill = {it.id: it.attempts for it in store.query()}
    rounds_at_kill = rundir.read_jsonl(out / rundir.ONLINE_ROUNDS)
    store.close()
    assert not (out / rundir.EVAL_AFTER).exists()  # killed inside training
    r = run_cli("run", "--out", str(out), "--resume", "--preset", "smoke")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    # training finished once: every step logged exactly once
    assert _log_steps(out) == [1, 2, 3]
    # online rounds: one record per round (after steps 1 and 2), none repeated by the resume
    rounds = rundir.read_jsonl(out / rundir.ONLINE_ROUNDS)
    assert [x["step"] for x in rounds] == [1, 2], rounds
    assert rounds[:len(rounds_at_kill)] == rounds_at_kill
    assert all(x["proposals"] == x["accepted"] + x["rejected"] for x in rounds)
    assert all(x["proposals"] >= 1 for x in rounds)  # every round had rolled-out heads
    # nothing lost: every item of the kill is still there, with at least its attempts
    store = open_pool(out, create=False)
    final = {it.id: it for it in store.query()}
    assert set(at_kill) <= set(final)
    assert all(final[i].attempts >= a for i, a in at_kill.items())
    # the rounds' outcomes add up in the pool: accepted items carry online slots
    online_items = [it for it in final.values() if it.metadata.get("slot", "").startswith("online-")]
    assert len(online_items) == sum(x["accepted"] for x in rounds)
    # the report's timeline shows the rounds
    html = (out / rundir.REPORT_HTML).read_text()
    assert "teacher round" in html.lower()
