"""Pool summaries for the terminal: counts, rejection reasons, a pass-rate histogram, and the
llm teacher's accounting (tokens, tokens per accepted item, cost at ``teacher.prices``), which
the report and the dataset card show too."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from teachloop.curriculum.items import Item
from teachloop.curriculum.pool import PoolStore


@dataclass
class PoolSummary:
    path: str
    items: int
    measured: int
    by_family: dict[str, int]
    by_direction: dict[str, int]
    by_turn: dict[int, int]
    rejections: dict[tuple[str, str], int]
    histogram: list[int] = field(default_factory=list)  # 10 bins over p in [0, 1]
    mean_p: float | None = None
    teacher: dict[str, float] = field(default_factory=dict)  # token and latency totals (teacher_usage)
    trained: tuple[int, int, float] = (0, 0, 0.0)  # training stats: items, rollouts, successes
    prices: dict[str, float] | None = None  # teacher.prices of the run, when known


USAGE_KEYS = ("proposals", "calls", "prompt_tokens", "completion_tokens", "latency_s")


def usage_totals(items: list[Item], rejections: list[dict[str, Any]]) -> dict[str, float]:
    """Totals of the llm teacher's accounting over every proposal: accepted items
    (``metadata["teacher_usage"]``) and rejections (the envelope's ``teacher_usage``), plus
    ``accepted``: the items that carry it (the llm teacher's accepted proposals)."""
    import json

    tot = dict.fromkeys(USAGE_KEYS, 0.0)

    def add(u: Any) -> bool:
        if isinstance(u, dict) and u:
            tot["proposals"] += 1
            for k in USAGE_KEYS[1:]:
                tot[k] += float(u.get(k, 0) or 0)
            return True
        return False

    tot["accepted"] = float(sum(add(it.metadata.get("teacher_usage")) for it in items))
    for r in rejections:
        try:
            env = json.loads(r.get("proposal") or "{}")
        except ValueError:
            continue
        if isinstance(env, dict):
            add(env.get("teacher_usage") or (env.get("item") or {}).get("metadata", {}).get("teacher_usage"))
    return tot


def teacher_totals(store: PoolStore) -> dict[str, float]:
    """``usage_totals`` of every item and rejection in the pool."""
    return usage_totals(store.query(), store.rejections())


def spent_tokens(tot: dict[str, float]) -> int:
    """Teacher tokens spent: prompt + completion (what ``teacher.budget_tokens`` bounds)."""
    return int(tot.get("prompt_tokens", 0) + tot.get("completion_tokens", 0))


def tokens_per_accepted(tot: dict[str, float]) -> float | None:
    """(prompt + completion tokens over ALL proposals, rejected ones included) / accepted llm
    items: what one kept item costs in teacher tokens; None before any is accepted."""
    return spent_tokens(tot) / tot["accepted"] if tot.get("accepted") else None


def teacher_cost(tot: dict[str, float], prices: dict[str, float] | None) -> float | None:
    """USD = prompt_tokens * prompt_per_mtok / 1e6 + completion_tokens * completion_per_mtok / 1e6
    (``teacher.prices``); None without a price."""
    if not prices:
        return None
    p, c = float(prices.get("prompt_per_mtok") or 0), float(prices.get("completion_per_mtok") or 0)
    if p <= 0 and c <= 0:
        return None
    return tot.get("prompt_tokens", 0) * p / 1e6 + tot.get("completion_tokens", 0) * c / 1e6


def config_prices(cfg: Any) -> dict[str, float] | None:
    """``teacher.prices`` of a run config (a dict as in config.yaml, or None)."""
    t = cfg.get("teacher") if isinstance(cfg, dict) else None
    p = t.get("prices") if isinstance(t, dict) else None
    return p if isinstance(p, dict) else None


def run_prices(run_dir: Any) -> dict[str, float] | None:
    """``teacher.prices`` from a run directory's config.yaml (``teachloop run``) or
    generate.yaml (``teachloop generate``); None when neither exists or sets none."""
    from pathlib import Path

    import yaml

    from teachloop import rundir

    for name in (rundir.CONFIG, "generate.yaml"):
        try:
            cfg = yaml.safe_load((Path(run_dir) / name).read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(cfg, dict):
            return config_prices(cfg)
    return None


def cost_rows(tot: dict[str, float], prices: dict[str, float] | None) -> list[tuple[str, str]]:
    """(label, value) rows of the teacher's accounting for the report and the dataset card;
    empty when no llm proposal was made."""
    if not tot.get("proposals"):
        return []
    tpa = tokens_per_accepted(tot)
    rows = [("llm proposals", f"{tot['proposals']:,.0f}"), ("teacher calls", f"{tot['calls']:,.0f}"),
            ("prompt tokens", f"{tot['prompt_tokens']:,.0f}"),
            ("completion tokens", f"{tot['completion_tokens']:,.0f}"),
            ("accepted llm items", f"{tot['accepted']:,.0f}"),
            ("tokens per accepted item", "—" if tpa is None else f"{tpa:,.0f}")]
    cost = teacher_cost(tot, prices)
    if cost is not None:
        per = f" (${cost / tot['accepted']:.4f} per accepted item)" if tot.get("accepted") else ""
        rows.append(("cost (USD)", f"${cost:.4f}{per}"))
    return rows


def histogram(values: list[float], bins: int = 10) -> list[int]:
    """Counts of values in ``bins`` equal bins over [0, 1]; 1.0 falls in the last bin."""
    counts = [0] * bins
    for v in values:
        counts[min(int(v * bins), bins - 1) if v >= 0 else 0] += 1
    return counts


def pool_summary(store: PoolStore, prices: dict[str, float] | None = None) -> PoolSummary:
    ps = store.pass_rates()
    return PoolSummary(
        path=str(store.path),
        items=len(store),
        measured=len(ps),
        by_family=store.counts("family"),
        by_direction=store.counts("direction"),
        by_turn=store.counts("turn"),
        rejections=store.rejection_counts(),
        histogram=histogram(ps),
        mean_p=sum(ps) / len(ps) if ps else None,
        teacher=teacher_totals(store),
        trained=store.train_totals(),
        prices=prices,
    )


def _count_table(title: str, counts: dict[Any, int]) -> Table:
    t = Table(title=title, title_justify="left", box=None, pad_edge=False)
    t.add_column(title.split()[-1])
    t.add_column("items", justify="right")
    for k, n in counts.items():
        t.add_row(str(k), str(n))
    return t


def render_summary(s: PoolSummary, console: Console) -> None:
    rej = sum(s.rejections.values())
    n, rolls, ok = s.trained
    trained = (f"; training stats (kept apart from the probes): {n} items, {rolls} rollouts, "
               f"accuracy {ok / rolls:.2f}") if rolls else ""
    console.print(f"[bold]pool[/] {s.path}: {s.items} items, {s.measured} measured, "
                  f"{rej} rejected proposals{trained}")
    if s.items == 0:
        console.print("[dim]the pool is empty[/]")
    else:
        grid = Table.grid(padding=(0, 4))
        grid.add_row(
            _count_table("by family", s.by_family),
            _count_table("by direction", s.by_direction),
            _count_table("by turn", s.by_turn),
        )
        console.print(grid)
    u = s.teacher
    if u.get("proposals"):
        n = u["proposals"]
        console.print(f"[bold]teacher[/] {n:.0f} llm proposals: {u['prompt_tokens']:.0f} prompt + "
                      f"{u['completion_tokens']:.0f} completion tokens in {u['calls']:.0f} calls, "
                      f"{u['latency_s']:.1f} s (mean {u['completion_tokens'] / n:.0f} completion "
                      f"tokens, {u['latency_s'] / n:.2f} s per proposal)", highlight=False)
        tpa = tokens_per_accepted(u)
        cost = teacher_cost(u, s.prices)
        line = (f"[bold]teacher cost[/] {u['accepted']:.0f} accepted llm items, "
                + ("no accepted item yet" if tpa is None else f"{tpa:,.0f} tokens per accepted item"))
        if cost is not None:
            line += f", ${cost:.4f}"
            if u["accepted"]:
                line += f" (${cost / u['accepted']:.4f} per accepted item)"
        console.print(line, highlight=False)
    if s.rejections:
        t = Table(title="rejections", title_justify="left", box=None)
        t.add_column("stage")
        t.add_column("reason")
        t.add_column("n", justify="right")
        for (stage, reason), n in list(s.rejections.items())[:15]:
            t.add_row(stage, reason[:70], str(n))
        console.print(t)
    if s.measured:
        console.print(f"[bold]pass rate p[/] over {s.measured} measured items "
                      f"(mean {s.mean_p:.3f})")
        width = 40
        top = max(s.histogram) or 1
        bins = len(s.histogram)
        for i, n in enumerate(s.histogram):
            lo, hi = i / bins, (i + 1) / bins
            bar = "█" * round(width * n / top)
            close = "]" if i == bins - 1 else ")"
            console.print(f"  [{lo:.1f}, {hi:.1f}{close} {bar:<{width}} {n}", highlight=False)


def render_chain(chain: list[Item], console: Console) -> None:
    for depth, it in enumerate(chain):
        label = "item" if depth == 0 else "parent" if depth == 1 else f"ancestor {depth}"
        p = "unmeasured" if it.p is None else f"probe p={it.p:.2f} over {it.attempts}"
        if it.train_attempts:
            p += f"; training {it.train_successes / it.train_attempts:.2f} over {it.train_attempts}"
        console.print(f"[bold]{label}[/] {it.id} {it.family} {it.direction} turn {it.turn} "
                      f"({p})", highlight=False)
        console.print(f"  {it.prompt[:400]}", markup=False, highlight=False)
        if it.answer:
            console.print(f"  answer: {it.answer[:200]}", markup=False, highlight=False)
