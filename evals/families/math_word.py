"""``math.word``: free-form word problems that carry a reference Python program.

teachloop's math version of the Sancaktar et al. loop (METHODS.md §1, "teachloop:" note): the
teacher writes the problem, states an answer and writes a short program computing it.  The gold
answer is the program's stdout (stripped), executed in the sandbox (twice: the two runs must
print the same); the stated answer must agree with it under ``score_completion`` (math-verify),
else the proposal is rejected ("stated answer disagrees with executed program").  A label is never
taken on trust.  A printed gold that carries a unit or a word after its number ("5 m") is
rejected: math-verify drops units, so a unit in the gold could never be checked.

Scoring: ``teachloop.evals.answers.score_completion`` on the whole completion; the prompt asks
for ``\\boxed{}``, so a completion without one scores 0.0.

Seeds: ``data/math_word_seeds.json`` (problems + programs, no answers); their gold answers are
computed by executing the programs when seeds are first asked for (cached per program).

Proposal format (``validate_proposal``)::

    {"problem": "<text the student sees>", "program": "<python printing the answer>",
     "answer": "<the teacher's stated answer>"}

Not covered: judging whether the problem text matches the program (only the stated answer is
cross-checked), and procedural variants (no generic knob for free text: the LLM teacher
rewrites these).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from teachloop.curriculum.items import Item
from teachloop.evals.families import register
from teachloop.evals.families.base import (
    SEED_TEACHER,
    BoundedCache,
    Family,
    FamilyConfig,
    ProposalResult,
    teacher_metadata,
    boxed,
    seeded_order,
)

log = logging.getLogger(__name__)

NAME = "math.word"
ANSWER_INSTRUCTION = "Solve the problem. Put your final answer in \\boxed{}."
DATA_FILE = "math_word_seeds.json"
# a number followed by a word or unit ("5 m", "12 dollars", "45°", "$3"); not "1e-05"
_UNIT = re.compile(r"[-+$€£]?\s*[\d.,/]+\s*(?![eE][-+]?\d)[A-Za-z$€£%°]|[$€£]")


@dataclass
class MathWordConfig(FamilyConfig):
    data_file: str = field(
        default=DATA_FILE,
        metadata={"help": "seed problems: a file name under evals/families/data/ or a path to a JSON file"},
    )
    exec_timeout_s: float = field(default=5.0, metadata={"help": "sandbox wall-clock limit per program run"})
    memory_mb: int = field(default=512, metadata={"help": "sandbox address-space limit per run (MiB)"})
    verify_timeout_s: float = field(default=5.0, metadata={"help": "math-verify timeout per comparison"})
    max_answer_chars: int = field(default=100, metadata={"help": "longest printed answer accepted"})
    max_program_chars: int = field(default=8000, metadata={"help": "longest reference program accepted"})
    max_problem_chars: int = field(default=4000, metadata={"help": "longest problem text accepted"})

    def validate(self) -> None:
        for name in ("exec_timeout_s", "memory_mb", "verify_timeout_s", "max_answer_chars",
                     "max_program_chars", "max_problem_chars"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.data_file:
            raise ValueError("data_file must name the seed problems file")


def load_data(data_file: str) -> dict[str, Any]:
    """A seed data file: a path, else a file name in the package's data/ folder."""
    if os.path.sep in data_file or os.path.exists(data_file):
        with open(data_file, encoding="utf-8") as fh:
            return json.load(fh)
    res = importlib.resources.files("teachloop.evals.families") / "data" / data_file
    return json.loads(res.read_text(encoding="utf-8"))


_cache = BoundedCache()  # program key -> (gold, evidence) of programs that ran cleanly


class MathWordFamily(Family):
    """Word problems with an executed reference program (METHODS.md §1, teachloop's math loop)."""

    NAME = NAME
    CONFIG = MathWordConfig

    # -- execution -------------------------------------------------------------------------
    def _execute(self, program: str) -> tuple[str | None, str, str, dict]:
        """(gold or None, failing stage, reason, evidence) from two sandbox runs of ``program``."""
        from teachloop.evals.sandbox import run_python

        key = hashlib.sha256(
            f"{self.config.exec_timeout_s}|{self.config.memory_mb}|{self.config.max_answer_chars}|{program}".encode()
        ).hexdigest()
        hit = _cache.get(key)
        if hit is not None:
            return hit[0], "", "", hit[1]
        runs = []
        for _ in range(2):
            r = run_python(program, timeout_s=self.config.exec_timeout_s, memory_mb=self.config.memory_mb)
            runs.append({"status": r.status, "stdout": r.stdout[-2000:], "stderr": r.stderr[-500:],
                         "returncode": r.returncode, "duration_s": round(r.duration_s, 4)})
            if r.status != "ok" or r.returncode != 0:
                break
        ev = {"runs": runs}
        gold, stage, reason = None, "", ""
        last = runs[-1]
        if last["status"] != "ok" or last["returncode"] != 0:
            err = last["stderr"].strip().splitlines()[-1:] or [""]
            stage, reason = "execute", f"program {last['status']} (rc={last['returncode']}): {err[0][:200]}"
        elif runs[0]["stdout"] != runs[1]["stdout"]:
            stage, reason = "determinism", "non-deterministic: two runs printed different output"
        else:
            out = runs[0]["stdout"].strip()
            if not out:
                stage, reason = "output", "program printed nothing"
            elif "\n" in out:
                stage, reason = "output", "program must print only the answer, on one line"
            elif len(out) > self.config.max_answer_chars:
                stage, reason = "output", f"printed answer longer than {self.config.max_answer_chars} chars"
            elif _UNIT.match(out):
                stage, reason = "output", "printed answer carries a unit or a word; print the number only"
            else:
                gold = out
        if gold is not None:
            _cache.put(key, (gold, ev))
        return gold, stage, reason, ev

    def _build(
        self,
        problem: Any,
        program: Any,
        stated: Any,
        *,
        parent: Item | None,
        direction: str | None,
        teacher: str,
        prompt_version: str,
        metadata: dict[str, Any],
    ) -> ProposalResult:
        if not isinstance(problem, str) or not problem.strip():
            return ProposalResult.reject("parse", "problem text missing")
        if not isinstance(program, str) or not program.strip():
            return ProposalResult.reject("parse", "reference program missing")
        if stated is not None and (not isinstance(stated, (str, int, float)) or not str(stated).strip()):
            return ProposalResult.reject("parse", "stated answer missing")
        if len(problem) > self.config.max_problem_chars:
            return ProposalResult.reject("parse", f"problem longer than {self.config.max_problem_chars} chars")
        if len(program) > self.config.max_program_chars:
            return ProposalResult.reject("parse", f"program longer than {self.config.max_program_chars} chars")
        gold, stage, reason, ev = self._execute(program)
        if gold is None:
            return ProposalResult.reject(stage, reason, **ev)
        checks = ["executed", "deterministic", "one-line answer"]
        if stated is not None:
            from teachloop.evals.answers import score_completion

            stated = str(stated).strip()
            if score_completion(gold, stated, timeout_s=self.config.verify_timeout_s) != 1.0:
                return ProposalResult.reject(
                    "agreement", "stated answer disagrees with executed program",
                    gold=gold, stated=stated, **ev,
                )
            checks.append("stated answer agrees (math-verify)")
        validation = dict(ev, checks=checks, gold_source="executed reference program")
        item = self._new_item(
            prompt=self.render_prompt(problem),
            answer=gold,
            checker={"problem": problem.strip(), "program": program, "stated_answer": stated},
            metadata=metadata,
            validation=validation,
            parent=parent,
            direction=direction,
            teacher=teacher,
            prompt_version=prompt_version,
        )
        return ProposalResult(item=item, evidence=ev)

    # -- the family interface ------------------------------------------------------------
    def render_prompt(self, problem: str) -> str:
        return f"{problem.strip()}\n\n{ANSWER_INSTRUCTION}"

    def seeds(self, n: int, seed: int = 0) -> list[Item]:
        """Up to ``n`` distinct seed problems (at most as many as the data file holds)."""
        data = load_data(self.config.data_file)
        probs = data["problems"]
        order = seeded_order(len(probs), seed)
        out = []
        for idx in range(min(n, len(probs))):
            p = probs[order[idx]]
            meta = {
                "source": f"teachloop:{os.path.basename(self.config.data_file)}",
                "seed_name": p.get("name", str(order[idx])),
                "topic": p.get("topic", ""),
                "level": p.get("level"),
                "difficulty": {"level": p.get("level")},
            }
            res = self._build(p["problem"], p["program"], None, parent=None, direction="seed",
                              teacher=SEED_TEACHER, prompt_version="", metadata=meta)
            if res.ok:
                out.append(res.item)
            else:  # a shipped seed that fails means the sandbox is broken: say so
                log.warning("%s: seed %s skipped: %s", self.name, meta["seed_name"], res.reason)
        return out

    def validate_proposal(
        self,
        proposal: Mapping[str, Any],
        *,
        parent: Item | None = None,
        direction: str | None = None,
        teacher: str = "",
        prompt_version: str = "",
    ) -> ProposalResult:
        if not isinstance(proposal, Mapping):
            return ProposalResult.reject("parse", "proposal must be a mapping")
        if "answer" not in proposal:
            return ProposalResult.reject("parse", "stated answer missing")
        meta = teacher_metadata(parent)
        try:
            return self._build(
                proposal.get("problem"), proposal.get("program"), proposal.get("answer"),
                parent=parent, direction=direction, teacher=teacher, prompt_version=prompt_version,
                metadata=meta,
            )
        except Exception as e:  # noqa: BLE001 - a malformed proposal is a rejection, not a crash
            return ProposalResult.internal(e)

    def _extract(self, completion: str) -> str | None:
        """The last ``\\boxed{}``'s contents: the format check (``format_reward``), never the score."""
        b = boxed(completion)
        return None if b is None else b[1]

    def _score(self, item: Item, completion: str) -> float:
        from teachloop.evals.answers import score_completion

        if not item.answer:
            return 0.0
        return score_completion(item.answer, completion, timeout_s=self.config.verify_timeout_s,
                                require_boxed=True)

    def reference_completion(self, item: Item) -> str:
        return f"The answer is \\boxed{{{item.answer}}}."


register(MathWordFamily())
