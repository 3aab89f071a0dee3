"""The archive's Python API: index folders of videos and search them by text.

    from hbci.runtime.archive import Archive
    from hbci.runtime.retriever import Retriever

    retriever = Retriever.load("bundle/")
    archive = Archive.open("archive.db", retriever, create=True)   # or "milvus://host:19530/videos"
    archive.index(["videos/"])                                     # -> IndexSummary
    result = archive.search("a truck backs into the dock", top_k=10)
    for moment in result.moments:
        print(moment.path, moment.start, moment.end, moment.score)
    archive.stats()                                                # -> StoreStats
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, Iterable

from hbci.runtime.archive.indexer import (DEFAULT_STRIDE, DEFAULT_WINDOW, IndexSummary, archive_meta, check_meta,
                                         index_videos, scan_videos)
from hbci.runtime.archive.search import DEFAULT_CANDIDATES, SearchResult, search_archive
from hbci.runtime.archive.sheet import write_contact_sheet
from hbci.runtime.archive.store import Store, StoreStats, open_store

__all__ = ["Archive"]


class Archive:
    """One archive (an embedded database path or a Milvus URI) and the retriever that encodes into it.

    Searching uses a read-only view of the store, so it never blocks an indexer and never writes; `index` opens
    the store for writing for the length of the run (one writer at a time). Calls from several threads (a web
    service) are serialised: the store's connection and caches are not shared concurrently.
    """

    def __init__(self, location: str, retriever, store: Store | None):
        self.location, self.retriever, self._store = location, retriever, store
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path_or_uri: str | os.PathLike, retriever=None, *, create: bool = False) -> "Archive":
        """Open an archive. create=False refuses a location without one (DatabaseError) and writes nothing;
        create=True makes an empty one on the first `index`. `retriever` may be None for `stats` only."""
        location = str(path_or_uri)
        store = None if create else open_store(location, create=False)
        return cls(location, retriever, store)

    def _reader(self) -> Store:
        if self._store is None:
            self._store = open_store(self.location, create=False)
        return self._store

    def _need_retriever(self):
        if self.retriever is None:
            raise ValueError("this Archive was opened without a retriever: Archive.open(location, retriever)")
        return self.retriever

    def index(self, paths: Iterable[str | os.PathLike], *, window: float = DEFAULT_WINDOW,
              stride: float = DEFAULT_STRIDE, batch: int = 8, workers: int = 2, reindex: bool = False,
              progress: bool = False, on_file: Callable[[str], None] | None = None) -> IndexSummary:
        """Index (incrementally) the videos under `paths`; see `hbci.runtime.archive.indexer.index_videos`."""
        retriever = self._need_retriever()
        paths = list(paths)
        scan_videos(paths)  # a missing path or unreadable folder is refused before the store is created
        if not reindex and "://" not in self.location and Path(self.location).exists():
            # Another bundle or other windows are refused before the store is opened for writing.
            check_meta(self._reader(), archive_meta(retriever, window, stride))
        self.close()  # searches reopen a reader, and may run while this indexes (its own writer connection)
        with open_store(self.location, create=True) as store:
            return index_videos(store, retriever, paths, window=window, stride=stride, batch=batch,
                                workers=workers, reindex=reindex, progress=progress, on_file=on_file)

    def search(self, query: str, top_k: int = 10, *, candidates: int = DEFAULT_CANDIDATES,
               exact: bool = False) -> SearchResult:
        """The best `top_k` moments for `query`; see `hbci.runtime.archive.search`."""
        with self._lock:
            return search_archive(self._reader(), self._need_retriever(), query, top_k, candidates=candidates,
                                  exact=exact)

    def contact_sheet(self, result: SearchResult, path: str | os.PathLike) -> Path:
        """Write a contact sheet of `result`'s moments (thumbnails of their best windows) to `path`."""
        with self._lock:
            thumbs = self._reader().thumbnails([m.window_id for m in result.moments])
        return write_contact_sheet(result, thumbs, path)

    def stats(self) -> StoreStats:
        with self._lock:
            return self._reader().stats()

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

