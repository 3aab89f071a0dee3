"""Training data: loader options and skip_missing from the config, [start, end] spans, and clips from the frame
cache equal to clips decoded straight from the videos."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from hbci.config import apply_overrides, load_config
from hbci.data import load_clipset, load_items
from hbci.prepare import prepare
from hbci.runtime.errors import ConfigError, DatasetError
from test_prepare import write_video


def _csv(root: Path, rows: list[tuple], name: str = "train.csv") -> None:
    with (root / name).open("w", newline="") as fh:
        csv.writer(fh).writerows([("video", "caption", "start", "end"), *rows])


def _config(root: Path, *extra: str):
    return apply_overrides(load_config("small"), [f"data.root={root}", "data.workers=2", *extra])


def test_loader_options_reach_the_loader(tmp_path):
    (tmp_path / "clips").mkdir()
    write_video(tmp_path / "clips" / "a.avi")
    (tmp_path / "captions_msvd.json").write_text(json.dumps({"a": ["a cat", "a dog"], "b": ["x"]}))
    (tmp_path / "mine.txt").write_text("a\n")
    cfg = _config(tmp_path, "data.dataset=msvd", 'data.options={"list_file": "mine.txt", "video_dir": "clips"}')
    items = load_items(cfg.data, "test")
    assert [(i.video_id, i.captions, i.path) for i in items] == [("a", ("a cat", "a dog"), tmp_path / "clips/a.avi")]
    with pytest.raises(ConfigError, match=r"no option\(s\) video_folder; its options: captions_json, list_file"):
        load_items(_config(tmp_path, "data.dataset=msvd", "data.options.video_folder=clips").data, "test")
    with pytest.raises(ConfigError, match="its options: none"):
        load_items(_config(tmp_path, "data.options.video_dir=clips").data, "train")


def test_skip_missing_comes_from_the_config(tmp_path):
    write_video(tmp_path / "a.mp4")
    _csv(tmp_path, [("a.mp4", "here", "", ""), ("gone.mp4", "missing", "", "")])
    with pytest.raises(DatasetError, match="gone.mp4"):
        load_items(_config(tmp_path).data, "train")
    messages: list[str] = []
    items = load_items(_config(tmp_path, "data.skip_missing=true").data, "train", warn=messages.append)
    assert [i.video_id for i in items] == ["a"] and "1 of 2 videos are missing" in messages[0]


def _levels(clips) -> np.ndarray:
    """The grey level of every frame (frame i of the test videos is level 20 * i), -1 where padded."""
    levels = clips.frames[:, :, 16, 16, 0].astype(int)
    return np.where(clips.masks, levels, -1)


def test_spans_sample_inside_the_span(tmp_path):
    write_video(tmp_path / "a.mp4", frames=12, fps=10.0)          # frames at 0.0, 0.1, ... 1.1 s
    _csv(tmp_path, [("a.mp4", "whole", "", ""), ("a.mp4", "middle", "0.3", "0.6")])
    clips = load_clipset(_config(tmp_path).data, "train", 4, 32, progress=False)
    whole, middle = _levels(clips)
    assert np.allclose(whole, [20, 80, 140, 200], atol=5)           # sample_indices(12, 4) = 1, 4, 7, 10
    assert np.allclose(middle, [60, 80, 100, 120], atol=5)          # frames 3..6, the span's four frames
    assert [i.video_id for i in clips.items] == ["a", "a@0.3-0.6"]


def test_clips_from_the_cache_equal_clips_decoded_directly(tmp_path):
    for name, frames in (("a.mp4", 12), ("b.mp4", 30), ("c.mp4", 3)):
        write_video(tmp_path / name, frames=frames)
    _csv(tmp_path, [("a.mp4", "a", "", ""), ("b.mp4", "b", "", ""), ("c.mp4", "c", "", ""),
                    ("b.mp4", "b span", "1.0", "2.0"), ("b.mp4", "b instant", "1.05", "1.06")])
    direct = load_clipset(_config(tmp_path).data, "train", 6, 32, progress=False)
    # Raw frames of at most 64 per video and no shrinking (the videos are smaller than the cached short side):
    # the cache holds exactly the decoded frames, so the clips must be equal to the pixel.
    cached_cfg = _config(tmp_path, f"data.cache_dir={tmp_path / 'cache'}", "data.cache_codec=raw",
                         "data.val_split=", "data.test_split=")
    prepare(cached_cfg, progress=False, warn=pytest.fail)
    cached = load_clipset(cached_cfg.data, "train", 6, 32, progress=False)
    assert [i.video_id for i in cached.items] == [i.video_id for i in direct.items]
    assert np.array_equal(cached.masks, direct.masks) and np.array_equal(cached.frames, direct.frames)
    assert isinstance(cached.frames, np.memmap)  # materialised once, shared through the page cache
    level, *padding = _levels(cached)[4].tolist()  # 1.05-1.06 s holds no frame: the one nearest, at 1.1 s
    assert abs(level - 220) <= 5 and padding == [-1] * 5
    again = load_clipset(cached_cfg.data, "train", 6, 32, progress=False)
    assert again.frames.filename == cached.frames.filename
    assert len(list((tmp_path / "cache" / "clips").glob("*.frames.npy"))) == 1


def test_the_cache_skips_failed_videos_and_refuses_unprepared_ones(tmp_path):
    write_video(tmp_path / "a.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    _csv(tmp_path, [("a.mp4", "a", "", ""), ("bad.mp4", "bad", "", "")])
    cfg = _config(tmp_path, f"data.cache_dir={tmp_path / 'cache'}", "data.val_split=", "data.test_split=")
    prepare(cfg, progress=False, warn=lambda m: None)
    messages: list[str] = []
    from hbci.data import cached_clipset

    clips = cached_clipset(cfg.data, "train", load_items(cfg.data, "train"), 4, 32, progress=False,
                           warn=messages.append)
    assert [i.video_id for i in clips.items] == ["a"]
    assert "1 of 2 videos of split 'train' could not be decoded by hbci-prepare" in messages[0]
    assert str(tmp_path / "bad.mp4") in messages[0]
    write_video(tmp_path / "new.mp4")
    _csv(tmp_path, [("a.mp4", "a", "", ""), ("new.mp4", "new", "", "")])
    with pytest.raises(DatasetError, match="new.mp4.*run hbci-prepare"):
        load_clipset(cfg.data, "train", 4, 32, progress=False)


# ------------------------------------------------------------------------------------------------ training pool
def _ramp(path: Path, frames: int, fps: float = 10.0) -> Path:
    """Frame i is grey level 8 * i (distinct for up to 32 frames)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (40, 32))
    for i in range(frames):
        writer.write(np.full((32, 40, 3), 8 * i, np.uint8))
    writer.release()
    return path


def _timed_csv(root: Path, rows: list[tuple], name: str = "train.csv") -> None:
    header = ("video", "caption", "start", "end", "event_start", "event_end", "order_cut", "time_sensitive",
              "order_negative")[:len(rows[0])]
    with (root / name).open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])


def _pool_data(tmp_path: Path):
    _ramp(tmp_path / "a.mp4", 12)
    _ramp(tmp_path / "b.mp4", 30)
    _timed_csv(tmp_path, [("a.mp4", "whole", "", "", "", "", "", ""),
                          ("b.mp4", "span", "1.0", "2.0", "1.1", "1.9", "1.5", "1")])


def test_the_pool_keeps_the_frames_around_each_span(tmp_path):
    from hbci.data import load_pool

    _pool_data(tmp_path)
    pool = load_pool(_config(tmp_path).data, "train", 32, progress=False)
    assert [i.video_id for i in pool.items] == ["a", "b@1-2"]
    np.testing.assert_allclose(pool.item_times(0), np.arange(12) / 10)
    # a third of the 1 s span (and a little more) on each side: 0.63 .. 2.37 s
    np.testing.assert_allclose(pool.item_times(1), np.arange(7, 24) / 10)
    levels = pool.frames[:, 16, 16, 0].astype(int)
    assert np.allclose(levels[pool.offsets[1]:], 8 * np.arange(7, 24), atol=5)
    item = pool.items[1]
    assert (item.event_start, item.event_end, item.order_cut, item.time_sensitive) == (1.1, 1.9, 1.5, True)


def test_the_pool_from_the_cache_equals_the_pool_decoded_directly(tmp_path):
    from hbci.data import load_pool

    _pool_data(tmp_path)
    direct = load_pool(_config(tmp_path).data, "train", 32, progress=False)
    cached_cfg = _config(tmp_path, f"data.cache_dir={tmp_path / 'cache'}", "data.cache_codec=raw",
                         "data.val_split=", "data.test_split=")
    prepare(cached_cfg, progress=False, warn=pytest.fail)
    cached = load_pool(cached_cfg.data, "train", 32, progress=False)
    assert isinstance(cached.frames, np.memmap)
    np.testing.assert_array_equal(cached.frames, direct.frames)
    np.testing.assert_array_equal(cached.offsets, direct.offsets)
    np.testing.assert_allclose(cached.times, direct.times)
    again = load_pool(cached_cfg.data, "train", 32, progress=False)
    assert again.frames.filename == cached.frames.filename  # materialised once


def test_aligned_windows_are_the_evaluation_clips_and_flags_travel(tmp_path):
    from hbci.data import load_pool
    from hbci.sampling import ALIGNED, WindowPolicy

    _pool_data(tmp_path)
    cfg = _config(tmp_path).data
    pool = load_pool(cfg, "train", 32, progress=False)
    clips = load_clipset(cfg, "train", 6, 32, progress=False)
    aligned = pool.windows(np.arange(2), 6, ALIGNED, seed=0)
    np.testing.assert_array_equal(aligned.frames, clips.frames)
    np.testing.assert_array_equal(aligned.masks, clips.masks)
    assert aligned.reverse.tolist() == [False, True]
    # the span 1.0-2.0 s holds frames 10..20; its 6 centres are frames 10, 12, 14, 15, 17, 19: three before 1.5 s
    assert aligned.cut.tolist() == [0, 3]
    drawn = [pool.windows(np.array([1]), 6, WindowPolicy(), seed=s) for s in range(30)]
    starts = {int(round(w.frames[0, 0, 16, 16, 0] / 8)) for w in drawn}
    assert min(starts) < 10 < max(starts)  # windows start early and late
    # With each_event the item's order_cut counts: events 1.1-1.9 s are frames 11-19, cut at frame 15 into 4 and 5
    # frames. 3 frames late keeps 2 of the first 4 (0.5, rejected; the union keeps 6 of 9); 3 early keeps 3 of 5.
    # (Segment centres here, so a window's first frame tells its shift.)
    def shifts(policy):
        firsts = {int(round(pool.windows(np.array([1]), 6, policy, seed=s).frames[0, 0, 16, 16, 0] / 8))
                  for s in range(30)}
        return {f - 10 for f in firsts}

    strict, loose = shifts(WindowPolicy(random_frames=False, each_event=True)), shifts(WindowPolicy(random_frames=False))
    assert strict == {-3, -2, -1, 0, 1, 2} and loose == {-3, -2, -1, 0, 1, 2, 3}
    again = pool.windows(np.array([1]), 6, WindowPolicy(), seed=4)
    np.testing.assert_array_equal(again.frames, drawn[4].frames)


def test_partial_negatives_splice_one_event_whole_with_the_next_window(tmp_path):
    """Item b's aligned window (6 centres: frames 10, 12, 14 | 16, 18, 20; events 1.1-1.9 s, so 12, 14 | 16, 18)
    gets partial negatives spliced with item a's window; item a (one event) gets none."""
    from hbci.data import load_pool
    from hbci.sampling import ALIGNED

    _pool_data(tmp_path)
    pool = load_pool(_config(tmp_path).data, "train", 32, progress=False)
    assert pool.windows(np.arange(2), 6, ALIGNED, seed=0).partial is None
    levels = lambda frames: np.round(frames[..., 16, 16, 0].astype(int) / 8).astype(int).tolist()  # noqa: E731
    seen = set()
    for seed in range(20):
        batch = pool.windows(np.arange(2), 6, ALIGNED, seed=seed, partial=True)
        assert batch.partial_valid.tolist() == [False, True] and batch.partial[0].tolist() == list(range(6))
        spliced = levels(batch.frames.reshape(12, *batch.frames.shape[2:])[batch.partial[1]])
        own = [f for f, i in zip(spliced, batch.partial[1]) if i // 6 == 1]
        a = levels(batch.frames[0])
        # Under 40 % of a 2-frame event is none of it. Late: the second event and after, then a's first frames;
        # early: a's last frames, then everything before the second event.
        if batch.partial[1][0] // 6 == 1:
            seen.add("late")
            assert own == [16, 18, 20] and spliced[3:] == a[:3]
        else:
            seen.add("early")
            assert own == [10, 12, 14] and spliced[:3] == a[3:]
    assert seen == {"late", "early"}


def test_windows_cut_the_same_times_out_of_the_order_swapped_video(tmp_path):
    """A two-event item's order_negative video gives the window at the same times from its own span's start (here
    1.0 s later in a video of the same grey ramp: 10 frames on), only for windows that show both events; items without one, or
    whose partner is not in the pool, get none."""
    from hbci.data import load_pool
    from hbci.sampling import ALIGNED, WindowPolicy

    _ramp(tmp_path / "a.mp4", 30)
    _ramp(tmp_path / "c.mp4", 30)
    _timed_csv(tmp_path, [("a.mp4", "x then y", "0.5", "1.5", "0.5", "1.5", "1.0", "1", "c.mp4"),
                          ("c.mp4", "y then x", "1.5", "2.5", "1.5", "2.5", "2.0", "1", "a.mp4"),
                          ("c.mp4", "one event", "0.0", "1.0", "", "", "", "1", "")])
    pool = load_pool(_config(tmp_path).data, "train", 32, progress=False)
    assert pool.items[0].order_negative == tmp_path / "c.mp4"
    partners = pool.order_partners()
    assert partners.tolist() == [1, 0, -1]
    aligned = pool.windows(np.arange(3), 6, ALIGNED, seed=0, partners=partners)
    assert aligned.rendered_valid.tolist() == [True, True, False]
    levels = lambda frames: np.round(frames[..., 16, 16, 0].astype(int) / 8).astype(int)  # noqa: E731
    np.testing.assert_array_equal(levels(aligned.rendered[0]), levels(aligned.frames[0]) + 10)
    np.testing.assert_array_equal(levels(aligned.rendered[1]), levels(aligned.frames[1]) - 10)
    assert not aligned.rendered[2].any()
    for seed in range(10):  # shifted windows keep the offsets; those that miss an event get none
        drawn = pool.windows(np.array([0]), 6, WindowPolicy(), seed=seed, partners=partners)
        assert drawn.rendered_valid[0] == (drawn.cut[0] > 0)
        if drawn.rendered_valid[0]:
            np.testing.assert_array_equal(levels(drawn.rendered[0]), levels(drawn.frames[0]) + 10)
    lone = load_pool(_config(tmp_path).data, "train", 32, limit=1, progress=False)
    assert lone.order_partners().tolist() == [-1]
    assert pool.windows(np.arange(3), 6, ALIGNED, seed=0).rendered is None


def test_timing_columns_are_checked(tmp_path):
    _ramp(tmp_path / "b.mp4", 30)
    _timed_csv(tmp_path, [("b.mp4", "span", "1.0", "2.0", "0.5", "1.9", "", "1")])
    with pytest.raises(DatasetError, match="event_start 0.5 lies outside the span"):
        load_items(_config(tmp_path).data, "train")
    _timed_csv(tmp_path, [("b.mp4", "span", "1.0", "2.0", "", "", "", "yes")])
    with pytest.raises(DatasetError, match="time_sensitive must be 0, 1 or empty"):
        load_items(_config(tmp_path).data, "train")
