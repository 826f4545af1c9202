"""The item schema: one record for every task family.

An item is a problem the student sees (``prompt``), its gold ``answer`` (always obtained by
execution, see evals/), the ``checker`` data needed to score an attempt, its lineage
(``parent_id``, ``root_id``, ``direction``, ``turn``), where it came from (``teacher``,
``prompt_version``, ``validation`` evidence) and the student's measured stats.

The id is a content hash of the normalised prompt and the family, so the same problem
proposed twice is the same item (idempotent inserts in the pool).

Pure Python: no torch, trl or langgraph here (DESIGN.md layout rule).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

DIRECTIONS = ("seed", "easier", "harder")

_WS = re.compile(r"\s+")


def normalize_prompt(text: str) -> str:
    """Normalise a prompt for hashing: NFKC, collapsed whitespace, stripped, case kept.

    Case is kept on purpose: in code families ``f(X)`` and ``f(x)`` are different problems.
    """
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def item_id(family: str, prompt: str) -> str:
    """Content hash of (family, normalised prompt): 16 hex chars of SHA-256."""
    h = hashlib.sha256()
    h.update(family.encode("utf-8"))
    h.update(b"\x00")
    h.update(normalize_prompt(prompt).encode("utf-8"))
    return h.hexdigest()[:16]


@dataclass
class Item:
    """One problem in the pool. Every field survives ``to_json`` / ``from_json``."""

    family: str = field(metadata={"help": "task family, e.g. math.rg.chain_sum, code.deduction"})
    prompt: str = field(metadata={"help": "what the student sees"})
    answer: str = field(default="", metadata={"help": "gold answer, obtained by execution"})
    checker: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "data the family's checker needs: tests, reference program, inputs"},
    )
    id: str = field(default="", metadata={"help": "content hash of family + normalised prompt"})
    parent_id: str | None = field(default=None, metadata={"help": "item this was rewritten from"})
    root_id: str | None = field(default=None, metadata={"help": "seed at the root of the chain"})
    direction: str = field(default="seed", metadata={"help": "seed / easier / harder"})
    turn: int = field(default=0, metadata={"help": "teacher turn that produced it (seed = 0)"})
    teacher: str = field(default="", metadata={"help": "teacher kind and model"})
    prompt_version: str = field(default="", metadata={"help": "teacher prompt template version"})
    validation: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "evidence: executed outputs, checks passed"}
    )
    metadata: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "family-specific extras (difficulty knobs, source)"}
    )
    attempts: int = field(default=0, metadata={
        "help": "probe attempts: student rollouts made to measure difficulty (not training)"})
    successes: float = field(default=0.0, metadata={"help": "sum of rewards over the probe attempts"})
    p: float | None = field(default=None, metadata={"help": "probe pass rate successes/attempts"})
    difficulty: float | None = field(default=None, metadata={
        "help": "1 - p from the probe stats only (AdaCuRL fine difficulty)"})
    probe_policy: str = field(default="", metadata={
        "help": "the policy (model) that made the probe attempts; '' = not recorded"})
    train_attempts: int = field(default=0, metadata={
        "help": "training rollouts of this item (GRPO completions); never read for difficulty"})
    train_successes: float = field(default=0.0, metadata={
        "help": "sum of accuracy rewards over the training rollouts"})
    bucket: int | None = field(default=None, metadata={"help": "AdaCuRL bucket index, 0-based"})
    created_at: float = field(default_factory=time.time, metadata={"help": "unix time"})
    updated_at: float = field(default_factory=time.time, metadata={"help": "unix time"})

    def __post_init__(self) -> None:
        if not self.family or not isinstance(self.family, str):
            raise ValueError("item family must be a non-empty string")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if not self.id:
            self.id = item_id(self.family, self.prompt)
        if self.root_id is None and self.parent_id is None:
            self.root_id = self.id

    # --- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Item:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown item fields: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> Item:
        return cls.from_dict(json.loads(s))

    def child(self, prompt: str, direction: str, **kw: Any) -> Item:
        """A variant of this item one turn later, with lineage filled in."""
        return Item(
            family=kw.pop("family", self.family),
            prompt=prompt,
            parent_id=self.id,
            root_id=self.root_id or self.id,
            direction=direction,
            turn=self.turn + 1,
            **kw,
        )


ITEM_FIELDS = tuple(f.name for f in dataclasses.fields(Item))
