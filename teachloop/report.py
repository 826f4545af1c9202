"""``teachloop report``: one self-contained HTML page about a run directory.

    teachloop report runs/quickstart            # -> runs/quickstart/report/index.html
    teachloop report runs/a --out /tmp/r --no-screenshot

Sections (each renders from whatever the run directory holds; a missing input is a short
"not run yet" note, never an error): 1 header (config, pool counts, stage wall times),
2 teacher yield per turn and direction + rejection reasons, 3 pass-rate histograms, 4 lineage
examples, 5 curriculum timeline (informative fraction, κ, cs, buckets, merges, online teacher
rounds), 6 reward / loss / KL curves, 7 eval before vs after.

What the page is: inline CSS, no JavaScript, no network; plots are PNGs (matplotlib, Agg,
through ``matplotlib.figure.Figure`` so pyplot's global state is never touched) beside
``index.html``, referenced by relative paths, so the folder can be copied or zipped as is.
All text that comes from the run (prompts, reasons, config values) is HTML-escaped.

This module is the page (sections, tables, CSS), ``build_report`` and the typer command. It
reads the run through teachloop/report_data.py, draws the figures with
teachloop/report_plots.py and takes the screenshot with teachloop/screenshot.py
(``find_chromium``, ``png_size`` and ``screenshot`` are importable from here too).

What it is not: a live dashboard (re-run the command to refresh), nor a comparison of runs
(``teachloop study`` does that). The screenshot (headless Chromium) is best effort: without
Chromium, or when it fails, there is no screenshot and the report says why.
"""

from __future__ import annotations

import html
import logging
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from teachloop import rundir
from teachloop.errors import UserError
from teachloop.report_data import (RunData, load_run, merge_steps, nested, num,
                                   parse_by_turn, parse_reasons, series, step_records)
from teachloop.report_plots import (eval_figure, pass_rates_figure, rewards_figure,
                                    timeline_figure, yield_figure)
from teachloop.screenshot import capture, find_chromium, page_height, png_size, screenshot

__all__ = ["ReportResult", "build_report", "find_chromium", "page_height", "png_size",
           "report_command", "screenshot"]

log = logging.getLogger(__name__)

SECTIONS = ("header", "yield", "pass_rates", "lineage", "timeline", "rewards", "eval")
PLOTS = ("yield.png", "pass_rates.png", "timeline.png", "rewards.png", "eval.png")
PROMPT_CHARS = 160
MAX_CHAIN_ROWS = 12
DPI = 100

# main's max-width is teachloop/screenshot.py's CONTENT_WIDTH (its page-height estimate)
CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;font-size:14px;color:#222;
 margin:0;background:#fff}
main{max-width:1180px;margin:0 auto;padding:16px 24px 40px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;
 padding-bottom:4px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{max-width:520px;overflow-wrap:anywhere}
td.prompt{max-width:760px;white-space:pre-wrap;word-break:break-word;font-family:monospace;
 font-size:12px}
img{max-width:100%;height:auto;display:block;margin:6px 0}
.note{color:#777;font-style:italic;margin:4px 0}.pos{color:#1a7f37}.neg{color:#c62828}
.kv td:first-child{color:#555}.flex{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}
code{font-size:12px}
"""


def e(x: Any) -> str:
    """HTML-escape anything (quotes too)."""
    return html.escape(str(x), quote=True)


# ---------------------------------------------------------------------------- result


@dataclass
class ReportResult:
    html: Path
    pngs: list[Path]
    screenshot: Path | None
    sections: dict[str, bool]  # section -> rendered from data (False: a "not run yet" note)
    screenshot_note: str = ""

    @property
    def present(self) -> list[str]:
        return [s for s, ok in self.sections.items() if ok]

    @property
    def missing(self) -> list[str]:
        return [s for s, ok in self.sections.items() if not ok]


@dataclass
class _Page:
    out: Path
    parts: list[str] = field(default_factory=list)
    pngs: list[Path] = field(default_factory=list)
    sections: dict[str, bool] = field(default_factory=dict)

    def add(self, s: str) -> None:
        self.parts.append(s)

    def note(self, s: str) -> None:
        self.parts.append(f'<p class="note">{e(s)}</p>')

    def image(self, fig: Any, name: str, alt: str) -> None:
        path = self.out / name
        fig.savefig(path, dpi=DPI)
        w, h = png_size(path)
        self.pngs.append(path)
        self.add(f'<img src="{e(name)}" alt="{e(alt)}" width="{w}" height="{h}">')


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] = frozenset(),
           raw: set[int] = frozenset(), cls: str = "", wrap: set[int] = frozenset()) -> str:
    """An HTML table; cells are escaped except columns in ``raw`` (already HTML); columns in
    ``wrap`` break long words (reasons, config values) instead of widening the page."""
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            klass = ' class="n"' if i in numeric else ' class="wrap"' if i in wrap else ""
            cells.append(f"<td{klass}>{c if i in raw else e(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><tr>{head}</tr>{''.join(body)}</table>"


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


# ---------------------------------------------------------------------------- 1 header


def _header(run: RunData, page: _Page) -> bool:
    page.add(f"<h1>teachloop report</h1><p>run directory <code>{e(run.dir.resolve())}</code>"
             f" &middot; generated {e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>"
             "<h2>1 &middot; run</h2>")
    blocks = []
    c = run.config
    if c is not None:
        teacher = nested(c, "teacher", "kind")
        if teacher in ("llm", "auto"):
            tm = nested(c, "teacher", "model") or {}
            teacher = f"{teacher} ({nested(tm, 'backend')}:{nested(tm, 'model')})"
        fams = nested(c, "seeds", "families")
        student = f"{nested(c, 'student', 'backend')}:{nested(c, 'student', 'model')}"
        rows = [["student model", student],
                ["teacher", teacher],
                ["families", ", ".join(map(str, fams)) if isinstance(fams, list) else fams],
                ["seeds per family", nested(c, "seeds", "per_family")],
                ["teacher turns", nested(c, "teacher", "max_turns")],
                ["probe attempts M", nested(c, "probe", "attempts")],
                ["train mode", nested(c, "train", "mode")],
                ["train steps", nested(c, "train", "max_steps")],
                ["group size G", nested(c, "train", "num_generations")],
                ["seed", nested(c, "run", "seed")]]
        blocks.append("<div><h3>config</h3>" + _table(["key", "value"],
                      [[k, _fmt(v)] for k, v in rows], cls="kv", wrap={1}) + "</div>")
    else:
        blocks.append('<div><h3>config</h3><p class="note">no config.yaml (not run yet)</p></div>')
    if run.items is not None:
        by_dir: dict[str, int] = defaultdict(int)
        by_fam: dict[str, int] = defaultdict(int)
        for it in run.items:
            by_dir[it.direction] += 1
            by_fam[it.family] += 1
        measured = sum(1 for it in run.items if it.p is not None)
        rows = [["items", len(run.items)], ["measured", measured],
                ["rejected proposals", len(run.rejections)]]
        rows += [[f"direction {d}", n] for d, n in sorted(by_dir.items())]
        rows += [[f"family {f}", n] for f, n in sorted(by_fam.items())]
        blocks.append("<div><h3>pool</h3>" + _table(["", "n"], rows, numeric={1}, cls="kv",
                                                    wrap={0})
                      + "</div>")
    else:
        blocks.append(f'<div><h3>pool</h3><p class="note">{e(run.pool_note)}</p></div>')
    if run.items is not None:  # the llm teacher's tokens, tokens per accepted item, cost
        from teachloop.stats import config_prices, cost_rows, usage_totals

        acct = cost_rows(usage_totals(run.items, run.rejections), config_prices(run.config))
        if acct:
            blocks.append("<div><h3>teacher cost</h3>" + _table(
                ["", "value"], [list(r) for r in acct], numeric={1}, cls="kv", wrap={0}) + "</div>")
    if run.stages:
        rows = []
        for name, st in run.stages.items():
            st = st if isinstance(st, dict) else {}
            w = num(st.get("wall_s"))
            rows.append([name, "yes" if st.get("done") else "no",
                         "—" if w is None else f"{w:.1f}"])
        blocks.append("<div><h3>stages</h3>" + _table(["stage", "done", "wall s"], rows,
                                                      numeric={2}) + "</div>")
    else:
        blocks.append('<div><h3>stages</h3><p class="note">no stages.json (not run yet)</p></div>')
    page.add('<div class="flex">' + "".join(blocks) + "</div>")
    return run.config is not None or run.items is not None


# ---------------------------------------------------------------------------- 2 yield

def _yield(run: RunData, page: _Page) -> bool:
    page.add("<h2>2 &middot; teacher yield per turn and direction</h2>")
    g = run.generate or {}
    by_turn = parse_by_turn(g.get("by_turn"))
    source = "generate_result.json"
    if not by_turn and run.items is not None:
        source = "the pool (accepted items and recorded rejections)"
        acc: dict[tuple[int, str], dict[str, int]] = defaultdict(
            lambda: {"proposed": 0, "accepted": 0, "rejected": 0})
        for it in run.items:
            if it.parent_id is not None:
                acc[(it.turn, it.direction)]["accepted"] += 1
        for r in run.rejections:
            if r.get("turn") is not None and r.get("direction"):
                acc[(int(r["turn"]), str(r["direction"]))]["rejected"] += 1
        for row in acc.values():
            row["proposed"] = row["accepted"] + row["rejected"]
        by_turn = dict(sorted(acc.items()))
    reasons = parse_reasons(g.get("reasons"))
    if not reasons and run.rejections:
        cnt: dict[tuple[str, str], int] = defaultdict(int)
        for r in run.rejections:
            cnt[(str(r.get("stage", "")), str(r.get("reason", ""))[:90])] += 1
        reasons = sorted(((s, r, n) for (s, r), n in cnt.items()), key=lambda t: -t[2])
    if not by_turn and not reasons:
        page.note("no teacher turns yet (generate not run yet)")
        return False
    if by_turn:
        page.add(f'<p>source: {e(source)}</p>')
        page.image(yield_figure(by_turn), "yield.png", "teacher yield per turn and direction")
        rows = []
        for (turn, d), c in by_turn.items():
            y = c["accepted"] / c["proposed"] if c["proposed"] else None
            rows.append([turn, d, c["proposed"], c["accepted"], c["rejected"],
                         "—" if y is None else f"{y:.0%}"])
        tables = ["<div><h3>by turn</h3>" + _table(
            ["turn", "direction", "proposed", "accepted", "rejected", "yield"], rows,
            numeric={0, 2, 3, 4, 5}) + "</div>"]
    else:
        tables = ['<div><p class="note">no per-turn counts</p></div>']
    if reasons:
        shown = reasons[:15]
        rows = [[s, r[:120], n] for s, r, n in shown]
        if len(reasons) > 15:
            rows.append(["…", f"{len(reasons) - 15} more distinct reasons", ""])
        tables.append("<div><h3>rejection reasons</h3>" + _table(
            ["stage", "reason", "n"], rows, numeric={2}, wrap={1}) + "</div>")
    else:
        tables.append('<div><h3>rejection reasons</h3><p class="note">no rejections</p></div>')
    ends = g.get("chain_ends")
    if isinstance(ends, dict) and ends:
        tables.append("<div><h3>why chains stopped</h3>" + _table(
            ["reason", "chains"], [[k, v] for k, v in ends.items()], numeric={1},
            wrap={0}) + "</div>")
    page.add('<div class="flex">' + "".join(tables) + "</div>")
    return True


# ---------------------------------------------------------------------------- 3 pass rates


def _pass_rates(run: RunData, page: _Page) -> bool:
    page.add("<h2>3 &middot; pass rates p</h2>")
    if run.items is None:
        page.note(run.pool_note)
        return False
    groups = {"all": [it.p for it in run.items if it.p is not None]}
    for d in ("seed", "easier", "harder"):
        groups[d] = [it.p for it in run.items if it.p is not None and it.direction == d]
    if not groups["all"]:
        page.note(f"no measured items among {len(run.items)} (probing not run yet)")
        return False
    page.image(pass_rates_figure(groups), "pass_rates.png", "pass-rate histograms")
    return True


# ---------------------------------------------------------------------------- 4 lineage


def _lineage(run: RunData, page: _Page, n_chains: int = 3) -> bool:
    page.add("<h2>4 &middot; lineage examples</h2>")
    if run.items is None:
        page.note(run.pool_note)
        return False
    by_id = {it.id: it for it in run.items}
    kids: dict[str, list[Any]] = defaultdict(list)
    trees: dict[str, list[Any]] = defaultdict(list)
    for it in run.items:
        if it.parent_id is not None:
            kids[it.parent_id].append(it)
            trees[it.root_id or it.parent_id].append(it)
    if not trees:
        page.note("no teacher variants yet (generate not run yet)")
        return False

    def depth_of(root: str) -> tuple[int, int]:
        base = by_id[root].turn if root in by_id else 0
        return (max(it.turn for it in trees[root]) - base, len(trees[root]))

    roots = sorted(trees, key=lambda r: (depth_of(r), r), reverse=True)[:n_chains]
    page.add(f"<p>{len(trees)} seed chains have variants; the {len(roots)} deepest:</p>")
    for root in roots:
        rows: list[list[Any]] = []
        start = [by_id[root]] if root in by_id else [
            it for it in trees[root] if it.parent_id not in by_id]

        shown: set[str] = set()

        def walk(it: Any, depth: int, via: str = "") -> None:
            if len(rows) >= MAX_CHAIN_ROWS or it.id in shown:
                return
            shown.add(it.id)
            text = re.sub(r"\n\s*\n", "\n", it.prompt.strip())  # blank lines cost height
            prompt = text if len(text) <= PROMPT_CHARS else text[:PROMPT_CHARS] + "…"
            p = "—" if it.p is None else f"{it.p:.2f} ({it.attempts})"
            arrow = "&nbsp;&nbsp;" * depth + ("↳ " if depth else "")
            rows.append([it.turn, arrow + e(it.direction) + via, p, it.id,
                         f'<td class="prompt">{e(prompt)}</td>'])
            for child in sorted(kids.get(it.id, []), key=lambda c: (c.turn, c.id)):
                walk(child, depth + 1)

        for s in start:
            walk(s, 0)
        # a variant whose parent was proposed but not kept (out of band): the chain went on
        # from the rejected parent, which is in the rejections table, not the pool
        for it in sorted(trees[root], key=lambda c: (c.turn, c.id)):
            if it.id not in shown and it.parent_id not in by_id and root in by_id:
                walk(it, 1, f" <small>(from rejected {e(str(it.parent_id))})</small>")
        total = len(trees[root]) + (1 if root in by_id else 0)
        fam = by_id[root].family if root in by_id else trees[root][0].family
        more = f" (first {len(rows)} of {total})" if total > len(rows) else ""
        html_rows = "".join(
            f'<tr><td class="n">{r[0]}</td><td>{r[1]}</td><td class="n">{e(r[2])}</td>'
            f"<td><code>{e(r[3])}</code></td>{r[4]}</tr>" for r in rows)
        page.add(f"<h3>chain from <code>{e(root)}</code> &middot; {e(fam)}{e(more)}</h3>"
                 "<table><tr><th>turn</th><th>direction</th><th>p (attempts)</th><th>id</th>"
                 f"<th>prompt</th></tr>{html_rows}</table>")
    return True


# ---------------------------------------------------------------------------- 5 timeline


def _timeline(run: RunData, page: _Page) -> bool:
    page.add("<h2>5 &middot; curriculum timeline</h2>")
    recs = step_records(run.train_log)
    rounds = [r for r in run.rounds if num(r.get("step")) is not None]
    top_keys = [("curriculum/informative_frac_rolled", "informative groups, rolled out", "-"),
                ("curriculum/informative_frac", "informative groups, after selection", "-"),
                ("vcrl/kappa", "VCRL κ", "--"), ("adacurl/cs", "AdaCuRL cs", "-.")]
    low_keys = [("adacurl/n_active", "active buckets"), ("vcrl/bank_size", "VCRL bank size"),
                ("vcrl/dropped", "dropped groups"), ("vcrl/refilled", "refilled groups")]
    top = [(k, lab, ls, *series(recs, k)) for k, lab, ls in top_keys]
    top = [t for t in top if t[3]]
    low = [(k, lab, *series(recs, k)) for k, lab in low_keys]
    low = [t for t in low if t[2]]
    merges = merge_steps(recs)
    if not top and not low and not rounds:
        page.note("no curriculum metrics (training not run yet)" if not recs else
                  "the train log has no curriculum metrics (train mode grpo?)")
        return False
    labelled = [(num(r["step"]), _round_label(r, i)) for i, r in enumerate(rounds)]
    fig = timeline_figure(top, low, merges, labelled, [int(r["step"]) for r in recs])
    page.image(fig, "timeline.png", "curriculum timeline")
    bits = []
    if merges:
        bits.append("bucket merges at step " + ", ".join(map(str, merges)))
    if recs and top:
        last = recs[-1]
        bits.append("last step " + ", ".join(
            f"{lab} {_fmt(num(last.get(k)), 2)}" for k, lab, *_ in top))
    if bits:
        page.add("<p>" + e("; ".join(bits)) + "</p>")
    if rounds:
        rows = [[r.get("round", i + 1), r.get("step"), r.get("frontier", "—"),
                 r.get("proposals", "—"), r.get("accepted", "—"), r.get("rejected", "—"),
                 r.get("new_items", "—"), _fmt(num(r.get("wall_s")), 1)]
                for i, r in enumerate(rounds)]
        page.add("<h3>online teacher rounds</h3>" + _table(
            ["round", "step", "frontier", "proposals", "accepted", "rejected", "new items",
             "wall s"], rows, numeric=set(range(8))))
    else:
        page.note("no online teacher rounds (training ran without --online, or not run yet)")
    return True


def _round_label(r: dict[str, Any], i: int) -> str:
    n = r.get("round", i + 1)
    acc = r.get("accepted")
    return f"teacher round {n}" + (f" (+{acc})" if acc is not None else "")


# ---------------------------------------------------------------------------- 6 rewards


def _rewards(run: RunData, page: _Page) -> bool:
    page.add("<h2>6 &middot; reward, loss and KL</h2>")
    recs = step_records(run.train_log)
    funcs = sorted({k for r in recs for k in r
                    if k.startswith("rewards/") and k.endswith("/mean")})
    panels: dict[str, tuple[list[int], list[float]]] = {}
    reward = series(recs, "reward")
    if reward[0] or funcs:
        panels["reward"] = reward
    for k in ("loss", "kl", "entropy"):
        if (xy := series(recs, k))[0]:
            panels[k] = xy
    if not panels:
        page.note("no training log yet (training not run yet)")
        return False
    components = {f[len("rewards/"):-len("/mean")]: series(recs, f) for f in funcs}
    fig = rewards_figure(panels, series(recs, "reward_std"), components)
    page.image(fig, "rewards.png", "reward, loss and KL curves")
    last = recs[-1]
    cols = ["reward"] + funcs + ["loss", "kl", "step_time"]
    cols = [c for c in cols if num(last.get(c)) is not None]
    if cols:
        page.add(f"<p>last logged step {e(last.get('step'))}: " + e(", ".join(
            f"{c} {_fmt(num(last[c]), 3)}" for c in cols)) + "</p>")
    return True


# ---------------------------------------------------------------------------- 7 eval


def _eval(run: RunData, page: _Page) -> bool:
    page.add("<h2>7 &middot; evaluation before vs after training</h2>")
    b, a = run.before, run.after
    if b is None and a is None:
        page.note("no evaluation (eval not run yet)")
        return False
    mb = b.get("metrics") if b else None
    ma = a.get("metrics") if a else None
    mb = mb if isinstance(mb, dict) else {}
    ma = ma if isinstance(ma, dict) else {}
    names = list(dict.fromkeys([*mb, *ma]))
    rows, plot = [], []
    for m in names:
        vb, va = num(mb.get(m)), num(ma.get(m))
        if vb is not None and va is not None:
            d = va - vb
            cls = "pos" if d > 0 else "neg" if d < 0 else ""
            delta = f'<span class="{cls}">{d:+.3f}</span>'
            plot.append((m, vb, va))
        else:
            delta = "—"
        rows.append([m, _fmt(vb), _fmt(va), delta])
    page.add(_table(["metric", "before", "after", "Δ"], rows, numeric={1, 2, 3}, raw={3}))
    meta = []
    for label, r in (("before", b), ("after", a)):
        if r is None:
            meta.append(f"{label}: not run yet")
        else:
            meta.append(f"{label}: {r.get('bench', '?')} · model {r.get('model', '?')} · "
                        f"k={r.get('k', '?')} · {r.get('n_items', '?')} items · "
                        f"{_fmt(num(r.get('wall_s')), 1)} s")
    page.add("<p>" + "<br>".join(e(m) for m in meta) + "</p>")
    if b and a and b.get("bench") != a.get("bench"):
        page.note("before and after ran on different benchmarks; Δ compares unlike things")
    if plot:
        page.image(eval_figure(plot), "eval.png", "evaluation before vs after")
    return True


# ---------------------------------------------------------------------------- build


_SECTION_FUNCS = {"yield": _yield, "pass_rates": _pass_rates, "lineage": _lineage,
                  "timeline": _timeline, "rewards": _rewards, "eval": _eval}
_SCREENSHOT_MARK = "<!--screenshot-->"


def build_report(run_dir: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None,
                 screenshot: bool = True, console: Console | None = None) -> ReportResult:
    """Render RUN_DIR into ``out`` (default RUN_DIR/report): index.html, PNGs, screenshot."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run directory at {run_dir}")
    out = Path(out) if out is not None else run_dir / rundir.REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:  # a section that no longer has data must not leave a stale plot
        (out / name).unlink(missing_ok=True)
    t0 = time.monotonic()
    run = load_run(run_dir)
    page = _Page(out)
    page.sections["header"] = _guard("header", _header, run, page)
    for name, fn in _SECTION_FUNCS.items():
        page.sections[name] = _guard(name, fn, run, page)
    html_path = out / "index.html"
    shot_path = out / Path(rundir.REPORT_SCREENSHOT).name
    shot, note = None, "screenshot not taken (--no-screenshot)"
    doc = _document(run_dir, page)
    if screenshot:
        _write(html_path, doc.replace(_SCREENSHOT_MARK, f'<p class="note">a full-page '
               f'screenshot of this report: <a href="{shot_path.name}">{shot_path.name}</a></p>'))
        shot, note = capture(find_chromium(), html_path, shot_path)
        if shot is None:
            log.warning("report screenshot: %s", note)
    if shot is None:
        _write(html_path, doc.replace(_SCREENSHOT_MARK, f'<p class="note">{e(note)}</p>'))
    res = ReportResult(html=html_path, pngs=list(page.pngs), screenshot=shot,
                       sections=dict(page.sections), screenshot_note=note if shot is None else "")
    if console is not None:
        missing = f" ({', '.join(res.missing)}: not run yet)" if res.missing else ""
        console.print(f"[bold]report[/] {len(res.present)}/{len(SECTIONS)} sections with data"
                      f"{missing} in {time.monotonic() - t0:.1f} s", highlight=False)
    return res


def _guard(name: str, fn: Any, run: RunData, page: _Page) -> bool:
    """One broken input must not cost the whole report: the section says what failed."""
    n, n_png = len(page.parts), len(page.pngs)
    try:
        return bool(fn(run, page))
    except Exception as err:  # noqa: BLE001 - a report renders whatever it can
        log.warning("report section %s failed: %s: %s", name, type(err).__name__, err)
        del page.parts[n + 1:]  # keep the section heading, drop half-rendered parts
        del page.pngs[n_png:]
        page.note(f"this section could not be rendered: {type(err).__name__}: {err}")
        return False


def _document(run_dir: Path, page: _Page) -> str:
    title = f"teachloop report: {run_dir.resolve().name}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>\n"
            + "\n".join(page.parts) + "\n" + _SCREENSHOT_MARK + "\n</main></body></html>\n")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- typer command


def report_command(
    run_dir: Annotated[Path, typer.Argument(help="the run directory to report on")],
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="output folder (default: RUN_DIR/report)")] = None,
    no_screenshot: Annotated[bool, typer.Option(
        "--no-screenshot", help="skip the headless-Chromium screenshot")] = False,
) -> None:
    """An HTML report of a run: yield, pass rates, lineage, curriculum timeline, rewards, evals.

    Renders whatever the run directory holds; stages not run yet get a short note.
    """
    if not run_dir.exists():
        raise UserError(f"no run directory at {run_dir}")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory (expected a run directory)")
    console = Console()
    res = build_report(run_dir, out=out, screenshot=not no_screenshot, console=console)
    console.print(f"html        {res.html}", highlight=False)
    for p in res.pngs:
        console.print(f"plot        {p}", highlight=False)
    console.print(f"screenshot  {res.screenshot}" if res.screenshot is not None
                  else f"screenshot  {res.screenshot_note}", highlight=False)


def _standalone() -> None:  # python -m teachloop.report RUN_DIR (until the CLI registers it)
    import sys

    from teachloop.errors import user_error_types

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(report_command)
    try:
        app(prog_name="teachloop report")
    except Exception as err:
        if not isinstance(err, user_error_types()):
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {str(err).splitlines()[0]}",
                                   highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    _standalone()
