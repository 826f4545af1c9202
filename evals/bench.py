"""Benchmarks and pass@k: evaluate a student model on held-out items, offline.

    teachloop eval --model embedded --bench rg:math.rg.chain_sum --k 4 --n 16 --out before.json

``evaluate(model, bench, k=..., n_items=...)`` draws ``n_items`` items of a benchmark, samples
``k`` completions per item (one batched ``teachloop.agents.probe`` call per chunk of items), scores them
with the item's own checker and returns an :class:`EvalResult` whose JSON is the schema in
``teachloop/rundir.py`` (``eval/before.json``, ``eval/after.json``).

Benchmarks (``bench_names()``; a string -> loader registry, STYLE.md §5):

- ``rg:<family>``: held-out items of one task family (``rg:math.rg.chain_sum``, or the short
  ``rg:chain_sum``).  Drawn with seed ``HELDOUT_SEED_OFFSET + seed`` (training seeds use the run
  seed, far below), and every id in ``exclude_ids`` (the run's pool) is skipped, so train and
  eval never share an item.  Any registered family works; for families that walk a fixed seed
  file (code.generation, math.word) the seed only reorders, and ``exclude_ids`` alone keeps the
  split clean.
- ``heldout:<f1>,<f2>,...``: the same, several families mixed equally (interleaved).
- ``humaneval``: the HumanEval problems through the ``code.generation`` family (tests executed
  in the sandbox), a seeded subset.
- ``jsonl:PATH``: the user's JSONL.  Each line is either ``{"prompt", "answer"}`` (math: the
  answer instruction is appended unless the prompt mentions ``\\boxed``; scored with
  ``teachloop.evals.answers.score_completion`` on the whole completion, a box required) or ``{"family", "prompt", ...item fields}`` (e.g. a
  teachloop export; scored by that family).
- ``gsm8k`` (openai/gsm8k main test), ``math500`` (HuggingFaceH4/MATH-500 test), ``aime``
  (AI-MO/aimo-validation-aime train): through ``datasets.load_dataset`` **only from the local
  cache** (hub access is forced off while loading); when not cached, a one-line BenchError
  says to use ``jsonl:PATH`` instead.

Every benchmark is subsampled the same way: a permutation fixed by ``seed``, first ``n_items``.

Metrics (Chen et al. 2021): ``pass@1`` and ``pass@{k}`` are means over items of the unbiased
estimator :func:`pass_at_k` with ``n = k`` samples per item and ``c`` fully correct ones;
``avg@k`` is the mean reward per sample, averaged per item, then over items.  With binary
rewards (every family here) ``avg@k == pass@1``; they differ only under partial credit.

Not covered: n > k samples per item (the estimator supports it; ``evaluate`` samples exactly
``k``), greedy-vs-sampled protocol choices beyond ``temperature``, and parallel scoring
(``probe`` scores sequentially; a HumanEval run spends a sandbox start per completion).

Layering note: ``evaluate`` imports ``teachloop.agents.probe`` and ``teachloop.agents.backends`` lazily, inside the
function; the rest of this module (pass@k, loaders, results) depends on ``evals`` and
``curriculum`` only.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import os
import contextvars
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from teachloop.curriculum.items import ITEM_FIELDS, Item

__all__ = [
    "BENCH_PATTERNS",
    "HELDOUT_SEED_OFFSET",
    "BenchError",
    "CompareRow",
    "EvalResult",
    "avg_at_k",
    "bench_names",
    "compare",
    "evaluate",
    "load_bench",
    "load_result",
    "pass_at_k",
    "register_bench",
    "result_table",
    "save_result",
]

log = logging.getLogger(__name__)


class BenchError(ValueError):
    """A mistake in what the user asked of a benchmark (a name, a file, an option); the CLI
    reports it as one line (``teachloop.errors``)."""


HELDOUT_SEED_OFFSET = 10_000
MATH_INSTRUCTION = "Put your final answer in \\boxed{}."
JSONL_MATH_FAMILY = "math.jsonl"

Scorer = Callable[[Item, str], float]
BenchItems = list[tuple[Item, Scorer]]
# loader(n_items, seed, exclude_ids) for a fixed name; loader(arg, n_items, seed, exclude_ids)
# for a prefix ("rg:" + family).
Loader = Callable[[int, int, frozenset[str]], BenchItems]
PrefixLoader = Callable[[str, int, int, frozenset[str]], BenchItems]


# ====================================================================== pass@k
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from ``n`` samples of which ``c`` are correct.

    Chen et al. 2021, "Evaluating Large Language Models Trained on Code" (arXiv 2107.03374),
    eq. 1: ``pass@k = 1 - C(n-c, k) / C(n, k)``, computed as the numerically stable product
    ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` of the paper's reference code.  It is 1.0 when every
    size-k subset holds a correct sample (``n - c < k``) and 0.0 when ``c == 0``.
    """
    if any(isinstance(v, bool) for v in (n, c, k)):
        raise TypeError("n, c and k must be integers, not bools")
    n, c, k = operator.index(n), operator.index(c), operator.index(k)  # numpy ints too
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < k:
        raise ValueError(f"pass@{k} needs at least k={k} samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"c must lie in [0, n={n}], got {c}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def avg_at_k(rewards_per_item: Iterable[Sequence[float]]) -> float:
    """Mean per-sample accuracy: the mean reward of each item's samples, averaged over items
    (every item weighs the same, whatever its number of samples)."""
    means = []
    for rewards in rewards_per_item:
        rewards = list(rewards)
        if not rewards:
            raise ValueError("avg@k: an item has no samples")
        means.append(sum(rewards) / len(rewards))
    if not means:
        raise ValueError("avg@k: no items")
    return sum(means) / len(means)


# ====================================================================== results
@dataclass
class EvalResult:
    """One evaluation; ``to_json()`` is the EvalResult schema of ``teachloop/rundir.py``."""

    bench: str
    model: str
    k: int
    n_items: int
    temperature: float
    max_tokens: int
    metrics: dict[str, float]
    per_item: list[dict[str, Any]] = field(default_factory=list)  # {"id", "n", "c"}
    wall_s: float = 0.0

    @property
    def pass1(self) -> float:
        return self.metrics["pass@1"]

    @property
    def passk(self) -> float:
        return self.metrics[f"pass@{self.k}"]

    @property
    def avgk(self) -> float:
        return self.metrics["avg@k"]

    def to_json(self) -> dict[str, Any]:
        """The JSON object (a dict ready for ``json.dump``), keys as in the rundir schema."""
        return {
            "bench": self.bench,
            "model": self.model,
            "k": int(self.k),
            "n_items": int(self.n_items),
            "temperature": float(self.temperature),
            "max_tokens": int(self.max_tokens),
            "metrics": {str(m): float(v) for m, v in self.metrics.items()},
            "per_item": [{"id": str(r["id"]), "n": int(r["n"]), "c": int(r["c"])} for r in self.per_item],
            "wall_s": float(self.wall_s),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> EvalResult:
        """From ``to_json()``'s dict (or its JSON text)."""
        if isinstance(data, str):
            data = json.loads(data)
        try:
            return cls(
                bench=str(data["bench"]), model=str(data["model"]), k=int(data["k"]),
                n_items=int(data["n_items"]), temperature=float(data["temperature"]),
                max_tokens=int(data["max_tokens"]), metrics=dict(data["metrics"]),
                per_item=list(data.get("per_item", [])), wall_s=float(data.get("wall_s", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not an EvalResult: {type(e).__name__}: {e}") from None


def save_result(result: EvalResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result`` as JSON atomically (temp file + rename); returns the path."""
    from teachloop.rundir import write_json_atomic

    write_json_atomic(path, result.to_json())
    return Path(path)


def load_result(path: str | os.PathLike[str]) -> EvalResult:
    """An EvalResult written by ``save_result``; BenchError when missing or not one."""
    try:
        return EvalResult.from_json(Path(path).read_text())
    except OSError as e:
        raise BenchError(f"cannot read eval result {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise BenchError(f"{path}: {e}") from None


class CompareRow(NamedTuple):
    metric: str
    before: float | None
    after: float | None
    delta: float | None


def compare(before: EvalResult | dict[str, Any], after: EvalResult | dict[str, Any]) -> list[CompareRow]:
    """One row per metric of either result: (metric, before, after, after - before).

    A metric missing on one side gives None there and a None delta.  Accepts EvalResults or
    their JSON dicts.  Different benches or k are compared all the same: the caller decides.
    """
    mb = (before.metrics if isinstance(before, EvalResult) else dict(before.get("metrics", {}))) or {}
    ma = (after.metrics if isinstance(after, EvalResult) else dict(after.get("metrics", {}))) or {}
    rows = []
    for m in _metric_order([*mb, *[x for x in ma if x not in mb]]):
        b, a = mb.get(m), ma.get(m)
        b = None if b is None else float(b)
        a = None if a is None else float(a)
        rows.append(CompareRow(m, b, a, None if a is None or b is None else a - b))
    return rows


def _metric_order(names: list[str]) -> list[str]:
    def key(m: str) -> tuple[int, int, str]:
        if m.startswith("pass@") and m[5:].isdigit():
            return (0, int(m[5:]), m)
        return (1, 0, m)

    return sorted(dict.fromkeys(names), key=key)


# ====================================================================== registry
_BENCHES: dict[str, Loader] = {}
_PREFIXES: dict[str, PrefixLoader] = {}
BENCH_PATTERNS = ("rg:<family>", "heldout:<family>,<family>,...", "jsonl:PATH")


def register_bench(name: str, loader: Loader | PrefixLoader, *, prefix: bool = False) -> None:
    """Register a benchmark loader under ``name`` (a prefix such as ``"rg"`` when ``prefix``:
    ``"rg:<arg>"`` calls ``loader(arg, n_items, seed, exclude_ids)``).  No duplicates."""
    table: dict[str, Any] = _PREFIXES if prefix else _BENCHES
    if name in _BENCHES or name in _PREFIXES:
        raise ValueError(f"benchmark {name!r} is already registered")
    table[name] = loader


def bench_names() -> list[str]:
    """The fixed benchmark names and the parameterised patterns."""
    return sorted(_BENCHES) + [p for p in BENCH_PATTERNS if p.split(":")[0] in _PREFIXES]


def load_bench(name: str, n_items: int = 16, *, seed: int = 0, exclude_ids: Iterable[str] = (),
               family_args: Mapping[str, Mapping[str, Any]] | None = None) -> BenchItems:
    """Items of benchmark ``name`` with their scorers; BenchError for an unknown name, an
    unreadable source, or no items left after ``exclude_ids``. ``family_args``: per-family
    config overrides for the ``heldout``/``rg`` benches (a run's ``seeds.family_args``, so
    held-out items come from the seeds' level)."""
    token = _FAMILY_ARGS.set(dict(family_args or {}))
    try:
        return _load_bench(name, n_items, seed=seed, exclude_ids=exclude_ids)
    finally:
        _FAMILY_ARGS.reset(token)


_FAMILY_ARGS: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("family_args", default={})


def _load_bench(name: str, n_items: int, *, seed: int, exclude_ids: Iterable[str]) -> BenchItems:
    if not isinstance(n_items, int) or n_items < 1:
        raise BenchError(f"the number of items must be >= 1, got {n_items!r}")
    name = (name or "").strip()
    exclude = frozenset(exclude_ids or ())
    prefix, colon, arg = name.partition(":")
    if colon and prefix in _PREFIXES:
        if not arg.strip():
            raise BenchError(f"bench {name!r} needs an argument after '{prefix}:'")
        items = _PREFIXES[prefix](arg.strip(), n_items, seed, exclude)
    elif name in _BENCHES:
        items = _BENCHES[name](n_items, seed, exclude)
    else:
        raise BenchError(f"unknown bench {name!r}; known: {', '.join(bench_names())}")
    if not items:
        raise BenchError(f"bench {name!r} has no items left (after excluding {len(exclude)} pool ids)")
    return items


# ---------------------------------------------------------------------- helpers
def _subsample(n_total: int, n: int, seed: int) -> list[int]:
    from teachloop.evals.families.base import seeded_order

    return seeded_order(n_total, seed)[:n]


def _family(name: str):
    from teachloop.evals.families import UnknownFamilyError, get_family
    from teachloop.evals.families.rg import NAME_PREFIX, RG_DATASETS

    if name in RG_DATASETS:  # rg:chain_sum -> math.rg.chain_sum
        name = NAME_PREFIX + name
    try:
        return get_family(name, **_FAMILY_ARGS.get().get(name, {}))
    except UnknownFamilyError as e:
        raise BenchError(str(e)) from None


def _draw(fam: Any, n: int, seed: int, exclude: frozenset[str]) -> list[Item]:
    """The first ``n`` distinct items of ``fam.seeds(.., seed)`` whose ids are not excluded;
    asks for more seeds (doubling) while collisions leave it short."""
    m, out = n, []
    for _ in range(6):
        drawn = fam.seeds(m, seed=seed)
        seen: set[str] = set()
        out = []
        for it in drawn:
            if it.id in exclude or it.id in seen:
                continue
            seen.add(it.id)
            out.append(it)
            if len(out) == n:
                return out
        if len(drawn) < m:  # the family has no more items
            break
        m *= 2
    if len(out) < n:
        log.warning("%s: only %d of %d held-out items after excluding %d ids", fam.name, len(out), n, len(exclude))
    return out


def _heldout(families: Sequence[str], n_items: int, seed: int, exclude: frozenset[str]) -> BenchItems:
    fams = [_family(f) for f in dict.fromkeys(f.strip() for f in families if f.strip())]
    if not fams:
        raise BenchError("heldout: needs at least one family, e.g. heldout:math.rg.chain_sum,code.generation")
    per = [n_items // len(fams) + (1 if i < n_items % len(fams) else 0) for i in range(len(fams))]
    draws = [[(it, fam.score) for it in _draw(fam, cnt, HELDOUT_SEED_OFFSET + seed, exclude)] if cnt else []
             for fam, cnt in zip(fams, per)]
    out: BenchItems = []
    for i in range(max((len(d) for d in draws), default=0)):  # interleave: every chunk mixes
        out.extend(d[i] for d in draws if i < len(d))
    return out


def _rg(arg: str, n_items: int, seed: int, exclude: frozenset[str]) -> BenchItems:
    return _heldout([arg], n_items, seed, exclude)


def _heldout_prefix(arg: str, n_items: int, seed: int, exclude: frozenset[str]) -> BenchItems:
    return _heldout(arg.split(","), n_items, seed, exclude)


def _humaneval(n_items: int, seed: int, exclude: frozenset[str]) -> BenchItems:
    fam = _family("code.generation")
    return [(it, fam.score) for it in _draw(fam, n_items, seed, exclude)]


# ---------------------------------------------------------------------- math items
def math_score(item: Item, text: str) -> float:
    """``score_completion`` of the whole completion against ``item.answer`` (the prompt asks for
    ``\\boxed{}``: no box, 0.0); never raises."""
    from teachloop.evals.answers import score_completion

    return score_completion(item.answer, text, require_boxed=True)


def _math_item(family: str, prompt: str, answer: str, metadata: dict[str, Any]) -> Item:
    prompt = prompt.strip()
    if "\\boxed" not in prompt:
        prompt = f"{prompt}\n\n{MATH_INSTRUCTION}"
    return Item(family=family, prompt=prompt, answer=str(answer).strip(), metadata=metadata,
                teacher="benchmark", validation={"gold_source": metadata.get("source", "benchmark")})


# ---------------------------------------------------------------------- jsonl
def _jsonl(arg: str, n_items: int, seed: int, exclude: frozenset[str]) -> BenchItems:
    path = Path(arg).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"bench file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BenchError(f"cannot read bench file {path}: {e}") from None
    recs: list[tuple[int, dict[str, Any]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise BenchError(f"{path} line {lineno}: bad JSON ({e})") from None
        if not isinstance(rec, dict):
            raise BenchError(f"{path} line {lineno}: expected a JSON object, got {type(rec).__name__}")
        recs.append((lineno, rec))
    if not recs:
        raise BenchError(f"bench file {path} holds no records")
    out: BenchItems = []
    seen: set[str] = set()
    for i in _subsample(len(recs), len(recs), seed):
        lineno, rec = recs[i]
        item, scorer = _jsonl_record(path, lineno, rec)
        if item.id in exclude or item.id in seen:
            continue
        seen.add(item.id)
        out.append((item, scorer))
        if len(out) == n_items:
            break
    return out


def _jsonl_record(path: Path, lineno: int, rec: dict[str, Any]) -> tuple[Item, Scorer]:
    where = f"{path} line {lineno}"
    if "prompt" not in rec or not isinstance(rec["prompt"], str) or not rec["prompt"].strip():
        raise BenchError(f"{where}: missing key 'prompt' (a non-empty string)")
    family = rec.get("family")
    if family in (None, "", JSONL_MATH_FAMILY):
        if "answer" not in rec or rec["answer"] is None or not str(rec["answer"]).strip():
            raise BenchError(f"{where}: missing key 'answer' (or give a 'family' and its item fields)")
        if isinstance(rec["answer"], (dict, list)):
            raise BenchError(f"{where}: 'answer' must be a string or a number")
        meta = {"source": str(path), "line": lineno}
        return _math_item(JSONL_MATH_FAMILY, rec["prompt"], str(rec["answer"]), meta), math_score
    if not isinstance(family, str):
        raise BenchError(f"{where}: 'family' must be a string")
    from teachloop.evals.families import UnknownFamilyError, get_family

    try:
        fam = get_family(family)
    except UnknownFamilyError as e:
        raise BenchError(f"{where}: {e}") from None
    if "answer" not in rec and "checker" not in rec:
        raise BenchError(f"{where}: an item of family {family} needs 'answer' and/or 'checker'")
    # Item fields only: an export carries extra columns (stats, split names) we do not need.
    fields = {k: v for k, v in rec.items() if k in ITEM_FIELDS}
    try:
        item = Item.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise BenchError(f"{where}: not a valid item: {e}") from None
    return item, fam.score


# ---------------------------------------------------------------------- hub datasets
@contextmanager
def _hub_offline():
    """Force hub access off while loading (cache only), whatever the environment says."""
    import datasets.config as dcfg
    import huggingface_hub.constants as hcst

    old = (dcfg.HF_HUB_OFFLINE, hcst.HF_HUB_OFFLINE)
    dcfg.HF_HUB_OFFLINE = hcst.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        dcfg.HF_HUB_OFFLINE, hcst.HF_HUB_OFFLINE = old


def _hub_rows(bench: str, repo: str, config: str | None, split: str, fields: str) -> list[dict[str, Any]]:
    hint = (f"{bench} is not available offline (no cached copy of {repo}, split {split}); "
            f"pass --bench jsonl:PATH with one JSON object per line holding {fields}")
    try:
        import datasets
    except ImportError:
        raise BenchError(hint + " (the datasets package is not installed)") from None
    try:
        with _hub_offline():
            ds = datasets.load_dataset(repo, config, split=split) if config else datasets.load_dataset(repo, split=split)
        return [dict(r) for r in ds]
    except Exception as e:  # noqa: BLE001 - offline misses surface as many error types
        log.debug("%s: load_dataset failed", bench, exc_info=True)
        raise BenchError(f"{hint} [{type(e).__name__}]") from None


def _hub_loader(bench: str, repo: str, config: str | None, split: str,
                to_pa: Callable[[dict[str, Any]], tuple[str, str, str]]) -> Loader:
    """A loader over a hub dataset; ``to_pa(row) -> (prompt, answer, source id)``."""

    def load(n_items: int, seed: int, exclude: frozenset[str]) -> BenchItems:
        rows = _hub_rows(bench, repo, config, split, '"prompt" and "answer"')
        out: BenchItems = []
        for i in _subsample(len(rows), len(rows), seed):
            prompt, answer, sid = to_pa(rows[i])
            item = _math_item(f"bench.{bench}", prompt, answer, {"source": repo, "source_id": sid})
            if item.id in exclude:
                continue
            out.append((item, math_score))
            if len(out) == n_items:
                break
        return out

    load.__name__ = f"load_{bench}"
    return load


def _gsm8k_row(r: dict[str, Any]) -> tuple[str, str, str]:
    return r["question"], str(r["answer"]).split("####")[-1].strip().replace(",", ""), ""


def _math500_row(r: dict[str, Any]) -> tuple[str, str, str]:
    return r["problem"], str(r["answer"]), str(r.get("unique_id", ""))


def _aime_row(r: dict[str, Any]) -> tuple[str, str, str]:
    return r["problem"], str(r["answer"]), str(r.get("id", r.get("url", "")))


register_bench("rg", _rg, prefix=True)
register_bench("heldout", _heldout_prefix, prefix=True)
register_bench("jsonl", _jsonl, prefix=True)
register_bench("humaneval", _humaneval)
register_bench("gsm8k", _hub_loader("gsm8k", "openai/gsm8k", "main", "test", _gsm8k_row))
register_bench("math500", _hub_loader("math500", "HuggingFaceH4/MATH-500", None, "test", _math500_row))
register_bench("aime", _hub_loader("aime", "AI-MO/aimo-validation-aime", None, "train", _aime_row))


# ====================================================================== evaluate
def _is_embedded(model: str | None) -> bool:
    return model is None or str(model).strip().lower() in ("", "embedded")


def evaluate(
    model: str | None,
    bench: str,
    *,
    k: int = 4,
    n_items: int = 16,
    temperature: float = 1.0,
    max_tokens: int = 256,
    seed: int = 0,
    exclude_ids: Iterable[str] = (),
    backend: Any = None,
    console: Any = None,
    fewshot: int = 0,
    family_args: Mapping[str, Mapping[str, Any]] | None = None,
    dtype: str | None = None,
) -> EvalResult:
    """Sample ``k`` completions for each of ``n_items`` items of ``bench`` and score them.

    ``model`` is a checkpoint directory or ``"embedded"`` (SmolLM2-135M-Instruct); a
    ``LocalBackend`` is built for it (seeded with ``seed``) unless ``backend`` is given, in which
    case ``model`` is only the label stored in the result (a run reuses its loaded model).
    ``exclude_ids``: item ids never to evaluate on (the run's pool).  ``fewshot``: solved
    examples before each question (evals/fewshot.py; their items are never evaluated on).
    ``dtype``: the local backend's weights dtype (auto, float32, bfloat16, float16).
    ``family_args``: see ``load_bench``.  Nothing is fetched from a model hub.  Returns the EvalResult; ``save_result`` writes it.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from teachloop.agents.probe import probe

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BenchError(f"--k must be an integer >= 1, got {k!r}")
    if not temperature >= 0:
        raise BenchError(f"--temperature must be >= 0, got {temperature!r}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BenchError(f"--max-tokens must be an integer >= 1, got {max_tokens!r}")
    console = console if console is not None else Console(stderr=True)
    label = "embedded" if _is_embedded(model) else str(model)
    t0 = time.perf_counter()
    if fewshot > 0:
        from teachloop.evals.fewshot import fewshot_ids

        fams = [f.strip() for f in bench.partition(":")[2].split(",")] if ":" in bench else []
        exclude_ids = set(exclude_ids) | fewshot_ids(
            [f if "." in f else "math.rg." + f for f in fams if f], fewshot)
    items = load_bench(bench, n_items, seed=seed, exclude_ids=exclude_ids, family_args=family_args)
    scorers = {it.id: sc for it, sc in items}
    own = backend is None
    if own:
        backend = _local_backend(model, seed, dtype)
    try:
        step = _chunk_items(backend, k, len(items))
        chunks = [items[i:i + step] for i in range(0, len(items), step)]
        per_item: list[dict[str, Any]] = []
        rewards: list[list[float]] = []
        with Progress(TextColumn("[bold]eval[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("items"), TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task(bench, total=len(items))
            for chunk in chunks:
                results = probe([it for it, _ in chunk], k, backend,
                                lambda item, text: scorers[item.id](item, text),
                                temperature=temperature, max_tokens=max_tokens, fewshot=fewshot)
                for r in results:
                    per_item.append({"id": r.item_id, "n": r.attempts, "c": r.successes})
                    rewards.append(list(r.rewards))
                bar.advance(task, len(chunk))
    finally:
        if own:
            backend.close()
    metrics = {
        "pass@1": _mean(pass_at_k(r["n"], r["c"], 1) for r in per_item),
        f"pass@{k}": _mean(pass_at_k(r["n"], r["c"], k) for r in per_item),
        "avg@k": avg_at_k(rewards),
    }
    return EvalResult(bench=bench, model=label, k=k, n_items=len(per_item), temperature=float(temperature),
                      max_tokens=max_tokens, metrics=metrics, per_item=per_item,
                      wall_s=round(time.perf_counter() - t0, 3))


def _mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else math.nan


def _local_backend(model: str | None, seed: int, dtype: str | None = None) -> Any:
    from teachloop.agents.backends import LocalBackend, LocalBackendConfig

    if _is_embedded(model):
        path = None
    else:
        p = Path(str(model)).expanduser()
        if not p.exists():
            raise BenchError(f"model {model} does not exist (a checkpoint directory, or 'embedded')")
        path = str(p)
    cfg = LocalBackendConfig(model=path, seed=seed)
    if dtype and dtype != "auto":  # else LocalBackendConfig's default (env TEACHLOOP_LOCAL_DTYPE)
        cfg.dtype = dtype
    backend = LocalBackend(cfg)
    backend.check()  # loads now: a bad checkpoint is one BackendUnavailable line, not a trace
    return backend


def _chunk_items(backend: Any, k: int, n: int) -> int:
    """Items per probe call: as many as one batched generate holds (LocalBackend), else 8."""
    cfg = getattr(backend, "config", None)
    mbs = getattr(cfg, "max_batch_size", None)
    per = max(1, int(mbs) // k) if isinstance(mbs, int) and mbs > 0 else 8
    return max(1, min(per, n))


# ====================================================================== tables
def result_table(results: Sequence[EvalResult]) -> Any:
    """A rich table: bench, items, k, pass@1, pass@k, avg@k, wall."""
    from rich.table import Table

    t = Table("bench", "model", "items", "k", "pass@1", "pass@k", "avg@k", "wall", box=None)
    for r in results:
        t.add_row(r.bench, r.model, str(r.n_items), str(r.k), f"{r.pass1:.3f}", f"{r.passk:.3f}",
                  f"{r.avgk:.3f}", f"{r.wall_s:.1f} s")
    return t
