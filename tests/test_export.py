"""``teachloop export``: a real pool in, a real Hugging Face dataset folder out.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/test_export.py -p no:cacheprovider

Builds one small pool (seeds of two families, a lineage of easier/harder variants, stats, a
rejection), exports it as parquet and jsonl, reads it back with ``datasets.load_dataset`` and
checks every column against the pool; filters against subsets computed from the pool; the
card, its histograms and the one-line user errors. About 15 s on 2 cores.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from teachloop.curriculum.items import ITEM_FIELDS, Item
from teachloop.curriculum.pool import open_pool
from teachloop.config import TeachloopConfig, dump_yaml
from teachloop.errors import UserError
from teachloop.export import DATA_FILES, JSON_COLUMNS, column_docs, export

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MATH, CODE = "math.rg.chain_sum", "code.deduction"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from teachloop.evals.families import get_family

    run = tmp_path_factory.mktemp("run")
    math_seeds = get_family(MATH).seeds(4, seed=0)
    code_seeds = get_family(CODE).seeds(3, seed=0)
    m0, c0 = math_seeds[0], code_seeds[0]
    kw = dict(teacher="llm:test-teacher", prompt_version="math-v2")
    easier = Item(family=MATH, prompt="What is 1 + 2?", answer="3", parent_id=m0.id,
                  root_id=m0.id, direction="easier", turn=1,
                  checker={"question": "1 + 2"}, validation={"checks": ["executed"]}, **kw)
    harder = Item(family=MATH, prompt="What is 123 - 456 + 789 - 1000?", answer="-544",
                  parent_id=m0.id, root_id=m0.id, direction="harder", turn=1,
                  checker={"question": "123 - 456 + 789 - 1000"}, metadata={"knobs": {"n": 4}},
                  **kw)
    harder2 = Item(family=MATH, prompt="What is 1234 - 4567 + 7890 - 10000 + 5?",
                   answer="-5438", parent_id=harder.id, root_id=m0.id, direction="harder",
                   turn=2, checker={"question": "1234 - 4567 + 7890 - 10000 + 5"}, **kw)
    code_harder = Item(family=CODE, prompt="What does `f('abcd', 'bd')` return? ...",
                       answer="2", parent_id=c0.id, root_id=c0.id, direction="harder", turn=1,
                       checker={**c0.checker, "input": "'abcd', 'bd'"},
                       teacher="llm:test-teacher", prompt_version="code-v1")
    items = math_seeds + code_seeds + [easier, harder, harder2, code_harder]
    with open_pool(run) as store:
        assert store.insert_many(items) == len(items)
        # every item measured with 4 attempts except the last code seed (p stays None)
        stats = [(it.id, 4, float(i % 5)) for i, it in enumerate(items) if it is not code_seeds[2]]
        store.record_many(stats)
        store.record_many([(easier.id, 2, 2.0)])  # p = 4/6: a float that JSON must keep exact
        store.reject(family=MATH, stage="validate", reason="stated answer 7 | executed 8",
                     proposal="What is 3 + 4?", parent_id=m0.id, direction="easier", turn=1,
                     teacher="llm:test-teacher", prompt_version="math-v2")
        store.reject(family=CODE, stage="parse", reason="no code block", proposal="...",
                     parent_id=c0.id, direction="harder", turn=1)
    (run / "config.yaml").write_text(dump_yaml(TeachloopConfig()))
    (run / "generate.json").write_text(json.dumps({"run_id": "gen-test-1234"}))
    return run


@pytest.fixture(scope="module")
def pool_items(run_dir):
    with open_pool(run_dir, create=False) as store:
        return {it.id: it for it in store.query()}


def _load(out, fmt, cache):
    from datasets import load_dataset

    builder = "parquet" if fmt == "parquet" else "json"
    return load_dataset(builder, data_files=str(out / "data" / f"*.{fmt}"), split="train",
                        cache_dir=str(cache))


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_round_trip(run_dir, pool_items, tmp_path, fmt):
    res = export(run_dir, fmt=fmt, out=tmp_path / "out")
    assert res.out == tmp_path / "out" and res.n_rows == len(pool_items)
    assert (res.out / DATA_FILES[fmt]).is_file() and res.card == res.out / "README.md"
    ds = _load(res.out, fmt, tmp_path / "cache")
    assert set(ITEM_FIELDS) <= set(ds.column_names)
    assert {"chain_depth", "n_children"} <= set(ds.column_names) and ds.column_names == res.columns
    assert len(ds) == len(pool_items)
    assert sorted(ds["id"]) == sorted(pool_items)
    for row in ds:
        it = pool_items[row["id"]]
        for k in JSON_COLUMNS:
            assert isinstance(row[k], str) and json.loads(row[k]) == getattr(it, k), k
        for k in set(ITEM_FIELDS) - set(JSON_COLUMNS):
            assert row[k] == getattr(it, k), (k, row[k], getattr(it, k))
        assert row["chain_depth"] == it.turn
        assert row["n_children"] == sum(1 for o in pool_items.values() if o.parent_id == it.id)
    by_id = {r["id"]: r for r in ds}
    assert any(r["p"] is None for r in ds) and any(r["parent_id"] is None for r in ds)
    assert any(r["p"] == 4 / 6 for r in ds)  # exact float, not rounded
    assert max(r["n_children"] for r in by_id.values()) == 2


def _expected(items, families=None, direction=None, band=None, measured_only=False):
    def fam_ok(f):
        return families is None or any(
            f.startswith(s[:-1]) if s.endswith("*") else f == s for s in families)

    lo, hi = band or (None, None)
    out = set()
    for it in items.values():
        if not fam_ok(it.family) or (direction and it.direction != direction):
            continue
        if (lo is not None or hi is not None) and it.difficulty is None:
            continue
        if (lo is not None and it.difficulty < lo) or (hi is not None and it.difficulty > hi):
            continue
        if measured_only and it.attempts == 0:
            continue
        out.add(it.id)
    return out


@pytest.mark.parametrize("filters", [
    dict(families=["math.*"]),
    dict(families=[CODE]),
    dict(families=[MATH, "code.*"], direction="harder"),
    dict(direction="easier"),
    dict(direction="seed", measured_only=True),
    dict(band=(0.25, 0.75)),
    dict(band=(None, 0.5), families=["math.*"]),
    dict(band=(0.75, None)),
], ids=str)
def test_filters(run_dir, pool_items, tmp_path, filters):
    want = _expected(pool_items, **filters)
    assert want and want != set(pool_items), "the filter must select a proper subset"
    kw = dict(filters)
    if "band" in kw:
        kw["difficulty"] = kw.pop("band")
    res = export(run_dir, fmt="jsonl", out=tmp_path / "out", **kw)
    rows = [json.loads(line) for line in (res.out / DATA_FILES["jsonl"]).read_text().splitlines()]
    assert {r["id"] for r in rows} == want and res.n_rows == len(want) == len(rows)
    card = res.card.read_text()
    assert "## Filters" in card and (f"--family {filters['families'][0]}" in card
                                     if "families" in filters else True)


def test_card(run_dir, pool_items, tmp_path):
    res = export(run_dir, out=tmp_path / "out")
    card = res.card.read_text()
    m = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert m, "card must open with YAML front matter"
    front = yaml.safe_load(m.group(1))
    cfg = front["configs"][0]
    assert cfg["config_name"] == "default"
    assert cfg["data_files"][0]["path"] == DATA_FILES["parquet"]
    assert (res.out / cfg["data_files"][0]["path"]).is_file()
    assert {"teachloop", "synthetic", "curriculum"} <= set(front["tags"])
    assert front["size_categories"] == ["n<1K"] and front["task_categories"]
    # counts tables, computed from the pool
    for fam in (MATH, CODE):
        n = sum(1 for it in pool_items.values() if it.family == fam)
        assert re.search(rf"^\| {re.escape(fam)} \| {n} \|", card, re.M), fam
    for d in ("seed", "easier", "harder"):
        n = sum(1 for it in pool_items.values() if it.direction == d)
        assert f"| {d} | {n} |" in card
    assert re.search(r"^\| 2 \| 1 \|$", card, re.M)  # one item at turn 2
    # rejections by stage and reason (the '|' in the reason is escaped)
    assert "| validate | stated answer 7 \\| executed 8 | 1 |" in card
    assert "| parse | no code block | 1 |" in card
    # settings, teachers, columns (help text from the Item dataclass), filters
    assert "`config.yaml`" in card and "keep_min_p" in card and "gen-test-1234" in card
    assert "llm:test-teacher" in card and "math-v2" in card and "code-v1" in card
    for col, help_ in column_docs().items():
        assert f"| `{col}` |" in card and help_ in card
    assert "JSON string" in card and "Export filters: `none`" in card
    # histograms: linked, present, real PNGs
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card)
    assert len(links) == 3
    for name in links:
        data = (res.out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, name
    assert {p.name for p in res.files} >= set(links) | {"README.md"}


def test_replace_and_crash_leave_whole_exports(run_dir, pool_items, tmp_path, monkeypatch):
    import teachloop.export as ex

    out = tmp_path / "out"
    export(run_dir, fmt="jsonl", out=out)
    res = export(run_dir, fmt="jsonl", out=out, families=[CODE])
    lines = (out / DATA_FILES["jsonl"]).read_text().splitlines()
    assert len(lines) == res.n_rows == sum(1 for it in pool_items.values() if it.family == CODE)

    def boom(**kw):
        raise RuntimeError("killed while writing the card")

    monkeypatch.setattr(ex, "_card", boom)
    with pytest.raises(RuntimeError):
        export(run_dir, fmt="parquet", out=out)
    # the previous export is untouched, no half folder is left beside it
    assert (out / DATA_FILES["jsonl"]).read_text().splitlines() == lines
    assert not (out / DATA_FILES["parquet"]).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("not an export")
    with pytest.raises(UserError, match="not a teachloop export"):
        export(run_dir, out=keep)
    assert (keep / "notes.txt").read_text() == "not an export"


def _one_line_error(**kw) -> str:
    with pytest.raises(UserError) as e:
        export(**kw)
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_user_errors(run_dir, pool_items, tmp_path):
    out = tmp_path / "out"
    assert "not found" in _one_line_error(run_dir=tmp_path / "nope", out=out)
    (tmp_path / "empty").mkdir()
    assert "no pool" in _one_line_error(run_dir=tmp_path / "empty", out=out)
    assert "unknown export format 'csv'" in _one_line_error(run_dir=run_dir, fmt="csv", out=out)
    msg = _one_line_error(run_dir=run_dir, families=["nope.*"], direction="harder", out=out)
    assert "--family nope.*" in msg and "--direction harder" in msg
    assert f"the pool has {len(pool_items)} items" in msg
    assert "empty difficulty band" in _one_line_error(run_dir=run_dir, difficulty=(0.8, 0.2))
    assert "[0, 1]" in _one_line_error(run_dir=run_dir, difficulty=(-1.0, None))
    assert "--direction" in _one_line_error(run_dir=run_dir, direction="sideways")
    assert not out.exists()


def test_push_to_hub_offline_is_a_user_error(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = _one_line_error(run_dir=run_dir, out=tmp_path / "out",
                          push_to_hub="someone/teachloop-test")
    assert "HF_HUB_OFFLINE" in msg
    assert not (tmp_path / "out").exists()  # checked before any work


def test_export_command_prints_summary(run_dir, tmp_path):
    import typer
    from typer.testing import CliRunner

    from teachloop.export import export_command

    app = typer.Typer()
    app.command()(export_command)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, [str(run_dir), "--format", "jsonl", "--out", str(out),
                                 "--family", "math.*", "--min-difficulty", "0.5",
                                 "--measured-only"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "rows" in r.output and "README.md" in r.output and "train.jsonl" in r.output
    assert "--family math.* --min-difficulty 0.5 --measured-only" in r.output
    r = CliRunner().invoke(app, [str(run_dir), "--format", "xml", "--out", str(out)])
    assert isinstance(r.exception, UserError)
