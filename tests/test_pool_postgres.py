"""The pool on PostgreSQL: URLs, the one-line errors, concurrent initialisation. The shared
store behaviour runs on both dialects in test_pool.py; these are PostgreSQL's own cases.
Needs the throw-away cluster (conftest ``pg_server``; skipped without the server binaries)."""

from __future__ import annotations

import multiprocessing as mp

import psycopg
import pytest

from teachloop.curriculum.items import Item
from teachloop.curriculum.pool import SCHEMA_VERSION, PoolError, is_postgres_url, open_pool
from teachloop.curriculum.pool_schema import parse_pool_url


def _sql(url: str, *stmts: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        for s in stmts:
            c.execute(s)


def test_url_forms():
    for u in ("postgresql://u@h:5432/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"):
        assert is_postgres_url(u) and parse_pool_url(u).dialect == "postgresql"
    assert not is_postgres_url("runs/a") and not is_postgres_url("sqlite:///x")
    assert parse_pool_url("postgresql://u:secret@h/db").display() == "postgresql://u:***@h/db"
    with pytest.raises(PoolError, match="names no database"):
        parse_pool_url("postgresql://u@h:5432")


def test_pool_round_trip_and_masked_password(pg_server):
    url = pg_server.new_schema()
    store = open_pool(url)
    assert store.dialect == "postgresql" and store.schema_version == SCHEMA_VERSION
    it = Item(family="math.word", prompt="2+2?", answer="4")
    assert store.insert(it) and not store.insert(it)
    store.close()
    again = open_pool(url, create=False)  # an existing pool opens; nothing is created twice
    assert len(again) == 1 and again.get(it.id).answer == "4"
    again.close()
    secret = pg_server.url().replace("postgres@", "postgres:hunter2@")
    with open_pool(secret) as s:  # trust auth ignores the password; it never shows in messages
        assert "hunter2" not in str(s.path) and "***" in str(s.path)


def test_newer_schema_is_refused(pg_server):
    url = pg_server.new_schema()
    open_pool(url).close()
    _sql(url, f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION + 1})")
    with pytest.raises(PoolError, match="newer than this teachloop") as e:
        open_pool(url)
    assert "\n" not in str(e.value)


def test_foreign_and_empty_databases_are_refused(pg_server):
    url = pg_server.new_schema()
    _sql(url, "CREATE TABLE users (name TEXT)")
    with pytest.raises(PoolError, match="PostgreSQL database but not a teachloop pool .tables: users"):
        open_pool(url)
    empty = pg_server.new_schema()
    with pytest.raises(PoolError, match="empty, not a teachloop pool"):
        open_pool(empty, create=False)
    with pytest.raises(PoolError, match="empty, not a teachloop pool"):  # and nothing was created
        open_pool(empty, create=False)


def test_unreachable_server_and_missing_database_are_one_line_errors(pg_server):
    with pytest.raises(PoolError, match="cannot open pool postgresql://postgres@127.0.0.1:1/x") as e:
        open_pool("postgresql://postgres@127.0.0.1:1/x")
    assert "\n" not in str(e.value)
    with pytest.raises(PoolError, match='database "no_such_db" does not exist') as e:
        open_pool(pg_server.url("no_such_db"))
    assert "\n" not in str(e.value)


def _open_and_insert(url: str, k: int, barrier) -> None:
    barrier.wait()
    with open_pool(url) as s:
        s.insert(Item(family="math.word", prompt=f"from process {k}"))


def test_processes_opening_an_empty_database_at_once_create_the_schema_once(pg_server):
    url = pg_server.new_schema()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_open_and_insert, args=(url, k, barrier)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]  # no "relation already exists"
    with open_pool(url, create=False) as s:
        assert len(s) == 3
        assert [r[0] for r in s._read("SELECT version FROM schema_version")] == [SCHEMA_VERSION]
