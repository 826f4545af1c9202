"""The pool's schema (one SQLAlchemy Core ``MetaData`` for SQLite and PostgreSQL), its URLs,
and how a database is recognised, initialised and upgraded.

Tables: ``items`` (one row per problem, probe and training stats), ``rejections`` (every
rejected proposal and why), ``meta`` (key → JSON), ``schema_version`` (one row per version the
pool has been at: the migration table) and ``claims`` (frontier leases of generation workers,
curriculum/pool_leases.py).

Schema versions and migrations. ``SCHEMA_VERSION`` covers ``items`` / ``rejections`` /
``meta``; a pool of an older version is upgraded in place when opened, in one transaction,
by the statements in :data:`MIGRATIONS` (a new row in ``schema_version`` per step); a pool of
a newer version is refused. The ``claims`` table is additive (created when missing; a
teachloop that predates it never reads it), so it needs no version step and pools stay
readable by the teachloop that wrote them.

Why not Alembic: the migrations are a handful of additive ``ALTER TABLE`` statements that must
run on a user's own pool file when any teachloop command opens it, with no migration scripts
directory, ``env.py`` or ``alembic_version`` table to ship; and the ``schema_version`` table is
what every released teachloop already reads to refuse a pool newer than itself. Alembic would
add a dependency and a second version table for no new capability here.

Recognising a pool: SQLite files carry ``PRAGMA application_id`` = :data:`APP_ID`; a
PostgreSQL database is a pool when it holds the ``schema_version`` table, foreign when it holds
other tables only, and is initialised when empty (under an advisory lock, so two processes
opening the same empty database at once create the schema once).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

SCHEMA_VERSION = 2
POOL_FILENAME = "pool.sqlite"
POOL_URL_FILE = "pool.url"  # in a run directory whose pool is on PostgreSQL: the URL
APP_ID = 0x7443_4C50  # "tCLP": marks a SQLite file as a teachloop pool (PRAGMA application_id)
PG_INIT_LOCK = 0x7443_4C50  # pg_advisory_xact_lock key for schema creation and upgrades
JSON_FIELDS = ("checker", "validation", "metadata")


class PoolError(Exception):
    """A pool that cannot be opened or used; the message is one line meant for users."""


metadata = sa.MetaData()
# Double: 8-byte floats on PostgreSQL (its REAL is 4 bytes), REAL affinity on SQLite.
_F = sa.Double

schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))

items = sa.Table(
    "items", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("family", sa.Text, nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("answer", sa.Text, nullable=False, server_default=""),
    sa.Column("checker", sa.Text, nullable=False, server_default="{}"),
    sa.Column("parent_id", sa.Text),
    sa.Column("root_id", sa.Text),
    sa.Column("direction", sa.Text, nullable=False),
    sa.Column("turn", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("teacher", sa.Text, nullable=False, server_default=""),
    sa.Column("prompt_version", sa.Text, nullable=False, server_default=""),
    sa.Column("validation", sa.Text, nullable=False, server_default="{}"),
    sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("successes", _F, nullable=False, server_default=sa.text("0")),
    sa.Column("p", _F),
    sa.Column("difficulty", _F),
    sa.Column("bucket", sa.Integer),
    sa.Column("probe_policy", sa.Text, nullable=False, server_default=""),
    sa.Column("train_attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("train_successes", _F, nullable=False, server_default=sa.text("0")),
    sa.Column("created_at", _F, nullable=False),
    sa.Column("updated_at", _F, nullable=False),
)
sa.Index("items_family", items.c.family)
sa.Index("items_parent", items.c.parent_id)
sa.Index("items_root", items.c.root_id)
sa.Index("items_dir_turn", items.c.direction, items.c.turn)
sa.Index("items_difficulty", items.c.difficulty)

rejections = sa.Table(
    "rejections", metadata,
    sa.Column("rid", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("family", sa.Text, nullable=False),
    sa.Column("parent_id", sa.Text),
    sa.Column("direction", sa.Text),
    sa.Column("turn", sa.Integer),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("proposal", sa.Text, nullable=False),
    sa.Column("teacher", sa.Text, nullable=False, server_default=""),
    sa.Column("prompt_version", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", _F, nullable=False),
    sqlite_autoincrement=True,
)
sa.Index("rejections_stage", rejections.c.stage)

meta = sa.Table("meta", metadata, sa.Column("key", sa.Text, primary_key=True),
                sa.Column("value", sa.Text, nullable=False))

claims = sa.Table(
    "claims", metadata,
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("worker", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # leased / done
    sa.Column("lease_until", _F, nullable=False),  # database clock, unix seconds
    sa.Column("claimed_at", _F, nullable=False),
    sa.Column("finished_at", _F),
    sa.Column("takeovers", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("previous_worker", sa.Text),
)
sa.Index("claims_state", claims.c.state, claims.c.lease_until)

POOL_TABLES = ("schema_version", "items", "rejections", "meta")

# schema version -> statements that upgrade a pool of that version to the next one. Only SQLite
# pools can be at version 1 (PostgreSQL pools start at 2).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE items ADD COLUMN probe_policy TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE items ADD COLUMN train_attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE items ADD COLUMN train_successes REAL NOT NULL DEFAULT 0"),
}


def db_now(dialect: str) -> sa.ColumnElement[float]:
    """The database's clock as unix seconds: leases compare against one clock, not the
    workers' (machines whose clocks disagree still agree on who holds a lease)."""
    if dialect == "postgresql":
        return sa.func.extract("epoch", sa.func.clock_timestamp())
    return (sa.func.julianday("now") - 2440587.5) * 86400.0


# --------------------------------------------------------------------------- URLs

@dataclass(frozen=True)
class PoolURL:
    """Where a pool lives: a SQLite file ``path`` or a PostgreSQL ``url``."""

    dialect: str  # sqlite / postgresql
    path: Path | None = None
    url: str = ""

    def display(self) -> str:
        """For messages: the file path, or the URL with any password masked."""
        if self.path is not None:
            return str(self.path)
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def sqlalchemy_url(self) -> sa.URL:
        if self.path is not None:
            return sa.URL.create("sqlite+pysqlite", database=str(self.path))
        u = sa.engine.make_url(self.url)
        return u.set(drivername="postgresql+psycopg")


_PG = re.compile(r"^(postgres|postgresql)(\+psycopg)?$")


def parse_pool_url(url: str | os.PathLike[str]) -> PoolURL:
    """``sqlite:///rel``, ``sqlite:////abs``, ``postgresql://user@host:port/db`` (also
    ``postgres://``, ``postgresql+psycopg://``), a run directory (its ``pool.sqlite``, or the
    URL in its ``pool.url``) or a plain file path."""
    s = os.fspath(url)
    if "://" in s:
        scheme, _, rest = s.partition("://")
        if _PG.match(scheme):
            try:
                u = sa.engine.make_url("postgresql://" + rest)
            except sa.exc.ArgumentError:
                raise PoolError(f"malformed pool URL {s!r}: expected postgresql://user@host:port/db") from None
            if not u.database:
                raise PoolError(f"pool URL {u.render_as_string(hide_password=True)!r} names no "
                                "database: expected postgresql://user@host:port/db")
            return PoolURL("postgresql", url=u.render_as_string(hide_password=False))
        if scheme != "sqlite":
            raise PoolError(f"unsupported pool URL scheme {scheme!r}: use sqlite:///path or "
                            "postgresql://user@host:port/db")
        if not rest.startswith("/"):
            raise PoolError(f"malformed pool URL {s!r}: expected sqlite:///relative/or/"
                            "sqlite:////absolute/path")
        return PoolURL("sqlite", path=Path(rest[1:]))  # sqlite:///rel -> rel, sqlite:////abs -> /abs
    p = Path(s)
    if p.is_dir() and not (p / POOL_FILENAME).exists() and (p / POOL_URL_FILE).exists():
        # a run directory whose pool is on a server (teachloop run --pool URL)
        target = (p / POOL_URL_FILE).read_text().strip()
        if not is_postgres_url(target):
            raise PoolError(f"{p / POOL_URL_FILE} must hold a postgresql:// URL, not {target[:60]!r}")
        return parse_pool_url(target)
    return PoolURL("sqlite", path=p / POOL_FILENAME if p.is_dir() else p)


def is_postgres_url(url: str | os.PathLike[str]) -> bool:
    return bool(_PG.match(os.fspath(url).partition("://")[0])) and "://" in os.fspath(url)
