"""Archive search in two stages: stage one ranks every window by the inner product of its global video embedding
with the query's global text embedding and keeps the best `candidates`; stage two scores those with the bundle's
BCI scorer graph on their stored packs. `exact=True` scores every window with the scorer instead.

Moments. The scored windows are taken best first; a window that overlaps (in time) a moment already found in the
same file joins it (the moment's extent grows, its score stays its best window's), any other starts a new moment,
until `top_k` moments exist. So the extent of a moment is made of windows that outscore every later moment.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from hbci.runtime.archive.store import Store, WindowRecord
from hbci.runtime.errors import ConfigError, DatabaseError, IndexMismatchError

__all__ = ["Moment", "SearchResult", "DEFAULT_CANDIDATES", "merge_moments", "search_archive", "check_bundle"]

# Stage-two size M: the smallest power of two whose two-stage t2v R@1 equals --exact on the synthetic test split
# indexed as files (benchmarks/bench_archive.py --quality; docs/archive.md has the figures).
DEFAULT_CANDIDATES = 64
_EXACT_CHUNK = 4096  # windows read and scored at a time by --exact: bounds memory on any archive


@dataclass(frozen=True)
class Moment:
    """A stretch of one file matching the query: its extent (first frame of its first window to last frame of
    its last), its best window and that window's score."""

    path: str
    start: float
    end: float
    score: float
    best_start: float
    best_end: float
    window_id: int  # the best window's id in the store
    windows: int  # scored windows merged into the moment
    bundle_id: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SearchResult:
    query: str
    moments: list[Moment]
    exact: bool
    scored: int  # windows the BCI scorer scored
    windows: int  # windows in the archive
    bundle_id: str
    seconds: dict = field(default_factory=dict)  # text, stage_one, stage_two, total

    def to_dict(self) -> dict:
        return {"query": self.query, "mode": "exact" if self.exact else "two-stage", "scored": self.scored,
                "windows": self.windows, "bundle_id": self.bundle_id,
                "seconds": {k: round(v, 6) for k, v in self.seconds.items()},
                "moments": [m.to_dict() for m in self.moments]}


class _Open:
    """A moment being built."""

    def __init__(self, window: WindowRecord, score: float):
        self.best, self.score = window, score
        self.start, self.end, self.count = window.start, window.end, 1

    def overlaps(self, window: WindowRecord) -> bool:
        return window.path == self.best.path and window.start <= self.end and window.end >= self.start

    def absorb(self, other: "_Open") -> None:
        self.start, self.end = min(self.start, other.start), max(self.end, other.end)
        self.count += other.count
        if other.score > self.score:
            self.best, self.score = other.best, other.score

    def moment(self) -> Moment:
        b = self.best
        return Moment(b.path, self.start, self.end, float(self.score), b.start, b.end, b.id, self.count, b.bundle_id)


def merge_moments(hits, top_k: int) -> list[Moment]:
    """Merge (WindowRecord, score) pairs given best first into at most `top_k` moments (module docstring)."""
    moments: list[_Open] = []
    for window, score in hits:
        joined = [m for m in moments if m.overlaps(window)]
        if joined:
            # A window can bridge two moments of one file: they become one, kept at the better one's rank.
            first = joined[0]
            first.absorb(_Open(window, float(score)))
            for other in joined[1:]:
                first.absorb(other)
                moments.remove(other)
        elif len(moments) < top_k:
            moments.append(_Open(window, float(score)))
        else:
            break
    return [m.moment() for m in moments]


def check_bundle(store: Store, retriever) -> None:
    """Refuse to search an archive encoded by another bundle, or one that holds nothing."""
    meta = store.meta()
    if meta is None or store.count() == 0:
        raise DatabaseError(f"{store.location}: the archive holds no windows (index videos into it with "
                            f"hbci-index VIDEO_DIR --db {store.location})")
    if meta.bundle_id != retriever.bundle_id:
        raise IndexMismatchError(f"{store.location} was indexed with bundle {meta.bundle_id}, this is bundle "
                                 f"{retriever.bundle_id}: search it with that bundle, or rebuild it with "
                                 f"hbci-index --reindex --bundle ... --db {store.location}")


def search_archive(store: Store, retriever, query: str, top_k: int = 10, *, candidates: int = DEFAULT_CANDIDATES,
                   exact: bool = False) -> SearchResult:
    """The `top_k` best moments for `query` (see the module docstring). Raises QueryError for an empty or too
    long query, IndexMismatchError for an archive of another bundle, DatabaseError for an empty one."""
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    if candidates < top_k:
        raise ConfigError(f"candidates ({candidates}) must be at least top_k ({top_k})")
    t_start = time.perf_counter()
    check_bundle(store, retriever)
    text = retriever.encode_text([query])  # QueryError for empty or too long queries
    t_text = time.perf_counter()
    total = store.count()
    if exact:
        ids = store.ids()
        scores = np.concatenate([retriever.score(text, store.packs(ids[i:i + _EXACT_CHUNK]))[0]
                                 for i in range(0, len(ids), _EXACT_CHUNK)])
        t_one = t_text
    else:
        ids, _ = store.candidates(text["text_global"][0], candidates)
        t_one = time.perf_counter()
        scores = retriever.score(text, store.packs(ids))[0]
    order = np.lexsort((ids, -scores))  # best first, ties by id: the same order in every mode
    ids, scores = ids[order], scores[order]
    moments = merge_moments(_hits(store, ids, scores), top_k)
    t_end = time.perf_counter()
    return SearchResult(query, moments, exact, len(ids), total, retriever.bundle_id,
                        {"text": t_text - t_start, "stage_one": t_one - t_text, "stage_two": t_end - t_one,
                         "total": t_end - t_start})


def _hits(store: Store, ids: np.ndarray, scores: np.ndarray, chunk: int = 256):
    """(WindowRecord, score) best first, reading window records a chunk at a time (merging stops early)."""
    for i in range(0, len(ids), chunk):
        yield from zip(store.windows(ids[i:i + chunk]), scores[i:i + chunk])
