"""The HTML report over a run directory built from real parts.  pytest tests/test_report.py

The pool is a real SQLite pool with real seed items (reasoning-gym chain_sum), children with
lineage, stats and a rejection; the train log, online rounds and eval files are synthetic
records in the formats teachloop/train.py, the online loop and evals/bench.py write
(teachloop/rundir.py): they are the report's input, the test checks the rendering.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from teachloop.curriculum.pool import open_pool
from teachloop import rundir
from teachloop.config import TeachloopConfig, dump_yaml
from teachloop.errors import UserError
from teachloop.report import build_report, find_chromium, png_size, report_command, screenshot

HOSTILE = "What is 2 + 2? <script>alert(1)</script> & \"quotes\""


def _eval(model: str, p1: float, pk: float, avg: float) -> dict:
    return {"bench": "math.rg.chain_sum@heldout", "model": model, "k": 4, "n_items": 8,
            "temperature": 1.0, "max_tokens": 64,
            "metrics": {"pass@1": p1, "pass@k": pk, "avg@k": avg},
            "per_item": [{"id": f"i{i}", "n": 4, "c": i % 3} for i in range(8)], "wall_s": 12.5}


def _pool(run: Path) -> None:
    from teachloop.evals.families import get_family

    seeds = get_family("math.rg.chain_sum").seeds(6, seed=0)
    kids = []
    for k, s in enumerate(seeds[:3]):
        e1 = s.child(f"{s.prompt}\n(easier variant {k})", "easier", answer=s.answer)
        h1 = s.child(f"{s.prompt}\n(harder variant {k})", "harder", answer=s.answer)
        h2 = h1.child(HOSTILE if k == 0 else f"{h1.prompt} (turn 2)", "harder", answer="4")
        kids += [e1, h1, h2]
    # the chain went on from an out-of-band variant (rejected, not in the pool)
    rejected = seeds[0].child(f"{seeds[0].prompt} (rejected variant)", "easier", answer="1")
    kids.append(rejected.child(f"{seeds[0].prompt} (from the rejected one)", "easier", answer="2"))
    with open_pool(run) as store:
        store.insert_many(seeds + kids)
        stats = [(it.id, 8, float(n % 9)) for n, it in enumerate(seeds + kids)]
        store.record_many(stats[:-1])  # one item stays unmeasured
        store.reject(family="math.rg.chain_sum", stage="validate", reason="gold mismatch",
                     proposal="<b>bad</b>", parent_id=seeds[0].id, direction="harder", turn=1)
        store.reject(family="math.rg.chain_sum", stage="probe", reason="p outside keep band",
                     proposal="x", parent_id=seeds[1].id, direction="easier", turn=1)


def _train_log(run: Path) -> None:
    for step in range(1, 11):
        rec = {"step": step, "loss": 0.1 / step, "kl": 0.001 * step, "reward": 0.2 + 0.05 * step,
               "reward_std": 0.3, "rewards/correctness_reward/mean": 0.15 + 0.05 * step,
               "rewards/format_reward/mean": 0.9, "frac_reward_zero_std": 0.5,
               "curriculum/informative_frac": 1.0 if step > 2 else 0.75,
               "curriculum/informative_frac_rolled": 0.5, "curriculum/overhead_s": 0.01,
               "vcrl/kappa": 0.3 if step <= 5 else 0.8, "vcrl/bank_size": min(step, 6),
               "vcrl/dropped": 1.0, "vcrl/refilled": 1.0 if step > 1 else 0.0,
               "adacurl/cs": (0.1 * step) if step < 4 else 0.33 + 0.02 * (step - 4),
               "adacurl/n_active": 1.0 if step < 4 else 2.0,
               "adacurl/merges": 0.0 if step < 4 else 1.0, "step_time": 8.0}
        rundir.append_jsonl(run / rundir.TRAIN_LOG, rec)
    rundir.append_jsonl(run / rundir.TRAIN_LOG, {"step": 10, "train_runtime": 80.0})
    for r, step, acc in ((1, 3, 2), (2, 7, 5)):
        rundir.append_jsonl(run / rundir.ONLINE_ROUNDS, {
            "round": r, "step": step, "frontier": 4, "proposals": 6, "accepted": acc,
            "rejected": 6 - acc, "new_items": acc, "wall_s": 30.0})


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    _pool(run)
    (run / rundir.CONFIG).write_text(dump_yaml(TeachloopConfig()))
    rundir.write_json_atomic(run / rundir.STAGES, {"seed": {"done": True, "wall_s": 1.5},
                                                   "probe": {"done": True, "wall_s": 42.0}})
    _train_log(run)
    rundir.write_json_atomic(run / rundir.EVAL_BEFORE, _eval("embedded", 0.25, 0.5, 0.25))
    rundir.write_json_atomic(run / rundir.EVAL_AFTER, _eval("train/final", 0.375, 0.5, 0.3125))
    return run


@pytest.fixture(scope="module")
def full_report(full_run):
    return build_report(full_run, screenshot=False)


def _html(res) -> str:
    return res.html.read_text(encoding="utf-8")


def _section(text: str, title: str) -> str:
    start = text.index(title)
    nxt = text.find("<h2>", start + 1)
    return text[start:nxt if nxt != -1 else len(text)]


def test_report_renders_every_section_with_valid_pngs(full_run, full_report):
    res = full_report
    assert res.html == full_run / rundir.REPORT_HTML and res.html.exists()
    assert res.missing == [] and set(res.present) >= {"yield", "timeline", "rewards", "eval"}
    text = _html(res)
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert {Path(s).name for s in srcs} == {p.name for p in res.pngs}
    assert {"yield.png", "pass_rates.png", "timeline.png", "rewards.png", "eval.png"} <= set(srcs)
    for s in srcs:
        p = res.html.parent / s  # relative to index.html
        assert p.exists(), s
        w, h = png_size(p)
        assert 300 <= w <= 1200 and 150 <= h <= 900, (s, w, h)  # no huge images
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "math.rg.chain_sum" in text and "vcrl+adacurl" in text  # config summary
    assert "gold mismatch" in text  # rejection reasons from the pool


def test_report_escapes_item_text(full_report):
    text = _html(full_report)
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # shown, escaped, in the lineage
    assert "<b>bad</b>" not in text


def test_lineage_shows_variants_of_rejected_parents(full_report):
    text = _html(full_report)
    assert "(from the rejected one)" in text and "from rejected" in text


def test_timeline_marks_teacher_rounds_and_merges(full_report):
    sec = _section(_html(full_report), "curriculum timeline")
    assert 'src="timeline.png"' in sec
    assert "teacher round" in sec and "bucket merges at step 4" in sec
    rows = re.findall(r"<tr><td class=\"n\">(\d)</td><td class=\"n\">(\d+)</td>", sec)
    assert rows == [("1", "3"), ("2", "7")]  # both rounds, at their steps


def test_eval_delta_table(full_run, full_report):
    sec = _section(_html(full_report), "evaluation before vs after")
    before = rundir.read_json(full_run / rundir.EVAL_BEFORE)["metrics"]
    after = rundir.read_json(full_run / rundir.EVAL_AFTER)["metrics"]
    for m in ("pass@1", "pass@k", "avg@k"):
        d = f"{after[m] - before[m]:+.3f}"
        row = re.search(rf"<td>{re.escape(m)}</td><td class=\"n\">([^<]+)</td>"
                        rf"<td class=\"n\">([^<]+)</td><td class=\"n\"><span[^>]*>([^<]+)</span>",
                        sec)
        assert row is not None, m
        assert row.groups() == (f"{before[m]:.3f}", f"{after[m]:.3f}", d)
    assert "+0.125" in sec and "+0.000" in sec and "+0.062" in sec


def test_pool_only_run_renders_not_run_yet_notes(tmp_path, monkeypatch):
    import teachloop.report as report

    _pool(tmp_path)
    monkeypatch.setattr(report, "find_chromium", lambda: None)  # as on a host without it
    res = build_report(tmp_path)
    text = _html(res)
    assert set(res.missing) == {"timeline", "rewards", "eval"}
    assert text.count("not run yet") >= 4  # config, stages, timeline, rewards, eval
    assert {p.name for p in res.pngs} == {"yield.png", "pass_rates.png"}
    assert res.screenshot is None and "Chromium is not installed" in text
    assert "Chromium is not installed" in res.screenshot_note


def test_empty_and_missing_run_dirs(tmp_path):
    res = build_report(tmp_path, out=tmp_path / "r", screenshot=False)
    assert res.present == [] and res.pngs == [] and "no-screenshot" in _html(res)
    assert res.html == tmp_path / "r" / "index.html" and "not run yet" in _html(res)
    with pytest.raises(UserError, match="no run directory"):
        report_command(tmp_path / "nope")


def test_screenshot(full_run, full_report, tmp_path):
    if find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    png = screenshot(full_report.html, tmp_path / "shot.png", width=1280)
    assert png is not None and png.exists()
    w, h = png_size(png)
    assert w == 1280 and h >= 800
    from PIL import Image

    with Image.open(png) as im:
        lo, hi = im.convert("L").getextrema()
    assert hi - lo > 100, "the screenshot is a blank page"


def test_css_width_matches_the_screenshot_height_estimate():
    from teachloop.report import CSS
    from teachloop.screenshot import CONTENT_WIDTH

    assert f"main{{max-width:{CONTENT_WIDTH}px;" in CSS
