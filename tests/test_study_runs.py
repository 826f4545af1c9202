"""Fast checks of the study pieces that the parallel runner and the GPU runs rely on:
`teachloop study --run`, the learning curve's common end point, and the student's dtype."""

from __future__ import annotations

import pytest
import yaml

from teachloop.errors import UserError
from teachloop.study import load_spec, parse_only


def _spec(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "preset": "smoke", "seeds": [0, 1],
                                 "arms": [{"name": "a", "set": ["train.mode=grpo"]},
                                          {"name": "b", "set": ["train.mode=vcrl"]}]}))
    return load_spec(f)


def test_run_filter_selects_arm_seed_pairs_and_base(tmp_path):
    spec = _spec(tmp_path)
    assert parse_only(None, spec) is None
    assert parse_only(["a:1"], spec) == {"a:1"}
    assert parse_only(["a"], spec) == {"a:0", "a:1"}
    assert parse_only([":0", "base"], spec) == {"a:0", "b:0", "base"}
    assert parse_only(["a:0,b:1"], spec) == {"a:0", "b:1"}
    with pytest.raises(UserError, match="no arm 'c'"):
        parse_only(["c:0"], spec)
    with pytest.raises(UserError, match="seed 7 is not among"):
        parse_only(["a:7"], spec)
    with pytest.raises(UserError, match="integer"):
        parse_only(["a:x"], spec)


def test_run_filter_runs_nothing_else_and_makes_no_table(tmp_path, monkeypatch):
    """`--run base` evaluates only the initial model (here: nothing, eval.before=true) and
    touches no run directory; the table is left to --report-only."""
    import teachloop.study as study

    spec = _spec(tmp_path)
    ran = []
    monkeypatch.setattr("teachloop.run.main", lambda cfg, **kw: ran.append(cfg.run.out))
    monkeypatch.setattr(study, "run_numbers", lambda run_dir: {})
    out = study.main(spec, only=["b:1"])
    assert ran == [str(tmp_path / "out" / "b" / "seed-1")] and out == {"ran": ["b:1"]}
    assert not (tmp_path / "out" / "study.json").exists()


def _run(steps, curve_steps, after, curve_ids=("x", "y")):
    return {"steps": steps, "_after": {i: after for i in curve_ids},
            "_curve": {st: {i: 0.1 for i in curve_ids} for st in curve_steps}}


def test_curve_puts_every_runs_final_point_at_one_step():
    """Runs stop on the completion budget a few steps apart (37, 40): the final evals of both
    seeds make one point at step 40, not a point at 37 from one seed and one at 40 from the
    other (which plotted as spikes)."""
    from teachloop.study_evidence import _curves

    numbers = {"arm": {0: _run(37, [0, 10, 20, 30], 0.5), 1: _run(40, [0, 10, 20, 30, 40], 0.3)}}
    c = _curves(None, numbers, set(), None)["arm"]
    assert c["step"] == [0, 10, 20, 30, 40]
    assert c["mean"][-1] == pytest.approx(0.4)  # both seeds' final evals, not seed 1's curve
    assert c["mean"][:-1] == pytest.approx([0.1] * 4)


def test_student_dtype_reaches_the_local_backend_and_the_eval(monkeypatch):
    from teachloop.agents.backends import LocalBackendConfig
    from teachloop.agents.build import backend_for
    from teachloop.config import ConfigError, load_config
    from teachloop.heldout import eval_settings

    cfg = load_config("smoke", None, ["student.dtype=float32"])
    assert backend_for(cfg.student).inner.config.dtype == "float32"
    assert eval_settings(cfg, None)["dtype"] == "float32"
    monkeypatch.setenv("TEACHLOOP_LOCAL_DTYPE", "bfloat16")
    assert LocalBackendConfig().dtype == "bfloat16"  # the 'auto' default comes from the env
    auto = load_config("smoke", None, [])
    assert backend_for(auto.student).inner.config.dtype == "bfloat16"
    with pytest.raises(ConfigError, match="dtype"):
        load_config("smoke", None, ["student.dtype=float8"])


def test_band_notes_flag_arms_whose_fine_band_widened():
    """The difficulty-filter ablation is plain GRPO in a seed where the fine band had to widen
    to [0, 1]; the evidence table says so, per arm, with the count of such seeds."""
    from teachloop.study_evidence import _band_notes

    numbers = {"filter": {0: {"band items": 32, "band widened": 1.0},
                          1: {"band items": 3, "band widened": 0.0}},
               "adacurl": {0: {"band items": 5, "band widened": 0.0}},
               "grpo": {0: {}}}
    notes = _band_notes(numbers)
    assert notes == ["filter: the fine band [0.05, 0.95] held too few items and widened to [0, 1] "
                     "in 1 of 2 seeds (items in the band used: 3–32)"]
