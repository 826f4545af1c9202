"""``teachloop export``: a run's pool as a Hugging Face dataset folder with a dataset card.

    teachloop export runs/quickstart --format parquet --family 'math.*' --measured-only

The folder (``RUN_DIR/export`` unless ``--out``)::

    OUT/
      README.md                            dataset card: YAML front matter (configs/data_files,
                                           tags, size), counts, rejections, settings, columns
      data/train-00000-of-00001.parquet    --format parquet (written by ``datasets``)
      data/train.jsonl                     --format jsonl (one JSON object a line)
      pass_rate.png, pass_rate_by_direction.png, difficulty.png   histograms (measured items)

It loads with ``load_dataset("parquet", data_files="OUT/data/*.parquet", split="train")``, or
by repo id after ``--push-to-hub``.

Columns: every ``teachloop.curriculum.items.Item`` field under its own name, one row per item, plus
``chain_depth`` (= ``turn``: rewrites between the item and its seed), ``n_children``
(variants of the item in the whole pool, before filters), the teacher's provenance
(``teacher_messages``: the conversation it answered, JSON; ``teacher_output``: its raw output;
both empty for seeds and the procedural teacher) and ``status``/``reason``: with
``--include-rejected`` the rejected proposals are rows too (their candidate item when one was
built, else id ``rejected-<rid>`` with an empty prompt). ``checker``, ``validation`` and
``metadata`` are dicts whose shape differs between task families, which one Arrow schema
cannot hold, so they are stored as JSON strings (``json.loads`` them back); every other
column keeps its native type, with nulls where the pool has none (``p``, ``difficulty`` and
``bucket`` of unmeasured items, ``parent_id`` of seeds). The column types come from the
Item type hints, so the schema is the same whatever the rows hold.

What it guarantees: a crash or kill never leaves a half dataset at OUT (everything is written
to ``OUT.tmp-<pid>`` and renamed over OUT at the end); an existing OUT is replaced only when it
is a previous export (or empty); filters use the pool's own query semantics
(``PoolStore.query``); user mistakes end in one-line ``UserError``s.
What it does not do: splits (one ``train`` split), sharding of large pools (one file), the
rollouts behind the stats (the pool keeps only counts), or pushing without network and token.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import types
import typing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from teachloop.curriculum.items import DIRECTIONS, ITEM_FIELDS, Item
from teachloop.errors import UserError
from teachloop.rundir import CONFIG, EXPORT_DIR, GENERATE_RESULT, POOL, read_json

FORMATS = ("parquet", "jsonl")
DATA_FILES = {"parquet": "data/train-00000-of-00001.parquet", "jsonl": "data/train.jsonl"}
CARD = "README.md"
JSON_COLUMNS = ("checker", "validation", "metadata")
COLUMN_ORDER = ("id", *(f for f in ITEM_FIELDS if f != "id"))  # id first, then Item order
EXTRA_COLUMNS = {
    "chain_depth": "rewrites between this item and its seed (= turn)",
    "n_children": "easier/harder variants of this item in the whole pool (before filters)",
    "teacher_messages": "JSON string: the teacher's conversation, a list of {role, content}",
    "teacher_output": "the teacher's raw output for this proposal",
    "status": "accepted (in the pool) or rejected (--include-rejected)",
    "reason": "why a proposal was rejected, '<stage>: <reason>' (empty when accepted)",
}
PROVENANCE_KEYS = ("teacher_messages", "teacher_output")  # moved out of metadata into columns
PLOTS = {"pass_rate": "pass_rate.png", "by_direction": "pass_rate_by_direction.png",
         "difficulty": "difficulty.png"}
# Written by teachloop/generate.py (its CONFIG_FILE / RUN_FILE); named here so that
# exporting does not import the teacher loop.
GENERATE_FILES = ("generate.yaml", "generate.json", GENERATE_RESULT)


@dataclass
class ExportResult:
    out: Path
    n_rows: int
    files: list[Path]
    card: Path
    columns: list[str]
    repo_url: str | None = None
    filters: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- schema

def _column_dtypes() -> dict[str, str]:
    """Arrow dtype of every column, derived from the Item type hints (dicts -> JSON string)."""
    hints = typing.get_type_hints(Item)
    out: dict[str, str] = {}
    for name in COLUMN_ORDER:
        tp = hints[name]
        if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        tp = typing.get_origin(tp) or tp
        out[name] = {str: "string", int: "int64", float: "float64", dict: "string"}[tp]
    out.update(chain_depth="int64", n_children="int64", teacher_messages="string",
               teacher_output="string", status="string", reason="string")
    return out


def column_docs() -> dict[str, str]:
    """Column name -> description, from the Item field ``help`` metadata (one source)."""
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(Item)}
    docs = {k: f"JSON string: {helps[k]}" if k in JSON_COLUMNS else helps[k]
            for k in COLUMN_ORDER}
    docs.update(EXTRA_COLUMNS)
    return docs


def _row(item: Item, n_children: int, *, status: str = "accepted", reason: str = "",
         teacher_messages: list[dict[str, str]] | None = None, teacher_output: str = "") -> dict[str, Any]:
    src = item.to_dict()
    d = {k: src[k] for k in COLUMN_ORDER}
    meta = dict(d["metadata"])
    messages = meta.pop("teacher_messages", None) or teacher_messages or []
    output = meta.pop("teacher_output", None) or teacher_output
    d["metadata"] = meta
    for k in JSON_COLUMNS:
        d[k] = json.dumps(d[k], sort_keys=True, ensure_ascii=False)
    d["chain_depth"] = item.turn
    d["n_children"] = n_children
    d["teacher_messages"] = json.dumps(messages, ensure_ascii=False)
    d["teacher_output"] = output or ""
    d["status"], d["reason"] = status, reason
    return d


def _rejected_row(r: dict[str, Any]) -> dict[str, Any]:
    """A rejected proposal as a row: its candidate item when one was built, else the columns
    the rejections table has (id ``rejected-<rid>``, empty prompt)."""
    try:
        env = json.loads(r.get("proposal") or "{}")
    except (TypeError, ValueError):
        env = {}
    env = env if isinstance(env, dict) else {}
    item = None
    if isinstance(env.get("item"), dict):
        try:
            item = Item.from_dict(env["item"])
        except (TypeError, ValueError):
            item = None
    if item is None:
        direction = r.get("direction") if r.get("direction") in DIRECTIONS else "seed"
        item = Item(family=r["family"], prompt="", id=f"rejected-{r['rid']}", parent_id=r.get("parent_id"),
                    direction=direction, turn=r.get("turn") or 0, teacher=r.get("teacher") or "",
                    prompt_version=r.get("prompt_version") or "", created_at=r["created_at"],
                    updated_at=r["created_at"])
    return _row(item, 0, status="rejected", reason=f"{r['stage']}: {r['reason']}",
                teacher_messages=env.get("teacher_messages"), teacher_output=env.get("raw", ""))


# ---------------------------------------------------------------------------- checks

def _check_band(difficulty: tuple[float | None, float | None] | None
                ) -> tuple[float | None, float | None]:
    if difficulty is None:
        return None, None
    try:
        lo, hi = difficulty
    except (TypeError, ValueError):
        raise UserError(f"difficulty band must be (min, max), got {difficulty!r}") from None
    for name, v in (("--min-difficulty", lo), ("--max-difficulty", hi)):
        if v is not None and (not isinstance(v, (int, float)) or math.isnan(v)
                              or not 0.0 <= v <= 1.0):
            raise UserError(f"{name} must be a number in [0, 1] (difficulty = 1 - pass rate), "
                            f"got {v!r}")
    if lo is not None and hi is not None and lo > hi:
        raise UserError(f"empty difficulty band: --min-difficulty {lo} > --max-difficulty {hi}")
    return lo, hi


def _filters(families: list[str] | None, direction: str | None, lo: float | None,
             hi: float | None, measured_only: bool) -> dict[str, Any]:
    f: dict[str, Any] = {}
    if families:
        f["family"] = list(families)
    if direction is not None:
        f["direction"] = direction
    if lo is not None:
        f["min_difficulty"] = lo
    if hi is not None:
        f["max_difficulty"] = hi
    if measured_only:
        f["measured_only"] = True
    return f


def describe_filters(filters: dict[str, Any]) -> str:
    """The filters as the command-line options that set them."""
    parts = []
    for k, v in filters.items():
        opt = "--" + k.replace("_", "-")
        if isinstance(v, list):
            parts += [f"{opt} {x}" for x in v]
        elif v is True:
            parts.append(opt)
        else:
            parts.append(f"{opt} {v}")
    return " ".join(parts) or "none"


def _hub_preflight(repo: str) -> None:
    """Fail before any work when a push cannot happen: offline mode, bad id, no token."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import validate_repo_id

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline or constants.HF_HUB_OFFLINE:
        raise UserError(f"--push-to-hub {repo}: HF_HUB_OFFLINE is set; unset it to push, or "
                        "export without --push-to-hub")
    try:
        validate_repo_id(repo)
        ok = repo.count("/") == 1
    except ValueError:
        ok = False
    if not ok:
        raise UserError(f"--push-to-hub {repo!r} is not a dataset repo id; give namespace/name "
                        "(letters, digits, '-', '_', '.')")
    if not get_token():
        raise UserError(f"--push-to-hub {repo}: no Hugging Face token; run `hf auth login` or "
                        "set HF_TOKEN")


def _push(out: Path, repo: str) -> str:
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        url = api.create_repo(repo, repo_type="dataset", exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(out), repo_type="dataset",
                          commit_message="teachloop export")
    except Exception as e:  # network, auth, permissions: all one line for the user
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--push-to-hub {repo} failed ({type(e).__name__}: {msg}); "
                        f"the export itself is at {out}") from None
    return str(url)


# ---------------------------------------------------------------------------- writing

def _write_data(rows: list[dict[str, Any]], fmt: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        # Written directly rather than via Dataset.to_json: pandas rounds floats to 10 digits.
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        return
    import datasets
    from datasets.utils import logging as ds_logging

    features = datasets.Features({k: datasets.Value(t) for k, t in _column_dtypes().items()})
    bars_were_on = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()  # one parquet file: a progress bar is only noise
    try:
        datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))
    finally:
        if bars_were_on:
            ds_logging.enable_progress_bar()


def _plots(items: list[Item], out: Path) -> dict[str, str]:
    """Histograms of measured items as PNGs in ``out``; {} when nothing is measured."""
    measured = [it for it in items if it.p is not None]
    if not measured:
        return {}
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display needed
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    bins = [i / 10 for i in range(11)]

    def save(fig: Figure, name: str) -> None:
        FigureCanvasAgg(fig)
        for ax in fig.axes:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of items
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)

    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.hist([it.p for it in measured], bins=bins, color="#4c72b0", edgecolor="white")
    ax.set(xlabel="pass rate p", ylabel="items", title=f"pass rate ({len(measured)} measured)")
    save(fig, PLOTS["pass_rate"])

    dirs = [d for d in DIRECTIONS if any(it.direction == d for it in measured)]
    fig = Figure(figsize=(3.6 * len(dirs), 3.2))
    axes = fig.subplots(1, len(dirs), squeeze=False)[0]
    for ax, d in zip(axes, dirs):
        ps = [it.p for it in measured if it.direction == d]
        ax.hist(ps, bins=bins, color="#55a868", edgecolor="white")
        ax.set(xlabel="pass rate p", title=f"{d} ({len(ps)})")
    axes[0].set_ylabel("items")
    save(fig, PLOTS["by_direction"])

    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.hist([it.difficulty for it in measured], bins=bins, color="#c44e52", edgecolor="white")
    ax.set(xlabel="difficulty = 1 - p", ylabel="items", title="difficulty")
    save(fig, PLOTS["difficulty"])
    return dict(PLOTS)


def _cell(v: Any, limit: int = 100) -> str:
    s = " ".join(str(v).split()).replace("|", "\\|")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def _card(*, run_dir: Path, fmt: str, items: list[Item], pool_size: int,
          rejections: list[dict[str, Any]], filters: dict[str, Any], plots: dict[str, str],
          store_path: Path) -> str:
    n = len(items)
    front = {
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": DATA_FILES[fmt]}]}],
        "task_categories": ["text-generation", "question-answering"],
        "language": ["en"],
        "tags": ["teachloop", "synthetic", "curriculum"],
        "size_categories": [_size_category(n)],
        "pretty_name": f"teachloop curriculum ({run_dir.resolve().name})",
    }
    measured = [it for it in items if it.p is not None]
    fams = Counter(it.family for it in items)
    s: list[str] = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", ""]
    s += [f"# teachloop curriculum: {run_dir.resolve().name}", "",
          f"{n} problems exported from the item pool of the teachloop run `{run_dir.name}` "
          f"({pool_size} items in the pool). Seeds come from task families; a teacher rewrote "
          "them into easier and harder variants from the student's pass rates (`parent_id`, "
          "`root_id`, `direction`, `turn` give the lineage). Every gold `answer` was obtained "
          "by execution, not taken from the teacher; `validation` holds the evidence. "
          "`attempts`, `successes`, `p` and `difficulty` are the student's probe stats "
          "(measured to estimate difficulty, by `probe_policy`); `train_attempts` and "
          "`train_successes` count its training rollouts, kept apart "
          f"({len(measured)} of {n} items measured).", "",
          "## Loading", "", "```python", "import json", "from datasets import load_dataset", "",
          f'ds = load_dataset("{fmt if fmt == "parquet" else "json"}", '
          f'data_files="{DATA_FILES[fmt]}", split="train")',
          'checker = json.loads(ds[0]["checker"])  # checker, validation, metadata: JSON strings',
          "```", "",
          "## Contents", "",
          _table(["family", "items", "measured"],
                 [[f, c, sum(1 for it in measured if it.family == f)]
                  for f, c in sorted(fams.items())]), ""]
    by_dir = Counter(it.direction for it in items)
    s += [_table(["direction", "items"], [[d, by_dir[d]] for d in DIRECTIONS if by_dir[d]]), ""]
    by_turn = Counter(it.turn for it in items)
    s += [_table(["turn", "items"], [[t, c] for t, c in sorted(by_turn.items())]), ""]

    s += ["## Pass rates", ""]
    if plots:
        mean_p = sum(it.p for it in measured) / len(measured)
        s += [f"{len(measured)} measured items, mean pass rate {mean_p:.3f}.", ""]
        s += [f"![{k.replace('_', ' ')}]({v})" for k, v in plots.items()] + [""]
        dir_rows = []
        for d in DIRECTIONS:
            ps = [it.p for it in measured if it.direction == d]
            if ps:
                dir_rows.append([d, len(ps), f"{sum(ps) / len(ps):.3f}"])
        s += [_table(["direction", "measured", "mean p"], dir_rows), ""]
    else:
        s += ["No exported item has been measured yet (no attempts), so there are no "
              "histograms.", ""]

    s += ["## Rejected proposals", ""]
    if rejections:
        rc = Counter((r["stage"], r["reason"]) for r in rejections)
        s += [f"{len(rejections)} teacher proposals were rejected (same family/direction "
              "filters as the items), by stage and reason:", "",
              _table(["stage", "reason", "n"],
                     [[st, re_, c] for (st, re_), c in rc.most_common(40)]), ""]
        if len(rc) > 40:
            s += [f"({len(rc) - 40} rarer reasons not listed)", ""]
    else:
        s += ["None recorded.", ""]

    from teachloop.stats import cost_rows, run_prices, usage_totals

    acct = cost_rows(usage_totals(items, rejections), run_prices(run_dir))
    if acct:  # the llm teacher's tokens (and cost at teacher.prices) behind these rows
        s += ["## Teacher cost", "", "Tokens the llm teacher spent on the exported items and on "
              "the rejected proposals of the same filters; tokens per accepted item count the "
              "rejected proposals' tokens too" + ("; cost at `teacher.prices` (USD per million "
              "tokens)." if any(k == "cost (USD)" for k, _ in acct) else "."), "",
              _table(["", "value"], [list(r) for r in acct]), ""]

    s += ["## Teachers and prompt versions", ""]
    tv = Counter((it.teacher or "-", it.prompt_version or "-") for it in items)
    s += [_table(["teacher", "prompt_version", "items"],
                 [[t, v, c] for (t, v), c in sorted(tv.items())]), ""]

    s += ["## Generation settings", ""]
    found = False
    for name in (CONFIG, *GENERATE_FILES):
        p = run_dir / name
        if p.is_file():
            found = True
            text = p.read_text(errors="replace").rstrip()
            lang = "yaml" if name.endswith(".yaml") else "json"
            if lang == "json":
                data = read_json(p)
                text = json.dumps(data, indent=1) if data is not None else text
            s += [f"`{name}`:", "", f"```{lang}", text, "```", ""]
    if not found:
        s += [f"The run directory holds no {CONFIG}.", ""]

    s += ["## Filters", "", f"Export filters: `{describe_filters(filters)}`; pool "
          f"`{store_path.name}`, exported {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.", ""]

    s += ["## Columns", "", "`checker`, `validation` and `metadata` differ in shape between "
          "task families, so they are stored as JSON strings under their own names "
          "(`json.loads` them); all other columns keep their native types, null where unknown.",
          ""]
    dtypes = _column_dtypes()
    s += [_table(["column", "type", "description"],
                 [[f"`{k}`", dtypes[k], h] for k, h in column_docs().items()]), ""]
    return "\n".join(s)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` over ``out``; the previous export is moved aside, then deleted."""
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _is_previous_export(out: Path) -> bool:
    if not out.is_dir():
        return False
    if not any(out.iterdir()):
        return True
    card = out / CARD
    try:
        return (out / "data").is_dir() and "- teachloop" in card.read_text(errors="replace")
    except OSError:
        return False


def _clean_stale_tmp(out: Path) -> None:
    """Remove ``OUT.tmp-<pid>`` folders left by exports that were killed."""
    for p in out.parent.glob(f"{out.name}.tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            continue


# ---------------------------------------------------------------------------- main

def export(
    run_dir: str | os.PathLike[str],
    fmt: str = "parquet",
    out: str | os.PathLike[str] | None = None,
    families: list[str] | None = None,
    direction: str | None = None,
    difficulty: tuple[float | None, float | None] | None = None,
    measured_only: bool = False,
    push_to_hub: str | None = None,
    console: Console | None = None,
    include_rejected: bool = False,
) -> ExportResult:
    """Export the pool of ``run_dir`` as a dataset folder (see the module docstring)."""
    console = console or Console(quiet=True)
    # ---------------------------------------------------------------- setup
    run_dir = Path(run_dir)
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose {' or '.join(FORMATS)}")
    if not run_dir.exists():
        raise UserError(f"run directory not found: {run_dir}")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a run directory")
    if not (run_dir / POOL).exists():
        raise UserError(f"no pool in {run_dir} (expected {run_dir / POOL}); "
                        "run `teachloop run` first")
    if direction is not None and direction not in DIRECTIONS:
        raise UserError(f"--direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    families = [f.strip() for f in families or [] if f.strip()] or None
    lo, hi = _check_band(difficulty)
    filters = _filters(families, direction, lo, hi, measured_only)
    out = Path(out) if out is not None else run_dir / EXPORT_DIR
    if out.exists() and not _is_previous_export(out):
        raise UserError(f"{out} exists and is not a teachloop export; choose another --out "
                        "(an existing export there is replaced, anything else is kept)")
    if push_to_hub:
        _hub_preflight(push_to_hub)
    # ---------------------------------------------------------------- select
    from teachloop.curriculum.pool import open_pool

    with open_pool(run_dir, create=False) as store:
        pool_size = len(store)
        everything = store.query()
        common = dict(direction=direction, min_difficulty=lo, max_difficulty=hi,
                      measured=True if measured_only else None)
        picked: dict[str, Item] = {}
        for spec in families or [None]:
            got = store.query(family=spec, **common)
            if spec is not None and not got:
                console.print(f"[yellow]note:[/] --family {spec} matches no item"
                              + (" with the other filters" if len(filters) > 1 else ""))
            picked.update((it.id, it) for it in got)
        rejections = [r for r in store.rejections()
                      if (families is None or any(_family_match(r["family"], f)
                                                  for f in families))
                      and (direction is None or r["direction"] == direction)]
        store_path = store.path
    if not picked:
        what = describe_filters(filters)
        raise UserError(f"no items match the filters ({what}); the pool has {pool_size} items"
                        if filters else f"the pool in {run_dir} has no items to export")
    items = sorted(picked.values(), key=lambda it: (it.created_at, it.id))
    n_children = Counter(it.parent_id for it in everything if it.parent_id is not None)
    del everything
    rows = [_row(it, n_children[it.id]) for it in items]
    if include_rejected:  # the rejected proposals too, oldest first (status, reason columns)
        rows += [_rejected_row(r) for r in sorted(rejections, key=lambda r: r["rid"])]
    # ---------------------------------------------------------------- write
    _clean_stale_tmp(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_data(rows, fmt, tmp / DATA_FILES[fmt])
        plots = _plots(items, tmp)
        card = _card(run_dir=run_dir, fmt=fmt, items=items, pool_size=pool_size,
                     rejections=rejections, filters=filters, plots=plots, store_path=store_path)
        (tmp / CARD).write_text(card, encoding="utf-8")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = sorted(p for p in out.rglob("*") if p.is_file())
    console.print(f"[bold]export[/] {len(items)} of {pool_size} items"
                  + (f" and {len(rows) - len(items)} rejected proposals" if include_rejected else "")
                  + f" -> {out}")
    result = ExportResult(out=out, n_rows=len(rows), files=files, card=out / CARD,
                          columns=list(_column_dtypes()), filters=filters)
    # ---------------------------------------------------------------- push
    if push_to_hub:
        console.print(f"[bold]push[/] {out} -> hf.co/datasets/{push_to_hub}")
        result.repo_url = _push(out, push_to_hub)
    return result


def _family_match(family: str, spec: str) -> bool:
    return family.startswith(spec[:-1]) if spec.endswith("*") else family == spec


def render_result(r: ExportResult, console: Console) -> None:
    t = Table(title="export", title_justify="left", box=None, show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("rows", str(r.n_rows))
    t.add_row("columns", f"{len(r.columns)}: {', '.join(r.columns)}")
    t.add_row("filters", describe_filters(r.filters))
    for i, p in enumerate(r.files):
        size = p.stat().st_size
        t.add_row("files" if i == 0 else "", f"{p.relative_to(r.out)}  ({size / 1024:.1f} KiB)")
    t.add_row("card", str(r.card))
    if r.repo_url:
        t.add_row("hub", r.repo_url)
    console.print(t)


def export_command(
    run_dir: Annotated[Path, typer.Argument(help="run directory holding pool.sqlite")],
    fmt: Annotated[str, typer.Option("--format", help="parquet or jsonl")] = "parquet",
    out: Annotated[Optional[Path], typer.Option(help="output folder (default RUN_DIR/export); "
                                                "a previous export there is replaced")] = None,
    family: Annotated[Optional[list[str]], typer.Option(
        "--family", help="keep a family, or a prefix ending in '*' such as 'math.*' "
        "(repeatable)")] = None,
    direction: Annotated[Optional[str], typer.Option(help="seed, easier or harder")] = None,
    min_difficulty: Annotated[Optional[float], typer.Option(
        "--min-difficulty", help="keep measured items with difficulty (1 - p) >= X")] = None,
    max_difficulty: Annotated[Optional[float], typer.Option(
        "--max-difficulty", help="keep measured items with difficulty (1 - p) <= Y")] = None,
    measured_only: Annotated[bool, typer.Option(
        "--measured-only", help="only items with at least one student attempt")] = False,
    push_to_hub: Annotated[Optional[str], typer.Option(
        "--push-to-hub", help="also upload the folder to this Hugging Face dataset repo "
        "(namespace/name; needs network and a token)")] = None,
    include_rejected: Annotated[bool, typer.Option(
        "--include-rejected", help="also write the rejected proposals (status and reason "
        "columns say which and why)")] = False,
) -> None:
    """Export the pool as a Hugging Face dataset (parquet or jsonl) with a dataset card."""
    console = Console()
    band = None if min_difficulty is None and max_difficulty is None else (
        min_difficulty, max_difficulty)
    result = export(run_dir, fmt=fmt, out=out, families=family, direction=direction,
                    difficulty=band, measured_only=measured_only, push_to_hub=push_to_hub,
                    console=console, include_rejected=include_rejected)
    render_result(result, console)
