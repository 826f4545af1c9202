"""`teachloop study`: 2 arms x 2 seeds of tiny real runs -> table and plots; bad study files.

Run: pytest tests/test_study.py -q   (a few minutes on 2 cores: 4 real runs with 1 training step)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from teachloop.errors import UserError
from teachloop.study import check_budget, load_spec

EXE = str(Path(sys.executable).parent / "teachloop")
TINY = ["seeds.per_family=2", "probe.attempts=2", "student.max_tokens=16", "train.max_steps=1",
        "train.max_completion_length=16", "eval.n_items=2", "eval.k=2", "eval.max_tokens=16",
        "export.enabled=false", "report.enabled=false"]


def write_study(path: Path, out: Path, arms: list[dict], seeds=(0, 1)) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"out": str(out), "preset": "smoke", "set": TINY,
                                    "seeds": list(seeds), "metric": "pass@1", "arms": arms}))
    return path


ARMS = [{"name": "no-augmentation", "set": ["teacher.max_turns=0"]},
        {"name": "procedural", "set": ["teacher.kind=procedural", "teacher.max_turns=1"]}]


@pytest.mark.full  # heavy: make test-all / CI
def test_study_2_arms_x_2_seeds_table_and_plots(tmp_path):
    out = tmp_path / "study"
    f = write_study(tmp_path / "study.yaml", out, ARMS)
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="160")
    r = subprocess.run([EXE, "study", str(f)], capture_output=True, text=True, env=env, timeout=1500)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    res = json.loads((out / "study.json").read_text())
    assert set(res["runs"]) == {"no-augmentation", "procedural"}
    for arm in res["runs"].values():
        assert set(arm) == {"0", "1"}
    # the table's mean ± std are those of the per-seed numbers
    for arm, per_seed in res["runs"].items():
        vals = [per_seed[s]["after pass@1"] for s in ("0", "1")]
        m, s = res["stats"][arm]["after pass@1"]
        assert math.isclose(m, sum(vals) / 2)
        assert math.isclose(s, abs(vals[0] - vals[1]) / math.sqrt(2), abs_tol=1e-12)
    # no augmentation means no variants; the procedural arm proposed some
    assert all(v["variants"] == 0 for v in res["runs"]["no-augmentation"].values())
    md = (out / "study.md").read_text()
    assert "| no-augmentation | 2 |" in md and "±" in md
    for png in ("study_eval.png", "study_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # running it again keeps the finished runs
    r2 = subprocess.run([EXE, "study", str(f)], capture_output=True, text=True, env=env, timeout=600)
    assert r2.returncode == 0 and r2.stdout.count("finished earlier") == 4, r2.stdout[-3000:]


def test_study_refuses_unequal_budgets_and_bad_files(tmp_path):
    arms = ARMS + [{"name": "longer", "set": ["train.max_steps=5"]}]
    spec = load_spec(write_study(tmp_path / "s.yaml", tmp_path / "o", arms))
    with pytest.raises(UserError, match="longer changes the training budget .*train.max_steps"):
        check_budget(spec)
    bad = tmp_path / "bad.yaml"
    for text, msg in (("arms: 3", "arms"), ("arms: [{set: []}]", "needs a name"),
                      ("foo: 1\narms: [{name: a}]", "unknown study keys"), (": :", "not valid YAML"),
                      ("arms: [{name: a}, {name: a}]", "distinct")):
        bad.write_text(text)
        with pytest.raises(UserError, match=msg):
            load_spec(bad)
    with pytest.raises(UserError, match="not found"):
        load_spec(tmp_path / "missing.yaml")
    spec = load_spec(write_study(tmp_path / "k.yaml", tmp_path / "o",
                                 [{"name": "a", "set": ["teacher.max_turn=1"]}]))
    with pytest.raises(UserError, match="did you mean teacher.max_turns"):
        check_budget(spec)
    r = subprocess.run([EXE, "study", str(bad)], capture_output=True, text=True,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.full  # heavy: make test-all / CI
def test_evidence_study_shrunk_budget_ci_curves_and_results(tmp_path):
    """The evidence preset at toy size: equal training completions, one fixed held-out draw
    evaluated once for the initial model, curves, CIs, the results folder, --report-only."""
    import yaml

    src = yaml.safe_load((Path(__file__).parents[1] / "configs/studies/evidence.yaml").read_text())
    shrink = {"seeds.per_family": "2", "probe.attempts": "4", "train.completion_budget": "16",
              "train.max_steps": "4", "eval.n_items": "4", "eval.curve_every": "1",
              "eval.curve_items": "2"}
    src["set"] = [f"{s.split('=')[0]}={shrink[s.split('=')[0]]}" if s.split("=")[0] in shrink
                  else s for s in src["set"]] + ["report.enabled=false"]
    src["out"], src["results"], src["seeds"] = str(tmp_path / "s"), str(tmp_path / "r"), [0]
    src["arms"] = [a for a in src["arms"] if a["name"] in ("grpo", "vcrl-adacurl")]
    f = tmp_path / "evidence.yaml"
    f.write_text(yaml.safe_dump(src))
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="200")
    # through scripts/study_parallel.py: `--run base`, `--run ARM:0` as separate processes at
    # once, then `--report-only` (the sequential `teachloop study` is the test above)
    script = Path(__file__).parents[1] / "scripts" / "study_parallel.py"
    r = subprocess.run([sys.executable, str(script), str(f), "-j", "3", "--threads", "1"],
                       capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "base: done" in r.stdout and "grpo:0: done" in r.stdout, r.stdout[-3000:]
    assert (tmp_path / "s" / "logs" / "vcrl-adacurl-seed-0.log").exists()
    ev = json.loads((tmp_path / "r" / "evidence.json").read_text())
    base = json.loads((tmp_path / "s" / "base" / "eval.json").read_text())
    assert ev["main_items"] + ev["main_dropped_in_a_pool"] == len(base["per_item"]) == 4
    for arm in ("grpo", "vcrl-adacurl"):
        row = ev["arms"][arm]
        est, lo, hi = row["main"]["mean"]
        assert lo <= est <= hi
        # the training budget binds: at most one step (8 completions) past 16
        assert 8 <= row["train completions"][0] <= 16
        assert row["seed probe completions"][0] == 4 * 4
        # the curve starts at the initial model's eval and ends at the final eval, which every
        # arm plots at the latest last step (runs stop a step or two apart on the budget)
        assert ev["curves"][arm]["step"][0] == 0
        assert ev["curves"][arm]["step"][-1] == max(ev["arms"][a]["steps"][0]
                                                    for a in ("grpo", "vcrl-adacurl"))
    assert ev["arms"]["grpo"]["main"]["vs_ref"] == [0.0, 0.0, 0.0]
    # AdaCuRL's run records what its fine band kept (the table flags a band widened to [0, 1])
    tr = json.loads((tmp_path / "s" / "vcrl-adacurl" / "seed-0" / "stages.json").read_text())["train"]
    assert tr["band_items"] >= 1 and isinstance(tr["band_widened"], bool)
    assert "band_items" not in json.loads((tmp_path / "s" / "grpo" / "seed-0" / "stages.json")
                                          .read_text())["train"]
    for png in ("evidence_curve.png", "evidence_eval.png"):
        assert (tmp_path / "r" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every run saw the same held-out items: the base eval's draw
    ids = {x["id"] for x in base["per_item"]}
    for arm in ("grpo", "vcrl-adacurl"):
        after = json.loads((tmp_path / "s" / arm / "seed-0" / "eval" / "after.json").read_text())
        assert {x["id"] for x in after["per_item"]} == ids
    r2 = subprocess.run([EXE, "study", str(f), "--report-only"], capture_output=True,
                        text=True, env=env, timeout=600)
    assert r2.returncode == 0 and "finished earlier" in r2.stdout, r2.stdout[-3000:]
