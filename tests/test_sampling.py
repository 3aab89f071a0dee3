"""Training windows (hbci/sampling.py): random frames within segments, the overlap rule, offsets, against naive
references."""

from __future__ import annotations

import numpy as np
import pytest

from hbci.runtime.video import sample_indices
from hbci.sampling import (ALIGNED, WindowPolicy, draw_window, matches_caption, overlap_shares, partial_window,
                           partial_windows, random_segment_indices)


def test_random_segment_indices_take_one_frame_per_segment():
    rng = np.random.default_rng(0)
    for n in range(1, 60):
        for t in (1, 4, 12):
            idx = random_segment_indices(n, t, rng)
            if n < t:
                assert idx.tolist() == list(range(n))
                continue
            assert len(idx) == t and np.all(np.diff(idx) > 0)
            for i, j in enumerate(idx):  # naive: segment i starts at floor(i n / t); j is in the last one started
                assert max(s for s in range(t) if (s * n) // t <= j) == i
    seen = {int(random_segment_indices(24, 12, rng)[0]) for _ in range(200)}
    assert seen == {0, 1}  # both frames of the first segment are drawn, not only its centre


def test_overlap_shares_match_a_set_count():
    rng = np.random.default_rng(1)
    for _ in range(300):
        a, b, c = (tuple(sorted(rng.integers(0, 30, 2) + [0, 1])) for _ in range(3))
        frames = lambda r: set(range(*r))  # noqa: E731
        event, clip = overlap_shares(a, b, c)
        assert event == pytest.approx(len(frames(a) & frames(c)) / max(len(frames(c)), 1))
        assert clip == pytest.approx(len(frames(a) & frames(b)) / max(len(frames(a)), 1))


def test_a_window_a_third_off_a_full_clip_still_matches_but_not_one_off_a_short_event():
    policy = WindowPolicy()
    assert matches_caption((8, 32), (0, 24), (0, 24), policy)       # 1 s late on a 3 s clip: 2/3 of each
    assert not matches_caption((10, 34), (0, 24), (0, 24), policy)  # 14/24 of each: below the 0.6 shares
    assert not matches_caption((8, 32), (0, 24), (0, 10), policy)   # the short event is mostly outside


def test_each_event_share_is_the_smaller_events_against_a_set_count():
    rng = np.random.default_rng(3)
    frames = lambda r: set(range(*r))  # noqa: E731
    for _ in range(300):
        window = tuple(sorted(rng.integers(0, 40, 2) + [0, 1]))
        start, cut, end = sorted(rng.choice(40, 3, replace=False))
        event, _ = overlap_shares(window, (0, 40), (start, end), cut)
        naive = min(len(frames(window) & frames(p)) / len(frames(p)) for p in ((start, cut), (cut, end)))
        assert event == pytest.approx(naive)


def test_each_event_rule_rejects_a_window_that_shows_little_of_the_second_event():
    # A 3 s clip of two 1.5 s events (frames 0-11 and 12-23) at 8 fps, the window 7 frames (0.875 s) late: 17 of 24
    # frames of the two together (0.71), but only 5 of the first event's 12 (0.42).
    union, each = WindowPolicy(), WindowPolicy(each_event=True)
    assert matches_caption((7, 31), (0, 24), (0, 24), union, cut=12)       # the cut counts only with each_event
    assert not matches_caption((7, 31), (0, 24), (0, 24), each, cut=12)
    assert matches_caption((4, 28), (0, 24), (0, 24), each, cut=12)        # 0.5 s late: 8/12 and 12/12
    assert matches_caption((7, 31), (0, 24), (0, 24), each, cut=None)      # one event: the union rule


def _times(n: int, fps: float = 8.0) -> np.ndarray:
    return np.arange(n) / fps


def test_draw_window_with_each_event_keeps_both_events_of_an_ordered_clip():
    rng = np.random.default_rng(4)
    times = _times(44)
    span, events, order_cut = (10 / 8, 33 / 8), (10 / 8, 33 / 8), 22 / 8  # events at frames 10-21 and 22-33
    loose, strict = WindowPolicy(random_frames=False), WindowPolicy(random_frames=False, each_event=True)
    shifts = {name: set() for name in ("loose", "strict")}
    for _ in range(300):
        for name, policy in (("loose", loose), ("strict", strict)):
            idx = draw_window(times, span, events, 12, policy, rng, order_cut)
            shifts[name].add(int(idx[0] - 10 - sample_indices(24, 12)[0]))
    # 12-frame events keep 0.6 of each only within 4 frames; the union rule allows 8 (2/3 of 24 still inside).
    assert max(abs(s) for s in shifts["strict"]) <= 4 and max(abs(s) for s in shifts["loose"]) > 4
    assert min(shifts["strict"]) < 0 < max(shifts["strict"])


def test_draw_window_keeps_length_and_rule_and_stays_inside_the_video():
    rng = np.random.default_rng(2)
    times = _times(44)  # 10 frames of context, a 24-frame clip, 10 frames of context
    span, events = (10 / 8, 33 / 8), (12 / 8, 30 / 8)
    policy = WindowPolicy(random_frames=False)
    shifts = set()
    for _ in range(300):
        idx = draw_window(times, span, events, 12, policy, rng)
        centres = sample_indices(24, 12)
        shift = int(idx[0] - 10 - centres[0])
        np.testing.assert_array_equal(idx, 10 + shift + centres)  # the clip's length, shifted
        assert abs(shift) <= 8
        assert matches_caption((10 + shift, 34 + shift), (10, 34), (12, 31), policy)
        shifts.add(shift)
    assert min(shifts) <= -6 and max(shifts) >= 6  # early and late both drawn
    # Without context (a whole video, or a clip at the edge) the window cannot leave the video.
    whole = [draw_window(_times(24), (None, None), (None, None), 12, policy, rng) for _ in range(20)]
    assert all(np.array_equal(w, sample_indices(24, 12)) for w in whole)
    edge = [draw_window(times, (0.0, 23 / 8), (None, None), 12, policy, rng)[0] for _ in range(50)]
    assert min(edge) >= 0


def test_aligned_policy_is_the_runtime_sampling_and_draws_are_seeded():
    times = _times(40)
    span = (5 / 8, 28 / 8)
    idx = draw_window(times, span, (None, None), 12, ALIGNED, np.random.default_rng(0))
    np.testing.assert_array_equal(idx, 5 + sample_indices(24, 12))
    a = draw_window(times, span, (None, None), 12, WindowPolicy(), np.random.default_rng([3, 7]))
    b = draw_window(times, span, (None, None), 12, WindowPolicy(), np.random.default_rng([3, 7]))
    np.testing.assert_array_equal(a, b)
    short = draw_window(_times(5), (None, None), (None, None), 12, WindowPolicy(), np.random.default_rng(0))
    assert short.tolist() == [0, 1, 2, 3, 4]  # fewer frames than T: all of them (the caller masks the rest)


def test_bad_policies_are_refused():
    with pytest.raises(ValueError):
        WindowPolicy(max_shift=1.0)
    with pytest.raises(ValueError):
        WindowPolicy(min_event_share=0.0)


def test_a_partial_window_holds_one_event_whole_and_the_edge_of_the_other():
    # T 12, the first event on frames 1-5, the second on 6-10 (frames 0 and 11 hold neither); row 2, donor 5.
    late = partial_window(2, 5, 12, (1, 6, 11), 0.4, late=True)  # keeps floor(0.4 * 5) = 2 of the first event
    assert late.tolist() == [2 * 12 + f for f in range(4, 12)] + [5 * 12 + f for f in range(4)]
    early = partial_window(2, 5, 12, (1, 6, 11), 0.2, late=False)  # keeps 1 of the second
    assert early.tolist() == [5 * 12 + f for f in range(7, 12)] + [2 * 12 + f for f in range(7)]
    assert partial_window(2, 5, 12, (1, 6, 11), 0.0, late=True).tolist()[:6] == [2 * 12 + f for f in range(6, 12)]


def test_partial_windows_break_the_overlap_rule_of_the_cut_event_only():
    rng = np.random.default_rng(3)
    t, max_share = 12, 0.4
    for _ in range(200):
        b = int(rng.integers(1, 7))
        masks = np.ones((b, t), bool)
        masks[rng.random(b) < 0.2, int(rng.integers(1, t)):] = False  # some short windows: never used
        slots = np.array([sorted(rng.integers(0, t + 1, 3)) for _ in range(b)])
        cut = np.where((slots[:, 1] - slots[:, 0] >= 2) & (slots[:, 2] - slots[:, 1] >= 2), slots[:, 1], 0)
        cut[rng.random(b) < 0.2] = 0  # one-event windows
        rngs = [np.random.default_rng([4, row]) for row in range(b)]
        order, valid = partial_windows(masks, cut, slots, max_share, rngs)
        full = masks.all(1)
        assert valid.tolist() == ((cut > 0) & full & (full.sum() >= 2)).tolist()
        for row in range(b):
            if not valid[row]:
                assert order[row].tolist() == list(range(row * t, row * t + t))
                continue
            rows, frames = np.divmod(order[row], t)
            donor = set(rows.tolist()) - {row}
            assert len(donor) <= 1 and all(full[d] for d in donor)
            own = set(frames[rows == row].tolist())
            assert frames[rows == row].tolist() == sorted(own) and len(order[row]) == t  # a contiguous run, in order
            first, second = set(range(slots[row, 0], cut[row])), set(range(cut[row], slots[row, 2]))
            kept = [len(own & first) / len(first), len(own & second) / len(second)]
            assert sorted(kept)[1] == 1.0 and sorted(kept)[0] < max_share  # one event whole, little of the other
            late = kept[0] < 1.0
            assert (rows[0] == row) == late  # a late window starts on its own frames; an early one on the donor's


def test_a_stretched_window_holds_the_whole_clip_and_stays_in_the_video_and_the_rule():
    from hbci.sampling import _stretched_window

    rng = np.random.default_rng(4)
    policy = WindowPolicy(max_stretch=0.5)
    lengths = set()
    for clip, available in [((10, 34), 44), ((0, 24), 44), ((20, 44), 44), ((10, 34), 34)]:
        for _ in range(200):
            window = _stretched_window(clip, available, policy, rng)
            if window is None:
                continue
            start, stop = window
            assert 0 <= start <= clip[0] and clip[1] <= stop <= available  # all of the clip, inside the video
            assert clip[1] - clip[0] < stop - start <= 1.5 * (clip[1] - clip[0])
            assert matches_caption(window, clip, clip, policy)
            lengths.add(stop - start)
    assert min(lengths) <= 26 and max(lengths) >= 34  # short and long stretches both drawn
    assert _stretched_window((0, 24), 24, policy, rng) is None  # no room: the caller shifts instead
    # The clip share bounds the stretch: at 0.9 a 24-frame clip gets at most 2 frames more.
    tight = WindowPolicy(max_stretch=1.0, min_clip_share=0.9)
    assert all((w is None) or (w[1] - w[0] <= 26) for w in (_stretched_window((10, 34), 44, tight, rng)
                                                             for _ in range(100)))


def test_with_a_stretch_half_the_windows_are_longer_than_their_clip():
    times = _times(44)
    span, events = (10 / 8, 33 / 8), (12 / 8, 30 / 8)
    policy = WindowPolicy(random_frames=False, max_stretch=0.5)
    rng = np.random.default_rng(5)
    longer = 0
    for _ in range(400):
        idx = draw_window(times, span, events, 12, policy, rng)
        assert len(idx) == 12 and np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < 44
        spread = idx[-1] - idx[0]
        longer += spread > sample_indices(24, 12)[-1] - sample_indices(24, 12)[0]
    assert 120 <= longer <= 280  # about half (the others are shifted, the clip's length)
    with pytest.raises(ValueError):
        WindowPolicy(max_stretch=1.5)
