"""The item pool: the one store the teacher writes items to and the trainer writes stats to.

Neither side calls the other; both go through this store, keyed by item id.

Opened by URL (SQLAlchemy Core underneath, one schema for both dialects: pool_schema.py):

    open_pool("sqlite:///runs/a/pool.sqlite")    # relative path
    open_pool("sqlite:////abs/path/pool.sqlite") # absolute path
    open_pool("runs/a")                          # a run directory: RUN_DIR/pool.sqlite
    open_pool("runs/a/pool.sqlite")              # a plain file path
    open_pool("postgresql://user@host:5432/db")  # PostgreSQL (psycopg 3): many machines

What both backends guarantee:
- Idempotent inserts: the id is a content hash (teachloop.curriculum.items.item_id); a second
  insert of the same problem is a no-op that reports ``False`` (``INSERT ... ON CONFLICT DO
  NOTHING ... RETURNING id``, so two processes inserting the same item at once count it once).
- Atomic stats updates: attempts and successes are incremented in SQL, p and difficulty
  recomputed in the same statement, so concurrent writers never lose an update.
- A schema-version table: a pool written by a newer teachloop is refused with a clear
  error; a pool of an older schema is upgraded in place when opened (one transaction,
  pool_schema.MIGRATIONS); a file that is not a SQLite database, a database that is not a
  pool, or a server that cannot be reached raises ``PoolError`` with a one-line message.
- Two kinds of per-item statistics, kept apart (METHODS.md §3: difficulty is measured
  before training, with a known policy): **probe stats** (``attempts``, ``successes``, and
  the ``p`` / ``difficulty`` derived from them, with the ``probe_policy`` that made them)
  and **training stats** (``train_attempts``, ``train_successes``: the trainer's rollouts).
  ``record_many(kind=...)`` says which; difficulty, buckets and ``measured`` read probe
  stats only. Schema 1 had one set of counters for both; its counts are kept as probe
  stats on upgrade (they cannot be split after the fact).
- Frontier leases for many generation workers (curriculum/pool_leases.py).

SQLite (the embedded default): WAL journal, a busy timeout and ``BEGIN IMMEDIATE`` for every
write, so several processes on one machine (teacher workers, the trainer, the CLI) write at
once without "database is locked"; one connection per store behind a lock. It does not do
cross-host locking (SQLite over NFS is unsafe): use PostgreSQL then, where every transaction
takes a connection from a small pool and row locks do the rest.

The store keeps per-item counts, not rollouts.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from teachloop.curriculum.items import ITEM_FIELDS, Item
from teachloop.curriculum.pool_leases import LeasesMixin
from teachloop.curriculum.pool_schema import (
    APP_ID,
    JSON_FIELDS,
    MIGRATIONS,
    PG_INIT_LOCK,
    POOL_FILENAME,
    SCHEMA_VERSION,
    PoolError,
    PoolURL,
    claims,
    is_postgres_url,
    items,
    meta,
    metadata,
    parse_pool_url,
    rejections,
    schema_version,
)

__all__ = ["SCHEMA_VERSION", "POOL_FILENAME", "STAT_KINDS", "PoolError", "PoolStore", "open_pool",
           "resolve_pool_path", "is_postgres_url"]

_MIGRATIONS = MIGRATIONS
_APP_ID = APP_ID
STAT_KINDS = ("probe", "train")


def resolve_pool_path(url: str | os.PathLike[str]) -> Path:
    """Turn a SQLite pool URL, a run directory or a file path into the SQLite file path."""
    purl = parse_pool_url(url)
    if purl.path is None:
        raise PoolError(f"unsupported pool URL scheme {purl.dialect!r} for a pool file: "
                        f"{purl.display()} is a server database, not a file")
    return purl.path


def open_pool(url: str | os.PathLike[str], *, create: bool = True) -> PoolStore:
    """Open (and, with ``create``, initialise) the pool at ``url``."""
    purl = parse_pool_url(url)
    if purl.path is not None and not create and not purl.path.exists():
        raise PoolError(f"no pool at {purl.path}")
    return PoolStore(purl.path if purl.path is not None else purl, create=create)


def _row_to_item(row: Any) -> Item:
    m = row._mapping
    d = {k: m[k] for k in ITEM_FIELDS}
    for k in JSON_FIELDS:
        d[k] = json.loads(d[k])
    return Item.from_dict(d)


def _first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


class PoolStore(LeasesMixin):
    """The pool. Thread-safe; process-safe (SQLite: WAL; PostgreSQL: row locks)."""

    def __init__(self, path: str | os.PathLike[str] | PoolURL, *, create: bool = True,
                 busy_timeout_s: float = 60.0) -> None:
        self.url = path if isinstance(path, PoolURL) else PoolURL("sqlite", path=Path(path))
        self.dialect = self.url.dialect
        # a file path for SQLite; the URL (password masked) for PostgreSQL, for messages
        self.path: Any = self.url.path if self.url.path is not None else self.url.display()
        self._lock: Any = threading.RLock() if self.dialect == "sqlite" else nullcontext()
        self.schema_version = 0
        if self.dialect == "sqlite":
            self._open_sqlite(create, busy_timeout_s)
        else:
            self._open_postgres(create)

    # --- setup: SQLite -----------------------------------------------------------------
    def _open_sqlite(self, create: bool, busy_timeout_s: float) -> None:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise PoolError(f"no pool at {self.path}")
        self.engine = sa.create_engine(
            self.url.sqlalchemy_url(), poolclass=sa.pool.StaticPool, pool_reset_on_return=None,
            connect_args={"timeout": busy_timeout_s, "check_same_thread": False,
                          "isolation_level": None})

        @sa.event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions are ours (the "begin" hook)
            dbapi_conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")

        @sa.event.listens_for(self.engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            # BEGIN IMMEDIATE takes the write lock up front, so two writers queue on the busy
            # timeout instead of deadlocking on a lock upgrade
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write")
                                 else "BEGIN")

        try:
            # the one connection (StaticPool), also used directly for PRAGMAs; the proxy is kept
            # so that it is never collected (and "returned") while another thread uses it
            self._raw_proxy = self.engine.raw_connection()
            self._raw = self._raw_proxy.dbapi_connection
            self._init_sqlite(create)
        except PoolError:
            self.engine.dispose()
            raise
        except (sa.exc.DBAPIError, Exception) as e:
            import sqlite3

            self.engine.dispose()
            if isinstance(e, (sa.exc.DBAPIError, sqlite3.DatabaseError)):
                raise PoolError(f"{self.path} is not a usable teachloop pool ({_first_line(e)})") from None
            raise

    def _init_sqlite(self, create: bool) -> None:
        c = self._raw
        # Reading the header fails fast on a file that is not a SQLite database. Both
        # reads share one snapshot, so a concurrent initialiser is seen whole or not at all.
        with self._lock:
            c.execute("BEGIN")
            try:
                app_id = c.execute("PRAGMA application_id").fetchone()[0]
                tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            finally:
                c.execute("COMMIT")
        if tables and app_id != APP_ID:
            raise PoolError(
                f"{self.path} is a SQLite database but not a teachloop pool "
                f"(tables: {', '.join(sorted(tables)[:5])})"
            )
        if app_id == APP_ID:
            self._check_version()
            self._set_wal()
            if self.schema_version < SCHEMA_VERSION:
                self._migrate()
            if "claims" not in tables:
                with self._write() as w:
                    claims.create(w, checkfirst=True)
            return
        if not create:
            raise PoolError(f"{self.path} is empty, not a teachloop pool")
        self._set_wal()
        with self._write() as w:
            # Another process may have initialised it while we waited for the lock.
            if w.exec_driver_sql("PRAGMA application_id").scalar() != APP_ID:
                metadata.create_all(w)
                w.execute(schema_version.insert().values(version=SCHEMA_VERSION))
                w.exec_driver_sql(f"PRAGMA application_id = {APP_ID}")
        self._check_version()

    def _set_wal(self) -> None:
        import sqlite3

        for _ in range(50):
            try:
                with self._lock:
                    self._raw.execute("PRAGMA journal_mode = WAL")
                    self._raw.execute("PRAGMA synchronous = NORMAL")
                return
            except sqlite3.OperationalError as e:  # switching modes needs a brief lock
                if "locked" not in str(e):
                    raise
                time.sleep(0.05)
        raise PoolError(f"{self.path}: could not enable WAL (database stays locked)")

    # --- setup: PostgreSQL -------------------------------------------------------------
    def _open_postgres(self, create: bool) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise PoolError("a postgresql:// pool needs psycopg: pip install 'teachloop[postgres]'") from None
        self.engine = sa.create_engine(
            self.url.sqlalchemy_url(), pool_pre_ping=True, pool_size=4, max_overflow=8,
            connect_args={"connect_timeout": 10, "application_name": "teachloop"})
        try:
            with self.engine.begin() as c:
                # one initialiser / upgrader at a time (DDL is transactional here)
                c.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_INIT_LOCK})
                tables = set(sa.inspect(c).get_table_names())
                if "schema_version" in tables:
                    self._check_version(c)
                    if self.schema_version < SCHEMA_VERSION:  # pragma: no cover (PG starts at 2)
                        self._migrate_in(c)
                    claims.create(c, checkfirst=True)
                elif tables:
                    raise PoolError(f"{self.path} is a PostgreSQL database but not a teachloop "
                                    f"pool (tables: {', '.join(sorted(tables)[:5])})")
                elif not create:
                    raise PoolError(f"{self.path} is empty, not a teachloop pool")
                else:
                    metadata.create_all(c)
                    c.execute(schema_version.insert().values(version=SCHEMA_VERSION))
                    self.schema_version = SCHEMA_VERSION
        except PoolError:
            self.engine.dispose()
            raise
        except sa.exc.DBAPIError as e:
            self.engine.dispose()
            raise PoolError(f"cannot open pool {self.path}: {_first_line(e)}") from None

    # --- versions ----------------------------------------------------------------------
    def _check_version(self, conn: sa.Connection | None = None) -> None:
        try:
            if conn is not None:
                v = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
            else:
                v = self._read(sa.select(sa.func.max(schema_version.c.version)))[0][0]
        except sa.exc.OperationalError:
            raise PoolError(f"{self.path}: pool has no schema_version table (damaged)") from None
        if v is None:
            raise PoolError(f"{self.path}: pool has no schema version (damaged)")
        if v > SCHEMA_VERSION:
            raise PoolError(
                f"{self.path}: pool schema version {v} is newer than this teachloop "
                f"understands ({SCHEMA_VERSION}); upgrade teachloop"
            )
        self.schema_version = v

    def _migrate(self) -> None:
        """Upgrade an older pool in place, one transaction (another process may have done it
        while this one waited for the write lock: the version is read again inside)."""
        with self._write() as c:
            self._migrate_in(c)
        self._check_version()

    def _migrate_in(self, c: sa.Connection) -> None:
        v = c.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
        while v < SCHEMA_VERSION:
            for stmt in MIGRATIONS[v]:
                c.exec_driver_sql(stmt)
            v += 1
            c.execute(schema_version.insert().values(version=v))
        self.schema_version = v

    # --- transactions ------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``); commits on success."""
        with self._lock, self.engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                yield conn

    def _read(self, stmt: Any, args: Any = None) -> list[Any]:
        """Rows of one query (a Core statement, or SQL text with ``:name`` parameters)."""
        if isinstance(stmt, str):
            stmt = sa.text(stmt)
        with self._lock, self.engine.connect() as conn, conn.begin():
            return list(conn.execute(stmt, args or {}).fetchall())

    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT (with ``on_conflict_do_nothing`` / ``_do_update``)."""
        return (pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert)(table)

    def close(self) -> None:
        with self._lock:
            self.engine.dispose()

    def __enter__(self) -> PoolStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- items ---------------------------------------------------------------------
    @staticmethod
    def _item_row(item: Item) -> dict[str, Any]:
        d = item.to_dict()
        for k in JSON_FIELDS:
            d[k] = json.dumps(d[k], sort_keys=True, ensure_ascii=False)
        return {k: d[k] for k in ITEM_FIELDS}

    def insert(self, item: Item) -> bool:
        """Insert ``item``; ``False`` (and no change) if an item with its id exists."""
        return self.insert_many([item]) == 1

    def insert_many(self, items_: Iterable[Item]) -> int:
        """Insert items in one transaction; returns how many were new (an item that another
        process inserted first, even at the same moment, is not counted)."""
        return len(self.insert_many_ids(items_))

    def insert_many_ids(self, items_: Iterable[Item]) -> list[str]:
        """Like :meth:`insert_many`, but the ids that were new."""
        rows: dict[str, dict[str, Any]] = {}
        for it in items_:
            rows.setdefault(it.id, self._item_row(it))  # the first version of an id wins
        if not rows:
            return []
        stmt = self._insert(items).on_conflict_do_nothing(index_elements=["id"]).returning(items.c.id)
        with self._write() as c:
            new = []
            for row in rows.values():  # one row per statement: RETURNING says if it was new
                new += c.execute(stmt, row).scalars().all()
            return new

    def get(self, item_id: str) -> Item | None:
        rows = self._read(sa.select(items).where(items.c.id == item_id))
        return _row_to_item(rows[0]) if rows else None

    def ids_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        rows = self._read(sa.select(items.c.id).where(items.c.id.startswith(prefix, autoescape=True))
                          .order_by(items.c.id).limit(limit))
        return [r[0] for r in rows]

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        return bool(self._read(sa.select(sa.literal(1)).where(items.c.id == item_id)))

    def __len__(self) -> int:
        return int(self._read(sa.select(sa.func.count()).select_from(items))[0][0])

    def query(
        self,
        *,
        family: str | None = None,
        direction: str | None = None,
        turn: int | None = None,
        min_difficulty: float | None = None,
        max_difficulty: float | None = None,
        bucket: int | None = None,
        measured: bool | None = None,
        limit: int | None = None,
    ) -> list[Item]:
        """Items matching every given filter, oldest first.

        ``family`` ending in ``*`` is a prefix (``"math.*"``); difficulty bounds are
        inclusive and exclude unmeasured items; ``measured`` selects by attempts > 0.
        """
        q = sa.select(items)
        if family is not None:
            q = q.where(items.c.family.startswith(family[:-1], autoescape=True)
                        if family.endswith("*") else items.c.family == family)
        if direction is not None:
            q = q.where(items.c.direction == direction)
        if turn is not None:
            q = q.where(items.c.turn == turn)
        if min_difficulty is not None:
            q = q.where(items.c.difficulty >= min_difficulty)
        if max_difficulty is not None:
            q = q.where(items.c.difficulty <= max_difficulty)
        if bucket is not None:
            q = q.where(items.c.bucket == bucket)
        if measured is not None:
            q = q.where(items.c.attempts > 0 if measured else items.c.attempts == 0)
        q = q.order_by(items.c.created_at, items.c.id)
        if limit is not None:
            q = q.limit(int(limit))
        return [_row_to_item(r) for r in self._read(q)]

    # --- lineage -------------------------------------------------------------------
    def children(self, item_id: str) -> list[Item]:
        rows = self._read(sa.select(items).where(items.c.parent_id == item_id)
                          .order_by(items.c.turn, items.c.id))
        return [_row_to_item(r) for r in rows]

    def chain(self, item_id: str) -> list[Item]:
        """The item, its parent, ... up to the root (the first element is ``item_id``).

        Stops at a missing parent; a cycle (impossible with content ids unless edited by
        hand) is cut by the depth bound.
        """
        rows = self._read(
            """
            WITH RECURSIVE up(id, depth) AS (
                SELECT id, 0 FROM items WHERE id = :id
                UNION ALL
                SELECT i.parent_id, up.depth + 1 FROM items i JOIN up ON i.id = up.id
                WHERE i.parent_id IS NOT NULL AND up.depth < 10000
            )
            SELECT items.* FROM up JOIN items ON items.id = up.id ORDER BY up.depth
            """,
            {"id": item_id},
        )
        return [_row_to_item(r) for r in rows]

    def descendants(self, root_id: str) -> list[Item]:
        rows = self._read(sa.select(items).where(items.c.root_id == root_id)
                          .order_by(items.c.turn, items.c.id))
        return [_row_to_item(r) for r in rows]

    # --- stats ---------------------------------------------------------------------
    def record_attempts(self, item_id: str, attempts: int, successes: float, *,
                        kind: str = "probe") -> None:
        """Atomically add ``attempts`` and ``successes`` (sum of rewards) to an item."""
        self.record_many([(item_id, attempts, successes)], kind=kind)

    def record_many(self, updates: Iterable[tuple[str, int, float]], *,
                    once_key: str | None = None, kind: str = "probe",
                    policy: str | None = None) -> int:
        """Apply many ``(id, attempts, successes)`` increments in one transaction.

        ``kind="probe"``: measurements made to estimate difficulty; p = successes / attempts
        and difficulty = 1 - p are recomputed in SQL, and ``policy`` (if given) is stored as
        the item's ``probe_policy``. ``kind="train"``: the trainer's rollouts; they go to
        ``train_attempts`` / ``train_successes`` only and never move p or difficulty.
        Returns the number of items updated (unknown ids are ignored).

        ``once_key``: apply these increments at most once per key. The key is stored in the
        meta table in the same transaction (an insert that loses to an existing key applies
        nothing), so a batch re-recorded after a crash (e.g. the trainer re-running the steps
        after its last checkpoint) is not counted twice, even by two processes at once.
        """
        if kind not in STAT_KINDS:
            raise ValueError(f"kind must be one of {STAT_KINDS}, got {kind!r}")
        ups = []
        for iid, a, s in updates:
            if a < 0 or s < 0 or s > a:
                raise ValueError(f"bad stats increment for {iid}: attempts={a} successes={s}")
            ups.append({"b_a": int(a), "b_s": float(s), "b_t": time.time(), "b_id": iid,
                        "b_policy": policy})
        if not ups:
            return 0
        a = sa.bindparam("b_a", type_=sa.Integer)
        s = sa.bindparam("b_s", type_=sa.Double)
        where = items.c.id == sa.bindparam("b_id", type_=sa.Text)
        if kind == "train":
            stmt = items.update().where(where).values(
                train_attempts=items.c.train_attempts + a,
                train_successes=items.c.train_successes + s,
                updated_at=sa.bindparam("b_t", type_=sa.Double))
        else:
            n = items.c.attempts + a
            p = sa.case((n > 0, (items.c.successes + s) / n))
            stmt = items.update().where(where).values(
                attempts=n, successes=items.c.successes + s, p=p,
                difficulty=sa.case((n > 0, 1.0 - (items.c.successes + s) / n)),
                probe_policy=sa.func.coalesce(sa.bindparam("b_policy", type_=sa.Text),
                                              items.c.probe_policy),
                updated_at=sa.bindparam("b_t", type_=sa.Double))
        with self._write() as c:
            if once_key is not None:
                ins = (self._insert(meta).values(key="once:" + once_key, value=json.dumps(time.time()))
                       .on_conflict_do_nothing(index_elements=["key"]).returning(meta.c.key))
                if c.execute(ins).first() is None:  # recorded before (maybe by another process)
                    return 0
            return sum(c.execute(stmt, u).rowcount for u in ups)

    def set_bucket(self, assignments: Iterable[tuple[str, int | None]]) -> None:
        rows = [{"b_bucket": b, "b_t": time.time(), "b_id": iid} for iid, b in assignments]
        if not rows:
            return
        stmt = items.update().where(items.c.id == sa.bindparam("b_id")).values(
            bucket=sa.bindparam("b_bucket", type_=sa.Integer), updated_at=sa.bindparam("b_t"))
        with self._write() as c:
            c.execute(stmt, rows)

    # --- rejections ----------------------------------------------------------------
    def reject(
        self,
        *,
        family: str,
        stage: str,
        reason: str,
        proposal: str,
        parent_id: str | None = None,
        direction: str | None = None,
        turn: int | None = None,
        teacher: str = "",
        prompt_version: str = "",
    ) -> int:
        """Record a rejected proposal with the stage that rejected it and why."""
        stmt = rejections.insert().values(
            family=family, parent_id=parent_id, direction=direction, turn=turn, stage=stage,
            reason=reason, proposal=proposal, teacher=teacher, prompt_version=prompt_version,
            created_at=time.time()).returning(rejections.c.rid)
        with self._write() as c:
            return int(c.execute(stmt).scalar_one())

    def rejections(self, *, stage: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(rejections)
        if stage is not None:
            q = q.where(rejections.c.stage == stage)
        return [dict(r._mapping) for r in self._read(q.order_by(rejections.c.rid))]

    # --- meta + summaries ----------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        ins = self._insert(meta).values(key=key, value=json.dumps(value))
        with self._write() as c:
            c.execute(ins.on_conflict_do_update(index_elements=["key"],
                                                set_={"value": ins.excluded.value}))

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._read(sa.select(meta.c.value).where(meta.c.key == key))
        return json.loads(rows[0][0]) if rows else default

    def counts(self, by: str) -> dict[Any, int]:
        """Item counts grouped by one of family / direction / turn / bucket."""
        if by not in ("family", "direction", "turn", "bucket"):
            raise ValueError(f"cannot group by {by!r}")
        col = items.c[by]
        rows = self._read(sa.select(col, sa.func.count()).group_by(col).order_by(col))
        return {r[0]: r[1] for r in rows}

    def rejection_counts(self) -> dict[tuple[str, str], int]:
        n = sa.func.count().label("n")
        rows = self._read(sa.select(rejections.c.stage, rejections.c.reason, n)
                          .group_by(rejections.c.stage, rejections.c.reason).order_by(n.desc()))
        return {(r[0], r[1]): r[2] for r in rows}

    def pass_rates(self) -> list[float]:
        """Probe pass rates of the measured items."""
        return [r[0] for r in self._read(sa.select(items.c.p).where(items.c.p.is_not(None)))]

    def train_totals(self) -> tuple[int, int, float]:
        """Training stats over the pool: (items rolled out in training, rollouts, successes)."""
        r = self._read(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(items.c.train_attempts), 0),
                                 sa.func.coalesce(sa.func.sum(items.c.train_successes), 0.0))
                       .where(items.c.train_attempts > 0))[0]
        return int(r[0]), int(r[1]), float(r[2])
