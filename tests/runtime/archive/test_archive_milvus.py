"""Tests for runtime/archive/milvus.py against milvus-lite (in-process Milvus): the same archive as the embedded
store (files, windows, search results), incremental runs, rows of a file in flight never searched, and a rerun
after an interruption never duplicates rows."""

from __future__ import annotations

import pytest

pytest.importorskip("pymilvus", reason="the Milvus store needs pymilvus: pip install 'hbci[milvus]'")
pytest.importorskip("milvus_lite", reason="the Milvus tests run milvus-lite: pip install 'hbci[milvus]'")

import numpy as np  # noqa: E402

from hbci.runtime.archive import Archive, open_store  # noqa: E402
from hbci.runtime.archive.milvus import parse_location  # noqa: E402
from hbci.runtime.errors import DatabaseError  # noqa: E402


def lite(tmp_path, name="videos") -> str:
    return f"milvus-lite://{tmp_path}/milvus.db?collection={name}"


def test_locations():
    assert parse_location("milvus://db.example:19531/videos") == ("http://db.example:19531", "videos", None, False)
    assert parse_location("milvus://u:p@db/videos")[1:3] == ("videos", "u:p")
    assert parse_location("milvus-lite:///data/m.db?collection=a1") == ("/data/m.db", "a1", None, True)
    for bad in ("milvus://host", "milvus://host/bad-name", "milvus-lite:///"):
        with pytest.raises(DatabaseError):
            parse_location(bad)


def test_missing_milvus_archive_is_refused_without_writing(tmp_path, archive_retriever):
    with pytest.raises(DatabaseError, match="no archive here"):
        Archive.open(lite(tmp_path), archive_retriever)
    assert not any(tmp_path.iterdir())


def test_milvus_archive_matches_the_embedded_one(videos, archive_retriever, tmp_path):
    embedded, milvus = tmp_path / "a.db", lite(tmp_path)
    for location in (embedded, milvus):
        with Archive.open(location, archive_retriever, create=True) as archive:
            summary = archive.index([videos], progress=False)
            assert (summary.new, len(summary.failed)) == (5, 2)
    with Archive.open(embedded, archive_retriever) as a, Archive.open(milvus, archive_retriever) as b:
        assert a.stats().windows == b.stats().windows and a.stats().files == b.stats().files == 5
        assert a.stats().failed_files == b.stats().failed_files == 2
        for query in ("a red circle moves left", "a blue square grows"):
            for exact in (False, True):
                ra, rb = a.search(query, 4, exact=exact), b.search(query, 4, exact=exact)
                assert [(m.path, m.start, m.end) for m in ra.moments] == [(m.path, m.start, m.end)
                                                                          for m in rb.moments]
                np.testing.assert_allclose([m.score for m in ra.moments], [m.score for m in rb.moments], atol=1e-6)
        sheet = b.contact_sheet(b.search("a red circle", 3), tmp_path / "sheet.png")
        assert sheet.stat().st_size > 1000

    (videos / "clips" / "clip0.mp4").unlink()
    with Archive.open(milvus, archive_retriever, create=True) as archive:
        again = archive.index([videos], progress=False)
        assert (again.removed, again.unchanged, again.windows) == (1, 6, 0)
        assert archive.stats().files == 4
        assert not any(m.path.endswith("clip0.mp4") for m in archive.search("a red circle", 10, exact=True).moments)


def test_rows_of_an_unfinished_file_are_never_searched_nor_duplicated(videos, archive_retriever, tmp_path):
    location = lite(tmp_path)
    with Archive.open(location, archive_retriever, create=True) as archive:
        archive.index([videos / "clips"], progress=False)
    clip = str(videos / "clips" / "clip1.mp4")
    with open_store(location, create=True) as store:
        before = store.count()
        ids = store.ids()
        # A run killed half way through a new version of clip1: its rows are written, its record is not.
        packs = store.packs(ids[:1])
        writer = store.write_file(clip, "f" * 64)
        writer.add([(0, 0.0, 2.875)], packs, [b""])
        assert store.count() == before + 1  # the row is in the collection...
        assert np.array_equal(store.ids(), ids)  # ...but not searchable
        query = packs["video_global"][0]
        found, _ = store.candidates(query, 10)
        assert set(found) <= set(ids)
    with Archive.open(location, archive_retriever, create=True) as archive:
        archive.index([videos / "clips"], progress=False)  # unchanged files: nothing re-encoded
    with open_store(location, create=True) as store:
        assert np.array_equal(store.ids(), ids)
        # Re-indexing clip1 with its real contents replaces the stray row and never duplicates a window.
        record = store.files()[clip]
        writer = store.write_file(clip, record.sha256)
        writer.add([(0, 0.0, 2.875)], store.packs(ids[:1]), [b""])
        writer.commit(record.__class__(**{**record.__dict__, "windows": 1}))
        assert store.count() == before and np.array_equal(store.ids(), ids)
