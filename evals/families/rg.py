"""``math.rg.<dataset>``: reasoning-gym's procedural generators as task families.

Gold answers are reasoning-gym's own (exact procedural generators).  Easier/harder variants
are the *procedural teacher* (DESIGN.md "Teacher kinds"): the generator's difficulty knobs moved
one step, the same progression rule as the LLM teacher (METHODS.md §1) applied to knobs instead
of text.

Knobs.  Datasets with a reasoning-gym ``Curriculum`` keep one level per curriculum attribute in
``item.metadata["levels"]``; a level becomes a concrete config through
``generate_configuration`` in ``UPPER_BOUND`` mode, so level k means "exactly the k-th value"
(or the k-th interval for ``ensure_interval`` attributes), and moving a level moves the problem
monotonically.  gsm_symbolic has no curriculum; its knob is the generators' ``difficulty`` float
(number ranges scale with it) over ``GSM_DIFFICULTIES``.

Departures from reasoning-gym, on purpose:
- Rewards are binary and come from ``teachloop.evals.answers.score_completion`` on the whole
  completion (math-verify; every gold here is a number), not from reasoning-gym's
  ``score_answer``, whose partial credit (len ratio, 0.01 for "a number") and own extraction
  are not used.  The prompt asks for ``\\boxed{}``: a completion without one scores 0.0.
- gsm_symbolic's config only accepts difficulty 1.0; higher values are set on the dataset after
  validation (its generators accept any difficulty; below 1.0 several of them loop forever or
  raise, so the range starts at 1.0, which is therefore also the easiest level).
- fraction_simplification is not registered: math-equivalence would accept an unsimplified
  fraction.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import json
from dataclasses import dataclass, field
from random import Random
from typing import Any

from teachloop.curriculum.items import Item
from teachloop.evals.families import register
from teachloop.evals.families.base import PROCEDURAL_TEACHER, SEED_TEACHER, Family, FamilyConfig, boxed

RG_DATASETS = ("basic_arithmetic", "chain_sum", "gsm_symbolic", "products", "gcd", "lcm")
NAME_PREFIX = "math.rg."
NAMES = tuple(NAME_PREFIX + d for d in RG_DATASETS)
GSM_DIFFICULTIES = (1.0, 1.25, 1.5, 2.0, 3.0)
ANSWER_INSTRUCTION = "Put your final answer in \\boxed{}."
_GSM_SUFFIX = " Give the result as your final answer. Do not include units."
_MAX_TRIES = 8


@dataclass
class RGConfig(FamilyConfig):
    dataset: str = field(default="chain_sum", metadata={"help": f"reasoning-gym dataset, one of {RG_DATASETS}"})
    start_level: int | None = field(
        default=None,
        metadata={"help": "knob level of every seed (clipped to each knob's top level); None: 1 for "
                          "curriculum datasets (room to move both ways), 0 for gsm_symbolic (its native 1.0)"},
    )
    step: str = field(
        default="one",
        metadata={"help": "'one': a variant moves one level of one knob (chosen by rng); 'all': every knob"},
    )
    verify_timeout_s: float = field(default=5.0, metadata={"help": "math-verify time limit per score"})

    def validate(self) -> None:
        if self.dataset not in RG_DATASETS:
            raise ValueError(f"dataset must be one of {RG_DATASETS}, got {self.dataset!r}")
        if self.start_level is not None and self.start_level < 0:
            raise ValueError("start_level must be >= 0")
        if self.step not in ("one", "all"):
            raise ValueError(f"step must be 'one' or 'all', got {self.step!r}")
        if not self.verify_timeout_s > 0:
            raise ValueError("verify_timeout_s must be > 0")



def _jsonable(x: Any) -> Any:
    """reasoning-gym metadata as plain JSON (tuples -> lists, Fractions -> str)."""
    return json.loads(json.dumps(x, default=str))


@functools.lru_cache(maxsize=1)
def _rg_version() -> str:
    try:
        return importlib.metadata.version("reasoning-gym")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"



class ReasoningGymFamily(Family):
    """A reasoning-gym dataset as a family (``math.rg.<dataset>``); see the module docstring.

    Seeds follow reasoning-gym exactly: item ``idx`` of seed ``s`` is the dataset built with
    ``seed=s`` at the seed knob levels, index ``idx`` (``Random(s + idx)`` inside reasoning-gym).
    """

    CONFIG = RGConfig
    supports_variants = True

    @property
    def name(self) -> str:
        return NAME_PREFIX + self.config.dataset

    # -- knobs ------------------------------------------------------------------------------
    def knobs(self) -> dict[str, list]:
        """Knob name -> its values by level (reasoning-gym curriculum attributes)."""
        if self.config.dataset == "gsm_symbolic":
            return {"difficulty": list(GSM_DIFFICULTIES)}
        cur = self._curriculum()
        return {name: list(attr.levels) for name, attr in cur.attributes.items()}

    def top_levels(self) -> dict[str, int]:
        """Highest usable level per knob (an ``ensure_interval`` attribute's last level would
        repeat the one before in UPPER_BOUND mode)."""
        if self.config.dataset == "gsm_symbolic":
            return {"difficulty": len(GSM_DIFFICULTIES) - 1}
        cur = self._curriculum()
        return {
            name: len(attr.levels) - (2 if getattr(attr, "ensure_interval", False) else 1)
            for name, attr in cur.attributes.items()
        }

    def _curriculum(self):
        from reasoning_gym.factory import create_curriculum

        return create_curriculum(self.config.dataset)

    def _knob_values(self, levels: dict[str, int], cfg_d: dict[str, Any]) -> dict[str, Any]:
        """What each knob level means in the generator's config: a value, or [low, high]."""
        if self.config.dataset == "gsm_symbolic":
            return {"difficulty": GSM_DIFFICULTIES[levels["difficulty"]]}
        out = {}
        for name, attr in self._curriculum().attributes.items():
            lo, hi = cfg_d.get(attr.lower_field_name), cfg_d.get(attr.upper_field_name)
            out[name] = lo if lo == hi else [lo, hi]
        return out

    # -- generation ----------------------------------------------------------------------
    def _entry(self, levels: dict[str, int], rg_seed: int, rg_index: int, template: int | None = None):
        """(reasoning-gym entry, rg config dict, template) at the given knob levels."""
        from reasoning_gym.coaching.base_curriculum import DefaultCurriculumContext, RangeAttributeMode
        from reasoning_gym.factory import DATASETS, create_curriculum

        ds_cls, cfg_cls = DATASETS[self.config.dataset]
        if self.config.dataset == "gsm_symbolic":
            difficulty = GSM_DIFFICULTIES[levels["difficulty"]]
            cfg = cfg_cls(seed=rg_seed, size=rg_index + 1)
            ds = ds_cls(cfg)
            ds.config = copy.copy(cfg)
            ds.config.difficulty = difficulty  # departure: see the module docstring
            if template is None:
                template = ds.task_indices[rg_index]
            entry = ds.generators[template](Random(rg_seed + rg_index), difficulty)
            entry["question"] += _GSM_SUFFIX
            entry["metadata"]["source_dataset"] = "gsm_symbolic"
            entry["metadata"]["source_index"] = rg_index
            return entry, {"difficulty": difficulty, "seed": rg_seed}, template
        cur = create_curriculum(self.config.dataset)
        for name, lvl in levels.items():
            cur.set_attr_level(name, lvl)
        cfg = cur.generate_configuration(
            {"seed": rg_seed, "size": rg_index + 1},
            context=DefaultCurriculumContext(mode=RangeAttributeMode.UPPER_BOUND),
        )
        cfg.validate()
        ds = ds_cls(cfg)
        entry = ds[rg_index]
        cfg_d = {k: v for k, v in vars(cfg).items() if k != "size"}
        return entry, _jsonable(cfg_d), None

    def _make(
        self, levels: dict[str, int], rg_seed: int, rg_index: int, template: int | None, **item_kw: Any
    ) -> Item | None:
        entry = None
        for k in range(_MAX_TRIES):  # a few gsm templates raise at some difficulties
            try:
                entry, cfg_d, template_used = self._entry(levels, rg_seed + k * 7919, rg_index, template)
                rg_seed = rg_seed + k * 7919
                break
            except (ValueError, ZeroDivisionError, AssertionError):
                continue
        if entry is None:
            return None
        knob_vals = self._knob_values(levels, cfg_d)
        meta = {
            "source": "reasoning-gym",
            "rg_version": _rg_version(),
            "rg_dataset": self.config.dataset,
            "rg_seed": rg_seed,
            "rg_index": rg_index,
            "rg_config": cfg_d,
            "levels": dict(levels),
            "knobs": knob_vals,
            "rg_metadata": _jsonable(entry.get("metadata", {})),
        }
        if template_used is not None:
            meta["template"] = template_used
        meta.update(item_kw.pop("extra_metadata", {}))
        prompt = self.render_prompt(entry["question"])
        gold = str(entry["answer"])
        return self._new_item(
            prompt=prompt,
            answer=gold,
            checker={"question": entry["question"]},
            metadata=meta,
            validation={"checks": ["procedural generator (reasoning-gym)"], "gold_source": "reasoning-gym"},
            **item_kw,
        )

    def seeds(self, n: int, seed: int = 0) -> list[Item]:
        top = self.top_levels()
        start = self.config.start_level
        if start is None:
            start = 0 if self.config.dataset == "gsm_symbolic" else 1
        levels = {k: min(start, t) for k, t in top.items()}
        out = []
        for idx in range(n):
            it = self._make(levels, seed, idx, None, parent=None, direction="seed", teacher=SEED_TEACHER)
            if it is not None:
                out.append(it)
        return out

    def render_prompt(self, question: str) -> str:
        return f"{question.strip()}\n\n{ANSWER_INSTRUCTION}"

    # -- variants ------------------------------------------------------------------------
    def variant(self, item: Item, direction: str, rng: Random) -> Item | None:
        """One knob one level up (harder) or down (easier); None at the end of the range."""
        if direction not in ("easier", "harder"):
            raise ValueError(f"direction must be 'easier' or 'harder', got {direction!r}")
        levels = dict(item.metadata.get("levels") or {})
        top = self.top_levels()
        if not levels:
            levels = {k: 0 for k in top}
        step = 1 if direction == "harder" else -1
        movable = sorted(k for k in top if 0 <= levels.get(k, 0) + step <= top[k])
        if not movable:
            return None
        chosen = movable if self.config.step == "all" else [rng.choice(movable)]
        new = dict(levels)
        for k in chosen:
            new[k] = levels.get(k, 0) + step
        return self._make(
            new,
            rng.randrange(2**31),
            0,
            item.metadata.get("template"),
            parent=item,
            direction=direction,
            teacher=PROCEDURAL_TEACHER,
            extra_metadata={"moved": {k: [levels.get(k, 0), new[k]] for k in chosen}},
        )

    # -- scoring ---------------------------------------------------------------------------
    def _extract(self, completion: str) -> str | None:
        """The last ``\\boxed{}``'s contents: the format check (``format_reward``), never the score."""
        b = boxed(completion)
        return None if b is None else b[1]

    def _score(self, item: Item, completion: str) -> float:
        from teachloop.evals.answers import score_completion

        return score_completion(item.answer, completion, timeout_s=self.config.verify_timeout_s,
                                require_boxed=True)

    def reference_completion(self, item: Item) -> str:
        return f"The answer is \\boxed{{{item.answer}}}."


# Register one family per reasoning-gym dataset
for _ds in RG_DATASETS:
    register(ReasoningGymFamily(RGConfig(dataset=_ds)))
