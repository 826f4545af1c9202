"""What ``teachloop report`` reads from a run directory, and the parsing of its records.

``load_run`` gathers config.yaml, stages.json, the pool (items and rejections),
generate_result.json, the train log, online rounds and the two eval files (teachloop/rundir.py
names them) into one ``RunData``; a missing or unreadable input becomes None or [] (and a
note for the pool), never an error, so the report can say "not run yet". The helpers below
turn loosely typed JSON (numbers as strings, tuple keys written as strings, records repeated
after a resume) into plain lists and dicts for the page and the plots.

What it is not: a validator of those files (their writers own the formats), nor a writer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teachloop import rundir


def num(v: Any) -> float | None:
    """A float from a number or a numeric string; None for bools and anything else."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


@dataclass
class RunData:
    """Everything the report reads from a run directory; a missing input is None or []."""

    dir: Path
    config: dict[str, Any] | None
    stages: dict[str, Any] | None
    items: list[Any] | None  # teachloop.curriculum.items.Item, None without a pool
    rejections: list[dict[str, Any]]
    pool_note: str
    generate: dict[str, Any] | None
    train_log: list[dict[str, Any]]
    rounds: list[dict[str, Any]]
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def load_run(run_dir: Path) -> RunData:
    """Read RUN_DIR; an unreadable pool leaves ``items`` None and says why in ``pool_note``."""
    import yaml

    cfg = None
    try:
        loaded = yaml.safe_load((run_dir / rundir.CONFIG).read_text())
        cfg = loaded if isinstance(loaded, dict) else None
    except (OSError, yaml.YAMLError):
        pass
    items, rejections, note = None, [], ""
    if (run_dir / rundir.POOL).exists():
        from teachloop.curriculum.pool import PoolError, open_pool

        try:
            with open_pool(run_dir, create=False) as store:
                items = store.query()
                rejections = store.rejections()
        except (PoolError, OSError, ValueError) as err:
            note = f"the pool could not be read: {str(err).splitlines()[0]}"
    else:
        note = "no pool yet (seeding not run yet)"

    def obj(name: str) -> dict[str, Any] | None:
        v = rundir.read_json(run_dir / name)
        return v if isinstance(v, dict) else None

    return RunData(dir=run_dir, config=cfg, stages=obj(rundir.STAGES), items=items,
                rejections=rejections, pool_note=note, generate=obj(rundir.GENERATE_RESULT),
                train_log=rundir.read_jsonl(run_dir / rundir.TRAIN_LOG),
                rounds=rundir.read_jsonl(run_dir / rundir.ONLINE_ROUNDS),
                before=obj(rundir.EVAL_BEFORE), after=obj(rundir.EVAL_AFTER))


def nested(d: Any, *keys: str) -> Any:
    """d[k1][k2]..., None where a level is missing or not a dict."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


_TURN_KEY = re.compile(r"(\d+)\D+?(seed|easier|harder)")


def parse_by_turn(raw: Any) -> dict[tuple[int, str], dict[str, int]]:
    """generate_result.json's by_turn: a list of {"turn","direction",counts...}, or a dict
    keyed by "(1, 'easier')"-like strings; anything else is skipped."""
    out: dict[tuple[int, str], dict[str, int]] = {}
    entries: list[tuple[Any, Any, dict[str, Any]]] = []
    if isinstance(raw, list):
        for r in raw:
            if isinstance(r, dict):
                entries.append((r.get("turn"), r.get("direction"), r))
    elif isinstance(raw, dict):
        for k, v in raw.items():
            m = _TURN_KEY.search(str(k))
            if m and isinstance(v, dict):
                entries.append((m.group(1), m.group(2), v))
    for turn, direction, counts in entries:
        try:
            key = (int(turn), str(direction))
        except (TypeError, ValueError):
            continue
        row = {k: int(num(counts.get(k)) or 0) for k in ("proposed", "accepted", "rejected")}
        if not row["proposed"]:
            row["proposed"] = row["accepted"] + row["rejected"]
        out[key] = row
    return dict(sorted(out.items()))


def parse_reasons(raw: Any) -> list[tuple[str, str, int]]:
    """generate_result.json's reasons as (stage, reason, n), most frequent first: a dict keyed
    by "('stage', 'reason')", "stage|reason" or "stage: reason", or a list of records."""
    out: list[tuple[str, str, int]] = []
    if isinstance(raw, dict):
        for k, v in raw.items():
            n = num(v)
            if n is None:
                continue
            s = str(k)
            m = re.match(r"""^\(\s*['"](.*?)['"]\s*,\s*['"](.*)['"]\s*\)$""", s, re.S)
            if m:
                stage, reason = m.group(1), m.group(2)
            else:
                stage, sep, reason = s.partition("|") if "|" in s else s.partition(": ")
                if not sep:
                    stage, reason = "", s
            out.append((stage, reason, int(n)))
    elif isinstance(raw, list):
        for r in raw:
            if isinstance(r, dict):
                n = num(r.get("n", r.get("count")))
                out.append((str(r.get("stage", "")), str(r.get("reason", "")), int(n or 0)))
            elif isinstance(r, (list, tuple)) and len(r) >= 3:
                out.append((str(r[0]), str(r[1]), int(num(r[2]) or 0)))
    return sorted(out, key=lambda t: -t[2])


def step_records(log_recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-step records, a later record for the same step (after a resume) winning."""
    by_step: dict[int, dict[str, Any]] = {}
    for r in log_recs:
        s = num(r.get("step"))
        if s is None or "train_runtime" in r:
            continue
        by_step.setdefault(int(s), {}).update(r)
    return [by_step[s] for s in sorted(by_step)]


def series(recs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` over the records that log it as a number (NaN skipped)."""
    xs, ys = [], []
    for r in recs:
        v = num(r.get(key))
        if v is not None and v == v:
            xs.append(int(r["step"]))
            ys.append(v)
    return xs, ys


def merge_steps(recs: list[dict[str, Any]]) -> list[int]:
    """Steps where AdaCuRL's cumulative ``adacurl/merges`` count went up."""
    out, prev = [], 0.0
    for r in recs:
        m = num(r.get("adacurl/merges"))
        if m is None:
            continue
        if m > prev:
            out.append(int(r["step"]))
        prev = m
    return out
