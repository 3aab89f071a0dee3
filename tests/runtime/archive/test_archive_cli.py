"""Tests for runtime/archive/cli.py (`hbci-index`, `hbci-search`): output formats, and every refused input gives
one line on stderr, its documented exit code, no traceback, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hbci.runtime.archive.cli import index_main, search_main


def run(main, args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def db(video_tree, runtime_bundle, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "a.db"
    assert index_main([str(video_tree), "--db", str(path), "--bundle", str(runtime_bundle), "--no-progress"]) == 0
    return path


def test_index_summary_and_strict(video_tree, runtime_bundle, tmp_path, capsys):
    args = [video_tree / "broken", video_tree / "clips", "--db", tmp_path / "b.db", "--bundle", runtime_bundle,
            "--no-progress"]
    code, out, err = run(index_main, args, capsys)
    assert code == 0 and out == ""
    assert "6 files: 4 new" in err and "2 failed" in err and err.count("failed: ") == 2
    code, _, err = run(index_main, args + ["--strict", "--reindex"], capsys)
    assert code == 8 and "2 of 6 files failed" in err


def test_search_table_json_and_sheet(db, runtime_bundle, tmp_path, capsys):
    base = ["--db", db, "--bundle", runtime_bundle, "--query", "a red circle moves left", "--top", "3"]
    code, out, _ = run(search_main, base, capsys)
    assert code == 0 and len(out.splitlines()) == 5 and "two-stage" in out
    code, out, _ = run(search_main, base + ["--json", "--exact", "--sheet", tmp_path / "s.png"], capsys)
    result = json.loads(out)
    assert code == 0 and result["mode"] == "exact" and len(result["moments"]) == 3
    assert set(result["moments"][0]) >= {"path", "start", "end", "score", "best_start", "best_end", "bundle_id"}
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_refusals_are_one_line_with_their_code_and_write_nothing(db, video_tree, runtime_bundle, tmp_path, capsys,
                                                                 unreadable_clips):
    (tmp_path / "text.db").write_text("not a database")
    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "emptydir").mkdir()
    assert index_main([str(tmp_path / "emptydir"), "--db", str(tmp_path / "nowindows.db"), "--bundle",
                       str(runtime_bundle), "--no-progress"]) == 0
    capsys.readouterr()
    bundle = ["--bundle", runtime_bundle]
    query = ["--query", "a red circle"]
    cases = [
        (search_main, ["--db", tmp_path / "missing.db", *query, *bundle], 9, "no archive here"),
        (search_main, ["--db", tmp_path / "text.db", *query, *bundle], 9, "not SQLite"),
        (search_main, ["--db", tmp_path / "empty.db", *query, *bundle], 9, "empty file"),
        (search_main, ["--db", tmp_path / "nowindows.db", *query, *bundle], 9, "holds no windows"),
        (search_main, ["--db", tmp_path / "emptydir", *query, *bundle], 9, "is a folder"),
        (search_main, ["--db", db, "--query", "  ", *bundle], 2, "query is empty"),
        (search_main, ["--db", db, "--query", "word " * 1000, *bundle], 2, "characters long"),
        (search_main, ["--db", db, *query, *bundle, "--sheet", tmp_path / "no" / "s.png"], 5, "no such folder"),
        (search_main, ["--db", "postgres://x/y", *query, *bundle], 9, "unknown archive location"),
        (index_main, [tmp_path / "nope", "--db", tmp_path / "new.db", *bundle], 2, "no such file or folder"),
        (index_main, [video_tree, "--db", tmp_path / "text.db", *bundle], 9, "not SQLite"),
    ]
    before = snapshot(tmp_path)
    for main, args, code, message in cases:
        got, out, err = run(main, args, capsys)
        assert (got, out) == (code, ""), (args, err)
        assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err, err
    unreadable_clips()
    got, _, err = run(index_main, [video_tree, "--db", tmp_path / "new.db", *bundle], capsys)
    assert got == 2 and "folder cannot be read" in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "new.db").exists()


def test_another_bundle_is_refused_with_reindex_offered(db, runtime_bundle, tmp_path, capsys):
    import dataclasses
    import shutil

    from hbci.runtime.bundle import load_bundle, write_manifest

    other = Path(shutil.copytree(runtime_bundle, tmp_path / "other"))
    # Other preprocessing: another model as far as embeddings go.
    write_manifest(other, dataclasses.replace(load_bundle(other).manifest, mean=(0.5, 0.5, 0.5)))
    before = snapshot(db.parent)
    code, out, err = run(search_main, ["--db", db, "--query", "a red circle", "--bundle", other], capsys)
    assert (code, out) == (10, "") and "hbci-index --reindex" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(index_main, [tmp_path / "other", "--db", db, "--bundle", other], capsys)
    assert code == 10 and "--reindex" in err
    assert snapshot(db.parent) == before


def test_help_lists_the_exit_codes_from_the_shared_table():
    from hbci.runtime.archive.cli import (INDEX_EXIT_CODES, SEARCH_EXIT_CODES, _index_parser, _search_parser)
    from hbci.runtime.errors import exit_codes_epilog

    assert _index_parser().epilog == exit_codes_epilog(INDEX_EXIT_CODES)
    assert _search_parser().epilog == exit_codes_epilog(SEARCH_EXIT_CODES)
    assert {int(c) for c in INDEX_EXIT_CODES} == {0, 1, 2, 8, 9, 10, 130}
    assert {int(c) for c in SEARCH_EXIT_CODES} == {0, 1, 2, 5, 9, 10, 130}
