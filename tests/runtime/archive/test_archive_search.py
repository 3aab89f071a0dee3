"""Tests for runtime/archive/search.py, the embedded store's stage one (exact and usearch) and the contact sheet:
moments merge overlapping windows, two-stage equals --exact when stage one keeps everything, holes are never
returned, the ANN index finds what the exact product finds."""

from __future__ import annotations

import numpy as np
import pytest

from hbci.runtime.archive import Archive, open_store
from hbci.runtime.archive import embedded
from hbci.runtime.archive.search import merge_moments
from hbci.runtime.archive.store import WindowRecord
from hbci.runtime.errors import ConfigError, DatabaseError, OutputError, QueryError


def w(i, path, start, end):
    return WindowRecord(i, path, i, start, end, "b")


def test_merge_moments_joins_overlaps_of_one_file_and_stops_at_top_k():
    hits = [(w(0, "a", 10, 13), 0.9),   # moment 1
            (w(1, "a", 11, 14), 0.8),   # overlaps moment 1: joins it
            (w(2, "b", 10, 13), 0.7),   # another file: moment 2
            (w(3, "a", 20, 23), 0.6),   # same file, no overlap: moment 3
            (w(4, "a", 13.5, 16), 0.5),  # overlaps moment 1's extent (via window 1): joins it
            (w(5, "c", 0, 3), 0.4),     # would be moment 4: top_k = 3 stops here
            (w(6, "a", 15, 21), 0.3)]   # never read
    moments = merge_moments(iter(hits), top_k=3)
    assert [(m.path, m.start, m.end, m.score, m.window_id, m.windows) for m in moments] == [
        ("a", 10, 16, 0.9, 0, 3), ("b", 10, 13, 0.7, 2, 1), ("a", 20, 23, 0.6, 3, 1)]


def test_merge_moments_bridges_two_moments_of_one_file():
    hits = [(w(0, "a", 0, 3), 0.9), (w(1, "a", 6, 9), 0.8), (w(2, "a", 2.5, 6.5), 0.7)]
    (moment,) = merge_moments(iter(hits), top_k=5)
    assert (moment.start, moment.end, moment.score, moment.windows) == (0, 9, 0.9, 3)


@pytest.fixture(scope="module")
def indexed(video_tree, archive_retriever, tmp_path_factory):
    db = tmp_path_factory.mktemp("archive") / "a.db"
    with Archive.open(db, archive_retriever, create=True) as archive:
        archive.index([video_tree / "clips", video_tree / "stream"], progress=False)
    return db


def test_two_stage_equals_exact_when_stage_one_keeps_every_window(indexed, archive_retriever):
    with Archive.open(indexed, archive_retriever) as archive:
        total = archive.stats().windows
        for query in ("a red circle moves left", "a blue square grows", "a green triangle appears"):
            exact = archive.search(query, 5, exact=True)
            two = archive.search(query, 5, candidates=total)
            assert [m.to_dict() for m in two.moments] == [m.to_dict() for m in exact.moments]
            assert exact.scored == total and two.scored == total
            scores = [m.score for m in exact.moments]
            assert scores == sorted(scores, reverse=True)
        # The stored packs score as the retriever scores the files themselves.
        result = archive.search("a red circle moves left", 3, exact=True)
        clip = next(m for m in archive.search("x y z", total, exact=True).moments if m.path.endswith("clip1.mp4"))
        direct = archive_retriever.score(archive_retriever.encode_text(["x y z"]),
                                         archive_retriever.encode_video(clip.path))
        assert clip.score == pytest.approx(float(direct[0, 0]), abs=2e-3)
        assert result.to_dict()["mode"] == "exact"


def test_bad_queries_and_settings(indexed, archive_retriever):
    with Archive.open(indexed, archive_retriever) as archive:
        with pytest.raises(QueryError, match="empty"):
            archive.search("   ")
        with pytest.raises(QueryError, match="characters long"):
            archive.search("a" * 5000)
        with pytest.raises(ConfigError):
            archive.search("a red circle", top_k=5, candidates=2)


def test_missing_empty_and_foreign_databases_are_refused_without_writing(tmp_path, archive_retriever):
    import sqlite3

    with pytest.raises(DatabaseError, match="no archive here"):
        Archive.open(tmp_path / "missing.db", archive_retriever)
    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "text.db").write_text("hello")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.commit()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for name, message in (("empty.db", "empty file"), ("text.db", "not SQLite"), ("other.db", "not an hbci archive")):
        with pytest.raises(DatabaseError, match=message):
            Archive.open(tmp_path / name, archive_retriever)
    with pytest.raises(DatabaseError, match="not an hbci archive"):
        open_store(tmp_path / "other.db", create=True)  # indexing never adds tables to another database
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_an_archive_without_windows_is_refused(tmp_path, archive_retriever):
    (tmp_path / "empty").mkdir()
    with Archive.open(tmp_path / "a.db", archive_retriever, create=True) as archive:
        assert archive.index([tmp_path / "empty"], progress=False).scanned == 0
        with pytest.raises(DatabaseError, match="holds no windows"):
            archive.search("a red circle")


def test_usearch_stage_one_finds_the_exact_candidates_and_skips_holes(videos, archive_retriever, tmp_path,
                                                                      monkeypatch):
    db = tmp_path / "a.db"
    with Archive.open(db, archive_retriever, create=True) as archive:
        archive.index([videos], stride=0.5, progress=False)
    (videos / "clips" / "clip2.mp4").unlink()  # leaves a hole in the arrays
    with Archive.open(db, archive_retriever, create=True) as archive:
        archive.index([videos], stride=0.5, progress=False)
    query = archive_retriever.encode_text(["a red circle moves left"])["text_global"][0]
    with open_store(db) as store:
        assert store.stats().details["holes"] == 1
        exact_ids, exact_scores = store.candidates(query, 8)
    monkeypatch.setattr(embedded, "ANN_MIN_VALUES", 1)
    with open_store(db) as store:
        ann_ids, ann_scores = store.candidates(query, 8)
        assert store.stats().details["stage_one"] == "usearch HNSW"
        assert set(ann_ids) <= set(store.ids())
    np.testing.assert_array_equal(ann_ids, exact_ids)  # 30 windows: HNSW is exhaustive at this size
    np.testing.assert_allclose(ann_scores, exact_scores, atol=1e-5)


def test_contact_sheet(indexed, archive_retriever, tmp_path):
    import cv2

    with Archive.open(indexed, archive_retriever) as archive:
        result = archive.search("a red circle moves left", 5)
        path = archive.contact_sheet(result, tmp_path / "sheet.png")
        image = cv2.imread(str(path))
        assert image is not None and image.shape[1] == 4 * 200 and image.shape[0] > 2 * 120
        assert image.std() > 10  # thumbnails, not a blank page
        with pytest.raises(OutputError, match="no such folder"):
            archive.contact_sheet(result, tmp_path / "nope" / "sheet.png")
        with pytest.raises(OutputError, match=".png or .jpg"):
            archive.contact_sheet(result, tmp_path / "sheet.gif")
