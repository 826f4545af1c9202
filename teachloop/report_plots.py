"""The matplotlib figures of ``teachloop report``: plain data in, a ``Figure`` out.

One function per plot (teacher yield, pass-rate histograms, curriculum timeline, reward /
loss / KL curves, eval before vs after). Each takes lists, tuples and dicts the report has
already read from the run directory and returns a ``matplotlib.figure.Figure`` (Agg, never
through pyplot, so pyplot's global state is never touched); saving it and the HTML around it
are teachloop/report.py's job.

What it is not: a reader of run files (no paths, no JSON here), nor a place for HTML.
"""

from __future__ import annotations

from typing import Any

DIR_COLORS = {"seed": "#4c72b0", "easier": "#55a868", "harder": "#dd8452"}

Series = tuple[list[int], list[float]]  # (steps, values)


def figure(w: float, h: float) -> Any:
    """A constrained-layout Figure of w x h inches, outside pyplot."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def yield_figure(by_turn: dict[tuple[int, str], dict[str, int]]) -> Any:
    """Stacked accepted / rejected proposals per (turn, direction), labelled with the yield."""
    keys = list(by_turn)
    n = len(keys)
    fig = figure(min(11.5, max(6.5, 0.55 * n + 3.0)), 3.2)
    ax = fig.add_subplot()
    x = list(range(n))
    acc = [by_turn[k]["accepted"] for k in keys]
    rej = [by_turn[k]["rejected"] for k in keys]
    colors = [DIR_COLORS.get(d, "#888") for _, d in keys]
    ax.bar(x, acc, color=colors, label="accepted")
    ax.bar(x, rej, bottom=acc, color="#d9d9d9", edgecolor="#999", hatch="//", label="rejected")
    top = max((a + r for a, r in zip(acc, rej)), default=1) or 1
    for i, (a, r) in enumerate(zip(acc, rej)):
        if a + r:
            ax.text(i, a + r + 0.02 * top, f"{a / (a + r):.0%}", ha="center", va="bottom",
                    fontsize=8)
    ax.set_ylim(0, top * 1.15)
    ax.set_xticks(x, [f"t{t}\n{d}" for t, d in keys], fontsize=8,
                  rotation=0 if n <= 14 else 90)
    ax.set_ylabel("proposals")
    ax.set_title("proposals per turn (label: yield)", fontsize=10)
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=d) for d, c in DIR_COLORS.items() if d != "seed"]
    handles.append(Patch(facecolor="#d9d9d9", edgecolor="#999", hatch="//", label="rejected"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def pass_rates_figure(groups: dict[str, list[float]]) -> Any:
    """One pass-rate histogram per group (name -> measured p values; four groups: all and
    the three directions), with the mean as a dashed line."""
    from matplotlib.ticker import MaxNLocator

    fig = figure(11.5, 2.8)
    axes = fig.subplots(1, 4, sharex=True)
    bins = [i / 10 for i in range(11)]
    for ax, (name, ps) in zip(axes, groups.items()):
        color = DIR_COLORS.get(name, "#555")
        if ps:
            ax.hist(ps, bins=bins, color=color, edgecolor="white")
            mean = sum(ps) / len(ps)
            ax.axvline(mean, color="#222", lw=1, ls="--")
            ax.set_title(f"{name}: n={len(ps)}, mean {mean:.2f}", fontsize=10)
        else:
            ax.text(0.5, 0.5, "no measured items", ha="center", va="center",
                    transform=ax.transAxes, color="#888")
            ax.set_title(f"{name}: n=0", fontsize=10)
            ax.set_yticks([])
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", ".25", ".5", ".75", "1"])
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("pass rate p", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0].set_ylabel("items")
    return fig


def timeline_figure(top: list[tuple[str, str, str, list[int], list[float]]],
                    low: list[tuple[str, str, list[int], list[float]]], merges: list[int],
                    rounds: list[tuple[float, str]], steps: list[int]) -> Any:
    """The curriculum over training steps.

    ``top``: fractions and scores in [0, 1], as (log key, label, line style, steps, values);
    ``low`` (a second panel when not empty): counts, as (log key, label, steps, values), the
    ``adacurl/n_active`` one drawn as a step function; ``merges``: steps with a bucket merge
    (dotted lines); ``rounds``: online teacher rounds as (step, label), shaded between step
    and step + 1 and labelled in the headroom above 1.0; ``steps``: the logged steps (x range).
    """
    fig = figure(11.5, 5.2 if low else 3.4)
    axes = fig.subplots(2 if low else 1, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    for k, lab, ls, xs, ys in top:
        ax.plot(xs, ys, ls, marker="o", ms=3 if len(xs) <= 60 else 0, label=lab)
    few = len(rounds) <= 8
    ax.set_ylim(-0.03, (1.34 if few else 1.55) if rounds else 1.1)  # headroom for labels
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("fraction / score")
    if low:
        for k, lab, xs, ys in low:
            if k == "adacurl/n_active":
                axes[1].step(xs, ys, where="post", lw=2, label=lab)
            else:
                axes[1].plot(xs, ys, marker=".", ms=4, lw=1, label=lab)
        axes[1].set_ylabel("count")
        axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    for a in axes:
        for i, s in enumerate(merges):
            a.axvline(s, color="#c62828", ls=":", lw=1.5,
                      label="bucket merge" if i == 0 and a is ax else None)
        for s, _ in rounds:
            # a round runs after step s, before step s + 1: shade the gap between them
            a.axvspan(s + 0.15, s + 0.85, color="#8e44ad", alpha=0.18, lw=0)
    # Round labels sit in the headroom above 1.0: horizontal and staggered on two rows while
    # they fit, vertical and small when many rounds would collide.
    box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1}
    for i, (s, label) in enumerate(rounds):
        if few:
            ax.text(s + 0.2, 1.27 if i % 2 == 0 else 1.16, label, ha="left",
                    va="center", fontsize=8, color="#5b2c6f", bbox=box)
        else:
            ax.text(s + 0.5, 1.53, label.replace("teacher round", "round"),
                    rotation=90, ha="center", va="top", fontsize=7, color="#5b2c6f", bbox=box)
    if rounds:
        from matplotlib.patches import Patch

        handles, labels = ax.get_legend_handles_labels()
        handles.append(Patch(color="#8e44ad", alpha=0.3))
        labels.append("online teacher round")
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    elif top or merges:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    xs_all = list(steps) + [int(s) for s, _ in rounds]
    if xs_all:
        ax.set_xlim(min(xs_all) - 0.8, max(xs_all) + 1.2)
    axes[-1].set_xlabel("step")
    return fig


def rewards_figure(panels: dict[str, Series], reward_std: Series,
                   components: dict[str, Series]) -> Any:
    """One panel per entry of ``panels`` (name -> series, in order). The "reward" panel draws
    the total reward with a ±std band (``reward_std``, when logged at the same steps) and
    each reward function's mean (``components``: label -> series)."""
    fig = figure(11.5, 3.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, (xs, ys)) in zip(axes, panels.items()):
        if name == "reward":
            if xs:
                ax.plot(xs, ys, "-o", ms=3 if len(xs) <= 60 else 0, color="#222",
                        label="reward (total)")
                sx, sd = reward_std
                if sx == xs:
                    ax.fill_between(xs, [y - s for y, s in zip(ys, sd)],
                                    [y + s for y, s in zip(ys, sd)], color="#222", alpha=0.1)
            for label, (fx, fy) in components.items():
                ax.plot(fx, fy, "-", lw=1.2, label=label)
            ax.legend(fontsize=7)
        else:
            ax.plot(xs, ys, "-o", ms=3 if len(xs) <= 60 else 0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
    return fig


def eval_figure(metrics: list[tuple[str, float, float]]) -> Any:
    """Grouped bars per metric, (name, before, after), with value labels."""
    fig = figure(min(9.0, 2.5 + 1.3 * len(metrics)), 2.6)
    ax = fig.add_subplot()
    x = list(range(len(metrics)))
    w = 0.38
    bars_b = ax.bar([i - w / 2 for i in x], [p[1] for p in metrics], w, label="before",
                    color="#9aa7b8")
    bars_a = ax.bar([i + w / 2 for i in x], [p[2] for p in metrics], w, label="after",
                    color="#4c72b0")
    for bars in (bars_b, bars_a):
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.set_xticks(x, [p[0] for p in metrics])
    hi = max(max(p[1], p[2]) for p in metrics)
    ax.set_ylim(0, max(1.0, hi) * 1.15)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title("before vs after", fontsize=10)
    return fig
