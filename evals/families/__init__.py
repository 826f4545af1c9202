"""Task-family registry: the one string -> family boundary (modelled on reasoning-gym's
``factory.py``; STYLE.md §5).  One module per family group (``rg``, ``math_word``,
``code_exec``, ``code_gen``), each with its name constant(s), a config dataclass with
``validate()``, the class, and ``register(...)`` at the bottom.

    >>> from teachloop.evals.families import get_family, family_names
    >>> fam = get_family("math.rg.chain_sum")
    >>> item = fam.seeds(1)[0]
    >>> fam.score(item, fam.reference_completion(item))
    1.0
"""

from __future__ import annotations

from typing import Any

from teachloop.evals.families.base import Family, FamilyConfig, ProposalResult

__all__ = [
    "Family",
    "FamilyConfig",
    "ProposalResult",
    "UnknownFamilyError",
    "family_names",
    "get_family",
    "register",
]

_FAMILIES: dict[str, Family] = {}


class UnknownFamilyError(KeyError, ValueError):
    """No family of that name; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "unknown family"


def register(family: Family) -> Family:
    """Register a family instance under ``family.name``; a duplicate name is an error."""
    if not isinstance(family, Family):
        raise TypeError(f"register() needs a Family instance, got {type(family).__name__}")
    name = family.name
    if not name or not isinstance(name, str):
        raise ValueError(f"{type(family).__name__} has no name")
    if name in _FAMILIES:
        raise ValueError(f"task family {name!r} is already registered")
    _FAMILIES[name] = family
    return family


def get_family(name: str, **config: Any) -> Family:
    """The registered family ``name``; with keyword arguments, a copy whose config fields are
    replaced (e.g. ``get_family("code.deduction", timeout_s=2.0)``)."""
    try:
        fam = _FAMILIES[name]
    except (KeyError, TypeError):
        raise UnknownFamilyError(
            f"unknown task family {name!r}; known families: {', '.join(family_names())}"
        ) from None
    return fam.with_config(**config) if config else fam


def family_names() -> list[str]:
    """Every registered family name, sorted."""
    return sorted(_FAMILIES)


# Built-in families register themselves on import (reasoning-gym style).  Heavy imports
# (reasoning_gym, the sandbox zygote, math-verify workers) happen lazily, on first use.
from teachloop.evals.families import code_exec, code_gen, math_word, rg  # noqa: E402,F401
from teachloop.evals.families import code_fuzz  # noqa: E402,F401
