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
