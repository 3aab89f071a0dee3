"""Tests for runtime/windows.py: the window rules against a naive reference written from the docstring, the
incremental cutter equal to the whole-stream function whatever the release pattern, the short-stream rule,
sampling equal to the training loader's, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from hbci.runtime.errors import ConfigError
from hbci.runtime.video import sample_indices
from hbci.runtime.windows import EPS, WindowCutter, cut_windows, window_frames, window_halves


def naive_windows(times, window, stride, t):
    """The rules, spelled out: window k exists if some frame reaches its end, or if the last frame plus the
    median spacing of the last five frames does; a stream with no window gets one of all its frames."""
    times = np.asarray(times, float)
    if len(times) == 0:
        return []
    t0 = times[0]
    period = float(np.median(np.diff(times[-5:]))) if len(times) > 1 else 0.0
    out, k = [], 0
    while times[-1] + period >= t0 + k * stride + window - EPS:
        begin = t0 + k * stride
        inside = np.flatnonzero((times >= begin - EPS) & (times < begin + window - EPS))
        out.append((k, inside))
        k += 1
    if not out:
        out = [(0, np.arange(len(times)))]
    result = []
    for k, inside in out:
        chosen = inside[sample_indices(len(inside), t)]
        start, end = (times[inside[0]], times[inside[-1]]) if len(inside) else (t0 + k * stride, t0 + k * stride)
        result.append((k, start, end, chosen.tolist(), len(inside)))
    return result


def as_tuples(spans):
    return [(s.index, s.start, s.end, s.frames.tolist(), s.count) for s in spans]


@pytest.mark.parametrize("seed", range(8))
def test_cut_windows_follows_the_rules(seed):
    rng = np.random.default_rng(seed)
    fps = float(rng.choice([1.0, 7.5, 8.0, 25.0, 29.97]))
    n = int(rng.integers(1, 200))
    times = np.arange(n) / fps + (rng.uniform(0, 0.3 / fps, n) if seed % 2 else 0.0)
    times = np.maximum.accumulate(times)
    window, stride, t = float(rng.choice([1.0, 3.0, 4.5])), float(rng.choice([0.25, 0.5, 1.0, 2.0])), 12
    assert as_tuples(cut_windows(times, window, stride, t)) == naive_windows(times, window, stride, t)


@pytest.mark.parametrize("pattern", ["every_frame", "batches_of_8", "never_until_the_end", "newest_only"])
def test_the_cutter_gives_the_same_windows_whatever_the_release_pattern(pattern):
    times = np.arange(13 * 30) / 30.0
    reference = {s.index: s for s in cut_windows(times, 3.0, 0.5, 8)}
    cutter, pending, got, kept_max = WindowCutter(3.0, 0.5, 8), [], {}, 0
    for time in times:
        pending += cutter.add(time)
        if pattern == "every_frame" or (pattern == "batches_of_8" and len(pending) >= 8):
            got |= {k: cutter.span(k) for k in pending}
            cutter.release()
            pending = []
        elif pattern == "newest_only" and pending:
            got[pending[-1]] = cutter.span(pending[-1])
            cutter.release()
            pending = []
        kept_max = max(kept_max, cutter.frames_seen - cutter.first_kept)
    pending += cutter.finish()
    got |= {k: cutter.span(k) for k in pending}
    assert got and all(as_tuples([got[k]]) == as_tuples([reference[k]]) for k in got)
    if pattern != "newest_only":
        assert sorted(got) == sorted(reference)
    if pattern == "every_frame":
        assert kept_max <= 3.0 * 30 + 2  # released windows' frames are forgotten: memory stays one window


def test_grid_and_end_of_stream():
    spans = cut_windows(np.arange(8 * 13) / 8.0, 3.0, 0.5, 4)  # 13 s at 8 fps
    assert [s.index for s in spans] == list(range(21))
    assert [(s.start, s.end) for s in spans[:2]] == [(0.0, 2.875), (0.5, 3.375)]
    assert spans[-1].end == pytest.approx(12.875)  # the last window ends at the last frame
    assert all(s.count == 24 and s.mask.all() for s in spans)


def test_a_window_over_a_training_clip_holds_the_training_frames():
    spans = cut_windows(np.arange(24) / 8.0, 3.0, 0.5, 12)
    assert len(spans) == 1 and spans[0].frames.tolist() == sample_indices(24, 12).tolist()


def test_short_and_empty_streams():
    (only,) = cut_windows([0.0, 0.125, 0.25], 3.0, 0.25, 4)
    assert only.count == 3 and only.frames.tolist() == [0, 1, 2] and only.mask.tolist() == [True] * 3 + [False]
    assert cut_windows([], 3.0, 0.25, 4) == []


def test_bad_times_and_settings_are_refused():
    with pytest.raises(ValueError, match="non-decreasing"):
        cut_windows([0.0, 1.0, 0.5], 3.0, 0.25, 4)
    with pytest.raises(ValueError, match="finite"):
        cut_windows([0.0, float("nan")], 3.0, 0.25, 4)
    for window, stride in ((0, 1), (1, -1), (float("inf"), 1)):
        with pytest.raises(ConfigError):
            WindowCutter(window, stride, 4)
    cutter = WindowCutter(1.0, 1.0, 4)
    cutter.add(0.0)
    with pytest.raises(ValueError, match="not available"):
        cutter.span(0)


def test_window_frames_gathers_and_pads():
    (span,) = cut_windows([0.0, 0.5, 1.0], 3.0, 1.0, 4)
    frames = window_frames(span, lambda n: np.full((2, 2, 3), 10 * (n + 1), np.uint8), (2, 2, 3))
    assert frames.shape == (4, 2, 2, 3) and frames[:, 0, 0, 0].tolist() == [10, 20, 30, 0]


@pytest.mark.parametrize("count", [2, 12, 13])
def test_window_halves_stretch_each_half_to_the_window_length(count):
    """Half i holds the window's first (last) count // 2 frames in order, each repeated to fill count slots; the
    mask follows the frames; for odd counts the middle frame is in neither half."""
    frames = np.arange(count, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    mask = np.arange(count) < count - 1  # the last slot padded
    halves, halves_mask = window_halves(frames, mask)
    half = count // 2
    assert halves.shape == (2, count, 2, 2, 3) and halves_mask.shape == (2, count)
    for i, own in enumerate([np.arange(half), np.arange(count - half, count)]):
        taken = halves[i, :, 0, 0, 0]
        assert sorted(set(taken.tolist())) == own.tolist() and np.all(np.diff(taken.astype(int)) >= 0)
        assert np.bincount(taken, minlength=count)[own].min() >= count // half - 1  # every frame kept, stretched
        assert halves_mask[i].tolist() == mask[taken].tolist()
    with pytest.raises(ConfigError):
        window_halves(frames[:1], mask[:1])
