"""The item schema and the pool store, on both dialects (SQLite, and PostgreSQL in a throw-away
cluster: the ``new_pool_url`` fixture in conftest.py).  Run: pytest tests/test_pool.py -q"""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teachloop.curriculum.items import ITEM_FIELDS, Item, item_id, normalize_prompt
from teachloop.curriculum.pool import SCHEMA_VERSION, PoolError, PoolStore, open_pool, resolve_pool_path

FAMILIES = ["math.rg.chain_sum", "math.word", "code.deduction", "code.generation"]
texts = st.text(alphabet=string.ascii_letters + string.digits + " +-*/=?\n\t", max_size=60)
settings.register_profile("pool", deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile("pool")


def fresh(new_pool_url) -> PoolStore:
    return open_pool(new_pool_url())


# --- schema ----------------------------------------------------------------------------

json_vals = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


@given(
    family=st.sampled_from(FAMILIES), prompt=texts, answer=texts,
    checker=st.dictionaries(st.text(max_size=5), json_vals, max_size=3),
    direction=st.sampled_from(["seed", "easier", "harder"]), turn=st.integers(0, 9),
    attempts=st.integers(0, 64),
)
def test_item_json_round_trip(family, prompt, answer, checker, direction, turn, attempts):
    it = Item(family=family, prompt=prompt, answer=answer, checker=checker,
              direction=direction, turn=turn, attempts=attempts, successes=attempts / 2,
              validation={"runs": [answer, answer]}, teacher="procedural", prompt_version="v1")
    back = Item.from_json(it.to_json())
    assert back == it
    assert set(back.to_dict()) == set(ITEM_FIELDS)


def test_item_id_is_content_hash_of_normalised_prompt():
    a = Item(family="math.word", prompt="What is  2 + 2?\n")
    b = Item(family="math.word", prompt="What is 2 + 2?")
    c = Item(family="math.rg.chain_sum", prompt="What is 2 + 2?")
    assert a.id == b.id == item_id("math.word", "What is 2 + 2?")
    assert a.id != c.id  # same text, other family: another item
    assert normalize_prompt(" x \t y ") == "x y"


def test_item_rejects_bad_fields():
    with pytest.raises(ValueError, match="direction"):
        Item(family="math.word", prompt="x", direction="sideways")
    with pytest.raises(ValueError, match="unknown item fields"):
        Item.from_dict({"family": "math.word", "prompt": "x", "bogus": 1})


# --- store: insert / dedup -------------------------------------------------------------

@given(prompts=st.lists(st.tuples(st.sampled_from(FAMILIES), texts), max_size=30))
def test_insert_is_idempotent_and_dedups(new_pool_url, prompts):
    store = fresh(new_pool_url)
    items = [Item(family=f, prompt=p) for f, p in prompts]
    expected = {it.id for it in items}
    first = store.insert_many(items)
    again = store.insert_many(items)
    assert first == len(expected)
    assert again == 0
    assert len(store) == len(expected)
    for it in items:
        assert it.id in store
        got = store.get(it.id)
        assert got is not None and got.family == it.family
    store.close()


def test_insert_keeps_first_version(new_pool_url):
    store = fresh(new_pool_url)
    a = Item(family="math.word", prompt="2+2?", answer="4")
    assert store.insert(a) is True
    b = Item(family="math.word", prompt="2+2? ", answer="5")  # same id after normalising
    assert store.insert(b) is False
    assert store.get(a.id).answer == "4"


# --- lineage ---------------------------------------------------------------------------

@given(moves=st.lists(st.tuples(st.integers(0, 50), st.sampled_from(["easier", "harder"])),
                      min_size=1, max_size=25))
def test_lineage_children_and_chain(new_pool_url, moves):
    """Grow a random tree; chain() walks back to the seed, children() inverts parent_id."""
    store = fresh(new_pool_url)
    root = Item(family="math.word", prompt="seed problem")
    store.insert(root)
    nodes = [root]
    parent_of = {root.id: None}
    for k, (pick, direction) in enumerate(moves):
        parent = nodes[pick % len(nodes)]
        child = parent.child(f"variant {k} of {parent.id}", direction)
        assert store.insert(child)
        nodes.append(child)
        parent_of[child.id] = parent.id
    for n in nodes:
        chain = store.chain(n.id)
        assert chain[0].id == n.id and chain[-1].id == root.id
        assert [c.turn for c in chain] == list(range(n.turn, -1, -1))
        for a, b in zip(chain, chain[1:]):
            assert a.parent_id == b.id
        assert {c.id for c in store.children(n.id)} == {
            i for i, p in parent_of.items() if p == n.id}
        assert n.root_id == root.id
    assert {d.id for d in store.descendants(root.id)} == set(parent_of)
    store.close()


# --- stats -----------------------------------------------------------------------------

@given(batches=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 8), st.data()),
                        min_size=1, max_size=15))
def test_stats_accumulate_exactly(new_pool_url, batches):
    store = fresh(new_pool_url)
    items = [Item(family="math.word", prompt=f"q{i}") for i in range(4)]
    store.insert_many(items)
    tot = {it.id: [0, 0] for it in items}
    for idx, a, data in batches:
        s = data.draw(st.integers(0, a))
        store.record_attempts(items[idx].id, a, s)
        tot[items[idx].id][0] += a
        tot[items[idx].id][1] += s
    for iid, (a, s) in tot.items():
        it = store.get(iid)
        assert it.attempts == a and it.successes == s
        if a:
            assert it.p == pytest.approx(s / a) and it.difficulty == pytest.approx(1 - s / a)
        else:
            assert it.p is None and it.difficulty is None
    with pytest.raises(ValueError):
        store.record_attempts(items[0].id, 2, 3)
    store.close()


def test_run_directory_holds_pool_sqlite(tmp_path):
    store = open_pool(tmp_path)  # a run directory
    assert store.path == tmp_path / "pool.sqlite"


def test_queries_filter_by_family_direction_turn_difficulty(new_pool_url):
    store = fresh(new_pool_url)
    seed = Item(family="math.rg.chain_sum", prompt="1+2")
    e = seed.child("1+1", "easier")
    h = seed.child("17+25+3", "harder")
    w = Item(family="math.word", prompt="Ann has 3 apples")
    store.insert_many([seed, e, h, w])
    store.record_many([(seed.id, 4, 2), (e.id, 4, 4), (h.id, 4, 1)])
    assert {i.id for i in store.query(family="math.*")} == {seed.id, e.id, h.id, w.id}
    assert {i.id for i in store.query(family="math.rg.*")} == {seed.id, e.id, h.id}
    assert [i.id for i in store.query(direction="harder")] == [h.id]
    assert {i.id for i in store.query(turn=1)} == {e.id, h.id}
    assert {i.id for i in store.query(min_difficulty=0.4, max_difficulty=0.8)} == {seed.id, h.id}
    assert [i.id for i in store.query(measured=False)] == [w.id]
    store.set_bucket([(h.id, 2)])
    assert [i.id for i in store.query(bucket=2)] == [h.id]
    assert store.counts("direction") == {"easier": 1, "harder": 1, "seed": 2}
    assert store.ids_with_prefix(h.id[:6]) and store.ids_with_prefix("zz") == []


def test_rejections_table(new_pool_url):
    store = fresh(new_pool_url)
    store.reject(family="code.deduction", stage="parse", reason="no python block",
                 proposal="garbage", direction="harder", turn=1)
    store.reject(family="code.deduction", stage="validate", reason="non-deterministic",
                 proposal="def f(): ...")
    store.reject(family="math.word", stage="parse", reason="no python block", proposal="x")
    assert len(store.rejections()) == 3
    assert [r["reason"] for r in store.rejections(stage="validate")] == ["non-deterministic"]
    assert store.rejection_counts()[("parse", "no python block")] == 2


# --- opening, versions, damage ---------------------------------------------------------

def test_url_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_pool_path("sqlite:///rel/pool.sqlite") == tmp_path.joinpath(
        "rel/pool.sqlite").relative_to(tmp_path)
    assert str(resolve_pool_path("sqlite:////abs/x.sqlite")) == "/abs/x.sqlite"
    with pytest.raises(PoolError, match="unsupported"):
        resolve_pool_path("postgresql://host/db")  # a server database has no file path
    with pytest.raises(PoolError, match="unsupported pool URL scheme 'mysql'"):
        open_pool("mysql://host/db")
    s = open_pool("sqlite:///rel/pool.sqlite")
    s.insert(Item(family="math.word", prompt="q"))
    s.close()
    assert len(open_pool(tmp_path / "rel", create=False)) == 1


def test_wal_mode_and_schema_version(tmp_path):
    s = open_pool(tmp_path / "p.sqlite")
    assert s.schema_version == SCHEMA_VERSION
    s.close()
    c = sqlite3.connect(tmp_path / "p.sqlite")
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c.close()


def test_newer_schema_is_refused(tmp_path):
    open_pool(tmp_path / "p.sqlite").close()
    c = sqlite3.connect(tmp_path / "p.sqlite")
    c.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    c.commit()
    c.close()
    with pytest.raises(PoolError, match="newer than this teachloop"):
        open_pool(tmp_path / "p.sqlite")


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(PoolError, match="not a usable teachloop pool"):
        open_pool(junk)
    assert junk.read_bytes().startswith(b"this is not")  # never overwritten
    foreign = tmp_path / "foreign.sqlite"
    c = sqlite3.connect(foreign)
    c.execute("CREATE TABLE users (name TEXT)")
    c.commit()
    c.close()
    with pytest.raises(PoolError, match="not a teachloop pool"):
        open_pool(foreign)
    with pytest.raises(PoolError, match="no pool"):
        open_pool(tmp_path / "missing.sqlite", create=False)


# --- two processes at once ---------------------------------------------------------------

def _writer(path: str, worker: int, n: int, overlap: int, barrier) -> None:
    store = open_pool(path)
    barrier.wait()
    # Shared prompts (both workers insert them) plus private ones; one insert per call so
    # the two processes interleave transactions as much as possible.
    for i in range(n):
        prompt = f"shared {i}" if i < overlap else f"worker {worker} item {i}"
        store.insert(Item(family="math.word", prompt=prompt))
        if i % 50 == 0:
            store.record_attempts(item_id("math.word", "shared 0"), 1, 1)
    store.close()


def test_two_processes_insert_concurrently(new_pool_url):
    path = new_pool_url()
    n, overlap = 500, 100
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, w, n, overlap, barrier)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]  # no "database is locked" or any exception
    store = open_pool(path, create=False)
    assert len(store) == overlap + 2 * (n - overlap)
    shared0 = store.get(item_id("math.word", "shared 0"))
    assert shared0.attempts == 2 * (n // 50)  # no lost update


def test_record_many_once_key_counts_a_batch_once(new_pool_url):
    store = fresh(new_pool_url)
    it = Item(family="math.test", prompt="1+1?", answer="2")
    store.insert(it)
    assert store.record_many([(it.id, 4, 1.0)], once_key="train:s1:c0") == 1
    assert store.record_many([(it.id, 4, 1.0)], once_key="train:s1:c0") == 0  # replayed batch
    assert store.record_many([(it.id, 4, 3.0)], once_key="train:s2:c0") == 1
    got = store.get(it.id)
    assert (got.attempts, got.successes) == (8, 4.0) and got.p == 0.5


def test_probe_and_training_stats_are_kept_apart(new_pool_url):
    store = fresh(new_pool_url)
    it = Item(family="math.test", prompt="2+2?", answer="4")
    store.insert(it)
    store.record_many([(it.id, 8, 2.0)], policy="SmolLM2-135M")  # probe (the default kind)
    store.record_many([(it.id, 4, 4.0)], kind="train", once_key="train:s1:c0")
    store.record_many([(it.id, 4, 3.0)], kind="train", once_key="train:s2:c0")
    got = store.get(it.id)
    assert (got.attempts, got.successes, got.p, got.difficulty) == (8, 2.0, 0.25, 0.75)
    assert (got.train_attempts, got.train_successes) == (8, 7.0)  # never moved difficulty
    assert got.probe_policy == "SmolLM2-135M"
    assert store.query(measured=True) == [got] and store.train_totals() == (1, 8, 7.0)
    untouched = Item(family="math.test", prompt="3+3?", answer="6")
    store.insert(untouched)
    store.record_many([(untouched.id, 4, 1.0)], kind="train")
    assert store.get(untouched.id).p is None and store.query(measured=False) == [store.get(untouched.id)]
    with pytest.raises(ValueError, match="kind must be"):
        store.record_many([(it.id, 1, 1.0)], kind="eval")


_V1_ITEMS = """CREATE TABLE items (
    id TEXT PRIMARY KEY, family TEXT NOT NULL, prompt TEXT NOT NULL,
    answer TEXT NOT NULL DEFAULT '', checker TEXT NOT NULL DEFAULT '{}', parent_id TEXT,
    root_id TEXT, direction TEXT NOT NULL, turn INTEGER NOT NULL DEFAULT 0,
    teacher TEXT NOT NULL DEFAULT '', prompt_version TEXT NOT NULL DEFAULT '',
    validation TEXT NOT NULL DEFAULT '{}', metadata TEXT NOT NULL DEFAULT '{}',
    attempts INTEGER NOT NULL DEFAULT 0, successes REAL NOT NULL DEFAULT 0, p REAL,
    difficulty REAL, bucket INTEGER, created_at REAL NOT NULL, updated_at REAL NOT NULL)"""


def test_a_schema_1_pool_is_upgraded_when_opened(tmp_path):
    """A pool file written by the previous teachloop (schema 1: one set of counters) opens,
    is upgraded in place, keeps its counts as probe stats and takes training stats."""
    path = tmp_path / "pool.sqlite"
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    c.execute(_V1_ITEMS)
    c.execute("CREATE TABLE rejections (rid INTEGER PRIMARY KEY AUTOINCREMENT, family TEXT NOT NULL, "
              "parent_id TEXT, direction TEXT, turn INTEGER, stage TEXT NOT NULL, reason TEXT NOT NULL, "
              "proposal TEXT NOT NULL, teacher TEXT NOT NULL DEFAULT '', prompt_version TEXT NOT NULL "
              "DEFAULT '', created_at REAL NOT NULL)")
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    c.execute("INSERT INTO schema_version VALUES (1)")
    c.execute("INSERT INTO items (id, family, prompt, direction, attempts, successes, p, difficulty, "
              "created_at, updated_at) VALUES ('abc', 'math.test', '1+1?', 'seed', 8, 6, 0.75, 0.25, 0, 0)")
    c.execute("PRAGMA application_id = 1950567504")  # the pool's marker (0x74434C50)
    c.commit()
    c.close()
    store = open_pool(path, create=False)
    assert store.schema_version == SCHEMA_VERSION == 2
    got = store.get("abc")
    assert (got.attempts, got.difficulty, got.train_attempts, got.probe_policy) == (8, 0.25, 0, "")
    store.record_many([("abc", 4, 1.0)], kind="train")
    assert store.get("abc").train_attempts == 4 and store.get("abc").difficulty == 0.25
    store.close()
    again = open_pool(path, create=False)  # a second open finds nothing to do
    assert again.schema_version == 2 and again.get("abc").train_attempts == 4
    assert [r[0] for r in again._read("SELECT version FROM schema_version ORDER BY version")] == [1, 2]
