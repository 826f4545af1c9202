"""The run directory layout: one place that names every file a ``teachloop run`` writes.

Every stage reads and writes only these paths, so ``export``, ``eval``, ``report`` and
``study`` can work on any run directory, finished or not (a missing file means the stage has
not run yet, never an error).

::

    RUN_DIR/
      config.yaml            resolved run config (TeachloopConfig), written once at setup
      pool.sqlite            the item pool (curriculum/pool.py): items, stats, lineage, rejections
      pool.url               instead of pool.sqlite: the URL of a PostgreSQL pool (run --pool)
      workers/<name>.log     run --workers N: each generation worker's output
      stages.json            {"<stage>": {"done": true, "wall_s": ..., ...}} finished stages
      env.jsonl              one line per (re)start: where the run ran (python, machine, cpus,
                             accelerator, teachloop/torch/transformers/trl versions, git)
      generate.json          the teacher loop's run id and settings (teachloop/generate.py)
      checkpoints.sqlite     LangGraph checkpointer of the teacher loop (resume after a kill)
      generate_result.json   the teacher loop's counts: by turn and direction, reasons, yield
      train/                 curriculum GRPO output (teachloop/train.py): checkpoint-*/,
                             final/ (the trained model), train_log.jsonl (one record per
                             logged step: TRL's logs + curriculum/*, vcrl/*, adacurl/* metrics)
      online_rounds.jsonl    --online: one record per teacher round during training:
                             {"round", "step", "frontier", "proposals", "accepted",
                              "rejected", "new_items", "wall_s"}
      eval/before.json       evaluation of the initial model on held-out items   (EvalResult)
      eval/after.json        the same benchmark on train/final                    (EvalResult)
      export/                HF dataset: data/train-*.parquet or data/train.jsonl, README.md
                             (dataset card), *.png histograms
      report/index.html      the HTML report (teachloop/report.py) and its PNG plots
      report/screenshot.png  headless Chromium rendering of index.html (when Chromium exists)

EvalResult JSON (evals/bench.py writes it, report/study read it)::

    {"bench": str, "model": str, "k": int, "n_items": int, "temperature": float,
     "max_tokens": int, "metrics": {"pass@1": float, "pass@<k>": float, "avg@k": float},
     "per_item": [{"id": str, "n": int, "c": int}], "wall_s": float}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONFIG = "config.yaml"
POOL = "pool.sqlite"
POOL_URL = "pool.url"
WORKERS_DIR = "workers"
STAGES = "stages.json"
ENV = "env.jsonl"
GENERATE_RESULT = "generate_result.json"
TRAIN_DIR = "train"
TRAIN_LOG = "train/train_log.jsonl"
FINAL_MODEL = "train/final"
ONLINE_ROUNDS = "online_rounds.jsonl"
EVAL_DIR = "eval"
EVAL_BEFORE = "eval/before.json"
EVAL_AFTER = "eval/after.json"
EXPORT_DIR = "export"
REPORT_DIR = "report"
REPORT_HTML = "report/index.html"
REPORT_SCREENSHOT = "report/screenshot.png"


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON through a temp file and a rename: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, path)


def read_json(path: str | os.PathLike[str], default: Any = None) -> Any:
    """JSON at ``path``, or ``default`` when the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (a kill mid-write) is skipped."""
    out: list[dict[str, Any]] = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def append_jsonl(path: str | os.PathLike[str], rec: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


def environment() -> dict[str, str]:
    """Where this process runs: Python, machine, cores, accelerator (the CUDA device's name,
    or 'cpu'), the versions of the packages behind a result, and the checkout's commit."""
    import importlib.metadata as md
    import platform
    import subprocess

    v = {"python": platform.python_version(), "machine": platform.machine(),
         "cpus": str(os.cpu_count())}
    try:
        import torch

        v["accelerator"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - no torch / a broken driver: say so, not fail
        v["accelerator"] = "unknown"
    for pkg in ("teachloop", "torch", "transformers", "trl", "reasoning-gym", "math-verify"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        v["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return v


def env_summary(env: dict[str, Any]) -> str:
    """One line for tables: accelerator, torch and python, e.g. 'cpu, torch 2.13.0+cpu, python 3.11.9'."""
    return (f"{env.get('accelerator', '?')}, torch {env.get('torch', '?')}, "
            f"python {env.get('python', '?')}")
