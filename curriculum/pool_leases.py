"""Frontier leases: many generation workers share one pool, no item is expanded twice.

A worker *claims* frontier items (chain heads) before expanding them; the claim is a row in
the ``claims`` table with the worker's name and a lease expiry on the database's clock. While
a worker expands an item it renews the lease; when done it marks the claim ``done``, and a
done item is never claimed again. A worker killed with ``kill -9`` stops renewing: once its
lease has expired, the next worker that claims takes the item over (``takeovers`` + 1,
``previous_worker`` kept), and resumes the dead worker's expansion where it stopped (the
expansion's LangGraph thread and proposal slots are keyed by the item, teachloop/workers.py).

Claiming is one transaction:

1. ``SELECT id FROM items WHERE <frontier> AND NOT EXISTS (a done or live claim) ORDER BY
   created_at, id LIMIT n FOR UPDATE OF items SKIP LOCKED`` (PostgreSQL): two workers
   claiming at once lock disjoint rows instead of queueing behind each other;
2. per candidate, ``INSERT INTO claims ... ON CONFLICT (item_id) DO UPDATE ... WHERE
   claims.state = 'leased' AND claims.lease_until < now RETURNING item_id``: the row that
   comes back is the claim. A candidate whose claim another worker committed after this
   transaction's snapshot comes back empty and is dropped, so the insert is the guard and
   SKIP LOCKED only keeps workers out of each other's way.

On SQLite the same statements run under ``BEGIN IMMEDIATE`` (one writer at a time), where
``FOR UPDATE`` is not needed and not rendered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from teachloop.curriculum.pool_schema import claims, db_now, items


@dataclass(frozen=True)
class Claim:
    item_id: str
    takeover: bool = False  # the item was leased by a worker whose lease expired
    previous_worker: str | None = None


def frontier_filter(direction: str | None = None, families: Sequence[str] | None = None,
                    ids: Sequence[str] | None = None) -> sa.ColumnElement[bool]:
    """The frontier: items of ``direction`` (None: all), of ``families`` (None: all), among
    ``ids`` (None: all)."""
    cond: list[sa.ColumnElement[bool]] = [sa.true()]
    if direction is not None:
        cond.append(items.c.direction == direction)
    if families is not None:
        cond.append(items.c.family.in_(list(families)))
    if ids is not None:
        cond.append(items.c.id.in_(list(ids)))
    return sa.and_(*cond)


class LeasesMixin:
    """The lease operations of ``PoolStore`` (needs its ``_write``, ``_read``, ``_insert``,
    ``dialect``)."""

    dialect: str

    def claim_frontier(self, worker: str, n: int, *, lease_s: float, direction: str | None = None,
                       families: Sequence[str] | None = None,
                       ids: Sequence[str] | None = None) -> list[Claim]:
        """Lease up to ``n`` unexpanded frontier items (oldest first) to ``worker`` for
        ``lease_s`` seconds; items whose lease expired are taken over."""
        if n <= 0:
            return []
        now = db_now(self.dialect)
        busy = sa.exists().where(claims.c.item_id == items.c.id,
                                 sa.or_(claims.c.state == "done", claims.c.lease_until >= now))
        cand = (sa.select(items.c.id).where(frontier_filter(direction, families, ids), ~busy)
                .order_by(items.c.created_at, items.c.id).limit(int(n))
                .with_for_update(skip_locked=True, of=items))
        ins = self._insert(claims).values(
            item_id=sa.bindparam("b_id"), worker=worker, state="leased",
            lease_until=now + float(lease_s), claimed_at=now, takeovers=0)
        ins = ins.on_conflict_do_update(
            index_elements=["item_id"],
            set_={"worker": ins.excluded.worker, "lease_until": ins.excluded.lease_until,
                  "claimed_at": ins.excluded.claimed_at, "takeovers": claims.c.takeovers + 1,
                  "previous_worker": claims.c.worker},
            where=sa.and_(claims.c.state == "leased", claims.c.lease_until < now),
        ).returning(claims.c.item_id, claims.c.takeovers, claims.c.previous_worker)
        out = []
        with self._write() as c:  # type: ignore[attr-defined]
            for (iid,) in c.execute(cand).fetchall():
                row = c.execute(ins, {"b_id": iid}).first()
                if row is not None:
                    out.append(Claim(row[0], takeover=row[1] > 0, previous_worker=row[2]))
        return out

    def renew_leases(self, worker: str, ids: Sequence[str], lease_s: float) -> list[str]:
        """Extend ``worker``'s leases on ``ids``; returns the ids it still holds (a lease that
        expired and was taken over is lost)."""
        if not ids:
            return []
        now = db_now(self.dialect)
        stmt = (claims.update()
                .where(claims.c.item_id.in_(list(ids)), claims.c.worker == worker,
                       claims.c.state == "leased")
                .values(lease_until=now + float(lease_s)).returning(claims.c.item_id))
        with self._write() as c:  # type: ignore[attr-defined]
            return list(c.execute(stmt).scalars().all())

    def finish_claims(self, worker: str, ids: Sequence[str]) -> list[str]:
        """Mark ``worker``'s claims on ``ids`` done (never claimed again); returns the ids that
        were still its own."""
        if not ids:
            return []
        stmt = (claims.update()
                .where(claims.c.item_id.in_(list(ids)), claims.c.worker == worker,
                       claims.c.state == "leased")
                .values(state="done", finished_at=db_now(self.dialect)).returning(claims.c.item_id))
        with self._write() as c:  # type: ignore[attr-defined]
            return list(c.execute(stmt).scalars().all())

    def release_claims(self, worker: str, ids: Sequence[str]) -> int:
        """Give leases back unfinished (a worker stopping early): claimable again at once."""
        if not ids:
            return 0
        stmt = (claims.update()
                .where(claims.c.item_id.in_(list(ids)), claims.c.worker == worker,
                       claims.c.state == "leased")
                .values(lease_until=sa.literal(0.0)))
        with self._write() as c:  # type: ignore[attr-defined]
            return c.execute(stmt).rowcount

    def claim_rows(self) -> list[dict[str, Any]]:
        """Every claim: item_id, worker, state, lease_until, claimed_at, finished_at,
        takeovers, previous_worker."""
        rows = self._read(sa.select(claims).order_by(claims.c.claimed_at, claims.c.item_id))  # type: ignore[attr-defined]
        return [dict(r._mapping) for r in rows]

    def frontier_status(self, *, direction: str | None = None,
                        families: Sequence[str] | None = None,
                        ids: Sequence[str] | None = None) -> dict[str, int]:
        """Frontier items by claim state: ``open`` (never claimed), ``leased`` (lease live),
        ``expired`` (lease ran out: claimable), ``done``."""
        now = db_now(self.dialect)
        state = sa.case((claims.c.item_id.is_(None), "open"), (claims.c.state == "done", "done"),
                        (claims.c.lease_until >= now, "leased"), else_="expired")
        q = (sa.select(state, sa.func.count())
             .select_from(items.outerjoin(claims, claims.c.item_id == items.c.id))
             .where(frontier_filter(direction, families, ids)).group_by(state))
        out = {"open": 0, "leased": 0, "expired": 0, "done": 0}
        out.update({k: int(v) for k, v in self._read(q)})  # type: ignore[attr-defined]
        return out
