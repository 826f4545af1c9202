"""The CLI as users run it: a real subprocess, exit codes, stderr.  pytest tests/test_cli.py"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from teachloop.curriculum.items import Item
from teachloop.curriculum.pool import open_pool
from teachloop.config import ConfigError, TeachloopConfig, all_keys, load_config, parse_override

EXE = shutil.which("teachloop", path=str(Path(sys.executable).parent)) or "teachloop"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1")
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def assert_user_error(r: subprocess.CompletedProcess[str], needle: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0], lines[0]


# --- config ------------------------------------------------------------------------------

def test_presets_load_and_validate():
    for preset in ("quickstart", "smoke"):
        cfg = load_config(preset)
        assert isinstance(cfg, TeachloopConfig)
    assert load_config("smoke").probe.attempts == 4


def test_overrides_layer_and_type_check(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("teacher:\n  max_turns: 5\nprobe:\n  attempts: 16\n")
    cfg = load_config("smoke", f, ["teacher.max_turns=7", "seeds.families=a.b,c.d",
                                   "teacher.model.temperature=0.5"])
    assert cfg.teacher.max_turns == 7 and cfg.probe.attempts == 16
    assert cfg.seeds.families == ["a.b", "c.d"]
    assert cfg.teacher.model.temperature == 0.5
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(None, None, ["teacher.max_turns=lots"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("teacher.max_turns")
    with pytest.raises(ConfigError, match="teacher.kind"):
        load_config(None, None, ["teacher.kind=oracle"])


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError) as e:
        load_config(None, None, ["teacher.max_turn=3"])
    assert "did you mean teacher.max_turns" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(None, None, ["max_steps=3"])
    assert "train.max_steps" in str(e.value)


def test_every_key_has_help():
    keys = all_keys()
    assert len(keys) > 10
    assert all(h for h in keys.values()), [k for k, h in keys.items() if not h]
    # the teacher section is the loop's own options model plus its backend: each loop option
    # is a teacher.* key, declared once (agents/config.py)
    from teachloop.agents.config import TeacherLoopOptions

    assert {f"teacher.{k}" for k in TeacherLoopOptions.model_fields} <= set(keys)
    assert "teacher.model.temperature" in keys and "sandbox.require_isolation" in keys


def test_yaml_numbers_and_one_line_errors(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-6 as a string; the loader reads it as a float everywhere
    assert load_config(None, None, ["train.learning_rate=1e-6"]).train.learning_rate == 1e-6
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  learning_rate: 3e-5\n  args: {weight_decay: 1E-2}\n")
    cfg = load_config(None, f)
    assert cfg.train.learning_rate == 3e-5 and cfg.train.args["weight_decay"] == 0.01
    for override, msg in [
        ("probe.chunk_seqs=0", "probe.chunk_seqs must be >= 1, got 0"),
        ("train.mode=ppo", "train.mode must be 'grpo', 'vcrl', 'adacurl' or 'vcrl+adacurl'"),
        ("train.batch_size=6", "train.batch_size (6) must be a multiple of train.num_generations (4)"),
        ("teacher.easier_at=0.9", "teacher: easier_at must be below harder_above"),
        ("train.report_to=mlflow", "train.report_to must be 'none', 'tensorboard', 'trackio' or"),
        ("train.args={learning_rate: 0.1}", "set train.learning_rate, not train.args.learning_rate"),
        ("eval=3", "eval: expected a mapping, got 3"),
    ]:
        with pytest.raises(ConfigError) as e:
            load_config(None, None, [override])
        assert msg in str(e.value) and "\n" not in str(e.value), (override, str(e.value))
    with pytest.raises(ConfigError, match="online mode needs a curriculum mode"):
        load_config(None, None, ["online.enabled=true", "train.mode=grpo"])


def test_saved_config_round_trips(tmp_path):
    import yaml

    from teachloop.config import config_from_dict, dump_yaml, to_dict, yaml_load

    cfg = load_config("quickstart", None, ["train.learning_rate=1e-6", "teacher.stepping_stones=true",
                                           "train.args={bf16: false}", "sandbox.require_isolation=true"])
    text = dump_yaml(cfg)
    assert to_dict(config_from_dict(yaml_load(text))) == to_dict(cfg)
    # and for any YAML 1.1 reader (report.py reads config.yaml with yaml.safe_load)
    assert yaml.safe_load(text)["train"]["learning_rate"] == 1e-6
    assert "teacher:\n" in text and "\n  model:\n" in text  # one teacher section, no second tree


# --- CLI ---------------------------------------------------------------------------------

def test_help_and_version():
    r = cli("--help")
    assert r.returncode == 0 and "pool" in r.stdout and "version" in r.stdout
    r = cli("version")
    assert r.returncode == 0 and r.stdout.startswith("teachloop ")


def test_config_command_prints_resolved_yaml():
    r = cli("config", "--preset", "smoke", "--set", "train.max_steps=3")
    assert r.returncode == 0, r.stderr
    assert "max_steps: 3" in r.stdout
    r = cli("config", "--set", "train.learning_rate=1e-6")
    assert r.returncode == 0, r.stderr
    assert "  learning_rate: 1.0e-06\n" in r.stdout  # a float (1e-06), as YAML 1.1 spells it
    r = cli("config", "--explain")
    assert r.returncode == 0 and "teacher.stepping_stones" in r.stdout and "report_to" in r.stdout


def test_config_schema_covers_the_tree():
    import json

    r = cli("config", "--schema")
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    defs = schema["$defs"]
    assert set(schema["properties"]) == {k.split(".")[0] for k in all_keys()}
    for name, d in defs.items():  # editors flag unknown keys and missing help
        assert d["additionalProperties"] is False, name
        assert all(p.get("description") for p in d["properties"].values()), name
    assert defs["TeacherSection"]["properties"]["kind"]["enum"] == ["llm", "procedural", "auto"]
    assert defs["TrainSection"]["properties"]["report_to"]["enum"] == [
        "none", "tensorboard", "trackio", "wandb"]


def test_config_command_and_run_write_the_same_config(tmp_path):
    """`teachloop config` resolves what `teachloop run` writes to config.yaml (same default
    preset, same overrides). The run stops at its seeds stage (an unknown family)."""
    sets = ["--set", "seeds.families=no.such_family", "--set", "train.learning_rate=1e-6",
            "--set", "teacher.stepping_stones=true"]
    for preset in ([], ["--preset", "smoke"]):
        out = tmp_path / f"run{len(preset)}"
        r = cli("run", *preset, *sets, "--out", str(out))
        assert_user_error(r, "no.such_family")
        shown = cli("config", *preset, *sets, "--set", f"run.out={out}")
        assert shown.returncode == 0, shown.stderr
        assert (out / "config.yaml").read_text() == shown.stdout
    assert "per_family: 3\n" in (tmp_path / "run0" / "config.yaml").read_text()  # quickstart


def test_verbose_logs_debug_through_rich(capsys):
    import logging

    from rich.logging import RichHandler

    from teachloop import cli as cli_mod

    root, ours = logging.getLogger(), logging.getLogger("teachloop")
    saved = root.handlers[:], root.level, ours.level
    try:
        with pytest.raises(SystemExit):  # typer's standalone mode exits 0
            cli_mod.main(["--verbose", "version"])
        assert logging.getLogger("teachloop").isEnabledFor(logging.DEBUG)
        assert any(isinstance(h, RichHandler) for h in root.handlers)
        logging.getLogger("teachloop.test").debug("a debug line")
        assert "a debug line" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            cli_mod.main(["version"])
        assert not logging.getLogger("teachloop").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("teachloop").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        ours.setLevel(saved[2])


def test_sandbox_setting_reaches_the_sandbox(monkeypatch):
    from teachloop.config import apply_process_settings
    from teachloop.evals import sandbox

    seen = []
    monkeypatch.setattr(sandbox, "set_require_isolation", seen.append, raising=False)
    apply_process_settings(load_config(None, None, ["sandbox.require_isolation=true"]))
    apply_process_settings(load_config(None))
    # false leaves the decision to TEACHLOOP_REQUIRE_ISOLATION (None), never overriding it
    assert seen == [True, None]


def test_pool_stats_shows_counts_and_histogram(tmp_path):
    store = open_pool(tmp_path)
    seed = Item(family="math.rg.chain_sum", prompt="1+2+3")
    kids = [seed.child(f"1+{i}", "easier") for i in range(3)]
    store.insert_many([seed, *kids])
    store.record_many([(seed.id, 8, 2), (kids[0].id, 8, 8), (kids[1].id, 8, 0)])
    store.reject(family="math.rg.chain_sum", stage="parse", reason="no answer", proposal="?")
    store.close()
    r = cli("pool", "stats", str(tmp_path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "4 items, 3 measured, 1 rejected" in out
    assert "math.rg.chain_sum" in out and "easier" in out and "no answer" in out
    assert "pass rate p" in out and "█" in out


def test_pool_show_walks_lineage(tmp_path):
    store = open_pool(tmp_path)
    seed = Item(family="math.word", prompt="seed")
    kid = seed.child("kid", "harder")
    store.insert_many([seed, kid])
    store.close()
    r = cli("pool", "show", str(tmp_path), kid.id[:8])
    assert r.returncode == 0, r.stderr
    assert "parent" in r.stdout and seed.id in r.stdout
    assert_user_error(cli("pool", "show", str(tmp_path), "zzzz"), "no item")


def test_user_errors_are_one_line_exit_2(tmp_path):
    assert_user_error(cli("pool", "stats", str(tmp_path / "nope")), "run directory not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(cli("pool", "stats", str(empty)), "no pool in")
    assert_user_error(cli("config", "--set", "teacher.max_turn=3"), "did you mean")
    assert_user_error(cli("config", "--preset", "nosuch"), "unknown preset")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("teacher: [unclosed\n")
    assert_user_error(cli("config", "--config", str(bad_yaml)), "not valid YAML")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "pool.sqlite").write_bytes(os.urandom(8192))
    assert_user_error(cli("pool", "stats", str(corrupt)), "not a usable teachloop pool")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    c = sqlite3.connect(foreign / "pool.sqlite")
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    assert_user_error(cli("pool", "stats", str(foreign)), "not a teachloop pool")
