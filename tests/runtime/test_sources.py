"""Tests for runtime/sources.py: files read whole and in order, realtime pacing drops instead of lagging,
max_fps, missing devices fail fast, reconnection is bounded, the reader hands errors over."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from hbci.runtime.errors import ConfigError, SourceError, VideoError
from hbci.runtime.sources import Frame, Source, FrameBuffer, gstreamer_available, open_source
from hbci.runtime.video import read_frames_with_times
from hbci.synth import write_video


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory):
    """40 frames at 8 fps whose frame i has brightness 6 * i: order and drops are visible in the pixels."""
    frames = np.stack([np.full((32, 48, 3), 6 * i, np.uint8) for i in range(40)])
    return write_video(tmp_path_factory.mktemp("src") / "counter.mp4", frames, 8.0)


def _level(frame: Frame) -> int:
    return int(frame.image.mean() / 6 + 0.75)  # mp4v returns flat frames about 3 levels darker


def test_file_source_reads_every_frame_in_order_with_positions(counter_video):
    with open_source("file", counter_video) as src:
        frames = list(src)
    assert [f.index for f in frames] == list(range(40))
    assert [_level(f) for f in frames] == list(range(40))
    np.testing.assert_allclose([f.time for f in frames], np.arange(40) / 8.0, atol=1e-9)
    assert not src.live and src.fps == pytest.approx(8.0)
    assert src.stats.frames_read == 40 and src.stats.frames_dropped == 0


def test_file_source_never_drops_for_a_slow_consumer(counter_video):
    with open_source("file", counter_video, buffer=2) as src:
        levels = []
        for frame in src:
            time.sleep(0.005)  # slower than the decoder
            levels.append(_level(frame))
    assert levels == list(range(40)) and src.stats.frames_dropped == 0


def test_file_frames_equal_the_training_decoder(counter_video):
    expected, _, times = read_frames_with_times(counter_video, 40)
    with open_source("file", counter_video) as src:
        frames = list(src)
    assert all(np.array_equal(f.image, e) for f, e in zip(frames, expected))
    np.testing.assert_array_equal([f.time for f in frames], times)


def test_realtime_file_is_paced_and_drops_oldest_instead_of_lagging(counter_video):
    start = time.monotonic()
    with open_source("file", counter_video, realtime=True, buffer=2) as src:
        seen = []
        for frame in src:
            seen.append(frame)
            time.sleep(0.3)  # a consumer at ~3 fps against an 8 fps source
    elapsed = time.monotonic() - start
    assert elapsed >= 39 / 8.0 - 0.2  # paced at the file's own clock
    assert src.stats.frames_dropped > 0 and len(seen) < 40
    # no latency build-up: every frame handed over is at most ~one buffer plus one consumer step behind real time
    lags = [(f.arrival - start) - f.time for f in seen]
    assert max(lags) < 0.3
    assert [f.index for f in seen] == sorted(f.index for f in seen)


def test_max_fps_keeps_a_regular_subset(counter_video):
    with open_source("file", counter_video, max_fps=4.0) as src:
        frames = list(src)
    assert [f.index for f in frames] == list(range(0, 40, 2))
    assert [_level(f) for f in frames] == list(range(0, 40, 2))
    assert src.stats.frames_skipped == 20


def test_frame_buffer_drop_oldest_and_blocking():
    ring = FrameBuffer(3, drop_oldest=True)
    for i in range(5):
        assert ring.put(Frame(i, i, np.zeros((1, 1, 3), np.uint8), 0.0))
    assert ring.dropped == 2 and [ring.get(0).index for _ in range(3)] == [2, 3, 4]
    assert ring.get(0.01) is None

    queue = FrameBuffer(1, drop_oldest=False)
    queue.put(Frame(0, 0, np.zeros((1, 1, 3), np.uint8), 0.0))
    done = threading.Event()

    def producer():
        queue.put(Frame(1, 1, np.zeros((1, 1, 3), np.uint8), 0.0))
        done.set()

    threading.Thread(target=producer, daemon=True).start()
    assert not done.wait(0.2)  # blocked while full
    assert queue.get(1).index == 0 and done.wait(1) and queue.get(1).index == 1


def test_missing_camera_fails_fast():
    start = time.monotonic()
    with pytest.raises(SourceError, match="camera 9"):
        open_source("camera", "9")
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("kind, target", [("camera", "front"), ("url", "ftp://example.com/x"),
                                          ("url", "/not/a/url"), ("pipeline", "  ")])
def test_malformed_targets_are_config_errors(kind, target):
    with pytest.raises(ConfigError):
        open_source(kind, target)


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer")
def test_pipeline_without_gstreamer_says_so():
    with pytest.raises(SourceError, match="GStreamer"):
        open_source("pipeline", "videotestsrc ! videoconvert ! appsink")


def test_unreachable_url_fails_within_the_timeout():
    start = time.monotonic()
    with pytest.raises(SourceError):
        open_source("url", "rtsp://127.0.0.1:9/stream", open_timeout=2.0)
    assert time.monotonic() - start < 4.0


def test_unreadable_files_are_video_errors(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        open_source("file", tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoError):
        open_source("file", junk)


class FakeCapture:
    """A capture that yields `frames` frames, then fails; `opens` counts how often one was made."""

    def __init__(self, frames: int):
        self.left = frames

    def isOpened(self):
        return True

    def read(self):
        ok = self.grab()
        return ok, (np.zeros((4, 4, 3), np.uint8) if ok else None)

    def grab(self):
        self.left -= 1
        return self.left >= 0

    def retrieve(self):
        return True, np.zeros((4, 4, 3), np.uint8)

    def get(self, prop):
        return 0.0

    def release(self):
        pass


def _fake_live(monkeypatch, plan: list[int], **options) -> Source:
    """A live source whose successive captures yield plan[0], plan[1], ... frames; an exhausted plan fails."""
    plan = list(plan)

    def capture(self):
        if not plan:
            raise SourceError("stream gone")
        return FakeCapture(plan.pop(0))

    monkeypatch.setattr(Source, "_capture", capture)
    return Source("url", "rtsp://camera.invalid/x", reconnect_backoff=0.01, **options).open()


def test_live_source_reconnects_then_continues(monkeypatch):
    src = _fake_live(monkeypatch, [3, 4], reconnect_attempts=2)
    with pytest.raises(SourceError, match="2 reconnection attempts failed"):
        frames = []
        for frame in src:
            frames.append(frame)
    assert len(frames) == 7 and src.stats.reconnects == 1
    assert [f.time for f in frames] == sorted(f.time for f in frames)
    src.close()


def test_interrupt_ends_a_live_source_that_never_ends(monkeypatch):
    src = _fake_live(monkeypatch, [10**9])
    timer = threading.Timer(0.3, src.interrupt)
    timer.start()
    start = time.monotonic()
    count = sum(1 for _ in src)
    assert count > 0 and time.monotonic() - start < 2.0
    src.close()


def test_reader_errors_reach_the_consumer(monkeypatch, counter_video):
    def broken(self):
        raise cv2.error("decoder exploded")

    src = open_source("file", counter_video)
    monkeypatch.setattr(Source, "_grab", broken)
    with pytest.raises(SourceError, match="decoder exploded"):
        list(src)
    src.close()
