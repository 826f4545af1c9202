"""``code.deduction`` / ``code.abduction`` / ``code.induction``: the code-reasoning environments
of Sancaktar et al. (arXiv 2603.24202; METHODS.md §1).

- deduction: given ``f`` and an input ``i``, predict the output ``o``.
- abduction: given ``f`` and an output ``o``, find an input ``i`` with ``f(i) == o`` (checked by
  running ``f`` on the student's input in the sandbox).
- induction: given input/output pairs and a natural-language hint, write ``f̂``; reward 1 iff
  ``f̂(i_k) == o_k`` for every k (executed in the sandbox).

Gold outputs are always obtained by executing the teacher's ``f`` (evals/families/harness.py),
twice: any difference between the runs rejects the proposal as "non-deterministic"; an error or
a timeout on any input rejects it too.  Outputs are compared as the ``repr`` of plain Python
values, type-strict (``1 != 1.0 != True``), dict/set order free.

Teacher proposal format (``validate_proposal``), after the paper's teacher output (a block
defining ``f``, five diverse inputs, a hint without code)::

    {"code": "def f(...): ...", "inputs": ["<args as inside f(...)>", ...],
     "message": "<hint, induction>", "query": <index of the input asked about; default 0>}

Inputs must be Python literals (``"[1, 2], 3"`` or ``"f([1, 2], 3)"``), pairwise different.

Departures from the paper: one item per (f, input) for deduction and abduction (the paper's
exact problem granularity is not stated); fuzzing is code_fuzz.py; no procedural variants
(the LLM teacher rewrites these).  Seeds: ``data/code_seeds.json`` (15 small functions, five
inputs each; outputs by execution, never stored).
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
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
    final_answer_text,
    last_code_block,
    seeded_order,
)
from teachloop.evals.families.harness import (
    MAX_LITERAL_CHARS,
    HarnessRun,
    _balanced_close,
    literal_args,
    normalize_args,
    outputs_match,
    run_calls,
)
from teachloop.evals.families.math_word import load_data

log = logging.getLogger(__name__)

DEDUCTION = "code.deduction"
ABDUCTION = "code.abduction"
INDUCTION = "code.induction"
DATA_FILE = "code_seeds.json"
FN_NAME = "f"


@dataclass
class CodeExecConfig(FamilyConfig):
    data_file: str = field(
        default=DATA_FILE,
        metadata={"help": "seed functions: a file name under evals/families/data/ or a path to a JSON file"},
    )
    timeout_s: float = field(default=5.0, metadata={"help": "sandbox wall-clock limit per run (all inputs)"})
    memory_mb: int = field(default=512, metadata={"help": "sandbox address-space limit per run (MiB)"})
    min_inputs: int = field(default=1, metadata={"help": "fewest inputs a proposal may give (paper: 5)"})
    max_inputs: int = field(default=10, metadata={"help": "most inputs a proposal may give"})
    max_code_chars: int = field(default=10_000, metadata={"help": "longest f accepted"})
    max_input_chars: int = field(default=2_000, metadata={"help": "longest input (argument list) accepted"})
    max_output_chars: int = field(default=500, metadata={"help": "longest rendered output accepted"})
    min_distinct_outputs: int = field(
        default=2, metadata={"help": "induction: fewest distinct outputs among the pairs (degenerate f otherwise)"}
    )

    def validate(self) -> None:
        for name in ("timeout_s", "memory_mb", "min_inputs", "max_inputs", "max_code_chars",
                     "max_input_chars", "max_output_chars"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_inputs < self.min_inputs:
            raise ValueError("max_inputs must be >= min_inputs")
        if self.min_distinct_outputs < 1:
            raise ValueError("min_distinct_outputs must be >= 1")


@dataclass
class Executed:
    """A proposal's f and inputs after two sandbox runs agreed."""

    code: str
    inputs: list[str]
    outputs: list[str]
    evidence: dict[str, Any]


_cache = BoundedCache()  # key -> Executed (successful executions only)


def _defines_f(code: str) -> bool:
    """Whether ``code`` binds ``f`` at top level (parsed only, never run here)."""
    tree = ast.parse(code)
    return any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == FN_NAME
        for node in tree.body
    ) or any(
        isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == FN_NAME for t in node.targets)
        for node in tree.body
    )


def _clean_value_text(s: str) -> str:
    s = s.strip().strip("`").strip()
    if s.startswith("$") and s.endswith("$") and len(s) >= 2:
        s = s.strip("$").strip()
    for wrap in ("\\text{", "\\texttt{", "\\mathtt{"):
        if s.startswith(wrap) and s.endswith("}"):
            s = s[len(wrap) : -1].strip()
    return s


def _value_candidates(ans: str) -> list[str]:
    """Readings of one final answer: the whole text, or the right-hand side of
    ``f(...) == X`` / ``assert f(...) == X`` / ``name = X``, on the whole text or its last line."""
    s = _clean_value_text(ans)
    texts = [s]
    lines = [ln for ln in s.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if len(lines) > 1:
        texts.append(lines[-1].strip())
    out = []
    for t in texts:
        out.append(t)
        u = t[len("assert ") :].strip() if t.startswith("assert ") else t
        if "==" in u:
            out.append(u.split("==", 1)[1].strip())
        head, eq, tail = u.partition("=")
        if eq and head.strip().isidentifier() and not tail.startswith("="):
            out.append(tail.strip())
    return [c for c in dict.fromkeys(out) if c]


def _args_from_answer(ans: str) -> str | None:
    """The argument list of the student's input: inside the last ``f(...)`` if there is one,
    else the answer text itself."""
    s = _clean_value_text(ans)
    if s.startswith(FN_NAME + "(") and _balanced_close(s, 1) == len(s) - 1:
        return s[2:-1].strip()
    i = s.rfind(FN_NAME + "(")
    while i > 0 and (s[i - 1].isalnum() or s[i - 1] == "_"):
        i = s.rfind(FN_NAME + "(", 0, i)
    if i >= 0:
        j = _balanced_close(s, i + 1)
        if j < 0:
            return None
        return s[i + 2 : j].strip()
    head, eq, tail = s.partition("=")
    if eq and head.strip().isidentifier() and not tail.startswith("="):
        s = tail.strip()
    return s


class _CodeExecFamily(Family):
    """Shared machinery of the three code-reasoning families (see the module docstring)."""

    CONFIG = CodeExecConfig
    KIND = ""

    # -- execution of a proposal ---------------------------------------------------------
    def _run(self, code: str, inputs: list[str], *, lenient: bool = False) -> HarnessRun:
        return run_calls(code, inputs, fn_name=FN_NAME, lenient=lenient,
                         timeout_s=self.config.timeout_s, memory_mb=self.config.memory_mb)

    def execute(self, code: Any, inputs: Any) -> Executed | ProposalResult:
        """Check and run a teacher's ``f`` on its inputs twice; an :class:`Executed` or a rejection."""
        cfg = self.config
        if not isinstance(code, str) or not code.strip():
            return ProposalResult.reject("parse", "code of f missing")
        if len(code) > cfg.max_code_chars:
            return ProposalResult.reject("parse", f"code longer than {cfg.max_code_chars} chars")
        try:
            if not _defines_f(code):
                return ProposalResult.reject("parse", "code defines no function f")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            return ProposalResult.reject("parse", f"code does not parse: {type(e).__name__}: {e}"[:300])
        if not isinstance(inputs, (list, tuple)) or not all(isinstance(x, str) for x in inputs):
            return ProposalResult.reject("parse", "inputs must be a list of strings")
        if not cfg.min_inputs <= len(inputs) <= cfg.max_inputs:
            return ProposalResult.reject("parse", f"need {cfg.min_inputs}..{cfg.max_inputs} inputs, got {len(inputs)}")
        norm = []
        for k, src in enumerate(inputs):
            a = normalize_args(src)
            if len(a) > cfg.max_input_chars:
                return ProposalResult.reject("parse", f"input {k} longer than {cfg.max_input_chars} chars")
            if literal_args(a) is None:
                return ProposalResult.reject("parse", f"input {k} is not a Python literal argument list: {a[:80]!r}")
            norm.append(a)
        if len(set(norm)) != len(norm):
            return ProposalResult.reject("parse", "duplicate inputs")

        key = repr((cfg.timeout_s, cfg.memory_mb, cfg.max_output_chars, code, norm))
        key = hashlib.sha256(key.encode()).hexdigest()
        hit = _cache.get(key)
        if hit is not None:
            return hit
        result = self._execute_twice(code, norm)
        if isinstance(result, Executed):
            _cache.put(key, result)
        return result

    def _execute_twice(self, code: str, inputs: list[str]) -> Executed | ProposalResult:
        runs = []
        for _ in range(2):
            r = self._run(code, inputs)
            runs.append(r)
            if not r.ok:
                ev = {"runs": [x.to_evidence() for x in runs]}
                if r.status == "timeout":
                    return ProposalResult.reject("execute", f"timeout after {self.config.timeout_s} s", **ev)
                return ProposalResult.reject("execute", f"f failed: {r.first_error()}"[:400], **ev)
        ev = {"runs": [x.to_evidence() for x in runs]}
        o1, o2 = runs[0].outputs, runs[1].outputs
        for k, (a, b) in enumerate(zip(o1, o2)):
            if a != b:
                return ProposalResult.reject(
                    "determinism", f"non-deterministic: input {k} gave {a[:60]!r} then {b[:60]!r}", **ev
                )
        for k, o in enumerate(o1):
            if len(o) > self.config.max_output_chars:
                reason = f"output {k} longer than {self.config.max_output_chars} chars"
                return ProposalResult.reject("output", reason, **ev)
        ev.update(outputs=list(o1), checks=["parsed", "executed twice", "deterministic", "plain outputs"],
                  gold_source="executed f (sandbox)")
        return Executed(code=code, inputs=list(inputs), outputs=list(o1), evidence=ev)

    # -- items -----------------------------------------------------------------------------
    def _item(self, ex: Executed, q: int, message: str, **kw: Any) -> Item:
        raise NotImplementedError

    def _query(self, proposal: Mapping[str, Any], n: int) -> int | None:
        q = proposal.get("query", 0)
        if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q < n:
            return None
        return q

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
            message = proposal.get("message", "") or ""
            if not isinstance(message, str):
                return ProposalResult.reject("parse", "message must be a string")
            if self.KIND == "induction":
                if not message.strip():
                    return ProposalResult.reject("parse", "induction needs a hint message")
                if "```" in message or "def " + FN_NAME in message:
                    return ProposalResult.reject("parse", "the hint must not contain code")
            ex = self.execute(proposal.get("code"), proposal.get("inputs"))
            if isinstance(ex, ProposalResult):
                return ex
            q = self._query(proposal, len(ex.inputs))
            if q is None:
                return ProposalResult.reject("parse", "query must index one of the inputs")
            if self.KIND == "induction" and len(set(ex.outputs)) < self.config.min_distinct_outputs:
                return ProposalResult.reject(
                    "output", f"degenerate: fewer than {self.config.min_distinct_outputs} distinct outputs",
                    **ex.evidence,
                )
            meta = teacher_metadata(parent)
            item = self._item(ex, q, message, metadata=meta, parent=parent, direction=direction,
                              teacher=teacher, prompt_version=prompt_version)
            return ProposalResult(item=item, evidence=ex.evidence)
        except Exception as e:  # noqa: BLE001 - a malformed proposal is a rejection, not a crash
            return ProposalResult.internal(e)

    # -- seeds -------------------------------------------------------------------------------
    def _seed_functions(self) -> list[dict[str, Any]]:
        return load_data(self.config.data_file)["functions"]

    def _seed_slots(self, funcs: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """(function index, query input index) of every possible seed item."""
        return [(fi, qi) for fi, fn in enumerate(funcs) for qi in range(len(fn["inputs"]))]

    def seeds(self, n: int, seed: int = 0) -> list[Item]:
        """Up to ``n`` distinct seed items (no more than the data file can make)."""
        funcs = self._seed_functions()
        slots = self._seed_slots(funcs)
        order = seeded_order(len(slots), seed)
        out = []
        for idx in range(min(n, len(slots))):
            fi, qi = slots[order[idx]]
            fn = funcs[fi]
            ex = self.execute(fn["code"], fn["inputs"])
            if isinstance(ex, ProposalResult):  # a broken sandbox or seed file: say so, go on
                log.warning("%s: seed %s skipped: %s", self.name, fn.get("name", fi), ex.reason)
                continue
            meta = {
                "source": f"teachloop:{os.path.basename(self.config.data_file)}",
                "seed_name": fn.get("name", str(fi)),
                "level": fn.get("level"),
                "difficulty": {"level": fn.get("level")},
            }
            out.append(self._item(ex, qi, fn.get("hint", ""), metadata=meta, parent=None,
                                  direction="seed", teacher=SEED_TEACHER, prompt_version=""))
        return out


class DeductionFamily(_CodeExecFamily):
    """code.deduction: given f and an input, predict the output (Sancaktar et al., METHODS.md §1)."""

    NAME = DEDUCTION
    KIND = "deduction"

    def render_prompt(self, code: str, args: str) -> str:
        return (
            "Here is a Python function `f`:\n\n"
            f"```python\n{code.rstrip()}\n```\n\n"
            f"What does `f({args})` return?\n\n"
            "Reason it through, then give the returned value as a Python literal (exactly as "
            "`repr()` would print it) in a final ```python code block that contains only the value."
        )

    def _item(self, ex: Executed, q: int, message: str, **kw: Any) -> Item:
        meta = dict(kw.pop("metadata"), query=q, n_inputs=len(ex.inputs))
        return self._new_item(
            prompt=self.render_prompt(ex.code, ex.inputs[q]),
            answer=ex.outputs[q],
            checker={"code": ex.code, "fn_name": FN_NAME, "input": ex.inputs[q],
                     "inputs": ex.inputs, "outputs": ex.outputs, "query": q},
            metadata=meta,
            validation=ex.evidence,
            **kw,
        )

    def _extract(self, completion: str) -> str | None:
        return final_answer_text(completion)

    def _score(self, item: Item, completion: str) -> float:
        ans = self._extract(completion)
        if ans is None or len(ans) > MAX_LITERAL_CHARS:
            return 0.0
        return 1.0 if any(outputs_match(item.answer, c) for c in _value_candidates(ans)) else 0.0

    def reference_completion(self, item: Item) -> str:
        return f"```python\n{item.answer}\n```"


class AbductionFamily(_CodeExecFamily):
    """code.abduction: given f and an output o, find an input i with f(i) == o, checked by
    running f on the student's input in the sandbox (Sancaktar et al., METHODS.md §1)."""

    NAME = ABDUCTION
    KIND = "abduction"

    def render_prompt(self, code: str, output: str) -> str:
        return (
            "Here is a Python function `f`:\n\n"
            f"```python\n{code.rstrip()}\n```\n\n"
            f"Find arguments for which `f` returns `{output}`.\n\n"
            "Reason it through, then give the call with literal arguments in a final ```python "
            "code block that contains only that call, in the form `f(<arguments>)`."
        )

    def _item(self, ex: Executed, q: int, message: str, **kw: Any) -> Item:
        meta = dict(kw.pop("metadata"), query=q, n_inputs=len(ex.inputs))
        return self._new_item(
            prompt=self.render_prompt(ex.code, ex.outputs[q]),
            answer=ex.inputs[q],
            checker={"code": ex.code, "fn_name": FN_NAME, "output": ex.outputs[q],
                     "inputs": ex.inputs, "outputs": ex.outputs, "query": q},
            metadata=meta,
            validation=ex.evidence,
            **kw,
        )

    def _extract(self, completion: str) -> str | None:
        ans = final_answer_text(completion)
        return None if ans is None else _args_from_answer(ans)

    def _score(self, item: Item, completion: str) -> float:
        args = self._extract(completion)
        if args is None or literal_args(args) is None:
            return 0.0
        code, target = item.checker.get("code"), item.checker.get("output")
        if not isinstance(code, str) or not isinstance(target, str):
            return 0.0
        run = self._run(code, [args])
        return 1.0 if run.ok and outputs_match(target, run.outputs[0]) else 0.0

    def reference_completion(self, item: Item) -> str:
        return f"```python\nf({item.answer})\n```"


class InductionFamily(_CodeExecFamily):
    """code.induction: given input/output pairs and a hint, write f̂; reward 1 iff f̂(i_k) == o_k
    for every k, executed in the sandbox (Sancaktar et al., METHODS.md §1)."""

    NAME = INDUCTION
    KIND = "induction"

    def _seed_slots(self, funcs: list[dict[str, Any]]) -> list[tuple[int, int]]:
        return [(fi, 0) for fi in range(len(funcs))]

    def render_prompt(self, inputs: list[str], outputs: list[str], message: str) -> str:
        pairs = "\n".join(f"f({i}) == {o}" for i, o in zip(inputs, outputs))
        hint = f"\n\nHint: {message.strip()}" if message and message.strip() else ""
        return (
            "A hidden Python function `f` gives these results:\n\n"
            f"```python\n{pairs}\n```{hint}\n\n"
            "Write `f`. Answer with the complete function definition (and any imports it needs) "
            "in a final ```python code block."
        )

    def _item(self, ex: Executed, q: int, message: str, **kw: Any) -> Item:
        meta = dict(kw.pop("metadata"), n_inputs=len(ex.inputs))
        return self._new_item(
            prompt=self.render_prompt(ex.inputs, ex.outputs, message),
            answer=ex.code,
            checker={"code": ex.code, "fn_name": FN_NAME, "inputs": ex.inputs, "outputs": ex.outputs,
                     "message": message},
            metadata=meta,
            validation=ex.evidence,
            **kw,
        )

    def _extract(self, completion: str) -> str | None:
        return last_code_block(completion)

    def _score(self, item: Item, completion: str) -> float:
        code = self._extract(completion)
        inputs, outputs = item.checker.get("inputs"), item.checker.get("outputs")
        if not code or not code.strip() or not inputs or not outputs or len(inputs) != len(outputs):
            return 0.0
        if any(literal_args(a) is None for a in inputs):
            return 0.0
        run = self._run(code, list(inputs), lenient=True)
        if not run.ok:
            return 0.0
        return 1.0 if all(outputs_match(o, g) for o, g in zip(outputs, run.outputs)) else 0.0

    def reference_completion(self, item: Item) -> str:
        return f"```python\n{item.checker['code'].rstrip()}\n```"


register(DeductionFamily())
register(AbductionFamily())
register(InductionFamily())
