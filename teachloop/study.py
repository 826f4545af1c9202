"""``teachloop study CONFIG``: augmentation / curriculum studies, arms x seeds at one budget.

A study file (YAML)::

    out: runs/study                 # one run directory per arm and seed below this
    preset: smoke                   # the base run config, as `teachloop run --preset`
    set: [eval.n_items=8]           # overrides for every arm (optional)
    seeds: [0, 1]                   # run.seed of each repetition
    metric: pass@1                  # the eval metric the table leads with
    arms:
      - name: no-augmentation
        set: [teacher.max_turns=0]
      - name: procedural-teacher
        set: [teacher.kind=procedural, teacher.max_turns=2]
      - name: grpo
        set: [train.mode=grpo]

Every arm trains for the same budget: the keys in ``BUDGET_KEYS`` (steps, batch, group
size, completion length) must be equal across arms, or the study refuses to start and says
which arm differs. Each (arm, seed) is an ordinary ``teachloop run`` in
``OUT/<arm>/seed-<s>`` (so each has its own pool, eval, export and report), run one after the
other in this process; a killed study continues where it stopped (finished runs are kept,
an interrupted run resumes).

Outputs in OUT: ``study.json`` (every run's numbers), ``study.md`` (the table: mean ± sample
std over seeds per arm), ``study_eval.png`` (eval after and Δ per arm, error bars = std),
``study_curves.png`` (informative-group fraction and reward per step, mean over seeds).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from teachloop import rundir
from teachloop.config import DEFAULT_PRESET, ConfigError, load_config, to_dict
from teachloop.errors import UserError

BUDGET_KEYS = ("train.max_steps", "train.batch_size", "train.num_generations",
               "train.max_completion_length", "train.completion_budget", "probe.attempts")
EVAL_KEYS = ("eval.bench", "eval.k", "eval.n_items", "eval.max_tokens", "eval.temperature",
             "eval.seed", "eval.exclude_pool", "eval.harder", "student.fewshot",
             "seeds.families", "seeds.family_args")
STUDY_KEYS = {"out", "preset", "config", "set", "seeds", "metric", "arms", "results",
              "reference"}


@dataclass
class Arm:
    name: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class StudySpec:
    out: Path
    preset: str | None
    config: str | None
    overrides: list[str]
    seeds: list[int]
    metric: str
    arms: list[Arm]
    results: Path | None = None
    reference: str | None = None


def _as_list(v: Any, where: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise UserError(f"{where} must be a list of key=value strings")
    return list(v)


def load_spec(path: str | Path, out: str | Path | None = None) -> StudySpec:
    """Read and check a study file; every mistake is one-line UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"study file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"{p}: not valid YAML") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: top level must be a mapping")
    unknown = set(data) - STUDY_KEYS
    if unknown:
        raise UserError(f"{p}: unknown study keys {sorted(unknown)}; known: {sorted(STUDY_KEYS)}")
    arms_raw = data.get("arms")
    if not isinstance(arms_raw, list) or len(arms_raw) < 1:
        raise UserError(f"{p}: 'arms' must be a list of {{name, set}} entries")
    arms = []
    for i, a in enumerate(arms_raw):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not a["name"].strip():
            raise UserError(f"{p}: arms[{i}] needs a name")
        name = a["name"].strip()
        if "/" in name or name.startswith("."):
            raise UserError(f"{p}: arm name {name!r} must be a plain folder name")
        arms.append(Arm(name, _as_list(a.get("set"), f"arms[{i}].set")))
    if len({a.name for a in arms}) != len(arms):
        raise UserError(f"{p}: arm names must be distinct")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"{p}: 'seeds' must be a list of integers")
    base = p.parent
    cfg_file = data.get("config")
    return StudySpec(
        out=Path(out) if out is not None else Path(data.get("out", "runs/study")),
        preset=data.get("preset", DEFAULT_PRESET),
        config=str(base / cfg_file) if cfg_file else None,
        overrides=_as_list(data.get("set"), "set"),
        seeds=list(seeds), metric=str(data.get("metric", "pass@1")), arms=arms,
        results=Path(data["results"]) if data.get("results") else None,
        reference=_reference(data.get("reference"), arms, p),
    )


def _reference(ref: Any, arms: list[Arm], p: Path) -> str | None:
    if ref is None:
        return None
    if ref not in {a.name for a in arms}:
        raise UserError(f"{p}: reference {ref!r} is not an arm")
    return str(ref)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("args", "family_args", "extra_body"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def arm_config(spec: StudySpec, arm: Arm, seed: int) -> Any:
    run_dir = spec.out / arm.name / f"seed-{seed}"
    try:
        return load_config(spec.preset, spec.config,
                           [*spec.overrides, *arm.overrides, f"run.seed={seed}",
                            f"run.out={run_dir}"])
    except ConfigError as e:
        raise UserError(f"arm {arm.name}: {e}") from None


def check_budget(spec: StudySpec) -> None:
    """Every arm trains with the same budget (BUDGET_KEYS), else a one-line error."""
    ref = None
    for arm in spec.arms:
        flat = _flat(to_dict(arm_config(spec, arm, spec.seeds[0])))
        budget = {k: flat[k] for k in (*BUDGET_KEYS, *EVAL_KEYS)}
        if ref is None:
            ref = (arm.name, budget)
        elif budget != ref[1]:
            diff = [k for k in budget if budget[k] != ref[1][k]]
            raise UserError(f"arm {arm.name} changes the training budget or the evaluation "
                            f"({', '.join(diff)}) relative to arm {ref[0]}; a study compares "
                            "arms at one budget on one evaluation")


def run_numbers(run_dir: Path) -> dict[str, Any]:
    """The numbers a study reads from one finished run directory."""
    from teachloop.curriculum.pool import open_pool

    out: dict[str, Any] = {}
    before = rundir.read_json(run_dir / rundir.EVAL_BEFORE) or {}
    after = rundir.read_json(run_dir / rundir.EVAL_AFTER) or {}
    for k, v in (after.get("metrics") or {}).items():
        out[f"after {k}"] = v
        if k in (before.get("metrics") or {}):
            out[f"Δ {k}"] = v - before["metrics"][k]
    with open_pool(run_dir, create=False) as store:
        items = store.query()
        out["pool items"] = len(items)
        out["variants"] = sum(it.direction != "seed" for it in items)
        ps = [it.p for it in items if it.p is not None]
        out["mean p"] = sum(ps) / len(ps) if ps else float("nan")
        # completions generated outside evaluation (see the module docstring)
        seed_probes = sum(it.attempts for it in items if it.direction == "seed")
        band = len(store.rejections(stage="band"))
        out["seed probe completions"] = seed_probes
        out["teacher probe completions"] = (sum(it.attempts for it in items
                                                if it.direction != "seed")
                                            + band * _attempts(run_dir))
        out["train completions"] = store.train_totals()[1]
        out["_pool_ids"] = sorted(it.id for it in items)
    logs = [r for r in rundir.read_jsonl(run_dir / rundir.TRAIN_LOG)
            if "curriculum/informative_frac" in r]
    if logs:
        out["informative frac"] = statistics.fmean(r["curriculum/informative_frac"] for r in logs)
        out["reward"] = statistics.fmean(r.get("reward", float("nan")) for r in logs)
    stages = rundir.read_json(run_dir / rundir.STAGES, {}) or {}
    out["train s"] = (stages.get("train") or {}).get("wall_s", float("nan"))
    tr = stages.get("train") or {}
    if "band_items" in tr:  # AdaCuRL / the difficulty filter: items in the fine band, and
        out["band items"] = tr["band_items"]  # whether it had to widen to [0, 1] (1) or not (0)
        out["band widened"] = float(bool(tr.get("band_widened")))
    out["run s"] = sum(v.get("wall_s", 0.0) for v in stages.values() if isinstance(v, dict))
    all_logs = [r for r in rundir.read_jsonl(run_dir / rundir.TRAIN_LOG) if "step" in r]
    out["steps"] = max((r["step"] for r in all_logs), default=0)
    out["train tokens"] = max((r.get("num_tokens", 0) for r in all_logs), default=0)
    from teachloop.curve import CURVE_FILE
    from teachloop.study_stats import item_scores

    out["_after"] = item_scores(after.get("per_item") or [])
    envs = rundir.read_jsonl(run_dir / rundir.ENV)
    out["_env"] = (rundir.env_summary(envs[-1]) if envs
                   else "not recorded (run made before env.jsonl existed)")
    harder = rundir.read_json(_harder_path(run_dir / rundir.EVAL_AFTER)) or {}
    out["_after_harder"] = item_scores(harder.get("per_item") or [])
    out["_curve"] = {int(r["step"]): item_scores(r["per_item"])
                     for r in rundir.read_jsonl(run_dir / CURVE_FILE)}
    out["_curves"] = {
        "step": [r["step"] for r in logs],
        "informative": [r["curriculum/informative_frac"] for r in logs],
        "reward": [r.get("reward", float("nan")) for r in logs],
    }
    return out


def _harder_path(p: Path) -> Path:
    return p.with_name(p.stem + "_harder" + p.suffix)


def _attempts(run_dir: Path) -> int:
    from teachloop.config import config_from_dict, yaml_load

    return config_from_dict(yaml_load((run_dir / rundir.CONFIG).read_text())).probe.attempts


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def summarise(spec: StudySpec, numbers: dict[str, dict[int, dict[str, Any]]]
              ) -> tuple[list[str], list[list[str]], dict[str, dict[str, tuple[float, float]]]]:
    """Columns, rows (``mean ± std``) and the raw (mean, std) per arm and column."""
    cols: list[str] = []
    for per_seed in numbers.values():
        for n in per_seed.values():
            for k in n:
                if not k.startswith("_") and k not in cols:
                    cols.append(k)
    lead = [c for c in (f"after {spec.metric}", f"Δ {spec.metric}") if c in cols]
    cols = lead + [c for c in cols if c not in lead]
    stats: dict[str, dict[str, tuple[float, float]]] = {}
    rows = []
    for arm in spec.arms:
        per_seed = numbers.get(arm.name, {})
        stats[arm.name] = {c: mean_std([n.get(c, float("nan")) for n in per_seed.values()])
                           for c in cols}
        rows.append([arm.name, str(len(per_seed))]
                    + [f"{m:.3f} ± {s:.3f}" if not math.isnan(m) else "-"
                       for m, s in (stats[arm.name][c] for c in cols)])
    return cols, rows, stats


def plot(spec: StudySpec, numbers: dict[str, dict[int, dict[str, Any]]],
         stats: dict[str, dict[str, tuple[float, float]]]) -> list[Path]:
    from matplotlib.figure import Figure

    paths = []
    names = [a.name for a in spec.arms]
    keys = [k for k in (f"after {spec.metric}", f"Δ {spec.metric}", "informative frac")
            if any(k in stats[n] for n in names)]
    fig = Figure(figsize=(4.2 * max(1, len(keys)), 3.6), layout="constrained")
    for j, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), j + 1)
        ms = [stats[n].get(key, (float("nan"), 0.0)) for n in names]
        ax.bar(range(len(names)), [m for m, _ in ms], yerr=[s for _, s in ms], capsize=4,
               color=[f"C{i}" for i in range(len(names))])
        for i, n in enumerate(names):  # the individual seeds as dots
            vals = [v.get(key) for v in numbers.get(n, {}).values()]
            ax.plot([i] * len(vals), vals, "k.", alpha=0.6)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_title(f"{key} (mean ± std, {len(spec.seeds)} seeds)", fontsize=9)
        ax.axhline(0, color="grey", lw=0.5)
    p = spec.out / "study_eval.png"
    fig.savefig(p, dpi=110)
    paths.append(p)
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    for j, (key, title) in enumerate((("informative", "informative-group fraction"),
                                      ("reward", "reward"))):
        ax = fig.add_subplot(1, 2, j + 1)
        for i, n in enumerate(names):
            curves = [v["_curves"] for v in numbers.get(n, {}).values() if v["_curves"]["step"]]
            if not curves:
                continue
            steps = curves[0]["step"]
            ys = [statistics.fmean(c[key][t] for c in curves if t < len(c[key]))
                  for t in range(len(steps))]
            ax.plot(steps, ys, marker="o", ms=3, color=f"C{i}", label=n)
        ax.set_xlabel("step")
        ax.set_title(f"{title} (mean over seeds)", fontsize=9)
        ax.legend(fontsize=8)
    p = spec.out / "study_curves.png"
    fig.savefig(p, dpi=110)
    paths.append(p)
    return paths


def parse_only(only: list[str] | None, spec: StudySpec) -> set[str] | None:
    """``--run`` values -> the set of 'arm:seed' (and 'base') keys to run; None: everything.
    Accepts 'ARM:SEED', 'ARM' (every seed), ':SEED' (every arm) and 'base'."""
    if not only:
        return None
    names = [a.name for a in spec.arms]
    keys: set[str] = set()
    for o in only:
        for part in (x.strip() for x in o.split(",") if x.strip()):
            if part == "base":
                keys.add("base")
                continue
            arm, _, seed = part.partition(":")
            if arm and arm not in names:
                raise UserError(f"--run {part}: no arm {arm!r} in the study (arms: "
                                f"{', '.join(names)})")
            try:
                seeds = [int(seed)] if seed else list(spec.seeds)
            except ValueError:
                raise UserError(f"--run {part}: the seed must be an integer") from None
            if seeds[0] not in spec.seeds:
                raise UserError(f"--run {part}: seed {seeds[0]} is not among the study's "
                                f"seeds {spec.seeds}")
            keys.update(f"{a}:{s}" for a in ([arm] if arm else names) for s in seeds)
    return keys


def main(spec: StudySpec, console: Console | None = None, *,
         report_only: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    """Run (or continue) every arm x seed, then the table and plots; returns study.json.
    ``report_only``: run nothing; tabulate the runs that finished (a study still running, or
    stopped early). ``only`` (``--run``): run just these runs ('ARM:SEED', 'ARM', ':SEED',
    'base' = the initial model's held-out eval) and no table, so that one study's runs can go
    to separate processes, GPUs or machines (scripts/study_parallel.py); ``--report-only``
    tabulates them afterwards."""
    from teachloop.run import main as run_main

    console = console or Console()
    t0 = time.monotonic()
    check_budget(spec)
    keys = parse_only(only, spec)
    spec.out.mkdir(parents=True, exist_ok=True)
    total = len(spec.arms) * len(spec.seeds)
    numbers: dict[str, dict[int, dict[str, Any]]] = {}
    from teachloop.study_evidence import base_eval

    if keys is None or "base" in keys:
        base = (None if report_only and not (spec.out / "base").exists() else
                base_eval(spec, arm_config(spec, spec.arms[0], spec.seeds[0]), console))
    k = 0
    # seed-major: a study stopped early holds every arm on the seeds it finished
    for seed in spec.seeds:
        for arm in spec.arms:
            k += 1
            if keys is not None and f"{arm.name}:{seed}" not in keys:
                continue
            cfg = arm_config(spec, arm, seed)
            run_dir = Path(cfg.run.out)
            stages = rundir.read_json(run_dir / rundir.STAGES, {}) or {}
            finished = bool((stages.get("report") or {}).get("done"))
            if report_only and not finished:
                continue
            console.rule(f"study run {k}/{total}: arm {arm.name}, seed {seed}"
                         + (" (finished earlier)" if finished else ""))
            ts = time.monotonic()
            if not finished:
                run_main(cfg, resume=(run_dir / rundir.CONFIG).exists(), console=console)
            numbers.setdefault(arm.name, {})[seed] = n = run_numbers(run_dir)
            console.print(f"[bold]study[/] {k}/{total} done: arm {arm.name} seed {seed}: "
                          f"after {spec.metric} {n.get(f'after {spec.metric}', float('nan')):.3f}"
                          f", {n.get('steps')} steps, {n.get('train completions')} training "
                          f"completions, {time.monotonic() - ts:.0f} s", highlight=False)
    if keys is not None:
        console.print(f"[bold]study[/] ran {', '.join(sorted(keys))} in "
                      f"{time.monotonic() - t0:.0f} s; when every run is done, tabulate with "
                      f"`teachloop study ... --report-only`", highlight=False)
        return {"ran": sorted(keys)}
    numbers = {a.name: numbers.get(a.name, {}) for a in spec.arms}
    if report_only:  # tabulate only the arms with finished runs
        spec.arms = [a for a in spec.arms if numbers[a.name]]
        numbers = {a.name: numbers[a.name] for a in spec.arms}
        if not spec.arms:
            raise UserError(f"no finished run in {spec.out} yet")
        if spec.reference not in numbers:
            spec.reference = None
    cols, rows, stats = summarise(spec, numbers)
    t = Table(title=f"study {spec.out}: mean ± std over seeds {spec.seeds}", title_justify="left")
    for c in ["arm", "seeds", *cols]:
        t.add_column(c, justify="left" if c == "arm" else "right")
    for r in rows:
        t.add_row(*r)
    console.print(t)
    pngs = plot(spec, numbers, stats)
    md = [f"# study {spec.out}", "",
          f"preset `{spec.preset}`, overrides `{spec.overrides}`, seeds {spec.seeds}; every arm "
          f"trains with the same budget ({', '.join(BUDGET_KEYS)}).", "",
          "| " + " | ".join(["arm", "seeds", *cols]) + " |",
          "|" + "---|" * (len(cols) + 2)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += ["", "arms:", *[f"- `{a.name}`: `{a.overrides}`" for a in spec.arms], ""]
    md += [f"![{p.stem}]({p.name})" for p in pngs]
    (spec.out / "study.md").write_text("\n".join(md) + "\n")
    result = {"out": str(spec.out), "seeds": spec.seeds, "metric": spec.metric,
              "arms": {a.name: a.overrides for a in spec.arms}, "columns": cols,
              "stats": {a: {c: list(v) for c, v in s.items()} for a, s in stats.items()},
              "runs": {a: {str(s): {k: v for k, v in n.items() if not k.startswith("_")}
                           for s, n in per.items()} for a, per in numbers.items()},
              "wall_s": time.monotonic() - t0}
    from teachloop.study_evidence import evidence

    result["evidence"] = evidence(spec, numbers, base, console)
    rundir.write_json_atomic(spec.out / "study.json", result)
    console.print(f"[bold green]study done[/] in {result['wall_s']:.1f} s: {spec.out / 'study.md'}, "
                  + ", ".join(str(p) for p in pngs), highlight=False)
    return result


def study_command(
    config: Annotated[Path, typer.Argument(help="the study file (YAML): preset, set, seeds, "
                                           "metric, arms [{name, set}]; see teachloop/study.py")],
    out: Annotated[Path | None, typer.Option(help="study directory (default: the file's "
                                             "'out')")] = None,
    report_only: Annotated[bool, typer.Option("--report-only", help="run nothing: tabulate "
                                              "the runs that finished so far")] = False,
    run: Annotated[list[str] | None, typer.Option("--run", help="run only these and make no "
                                                  "table: ARM:SEED, ARM (every seed), :SEED "
                                                  "(every arm) or base (the initial model's "
                                                  "held-out eval); repeat or comma-separate. "
                                                  "Separate processes can run separate runs "
                                                  "of one study at once "
                                                  "(scripts/study_parallel.py)")] = None,
) -> None:
    """Arms x seeds at an equal training budget -> a table of mean ± std and plots.

    Each arm and seed is a full `teachloop run` in OUT/<arm>/seed-<s>; running the same
    study again continues it (finished runs are kept).
    """
    if report_only and run:
        raise UserError("--report-only runs nothing; leave out --run")
    main(load_spec(config, out), report_only=report_only, only=run)
