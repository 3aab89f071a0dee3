"""Tests for runtime/archive/indexer.py and the embedded store: windows as the monitor cuts them, packs as the
retriever encodes them, incremental runs (new, touched, changed, removed), broken files, bundle and settings
mismatches, and SIGKILL at random points of hbci-index."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hbci.runtime.archive import Archive, open_store
from hbci.runtime.archive.indexer import scan_videos
from hbci.runtime.bundle import load_bundle
from hbci.runtime.retriever import Retriever
from hbci.runtime.errors import ConfigError, DatabaseError, HbciError, IndexMismatchError

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def index(db, retriever, paths, **kw):
    with Archive.open(db, retriever, create=True) as archive:
        return archive.index(paths, **kw)


def rows(db: Path) -> list[tuple]:
    """Every committed window as (path, index, start, end, bundle id, row), and every file record."""
    try:
        with open_store(db):  # a reader first: it recovers what a killed writer left, as hbci-search does
            pass
    except DatabaseError:  # killed before it made its tables
        pass
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        if not conn.execute("SELECT name FROM sqlite_master WHERE name = 'windows'").fetchall():
            return [], []  # killed before it made its tables
        windows = conn.execute("SELECT f.path, w.idx, w.start, w.end, w.bundle_id, w.id FROM windows w JOIN files f "
                               "ON f.id = w.file_id ORDER BY f.path, w.idx").fetchall()
        files = conn.execute("SELECT path, size, mtime_ns, sha256, status, error, windows, duration FROM files "
                             "ORDER BY path").fetchall()
        return windows, files
    finally:
        conn.close()


def locked(path: Path) -> bool:
    """Whether another process holds the archive's writer lock."""
    if not path.exists():
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


class OtherBundle:
    """A retriever that claims another bundle id (a retrained model)."""

    def __init__(self, retriever):
        self._r = retriever

    def __getattr__(self, name):
        return getattr(self._r, name)

    @property
    def bundle_id(self):
        return "0123456789abcdef"


def test_windows_and_packs_are_the_monitors(videos, archive_retriever, tmp_path):
    from hbci.runtime.monitor import Monitor
    from hbci.runtime.sources import open_source

    db = tmp_path / "a.db"
    summary = index(db, archive_retriever, [videos / "stream"], stride=0.5, progress=False)
    assert summary.new == 1 and not summary.failed
    monitor = Monitor(archive_retriever, ["x"], window=3.0, stride=0.5, threshold_on=0.5)
    with open_source("file", videos / "stream" / "stream.mp4") as source:
        expected = [w for batch in monitor.windows(source) for w in batch]
    with open_store(db) as store:
        ids = store.ids()
        stored = store.windows(ids)
        assert [(w.index, w.start, w.end) for w in stored] == [(w.index, w.start, w.end) for w in expected]
        packs = store.packs(ids)
    # Encoded in the indexer's batches of 8, the monitor's windows give the stored packs bit for bit: the same
    # frames went in (a different batch size changes the last bit of some FP16 outputs).
    encoded = [archive_retriever.encode_video(np.stack([w.frames for w in expected[i:i + 8]]),
                                              np.stack([w.mask for w in expected[i:i + 8]]))
               for i in range(0, len(expected), 8)]
    for key in encoded[0]:
        np.testing.assert_array_equal(packs[key], np.concatenate([e[key] for e in encoded]), err_msg=key)


def test_incremental_runs_and_broken_files(videos, archive_retriever, tmp_path):
    db = tmp_path / "a.db"
    first = index(db, archive_retriever, [videos], progress=False)
    assert (first.scanned, first.new, len(first.failed)) == (7, 5, 2)
    failed = dict(first.failed)
    assert set(failed) == {str(videos / "broken" / "notes.mp4"), str(videos / "broken" / "truncated.mp4")}
    assert all(failed.values())  # each with its error
    windows, files = rows(db)
    assert {f[4] for f in files} == {"indexed", "failed"} and len(files) == 7

    again = index(db, archive_retriever, [videos], progress=False)
    assert (again.unchanged, again.new, again.windows) == (7, 0, 0)
    assert rows(db) == (windows, files)

    clip = videos / "clips" / "clip1.mp4"
    os.utime(clip, ns=(clip.stat().st_atime_ns, clip.stat().st_mtime_ns + 10**9))  # touched, same contents
    (videos / "clips" / "clip2.mp4").write_bytes((videos / "clips" / "clip3.mp4").read_bytes())  # changed
    (videos / "clips" / "clip0.mp4").unlink()  # removed
    third = index(db, archive_retriever, [videos], progress=False)
    assert (third.touched, third.changed, third.removed, third.unchanged, third.windows) == (1, 1, 1, 4, 1)
    after, after_files = rows(db)
    assert not any(w[0].endswith("clip0.mp4") for w in after)
    changed = [w for w in after if w[0].endswith("clip2.mp4")]
    assert len(changed) == 1 and changed[0][5] >= len(windows)  # re-encoded into new rows
    with open_store(db) as store:
        stats = store.stats()
        assert stats.windows == len(after) and stats.details["holes"] == 2
        clip2, clip3 = (store.packs([w[5]])["video_global"] for w in
                        (changed[0], next(w for w in after if w[0].endswith("clip3.mp4"))))
        np.testing.assert_array_equal(clip2, clip3)


def test_other_folders_are_left_alone(videos, archive_retriever, tmp_path):
    db = tmp_path / "a.db"
    index(db, archive_retriever, [videos / "clips"], progress=False)
    summary = index(db, archive_retriever, [videos / "stream"], progress=False)
    assert summary.removed == 0
    with open_store(db) as store:
        assert store.stats().files == 5


def test_bundle_and_settings_mismatch_need_reindex(videos, archive_retriever, tmp_path):
    db = tmp_path / "a.db"
    index(db, archive_retriever, [videos / "clips"], progress=False)
    before = rows(db)
    with pytest.raises(IndexMismatchError, match="--reindex"):
        index(db, OtherBundle(archive_retriever), [videos / "clips"], progress=False)
    with pytest.raises(ConfigError, match="--reindex"):
        index(db, archive_retriever, [videos / "clips"], stride=0.5, progress=False)
    assert rows(db) == before
    with Archive.open(db, OtherBundle(archive_retriever)) as archive:
        with pytest.raises(IndexMismatchError, match="hbci-index --reindex"):
            archive.search("a red circle")
    summary = index(db, archive_retriever, [videos / "clips"], stride=0.5, reindex=True, progress=False)
    assert summary.new == 4
    windows, _ = rows(db)
    assert [w[5] for w in windows] == list(range(len(windows)))  # rebuilt without holes


def test_scan_refuses_missing_and_unreadable_paths(videos, unreadable_clips):
    with pytest.raises(HbciError, match="no such file or folder"):
        scan_videos([videos / "nope"])
    unreadable_clips()
    with pytest.raises(HbciError, match="clips: folder cannot be read"):
        scan_videos([videos])


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_gives_the_rows_of_an_uninterrupted_run(videos, runtime_bundle,
                                                                                     tmp_path):
    command = [sys.executable, "-m", "hbci.runtime.archive.cli", "index", str(videos / "clips"),
               str(videos / "stream"), "--bundle", str(runtime_bundle), "--batch", "1", "--no-progress"]
    reference = tmp_path / "reference.db"  # the uninterrupted run, in-process: the same code and batches
    reference_retriever = Retriever.load(runtime_bundle, precision="fp32" if "fp32" in
                                         load_bundle(runtime_bundle).precisions else "fp16")
    with Archive.open(reference, reference_retriever, create=True) as archive:
        indexing = archive.index([videos / "clips", videos / "stream"], batch=1, progress=False).seconds
    db = tmp_path / "killed.db"
    rng = np.random.default_rng(5)
    committed = []
    for _ in range(5):
        process = subprocess.Popen(command + ["--db", str(db)], env=ENV, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        # The writer's lock is taken once the model is loaded: from then on, a random point of the indexing.
        deadline = time.monotonic() + 60
        while not locked(tmp_path / "killed.db.lock") and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, indexing))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        committed.append(len(rows(db)[1]) if db.exists() else 0)
        if committed[-1]:  # what was committed before the kill is searchable at once
            with Archive.open(db, reference_retriever) as archive:
                assert archive.stats().files == committed[-1]
                assert archive.search("a red circle moves left", 3).moments
    result = subprocess.run(command + ["--db", str(db)], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    print(f"files committed after each kill: {committed} of {len(rows(reference)[1])}")
    assert rows(db) == rows(reference), f"files committed after each kill: {committed}"
    with open_store(db) as killed, open_store(reference) as ref:
        ids = ref.ids()
        assert np.array_equal(killed.ids(), ids)
        for key, value in ref.packs(ids).items():
            np.testing.assert_array_equal(killed.packs(ids)[key], value, err_msg=key)
        assert killed.thumbnails(ids) == ref.thumbnails(ids)
    arrays = sorted(p.name for p in (tmp_path / "killed.db.arrays").iterdir())
    assert arrays == sorted(p.name for p in (tmp_path / "reference.db.arrays").iterdir())
    for name in arrays:  # no bytes beyond the committed rows
        assert (tmp_path / "killed.db.arrays" / name).stat().st_size == \
            (tmp_path / "reference.db.arrays" / name).stat().st_size
