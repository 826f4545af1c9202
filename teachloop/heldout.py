"""A run's held-out evaluation settings: which bench, which items (seed, exclusion, the
seeds' family levels, one level harder), and the before/after CI (``teachloop run``'s eval
stages, the learning curve in teachloop/curve.py, the study's initial-model eval)."""

from __future__ import annotations

from typing import Any


def eval_bench_name(cfg: Any) -> str:
    if cfg.eval.bench == "heldout":
        return "heldout:" + ",".join(cfg.seeds.families)
    return cfg.eval.bench


def harder_family_args(cfg: Any) -> dict[str, dict[str, Any]] | None:
    """``seeds.family_args`` one knob level up for every family that has a ``start_level``
    (reasoning-gym); None when no seed family has one."""
    from teachloop.evals.families import get_family

    out: dict[str, dict[str, Any]] = {}
    for f in cfg.seeds.families:
        args = dict(cfg.seeds.family_args.get(f, {}))
        fam_cfg = get_family(f, **args).config
        if not hasattr(fam_cfg, "start_level"):
            continue
        level = fam_cfg.start_level if fam_cfg.start_level is not None else 1
        out[f] = {**args, "start_level": level + 1}
    return out or None


def eval_settings(cfg: Any, store: Any, *, harder: bool = False) -> dict[str, Any]:
    """Keyword arguments of ``evals.bench.evaluate`` for this run's held-out evaluation."""
    family_args = harder_family_args(cfg) if harder else dict(cfg.seeds.family_args)
    bench = eval_bench_name(cfg)
    if harder:  # only the families that have a level to move
        bench = "heldout:" + ",".join(family_args or {})
    return dict(bench=bench, k=cfg.eval.k, n_items=cfg.eval.n_items,
                temperature=cfg.eval.temperature,
                max_tokens=cfg.eval.max_tokens or cfg.student.max_tokens,
                seed=cfg.run.seed if cfg.eval.seed < 0 else cfg.eval.seed,
                exclude_ids={it.id for it in store.query()} if (cfg.eval.exclude_pool and store)
                else (), fewshot=cfg.student.fewshot, family_args=family_args,
                dtype=cfg.student.dtype)


def eval_ci(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """pass@1 before, after and Δ with 95 % CIs from a paired bootstrap over the held-out items
    (teachloop/study_stats.py): each replicate resamples items, the same for both models."""
    from teachloop.study_stats import bootstrap, item_scores

    b, a = item_scores(before.get("per_item") or []), item_scores(after.get("per_item") or [])
    items = sorted(set(a) & set(b))
    if not items:
        return {}
    st = bootstrap({"after": {0: a}, "before": {0: b}}, items, base=b)
    return {"before": st["before"]["mean"], "after": st["after"]["mean"],
            "delta": st["after"]["delta"]}
