"""The archive on Milvus (`pip install 'hbci[milvus]'`): the same `Store` interface through pymilvus, for archives
that outgrow one machine.

Locations: `milvus://[user:password@]host:port/collection` (a Milvus server or cluster), or
`milvus-lite:///path/file.db[?collection=name]` (milvus-lite, in-process, for tests and small setups).

Three collections per archive, all with strong consistency: `<name>` holds one row per window: its id, the
global embedding (`global`, the index stage one searches: AUTOINDEX, inner product), the whole video pack
flattened into a second vector field (`pack`, never searched: Milvus wants an index on every vector field, so a
FLAT one), file path, the file's content hash, window index, start and end, bundle id and the JPEG thumbnail
(base64); `<name>_files` the file records; `<name>_meta` the archive settings and pack layout. Collections other
than `<name>` carry a 2-d placeholder vector because Milvus collections need one.

Packs live in the collection, so every client reads the same archive and stage two needs nothing but the
server; on a cluster, enable memory mapping for the `pack` field (`mmap.enabled`) so query nodes do not keep
every pack in RAM, as they must keep the `global` index.

Crash safety. Window ids are a hash of (path, content hash, window index), and rows are upserted, so a rerun
never duplicates a window. A file's windows count only once its record says "indexed" with the same content
hash: stage one drops rows of a file in flight, and committing a file deletes the rows of its earlier versions.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from hbci.runtime.archive.store import (GLOBAL_KEY, ArchiveMeta, FileRecord, FileWriter, Pack, Store, StoreStats,
                                        WindowRecord, check_batch, layout_state, pack_layout)
from hbci.runtime.errors import DatabaseError, HbciError

__all__ = ["MilvusStore", "parse_location"]

_PATH_LEN = 4096
_GET_CHUNK = 256  # rows per get(): bounds one message (a pack is tens of kB)


def parse_location(location: str) -> tuple[str, str, str | None, bool]:
    """(client uri, collection, token, is_lite) of a milvus:// or milvus-lite:// location."""
    url = urlparse(location)
    if url.scheme == "milvus-lite":
        if not url.path or url.path.endswith("/"):
            raise DatabaseError(f"{location}: give a file: milvus-lite:///path/file.db?collection=NAME")
        name = parse_qs(url.query).get("collection", ["hbci"])[0]
        return url.path, _check_name(name, location), None, True
    if not url.hostname or not url.path.strip("/"):
        raise DatabaseError(f"{location}: expected milvus://host:port/collection")
    token = f"{url.username}:{url.password}" if url.username else None
    return f"http://{url.hostname}:{url.port or 19530}", _check_name(url.path.strip("/"), location), token, False


def _check_name(name: str, location: str) -> str:
    if not name.replace("_", "").isalnum() or name[0].isdigit():
        raise DatabaseError(f"{location}: collection name {name!r} must be letters, digits and _ (not first digit)")
    return name


def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise HbciError("a milvus:// archive needs pymilvus: pip install 'hbci[milvus]'") from None
    return pymilvus


def _window_id(path: str, sha256: str, index: int) -> int:
    digest = hashlib.sha256(f"{path}\0{sha256}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _quote(text: str) -> str:
    return json.dumps(text)  # a Milvus filter string literal: double quotes, backslash escapes


class MilvusStore(Store):
    backend = "milvus"

    def __init__(self, location: str, client, name: str):
        self.location, self.client, self.name = location, client, name
        self.files_name, self.meta_name = f"{name}_files", f"{name}_meta"
        self._writer = None

    @classmethod
    def open(cls, location: str, create: bool = False) -> "MilvusStore":
        uri, name, token, lite = parse_location(location)
        if lite and not create and not Path(uri).exists():
            raise DatabaseError(f"{location}: no archive here (build one with: hbci-index VIDEO_DIR --db {location})")
        pymilvus = _pymilvus()
        try:
            client = pymilvus.MilvusClient(uri=uri, **({"token": token} if token else {}))
        except Exception as exc:  # connection and file errors come as several pymilvus and grpc types
            raise DatabaseError(f"{location}: cannot connect to Milvus ({type(exc).__name__}: {exc})") from None
        store = cls(location, client, name)
        has = [client.has_collection(n) for n in (store.meta_name, store.files_name)]
        if not all(has):
            if not create:
                client.close()
                raise DatabaseError(f"{location}: no archive in this Milvus (build one with: hbci-index VIDEO_DIR "
                                    f"--db {location})")
            store._create_side_collections()
        for collection in (store.meta_name, store.files_name, name):
            if client.has_collection(collection):
                client.load_collection(collection)
        return store

    def close(self) -> None:
        self.client.close()

    # --------------------------------------------------------------------------------------------- schema
    def _create_side_collections(self) -> None:
        pymilvus = _pymilvus()
        DataType = pymilvus.DataType
        for name, fields in ((self.meta_name, [("key", DataType.VARCHAR, {"max_length": 64, "is_primary": True}),
                                               ("value", DataType.VARCHAR, {"max_length": 65535})]),
                             (self.files_name, [("path", DataType.VARCHAR, {"max_length": _PATH_LEN,
                                                                           "is_primary": True}),
                                                ("size", DataType.INT64, {}), ("mtime_ns", DataType.INT64, {}),
                                                ("sha256", DataType.VARCHAR, {"max_length": 64}),
                                                ("status", DataType.VARCHAR, {"max_length": 16}),
                                                ("error", DataType.VARCHAR, {"max_length": 4096}),
                                                ("windows", DataType.INT64, {}), ("duration", DataType.DOUBLE, {})])):
            schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            for field, dtype, kwargs in fields:
                schema.add_field(field, dtype, **kwargs)
            schema.add_field("placeholder", DataType.FLOAT_VECTOR, dim=2)
            index = self.client.prepare_index_params()
            index.add_index(field_name="placeholder", index_type="FLAT", metric_type="L2")
            self.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")

    def _create_windows_collection(self, layout: dict) -> None:
        pymilvus = _pymilvus()
        DataType = pymilvus.DataType
        dim = int(np.prod(layout[GLOBAL_KEY][0]))
        pack_dim = sum(int(np.prod(shape)) for key, (shape, _) in layout.items() if key != GLOBAL_KEY)
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("global", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("pack", DataType.FLOAT_VECTOR, dim=pack_dim)
        schema.add_field("path", DataType.VARCHAR, max_length=_PATH_LEN)
        schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("idx", DataType.INT64)
        schema.add_field("start", DataType.DOUBLE)
        schema.add_field("end", DataType.DOUBLE)
        schema.add_field("bundle_id", DataType.VARCHAR, max_length=64)
        schema.add_field("thumb", DataType.VARCHAR, max_length=65535)
        index = self.client.prepare_index_params()
        index.add_index(field_name="global", index_type="AUTOINDEX", metric_type="IP")
        index.add_index(field_name="pack", index_type="FLAT", metric_type="L2")
        self.client.create_collection(self.name, schema=schema, index_params=index, consistency_level="Strong")

    # --------------------------------------------------------------------------------------------- state
    def _get_meta(self, key: str):
        rows = self.client.get(self.meta_name, ids=[key], output_fields=["value"])
        return json.loads(rows[0]["value"]) if rows else None

    def _set_meta(self, key: str, value) -> None:
        self.client.upsert(self.meta_name, [{"key": key, "value": json.dumps(value), "placeholder": [0.0, 0.0]}])

    def meta(self) -> ArchiveMeta | None:
        data = self._get_meta("meta")
        return ArchiveMeta.from_dict(data) if data else None

    def _layout(self) -> dict[str, tuple[tuple[int, ...], str]]:
        data = self._get_meta("layout") or {}
        return {k: (tuple(v["shape"]), v["dtype"]) for k, v in data.items()}

    def reset(self, meta: ArchiveMeta) -> None:
        for name in (self.name, self.files_name, self.meta_name):
            if self.client.has_collection(name):
                self.client.drop_collection(name)
        self._create_side_collections()
        self._set_meta("meta", meta.to_dict())

    # --------------------------------------------------------------------------------------------- files
    def files(self) -> dict[str, FileRecord]:
        fields = ["path", "size", "mtime_ns", "sha256", "status", "error", "windows", "duration"]
        out = {}
        for row in self._query_all(self.files_name, 'path != ""', fields):
            out[row["path"]] = FileRecord(row["path"], int(row["size"]), int(row["mtime_ns"]), row["sha256"],
                                          row["status"], row["error"] or None, int(row["windows"]),
                                          float(row["duration"]))
        return out

    def _query_all(self, collection: str, expr: str, fields: list[str]):
        iterator = self.client.query_iterator(collection, batch_size=1000, filter=expr, output_fields=fields)
        try:
            while True:
                batch = iterator.next()
                if not batch:
                    return
                yield from batch
        finally:
            iterator.close()

    def _upsert_record(self, record: FileRecord) -> None:
        self.client.upsert(self.files_name, [{
            "path": record.path, "size": record.size, "mtime_ns": record.mtime_ns, "sha256": record.sha256,
            "status": record.status, "error": (record.error or "")[:4000], "windows": record.windows,
            "duration": record.duration, "placeholder": [0.0, 0.0]}])

    def write_file(self, path: str, sha256: str) -> FileWriter:
        if self._writer is not None:
            raise RuntimeError("one file at a time: commit or abort the previous writer first")
        self._writer = _MilvusWriter(self, path, sha256)
        return self._writer

    def put_record(self, record: FileRecord) -> None:
        if record.status != "indexed" and self.client.has_collection(self.name):
            self.client.delete(self.name, filter=f"path == {_quote(record.path)}")
        self._upsert_record(record)

    def remove_files(self, paths: list[str]) -> None:
        for path in paths:
            if self.client.has_collection(self.name):
                self.client.delete(self.name, filter=f"path == {_quote(path)}")
            self.client.delete(self.files_name, ids=[path])

    # --------------------------------------------------------------------------------------------- reading
    def count(self) -> int:
        if not self.client.has_collection(self.name):
            return 0
        rows = self.client.query(self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def _committed(self, rows: list[dict]) -> list[bool]:
        """Whether each window row (with path and sha256) belongs to a committed file version."""
        paths = sorted({r["path"] for r in rows})
        known = {}
        for i in range(0, len(paths), _GET_CHUNK):
            for rec in self.client.get(self.files_name, ids=paths[i:i + _GET_CHUNK],
                                       output_fields=["sha256", "status"]):
                known[rec["path"]] = (rec["sha256"], rec["status"])
        return [known.get(r["path"]) == (r["sha256"], "indexed") for r in rows]

    def candidates(self, query: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.client.has_collection(self.name) or m <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        query = np.asarray(query, np.float32).reshape(-1)
        limit = min(16384, max(m + 16, m * 5 // 4))  # a little over m: rows of a file in flight are dropped
        hits = self.client.search(self.name, data=[query.tolist()], anns_field="global", limit=limit,
                                  output_fields=["path", "sha256"], search_params={"metric_type": "IP"})[0]
        rows = [{"id": h["id"], "score": h["distance"], **h["entity"]} for h in hits]
        rows = [r for r, ok in zip(rows, self._committed(rows)) if ok][:m]
        return (np.array([r["id"] for r in rows], np.int64), np.array([r["score"] for r in rows], np.float32))

    def ids(self) -> np.ndarray:
        if not self.client.has_collection(self.name):
            return np.zeros(0, np.int64)
        rows = list(self._query_all(self.name, "id >= 0", ["id", "path", "sha256"]))
        files = self.files()
        ok = [(files.get(r["path"]) is not None and files[r["path"]].status == "indexed"
               and files[r["path"]].sha256 == r["sha256"]) for r in rows]
        return np.sort(np.array([r["id"] for r, keep in zip(rows, ok) if keep], np.int64))

    def _get(self, ids: np.ndarray, fields: list[str]) -> list[dict]:
        ids = [int(i) for i in ids]
        found = {}
        for i in range(0, len(ids), _GET_CHUNK):
            for row in self.client.get(self.name, ids=ids[i:i + _GET_CHUNK], output_fields=fields):
                found[int(row["id"])] = row
        missing = [i for i in ids if i not in found]
        if missing:
            raise DatabaseError(f"{self.location}: windows {missing[:5]} vanished (re-indexed while searching?)")
        return [found[i] for i in ids]

    def packs(self, ids: np.ndarray) -> Pack:
        layout = self._layout()
        rows = self._get(ids, ["global", "pack"])
        flat = np.array([r["pack"] for r in rows], np.float32).reshape(len(rows), -1)
        out, offset = {}, 0
        for key, (shape, dtype) in layout.items():
            if key == GLOBAL_KEY:
                out[key] = np.array([r["global"] for r in rows], dtype).reshape(len(rows), *shape)
                continue
            size = int(np.prod(shape))
            out[key] = flat[:, offset:offset + size].reshape(len(rows), *shape).astype(dtype)
            offset += size
        return out

    def windows(self, ids: np.ndarray) -> list[WindowRecord]:
        rows = self._get(ids, ["path", "idx", "start", "end", "bundle_id"])
        return [WindowRecord(int(r["id"]), r["path"], int(r["idx"]), float(r["start"]), float(r["end"]),
                             r["bundle_id"]) for r in rows]

    def thumbnails(self, ids: np.ndarray) -> list[bytes | None]:
        return [base64.b64decode(r["thumb"]) if r["thumb"] else None for r in self._get(ids, ["thumb"])]

    def stats(self) -> StoreStats:
        files = self.files()
        indexed = [f for f in files.values() if f.status == "indexed"]
        return StoreStats(self.location, self.backend, self.meta(), len(indexed), len(files) - len(indexed),
                          sum(f.windows for f in indexed), 0,
                          {"collection": self.name, "rows": self.count(), "stage_one": "Milvus AUTOINDEX"})


class _MilvusWriter(FileWriter):
    """Upserts each batch at once (memory stays bounded on long files); the rows count from `commit` on."""

    def __init__(self, store: MilvusStore, path: str, sha256: str):
        self.store, self.path, self.sha256 = store, path, sha256
        self.bundle_id = store.meta().bundle_id
        self.count = 0

    def add(self, windows, pack, thumbnails) -> None:
        store = self.store
        layout = store._layout()
        check_batch(store.location, windows, pack, thumbnails, layout)
        if not windows:
            return
        if not layout:  # the first window of the archive fixes the pack layout
            layout = pack_layout(pack)
            store._set_meta("layout", layout_state(layout))
        if not store.client.has_collection(store.name):
            store._create_windows_collection(layout)
        flat = np.concatenate([np.asarray(pack[k], np.float32).reshape(len(windows), -1)
                               for k in layout if k != GLOBAL_KEY], axis=1)
        vectors = np.asarray(pack[GLOBAL_KEY], np.float32).reshape(len(windows), -1)
        rows = [{"id": _window_id(self.path, self.sha256, k), "global": vectors[j], "pack": flat[j],
                 "path": self.path, "sha256": self.sha256, "idx": int(k), "start": float(start), "end": float(end),
                 "bundle_id": self.bundle_id, "thumb": base64.b64encode(thumbnails[j]).decode()}
                for j, (k, start, end) in enumerate(windows)]
        store.client.upsert(store.name, rows)
        self.count += len(rows)

    def commit(self, record: FileRecord) -> None:
        store = self.store
        try:
            if record.windows != self.count or record.sha256 != self.sha256:
                raise ValueError(f"{record.path}: the record does not describe the windows written")
            if store.client.has_collection(store.name):  # rows of earlier versions, or of a killed run
                store.client.delete(store.name, filter=f"path == {_quote(record.path)} and "
                                                       f"sha256 != {_quote(record.sha256)}")
            store._upsert_record(record)  # the file counts from here on
        finally:
            self.abort()

    def abort(self) -> None:
        self.store._writer = None
