"""``code.fuzzing``: the fourth code environment of Sancaktar et al. (arXiv 2603.24202;
METHODS.md §1): given ``f``, ``pre_test_f`` and ``test_f``, find an input ``i`` with
``pre_test_f(i)`` true and ``test_f(i)`` false (a valid input on which ``f`` fails its test).

Checked by execution in the sandbox (evals/families/harness.py ``run_calls``): a probe function
appended to the teacher's code calls ``pre_test_f`` and, on a valid input, ``test_f`` (each on
its own deep copy of the arguments) and returns ``(valid, passed)``; the student scores 1 iff
that is exactly ``(True, False)``. Both functions must return a real ``bool``; an exception in
``test_f`` is not a counterexample (it may be the sandbox's own limits: recursion, memory, time),
so crashing ``f`` earns nothing. The student only ever supplies literal arguments (checked with
``ast.literal_eval`` here before they travel), never code.

Teacher proposal format (``validate_proposal``)::

    {"code": "def f(...): ...\\ndef pre_test_f(...): ...\\ndef test_f(...): ...",
     "inputs": ["<args as inside f(...)>", ...], "message": "<optional note, never shown>"}

Validation (executed, never trusted): the code parses and defines all three functions;
``test_f`` calls ``f`` (a test that never looks at ``f`` is trivial); every input is a literal
argument list, pairwise different; the probe runs twice on every input with the same results
(deterministic), returning bools; at least one input is a **witness** (valid, test fails: the
problem has a known answer, the first witness is the item's gold answer) and at least one is
valid and **passes** (a test that fails on every valid input given is trivial). Inputs for
which ``pre_test_f`` is false are allowed (they show what is not valid).

Departures from the paper: its exact input/witness requirements are not stated; the witness +
passing-input rule above is teachloop's. Seeds: ``data/fuzz_seeds.json`` (13 small buggy
functions with a property test, offline; which input is a witness is obtained by execution).
"""

from __future__ import annotations

import ast
import hashlib
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
    final_answer_text,
    seeded_order,
)
from teachloop.evals.families.code_exec import _args_from_answer, _clean_value_text
from teachloop.evals.families.harness import (
    MAX_LITERAL_CHARS,
    _balanced_close,
    literal_args,
    normalize_args,
    run_calls,
)
from teachloop.evals.families.math_word import load_data

log = logging.getLogger(__name__)

NAME = "code.fuzzing"
DATA_FILE = "fuzz_seeds.json"
FUNCTIONS = ("f", "pre_test_f", "test_f")
PROBE = "_teachloop_fuzz_probe"
# appended after the teacher's code, so it is the definition the harness calls
_PROBE_SRC = f'''

def {PROBE}(*args):
    import copy as _copy
    valid = pre_test_f(*_copy.deepcopy(args))
    if type(valid) is not bool:
        raise TypeError("pre_test_f returned " + type(valid).__name__ + ", not bool")
    if not valid:
        return (False, None)
    passed = test_f(*_copy.deepcopy(args))
    if type(passed) is not bool:
        raise TypeError("test_f returned " + type(passed).__name__ + ", not bool")
    return (True, passed)
'''
WITNESS, PASS, INVALID = "(True, False)", "(True, True)", "(False, None)"
_KIND = {WITNESS: "witness", PASS: "pass", INVALID: "invalid"}


@dataclass
class CodeFuzzConfig(FamilyConfig):
    data_file: str = field(
        default=DATA_FILE,
        metadata={"help": "seed triples: a file name under evals/families/data/ or a path to a JSON file"},
    )
    timeout_s: float = field(default=5.0, metadata={"help": "sandbox wall-clock limit per run (all inputs)"})
    memory_mb: int = field(default=512, metadata={"help": "sandbox address-space limit per run (MiB)"})
    min_inputs: int = field(default=2, metadata={"help": "fewest inputs a proposal may give (a witness and a pass)"})
    max_inputs: int = field(default=10, metadata={"help": "most inputs a proposal may give"})
    max_code_chars: int = field(default=10_000, metadata={"help": "longest code (all three functions) accepted"})
    max_input_chars: int = field(default=2_000, metadata={"help": "longest input (argument list) accepted"})
    require_pass: bool = field(
        default=True,
        metadata={"help": "validation: some valid input must pass test_f (else the test is trivial)"},
    )

    def validate(self) -> None:
        for name in ("timeout_s", "memory_mb", "min_inputs", "max_inputs", "max_code_chars", "max_input_chars"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_inputs < self.min_inputs:
            raise ValueError("max_inputs must be >= min_inputs")


_cache = BoundedCache()  # key -> (kinds, evidence) of proposals whose runs succeeded


def _defined(tree: ast.Module) -> set[str]:
    """Names bound at top level by ``def`` or a plain assignment."""
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.add(node.name)
        elif isinstance(node, ast.Assign):
            out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return out


def _test_calls_f(tree: ast.Module) -> bool:
    """Whether the top-level ``def test_f`` reads the name ``f`` anywhere in its body."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "test_f":
            return any(isinstance(n, ast.Name) and n.id == "f" and isinstance(n.ctx, ast.Load)
                       for n in ast.walk(node))
    return False


_CALL = re.compile(r"\A(?:pre_test_f|test_f|f)\(")


def answer_args(ans: str) -> str | None:
    """The argument list of the student's input: inside ``f(...)`` / ``test_f(...)`` /
    ``pre_test_f(...)`` when the answer is such a call, else as code.abduction reads it."""
    s = _clean_value_text(ans)
    m = _CALL.match(s)
    if m and _balanced_close(s, m.end() - 1) == len(s) - 1:
        return s[m.end(): -1].strip()
    return _args_from_answer(s)


class FuzzingFamily(Family):
    """code.fuzzing: given f, pre_test_f and test_f, find i with pre_test_f(i) and not
    test_f(i), checked by execution in the sandbox (Sancaktar et al., METHODS.md §1)."""

    NAME = NAME
    CONFIG = CodeFuzzConfig

    def render_prompt(self, code: str) -> str:
        return (
            "Here is a Python function `f`, a precondition `pre_test_f` and a test `test_f`:\n\n"
            f"```python\n{code.rstrip()}\n```\n\n"
            "Find arguments on which `f` fails its test: `pre_test_f(<arguments>)` must return True "
            "and `test_f(<arguments>)` must return False.\n\n"
            "Reason it through, then give the call with literal arguments in a final ```python code "
            "block that contains only that call, in the form `f(<arguments>)`."
        )

    # -- execution -------------------------------------------------------------------------
    def _probe(self, code: str, inputs: list[str]):
        return run_calls(code + _PROBE_SRC, inputs, fn_name=PROBE, timeout_s=self.config.timeout_s,
                         memory_mb=self.config.memory_mb)

    def classify(self, code: Any, inputs: Any) -> tuple[str, list[str], list[str], dict[str, Any]] | ProposalResult:
        """(code, normalised inputs, kinds, evidence) after two agreeing sandbox runs, where each
        kind is ``witness`` / ``pass`` / ``invalid``; or a rejection."""
        cfg = self.config
        if not isinstance(code, str) or not code.strip():
            return ProposalResult.reject("parse", "code missing")
        if len(code) > cfg.max_code_chars:
            return ProposalResult.reject("parse", f"code longer than {cfg.max_code_chars} chars")
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            return ProposalResult.reject("parse", f"code does not parse: {type(e).__name__}: {e}"[:300])
        missing = [n for n in FUNCTIONS if n not in _defined(tree)]
        if missing:
            return ProposalResult.reject("parse", f"code defines no {', '.join(missing)}")
        if not _test_calls_f(tree):
            return ProposalResult.reject("trivial", "test_f never calls f: a test that does not look at f is trivial")
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

        key = hashlib.sha256(repr((cfg.timeout_s, cfg.memory_mb, code, norm)).encode()).hexdigest()
        hit = _cache.get(key)
        if hit is not None:
            return code, norm, hit[0], hit[1]
        runs = []
        for _ in range(2):
            r = self._probe(code, norm)
            runs.append(r)
            if not r.ok:
                ev = {"runs": [x.to_evidence() for x in runs]}
                if r.status == "timeout":
                    return ProposalResult.reject("execute", f"timeout after {cfg.timeout_s} s", **ev)
                return ProposalResult.reject("execute", f"the functions failed: {r.first_error()}"[:400], **ev)
        ev = {"runs": [x.to_evidence() for x in runs]}
        for k, (a, b) in enumerate(zip(runs[0].outputs, runs[1].outputs)):
            if a != b:
                return ProposalResult.reject("determinism", f"non-deterministic: input {k} gave {a} then {b}", **ev)
        kinds = [_KIND.get(o or "", "?") for o in runs[0].outputs]
        ev.update(kinds=kinds, checks=["parsed", "executed twice", "deterministic", "bool results"],
                  gold_source="executed pre_test_f and test_f (sandbox)")
        _cache.put(key, (kinds, ev))
        return code, norm, kinds, ev

    def _build(self, code: Any, inputs: Any, message: str, *, metadata: dict[str, Any], parent: Item | None,
               direction: str | None, teacher: str, prompt_version: str) -> ProposalResult:
        got = self.classify(code, inputs)
        if isinstance(got, ProposalResult):
            return got
        code, norm, kinds, ev = got
        if "witness" not in kinds:
            return ProposalResult.reject("witness", "no witness: no input is valid (pre_test_f) and fails test_f",
                                         **ev)
        if self.config.require_pass and "pass" not in kinds:
            return ProposalResult.reject("trivial", "trivial test: test_f fails on every valid input given", **ev)
        witnesses = [a for a, k in zip(norm, kinds) if k == "witness"]
        item = self._new_item(
            prompt=self.render_prompt(code),
            answer=witnesses[0],
            checker={"code": code, "inputs": norm, "kinds": kinds, "witnesses": witnesses, "message": message},
            metadata=dict(metadata, n_inputs=len(norm), n_witnesses=len(witnesses)),
            validation={**ev, "checks": [*ev["checks"], "a known witness", "a passing input"]},
            parent=parent, direction=direction, teacher=teacher, prompt_version=prompt_version,
        )
        return ProposalResult(item=item, evidence=ev)

    # -- the family interface ------------------------------------------------------------
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
            meta = teacher_metadata(parent)
            return self._build(proposal.get("code"), proposal.get("inputs"), message, metadata=meta,
                               parent=parent, direction=direction, teacher=teacher, prompt_version=prompt_version)
        except Exception as e:  # noqa: BLE001 - a malformed proposal is a rejection, not a crash
            return ProposalResult.internal(e)

    def seeds(self, n: int, seed: int = 0) -> list[Item]:
        """Up to ``n`` distinct seed items, one per triple of the data file."""
        funcs = load_data(self.config.data_file)["functions"]
        out: list[Item] = []
        for fi in seeded_order(len(funcs), seed):
            if len(out) >= n:
                break
            fn = funcs[fi]
            meta = {"source": f"teachloop:{os.path.basename(self.config.data_file)}",
                    "seed_name": fn.get("name", str(fi)), "level": fn.get("level"),
                    "difficulty": {"level": fn.get("level")}}
            res = self._build(fn["code"], fn["inputs"], fn.get("hint", ""), metadata=meta, parent=None,
                              direction="seed", teacher=SEED_TEACHER, prompt_version="")
            if res.ok:
                out.append(res.item)
            else:  # a broken sandbox or seed file: say so, go on
                log.warning("%s: seed %s skipped: %s", self.name, fn.get("name", fi), res.reason)
        return out

    def _extract(self, completion: str) -> str | None:
        ans = final_answer_text(completion)
        return None if ans is None else answer_args(ans)

    def _score(self, item: Item, completion: str) -> float:
        args = self._extract(completion)
        if args is None or len(args) > MAX_LITERAL_CHARS or literal_args(args) is None:
            return 0.0
        code = item.checker.get("code")
        if not isinstance(code, str):
            return 0.0
        run = self._probe(code, [args])
        return 1.0 if run.ok and run.outputs[0] == WITNESS else 0.0

    def reference_completion(self, item: Item) -> str:
        return f"```python\nf({item.answer})\n```"


register(FuzzingFamily())
