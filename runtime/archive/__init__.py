"""The video archive: index folders of videos into windows (embedded SQLite store, or Milvus) and search them by
text in two stages. `Archive` is the Python API; `hbci-index` and `hbci-search` are its commands."""

from hbci.runtime.archive.archive import Archive
from hbci.runtime.archive.indexer import IndexSummary
from hbci.runtime.archive.search import Moment, SearchResult
from hbci.runtime.archive.store import ArchiveMeta, FileRecord, Store, StoreStats, WindowRecord, open_store

__all__ = ["Archive", "IndexSummary", "Moment", "SearchResult", "Store", "StoreStats", "ArchiveMeta", "FileRecord",
           "WindowRecord", "open_store"]
