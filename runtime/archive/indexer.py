"""Indexing: find the video files under the given folders, work out what is new, changed or gone (size, mtime,
then a content hash), cut each new or changed file into windows sampled as the monitor samples them, encode them
with the bundle's video encoder and store one file at a time (see `Store`).

Decoding runs in a pool of reader threads (OpenCV releases the GIL) feeding the encoder through bounded queues,
in file order, so memory stays bounded and the result does not depend on timing. A file's windows are encoded in
batches that never mix files: a window's embedding is the same whichever files were indexed with it, so a rerun
after an interruption stores exactly what an uninterrupted run stores. Unreadable or corrupt files are recorded
with their error and skipped (a changed file is retried).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from hbci.runtime.archive.store import ArchiveMeta, FileRecord, Store
from hbci.runtime.errors import ConfigError, HbciError, IndexMismatchError, VideoError
from hbci.runtime.video import FirstFrameSize, frame_times, iter_frames_at, jpeg_thumbnail, resize_center_crop
from hbci.runtime.windows import WindowSpan, cut_windows, window_frames

__all__ = ["VIDEO_EXTENSIONS", "DEFAULT_WINDOW", "DEFAULT_STRIDE", "THUMBNAIL_SIZE", "IndexSummary",
           "scan_videos", "index_videos", "archive_meta", "check_meta"]

log = logging.getLogger("hbci")

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts",
                              ".m2ts", ".wmv", ".flv", ".3gp", ".ogv"})
DEFAULT_WINDOW = 3.0  # seconds, as the monitor: the demo model learned 3 s clips
# The monitor's 0.25 s stride is for alert latency; an archive pays for every window in disk and search time,
# and merges overlapping hits into moments anyway, so one window per second (three overlapping) is the default.
DEFAULT_STRIDE = 1.0
THUMBNAIL_SIZE = 96  # px, the long side of the JPEG stored per window (the middle sampled frame) for contact sheets
_QUEUE_BATCHES = 4  # batches a reader may decode ahead of the encoder, per file


@dataclass
class IndexSummary:
    """What an index run did. Paths are absolute."""

    scanned: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    touched: int = 0  # size or mtime changed, contents did not: nothing re-encoded
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error) of files that failed this run
    windows: int = 0  # windows encoded and stored this run
    seconds: float = 0.0
    total_windows: int = 0  # in the archive after the run

    def lines(self) -> list[str]:
        rate = self.windows / self.seconds if self.seconds > 0 else 0.0
        out = [f"{self.scanned} files: {self.new} new, {self.changed} changed, {self.unchanged} unchanged, "
               f"{self.touched} touched (same contents), {self.removed} removed, {len(self.failed)} failed",
               f"{self.windows} windows encoded in {self.seconds:.1f} s ({rate:.1f}/s); "
               f"{self.total_windows} windows in the archive"]
        out += [f"failed: {path}: {error}" for path, error in self.failed]
        return out


def scan_videos(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The video files under `paths` (folders searched recursively for VIDEO_EXTENSIONS; a file given by name is
    taken whatever its extension), absolute, sorted, without duplicates. Raises HbciError for a missing path or a
    folder that cannot be read, before anything is written."""
    found: set[Path] = set()
    for given in paths:
        path = Path(given).absolute()
        if not path.exists():
            raise HbciError(f"{given}: no such file or folder")
        if path.is_file():
            found.add(path)
            continue
        if not path.is_dir():
            raise HbciError(f"{given}: neither a file nor a folder")

        def refuse(exc: OSError):
            raise HbciError(f"{exc.filename}: folder cannot be read ({exc.strerror})")

        for folder, dirs, names in os.walk(path, onerror=refuse):
            dirs.sort()
            for name in names:
                if Path(name).suffix.lower() in VIDEO_EXTENSIONS and not name.startswith("."):
                    file = Path(folder) / name
                    if file.is_file():
                        found.add(file)
    return sorted(found)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class _Batch:
    windows: list[tuple[int, float, float]]  # (index, start, end)
    frames: np.ndarray  # uint8 [n, T, S, S, 3]
    masks: np.ndarray  # bool [n, T]
    thumbnails: list[bytes]


def _decode_windows(path: Path, meta: ArchiveMeta, batch: int) -> Iterator[_Batch | float]:
    """First the file's duration, then its windows in batches. One pass counts the frames that decode and their
    times; the windows are cut from those times by `cut_windows`, as the monitor cuts a stream; a second pass
    decodes only the frames they sample, resizing and cropping each once and keeping it until the last window
    that uses it is out. A window whose span holds no frame (a gap in the timestamps) is not stored."""
    times = frame_times(path)
    if len(times) == 0:
        raise VideoError(path, "no decodable frames")
    if not np.all(np.isfinite(times)):
        raise VideoError(path, "frame times unknown (no timestamps and no frame rate)")
    yield float(times[-1] - times[0])
    spans = [s for s in cut_windows(times, meta.window, meta.stride, meta.num_frames) if s.count > 0]
    middle = {id(s): int(s.frames[len(s.frames) // 2]) for s in spans}
    needed = np.unique(np.concatenate([s.frames for s in spans])) if spans else np.zeros(0, np.int64)
    crops: dict[int, np.ndarray] = {}
    thumbs: dict[int, bytes] = {}
    shape = (meta.image_size, meta.image_size, 3)

    def flush(done: list[WindowSpan]) -> _Batch:
        # A frame counted on the first pass but not retrieved on the second (damage) drops its windows.
        whole = [s for s in done if all(int(n) in crops for n in s.frames)]
        if len(whole) < len(done):
            log.warning("%s: %d windows dropped: frames that decoded once failed to decode again", path,
                        len(done) - len(whole))
        return _Batch([(s.index, s.start, s.end) for s in whole],
                      np.stack([window_frames(s, crops.__getitem__, shape) for s in whole])
                      if whole else np.zeros((0, meta.num_frames, *shape), np.uint8),
                      np.stack([s.mask for s in whole]) if whole else np.zeros((0, meta.num_frames), bool),
                      [thumbs.get(middle[id(s)], b"") for s in whole])

    pending, out, last_read = 0, [], -1
    same_size = FirstFrameSize()
    thumb_at = set(middle.values())
    for number, frame in iter_frames_at(path, needed, same_size):
        crops[number] = resize_center_crop(frame[None], meta.image_size)[0]
        if number in thumb_at:
            thumbs[number] = jpeg_thumbnail(frame, THUMBNAIL_SIZE)
        last_read = number
        while pending < len(spans) and int(spans[pending].frames[-1]) <= number:
            out.append(spans[pending])
            pending += 1
            if len(out) == batch:
                yield flush(out)
                out = []
                first_needed = int(spans[pending].frames[0]) if pending < len(spans) else number + 1
                for store in (crops, thumbs):
                    for old in [n for n in store if n < first_needed]:
                        del store[old]
    if out:
        yield flush(out)
    if pending < len(spans):
        # The second pass ended before the first did (a damaged tail): the windows whose frames all arrived are
        # kept, as the counting pass keeps the frames before damage.
        log.warning("%s: decoding stopped at frame %d; %d windows dropped", path, last_read, len(spans) - pending)


# ------------------------------------------------------------------------------------------------ indexing
class _Progress:
    """One line on stderr: files, windows, bytes read and the time remaining (by bytes), redrawn at most 4 times
    a second on a terminal, every 10 s otherwise (logs stay readable)."""

    def __init__(self, files: int, total_bytes: int, enabled: bool, stream=None):
        self.files, self.total, self.enabled = files, max(total_bytes, 1), enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started, self.last = time.monotonic(), 0.0
        self.done_files, self.done_bytes, self.windows = 0, 0, 0

    def update(self, files: int = 0, nbytes: int = 0, windows: int = 0, force: bool = False) -> None:
        self.done_files += files
        self.done_bytes += nbytes
        self.windows += windows
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < (0.25 if self.tty else 10.0)):
            return
        self.last = now
        elapsed = now - self.started
        fraction = self.done_bytes / self.total
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
        width = 24
        bar = "#" * int(width * fraction) + "-" * (width - int(width * fraction))
        text = (f"[{bar}] {self.done_files}/{self.files} files  {self.windows} windows  "
                f"{elapsed:.0f} s elapsed  {_clock(eta)} left")
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.update(force=True)
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def index_videos(store: Store, retriever, paths: Iterable[str | os.PathLike], *, window: float = DEFAULT_WINDOW,
                 stride: float = DEFAULT_STRIDE, batch: int = 8, workers: int = 2, reindex: bool = False,
                 progress: bool = True, on_file: Callable[[str], None] | None = None) -> IndexSummary:
    """Bring the archive in `store` up to date with the videos under `paths`; see the module docstring.

    Files of the archive under `paths` that are gone are removed; files elsewhere are left alone. A store indexed
    with another bundle, window or stride is refused unless `reindex` (then everything is re-encoded).
    on_file(path) is called after each file is stored (tests use it).
    """
    for name, value in (("window", window), ("stride", stride)):
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    if batch < 1 or workers < 1:
        raise ConfigError(f"batch and workers must be >= 1 (got {batch}, {workers})")
    started = time.monotonic()
    roots = [Path(p).absolute() for p in paths]
    videos = scan_videos(roots)  # refuses missing paths and unreadable folders before anything is written
    wanted = archive_meta(retriever, window, stride)
    if store.meta() is None or reindex:
        store.reset(wanted)
    else:
        check_meta(store, wanted)

    summary = IndexSummary(scanned=len(videos))
    known = store.files()
    present = {str(v) for v in videos}
    gone = [p for p in known if p not in present and any(_is_under(p, r) for r in roots)]
    if gone:
        store.remove_files(gone)
        summary.removed = len(gone)
    todo: list[tuple[Path, os.stat_result, FileRecord | None]] = []
    for video in videos:
        stat, old = video.stat(), known.get(str(video))
        if old is not None and old.size == stat.st_size and old.mtime_ns == stat.st_mtime_ns:
            summary.unchanged += 1
        else:
            todo.append((video, stat, old))

    bar = _Progress(len(todo), sum(s.st_size for _, s, _ in todo), progress)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hbci-decode") as pool:
        try:
            feeds: list[tuple[Path, os.stat_result, FileRecord | None, queue.Queue]] = []
            ahead = iter(todo)

            def submit_next() -> None:
                item = next(ahead, None)
                if item is not None:
                    channel: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
                    pool.submit(_read_file, item[0], item[2], wanted, batch, channel, stop)
                    feeds.append((*item, channel))

            for _ in range(workers + 1):
                submit_next()
            while feeds:
                video, stat, old, channel = feeds.pop(0)
                submit_next()
                _store_file(store, retriever, video, stat, old, channel, summary, bar)
                if on_file is not None:
                    on_file(str(video))
        finally:
            stop.set()  # readers blocked on a full queue give up, so the pool can shut down
            bar.close()
    store.finish()
    summary.seconds = time.monotonic() - started
    summary.total_windows = store.count()
    return summary


def archive_meta(retriever, window: float, stride: float) -> ArchiveMeta:
    """The settings an index run with this retriever, window and stride gives an archive."""
    bundle = retriever.bundle
    return ArchiveMeta(retriever.bundle_id, float(window), float(stride), bundle.num_frames, bundle.image_size)


def check_meta(store: Store, wanted: ArchiveMeta) -> None:
    """Refuse to add to an archive made with another bundle (IndexMismatchError) or other windows (ConfigError)."""
    current = store.meta()
    if current is None or current == wanted:
        return
    if current.bundle_id != wanted.bundle_id:
        raise IndexMismatchError(f"{store.location} was indexed with bundle {current.bundle_id}, not "
                                 f"{wanted.bundle_id}: embeddings of two models are never mixed; rebuild it with "
                                 f"hbci-index --reindex")
    raise ConfigError(f"{store.location} was indexed with window {current.window:g} s and stride "
                      f"{current.stride:g} s, not {wanted.window:g} s and {wanted.stride:g} s: use those, or "
                      f"rebuild it with --reindex")


def _is_under(path: str, root: Path) -> bool:
    p = Path(path)
    return p == root or root in p.parents


def _read_file(path: Path, old: FileRecord | None, meta: ArchiveMeta, batch: int, channel: queue.Queue,
               stop: threading.Event) -> None:
    """Reader thread: ("hash", sha256), then ("same", None) if the contents did not change, else ("duration", s),
    ("batch", _Batch)..., and ("done", None) or ("error", message)."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                channel.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    if stop.is_set():
        return
    try:
        digest = _sha256(path)
        if not put(("hash", digest)):
            return
        if old is not None and old.sha256 == digest:
            put(("same", None))
            return
        for item in _decode_windows(path, meta, batch):
            if not put(("duration", item) if isinstance(item, float) else ("batch", item)):
                return
        put(("done", None))
    except VideoError as exc:
        put(("error", exc.reason))
    except OSError as exc:
        put(("error", f"cannot be read ({exc.strerror or exc})"))
    except Exception as exc:  # a decoder crash must not stop the archive: recorded with its cause, file skipped
        log.debug("reading %s failed", path, exc_info=True)
        put(("error", f"{type(exc).__name__}: {exc}"))


def _store_file(store: Store, retriever, video: Path, stat: os.stat_result, old: FileRecord | None,
                channel: queue.Queue, summary: IndexSummary, bar: _Progress) -> None:
    digest, duration, writer, count = "", 0.0, None, 0
    try:
        while True:
            kind, value = channel.get()
            if kind == "hash":
                digest = value
            elif kind == "same":  # only size or mtime changed: the stored windows (or the failure) stay
                store.put_record(dataclasses.replace(old, size=stat.st_size, mtime_ns=stat.st_mtime_ns))
                summary.touched += 1
                break
            elif kind == "duration":
                duration = value
            elif kind == "batch":
                if writer is None:
                    writer = store.write_file(str(video), digest)
                if value.windows:  # a batch can lose all its windows to damage
                    writer.add(value.windows, retriever.encode_video(value.frames, value.masks), value.thumbnails)
                    count += len(value.windows)
                    bar.update(windows=len(value.windows))
            elif kind == "done":
                final = FileRecord(str(video), stat.st_size, stat.st_mtime_ns, digest, "indexed", None, count,
                                   duration)
                if writer is None:
                    writer = store.write_file(str(video), digest)
                writer.commit(final)
                writer = None
                summary.windows += count
                if old is None:
                    summary.new += 1
                else:
                    summary.changed += 1
                break
            else:  # "error"
                if writer is not None:
                    writer.abort()
                    writer = None
                bar.update(windows=-count)
                store.put_record(FileRecord(str(video), stat.st_size, stat.st_mtime_ns, digest, "failed", value))
                summary.failed.append((str(video), value))
                log.warning("%s: skipped: %s", video, value)
                break
    finally:
        if writer is not None:
            writer.abort()
    bar.update(files=1, nbytes=stat.st_size)
