"""Run configuration: one typed tree (pydantic), YAML presets, a YAML file and ``--set`` overrides.

Layering (later wins): field defaults < preset (``configs/<name>.yaml``; ``teachloop run``
and ``teachloop config`` both start from ``DEFAULT_PRESET``) < ``--config`` file < ``--set``
overrides. The tree (``TeachloopConfig``) is validated as a whole: an unknown key raises
``ConfigError`` naming the closest valid keys; a value of the wrong type or out of range
raises ``ConfigError`` naming the key; cross-field checks (``model_validator``) say what to set
instead. Every mistake is one line (``ConfigError``; the CLI exits with code 2). Every field
carries a description, shown by ``teachloop config --explain`` and put into the JSON schema
(``teachloop config --schema``) editors validate preset files with.

YAML numbers such as ``1e-6`` are floats here (YAML 1.2; PyYAML's YAML 1.1 resolver reads
them as strings). TRL's ``GRPOConfig`` stays TRL's: ``train.args`` passes any other
``CurriculumGRPOConfig`` field through untouched.

Components own their config (STYLE.md §3): the teacher loop's section and the chat-backend
section are declared in agents/config.py; this module holds the run-level tree that points
at them, and the generic loader.
"""

from __future__ import annotations

import difflib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from teachloop.agents.config import ModelSection, TeacherSection
from teachloop.section import Section, StrList

__all__ = ["ConfigError", "DEFAULT_PRESET", "ModelSection", "TeacherSection", "TeachloopConfig",
           "all_keys", "apply_process_settings", "config_from_dict", "dump_yaml", "json_schema",
           "load_config", "parse_override", "preset_names", "to_dict", "yaml_load"]

DEFAULT_PRESET = "quickstart"


class ConfigError(ValueError):
    """A user mistake in a config; the message is one line."""


# --- the tree ------------------------------------------------------------------------


class RunSection(Section):
    seed: int = Field(0, description="global random seed (items, sampling, training)")
    out: str = Field("runs/quickstart", description="run directory: pool, checkpoints, export, "
                     "report")
    pool: str = Field("", description="a shared pool instead of RUN_DIR/pool.sqlite: "
                      "postgresql://user@host/db (written to RUN_DIR/pool.url)")
    workers: int = Field(0, ge=0, description="teacher stage: this many generation worker "
                         "processes on the pool (teachloop/workers.py); 0 = the in-process loop")


class SeedsSection(Section):
    families: StrList = Field(["math.rg.basic_arithmetic", "math.rg.chain_sum"],
                              description="task families to draw seed items from (see "
                              "`teachloop families`)")
    per_family: int = Field(8, ge=0, description="seed items drawn per family")
    family_args: dict[str, dict[str, Any]] = Field(
        {}, description="per-family config overrides for seeds and held-out evaluation, e.g. "
        "{math.rg.basic_arithmetic: {start_level: 0}} (see `teachloop families`)")

    @model_validator(mode="after")
    def _check_args(self) -> SeedsSection:
        from teachloop.evals.families import UnknownFamilyError, get_family

        for name, args in self.family_args.items():
            try:
                get_family(name, **args)
            except UnknownFamilyError as e:
                raise ValueError(str(e)) from None
            except (TypeError, ValueError) as e:
                raise ValueError(f"seeds.family_args.{name}: {e}") from None
        return self


class StudentSection(ModelSection):
    fewshot: int = Field(0, ge=0, description="solved examples of the item's family before every "
                         "question, as chat turns, in probing, training and evaluation "
                         "(evals/fewshot.py): lets a small student learn the answer format")


class ProbeSection(Section):
    attempts: int = Field(8, ge=1, description="student attempts per item (M; the paper uses 32)")
    chunk_seqs: int = Field(32, ge=1, description="sequences (items x M) per batched probe call; "
                            "each chunk's stats are committed together, so a kill loses at most "
                            "one chunk")


class TrainSection(Section):
    mode: Literal["grpo", "vcrl", "adacurl", "vcrl+adacurl"] = Field(
        "vcrl+adacurl", description="grpo, vcrl, adacurl or vcrl+adacurl")
    max_steps: int = Field(10, ge=0, description="GRPO optimisation steps (0: skip training)")
    num_generations: int = Field(4, ge=2, description="completions per prompt (group size G)")
    batch_size: int = Field(8, ge=1, description="completions per optimisation step (a multiple "
                            "of G)")
    max_completion_length: int = Field(64, ge=1, description="max new tokens per training "
                                       "completion")
    learning_rate: float = Field(1e-6, ge=0, description="learning rate")
    beta: float = Field(-1.0, description="KL coefficient; -1 = 0.04 in the AdaCuRL modes, else "
                        "TRL's 0")
    save_steps: int = Field(5, ge=0, description="checkpoint every N steps (a killed run resumes "
                            "from the last one); 0 = only at the end")
    num_buckets: int = Field(3, ge=1, description="AdaCuRL difficulty buckets (fewer when the pool "
                             "has too few measured items; the run says so)")
    completion_budget: int = Field(0, ge=0, description="stop training once this many training "
                                   "completions (rollouts, VCRL re-rolls included) were generated; "
                                   "0 = max_steps alone. A study sets it (with a large max_steps) "
                                   "so every arm generates the same number of completions")
    difficulty_filter: bool = Field(False, description="train only on the items AdaCuRL would "
                                    "keep (measured difficulty in its fine band, [0.05, 0.95] by "
                                    "default), in any mode: with mode=grpo, the ablation 'the "
                                    "filter alone, without buckets or variance selection'")
    report_to: Literal["none", "tensorboard", "trackio", "wandb"] = Field(
        "none", description="TRL's report_to: also send the training logs to this tracker (the "
        "HTML report reads RUN_DIR/train/train_log.jsonl either way)")
    args: dict[str, Any] = Field({}, description="any other CurriculumGRPOConfig field, passed to "
                                 "TRL as is, e.g. {use_vllm: true, bf16: true}")

    @model_validator(mode="after")
    def _check(self) -> TrainSection:
        if self.batch_size < self.num_generations or self.batch_size % self.num_generations:
            raise ValueError(f"train.batch_size ({self.batch_size}) must be a multiple of "
                             f"train.num_generations ({self.num_generations})")
        mine = sorted(set(self.args) & set(type(self).model_fields))
        if mine:
            raise ValueError(f"set train.{mine[0]}, not train.args.{mine[0]}")
        return self


class OnlineSection(Section):
    enabled: bool = Field(False, description="online mode (--online): teacher rounds during "
                          "training on the items the trainer just rolled out")
    every_steps: int = Field(2, ge=1, description="a teacher round after every K training steps")
    max_heads: int = Field(8, ge=1, description="most chain heads per round (items farthest "
                           "outside the target band first)")
    max_turns: int = Field(1, ge=1, description="teacher turns per chain in a round")


class EvalSection(Section):
    enabled: bool = Field(True, description="evaluate the model before and after training")
    bench: str = Field("heldout", description="'heldout' (held-out items of the seed families), "
                       "or any `teachloop eval --bench` name (rg:FAMILY, humaneval, jsonl:PATH, "
                       "gsm8k, ...)")
    k: int = Field(4, ge=1, description="samples per item (pass@k, avg@k)")
    n_items: int = Field(16, ge=1, description="items evaluated")
    max_tokens: int = Field(0, ge=0, description="max new tokens per sample; 0 = "
                            "student.max_tokens")
    temperature: float = Field(1.0, ge=0, description="sampling temperature")
    seed: int = Field(-1, description="held-out item draw and sampling seed; -1 = run.seed (a "
                      "study fixes it so every arm and seed sees the same items)")
    before: bool = Field(True, description="evaluate the initial model too (a study evaluates "
                         "it once for all its runs)")
    exclude_pool: bool = Field(True, description="draw held-out items around the pool's items; "
                               "false: a fixed draw, the same for every run (a study drops "
                               "items that are in any run's pool afterwards)")
    harder: bool = Field(False, description="also evaluate one knob level up (reasoning-gym "
                         "families: seeds.family_args start_level + 1) into eval_*_harder.json")
    curve_every: int = Field(0, ge=0, description="evaluate the policy being trained every N "
                             "steps on the first curve_items held-out items "
                             "(RUN_DIR/eval_curve.jsonl); 0 = off")
    curve_items: int = Field(64, ge=1, description="held-out items of each learning-curve point")


class ExportSection(Section):
    enabled: bool = Field(True, description="export the pool as a Hugging Face dataset into "
                          "RUN_DIR/export")
    format: Literal["parquet", "jsonl"] = Field("parquet", description="parquet or jsonl")


class ReportSection(Section):
    enabled: bool = Field(True, description="write RUN_DIR/report/index.html")
    screenshot: bool = Field(True, description="render the report with headless Chromium when "
                             "installed")


class SandboxSection(Section):
    require_isolation: bool = Field(False, description="refuse to execute untrusted code when the "
                                    "OS gives no namespace isolation")


class TeachloopConfig(Section):
    """The run tree: ``teachloop run``, ``generate``, ``study`` and ``config`` all read it."""

    run: RunSection = Field(default_factory=RunSection, description="run settings")
    seeds: SeedsSection = Field(default_factory=SeedsSection, description="seed items")
    student: StudentSection = Field(default_factory=StudentSection,
                                    description="the student model")
    teacher: TeacherSection = Field(default_factory=TeacherSection,
                                    description="the teacher loop (agents/config.py)")
    probe: ProbeSection = Field(default_factory=ProbeSection, description="probing")
    train: TrainSection = Field(default_factory=TrainSection, description="training")
    online: OnlineSection = Field(default_factory=OnlineSection,
                                  description="teacher rounds during training")
    eval: EvalSection = Field(default_factory=EvalSection,
                              description="evaluation before and after training")
    export: ExportSection = Field(default_factory=ExportSection, description="dataset export")
    report: ReportSection = Field(default_factory=ReportSection, description="HTML report")
    sandbox: SandboxSection = Field(default_factory=SandboxSection,
                                    description="execution of untrusted code (evals/sandbox.py)")

    @model_validator(mode="after")
    def _check(self) -> TeachloopConfig:
        if self.online.enabled and self.train.mode == "grpo":
            raise ValueError("online mode needs a curriculum mode (vcrl, adacurl or "
                             "vcrl+adacurl): plain grpo trains on a fixed dataset")
        return self


def apply_process_settings(cfg: TeachloopConfig) -> None:
    """Settings that act process-wide: the sandbox's isolation requirement. ``true`` requires
    isolation; ``false`` leaves the decision to ``TEACHLOOP_REQUIRE_ISOLATION`` (a config that
    does not ask for it never overrides an environment that does)."""
    from teachloop.evals import sandbox

    sandbox.set_require_isolation(True if cfg.sandbox.require_isolation else None)


# --- YAML: 1.2 floats ------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-6`` / ``1E+3`` as floats (YAML 1.2; 1.1 needs a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


# --- the generic loader -------------------------------------------------------------


def _sections(cls: type[BaseModel]) -> dict[str, type[BaseModel]]:
    return {name: f.annotation for name, f in cls.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}


def all_keys(cls: type[BaseModel] = TeachloopConfig, prefix: str = "") -> dict[str, str]:
    """Every dotted leaf key of the tree with its help string."""
    out: dict[str, str] = {}
    subs = _sections(cls)
    for name, f in cls.model_fields.items():
        if name in subs:
            out.update(all_keys(subs[name], f"{prefix}{name}."))
        else:
            out[prefix + name] = f.description or ""
    return out


def json_schema(cls: type[BaseModel] = TeachloopConfig) -> dict[str, Any]:
    """The tree's JSON schema (draft 2020-12), for editors validating preset files."""
    schema = cls.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
            "title": "teachloop run config"}


def _unknown(key: str, cls: type[BaseModel]) -> ConfigError:
    keys = list(all_keys(cls))
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    if not close:  # try the last component alone: 'max_turn' -> 'teacher.max_turns'
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
        close = [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=3, cutoff=0.6)]
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


_EXPECTED = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
    "bool_type": "true or false", "string_type": "a string", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def _one_line(e: ValidationError, cls: type[BaseModel]) -> ConfigError:
    """pydantic's error list -> one line naming the key (unknown keys first)."""
    errors = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")
    err = errors[0]
    key = ".".join(str(p) for p in err["loc"])
    typ, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if typ == "extra_forbidden":
        base = _unknown(key, cls)
        return ConfigError(f"{base}{more}")
    if typ in _EXPECTED:
        msg = f"{key}: expected {_EXPECTED[typ]}, got {value!r}"
    elif typ == "literal_error":
        msg = f"{key} must be {ctx.get('expected')}, got {value!r}"
    elif typ in _BOUNDS:
        op, name = _BOUNDS[typ]
        msg = f"{key} must be {op} {ctx.get(name)}, got {value!r}"
    elif typ == "value_error":
        text = str(ctx.get("error", err["msg"]))
        msg = f"{key}: {text}" if key and f"{key}." not in text else text
    else:
        msg = f"{key}: {err['msg']}" if key else err["msg"]
    return ConfigError(msg.splitlines()[0] + more)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(s: str) -> dict[str, Any]:
    """``'teacher.max_turns=3'`` -> ``{'teacher': {'max_turns': 3}}`` (value parsed as YAML)."""
    if "=" not in s:
        raise ConfigError(f"override {s!r} must look like key=value")
    key, _, raw = s.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {s!r} has an empty key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    cur = out
    parts = key.split(".")
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value
    return out


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("teachloop.configs").iterdir()
                  if p.name.endswith(".yaml"))


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml_load(text)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        at = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{where}: not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: top level must be a mapping of sections")
    return data


def load_config(
    preset: str | None = DEFAULT_PRESET,
    file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    cls: type[BaseModel] = TeachloopConfig,
) -> Any:
    """Resolve defaults < preset < file < overrides into a validated ``cls`` instance
    (``preset=None`` or ``""``: the field defaults alone)."""
    data: dict[str, Any] = {}
    if preset:
        res = resources.files("teachloop.configs") / f"{preset}.yaml"
        if not res.is_file():
            raise ConfigError(
                f"unknown preset {preset!r}; available: {', '.join(preset_names())}"
            )
        data = _merge(data, _read_yaml(res.read_text(), f"preset {preset}"))
    if file:
        p = Path(file)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        data = _merge(data, _read_yaml(p.read_text(), str(p)))
    for o in overrides:
        data = _merge(data, parse_override(o))
    return config_from_dict(data, cls)


def config_from_dict(data: dict[str, Any], cls: type[BaseModel] = TeachloopConfig) -> Any:
    """Validate a plain dict (e.g. a run's saved config.yaml) into ``cls``."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {data!r}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise _one_line(e, cls) from None


def to_dict(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="python")


def dump_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def dump_schema(cls: type[BaseModel] = TeachloopConfig) -> str:
    return json.dumps(json_schema(cls), indent=2)
