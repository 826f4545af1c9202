"""The task-family interface and the helpers every family shares.

A family turns seeds and teacher proposals into :class:`~teachloop.curriculum.items.Item` records and
scores student completions against them.  The contract (tests/test_families.py checks it for
every registered family):

- ``seeds(n, seed=0)``: deterministic, direction "seed", ``teacher="seed"``, metadata with the
  source and the difficulty knobs.  Procedural families use ``Random(seed + idx)`` per item
  (reasoning-gym style); families drawing on a fixed seed file walk a permutation fixed by
  ``seed`` (distinct items, at most as many as the file holds).  Gold answers of code and
  math.word seeds come from executing their programs, never from typing.
- ``render_prompt(...)``: the student prompt, with the answer format spelled out.
- ``extract(completion)`` / ``score(item, completion)``: never raise, whatever the text
  (garbage, huge, binary): a failure scores 0.0.  Rewards are binary (1.0 or 0.0).
- ``validate_proposal(proposal, ...)``: a teacher proposal (a dict, format per family) becomes
  a validated item, or a rejection with the stage and the reason (METHODS.md §1: gold labels by
  execution, never on trust).  Never raises on a malformed proposal.
- ``variant(item, direction, rng)``: a procedural easier/harder child, or None at the end of
  the range or where the family has no procedural knob (``supports_variants``).
- ``reference_completion(item)``: a completion that scores 1.0 (tests, smoke runs).

Not here: which items to generate (agents/), which to train on (curriculum/), TRL reward
wrappers (training/).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from random import Random
from typing import Any, ClassVar, Mapping

from teachloop.curriculum.items import Item

__all__ = [
    "BoundedCache",
    "Family",
    "FamilyConfig",
    "ProposalResult",
    "MAX_COMPLETION_CHARS",
    "boxed",
    "code_blocks",
    "final_answer_text",
    "last_code_block",
    "seeded_order",
    "teacher_metadata",
]

log = logging.getLogger(__name__)

MAX_COMPLETION_CHARS = 200_000  # longer completions are scored on their last part only
SEED_TEACHER = "seed"
PROCEDURAL_TEACHER = "procedural"


# ------------------------------------------------------------------------------ results
@dataclass
class ProposalResult:
    """Outcome of validating a teacher proposal: an item, or a rejection with its reason."""

    item: Item | None = None
    stage: str = ""  # where it failed: parse / execute / determinism / agreement / tests / ...
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.item is not None

    @classmethod
    def reject(cls, stage: str, reason: str, **evidence: Any) -> ProposalResult:
        return cls(item=None, stage=stage, reason=reason, evidence=evidence)

    @classmethod
    def internal(cls, e: BaseException) -> ProposalResult:
        """A validator that raised: a malformed proposal is a rejection, not a crash."""
        return cls.reject("internal", f"{type(e).__name__}: {e}"[:300])


def teacher_metadata(parent: Item | None, **extra: Any) -> dict[str, Any]:
    """Metadata of an item the teacher proposed: its source, ``extra``, and its parent's
    source."""
    meta: dict[str, Any] = {"source": "teacher", **extra}
    if parent is not None:
        meta["parent_source"] = parent.metadata.get("source")
    return meta


# ------------------------------------------------------------------------------ config
@dataclass
class FamilyConfig:
    """Base of the family configs: every field has a ``help``; ``validate()`` says what to fix."""

    def validate(self) -> None:  # overridden where there is something to check
        return None


# ------------------------------------------------------------------------------ the base class
class Family:
    """Base class of a task family (see the module docstring for the contract)."""

    NAME: ClassVar[str] = ""
    CONFIG: ClassVar[type[FamilyConfig]] = FamilyConfig
    supports_variants: ClassVar[bool] = False

    def __init__(self, config: FamilyConfig | None = None) -> None:
        self.config = config if config is not None else self.CONFIG()
        if not isinstance(self.config, self.CONFIG):
            raise TypeError(f"{type(self).__name__} needs a {self.CONFIG.__name__}, got {type(config).__name__}")
        self.config.validate()

    @property
    def name(self) -> str:
        return self.NAME

    def with_config(self, **overrides: Any) -> Family:
        """A new instance of this family with some config fields replaced."""
        return type(self)(dataclasses.replace(self.config, **overrides))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # -- to implement --------------------------------------------------------------------
    def seeds(self, n: int, seed: int = 0) -> list[Item]:
        raise NotImplementedError

    def render_prompt(self, *args: Any, **kwargs: Any) -> str:
        raise NotImplementedError

    def _extract(self, completion: str) -> str | None:
        raise NotImplementedError

    def _score(self, item: Item, completion: str) -> float:
        raise NotImplementedError

    def validate_proposal(
        self,
        proposal: Mapping[str, Any],
        *,
        parent: Item | None = None,
        direction: str | None = None,
        teacher: str = "",
        prompt_version: str = "",
    ) -> ProposalResult:
        return ProposalResult.reject("unsupported", f"{self.name} takes no teacher proposals")

    def variant(self, item: Item, direction: str, rng: Random) -> Item | None:
        return None

    def reference_completion(self, item: Item) -> str:
        raise NotImplementedError

    # -- never-raising wrappers ----------------------------------------------------------
    def extract(self, completion: Any) -> str | None:
        """The answer part of a completion, or None.  Never raises."""
        try:
            text = _as_text(completion)
            return None if text is None else self._extract(text)
        except Exception:  # noqa: BLE001 - a reward path must never raise on text
            log.debug("%s: extract failed", self.name, exc_info=True)
            return None

    def score(self, item: Item, completion: Any) -> float:
        """Binary reward in [0, 1] of ``completion`` on ``item``.  Never raises: failure = 0.0."""
        try:
            text = _as_text(completion)
            if text is None or not text.strip():
                return 0.0
            r = float(self._score(item, text))
        except Exception:  # noqa: BLE001
            log.warning("%s: scoring item %s failed; reward 0.0", self.name, getattr(item, "id", "?"), exc_info=True)
            return 0.0
        if r != r:  # NaN
            return 0.0
        return min(1.0, max(0.0, r))

    # -- helpers for subclasses ------------------------------------------------------------
    def _new_item(
        self,
        *,
        prompt: str,
        answer: str,
        checker: dict[str, Any],
        metadata: dict[str, Any],
        validation: dict[str, Any],
        parent: Item | None,
        direction: str | None,
        teacher: str,
        prompt_version: str = "",
    ) -> Item:
        """A seed item (no parent) or a child of ``parent`` one turn later."""
        fields = dict(
            answer=answer,
            checker=checker,
            metadata=metadata,
            validation=validation,
            teacher=teacher,
            prompt_version=prompt_version,
        )
        if parent is not None:
            if direction not in ("easier", "harder"):
                raise ValueError(f"a child item needs direction 'easier' or 'harder', got {direction!r}")
            return parent.child(prompt, direction, family=self.name, **fields)
        return Item(family=self.name, prompt=prompt, direction=direction or "seed", **fields)


def _as_text(completion: Any) -> str | None:
    """Completions arrive as str, bytes or chat messages (TRL conversational format)."""
    if isinstance(completion, str):
        text = completion
    elif isinstance(completion, (bytes, bytearray)):
        text = bytes(completion).decode("utf-8", "replace")
    elif isinstance(completion, list) and completion and isinstance(completion[-1], Mapping):
        text = completion[-1].get("content")
        if not isinstance(text, str):
            return None
    elif isinstance(completion, Mapping):
        text = completion.get("content")
        if not isinstance(text, str):
            return None
    else:
        return None
    text = text.replace("\x00", "")
    if len(text) > MAX_COMPLETION_CHARS:
        text = text[-MAX_COMPLETION_CHARS:]
    return text


# ------------------------------------------------------------------------------ extraction
def boxed(text: str) -> tuple[int, str] | None:
    """(end position, contents) of the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced
    braces, or None."""
    best = None
    for cmd in ("\\boxed", "\\fbox"):
        i = text.rfind(cmd)
        while i >= 0 and text[i + len(cmd) : i + len(cmd) + 1].isalpha():
            i = text.rfind(cmd, 0, i)
        if i >= 0 and (best is None or i > best[0]):
            best = (i, cmd)
    if best is None:
        return None
    j = best[0] + len(best[1])
    while j < len(text) and text[j] in " \t":
        j += 1
    if j >= len(text) or text[j] != "{":
        return None
    depth = 0
    for k in range(j, len(text)):
        c = text[k]
        if c == "{" and text[k - 1] != "\\":
            depth += 1
        elif c == "}" and text[k - 1] != "\\":
            depth -= 1
            if depth == 0:
                return k + 1, text[j + 1 : k]
    return None


_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n", re.M)


@functools.lru_cache(maxsize=64)
def _closing_fence(char: str, n: int) -> re.Pattern:
    return re.compile(r"^[ \t]*" + re.escape(char) + "{" + str(n) + r",}[ \t]*$", re.M)


def code_blocks(text: str) -> list[tuple[int, str, str]]:
    """Fenced code blocks as (end position, language, body), in order.  An unclosed last block
    runs to the end of the text (a completion cut off by the token limit)."""
    out = []
    pos = 0
    while True:
        m = _FENCE.search(text, pos)
        if not m:
            break
        fence, lang = m.group(1), m.group(2).lower()
        c = _closing_fence(fence[0], len(fence)).search(text, m.end())
        if c is None:
            out.append((len(text), lang, text[m.end() :]))
            break
        out.append((c.end(), lang, text[m.end() : c.start()]))
        pos = c.end()
    return out


def last_code_block(text: str, langs: tuple[str, ...] = ("python", "py", "python3", "")) -> str | None:
    """Body of the last fenced block whose language is one of ``langs`` (prefers python)."""
    blocks = [b for b in code_blocks(text) if b[1] in langs]
    return blocks[-1][2] if blocks else None


_ANSWER_LINE = re.compile(
    r"^[ \t>*#-]*(?:final[ \t]+answer|answer|output|result|input)[ \t]*(?:is)?[ \t]*[:=][ \t]*(\S.*)$",
    re.I | re.M,
)


def final_answer_text(text: str, *, code: bool = True) -> str | None:
    """Lenient: whichever comes last of ``\\boxed{}``, a python code block (``code``) and an
    "answer:" line; None when there is none."""
    cands: list[tuple[int, str]] = []
    b = boxed(text)
    if b is not None:
        cands.append(b)
    if code:
        blocks = [blk for blk in code_blocks(text) if blk[1] in ("python", "py", "python3", "")]
        if blocks:
            cands.append((blocks[-1][0], blocks[-1][2]))
    lines = list(_ANSWER_LINE.finditer(text))
    if lines:
        cands.append((lines[-1].end(), lines[-1].group(1).strip()))
    if not cands:
        return None
    return max(cands, key=lambda c: c[0])[1]


def seeded_order(n_total: int, seed: int) -> list[int]:
    """A permutation of ``range(n_total)`` fixed by ``seed``: seeds(n) walk it, so the first
    ``n_total`` seeds of one seed value are all different."""
    order = list(range(n_total))
    Random(seed).shuffle(order)
    return order


class BoundedCache:
    """A small thread-safe LRU for validation results (successes only: a timeout under load
    must not stick).  ``get`` returns a deep copy, so items never share mutable evidence."""

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._d: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            if key not in self._d:
                return None
            self._d.move_to_end(key)
            return copy.deepcopy(self._d[key])

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._d[key] = copy.deepcopy(value)
            self._d.move_to_end(key)
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
