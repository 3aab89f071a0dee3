"""The embedded archive store: SQLite (WAL while indexing) for files, windows, thumbnails and state; the video packs in
memory-mapped array files beside it; stage one by exact matrix product, or a usearch HNSW index above
`ANN_MIN_VALUES` stored values.

On disk, for `--db archive.db`: `archive.db` (SQLite; `-wal`/`-shm` while open), `archive.db.lock` (one writer at
a time), and `archive.db.arrays/` with one raw file per pack key (`<key>.bin`, row-major [rows, ...], dtype and
shape in the state table) and the ANN index (`global-g<generation>-<rows>.usearch`) when there is one.

Crash safety. Array files are append-only: a file's rows are appended past the committed row count, flushed to
disk, and only then does one SQLite transaction insert the file, its windows (a window's id is its array row)
and thumbnails, and raise the committed row count. A writer opening the store truncates the arrays to that count,
so a SIGKILL at any point loses at most the file in flight and never leaves a row pointing at unwritten data.
Rows of a re-indexed or deleted file become holes (counted in stats) that the search skips; `--reindex` rebuilds
without them. Readers map only committed rows and may search while a writer appends.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np

from hbci.runtime.archive.store import (GLOBAL_KEY, ArchiveMeta, FileRecord, FileWriter, Pack, Store, StoreStats,
                                        WindowRecord, check_batch, layout_state, pack_layout)
from hbci.runtime.errors import DatabaseError, HbciError

__all__ = ["EmbeddedStore", "ANN_MIN_VALUES"]

# Stage one switches from the exact product to usearch HNSW at this many stored values (windows x D): 8M float32
# values (62.5k windows at D = 128, 15.6k at D = 512) cost about 3-7 ms a query on the project's 2-core CPU, growing
# linearly, against under 1 ms for HNSW, whose recall is below 1 (benchmarks/bench_archive.py, docs/archive.md).
ANN_MIN_VALUES = 8_000_000
_SQLITE_HEADER = b"SQLite format 3\x00"
_TABLES = {"state", "files", "windows", "thumbs"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, status TEXT NOT NULL, error TEXT, windows INTEGER NOT NULL, duration REAL NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    id INTEGER PRIMARY KEY,  -- the window's row in the array files
    file_id INTEGER NOT NULL REFERENCES files(id), idx INTEGER NOT NULL, start REAL NOT NULL, end REAL NOT NULL,
    bundle_id TEXT NOT NULL, UNIQUE (file_id, idx));
CREATE TABLE IF NOT EXISTS thumbs (window_id INTEGER PRIMARY KEY, jpeg BLOB NOT NULL);
"""


class EmbeddedStore(Store):
    backend = "embedded"

    def __init__(self, path: Path, conn: sqlite3.Connection, writable: bool, lock_fd: int | None):
        self.path, self.location = path, str(path)
        self.arrays_dir = path.with_name(path.name + ".arrays")
        self.conn, self.writable, self._lock_fd = conn, writable, lock_fd
        self._writer: _EmbeddedWriter | None = None
        self._cache_version = None
        self._maps: dict[str, np.memmap] = {}
        self._fds: dict[str, int] = {}  # pack files, read with pread
        self._ann = None  # (generation, rows, usearch index)

    # --------------------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: Path, create: bool = False) -> "EmbeddedStore":
        path = Path(path)
        if path.is_dir():
            raise DatabaseError(f"{path}: is a folder, not an archive database file")
        if path.exists():
            _check_header(path)
        elif not create:
            raise DatabaseError(f"{path}: no archive here (build one with: hbci-index VIDEO_DIR --db {path})")
        if path.exists():
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            try:
                try:
                    _check_schema(conn, path, allow_empty=create)  # a writer killed before it made the tables
                except sqlite3.OperationalError as exc:
                    if "readonly" not in str(exc):
                        raise
                    # A writer was killed: its write-ahead log needs a recovery a read-only connection cannot do.
                    conn.close()
                    _recover(path)
                    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
                    _check_schema(conn, path, allow_empty=create)
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise DatabaseError(f"{path}: cannot be read as an archive ({exc})") from None
            except DatabaseError:
                conn.close()
                raise
            if not create:
                return cls(path, conn, writable=False, lock_fd=None)
            conn.close()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"{path.parent}: cannot create the archive folder ({exc.strerror})") from None
        lock_fd = _lock(path)
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives any process crash; a power cut may lose the last commit, which only
            # leaves array rows past the committed count (truncated at the next open).
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            os.close(lock_fd)
            raise DatabaseError(f"{path}: cannot be opened as an archive ({exc})") from None
        store = cls(path, conn, writable=True, lock_fd=lock_fd)
        store._truncate_uncommitted()
        return store

    def close(self) -> None:
        if self._writer is not None:
            self._writer.abort()
        self._maps.clear()
        self._close_fds()
        self._ann = None
        if self.writable:
            # At rest the database leaves WAL mode, so that searching (read-only) creates no -wal/-shm files
            # beside it; it fails harmlessly while a reader is connected.
            try:
                self.conn.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.OperationalError:
                pass
        self.conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --------------------------------------------------------------------------------------------- state
    def _state(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def _set_state(self, key: str, value) -> None:
        self.conn.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self) -> ArchiveMeta | None:
        data = self._state("meta")
        return ArchiveMeta.from_dict(data) if data else None

    def _rows(self) -> int:
        return int(self._state("rows", 0))

    def _layout(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {k: (tuple(v["shape"]), v["dtype"]) for k, v in self._state("layout", {}).items()}

    def _array_path(self, key: str) -> Path:
        return self.arrays_dir / f"{key}.bin"

    def _truncate_uncommitted(self) -> None:
        """Cut the array files back to the committed rows (space a killed writer appended) and drop files of an
        earlier layout or generation."""
        rows, layout = self._rows(), self._layout()
        self.arrays_dir.mkdir(exist_ok=True)
        keep = {self._array_path(k).name for k in layout}
        for file in self.arrays_dir.iterdir():
            if file.name not in keep and not self._is_current_ann(file):
                file.unlink()
        for key, (shape, dtype) in layout.items():
            file = self._array_path(key)
            size = rows * _row_bytes(shape, dtype)
            with open(file, "ab") as fh:
                if fh.tell() < size:
                    raise DatabaseError(f"{file}: holds {fh.tell()} bytes, the database expects {size}: the archive "
                                        f"is damaged (rebuild it with hbci-index --reindex)")
                fh.truncate(size)

    def _is_current_ann(self, file: Path) -> bool:
        return file.name.startswith(f"global-g{self._state('generation', 0)}-") and file.suffix == ".usearch"

    def reset(self, meta: ArchiveMeta) -> None:
        self._require_writable()
        generation = int(self._state("generation", 0)) + 1
        with _transaction(self.conn):
            for table in ("thumbs", "windows", "files", "state"):
                self.conn.execute(f"DELETE FROM {table}")
            self._set_state("meta", meta.to_dict())
            self._set_state("rows", 0)
            self._set_state("generation", generation)
        shutil.rmtree(self.arrays_dir, ignore_errors=True)
        self.arrays_dir.mkdir()
        self._maps.clear()
        self._close_fds()
        self._ann = None

    def _require_writable(self) -> None:
        if not self.writable:
            raise DatabaseError(f"{self.path}: opened read-only")

    # --------------------------------------------------------------------------------------------- files
    def files(self) -> dict[str, FileRecord]:
        rows = self.conn.execute(
            "SELECT path, size, mtime_ns, sha256, status, error, windows, duration FROM files").fetchall()
        return {r[0]: FileRecord(*r) for r in rows}

    def write_file(self, path: str, sha256: str) -> FileWriter:
        self._require_writable()
        if self._writer is not None:
            raise RuntimeError("one file at a time: commit or abort the previous writer first")
        self._writer = _EmbeddedWriter(self)
        return self._writer

    def put_record(self, record: FileRecord) -> None:
        self._require_writable()
        with _transaction(self.conn):
            if record.status == "indexed":
                self.conn.execute("UPDATE files SET size = ?, mtime_ns = ?, sha256 = ? WHERE path = ?",
                                  (record.size, record.mtime_ns, record.sha256, record.path))
            else:
                self._delete_file(record.path)
                self._insert_file(record)

    def remove_files(self, paths: list[str]) -> None:
        self._require_writable()
        with _transaction(self.conn):
            for path in paths:
                self._delete_file(path)

    def _delete_file(self, path: str) -> None:
        row = self.conn.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
        if row is None:
            return
        self.conn.execute("DELETE FROM thumbs WHERE window_id IN (SELECT id FROM windows WHERE file_id = ?)", row)
        self.conn.execute("DELETE FROM windows WHERE file_id = ?", row)
        self.conn.execute("DELETE FROM files WHERE id = ?", row)

    def _insert_file(self, record: FileRecord) -> int:
        cur = self.conn.execute(
            "INSERT INTO files (path, size, mtime_ns, sha256, status, error, windows, duration) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record.path, record.size, record.mtime_ns, record.sha256, record.status, record.error, record.windows,
             record.duration))
        return int(cur.lastrowid)

    # --------------------------------------------------------------------------------------------- reading
    def _refresh(self) -> None:
        """Drop cached maps and ids when another connection (or this one) committed since they were read."""
        version = (self.conn.execute("PRAGMA data_version").fetchone()[0], self.conn.total_changes)
        if version != self._cache_version:
            self._cache_version = version
            self._maps.clear()
            self._ids = np.array([r[0] for r in self.conn.execute("SELECT id FROM windows ORDER BY id")],
                                 dtype=np.int64)
            self._snapshot_rows, self._snapshot_layout = self._rows(), self._layout()
            self._live = None  # holes of re-indexed or deleted files: their rows are never returned
            if len(self._ids) < self._snapshot_rows:
                self._live = np.zeros(self._snapshot_rows, bool)
                self._live[self._ids] = True
            generation = int(self._state("generation", 0))
            if generation != getattr(self, "_generation", generation):
                self._close_fds()  # a --reindex replaced the array files
            self._generation = generation

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _array(self, key: str) -> np.ndarray:
        if key not in self._maps:
            shape, dtype = self._snapshot_layout[key]
            rows = self._snapshot_rows
            if rows == 0:
                return np.zeros((0, *shape), dtype)
            self._maps[key] = np.memmap(self._array_path(key), dtype=dtype, mode="r", shape=(rows, *shape))
        return self._maps[key]

    def _read_rows(self, key: str, ids: np.ndarray) -> np.ndarray:
        """Rows of one pack array, read with pread: mapping the file instead would bring whole page-cache folios
        (up to megabytes) into the process for each scattered row stage two reads."""
        shape, dtype = self._snapshot_layout[key]
        size = _row_bytes(shape, dtype)
        if key not in self._fds:
            self._fds[key] = os.open(self._array_path(key), os.O_RDONLY)
        fd = self._fds[key]
        order = np.argsort(ids, kind="stable")
        rows = ids[order]
        out = np.empty((len(ids), *shape), dtype)
        view = out.reshape(len(ids), -1).view(np.uint8)
        j = 0
        while j < len(rows):  # one read per run of consecutive rows (--exact reads whole chunks)
            k = j + 1
            while k < len(rows) and rows[k] == rows[k - 1] + 1:
                k += 1
            data = os.pread(fd, size * (k - j), int(rows[j]) * size)
            if len(data) != size * (k - j):
                raise DatabaseError(f"{self._array_path(key)}: shorter than the database says (damaged)")
            view[order[j:k]] = np.frombuffer(data, np.uint8).reshape(k - j, -1)
            j = k
        return out

    def count(self) -> int:
        self._refresh()
        return len(self._ids)

    def ids(self) -> np.ndarray:
        self._refresh()
        return self._ids.copy()

    def candidates(self, query: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        self._refresh()
        n = len(self._ids)
        m = min(m, n)
        if m <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        query = np.asarray(query, np.float32).reshape(-1)
        if self._uses_ann():
            found = self._ann_candidates(query, m)
            if found is not None:
                return found
        return self._exact_candidates(query, m)

    def _uses_ann(self) -> bool:
        vectors = self._array(GLOBAL_KEY)
        return len(self._ids) * int(np.prod(vectors.shape[1:])) >= ANN_MIN_VALUES

    def _exact_candidates(self, query: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        # einsum runs in this thread: a multi-threaded BLAS matrix-vector product gains nothing on this
        # memory-bound work and waits for scheduler slices when the cores are busy (12 ms instead of 0.1 ms).
        scores = np.einsum("ij,j->i", self._array(GLOBAL_KEY), query).astype(np.float32, copy=False)
        if self._live is not None:
            scores[~self._live] = -np.inf
        top = np.argpartition(-scores, m - 1)[:m] if m < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((top, -scores[top]))]  # best first, ties by id: deterministic
        return top.astype(np.int64), scores[top]

    def _ann_candidates(self, query: np.ndarray, m: int):
        index = self._ann_index()
        rows = self._snapshot_rows
        holes = rows - len(self._ids)
        k = min(rows, m + holes)
        matches = index.search(query, k)
        keys = np.asarray(matches.keys, np.int64)
        dist = np.asarray(matches.distances, np.float32)
        if self._live is not None:
            keep = self._live[keys]
            keys, dist = keys[keep], dist[keep]
        if len(keys) < m:
            return None  # too many holes near the query: the exact product is right by construction
        return keys[:m], (1.0 - dist[:m]).astype(np.float32)

    def _ann_index(self):
        """The usearch index over every committed row: loaded from its file, extended with rows committed since
        it was saved, and saved again when this store may write."""
        rows, generation = self._snapshot_rows, self._generation
        if self._ann is not None and self._ann[:2] == (generation, rows):
            return self._ann[2]
        index, covered = None, 0
        if self._ann is not None and self._ann[0] == generation and self._ann[1] <= rows:
            index, covered = self._ann[2], self._ann[1]
        else:
            best = None
            for file in self.arrays_dir.glob(f"global-g{generation}-*.usearch"):
                n = int(file.stem.rsplit("-", 1)[1])
                if n <= rows and (best is None or n > best[0]):
                    best = (n, file)
            if best is not None:
                index, covered = _usearch().Index.restore(str(best[1])), best[0]
        vectors = self._array(GLOBAL_KEY)
        if index is None:
            index = _usearch().Index(ndim=vectors.shape[1], metric="ip", dtype="f32", connectivity=16,
                                     expansion_add=128, expansion_search=256)
        if covered < rows:
            index.add(np.arange(covered, rows, dtype=np.int64), np.ascontiguousarray(vectors[covered:rows]))
            if self.writable:
                self._save_ann(index, generation, rows)
        self._ann = (generation, rows, index)
        return index

    def _save_ann(self, index, generation: int, rows: int) -> None:
        final = self.arrays_dir / f"global-g{generation}-{rows}.usearch"
        tmp = final.with_name(f".{final.name}.tmp")
        index.save(str(tmp))
        os.replace(tmp, final)
        for old in self.arrays_dir.glob("global-*.usearch"):
            if old != final:
                old.unlink(missing_ok=True)

    def finish(self) -> None:
        """Bring the ANN index up to date after an index run, so the first search does not pay for it."""
        self._refresh()
        if len(self._ids) and self._uses_ann():
            self._ann_index()

    def packs(self, ids: np.ndarray) -> Pack:
        self._refresh()
        ids = np.asarray(ids, np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self._snapshot_rows):
            raise DatabaseError(f"{self.path}: window ids out of range")
        return {key: self._read_rows(key, ids) for key in self._snapshot_layout}

    def windows(self, ids: np.ndarray) -> list[WindowRecord]:
        ids = [int(i) for i in ids]
        found: dict[int, WindowRecord] = {}
        for chunk in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            part = ids[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            for row in self.conn.execute(
                    f"SELECT w.id, f.path, w.idx, w.start, w.end, w.bundle_id FROM windows w "
                    f"JOIN files f ON f.id = w.file_id WHERE w.id IN ({marks})", part):
                found[row[0]] = WindowRecord(*row)
        missing = [i for i in ids if i not in found]
        if missing:
            raise DatabaseError(f"{self.path}: windows {missing[:5]} vanished (re-indexed while searching?)")
        return [found[i] for i in ids]

    def thumbnails(self, ids: np.ndarray) -> list[bytes | None]:
        out = []
        for i in ids:
            row = self.conn.execute("SELECT jpeg FROM thumbs WHERE window_id = ?", (int(i),)).fetchone()
            out.append(bytes(row[0]) if row else None)
        return out

    def stats(self) -> StoreStats:
        self._refresh()
        files = dict(self.conn.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall())
        on_disk = [self.path, Path(f"{self.path}-wal")] + (list(self.arrays_dir.iterdir())
                                                            if self.arrays_dir.is_dir() else [])
        size = sum(p.stat().st_size for p in on_disk if p.is_file())
        rows = self._snapshot_rows
        return StoreStats(self.location, self.backend, self.meta(), files.get("indexed", 0), files.get("failed", 0),
                          len(self._ids), size,
                          {"array_rows": rows, "holes": rows - len(self._ids),
                           "stage_one": "usearch HNSW" if len(self._ids) and self._uses_ann() else "exact product"})


class _EmbeddedWriter(FileWriter):
    def __init__(self, store: EmbeddedStore):
        self.store = store
        self.first_row = store._rows()
        self.windows: list[tuple[int, float, float]] = []
        self.thumbnails: list[bytes] = []
        self.handles: dict[str, object] = {}

    def add(self, windows, pack, thumbnails) -> None:
        store = self.store
        layout = store._layout()
        check_batch(str(store.path), windows, pack, thumbnails, layout)
        if not windows:
            return
        if not layout:  # the first window of the archive fixes the pack layout
            layout = pack_layout(pack)
            with _transaction(store.conn):
                store._set_state("layout", layout_state(layout))
        for key, (shape, dtype) in layout.items():
            value = np.ascontiguousarray(pack[key], dtype=dtype)
            if value.shape[1:] != shape:
                raise DatabaseError(f"{store.path}: {key} has shape {value.shape[1:]}, the archive stores {shape}")
            if key not in self.handles:
                handle = open(store._array_path(key), "r+b" if store._array_path(key).exists() else "w+b")
                handle.seek(self.first_row * _row_bytes(shape, dtype))
                self.handles[key] = handle
            self.handles[key].write(value.tobytes())
        self.windows += windows
        self.thumbnails += thumbnails

    def commit(self, record: FileRecord) -> None:
        store = self.store
        if record.windows != len(self.windows):
            raise ValueError(f"{record.path}: the record says {record.windows} windows, {len(self.windows)} were added")
        try:
            for handle in self.handles.values():
                handle.flush()
                os.fsync(handle.fileno())  # the rows are on disk before any database row points at them
            bundle_id = store.meta().bundle_id
            with _transaction(store.conn):
                store._delete_file(record.path)
                file_id = store._insert_file(record)
                rows = range(self.first_row, self.first_row + len(self.windows))
                store.conn.executemany(
                    "INSERT INTO windows (id, file_id, idx, start, end, bundle_id) VALUES (?, ?, ?, ?, ?, ?)",
                    [(row, file_id, k, start, end, bundle_id) for row, (k, start, end) in zip(rows, self.windows)])
                store.conn.executemany("INSERT INTO thumbs (window_id, jpeg) VALUES (?, ?)",
                                       [(row, jpeg) for row, jpeg in zip(rows, self.thumbnails)])
                store._set_state("rows", self.first_row + len(self.windows))
        finally:
            self._close()

    def abort(self) -> None:
        self._close()
        layout = self.store._layout()
        for key, (shape, dtype) in layout.items():
            file = self.store._array_path(key)
            if file.exists():
                with open(file, "r+b") as fh:
                    fh.truncate(self.first_row * _row_bytes(shape, dtype))

    def _close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()
        self.store._writer = None


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (the connection is in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _row_bytes(shape: tuple[int, ...], dtype: str) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _check_header(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot be read ({exc.strerror})") from None
    if not header:
        raise DatabaseError(f"{path}: is an empty file, not an archive database")
    if header != _SQLITE_HEADER:
        raise DatabaseError(f"{path}: is not an archive database (not SQLite)")


def _check_schema(conn: sqlite3.Connection, path: Path, allow_empty: bool = False) -> None:
    """Refuse a database that is not an archive: indexing never adds its tables to someone else's database."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not _TABLES <= tables and not (allow_empty and not tables):
        raise DatabaseError(f"{path}: is an SQLite database but not an hbci archive")


def _recover(path: Path) -> None:
    """Roll back what a killed writer left in the write-ahead log (committed transactions stay) and leave WAL
    mode, as a writer closing normally does. Only while no writer holds the lock: a live writer's log is fine."""
    fd = _lock(path)
    try:
        conn = sqlite3.connect(str(path), isolation_level=None)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            conn.execute("PRAGMA journal_mode=DELETE")
        finally:
            conn.close()
    finally:
        os.close(fd)


def _lock(path: Path) -> int:
    """An exclusive lock beside the database: two writers would interleave their array appends."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DatabaseError(f"{lock_path}: cannot be created ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DatabaseError(f"{path}: another hbci-index is writing this archive (locked)") from None
    return fd


def _usearch():
    try:
        import usearch.index
    except ImportError:
        raise HbciError("large archives (windows x embedding width >= 8M) search with usearch, which is not "
                        "installed: pip install 'hbci[archive]'") from None
    return usearch.index
