"""hbci-prepare: every video decoded once into the cache, resumable, failures named and counted, never silent."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hbci.config import apply_overrides, load_config
from hbci.prepare import main, prepare
from hbci.runtime.errors import ConfigError, ExitCode


def write_video(path: Path, frames: int = 12, size: tuple[int, int] = (32, 40), fps: float = 10.0) -> Path:
    """Frame i is uniformly grey level 20 * i (so which frames were kept is visible)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for i in range(frames):
        writer.write(np.full((*size, 3), min(255, 20 * i), np.uint8))
    writer.release()
    return path


def make_dataset(root: Path, videos: int = 3, broken: bool = True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rows = [(write_video(root / f"v{i}.mp4").name, f"clip {i}") for i in range(videos)]
    if broken:
        (root / "broken.mp4").write_bytes(b"not a video")
        rows.append(("broken.mp4", "a broken clip"))
    for split in ("train", "val", "test"):
        with (root / f"{split}.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows([("video", "caption"), *rows])


def config(tmp_path: Path, *extra: str):
    return apply_overrides(load_config("small"), [f"data.root={tmp_path / 'data'}",
                                                  f"data.cache_dir={tmp_path / 'cache'}", "data.workers=2", *extra])


def test_prepare_caches_each_video_once_and_resumes(tmp_path):
    make_dataset(tmp_path / "data")
    messages: list[str] = []
    first = prepare(config(tmp_path), progress=False, warn=messages.append)
    assert (first["videos"], first["written"], first["failed"]) == (4, 3, 1)  # three splits, each video once
    assert any(str(tmp_path / "data" / "broken.mp4") in m for m in messages)  # the failure names its path
    failed = json.loads((tmp_path / "cache" / "failed.json").read_text())
    assert list(failed) == ["broken.mp4"] and "cannot be opened" in failed["broken.mp4"]["reason"]
    entries = sorted(p.name for p in (tmp_path / "cache" / "videos").iterdir())
    assert entries == ["v0.mp4.npz", "v1.mp4.npz", "v2.mp4.npz"]

    # An interrupted run's partial file is cleared; cached videos are skipped, the failed one is tried again.
    (tmp_path / "cache" / "videos" / "v3.mp4.npz.123.tmp").write_bytes(b"half")
    again = prepare(config(tmp_path), progress=False, warn=messages.append)
    assert (again["already_cached"], again["written"], again["failed_this_run"]) == (3, 0, 1)
    assert again["partial_files_removed"] == 1


def test_an_interrupted_prepare_keeps_whole_entries_and_is_continued(tmp_path, monkeypatch):
    import hbci.framecache

    make_dataset(tmp_path / "data", videos=4, broken=False)
    real, calls = hbci.framecache.decode_video, []

    def interrupt_on_the_third(path, spec):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, spec)

    monkeypatch.setattr(hbci.framecache, "decode_video", interrupt_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        prepare(config(tmp_path, "data.workers=1"), progress=False, warn=pytest.fail)
    monkeypatch.setattr(hbci.framecache, "decode_video", real)
    from hbci.framecache import Entry

    done = sorted((tmp_path / "cache" / "videos").iterdir())
    assert {"v0.mp4.npz", "v1.mp4.npz"} <= {p.name for p in done} and "v2.mp4.npz" not in {p.name for p in done}
    assert all(len(Entry(p)) == 12 for p in done)  # whole entries only (a video in progress may finish)
    summary = prepare(config(tmp_path), progress=False, warn=pytest.fail)
    assert (summary["already_cached"] + summary["written"], summary["failed"]) == (4, 0)
    assert summary["written"] >= 1


def test_cli_exit_codes(tmp_path, capsys):
    make_dataset(tmp_path / "data")
    args = ["small", f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}", "--no-progress"]
    assert main(args) == 0
    assert main(args + ["--strict"]) == ExitCode.PARTIAL == 8  # a video failed (was 1, which means a bug)
    assert "4 videos: 3 already cached, 0 written, 1 failed" in capsys.readouterr().out
    assert main(["small", f"data.root={tmp_path / 'data'}"]) == 2
    assert "data.cache_dir is not set" in capsys.readouterr().err


def test_prepare_refuses_a_cache_of_another_setting(tmp_path):
    make_dataset(tmp_path / "data", videos=1, broken=False)
    prepare(config(tmp_path), progress=False, warn=pytest.fail)
    with pytest.raises(ConfigError, match="codec: cache 'jpg' vs config 'raw'"):
        prepare(config(tmp_path, "data.cache_codec=raw"), progress=False)
