"""Training windows: where a window may start, which frames it takes, and when it still matches its caption.

Deployment never sees clips cut exactly: the monitor and the archive score windows laid at fixed strides over
continuous video, so they start early or late, hold part of a neighbouring clip and cross cuts. Training draws its
windows the same way, from the frames around each clip (`hbci.data.FramePool`):

* **Offset.** A window keeps its clip's length in frames and starts up to `max_shift` of that length early or late
  (uniformly, in whole frames, never past the ends of what the video holds), so it may hold part of the
  neighbouring content: the clip's own scene at rest, filler, or another clip after a cut.
* **Overlap rule.** A shifted window still matches its caption when at least `min_event_share` of what the
  caption describes (the item's event span) lies inside it and at least `min_clip_share` of the window lies on
  the clip. A draw that breaks the rule is drawn again (at most `tries` times, then the window is aligned).
  With the defaults (shift up to 1/3, both shares 0.6) a window 1 s off a 3 s clip whose events fill it still
  matches (2/3 of each), and a shift that leaves most of a short event outside is never drawn. With
  `each_event`, a caption of two ordered events (the item knows the time between them, `VideoItem.order_cut`)
  needs `min_event_share` of *each* event inside: "X, then Y" is not what a window shows when it holds X and
  the first fifth of Y, although that is 60 % of the two together.
* **Partial negatives** (`partial_windows`, with `model.partial_window_negatives`). The windows that fool a
  two-event caption in a stream hold one event whole and only the edge of the other (a window 1 s late on two
  1.5 s events). Such a window is spliced from a batch's frames, no new backbone pass: the window's own frames
  from the last few of the first event on, then the next window's first frames (as a window that starts late
  and runs into the next clip), or the other way round (the end of the next window, then the first event and
  the first few frames of the second). It keeps at most two thirds of `min_event_share` of the cut event, so it
  breaks the overlap rule with room to spare, and the caption must score its own window above it.
* **Stretch** (`max_stretch`, off by default). A monitor's window has one length and events have many: a
  stream's 2 s event fills two thirds of a 3 s window. With a stretch, half the windows are instead longer than
  their clip, by up to `max_stretch` of its length, and hold all of it with what lies around it (as far as the
  frames kept around the clip go: the pool keeps a little more than `max_shift` on each side), so the caption
  learns to match events that fill only part of the window. The overlap rule still applies (`min_clip_share`
  bounds how long).
* **Frames.** The window's frames are cut into T equal segments and one random frame is taken from each (TSN
  style), instead of the segment centres the runtime takes; fewer than T frames are all taken (and masked).

Evaluation stays deterministic: aligned windows, segment centres (`hbci.runtime.video.sample_indices`), exactly
what the runtime does. Pure functions on arrays; tested against naive references.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hbci.framecache import span_indices
from hbci.runtime.video import sample_indices

__all__ = ["WindowPolicy", "ALIGNED", "random_segment_indices", "overlap_shares", "matches_caption",
           "draw_window", "partial_window", "partial_windows"]


@dataclass(frozen=True)
class WindowPolicy:
    max_shift: float = 1 / 3  # largest offset, as a share of the clip's length
    min_event_share: float = 0.6  # share of the described events that must lie inside the window
    min_clip_share: float = 0.6  # share of the window that must lie on the clip
    random_frames: bool = True  # a random frame per segment (False: the segment centres, as the runtime)
    each_event: bool = False  # two ordered events: the event share is each event's (the smaller), not the union's
    tries: int = 10
    max_stretch: float = 0.0  # half the windows up to this share of the clip longer, holding all of it (0: off)

    def __post_init__(self):
        if not (0 <= self.max_shift < 1 and 0 < self.min_event_share <= 1 and 0 < self.min_clip_share <= 1
                and self.tries >= 1 and 0 <= self.max_stretch <= 1):
            raise ValueError("max_shift must be in [0, 1), the shares in (0, 1], tries >= 1, max_stretch in [0, 1]")


ALIGNED = WindowPolicy(max_shift=0.0, random_frames=False)  # what evaluation and the runtime do


def random_segment_indices(num_available: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """One random index inside each of T equal segments of range(n) (segment i = [floor(i n / T),
    floor((i + 1) n / T))); all n indices when n < T. Distinct and increasing, like `sample_indices`."""
    if num_available < num_frames:
        return sample_indices(num_available, num_frames)
    bounds = (np.arange(num_frames + 1, dtype=np.int64) * num_available) // num_frames
    return bounds[:-1] + (rng.random(num_frames) * (bounds[1:] - bounds[:-1])).astype(np.int64)


def overlap_shares(window: tuple[int, int], clip: tuple[int, int], events: tuple[int, int],
                   cut: int | None = None) -> tuple[float, float]:
    """(share of the events inside the window, share of the window on the clip), half-open frame ranges. With
    `cut` (the first frame of the second of two events), the event share is the smaller of the two events'."""
    def inter(a, b):
        return max(0, min(a[1], b[1]) - max(a[0], b[0]))

    parts = [events] if cut is None else [(events[0], cut), (cut, events[1])]
    event_share = min(inter(window, part) / max(part[1] - part[0], 1) for part in parts)
    return event_share, inter(window, clip) / max(window[1] - window[0], 1)


def matches_caption(window: tuple[int, int], clip: tuple[int, int], events: tuple[int, int],
                    policy: WindowPolicy, cut: int | None = None) -> bool:
    """The overlap rule (module docstring); `cut` counts only with `policy.each_event`."""
    event_share, clip_share = overlap_shares(window, clip, events, cut if policy.each_event else None)
    return event_share >= policy.min_event_share - 1e-9 and clip_share >= policy.min_clip_share - 1e-9


def _frame_range(times: np.ndarray, start: float | None, end: float | None) -> tuple[int, int]:
    inside = span_indices(times, start, end)
    return int(inside[0]), int(inside[-1]) + 1


def draw_window(times: np.ndarray, span: tuple[float | None, float | None],
                event_span: tuple[float | None, float | None], num_frames: int, policy: WindowPolicy,
                rng: np.random.Generator, order_cut: float | None = None) -> np.ndarray:
    """Indices (into `times`, increasing, at most T) of the frames of one training window over the clip `span`
    ([start, end] seconds, None open) whose captions describe `event_span` (None: the span); `order_cut`: the
    time the second of two ordered events begins (used with `policy.each_event`)."""
    clip = _frame_range(times, *span)
    events = _frame_range(times, event_span[0] if event_span[0] is not None else span[0],
                          event_span[1] if event_span[1] is not None else span[1])
    cut = None
    if policy.each_event and order_cut is not None:
        cut = int(np.searchsorted(times, order_cut - 1e-6))
        cut = cut if events[0] < cut < events[1] else None
    window = None
    if policy.max_stretch > 0 and rng.random() < 0.5:
        window = _stretched_window(clip, len(times), policy, rng)
    start, stop = window or _shifted_window(clip, events, cut, len(times), policy, rng)
    pick = (random_segment_indices(stop - start, num_frames, rng) if policy.random_frames
            else sample_indices(stop - start, num_frames))
    return start + pick


def _shifted_window(clip: tuple[int, int], events: tuple[int, int], cut: int | None, available: int,
                    policy: WindowPolicy, rng: np.random.Generator) -> tuple[int, int]:
    """The clip's length, moved up to `max_shift` of it early or late (never out of the video) by a draw that
    keeps the overlap rule; aligned when `tries` draws all break it."""
    length = clip[1] - clip[0]
    most = int(np.floor(policy.max_shift * length + 1e-9))
    lo, hi = max(-most, -clip[0]), min(most, available - clip[1])
    shift = 0
    if hi > lo:
        for _ in range(policy.tries):
            candidate = int(rng.integers(lo, hi + 1))
            if matches_caption((clip[0] + candidate, clip[1] + candidate), clip, events, policy, cut):
                shift = candidate
                break
    return clip[0] + shift, clip[1] + shift


def _stretched_window(clip: tuple[int, int], available: int, policy: WindowPolicy,
                      rng: np.random.Generator) -> tuple[int, int] | None:
    """A window holding the whole clip and up to `max_stretch` of its length more (as far as the video goes, and
    no more than `min_clip_share` allows), placed at random around it; None when there is no room."""
    length = clip[1] - clip[0]
    extra = int(np.floor(rng.uniform(0, policy.max_stretch) * length + 1e-9))
    extra = min(extra, available - length, int(np.floor(length / policy.min_clip_share + 1e-9)) - length)
    if extra < 1:
        return None
    before = int(rng.integers(max(0, extra - (available - clip[1])), min(extra, clip[0]) + 1))
    return clip[0] - before, clip[1] + extra - before


def partial_window(row: int, donor: int, num_frames: int, slots: tuple[int, int, int], share: float,
                   late: bool) -> np.ndarray:
    """Flat frame indices (row * T + frame) [T] of a window that holds one of row's two events whole and `share`
    of the other. slots: (frames before the first event, frames before the second (the cut), frames before the
    events' end) of row's window. late: the first event's last frames, everything from the cut on, then donor's
    first frames; else donor's last frames, row's frames up to the cut, then the second event's first frames."""
    first, cut, end = slots
    t = num_frames
    if late:
        start = cut - int(np.floor(share * (cut - first) + 1e-9))
        own, other = np.arange(start, t), np.arange(0, start)
        return np.concatenate([row * t + own, donor * t + other])
    stop = cut + int(np.floor(share * (end - cut) + 1e-9))
    return np.concatenate([donor * t + np.arange(stop, t), row * t + np.arange(0, stop)])


def partial_windows(masks: np.ndarray, cut: np.ndarray, slots: np.ndarray, max_share: float,
                    rngs: list[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
    """A partial negative (`partial_window`) for every full window [B, T] that shows two events (cut > 0): the
    share kept uniform in [0, max_share), the side at random, the donor the next full window (cyclically).
    Returns (flat indices [B, T], valid [B]); invalid rows keep their own frames."""
    b, t = masks.shape
    order = np.arange(b * t, dtype=np.int64).reshape(b, t)
    valid = np.zeros(b, bool)
    is_full = masks.all(1)
    full = np.flatnonzero(is_full)
    if len(full) < 2:  # no other window to splice in
        return order, valid
    for row in np.flatnonzero((cut > 0) & is_full):
        donor = int(full[(np.searchsorted(full, row) + 1) % len(full)])
        share, late = rngs[row].random() * max_share, bool(rngs[row].random() < 0.5)
        order[row] = partial_window(int(row), donor, t, tuple(int(x) for x in slots[row]), share, late)
        valid[row] = True
    return order, valid
