"""evals/bench.py: pass@k, the benchmark loaders, and one real evaluation on the embedded model.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/test_bench.py

The end-to-end test loads SmolLM2-135M-Instruct on CPU (converted once into $TEACHLOOP_CACHE)
and samples 4 items x 2 completions x 32 tokens; the whole file takes well under a minute.
"""

from __future__ import annotations

import json
import math
import random
import time
from types import SimpleNamespace

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from teachloop.agents.backends import ChatBackend, Completion

from teachloop.evals.bench import (
    HELDOUT_SEED_OFFSET,
    BenchError,
    EvalResult,
    avg_at_k,
    bench_names,
    compare,
    evaluate,
    load_bench,
    load_result,
    pass_at_k,
    save_result,
)
from teachloop.evals.families import get_family
from teachloop.evalcmd import eval_command


# ------------------------------------------------------------------------------ pass@k
def exact_pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_matches_combinatorial_formula_on_a_grid():
    for n in range(1, 41):
        for k in range(1, n + 1):
            for c in range(n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(exact_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 400).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_combinatorial_formula_hypothesis(nck):
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(exact_pass_at_k(n, c, k), abs=1e-9)


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0 and pass_at_k(10, 10, 7) == 1.0
    assert pass_at_k(10, 7, 4) == 1.0  # n - c < k: every 4-subset holds a correct sample
    for n in (1, 5, 16):
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n)
    assert pass_at_k(4, 1, 4) == 1.0 and pass_at_k(4, 0, 4) == 0.0  # n == k: any correct
    with pytest.raises(ValueError, match="at least k"):
        pass_at_k(3, 1, 4)
    for bad in ((5, 6, 1), (5, -1, 1), (5, 1, 0)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_pass_at_k_matches_monte_carlo():
    n, c, k = 10, 3, 4
    rng = random.Random(0)
    samples = [1] * c + [0] * (n - c)
    trials = 40_000
    hits = sum(any(rng.sample(samples, k)) for _ in range(trials))
    assert hits / trials == pytest.approx(pass_at_k(n, c, k), abs=0.01)
    assert pass_at_k(n, c, k) == pytest.approx(1 - 35 / 210)


def test_avg_at_k_means_per_item_then_over_items():
    assert avg_at_k([[1, 0, 0, 0], [1, 1]]) == pytest.approx((0.25 + 1.0) / 2)
    with pytest.raises(ValueError):
        avg_at_k([])
    with pytest.raises(ValueError):
        avg_at_k([[1.0], []])


def test_compare_rows():
    before = {"metrics": {"pass@1": 0.25, "pass@4": 0.5, "avg@k": 0.25}}
    after = EvalResult("b", "m", 4, 2, 1.0, 32, {"pass@1": 0.5, "pass@4": 0.75, "avg@k": 0.5})
    rows = compare(before, after)
    assert [r.metric for r in rows] == ["pass@1", "pass@4", "avg@k"]
    assert rows[0] == ("pass@1", 0.25, 0.5, 0.25)
    assert compare({"metrics": {"pass@1": 0.1}}, {"metrics": {}})[0].delta is None


# ------------------------------------------------------------------------------ loaders
def test_registry_lists_names_and_rejects_unknown():
    names = bench_names()
    for n in ("humaneval", "gsm8k", "math500", "aime", "jsonl:PATH", "rg:<family>"):
        assert n in names
    with pytest.raises(BenchError, match="known: .*humaneval"):
        load_bench("no-such-bench", 2)
    with pytest.raises(BenchError, match="unknown task family"):
        load_bench("rg:math.rg.nope", 2)


def test_heldout_items_disjoint_from_training_seeds_and_exclude_ids():
    fam = get_family("math.rg.chain_sum")
    train_ids = {it.id for it in fam.seeds(64, seed=0)}  # what `teachloop run` seeds with run.seed=0
    held = load_bench("rg:math.rg.chain_sum", 16, seed=0)
    held_ids = [it.id for it, _ in held]
    assert len(held_ids) == 16 == len(set(held_ids))
    assert not train_ids & set(held_ids)
    # The run's pool ids are skipped, and the draw refills to the same size.
    excl = set(held_ids[:5])
    again = [it.id for it, _ in load_bench("rg:chain_sum", 16, seed=0, exclude_ids=excl | train_ids)]
    assert len(again) == 16 and not (excl | train_ids) & set(again)
    assert again[:11] == held_ids[5:]
    # A run seeded at the held-out offset would collide: exclude_ids alone keeps the split clean.
    clash = {it.id for it in fam.seeds(16, seed=HELDOUT_SEED_OFFSET)}
    assert clash == set(held_ids)
    safe = [it.id for it, _ in load_bench("rg:math.rg.chain_sum", 16, seed=0, exclude_ids=clash)]
    assert len(safe) == 16 and not clash & set(safe)
    # Every item comes with its family's scorer.
    item, scorer = held[0]
    assert scorer(item, fam.reference_completion(item)) == 1.0 and scorer(item, "no idea") == 0.0


def test_heldout_mixes_families_equally():
    items = load_bench("heldout:math.rg.chain_sum,math.rg.products", 5, seed=1)
    fams = [it.family for it, _ in items]
    assert fams == ["math.rg.chain_sum", "math.rg.products"] * 2 + ["math.rg.chain_sum"]


def test_jsonl_loader_good_file(tmp_path):
    rg = get_family("math.rg.chain_sum")
    rg_item = rg.seeds(1, seed=3)[0]
    exported = {**rg_item.to_dict(), "split": "train"}  # an export row: item fields + extras
    p = tmp_path / "mine.jsonl"
    p.write_text("\n".join([
        json.dumps({"prompt": "What is 6 times 7?", "answer": "42"}),
        "",
        json.dumps({"prompt": "Half of 3? Put it in \\boxed{}.", "answer": "3/2"}),
        json.dumps(exported),
    ]) + "\n")
    items = load_bench(f"jsonl:{p}", 10, seed=0)
    assert len(items) == 3
    by_prompt = {it.prompt.split("\n")[0]: (it, sc) for it, sc in items}
    it, sc = by_prompt["What is 6 times 7?"]
    assert it.answer == "42" and it.prompt.endswith("\\boxed{}.")
    assert sc(it, "6*7 = 42, so the answer is \\boxed{42}.") == 1.0
    assert sc(it, "The answer is \\boxed{41}.") == 0.0
    half, hsc = by_prompt["Half of 3? Put it in \\boxed{}."]
    assert half.prompt.count("boxed") == 1  # no second instruction
    assert hsc(half, "\\boxed{1.5}") == 1.0
    fam_item, fsc = next((i, s) for i, s in items if i.family == "math.rg.chain_sum")
    assert fam_item.id == rg_item.id
    assert fsc(fam_item, rg.reference_completion(fam_item)) == 1.0 and fsc(fam_item, "\\boxed{x}") == 0.0
    assert len(load_bench(f"jsonl:{p}", 2, seed=0)) == 2
    assert len(load_bench(f"jsonl:{p}", 10, seed=0, exclude_ids={rg_item.id})) == 2


def test_jsonl_loader_errors(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "1+1", "answer": "2"}\n{"prompt": "2+2", "answer": \n')
    with pytest.raises(BenchError, match=r"line 2: bad JSON"):
        load_bench(f"jsonl:{p}", 4)
    p.write_text('{"prompt": "1+1", "answer": "2"}\n\n{"prompt": "2+2"}\n')
    with pytest.raises(BenchError, match=r"line 3: missing key 'answer'"):
        load_bench(f"jsonl:{p}", 4)
    p.write_text('{"question": "1+1", "answer": "2"}\n')
    with pytest.raises(BenchError, match=r"line 1: missing key 'prompt'"):
        load_bench(f"jsonl:{p}", 4)
    p.write_text('{"family": "no.such", "prompt": "x", "answer": "1"}\n')
    with pytest.raises(BenchError, match=r"line 1: unknown task family"):
        load_bench(f"jsonl:{p}", 4)
    with pytest.raises(BenchError, match="does not exist"):
        load_bench(f"jsonl:{tmp_path / 'missing.jsonl'}", 4)


def test_gsm8k_offline_is_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-teachloop-hf-home")  # certainly nothing cached
    with pytest.raises(BenchError) as ei:
        load_bench("gsm8k", 4)
    msg = str(ei.value)
    assert "gsm8k is not available offline" in msg and "jsonl:PATH" in msg and "\n" not in msg


# ------------------------------------------------------------------------------ evaluate
class ScriptedBackend(ChatBackend):
    """Answers item i of the benchmark correctly in i % (n + 1) of its n samples: known c per
    item, so the aggregation is checked on non-zero counts (the 135M model scores ~0)."""

    def __init__(self, items, max_batch_size):
        self.config = SimpleNamespace(max_batch_size=max_batch_size)
        self.by_prompt = {it.prompt: (i, it) for i, (it, _) in enumerate(items)}
        self.calls = 0

    async def agenerate(self, conversations, *, n=1, **kw):
        self.calls += 1
        out = []
        for conv in conversations:
            i, it = self.by_prompt[conv[-1]["content"]]
            good = get_family(it.family).reference_completion(it)
            texts = [good] * (i % (n + 1)) + ["I do not know."] * (n - i % (n + 1))
            out.append([Completion(t, 10, 5, "stop") for t in texts])
        return out


def test_evaluate_aggregates_counts_over_chunks():
    bench, k = "heldout:math.rg.chain_sum,math.rg.gcd", 3
    items = load_bench(bench, 7, seed=2)
    backend = ScriptedBackend(items, max_batch_size=6)  # 2 items per generate call
    res = evaluate("label-only", bench, k=k, n_items=7, seed=2, backend=backend, max_tokens=8)
    assert backend.calls == 4 and res.model == "label-only" and res.n_items == 7
    cs = [i % (k + 1) for i in range(7)]
    assert [r["c"] for r in res.per_item] == cs and all(r["n"] == k for r in res.per_item)
    assert res.metrics["pass@1"] == pytest.approx(sum(c / k for c in cs) / 7)
    assert res.metrics["pass@3"] == pytest.approx(sum(c > 0 for c in cs) / 7)
    assert res.metrics["avg@k"] == pytest.approx(res.metrics["pass@1"])


def test_eval_command_parses_options_and_reports_user_errors():
    app = typer.Typer()
    app.command()(eval_command)
    res = CliRunner().invoke(app, ["--bench", "no-such-bench", "--k", "2", "--n", "3"])
    assert isinstance(res.exception, BenchError) and "unknown bench" in str(res.exception)
    res = CliRunner().invoke(app, ["--bench", "rg:chain_sum", "--k", "0"])
    assert isinstance(res.exception, BenchError) and "--k" in str(res.exception)


def test_bench_is_library_only_and_the_cli_reports_its_errors_in_one_line(capsys):
    import subprocess
    import sys

    code = ("import sys, teachloop.evals.bench; "
            "bad = [m for m in ('typer', 'teachloop.errors', 'teachloop.cli') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    from teachloop.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["eval", "--bench", "no-such-bench"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "unknown bench" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ end to end
def test_evaluate_embedded_end_to_end(tmp_path):
    t0 = time.perf_counter()
    res = evaluate("embedded", "rg:math.rg.basic_arithmetic", k=2, n_items=4, max_tokens=32)
    wall = time.perf_counter() - t0
    print(f"\nevaluate wall {wall:.1f} s (reported {res.wall_s:.1f} s): {res.metrics}")
    d = res.to_json()
    assert set(d) == {"bench", "model", "k", "n_items", "temperature", "max_tokens", "metrics",
                      "per_item", "wall_s"}
    assert (d["bench"], d["model"], d["k"], d["n_items"]) == ("rg:math.rg.basic_arithmetic", "embedded", 2, 4)
    assert d["max_tokens"] == 32 and d["temperature"] == 1.0 and d["wall_s"] > 0
    assert set(d["metrics"]) == {"pass@1", "pass@2", "avg@k"}
    assert all(0.0 <= v <= 1.0 for v in d["metrics"].values())
    assert len(d["per_item"]) == 4
    for row in d["per_item"]:
        assert set(row) == {"id", "n", "c"} and row["n"] == 2 and 0 <= row["c"] <= 2
    assert d["metrics"]["pass@1"] == pytest.approx(sum(r["c"] / r["n"] for r in d["per_item"]) / 4)
    assert d["metrics"]["avg@k"] == pytest.approx(d["metrics"]["pass@1"])  # binary rewards
    held_ids = [it.id for it, _ in load_bench("rg:math.rg.basic_arithmetic", 4, seed=0)]
    assert [r["id"] for r in d["per_item"]] == held_ids
    out = save_result(res, tmp_path / "eval" / "before.json")
    assert json.loads(out.read_text()) == d
    back = load_result(out)
    assert back == res and not list(tmp_path.glob("eval/*.tmp"))
    assert [r.delta for r in compare(res, back)] == [0.0, 0.0, 0.0]
