"""Configuration of the teacher loop (agents/graph.py), beside the component (STYLE.md §3).

``TeacherLoopConfig`` is everything the graph reads; the backends themselves are built by the
caller (teachloop/generate.py) and handed over in the runtime context. ``from_run_config``
maps the run-level tree of teachloop/config.py onto it; fields the run-level tree does not
have yet keep their defaults here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

TEACHER_KINDS = ("llm", "procedural", "auto")
IN_BAND_ACTIONS = ("stop", "harder", "easier")
FRONTIER_SOURCES = ("seeds", "pool")
PROTOCOLS = ("auto", "blockwise", "single", "structured")


def _f(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TeacherLoopConfig:
    """The multi-turn teacher loop (Sancaktar et al., METHODS.md §1)."""

    kind: str = _f("auto", "teacher kind: llm (prompts + chat backend), procedural (family knobs), "
                           "auto (procedural where the family supports variants, llm elsewhere)")
    max_turns: int = _f(2, "teacher turns per chain; each turn is exactly one proposal")
    harder_above: float = _f(0.65, "progression rule: ask for a harder variant when p > this")
    easier_at: float = _f(0.0, "progression rule: ask for an easier variant when p <= this (p = 0)")
    in_band: str = _f("stop", "what to do when easier_at < p <= harder_above: stop (target reached), "
                              "or keep rewriting harder / easier")
    force_direction: str = _f("", "ask for this direction every turn ('easier'/'harder'; studies and "
                                  "benchmarks); empty = the progression rule")
    keep_min_p: float = _f(0.01, "keep a probed variant when keep_min_p <= p <= keep_max_p (paper: 0.01)")
    keep_max_p: float = _f(0.97, "upper bound of the keep band (paper: 0.97)")
    attempts: int = _f(8, "student attempts per probed item (M; the paper uses 32, M = 8 is noisy)")
    families: list[str] = _f([], "families whose items start chains; empty = every family in the pool")
    frontier: str = _f("seeds", "chain heads: 'seeds' (direction=seed items) or 'pool' (every item)")
    head_ids: list[str] = _f([], "explicit chain heads by item id (online teacher rounds); "
                                 "non-empty overrides frontier")
    max_frontier: int = _f(0, "most chain heads taken from the pool (oldest first); 0 = all")
    chains_per_item: int = _f(1, "independent chains started from each head (the single-turn "
                                 "baseline uses max_turns=1 and chains_per_item=T)")
    stepping_stones: bool = _f(False, "build chains top-down (hard -> medium -> easy): always ask "
                                      "for easier variants, start only from hard heads")
    stones_max_start_p: float = _f(0.16, "stepping stones: a head starts a chain only when p <= this")
    stones_stop_at: float = _f(0.81, "stepping stones: stop a chain once its newest variant has p >= this")
    near_dup_threshold: float = _f(0.85, "near-duplicate: word-shingle Jaccard >= this with the same "
                                         "family and gold answer (1.0: only identical shingle sets)")
    shingle_size: int = _f(3, "words per shingle for near-duplicate detection")
    prompts_dir: str = _f("", "directory overriding packaged prompt templates (same layout as "
                              "prompts/: <group>/<kind>.md); empty = the packaged ones")
    prefill: bool = _f(True, "start the teacher's answer with its format's first tag (the "
                             "template's 'prefill'; transformers and vLLM continue the message): "
                             "small teachers then keep to the format far more often")
    blockwise: bool = _f(True, "guided decoding by blocks: write each opening tag for the teacher "
                               "and stop it at the closing tag, one call per block, so the format "
                               "always holds and only the contents are the teacher's (a 135M "
                               "teacher keeps no format otherwise); costs one call per block, "
                               "turn off for a strong teacher")
    summary_examples: int = _f(2, "solved and failed attempts (each) shown to the teacher")
    summary_chars: int = _f(400, "each attempt shown to the teacher is cut to this many characters")
    teacher_temperature: float = _f(0.7, "teacher sampling temperature")
    teacher_max_tokens: int = _f(768, "teacher max new tokens per proposal")
    student_temperature: float = _f(1.0, "student sampling temperature when probing")
    student_max_tokens: int = _f(256, "student max new tokens per attempt")
    seed: int = _f(0, "seed of the procedural teacher's random choices (one RNG per proposal slot)")
    batch_window_s: float = _f(0.05, "local backends: wait this long to coalesce concurrent "
                                     "requests from parallel chains into one batched call")
    # --- issue 14 fields ---
    target_min_p: float = _f(0.35, "medium band (Sancaktar et al.: 0.35 <= p <= 0.65): after turn 1 a "
                                   "chain whose newest measured variant lies in it stops (in_band); "
                                   "below it the teacher is asked for easier variants")
    target_max_p: float = _f(0.65, "upper end of the medium band; above it the teacher is asked for "
                                   "harder variants")
    max_rejections_in_row: int = _f(3, "a chain ends after this many rejected proposals in a row "
                                       "(parse, execution, duplicates, failed requests); 0 = never")
    context_tokens: int = _f(8000, "budget of the teacher's conversation in tokens (estimated as "
                                   "characters / 4): the oldest middle turns are dropped first and "
                                   "the prompt says so; 0 = unbounded")
    protocol: str = _f("auto", "how the teacher is asked: blockwise (the loop writes each tag, the "
                               "model continues the message), single (one call, first tag "
                               "prefilled when prefill), structured (a JSON object through the "
                               "server's structured-output support, response_format with the "
                               "proposal's JSON schema: no stop strings, no prefill), auto "
                               "(blockwise for local models and servers that can continue a "
                               "message, i.e. with a local tokenizer; single otherwise)")
    teacher_reasoning: bool = _f(False, "the teacher endpoint is a reasoning model: send "
                                        "max_completion_tokens and no temperature/top_p")
    student_reasoning: bool = _f(False, "the same for the student endpoint")
    teacher_extra_body: dict = _f({}, "extra JSON fields of every teacher request (server-specific, "
                                      "e.g. {reasoning_effort: low} or vLLM's {top_k: 20})")
    student_extra_body: dict = _f({}, "extra JSON fields of every student request")
    score_workers: int = _f(8, "threads scoring student attempts off the event loop (sandboxed "
                               "checks of one chain overlap other chains' requests); 0 = score "
                               "in the event loop")

    def __post_init__(self) -> None:
        if self.kind not in TEACHER_KINDS:
            raise ValueError(f"kind must be one of {TEACHER_KINDS}, got {self.kind!r}")
        if self.in_band not in IN_BAND_ACTIONS:
            raise ValueError(f"in_band must be one of {IN_BAND_ACTIONS}, got {self.in_band!r}")
        if self.force_direction not in ("", "easier", "harder"):
            raise ValueError(f"force_direction must be '', 'easier' or 'harder', got {self.force_direction!r}")
        if self.frontier not in FRONTIER_SOURCES:
            raise ValueError(f"frontier must be one of {FRONTIER_SOURCES}, got {self.frontier!r}")
        if self.max_turns < 0:
            raise ValueError("max_turns must be >= 0")
        if self.attempts < 1:
            raise ValueError("attempts (M) must be >= 1")
        if self.chains_per_item < 1:
            raise ValueError("chains_per_item must be >= 1")
        if self.max_frontier < 0:
            raise ValueError("max_frontier must be >= 0 (0 = all)")
        if not 0.0 <= self.keep_min_p <= self.keep_max_p <= 1.0:
            raise ValueError("need 0 <= keep_min_p <= keep_max_p <= 1")
        if not self.easier_at < self.harder_above:
            raise ValueError("easier_at must be below harder_above")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise ValueError("near_dup_threshold must be in (0, 1]")
        if self.shingle_size < 1 or self.summary_examples < 0 or self.summary_chars < 20:
            raise ValueError("need shingle_size >= 1, summary_examples >= 0, summary_chars >= 20")
        if self.teacher_max_tokens < 1 or self.student_max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if self.batch_window_s < 0:
            raise ValueError("batch_window_s must be >= 0")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if not 0.0 <= self.target_min_p <= self.target_max_p <= 1.0:
            raise ValueError("need 0 <= target_min_p <= target_max_p <= 1")
        if self.max_rejections_in_row < 0 or self.context_tokens < 0 or self.score_workers < 0:
            raise ValueError("max_rejections_in_row, context_tokens and score_workers must be >= 0")

    def replace(self, **changes: Any) -> TeacherLoopConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fields the run-level ``teacher`` section (teachloop/config.py) may carry under the same name.
_SAME_NAME = [f.name for f in dataclasses.fields(TeacherLoopConfig)]


def from_run_config(cfg: Any) -> TeacherLoopConfig:
    """Map a run-level config (``TeachloopConfig`` or an extension of it) to the loop config.

    ``teacher.*`` fields with the same name are copied (kind, max_turns, harder_above,
    easier_at, keep_min_p, keep_max_p, and any loop field the run-level tree adds);
    ``probe.attempts`` is M; ``seeds.families`` are the chain families; ``run.seed`` seeds the
    procedural teacher; the student's and the teacher model's temperature and max_tokens are
    the sampling settings.
    """
    t = cfg.teacher
    kw: dict[str, Any] = {name: getattr(t, name) for name in _SAME_NAME if hasattr(t, name)}
    kw.setdefault("attempts", cfg.probe.attempts)
    kw.setdefault("families", list(cfg.seeds.families))
    kw.setdefault("seed", cfg.run.seed)
    kw.setdefault("teacher_temperature", t.model.temperature)
    kw.setdefault("teacher_max_tokens", t.model.max_tokens)
    kw.setdefault("student_temperature", cfg.student.temperature)
    kw.setdefault("student_max_tokens", cfg.student.max_tokens)
    return TeacherLoopConfig(**kw)
