"""The llm teacher's accounting (issue 14): tokens per accepted item and cost at
``teacher.prices`` (teachloop/stats.py) in ``pool stats``, the report and the dataset card, and
``teacher.budget_tokens``.  pytest tests/test_accounting.py"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from teachloop.curriculum.items import Item
from teachloop.curriculum.pool import open_pool

EXE = shutil.which("teachloop", path=str(Path(sys.executable).parent)) or "teachloop"

# known inputs: two accepted llm items, one rejected llm proposal, one procedural item
USAGE_A = {"calls": 3, "prompt_tokens": 600_000, "completion_tokens": 100_000, "latency_s": 1.5}
USAGE_B = {"calls": 2, "prompt_tokens": 300_000, "completion_tokens": 50_000, "latency_s": 0.5}
USAGE_R = {"calls": 1, "prompt_tokens": 100_000, "completion_tokens": 50_000, "latency_s": 1.0}
PRICES = {"prompt_per_mtok": 0.15, "completion_per_mtok": 0.60}
# prompt 1,000,000 + completion 200,000 = 1,200,000 tokens over 3 proposals, 2 accepted:
# 600,000 tokens per accepted item; cost 1e6 * 0.15 / 1e6 + 2e5 * 0.60 / 1e6 = $0.27


def make_pool(run_dir: Path, prices: dict | None = PRICES) -> None:
    store = open_pool(run_dir)
    seed = Item(family="math.rg.chain_sum", prompt="1+2+3")
    a = seed.child("1+2+3+4", "harder")
    a.metadata = {"teacher_usage": USAGE_A}
    b = seed.child("1+2", "easier")
    b.metadata = {"teacher_usage": USAGE_B}
    proc = seed.child("1+3", "easier")  # procedural: no teacher_usage, not an llm item
    store.insert_many([seed, a, b, proc])
    store.reject(family="math.rg.chain_sum", stage="parse", reason="no answer",
                 proposal=json.dumps({"raw": "?", "teacher_usage": USAGE_R}))
    store.reject(family="math.rg.chain_sum", stage="propose", reason="end of knob range",
                 proposal=json.dumps({"raw": ""}))  # procedural rejection: not counted
    store.close()
    if prices is not None:
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"teacher": {"prices": prices}}))


def test_totals_tokens_per_accepted_item_and_cost(tmp_path):
    from teachloop.stats import cost_rows, teacher_cost, teacher_totals, tokens_per_accepted

    make_pool(tmp_path)
    with open_pool(tmp_path, create=False) as store:
        tot = teacher_totals(store)
    assert tot == {"proposals": 3, "calls": 6, "prompt_tokens": 1_000_000, "completion_tokens": 200_000,
                   "latency_s": 3.0, "accepted": 2}
    assert tokens_per_accepted(tot) == 600_000
    assert teacher_cost(tot, PRICES) == pytest.approx(0.27)
    assert teacher_cost(tot, None) is None
    assert teacher_cost(tot, {"prompt_per_mtok": 0, "completion_per_mtok": 0}) is None
    rows = dict(cost_rows(tot, PRICES))
    assert rows["tokens per accepted item"] == "600,000" and rows["teacher calls"] == "6"
    assert rows["cost (USD)"] == "$0.2700 ($0.1350 per accepted item)"
    assert "cost (USD)" not in dict(cost_rows(tot, None))


def test_prices_are_validated_config_keys():
    from teachloop.config import ConfigError, all_keys, load_config

    cfg = load_config(None, None, ["teacher.prices.prompt_per_mtok=0.15",
                                   "teacher.prices.completion_per_mtok=0.6",
                                   "teacher.budget_tokens=10000"])
    assert cfg.teacher.prices.prompt_per_mtok == 0.15 and cfg.teacher.prices.completion_per_mtok == 0.6
    assert cfg.teacher.budget_tokens == 10000
    keys = all_keys()
    assert "teacher.prices.prompt_per_mtok" in keys and "teacher.budget_tokens" in keys
    with pytest.raises(ConfigError):
        load_config(None, None, ["teacher.prices.prompt_per_mtok=-1"])
    with pytest.raises(ConfigError):
        load_config(None, None, ["teacher.budget_tokens=-5"])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="160", NO_COLOR="1")
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=120)


def test_pool_stats_shows_tokens_per_accepted_item_and_cost(tmp_path):
    make_pool(tmp_path)
    r = _cli("pool", "stats", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "3 llm proposals: 1000000 prompt + 200000 completion tokens in 6 calls" in r.stdout
    assert ("teacher cost 2 accepted llm items, 600,000 tokens per accepted item, $0.2700 "
            "($0.1350 per accepted item)") in r.stdout
    # without prices in the run's config: tokens, no cost
    (tmp_path / "config.yaml").unlink()
    r = _cli("pool", "stats", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "600,000 tokens per accepted item" in r.stdout and "$" not in r.stdout


def test_report_shows_teacher_cost(tmp_path):
    from teachloop.report import build_report

    make_pool(tmp_path)
    res = build_report(tmp_path, out=tmp_path / "r", screenshot=False)
    html = res.html.read_text()
    sec = html[html.index("<h3>teacher cost</h3>"):]
    sec = sec[: sec.index("</table>")]
    for label, value in (("llm proposals", "3"), ("teacher calls", "6"), ("prompt tokens", "1,000,000"),
                         ("completion tokens", "200,000"), ("accepted llm items", "2"),
                         ("tokens per accepted item", "600,000"),
                         ("cost (USD)", "$0.2700 ($0.1350 per accepted item)")):
        assert f'<td class="wrap">{label}</td><td class="n">{value}</td>' in sec, (label, sec)


def test_dataset_card_shows_teacher_cost(tmp_path):
    from teachloop.export import export

    make_pool(tmp_path)
    res = export(tmp_path, fmt="jsonl", out=tmp_path / "e")
    card = res.card.read_text()
    sec = card[card.index("## Teacher cost"):]
    sec = sec[: sec.index("\n## ", 1)]
    assert "| tokens per accepted item | 600,000 |" in sec
    assert "| prompt tokens | 1,000,000 |" in sec and "| completion tokens | 200,000 |" in sec
    assert "| cost (USD) | $0.2700 ($0.1350 per accepted item) |" in sec
    # only the harder item and no rejection (--direction harder): 1 proposal, 700,000 tokens
    card = export(tmp_path, fmt="jsonl", out=tmp_path / "h", direction="harder").card.read_text()
    assert "| llm proposals | 1 |" in card and "| tokens per accepted item | 700,000 |" in card
    # cost = 6e5 * 0.15 / 1e6 + 1e5 * 0.60 / 1e6 = 0.09 + 0.06
    assert "| cost (USD) | $0.1500 ($0.1500 per accepted item) |" in card


# ----------------------------------------------------------------------------- budget_tokens


def _budget_run(out: Path, budget: int, *, resume: bool, teacher) -> tuple:
    from rich.console import Console

    from teachloop.config import load_config
    from teachloop.generate import main

    sys.path.insert(0, str(Path(__file__).parent))
    from loop_helpers import ArithmeticStudent

    # one chain (one seed), one teacher call per proposal (protocol single, no prefill): the
    # scripted teacher reports 100 prompt + 50 completion tokens per call; "no format" is a
    # parse rejection, which costs its tokens and its turn, and the chain goes on to max_turns
    cfg = load_config("smoke", None, [
        "seeds.families=math.word", "seeds.per_family=1", "teacher.kind=llm", "teacher.max_turns=6",
        "teacher.protocol=single", "teacher.prefill=false", "teacher.max_rejections_in_row=0",
        "probe.attempts=2", f"teacher.budget_tokens={budget}"])
    console = Console(record=True, width=200)
    res = main(cfg, out=out, resume=resume, console=console, student=ArithmeticStudent(), teacher=teacher)
    return res, console.export_text()


def test_budget_tokens_stops_generation_and_resume_continues(tmp_path):
    from teachloop.stats import teacher_totals

    sys.path.insert(0, str(Path(__file__).parent))
    from loop_helpers import ScriptedTeacher

    out = tmp_path / "run"
    teacher = ScriptedTeacher(["no format"])
    # 400 tokens: proposals start at 0, 150, 300 spent; the third ends at 450 >= 400
    res, text = _budget_run(out, 400, resume=False, teacher=teacher)
    assert len(teacher.prompts) == 3 and res.proposals == 3 and res.paused == 1
    assert res.chain_ends == {}  # paused, not ended
    line = "teacher token budget reached: 450 of 400 tokens; raise teacher.budget_tokens and --resume to continue"
    assert line in text
    # resumed with the same budget: no call, the same line
    res, text = _budget_run(out, 0, resume=True, teacher=teacher)
    assert len(teacher.prompts) == 3 and res.paused == 1 and line in text
    # resumed with 700: two more proposals (at 450 and 600 spent), paused at 750
    res, text = _budget_run(out, 700, resume=True, teacher=teacher)
    assert "teacher.budget_tokens 400 -> 700" in text
    assert len(teacher.prompts) == 5 and res.proposals == 5 and res.paused == 1
    assert "teacher token budget reached: 750 of 700 tokens" in text
    # the chain's conversation went on where it stopped: turn 5 saw its 4 earlier proposals
    assert sum(m["role"] == "assistant" for m in teacher.prompts[-1]) == 4
    # resumed with a budget it cannot spend: the last turn, then max_turns ends the chain
    res, text = _budget_run(out, 100_000, resume=True, teacher=teacher)
    assert len(teacher.prompts) == 6 and res.proposals == 6 and res.paused == 0
    assert res.chain_ends == {"max_turns": 1} and "budget reached" not in text
    assert res.proposals == res.rejected == res.pool_rejected
    from teachloop.curriculum.pool import open_pool

    with open_pool(out, create=False) as store:
        tot = teacher_totals(store)
    assert (tot["proposals"], tot["calls"], tot["prompt_tokens"], tot["completion_tokens"]) == (6, 6, 600, 300)


def test_budget_without_checkpointer_ends_chains(tmp_path):
    """run_loop without a checkpointer cannot pause: the chain ends, reason 'teacher token budget'."""
    import asyncio

    sys.path.insert(0, str(Path(__file__).parent))
    from loop_helpers import ArithmeticStudent, ScriptedTeacher

    from teachloop.agents.budget import BUDGET_REASON, TokenBudget
    from teachloop.agents.config import TeacherLoopConfig
    from teachloop.agents.graph import run_loop
    from teachloop.agents.ledger import Ledger
    from teachloop.agents.state import LoopContext
    from teachloop.agents.teacher import PromptLibrary
    from teachloop.evals.families import get_family

    store = open_pool(tmp_path)
    store.insert_many(get_family("math.word").seeds(1, seed=0))
    cfg = TeacherLoopConfig(kind="llm", max_turns=6, attempts=2, protocol="single", prefill=False,
                            max_rejections_in_row=0, families=["math.word"])
    teacher, budget = ScriptedTeacher(["no format"]), TokenBudget(400)
    ctx = LoopContext(config=cfg, store=store, ledger=Ledger(store, "r1"), student=ArithmeticStudent(),
                      teacher=teacher, teacher_name="llm:scripted", prompts=PromptLibrary(), budget=budget)
    state = asyncio.run(run_loop(ctx, "r1"))
    store.close()
    assert len(state["outcomes"]) == 3 and len(teacher.prompts) == 3
    assert [e["reason"] for e in state["chains_done"]] == [BUDGET_REASON]
    assert (budget.spent, budget.stopped, budget.pause) == (450, 1, False) and "paused" not in state
