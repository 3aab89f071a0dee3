"""The frame cache format: frame selection at a fixed rate and inside spans (against naive references), entries
that round-trip, settings that are never mixed, writes that are atomic."""

from __future__ import annotations

import numpy as np
import pytest

from hbci.framecache import CacheSpec, Entry, FrameCache, rate_indices, span_indices
from hbci.runtime.errors import ConfigError


def _naive_rate(times: np.ndarray, fps: float, min_frames: int) -> list[int]:
    duration = times[-1] - times[0]
    rate = max(fps, min_frames / duration)
    keep, k = set(), 0
    while times[0] + k / rate <= times[-1] + 1e-9:
        keep.add(next(i for i, t in enumerate(times) if t >= times[0] + k / rate - 1e-6))
        k += 1
    return sorted(keep)


@pytest.mark.parametrize("seed", range(5))
def test_rate_indices_match_a_naive_clock(seed):
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(0.02, 0.06, size=rng.integers(20, 400)))
    for fps, min_frames in ((3.0, 8), (1.0, 64), (50.0, 4)):
        got = rate_indices(times, fps, min_frames)
        assert got.tolist() == _naive_rate(times, fps, min_frames)
        assert np.all(np.diff(got) > 0) and got[0] == 0


def test_rate_indices_keep_a_floor_of_frames_and_all_of_a_short_video():
    times = np.arange(300) / 30.0                     # 10 s at 30 fps
    assert len(rate_indices(times, 3.0, 8)) == 30     # every 10th frame
    assert len(rate_indices(times, 3.0, 64)) >= 64    # the rate rises so that T <= 64 finds distinct frames
    short = np.arange(20) / 30.0
    assert rate_indices(short, 3.0, 64).tolist() == list(range(20))
    assert rate_indices(np.zeros(1), 3.0).tolist() == [0] and len(rate_indices(np.zeros(0), 3.0)) == 0


def test_span_indices():
    times = np.arange(10) * 0.5                       # 0.0 .. 4.5 s
    assert span_indices(times, 1.0, 2.0).tolist() == [2, 3, 4]
    assert span_indices(times, None, 0.9).tolist() == [0, 1]
    assert span_indices(times, 4.0, None).tolist() == [8, 9]
    assert span_indices(times, 1.2, 1.45).tolist() == [3]  # between two frames: the one nearest the middle
    assert span_indices(times, 9.0, 12.0).tolist() == [9]  # past the end: the last frame


def _frames(n: int, h: int = 20, w: int = 30) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("codec", ["raw", "jpg"])
def test_entries_round_trip(tmp_path, codec):
    video = tmp_path / "data" / "clip.mp4"
    video.parent.mkdir()
    video.write_bytes(b"x")
    cache = FrameCache(tmp_path / "cache", CacheSpec(3.0, 24, codec), tmp_path / "data", create=True)
    frames = [np.full((20, 30, 3), 40 * i, np.uint8) for i in range(5)] if codec == "jpg" else _frames(5)
    cache.write(video, frames, np.arange(5) / 3.0, {"timing": "container"})
    assert cache.has(video) and cache.entry_path(video) == tmp_path / "cache" / "videos" / "clip.mp4.npz"
    entry = Entry(cache.entry_path(video))
    assert entry.times.tolist() == (np.arange(5) / 3.0).tolist() and entry.meta["codec"] == codec
    got = entry.frames(np.array([0, 2, 4]))
    expected = np.stack([frames[i] for i in (0, 2, 4)]).astype(int)
    assert np.abs(got.astype(int) - expected).max() <= (0 if codec == "raw" else 2)
    outside = tmp_path / "elsewhere" / "clip.mp4"
    assert cache.key(outside).startswith("_outside/") and cache.key(outside).endswith("_clip.mp4")


def test_a_cache_of_another_setting_is_refused_naming_the_difference(tmp_path):
    FrameCache(tmp_path, CacheSpec(3.0, 256, "jpg"), tmp_path, create=True)
    with pytest.raises(ConfigError, match="fps: cache 3.0 vs config 1.0"):
        FrameCache(tmp_path, CacheSpec(1.0, 256, "jpg"), tmp_path)
    with pytest.raises(ConfigError, match="run hbci-prepare"):
        FrameCache(tmp_path / "empty", CacheSpec(3.0, 256, "jpg"), tmp_path)


def test_an_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    cache = FrameCache(tmp_path / "cache", CacheSpec(3.0, 24, "raw"), tmp_path, create=True)

    def half_then_interrupt(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        cache.write(video, _frames(2), np.arange(2.0), {})
    assert not cache.has(video) and not list((tmp_path / "cache").rglob("*.tmp"))
