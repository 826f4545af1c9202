"""Exact and near-duplicate detection of teacher proposals against the pool.

The paper filters "invalid or redundant" generations (Sancaktar et al., METHODS.md §1)
without saying how. teachloop's choice:

- **Exact duplicate**: the same item id, i.e. the same family and the same normalised
  student prompt (``teachloop.curriculum.items.item_id`` is that content hash).
- **Near duplicate**: the same family, **word-shingle Jaccard >= threshold** (default 0.85,
  3-word shingles over lower-cased, NFKC-normalised tokens; numbers and punctuation are
  tokens) **and the same normalised gold answer**.

Why this method: a teacher that copies its parent with cosmetic edits (a reworded sentence,
renamed variable, extra whitespace) produces a high-overlap text that asks for the same
computation, hence the same answer; shingle Jaccard catches that deterministically, needs no
model, and is cheap. The answer condition is what keeps legitimate variants: a templated
problem whose numbers changed (what the procedural teacher and numeric rewrites produce) has a
high text overlap but a different answer, and is a different exercise for the student.
Embedding similarity would be the next step for paraphrases with low word overlap; it needs a
model and is not done here.

Scale: candidates come from MinHash-LSH (32 permutations in 8 bands of 4 rows: a pair with
Jaccard 0.85 becomes a candidate with probability > 0.99, one with 0.3 with about 0.06) and
are then checked with the exact Jaccard of their shingle sets, so the index answers in about
constant time per query instead of a scan of the pool. Thread-safe (one lock).

Not covered: cross-family duplicates (a math.word rewrite of a math.rg item is compared only
with math.word items), and paraphrases that share few words.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_PRIME = np.uint64(4294967311)  # a prime > 2**32: (a*h + b) mod p stays below 2**64
_MAX_TEXT = 200_000


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(unicodedata.normalize("NFKC", text[:_MAX_TEXT]).lower())


def shingles(text: str, k: int = 3) -> frozenset[int]:
    """The set of hashed ``k``-token shingles of ``text`` (a text shorter than ``k`` tokens is
    one shingle)."""
    toks = tokens(text)
    if len(toks) < k:
        grams = [" ".join(toks)]
    else:
        grams = [" ".join(toks[i:i + k]) for i in range(len(toks) - k + 1)]
    return frozenset(int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "little")
                     for g in grams)


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def normalise_answer(answer: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", answer).split()).lower()


@dataclass(frozen=True)
class Match:
    item_id: str
    jaccard: float


class NearDupIndex:
    """MinHash-LSH over word shingles; see the module docstring for the rule."""

    def __init__(self, threshold: float = 0.85, k: int = 3, num_perm: int = 32, bands: int = 8,
                 seed: int = 1) -> None:
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.threshold, self.k, self.bands = threshold, k, bands
        self.rows = num_perm // bands
        rng = np.random.default_rng(seed)
        self._a = rng.integers(1, 2**32, size=num_perm, dtype=np.uint64)
        self._b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64)
        self._buckets: dict[tuple[str, int, bytes], set[str]] = defaultdict(set)
        self._entries: dict[str, tuple[str, frozenset[int], str]] = {}  # id -> (family, shingles, answer)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._entries

    def _band_keys(self, sh: frozenset[int]) -> list[tuple[int, bytes]]:
        h = np.fromiter(sh, dtype=np.uint64, count=len(sh)) if sh else np.zeros(1, dtype=np.uint64)
        sig = ((self._a[:, None] * h[None, :] + self._b[:, None]) % _PRIME).min(axis=1)
        return [(i, sig[i * self.rows:(i + 1) * self.rows].tobytes()) for i in range(self.bands)]

    def add(self, item_id: str, family: str, text: str, answer: str) -> None:
        sh = shingles(text, self.k)
        with self._lock:
            if item_id in self._entries:
                return
            self._entries[item_id] = (family, sh, normalise_answer(answer))
            for band, key in self._band_keys(sh):
                self._buckets[(family, band, key)].add(item_id)

    def query(self, family: str, text: str, answer: str, *, exclude: str = "") -> Match | None:
        """The most similar indexed item that makes (family, text, answer) a near duplicate."""
        if self.threshold > 1.0:
            return None
        sh = shingles(text, self.k)
        ans = normalise_answer(answer)
        with self._lock:
            cands: set[str] = set()
            for band, key in self._band_keys(sh):
                cands |= self._buckets.get((family, band, key), set())
            best: Match | None = None
            for cid in cands:
                if cid == exclude:
                    continue
                fam, csh, cans = self._entries[cid]
                if fam != family or cans != ans:
                    continue
                j = jaccard(sh, csh)
                if j >= self.threshold and (best is None or j > best.jaccard):
                    best = Match(cid, j)
            return best
