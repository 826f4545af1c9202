"""`teachloop run` end to end on the embedded model, and kill -9 + --resume.

Run: pytest tests/test_run.py -q   (a few minutes on 2 cores: real model, tiny budgets)
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curriculum.pool import open_pool

EXE = str(Path(sys.executable).parent / "teachloop")
TINY = ["--set", "student.max_tokens=24", "--set", "probe.attempts=2"]


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="120")
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=900,
                          **kw)


def test_run_smoke_then_refuse_then_resume(tmp_path):
    out = tmp_path / "run"
    r = run_cli("run", "--preset", "smoke", "--out", str(out), *TINY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (out / "config.yaml").exists()
    store = open_pool(out, create=False)
    items = store.query()
    assert len(items) == 4  # smoke: 1 family x 4 seeds
    assert all(it.attempts == 2 and it.p is not None for it in items)
    store.close()
    # the same --out again without --resume: one clear error, nothing touched
    r2 = run_cli("run", "--preset", "smoke", "--out", str(out), *TINY)
    assert r2.returncode == 2 and "--resume" in r2.stderr and "Traceback" not in r2.stderr
    # --resume on a finished run: nothing to probe, nothing counted twice
    r3 = run_cli("run", "--preset", "smoke", "--out", str(out), "--resume", *TINY)
    assert r3.returncode == 0, r3.stderr
    assert "nothing to probe" in r3.stdout
    store = open_pool(out, create=False)
    assert all(it.attempts == 2 for it in store.query())


def _measured(pool: Path) -> int:
    try:
        c = sqlite3.connect(f"file:{pool}?mode=ro", uri=True, timeout=1)
        try:
            return c.execute("SELECT COUNT(*) FROM items WHERE attempts > 0").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return 0


def test_kill_9_during_probe_then_resume(tmp_path):
    out = tmp_path / "run"
    args = [EXE, "run", "--preset", "smoke", "--out", str(out), *TINY,
            "--set", "seeds.per_family=8", "--set", "probe.chunk_seqs=8"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and _measured(out / "pool.sqlite") < 4:
        if proc.poll() is not None:
            pytest.fail(f"run exited early with {proc.returncode}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the first chunk is in; later ones are in flight
    proc.wait()
    measured_at_kill = _measured(out / "pool.sqlite")
    assert 4 <= measured_at_kill < 8, measured_at_kill
    r = run_cli("run", "--out", str(out), "--resume", "--preset", "smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    store = open_pool(out, create=False)
    items = store.query()
    assert len(items) == 8  # nothing lost, nothing duplicated
    assert all(it.attempts == 2 for it in items), [it.attempts for it in items]
