"""Frontier leases (curriculum/pool_leases.py) on both dialects: disjoint claims, renewal,
expiry and takeover, done items never claimed again, many processes claiming at once."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from teachloop.curriculum.items import Item
from teachloop.curriculum.pool import open_pool


def _seeded(url: str, n: int = 6):
    store = open_pool(url)
    seeds = [Item(family="math.word", prompt=f"seed {i}", created_at=1000.0 + i) for i in range(n)]
    store.insert_many(seeds)
    store.insert(seeds[0].child("an easier one", "easier"))  # not a seed: outside the frontier
    return store, [s.id for s in seeds]


def test_claims_are_disjoint_oldest_first_and_done_is_final(new_pool_url):
    store, ids = _seeded(new_pool_url())
    a = store.claim_frontier("a", 2, lease_s=60, direction="seed")
    b = store.claim_frontier("b", 10, lease_s=60, direction="seed")
    assert [c.item_id for c in a] == ids[:2]
    assert [c.item_id for c in b] == ids[2:]
    assert store.claim_frontier("c", 10, lease_s=60, direction="seed") == []
    assert store.frontier_status(direction="seed") == {"open": 0, "leased": 6, "expired": 0, "done": 0}
    assert store.finish_claims("a", ids[:3]) == ids[:2]  # ids[2] is b's: not a's to finish
    assert store.renew_leases("b", ids, lease_s=60) == ids[2:]
    assert store.frontier_status(direction="seed")["done"] == 2
    assert store.release_claims("b", ids[2:4]) == 2  # given back unfinished: claimable at once
    c = store.claim_frontier("c", 10, lease_s=60, direction="seed")
    assert [x.item_id for x in c] == ids[2:4] and all(x.takeover for x in c)
    assert {x.previous_worker for x in c} == {"b"}
    store.close()


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_finish(new_pool_url):
    store, ids = _seeded(new_pool_url(), n=2)
    assert len(store.claim_frontier("dead", 2, lease_s=0.5, direction="seed")) == 2
    assert store.claim_frontier("live", 2, lease_s=30, direction="seed") == []  # still leased
    time.sleep(0.8)
    assert store.frontier_status(direction="seed")["expired"] == 2
    got = store.claim_frontier("live", 2, lease_s=30, direction="seed")
    assert [(c.item_id, c.takeover, c.previous_worker) for c in got] == [(i, True, "dead") for i in ids]
    assert store.renew_leases("dead", ids, lease_s=30) == []  # the lease is lost
    assert store.finish_claims("dead", ids) == []
    assert store.finish_claims("live", ids) == ids
    rows = {r["item_id"]: r for r in store.claim_rows()}
    assert all(rows[i]["state"] == "done" and rows[i]["takeovers"] == 1 for i in ids)
    store.close()


def _claimer(url: str, worker: str, barrier, out) -> None:
    store = open_pool(url)
    barrier.wait()
    got = []
    while True:
        batch = store.claim_frontier(worker, 3, lease_s=60, direction="seed")
        if not batch:
            break
        got += [c.item_id for c in batch]
        store.finish_claims(worker, [c.item_id for c in batch])
    out.put((worker, got))
    store.close()


@pytest.mark.parametrize("n_procs", [4])
def test_processes_claiming_at_once_never_share_an_item(new_pool_url, n_procs):
    url = new_pool_url()
    store, ids = _seeded(url, n=60)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(n_procs), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, f"w{k}", barrier, out)) for k in range(n_procs)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=180) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * n_procs
    claimed = [i for got in results.values() for i in got]
    assert sorted(claimed) == sorted(ids)  # every seed exactly once, across all processes
    assert store.frontier_status(direction="seed") == {"open": 0, "leased": 0, "expired": 0, "done": 60}
    store.close()
