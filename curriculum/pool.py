"""The item pool: the one store the teacher writes items to and the trainer writes stats to.

Neither side calls the other; both go through this store, keyed by item id.

Opened by URL so another backend (PostgreSQL) can come later without touching callers:

    open_pool("sqlite:///runs/a/pool.sqlite")    # relative path
    open_pool("sqlite:////abs/path/pool.sqlite") # absolute path
    open_pool("runs/a")                          # a run directory: RUN_DIR/pool.sqlite
    open_pool("runs/a/pool.sqlite")              # a plain file path

What the SQLite backend guarantees:
- WAL journal, a busy timeout and ``BEGIN IMMEDIATE`` for every write, so several processes
  (teacher workers, the trainer, the CLI) can write at once without "database is locked".
- Idempotent inserts: the id is a content hash (teachloop.curriculum.items.item_id); a second insert
  of the same problem is a no-op that reports ``False``.
- Atomic stats updates: attempts and successes are incremented in SQL, p and difficulty
  recomputed in the same statement, so concurrent writers never lose an update.
- A schema-version table: a pool written by a newer teachloop is refused with a clear
  error; a pool of an older schema is upgraded in place when opened (one transaction,
  :data:`_MIGRATIONS`); a file that is not a SQLite database, or a SQLite database that is
  not a pool, raises ``PoolError`` with a one-line message.
- Two kinds of per-item statistics, kept apart (METHODS.md §3: difficulty is measured
  before training, with a known policy): **probe stats** (``attempts``, ``successes``, and
  the ``p`` / ``difficulty`` derived from them, with the ``probe_policy`` that made them)
  and **training stats** (``train_attempts``, ``train_successes``: the trainer's rollouts).
  ``record_many(kind=...)`` says which; difficulty, buckets and ``measured`` read probe
  stats only. Schema 1 had one set of counters for both; its counts are kept as probe
  stats on upgrade (they cannot be split after the fact).

What it does not do: cross-host locking (SQLite over NFS is unsafe; use PostgreSQL then),
and it does not store rollouts, only per-item counts.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from teachloop.curriculum.items import ITEM_FIELDS, Item

SCHEMA_VERSION = 2
POOL_FILENAME = "pool.sqlite"
_JSON_FIELDS = ("checker", "validation", "metadata")
_APP_ID = 0x7443_4C50  # "tCLP": marks a SQLite file as a teachloop pool (PRAGMA application_id)


class PoolError(Exception):
    """A pool that cannot be opened or used; the message is one line meant for users."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL DEFAULT '',
    checker TEXT NOT NULL DEFAULT '{}',
    parent_id TEXT,
    root_id TEXT,
    direction TEXT NOT NULL,
    turn INTEGER NOT NULL DEFAULT 0,
    teacher TEXT NOT NULL DEFAULT '',
    prompt_version TEXT NOT NULL DEFAULT '',
    validation TEXT NOT NULL DEFAULT '{}',
    metadata TEXT NOT NULL DEFAULT '{}',
    attempts INTEGER NOT NULL DEFAULT 0,
    successes REAL NOT NULL DEFAULT 0,
    p REAL,
    difficulty REAL,
    bucket INTEGER,
    probe_policy TEXT NOT NULL DEFAULT '',
    train_attempts INTEGER NOT NULL DEFAULT 0,
    train_successes REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_family ON items(family);
CREATE INDEX IF NOT EXISTS items_parent ON items(parent_id);
CREATE INDEX IF NOT EXISTS items_root ON items(root_id);
CREATE INDEX IF NOT EXISTS items_dir_turn ON items(direction, turn);
CREATE INDEX IF NOT EXISTS items_difficulty ON items(difficulty);
CREATE TABLE IF NOT EXISTS rejections (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,
    family TEXT NOT NULL,
    parent_id TEXT,
    direction TEXT,
    turn INTEGER,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL,
    proposal TEXT NOT NULL,
    teacher TEXT NOT NULL DEFAULT '',
    prompt_version TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rejections_stage ON rejections(stage);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# schema version -> statements that upgrade a pool of that version to the next one
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE items ADD COLUMN probe_policy TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE items ADD COLUMN train_attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE items ADD COLUMN train_successes REAL NOT NULL DEFAULT 0"),
}
STAT_KINDS = ("probe", "train")


def resolve_pool_path(url: str | os.PathLike[str]) -> Path:
    """Turn a pool URL, a run directory or a file path into the SQLite file path."""
    s = os.fspath(url)
    if "://" in s:
        scheme, _, rest = s.partition("://")
        if scheme != "sqlite":
            raise PoolError(
                f"unsupported pool URL scheme {scheme!r}: only sqlite:/// is available "
                "in this version"
            )
        if not rest.startswith("/"):
            raise PoolError(f"malformed pool URL {s!r}: expected sqlite:///relative/or/"
                            "sqlite:////absolute/path")
        return Path(rest[1:])  # sqlite:///rel -> rel, sqlite:////abs -> /abs
    p = Path(s)
    if p.is_dir():
        return p / POOL_FILENAME
    return p


def open_pool(url: str | os.PathLike[str], *, create: bool = True) -> PoolStore:
    """Open (and, with ``create``, initialise) the pool at ``url``."""
    path = resolve_pool_path(url)
    if not create and not path.exists():
        raise PoolError(f"no pool at {path}")
    return PoolStore(path, create=create)


def _row_to_item(row: sqlite3.Row) -> Item:
    d = {k: row[k] for k in ITEM_FIELDS}
    for k in _JSON_FIELDS:
        d[k] = json.loads(d[k])
    return Item.from_dict(d)


class PoolStore:
    """SQLite-backed pool. Thread-safe (one connection behind a lock); process-safe (WAL)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 busy_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise PoolError(f"no pool at {self.path}")
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise PoolError(f"cannot open pool {self.path}: {e}") from None
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._init_schema(create)
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise PoolError(f"{self.path} is not a usable teachloop pool ({e})") from None

    # --- setup ---------------------------------------------------------------------
    def _init_schema(self, create: bool) -> None:
        c = self._conn
        # Reading the header fails fast on a file that is not a SQLite database. Both
        # reads share one snapshot, so a concurrent initialiser is seen whole or not at all.
        c.execute("BEGIN")
        try:
            app_id = c.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            c.execute("COMMIT")
        if tables and app_id != _APP_ID:
            raise PoolError(
                f"{self.path} is a SQLite database but not a teachloop pool "
                f"(tables: {', '.join(sorted(tables)[:5])})"
            )
        if app_id == _APP_ID:
            self._check_version()
            self._set_wal()
            if self.schema_version < SCHEMA_VERSION:
                self._migrate()
            return
        if not create:
            raise PoolError(f"{self.path} is empty, not a teachloop pool")
        self._set_wal()
        with self._write() as c:
            # Another process may have initialised it while we waited for the lock.
            if c.execute("PRAGMA application_id").fetchone()[0] != _APP_ID:
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
                c.execute(f"PRAGMA application_id = {_APP_ID}")
        self._check_version()

    def _set_wal(self) -> None:
        for _ in range(50):
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
                return
            except sqlite3.OperationalError as e:  # switching modes needs a brief lock
                if "locked" not in str(e):
                    raise
                time.sleep(0.05)
        raise PoolError(f"{self.path}: could not enable WAL (database stays locked)")

    def _check_version(self) -> None:
        try:
            row = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        except sqlite3.OperationalError:
            raise PoolError(f"{self.path}: pool has no schema_version table (damaged)") from None
        v = row[0]
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
            v = c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            while v < SCHEMA_VERSION:
                for stmt in _MIGRATIONS[v]:
                    c.execute(stmt)
                v += 1
                c.execute("INSERT INTO schema_version(version) VALUES (?)", (v,))
        self._check_version()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock up front, so two
        writers queue on the busy timeout instead of deadlocking on a lock upgrade."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> PoolStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- items ---------------------------------------------------------------------
    @staticmethod
    def _item_row(item: Item) -> tuple[Any, ...]:
        d = item.to_dict()
        for k in _JSON_FIELDS:
            d[k] = json.dumps(d[k], sort_keys=True, ensure_ascii=False)
        return tuple(d[k] for k in ITEM_FIELDS)

    def insert(self, item: Item) -> bool:
        """Insert ``item``; ``False`` (and no change) if an item with its id exists."""
        return self.insert_many([item]) == 1

    def insert_many(self, items: Iterable[Item]) -> int:
        """Insert items in one transaction; returns how many were new."""
        rows = [self._item_row(it) for it in items]
        if not rows:
            return 0
        cols = ", ".join(ITEM_FIELDS)
        qs = ", ".join("?" * len(ITEM_FIELDS))
        with self._write() as c:
            before = c.total_changes
            c.executemany(f"INSERT OR IGNORE INTO items ({cols}) VALUES ({qs})", rows)
            return c.total_changes - before

    def get(self, item_id: str) -> Item | None:
        rows = self._read("SELECT * FROM items WHERE id = ?", (item_id,))
        return _row_to_item(rows[0]) if rows else None

    def ids_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        rows = self._read("SELECT id FROM items WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT ?",
                          (len(prefix), prefix, limit))
        return [r[0] for r in rows]

    def __contains__(self, item_id: object) -> bool:
        return bool(self._read("SELECT 1 FROM items WHERE id = ?", (item_id,)))

    def __len__(self) -> int:
        return self._read("SELECT COUNT(*) FROM items")[0][0]

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
        where, args = [], []
        if family is not None:
            if family.endswith("*"):
                where.append("family LIKE ? ESCAPE '\\'")
                prefix = family[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                args.append(prefix + "%")
            else:
                where.append("family = ?")
                args.append(family)
        if direction is not None:
            where.append("direction = ?")
            args.append(direction)
        if turn is not None:
            where.append("turn = ?")
            args.append(turn)
        if min_difficulty is not None:
            where.append("difficulty >= ?")
            args.append(min_difficulty)
        if max_difficulty is not None:
            where.append("difficulty <= ?")
            args.append(max_difficulty)
        if bucket is not None:
            where.append("bucket = ?")
            args.append(bucket)
        if measured is not None:
            where.append("attempts > 0" if measured else "attempts = 0")
        sql = "SELECT * FROM items"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [_row_to_item(r) for r in self._read(sql, args)]

    # --- lineage -------------------------------------------------------------------
    def children(self, item_id: str) -> list[Item]:
        rows = self._read("SELECT * FROM items WHERE parent_id = ? ORDER BY turn, id", (item_id,))
        return [_row_to_item(r) for r in rows]

    def chain(self, item_id: str) -> list[Item]:
        """The item, its parent, ... up to the root (the first element is ``item_id``).

        Stops at a missing parent; a cycle (impossible with content ids unless edited by
        hand) is cut by the depth bound.
        """
        rows = self._read(
            """
            WITH RECURSIVE up(id, depth) AS (
                SELECT id, 0 FROM items WHERE id = ?
                UNION ALL
                SELECT i.parent_id, up.depth + 1 FROM items i JOIN up ON i.id = up.id
                WHERE i.parent_id IS NOT NULL AND up.depth < 10000
            )
            SELECT items.* FROM up JOIN items ON items.id = up.id ORDER BY up.depth
            """,
            (item_id,),
        )
        return [_row_to_item(r) for r in rows]

    def descendants(self, root_id: str) -> list[Item]:
        rows = self._read(
            "SELECT * FROM items WHERE root_id = ? ORDER BY turn, id", (root_id,)
        )
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
        meta table in the same transaction, so a batch re-recorded after a crash (e.g. the
        trainer re-running the steps after its last checkpoint) is not counted twice.
        """
        if kind not in STAT_KINDS:
            raise ValueError(f"kind must be one of {STAT_KINDS}, got {kind!r}")
        ups = []
        for iid, a, s in updates:
            if a < 0 or s < 0 or s > a:
                raise ValueError(f"bad stats increment for {iid}: attempts={a} successes={s}")
            ups.append((a, s, time.time(), iid) + ((policy,) if kind == "probe" else ()))
        if not ups:
            return 0
        if kind == "train":
            sql = """
                UPDATE items SET
                    train_attempts = train_attempts + ?1,
                    train_successes = train_successes + ?2,
                    updated_at = ?3
                WHERE id = ?4
                """
        else:
            sql = """
                UPDATE items SET
                    attempts = attempts + ?1,
                    successes = successes + ?2,
                    p = CASE WHEN attempts + ?1 > 0
                             THEN (successes + ?2) / (attempts + ?1) END,
                    difficulty = CASE WHEN attempts + ?1 > 0
                             THEN 1.0 - (successes + ?2) / (attempts + ?1) END,
                    probe_policy = COALESCE(?5, probe_policy),
                    updated_at = ?3
                WHERE id = ?4
                """
        with self._write() as c:
            if once_key is not None:
                key = "once:" + once_key
                if c.execute("SELECT 1 FROM meta WHERE key = ?", (key,)).fetchone():
                    return 0
                c.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(time.time())))
            before = c.total_changes
            c.executemany(sql, ups)
            return c.total_changes - before

    def set_bucket(self, assignments: Iterable[tuple[str, int | None]]) -> None:
        rows = [(b, time.time(), iid) for iid, b in assignments]
        with self._write() as c:
            c.executemany("UPDATE items SET bucket = ?, updated_at = ? WHERE id = ?", rows)

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
        with self._write() as c:
            cur = c.execute(
                """INSERT INTO rejections (family, parent_id, direction, turn, stage, reason,
                   proposal, teacher, prompt_version, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (family, parent_id, direction, turn, stage, reason, proposal, teacher,
                 prompt_version, time.time()),
            )
            return int(cur.lastrowid)

    def rejections(self, *, stage: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM rejections", []
        if stage is not None:
            sql += " WHERE stage = ?"
            args.append(stage)
        return [dict(r) for r in self._read(sql + " ORDER BY rid", args)]

    # --- meta + summaries ----------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                      (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def counts(self, by: str) -> dict[Any, int]:
        """Item counts grouped by one of family / direction / turn / bucket."""
        if by not in ("family", "direction", "turn", "bucket"):
            raise ValueError(f"cannot group by {by!r}")
        rows = self._read(f"SELECT {by}, COUNT(*) FROM items GROUP BY {by} ORDER BY {by}")
        return {r[0]: r[1] for r in rows}

    def rejection_counts(self) -> dict[tuple[str, str], int]:
        rows = self._read(
            "SELECT stage, reason, COUNT(*) FROM rejections GROUP BY stage, reason "
            "ORDER BY COUNT(*) DESC"
        )
        return {(r[0], r[1]): r[2] for r in rows}

    def pass_rates(self) -> list[float]:
        """Probe pass rates of the measured items."""
        return [r[0] for r in self._read("SELECT p FROM items WHERE p IS NOT NULL")]

    def train_totals(self) -> tuple[int, int, float]:
        """Training stats over the pool: (items rolled out in training, rollouts, successes)."""
        r = self._read("SELECT COUNT(*), COALESCE(SUM(train_attempts), 0), "
                       "COALESCE(SUM(train_successes), 0) FROM items WHERE train_attempts > 0")[0]
        return int(r[0]), int(r[1]), float(r[2])
