"""The teacher role: prompt templates, the strict output format, and its parser.

Sancaktar et al. (arXiv 2603.24202; METHODS.md §1): the teacher is never fine-tuned; it
writes a problem from a seed and the environment rules (turn 1), then rewrites its newest
problem easier or harder from the student's performance summary (later turns). Its output
for code environments is a function ``f``, five diverse inputs each in its own block and a
hint without code; teachloop adds the math version (problem, a program computing the answer,
the stated answer) and HumanEval-style problems (prompt, solution, tests, entry point).

Format (one tag block per field; text outside the blocks is ignored)::

    math (math.word; math.rg.* seeds are rewritten as math.word):
        <problem>...</problem> <program>...</program> <answer>...</answer>
    code.deduction / code.abduction / code.induction:
        <code>def f(...): ...</code> <input>...</input> x 1..10 <message>...</message>
        [<query>k</query>: which input the item asks about, default 0]
    code.generation:
        <prompt>...</prompt> <solution>...</solution> <tests>...</tests> <entry_point>...</entry_point>
    code.fuzzing:
        <code>def f / def pre_test_f / def test_f</code> <input>...</input> x 2..10 (a witness first)

Parsing is strict: each singular block exactly once, closed, non-empty, within a size cap,
free of control characters; code must parse and define the right function. A block may wrap
its content in one Markdown code fence. ``parse_proposal`` never raises: every failure is a
``ParseRejection`` with a one-line reason. Execution, determinism and answer agreement are
the family's ``validate_proposal`` (evals/families), not the parser's.

Templates are files under ``prompts/<group>/<kind>.md`` (kind: first / easier / harder) with
a small front matter (``version``, ``system``) and ``{{placeholder}}`` slots; the version
recorded on every item is ``<group>/<kind>@<version>#<hash of the template text with its
rules and format snippets>``, so an edit that forgets to bump the version still shows.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from teachloop.curriculum.items import Item

# ----------------------------------------------------------------------------- families

MATH_FAMILIES = ("math.word",)
CODE_EXEC_FAMILIES = ("code.deduction", "code.abduction", "code.induction")
CODE_GEN_FAMILIES = ("code.generation",)
CODE_FUZZ_FAMILIES = ("code.fuzzing",)
TURN_KINDS = ("first", "easier", "harder")
PROCEDURAL_VERSION = "procedural@1"

MAX_TEXT_CHARS = 100_000  # longer teacher outputs are rejected without parsing
MAX_INPUTS = 10
_FIELD_CAPS = {"problem": 4000, "program": 8000, "answer": 200, "code": 10_000, "input": 2000,
               "message": 1000, "query": 10, "prompt": 20_000, "solution": 20_000, "tests": 20_000,
               "entry_point": 100}


def group_of(family: str) -> str | None:
    """The prompt/format group of a family: math, code_exec, code_gen, code_fuzz (None: no llm
    format)."""
    if family in MATH_FAMILIES or family.startswith("math.rg."):
        return "math"
    if family in CODE_EXEC_FAMILIES:
        return "code_exec"
    if family in CODE_GEN_FAMILIES:
        return "code_gen"
    if family in CODE_FUZZ_FAMILIES:
        return "code_fuzz"
    return None


class FormatBlock(NamedTuple):
    """One block of a teacher output format, for guided decoding by blocks
    (TeacherLoopConfig.blockwise): the loop writes ``opening`` itself and stops the teacher at
    ``closing``, at any other tag of the format, at ``stops`` or after ``max_tokens``."""

    opening: str
    closing: str
    max_tokens: int
    stops: tuple[str, ...] = ()
    one_line: bool = False  # keep the first non-empty line (answer, input, entry point)


# The blocks of each group's format, in order: the output then always has the format and
# only the contents are sampled. code_exec asks for five inputs, as its template does.
FORMAT_BLOCKS: dict[str, tuple[FormatBlock, ...]] = {
    "math": (FormatBlock("<problem>\n", "</problem>", 160),  # no "\n\n" stop: problems have paragraphs
             FormatBlock("\n<program>\n", "</program>", 160),
             FormatBlock("\n<answer>\n", "</answer>", 24, one_line=True)),
    "code_exec": (FormatBlock("<code>\n", "</code>", 256),
                  *(FormatBlock("\n<input>", "</input>", 48, one_line=True),) * 5,
                  FormatBlock("\n<message>\n", "</message>", 64, ("\n\n",))),
    "code_gen": (FormatBlock("<prompt>\n", "</prompt>", 200),
                 FormatBlock("\n<solution>\n", "</solution>", 320),
                 FormatBlock("\n<tests>\n", "</tests>", 320),
                 FormatBlock("\n<entry_point>", "</entry_point>", 12, one_line=True)),
    "code_fuzz": (FormatBlock("<code>\n", "</code>", 384),
                  *(FormatBlock("\n<input>", "</input>", 48, one_line=True),) * 3),
}


def format_blocks(family: str) -> tuple[FormatBlock, ...]:
    """The blocks of ``family``'s teacher output format (empty when it has no llm format)."""
    return FORMAT_BLOCKS.get(group_of(target_family(family)) or "", ())


def target_family(family: str) -> str:
    """The family an llm proposal for a ``family`` item is validated as (math.rg.* -> math.word:
    reasoning-gym generators take no text proposals; a rewrite is a word problem with a
    program)."""
    return "math.word" if family.startswith("math.rg.") else family


def teacher_kind_for(family: str, kind: str, supports_variants: bool) -> str:
    """The teacher kind used for items of ``family`` (``auto``: procedural where possible)."""
    if kind == "auto":
        return "procedural" if supports_variants else "llm"
    return kind


# ----------------------------------------------------------------------------- results


class ParseRejection(BaseModel):
    """A teacher output that does not follow the format; ``reason`` says why (one line)."""

    model_config = ConfigDict(frozen=True)
    stage: Literal["parse"] = "parse"
    reason: str = Field(description="why the output was rejected, one line")

    @property
    def ok(self) -> bool:
        return False


class _Proposal(BaseModel):
    model_config = ConfigDict(frozen=True)

    @property
    def ok(self) -> bool:
        return True

    def to_family_dict(self) -> dict[str, Any]:
        """The proposal in the format the family's ``validate_proposal`` reads."""
        return self.model_dump()


class MathProposal(_Proposal):
    """math.word: the teacher states the answer and a program computes it (METHODS.md §1)."""

    problem: str = Field(description="the problem statement the student sees")
    program: str = Field(description="Python that prints only the answer")
    answer: str = Field(description="the teacher's stated answer, checked against the program")


class CodeExecProposal(_Proposal):
    """code.deduction / abduction / induction: f, its inputs, a hint (Sancaktar et al.)."""

    code: str = Field(description="Python source defining f")
    inputs: list[str] = Field(description="argument lists of calls of f, Python literals")
    message: str = Field(default="", description="natural-language hint, no code")
    query: int = Field(default=0, description="index of the input the item asks about")


class CodeGenProposal(_Proposal):
    """code.generation: a HumanEval-style problem with a reference solution and tests."""

    prompt: str = Field(description="signature + docstring the student completes")
    solution: str = Field(description="complete reference function")
    tests: str = Field(description="def check(candidate): ... assertions")
    entry_point: str = Field(description="the function's name")


class CodeFuzzProposal(_Proposal):
    """code.fuzzing: f, pre_test_f and test_f, and inputs of which the first fails the test."""

    code: str = Field(description="Python source defining f, pre_test_f and test_f")
    inputs: list[str] = Field(description="argument lists, Python literals; a witness first, then passing inputs")


Proposal = MathProposal | CodeExecProposal | CodeGenProposal | CodeFuzzProposal
PROPOSAL_MODELS: dict[str, type[_Proposal]] = {"math": MathProposal, "code_exec": CodeExecProposal,
                                               "code_gen": CodeGenProposal, "code_fuzz": CodeFuzzProposal}


def proposal_schema(family: str) -> dict[str, Any]:
    """The ``response_format`` of the structured protocol (TeacherLoopConfig.protocol): a JSON
    schema built from the group's pydantic proposal model (OpenAI-compatible servers: vLLM
    guided decoding, llama.cpp grammars, OpenAI structured outputs)."""
    model = PROPOSAL_MODELS[group_of(target_family(family)) or ""]
    schema = model.model_json_schema()
    schema["additionalProperties"] = False
    return {"type": "json_schema", "json_schema": {"name": f"{model.__name__}", "schema": schema}}


def structured_to_tags(family: str, text: str) -> str | ParseRejection:
    """A structured (JSON) teacher output rewritten in the tag format, so that the one strict
    parser (``parse_proposal``) checks it; a rejection when it is not the schema's object."""
    import json

    try:
        obj = json.loads(text)
    except (TypeError, ValueError) as e:
        return ParseRejection(reason=f"structured output is not JSON: {type(e).__name__}")
    if not isinstance(obj, dict):
        return ParseRejection(reason="structured output is not a JSON object")
    group = group_of(target_family(family))
    try:
        p = PROPOSAL_MODELS[group or ""].model_validate(obj)
    except Exception as e:  # noqa: BLE001 - pydantic's ValidationError, one line
        return ParseRejection(reason=f"structured output does not fit the schema: {str(e).splitlines()[0]}"[:300])
    d = p.model_dump()
    if group == "code_fuzz":
        return "\n".join([f"<code>\n{d['code']}\n</code>", *(f"<input>{i}</input>" for i in d["inputs"])])
    if group == "code_exec":
        parts = [f"<code>\n{d['code']}\n</code>", *(f"<input>{i}</input>" for i in d["inputs"])]
        if d["message"]:
            parts.append(f"<message>\n{d['message']}\n</message>")
        if d["query"]:
            parts.append(f"<query>{d['query']}</query>")
        return "\n".join(parts)
    return "\n".join(f"<{k}>\n{v}\n</{k}>" for k, v in d.items())


# ----------------------------------------------------------------------------- parsing

_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FENCE_OPEN = re.compile(r"\A[ \t]*(`{3,}|~{3,})[^\n]*\n")


def _strip_fence(s: str) -> str:
    """Content without one surrounding Markdown code fence (```python ... ```)."""
    s = s.strip("\n")
    m = _FENCE_OPEN.match(s)
    if not m:
        return s.strip()
    fence = m.group(1)
    body = s[m.end():]
    tail = body.rstrip()
    if tail.endswith(fence[0] * len(fence)):
        body = tail[: -len(fence)]
    return body.strip("\n").rstrip()


class _Blocks:
    """Tag blocks of a text, found with plain string search (no backtracking regex)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.low = text.lower()

    def all(self, tag: str) -> list[str] | str:
        """The contents of every ``<tag>...</tag>``, or a reason string when malformed."""
        open_t, close_t = f"<{tag}>", f"</{tag}>"
        out: list[str] = []
        pos = 0
        while True:
            i = self.low.find(open_t, pos)
            if i < 0:
                break
            j = self.low.find(close_t, i + len(open_t))
            if j < 0:
                return f"<{tag}> block not closed (output truncated?)"
            nxt = self.low.find(open_t, i + len(open_t))
            if 0 <= nxt < j:
                return f"nested or unclosed <{tag}> blocks"
            out.append(self.text[i + len(open_t):j])
            pos = j + len(close_t)
        if self.low.find(close_t, pos) >= 0 and not out:
            return f"</{tag}> without an opening <{tag}>"
        return out

    def one(self, tag: str, *, required: bool = True) -> str | None | ParseRejection:
        got = self.all(tag)
        if isinstance(got, str):
            return ParseRejection(reason=got)
        if not got:
            return ParseRejection(reason=f"missing <{tag}> block") if required else None
        if len(got) > 1:
            return ParseRejection(reason=f"{len(got)} <{tag}> blocks; exactly one expected")
        return _clean_field(tag, got[0])


def _clean_field(tag: str, raw: str) -> str | ParseRejection:
    s = _strip_fence(raw)
    if not s.strip():
        return ParseRejection(reason=f"empty <{tag}> block")
    cap = _FIELD_CAPS.get(tag, 10_000)
    if len(s) > cap:
        return ParseRejection(reason=f"<{tag}> longer than {cap} characters ({len(s)})")
    if _CTRL.search(s):
        return ParseRejection(reason=f"control characters in <{tag}>")
    return s


def _top_level_functions(code: str) -> list[str]:
    tree = ast.parse(code)
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _check_python(tag: str, code: str) -> ParseRejection | None:
    try:
        ast.parse(code)
    except SyntaxError as e:
        return ParseRejection(reason=f"<{tag}> is not valid Python: {e.msg} (line {e.lineno})")
    except (ValueError, RecursionError, MemoryError) as e:
        return ParseRejection(reason=f"<{tag}> is not valid Python: {type(e).__name__}")
    return None


def _parse_math(b: _Blocks) -> Proposal | ParseRejection:
    fields = {}
    for tag in ("problem", "program", "answer"):
        v = b.one(tag)
        if isinstance(v, ParseRejection):
            return v
        fields[tag] = v
    bad = _check_python("program", fields["program"])
    if bad:
        return bad
    if "print" not in fields["program"]:
        return ParseRejection(reason="<program> never prints the answer")
    ans = fields["answer"]
    m = re.fullmatch(r"\\boxed\{(.*)\}", ans.strip(), re.S)
    if m:
        fields["answer"] = m.group(1).strip()
    if "\n" in fields["answer"].strip():
        return ParseRejection(reason="<answer> must be one line")
    return MathProposal(**fields)


def _python_block(b: _Blocks, tag: str) -> str | ParseRejection:
    """The required block ``tag``, which must parse as Python."""
    code = b.one(tag)
    if isinstance(code, ParseRejection):
        return code
    return _check_python(tag, code) or code


def _parse_code_exec(b: _Blocks) -> Proposal | ParseRejection:
    code = _python_block(b, "code")
    if isinstance(code, ParseRejection):
        return code
    names = _top_level_functions(code)
    if "f" not in names:
        if names:
            return ParseRejection(reason=f"wrong function name: <code> defines {', '.join(names[:3])}, not f")
        return ParseRejection(reason="<code> defines no function f")
    inputs = _parse_inputs(b)
    if isinstance(inputs, ParseRejection):
        return inputs
    message = b.one("message", required=False)
    if isinstance(message, ParseRejection):
        return message
    message = message or ""
    if "```" in message or "def f" in message:
        return ParseRejection(reason="the <message> hint must not contain code")
    query = b.one("query", required=False)
    if isinstance(query, ParseRejection):
        return query
    q = 0
    if query is not None:
        if not query.strip().isdigit() or not 0 <= int(query) < len(inputs):
            return ParseRejection(reason="<query> must be the index of one of the inputs")
        q = int(query)
    return CodeExecProposal(code=code, inputs=inputs, message=message, query=q)


def _parse_code_fuzz(b: _Blocks) -> Proposal | ParseRejection:
    code = _python_block(b, "code")
    if isinstance(code, ParseRejection):
        return code
    missing = [n for n in ("f", "pre_test_f", "test_f") if n not in _top_level_functions(code)]
    if missing:
        return ParseRejection(reason=f"<code> defines no function {', '.join(missing)}")
    inputs = _parse_inputs(b)
    return inputs if isinstance(inputs, ParseRejection) else CodeFuzzProposal(code=code, inputs=inputs)


def _parse_inputs(b: _Blocks) -> list[str] | ParseRejection:
    """The <input> blocks: literal argument lists (an ``f(...)`` wrapper removed), distinct."""
    from teachloop.evals.families.harness import literal_args, normalize_args

    raw_inputs = b.all("input")
    if isinstance(raw_inputs, str):
        return ParseRejection(reason=raw_inputs)
    if not raw_inputs:
        return ParseRejection(reason="missing <input> blocks")
    if len(raw_inputs) > MAX_INPUTS:
        return ParseRejection(reason=f"{len(raw_inputs)} <input> blocks; at most {MAX_INPUTS}")
    inputs = []
    for k, raw in enumerate(raw_inputs):
        v = _clean_field("input", raw)
        if isinstance(v, ParseRejection):
            return ParseRejection(reason=f"input {k}: {v.reason}")
        a = normalize_args(v)
        if literal_args(a) is None:
            return ParseRejection(reason=f"input {k} is not a list of Python literal arguments")
        inputs.append(a)
    if len(set(inputs)) != len(inputs):
        return ParseRejection(reason="duplicate inputs")
    return inputs


def _parse_code_gen(b: _Blocks) -> Proposal | ParseRejection:
    fields = {}
    for tag in ("prompt", "solution", "tests", "entry_point"):
        v = b.one(tag)
        if isinstance(v, ParseRejection):
            return v
        fields[tag] = v
    ep = fields["entry_point"].strip().strip("`")
    if not ep.isidentifier():
        return ParseRejection(reason="<entry_point> must be a function name")
    fields["entry_point"] = ep
    for tag in ("solution", "tests"):
        bad = _check_python(tag, fields[tag])
        if bad:
            return bad
    if ep not in _top_level_functions(fields["solution"]):
        return ParseRejection(reason=f"wrong function name: <solution> does not define {ep}")
    if "check" not in _top_level_functions(fields["tests"]):
        return ParseRejection(reason="<tests> must define check(candidate)")
    return CodeGenProposal(**fields)


_PARSERS = {"math": _parse_math, "code_exec": _parse_code_exec, "code_gen": _parse_code_gen,
            "code_fuzz": _parse_code_fuzz}


def parse_proposal(family: str, text: Any) -> Proposal | ParseRejection:
    """Parse a teacher output for ``family``: a proposal model, or a rejection with a reason.

    Never raises, whatever ``text`` is (truncated, binary, huge, hostile).
    """
    try:
        group = group_of(family) if isinstance(family, str) else None
        if group is None:
            return ParseRejection(reason=f"no teacher output format for family {family!r}")
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "replace")
        if not isinstance(text, str):
            return ParseRejection(reason=f"teacher output is not text ({type(text).__name__})")
        if len(text) > MAX_TEXT_CHARS:
            return ParseRejection(reason=f"teacher output too long ({len(text)} > {MAX_TEXT_CHARS} characters)")
        if not text.strip():
            return ParseRejection(reason="empty teacher output")
        if "\x00" in text or len(_CTRL.findall(text)) > max(8, len(text) // 20):
            return ParseRejection(reason="teacher output is binary junk (control characters)")
        return _PARSERS[group](_Blocks(text))
    except Exception as e:  # noqa: BLE001 - the contract: a reason, never an exception
        return ParseRejection(reason=f"parser error: {type(e).__name__}")


# ----------------------------------------------------------------------------- rendering


def render_item(item: Item, *, max_chars: int = 6000) -> str:
    """An item in its group's proposal format (what the teacher sees as the current problem)."""
    group = group_of(item.family)
    ck = item.checker or {}

    def cap(s: Any) -> str:
        s = str(s or "").strip()
        return s if len(s) <= max_chars else s[:max_chars] + "\n[...cut...]"

    if group == "math":
        if item.family == "math.word":
            problem, program = ck.get("problem", item.prompt), ck.get("program", "")
        else:  # reasoning-gym: the question; there is no program
            problem, program = ck.get("question", item.prompt), ""
        parts = [f"<problem>\n{cap(problem)}\n</problem>"]
        if program:
            parts.append(f"<program>\n{cap(program)}\n</program>")
        parts.append(f"<answer>\n{cap(item.answer)}\n</answer>")
        return "\n".join(parts)
    if group == "code_exec":
        parts = [f"<code>\n{cap(ck.get('code', ''))}\n</code>"]
        for inp in (ck.get("inputs") or [])[:MAX_INPUTS]:
            parts.append(f"<input>{cap(inp)}</input>")
        if item.family in ("code.deduction", "code.abduction") and "query" in ck:
            parts.append(f"<query>{ck['query']}</query>")  # the input the student was asked about
        msg = ck.get("message") or item.metadata.get("hint") or ""
        if msg:
            parts.append(f"<message>\n{cap(msg)}\n</message>")
        return "\n".join(parts)
    if group == "code_fuzz":
        ins = (ck.get("inputs") or [])[:MAX_INPUTS]
        return "\n".join([f"<code>\n{cap(ck.get('code', ''))}\n</code>", *(f"<input>{cap(i)}</input>" for i in ins)])
    if group == "code_gen":
        return "\n".join([
            f"<prompt>\n{cap(ck.get('prompt', ''))}\n</prompt>",
            f"<solution>\n{cap(item.answer)}\n</solution>",
            f"<tests>\n{cap(ck.get('tests', ''))}\n</tests>",
            f"<entry_point>{ck.get('entry_point', '')}</entry_point>",
        ])
    return cap(item.prompt)


# ----------------------------------------------------------------------------- templates

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
FILL_SLOTS = ("current", "summary", "direction", "outcome", "rule", "target")  # filled per proposal
STATIC_SLOTS = ("rules", "format")  # filled when the template is loaded


class PromptError(ValueError):
    """A prompt template that cannot be used (missing file, bad front matter, unknown slot)."""


@dataclass(frozen=True)
class PromptTemplate:
    name: str  # <group>/<kind>
    version: str  # the recorded prompt version: name@version#hash
    system: str
    body: str  # with rules and format filled in; {{current}} {{summary}} {{direction}} left
    prefill: str = ""  # the start of the teacher's answer (front matter ``prefill``), e.g. "<problem>"

    def render(self, **values: str) -> list[dict[str, str]]:
        missing = [s for s in FILL_SLOTS if s in self.slots and s not in values]
        if missing:
            raise PromptError(f"{self.name}: no value for {missing}")
        # one pass: text inserted for one slot is never scanned for another
        user = _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), self.body)
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        msgs.append({"role": "user", "content": user})
        return msgs

    @property
    def slots(self) -> set[str]:
        return set(_PLACEHOLDER.findall(self.body))


def _front_matter(text: str, where: str) -> tuple[dict[str, str], str]:
    if not text.startswith("---\n"):
        raise PromptError(f"{where}: missing front matter (--- version: ... ---)")
    end = text.find("\n---\n", 4)
    if end < 0:
        raise PromptError(f"{where}: front matter not closed")
    meta = {}
    for line in text[4:end].splitlines():
        if not line.strip():
            continue
        k, sep, v = line.partition(":")
        if not sep:
            raise PromptError(f"{where}: bad front matter line {line!r}")
        meta[k.strip()] = v.strip()
    if not meta.get("version"):
        raise PromptError(f"{where}: front matter has no version")
    return meta, text[end + 5:]


class PromptLibrary:
    """Loads and caches templates: ``override_dir`` first (same layout), then ``prompts/``."""

    def __init__(self, override_dir: str | Path | None = None) -> None:
        self.override = Path(override_dir) if override_dir else None
        self._cache: dict[tuple[str, str], PromptTemplate] = {}

    def _read(self, rel: str) -> str:
        if self.override is not None and (self.override / rel).is_file():
            return (self.override / rel).read_text(encoding="utf-8")
        res = importlib.resources.files("teachloop.prompts").joinpath(*rel.split("/"))
        if not res.is_file():
            raise PromptError(f"no prompt template prompts/{rel}")
        return res.read_text(encoding="utf-8")

    def _rules(self, family: str) -> str:
        group = group_of(family)
        if group == "math":
            return self._read("rules/math.md").strip()
        if group == "code_exec":
            return (self._read(f"rules/{family}.md").strip() + "\n\n"
                    + self._read("rules/code_common.md").strip())
        return self._read(f"rules/{family}.md").strip()

    def template(self, family: str, kind: str) -> PromptTemplate:
        """The template for proposals validated as ``family`` (a target family) at ``kind``."""
        if kind not in TURN_KINDS:
            raise PromptError(f"turn kind must be one of {TURN_KINDS}, got {kind!r}")
        group = group_of(family)
        if group is None:
            raise PromptError(f"no prompt templates for family {family!r}")
        key = (target_family(family), kind)
        if key in self._cache:
            return self._cache[key]
        rel = f"{group}/{kind}.md"
        meta, body = _front_matter(self._read(rel), rel)
        unknown = set(_PLACEHOLDER.findall(body)) - set(FILL_SLOTS) - set(STATIC_SLOTS)
        if unknown:
            raise PromptError(f"{rel}: unknown placeholders {sorted(unknown)}")
        static = {"rules": self._rules(key[0]), "format": self._read(f"{group}/format.md").strip()}
        body = _PLACEHOLDER.sub(lambda m: static.get(m.group(1), m.group(0)), body).strip() + "\n"
        prefill = meta.get("prefill", "")
        digest = hashlib.sha256((meta.get("system", "") + "\x00" + body + "\x00" + prefill
                                 ).encode()).hexdigest()[:8]
        tpl = PromptTemplate(name=f"{group}/{kind}", version=f"{group}/{kind}@{meta['version']}#{digest}",
                             system=meta.get("system", ""), body=body, prefill=prefill)
        self._cache[key] = tpl
        return tpl

    def render(self, item: Item, kind: str, *, summary: str, direction: str
               ) -> tuple[list[dict[str, str]], str]:
        """(chat messages, prompt version) asking for a ``direction`` rewrite of ``item``."""
        tpl = self.template(target_family(item.family), kind)
        return tpl.render(current=render_item(item), summary=summary, direction=direction), tpl.version

    def follow_up(self, family: str, direction: str, *, outcome: str, rule: str, target: str
                  ) -> tuple[str, str]:
        """(user message, prompt version) of a later turn of a chain's conversation
        (agents/conversation.py): the newest outcome, the progression rule, the request to
        rewrite ``target`` ``direction``."""
        tpl = self.template(target_family(family), direction)
        msgs = tpl.render(outcome=outcome, rule=rule, target=target, direction=direction,
                          current="", summary="")
        return msgs[-1]["content"].strip(), tpl.version

    def prefill(self, item: Item, kind: str) -> str:
        """The template's answer prefix (assistant prefill), "" when it has none."""
        return self.template(target_family(item.family), kind).prefill
