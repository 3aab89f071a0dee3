"""The archive's store interface: what the indexer writes and the search reads, whatever keeps it (the embedded
SQLite + memory-mapped arrays store by default, Milvus for scale-out).

A store holds one archive: its settings (`ArchiveMeta`: the bundle id that encoded it, window and stride), one
`FileRecord` per indexed or failed video file, and per window its `WindowRecord` (file, index, start and end
times, bundle id), its video pack (the video encoder's outputs, `video_global` included) and a small JPEG
thumbnail. A file's windows become visible together, or not at all (`FileWriter.commit`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hbci.runtime.errors import DatabaseError

__all__ = ["ArchiveMeta", "FileRecord", "WindowRecord", "StoreStats", "FileWriter", "Store", "open_store",
           "GLOBAL_KEY", "Pack", "Layout", "pack_layout", "layout_state", "check_batch"]

Pack = dict[str, np.ndarray]
# The video encoder's query-independent embedding [D] (L2-normalised): stage one ranks windows by its inner
# product with the text encoder's `text_global`.
GLOBAL_KEY = "video_global"


@dataclass(frozen=True)
class ArchiveMeta:
    """What every window of an archive shares; a different bundle, window or stride needs `--reindex`."""

    bundle_id: str
    window: float  # seconds
    stride: float  # seconds
    num_frames: int  # the bundle's T
    image_size: int  # the bundle's S

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ArchiveMeta":
        return cls(str(data["bundle_id"]), float(data["window"]), float(data["stride"]), int(data["num_frames"]),
                   int(data["image_size"]))


@dataclass(frozen=True)
class FileRecord:
    """One video file as the store last saw it. status: "indexed" (its windows are stored) or "failed" (error)."""

    path: str  # absolute
    size: int
    mtime_ns: int
    sha256: str
    status: str
    error: str | None = None
    windows: int = 0
    duration: float = 0.0  # seconds from the first to the last decoded frame


@dataclass(frozen=True)
class WindowRecord:
    id: int  # the store's id of the window (for the embedded store: its row in the arrays)
    path: str
    index: int  # window k of its file: it spans [t0 + k * stride, t0 + k * stride + window)
    start: float  # time of its first frame, seconds
    end: float  # time of its last frame
    bundle_id: str


@dataclass(frozen=True)
class StoreStats:
    location: str
    backend: str  # "embedded" or "milvus"
    meta: ArchiveMeta | None
    files: int  # indexed files
    failed_files: int
    windows: int
    bytes: int  # on-disk size of the store (embedded), or 0 where the server does not say
    details: dict = field(default_factory=dict)


Layout = dict[str, tuple[tuple[int, ...], str]]  # pack key -> (shape of one window's array, dtype)


def pack_layout(pack: Pack) -> Layout:
    """The layout of a pack: the first window of an archive fixes it."""
    return {k: (tuple(v.shape[1:]), str(v.dtype)) for k, v in pack.items()}


def layout_state(layout: Layout) -> dict:
    """A layout as the stores keep it (JSON)."""
    return {k: {"shape": list(s), "dtype": d} for k, (s, d) in layout.items()}


def check_batch(location: str, windows: list, pack: Pack, thumbnails: list, layout: Layout | None) -> None:
    """What every writer checks before adding: equal lengths, and the archive's pack keys (when it has a layout)."""
    if len(thumbnails) != len(windows) or any(len(v) != len(windows) for v in pack.values()):
        raise ValueError("windows, pack arrays and thumbnails must have the same length")
    if layout and set(pack) != set(layout):
        raise DatabaseError(f"{location}: the video encoder's outputs {sorted(pack)} differ from the archive's "
                            f"{sorted(layout)}")


class FileWriter(ABC):
    """Adds the windows of one file. Nothing is visible until `commit`; an abandoned writer (exception, SIGKILL)
    leaves the store as it was, apart from space the next writer reuses."""

    @abstractmethod
    def add(self, windows: list[tuple[int, float, float]], pack: Pack, thumbnails: list[bytes]) -> None:
        """windows: (index, start, end) per window, in order; pack: arrays [n, ...]; one JPEG per window."""

    @abstractmethod
    def commit(self, record: FileRecord) -> None:
        """Make the file (`record`, status "indexed", with its window count) and all its windows visible at once,
        replacing any earlier version of the file."""

    def abort(self) -> None:
        """Forget what was added (the space is reused)."""


class Store(ABC):
    backend = "store"
    location: str

    @abstractmethod
    def meta(self) -> ArchiveMeta | None:
        """The archive's settings, or None for a store nothing was indexed into yet."""

    @abstractmethod
    def reset(self, meta: ArchiveMeta) -> None:
        """Drop every file and window and start over with these settings (also the first initialisation)."""

    @abstractmethod
    def files(self) -> dict[str, FileRecord]:
        """Every file record, by path."""

    @abstractmethod
    def write_file(self, path: str, sha256: str) -> FileWriter:
        """A writer for the windows of the file at `path` with these contents (one writer at a time)."""

    def finish(self) -> None:
        """Bring derived search structures (an ANN index) up to date after an index run."""

    @abstractmethod
    def put_record(self, record: FileRecord) -> None:
        """Store a file record without windows (a failed file, or a touched but unchanged one: then its windows
        stay), replacing the earlier record; a failed file's old windows are removed with it, atomically."""

    @abstractmethod
    def remove_files(self, paths: list[str]) -> None:
        """Forget these files and their windows."""

    @abstractmethod
    def count(self) -> int:
        """Windows stored."""

    @abstractmethod
    def candidates(self, query: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Stage one: the ids of the (about) m windows whose global embedding has the largest inner product with
        `query` [D], best first, and those products."""

    @abstractmethod
    def ids(self) -> np.ndarray:
        """Every window id (for `--exact`)."""

    @abstractmethod
    def packs(self, ids: np.ndarray) -> Pack:
        """The stored video packs of these windows, in the order given (arrays [len(ids), ...])."""

    @abstractmethod
    def windows(self, ids: np.ndarray) -> list[WindowRecord]:
        """The window records, in the order given."""

    @abstractmethod
    def thumbnails(self, ids: np.ndarray) -> list[bytes | None]:
        """The JPEG thumbnail of each window (None where none was stored)."""

    @abstractmethod
    def stats(self) -> StoreStats:
        ...

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_store(location: str | Path, *, create: bool = False) -> Store:
    """The store at `location`: `milvus://host:port/collection` or a milvus-lite file
    (`milvus-lite:///path/file.db?collection=name`) for Milvus, any other string a path of the embedded store.

    create=False (searching) refuses a location that holds no archive and writes nothing; create=True (indexing)
    creates it if needed.
    """
    text = str(location)
    if text.startswith(("milvus://", "milvus-lite://")):
        from hbci.runtime.archive.milvus import MilvusStore

        return MilvusStore.open(text, create=create)
    if "://" in text:
        raise DatabaseError(f"{text}: unknown archive location (a path, milvus://host:port/collection or "
                            f"milvus-lite:///path/file.db)")
    from hbci.runtime.archive.embedded import EmbeddedStore

    return EmbeddedStore.open(Path(text), create=create)
