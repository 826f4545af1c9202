"""Seed items: the configured families' seeds into the pool (``teachloop run``'s seeds stage,
``teachloop generate`` and the generation workers)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from teachloop.errors import UserError


def seed_items(cfg: Any, store: Any, console: Console) -> int:
    """Seed items of ``cfg.seeds`` into the pool (idempotent: content-hash ids); the count new."""
    from teachloop.evals.families import UnknownFamilyError, get_family

    new = 0
    for name in cfg.seeds.families:
        try:
            fam = get_family(name, **cfg.seeds.family_args.get(name, {}))
        except UnknownFamilyError as e:
            raise UserError(str(e)) from None
        new += store.insert_many(fam.seeds(cfg.seeds.per_family, seed=cfg.run.seed))
    console.print(f"[bold]seeds[/] {new} new items from {len(cfg.seeds.families)} families "
                  f"({len(store)} in the pool)")
    return new
