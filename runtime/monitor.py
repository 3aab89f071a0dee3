"""Live monitoring: sliding windows over a video source, standing text queries, smoothed scores, hysteresis
thresholds, and alert events.

Windows are cut by `hbci.runtime.windows` (its docstring holds the rules: spans, completion, end of stream, short
streams, sampling). Frames are resized and centre-cropped once, as they arrive; the windows hand the crops to
`Retriever.encode_video`, which uses S x S frames as they are.

Live sources never queue work: when newer frames are already waiting, completed windows are skipped and only the
newest one is encoded (counted in `stats.windows_skipped`). A file without realtime pacing encodes every window,
in batches.

Scores and events. The queries are encoded once, when given or added; with a bundle that carries a background
gallery each query then gets its own thresholds from its scores on it (`hbci.runtime.gallery`). Each window is encoded once and scored
against all queries (`Retriever.score`); `hbci.runtime.events` smooths the scores and turns them into start / end
event dicts (its docstring lists the keys).

The contrast gate (contrast=True) asks, before a query may start an event, whether the window shows the query or
its look-alike:
  * Opposites: each query's opposites (`hbci.runtime.opposites`: direction words flipped, colours exchanged) are
    encoded beside it and scored on every window; the query must outscore all of them.
  * Order check: a query that tells two events in order ("X, then Y"; `hbci.caption_order.event_clauses`) is
    split into its two events, encoded as two captions. On a window where the query would start, the window's
    first and second halves (`hbci.runtime.windows.window_halves`) are encoded and both events scored on both:
    the order score is (X - Y on the first half) - (X - Y on the second half), and the start needs it above 0.
    Whole-window scores tell "X, then Y" from "Y, then X" less often than halves tell X from Y, so the
    order-swapped caption is not an opposite. The halves are encoded only on such windows, not on every window.

Queries can be added and removed while `run` is under way, from any thread; removing a query with an open event
ends that event with reason "removed".
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from hbci.caption_order import event_clauses
from hbci.runtime.bundle import resolve_thresholds
from hbci.runtime.errors import ConfigError, QueryError
from hbci.runtime.events import EventTracker
from hbci.runtime.gallery import DEFAULT_FALSE_ALARM_RATE, load_gallery, query_thresholds
from hbci.runtime.opposites import opposite_captions
from hbci.runtime.retriever import Pack, concat_packs
from hbci.runtime.video import resize_center_crop
from hbci.runtime.windows import WindowCutter, WindowSpan, window_frames, window_halves

__all__ = ["Window", "Monitor", "MonitorStats", "stream_windows", "order_scores", "DEFAULT_WINDOW", "DEFAULT_STRIDE",
           "DEFAULT_SMOOTHING"]

DEFAULT_WINDOW = 3.0  # seconds: the synthetic clips the demo model learned from are 24 frames at 8 fps
DEFAULT_STRIDE = 0.25  # chosen on tuning streams (bench_alerts --seed 0): recall 0.40 -> 0.58 against 0.5 s
DEFAULT_SMOOTHING = 0.0


@dataclass(frozen=True)
class Window:
    """A window's sampled frames, ready for `Retriever.encode_video`."""

    index: int
    start: float  # stream time of the first frame inside the span
    end: float  # stream time of the last frame inside the span
    frames: np.ndarray  # uint8 [T, S, S, 3]: resized and centre-cropped, zero where masked
    mask: np.ndarray  # bool [T]
    count: int  # source frames inside the span (T are sampled from these)
    arrival: float  # time.monotonic() of the frame that completed the window


@dataclass
class MonitorStats:
    frames: int = 0
    windows: int = 0  # windows encoded and scored
    windows_skipped: int = 0  # live only: windows passed over to stay current
    events: int = 0
    order_checks: int = 0  # windows whose halves were encoded for the contrast gate's order check
    encode_seconds: float = 0.0  # encode_video + score (the order checks' too), summed
    started: float = field(default_factory=time.monotonic)
    window_latency: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))
    event_latency: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))

    def summary(self) -> dict:
        """Throughput and latency figures (seconds; latencies from the arrival of the frame that completed a
        window to its scores, and to an event's emission)."""
        elapsed = max(time.monotonic() - self.started, 1e-9)

        def quantiles(values) -> dict:
            if not values:
                return {}
            q = np.quantile(np.asarray(values), [0.5, 0.95, 1.0])
            return {"p50": float(q[0]), "p95": float(q[1]), "max": float(q[2])}

        return {"frames": self.frames, "windows": self.windows, "windows_skipped": self.windows_skipped,
                "events": self.events, "order_checks": self.order_checks, "seconds": elapsed,
                "frames_per_s": self.frames / elapsed,
                "windows_per_s": self.windows / elapsed,
                "encode_ms_per_window": 1000 * self.encode_seconds / max(self.windows, 1),
                "window_latency_s": quantiles(self.window_latency), "event_latency_s": quantiles(self.event_latency)}


class _Crops:
    """The cropped frames that windows not yet released may still use, by frame number."""

    def __init__(self):
        self._items: collections.deque = collections.deque()  # (frame number, crop)

    def add(self, number: int, crop: np.ndarray) -> None:
        self._items.append((number, crop))

    def forget_before(self, number: int) -> None:
        while self._items and self._items[0][0] < number:
            self._items.popleft()

    def __call__(self, number: int) -> np.ndarray:
        return self._items[number - self._items[0][0]][1]


def stream_windows(source, *, window: float, stride: float, num_frames: int, image_size: int, batch: int = 8,
                   stop: threading.Event | None = None, on_frame: Callable | None = None,
                   stats: MonitorStats | None = None) -> Iterator[list[Window]]:
    """The windows of a source with their frames, as the monitor encodes them: lists of completed windows (one list
    per encoding batch of up to `batch`), in stream order. Frames are resized and centre-cropped to image_size once,
    as they arrive, and kept only while a window may still need them. A live (or realtime) source gives only the
    newest completed window whenever no newer frame is waiting (the others are counted in
    `stats.windows_skipped`). on_frame(frame) is called for every frame; `stop` ends the stream early (the
    windows its frames completed still come out)."""
    stop = stop or threading.Event()
    stats = stats if stats is not None else MonitorStats()
    live = bool(getattr(source, "live", False) or getattr(source, "realtime", False))
    cutter = WindowCutter(window, stride, num_frames)
    crops = _Crops()
    ready: list[tuple[int, float]] = []  # (window index, arrival of the frame that completed it)
    last_arrival = 0.0

    def cut(k: int, arrival: float) -> Window:
        span: WindowSpan = cutter.span(k)
        frames = window_frames(span, crops, (image_size, image_size, 3))
        return Window(k, span.start, span.end, frames, span.mask, span.count, arrival)

    def emit(chosen: list[tuple[int, float]]) -> list[Window]:
        windows = [cut(k, a) for k, a in chosen]
        cutter.release()
        crops.forget_before(cutter.first_kept)
        return windows

    for frame in source:
        stats.frames += 1
        if on_frame is not None:
            on_frame(frame)
        crops.forget_before(cutter.first_kept)
        crops.add(cutter.frames_seen, resize_center_crop(frame.image[None], image_size)[0])
        last_arrival = frame.arrival
        ready += [(k, frame.arrival) for k in cutter.add(frame.time)]
        if ready and live:
            if not source.pending():  # with newer frames waiting, catch up before encoding anything
                stats.windows_skipped += len(ready) - 1
                yield emit(ready[-1:])
                ready = []
        elif len(ready) >= batch:
            yield emit(ready)
            ready = []
        if stop.is_set():
            break
    ready += [(k, last_arrival) for k in cutter.finish()]
    if live and len(ready) > 1:
        stats.windows_skipped += len(ready) - 1
        ready = ready[-1:]
    if ready:
        yield emit(ready)


class _QueryTexts:
    """Encoded captions that belong to standing queries (their opposites, or their two events): one pack, and per row
    the index of the query it belongs to. A removed query's rows are dropped; nothing is encoded again."""

    def __init__(self):
        self.pack: Pack | None = None
        self.owners = np.zeros(0, np.int64)

    def add(self, pack: Pack | None, owners: np.ndarray) -> None:
        if pack is not None:
            self.pack = pack if self.pack is None else concat_packs([self.pack, pack])
            self.owners = np.concatenate([self.owners, owners])

    def drop(self, index: int) -> None:
        kept = self.owners != index
        if not kept.all():
            self.pack = {k: v[kept] for k, v in self.pack.items()} if kept.any() else None
            self.owners = self.owners[kept]


def order_scores(retriever, events: Pack, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[pairs, windows]: the order score of each pair of events (rows 2k: the earlier event, 2k + 1: the later, as
    encoded captions) on each window (frames [W, T, S, S, 3], mask [W, T]): (earlier - later on the window's first
    half) - (earlier - later on its second half), the halves by `window_halves`. Above 0: the halves show the
    events in that order. NaN on a window with a half that holds no frame. One encoder call for all halves."""
    halves, halves_mask = (np.concatenate(parts) for parts in zip(*map(window_halves, frames, mask)))
    usable = halves_mask.any(axis=1).reshape(-1, 2).all(axis=1)  # [W]
    pairs = len(next(iter(events.values()))) // 2  # a pack's arrays have one row per caption
    out = np.full((pairs, len(frames)), np.nan)
    if usable.any():
        keep = np.repeat(usable, 2)
        s = retriever.score(events, retriever.encode_video(halves[keep], halves_mask[keep]))  # [2P, 2W']
        earlier_minus_later = s[0::2] - s[1::2]  # [P, 2W']: first half, second half, next window's first, ...
        out[:, usable] = earlier_minus_later[:, 0::2] - earlier_minus_later[:, 1::2]
    return out


class Monitor:
    """Watch a source for standing text queries. See the module docstring for windows, scores and events.

        monitor = Monitor(Retriever.load(bundle), ["a red circle moves left"])
        for event in monitor.run(open_source("file", "video.mp4")):
            print(event)

    Thresholds: given values win, for every query; without threshold_on, each query gets its own pair from its
    null distribution over the bundle's background gallery at `false_alarm_rate` (`hbci.runtime.gallery`), and
    without a gallery (or with false_alarm_rate=None) the bundle's calibrated pair; with threshold_on alone, off
    keeps the calibrated gap below it (`hbci.runtime.bundle.resolve_thresholds`). A monitor starts with at least
    one query unless `require_queries=False` (a service adds them later). contrast=True turns on the contrast gate
    (module docstring): fewer look-alike alerts for some recall, and each query's opposites scored beside it.
    """

    def __init__(self, retriever, queries: Sequence[str], *, window: float = DEFAULT_WINDOW,
                 stride: float = DEFAULT_STRIDE, smoothing: float = DEFAULT_SMOOTHING,
                 threshold_on: float | None = None, threshold_off: float | None = None, batch: int = 8,
                 require_queries: bool = True, false_alarm_rate: float | None = DEFAULT_FALSE_ALARM_RATE,
                 contrast: bool = False):
        if isinstance(queries, str):
            queries = [queries]
        queries = list(queries)
        if not queries and require_queries:
            raise QueryError("give at least one query")
        for name, value in (("window", window), ("stride", stride)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if not (math.isfinite(smoothing) and 0 <= smoothing < 1):
            raise ConfigError(f"smoothing must be in [0, 1), got {smoothing!r}")
        if batch < 1:
            raise ConfigError(f"batch must be >= 1, got {batch}")
        if false_alarm_rate is not None and not (math.isfinite(false_alarm_rate) and 0 < false_alarm_rate < 1):
            raise ConfigError(f"false_alarm_rate must be in (0, 1) (or None: global thresholds), got "
                              f"{false_alarm_rate!r}")
        per_query = threshold_on is None and false_alarm_rate is not None
        threshold_on, threshold_off = resolve_thresholds(retriever.bundle.thresholds, threshold_on, threshold_off,
                                                         retriever.bundle_id)
        self.false_alarm_rate = false_alarm_rate
        self._gallery = load_gallery(retriever.bundle) if per_query else None  # None: global thresholds
        self.retriever = retriever
        self.window, self.stride, self.smoothing, self.batch = float(window), float(stride), float(smoothing), batch
        self.num_frames, self.image_size = retriever.bundle.num_frames, retriever.bundle.image_size
        self.stats = MonitorStats()
        self.tracker = EventTracker(threshold_on=threshold_on, threshold_off=threshold_off, smoothing=smoothing,
                                    bundle_id=retriever.bundle_id)
        self._lock = threading.RLock()  # queries change from other threads while run() scores
        self._outbox: list[dict] = []  # events of removed queries, delivered by run() in order
        self.contrast = bool(contrast)
        self._opposites = _QueryTexts()  # contrast gate: every standing query's opposites
        self._events = _QueryTexts()  # order check: each ordered query's two events, rows 2k (earlier), 2k + 1
        self.text = retriever.encode_text(queries) if queries else None  # standing queries: encoded once
        opposites, owners = self._encode_opposites(queries)
        events, tellers = self._encode_events(queries)
        for query, thresholds in zip(queries, self._calibrate(self.text) if queries else []):
            self._add(query, thresholds)
        indices = np.asarray(self.tracker.indices, np.int64)
        self._opposites.add(opposites, indices[owners])
        self._events.add(events, indices[tellers])

    @property
    def bundle_id(self) -> str:
        return self.retriever.bundle_id

    @property
    def threshold_on(self) -> float:
        return self.tracker.threshold_on

    @property
    def threshold_off(self) -> float:
        return self.tracker.threshold_off

    @property
    def queries(self) -> list[str]:
        return self.tracker.texts

    @property
    def per_query_thresholds(self) -> bool:
        """True when queries get their own thresholds from the bundle's background gallery."""
        return self._gallery is not None

    def thresholds_of(self, index: int) -> tuple[float, float]:
        """(on, off) of standing query `index` (its own, or the global pair). KeyError for an unknown index."""
        with self._lock:
            return self.tracker.thresholds(index)

    @property
    def scores(self) -> np.ndarray:
        """The latest smoothed score per query (NaN before the first window), in `queries` order."""
        return self.tracker.scores

    @property
    def raw_scores(self) -> np.ndarray:
        return self.tracker.raw_scores

    @property
    def contrast_scores(self) -> np.ndarray:
        """Per query, its best opposite's raw score on the latest window (-inf: it has none; NaN without the
        contrast gate)."""
        return self.tracker.contrast_scores

    @property
    def active(self) -> list:
        """Per query, its open event (or None)."""
        return self.tracker.active

    # ------------------------------------------------------------------------------------------- queries
    def add_query(self, text: str) -> int:
        """Add a standing query (encoded now, once); it is scored from the next window on. Returns its index
        (the events' `query_index`). Safe to call from any thread while `run` is under way."""
        pack = self.retriever.encode_text([text])  # QueryError for an empty or oversized query
        thresholds = self._calibrate(pack)[0]  # scored against the gallery outside the lock
        opposites, owners = self._encode_opposites([text])
        events, tellers = self._encode_events([text])
        with self._lock:
            self.text = pack if self.text is None else concat_packs([self.text, pack])
            index = self._add(text, thresholds)
            self._opposites.add(opposites, np.full(len(owners), index, np.int64))
            self._events.add(events, np.full(len(tellers), index, np.int64))
            return index

    def _calibrate(self, pack: dict) -> list:
        """Each query's thresholds (`hbci.runtime.gallery.query_thresholds`; the global pair without a gallery)."""
        return query_thresholds(self.retriever, pack, self._gallery,
                                (self.tracker.threshold_on, self.tracker.threshold_off),
                                self.false_alarm_rate or DEFAULT_FALSE_ALARM_RATE)

    def _add(self, text: str, thresholds) -> int:
        return self.tracker.add(text, thresholds.own, thresholds.null)

    def _encode_opposites(self, queries: list[str]) -> tuple[Pack | None, np.ndarray]:
        """The opposites of these queries, encoded in one call, and per row the position of its query in
        `queries` (nothing without the gate). An opposite the encoder refuses (a flipped word that makes a query at
        the length limit too long) is left out."""
        return self._encode_each([(i, o) for i, q in enumerate(queries)
                                  for o in (opposite_captions(q) if self.contrast else [])])

    def _encode_events(self, queries: list[str]) -> tuple[Pack | None, np.ndarray]:
        """The two events of each ordered query (earlier, later: rows 2k and 2k + 1) and per row the position of its
        query in `queries` (nothing without the gate, or with windows of one frame, which have no halves; a pair
        with an event the encoder refuses is left out)."""
        checked = self.contrast and self.num_frames >= 2
        split = [(i, event_clauses(q)) for i, q in enumerate(queries)] if checked else []
        pack, owners = self._encode_each([(i, e) for i, pair in split if pair is not None for e in pair])
        counts = collections.Counter(owners.tolist())
        both = np.array([counts[o] == 2 for o in owners.tolist()], bool)  # rows stay in order: earlier, later
        if pack is None or not both.any():
            return None, np.zeros(0, np.int64)
        return {key: v[both] for key, v in pack.items()}, owners[both]

    def _encode_each(self, pairs: list[tuple[int, str]]) -> tuple[Pack | None, np.ndarray]:
        """Encode (owner, text) pairs in one call: the pack and the owners (a text the encoder refuses is left
        out, with its owner)."""
        owners = np.array([i for i, _ in pairs], np.int64)
        if not pairs:
            return None, owners
        try:
            return self.retriever.encode_text([o for _, o in pairs]), owners
        except QueryError:
            kept = []
            for i, text in pairs:
                try:
                    kept.append((i, self.retriever.encode_text([text])))
                except QueryError:
                    pass
            if not kept:
                return None, np.zeros(0, np.int64)
            return concat_packs([pack for _, pack in kept]), np.array([i for i, _ in kept], np.int64)

    def order_scores(self, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Per standing query (in `queries` order), the order score of one window (frames [T, S, S, 3], mask [T]):
        (earlier - later event on the first half) - (earlier - later on the second half); NaN for a query without
        an order check, and for every query where a half holds no frame. One encoder call (the two halves)."""
        with self._lock:
            out = np.full(len(self.tracker.indices), np.nan)
            if self._events.pack is None:
                return out
            found = order_scores(self.retriever, self._events.pack, frames[None], mask[None])[:, 0]
            position = {index: i for i, index in enumerate(self.tracker.indices)}
            out[[position[index] for index in self._events.owners[0::2].tolist()]] = found
            return out

    def _order_check(self, window: Window) -> Callable[[int], float | None] | None:
        """For the tracker: query index -> this window's order score (None: no check for that query). The halves
        are encoded on the first call, so only on windows where an ordered query would start (None without the
        gate or without ordered queries)."""
        if self._events.pack is None:
            return None
        found: list[np.ndarray] = []

        def score(index: int) -> float | None:
            if index not in self._events.owners:
                return None
            if not found:
                begin = time.perf_counter()
                found.append(self.order_scores(window.frames, window.mask))
                self.stats.order_checks += 1
                self.stats.encode_seconds += time.perf_counter() - begin
            value = found[0][self.tracker.position(index)]
            return None if math.isnan(value) else float(value)

        return score

    def _contrast_scores(self, video: Pack, scored: list[int], windows: int) -> np.ndarray | None:
        """[queries, windows], queries as in `scored`: each one's best opposite's score (-inf without opposites);
        None without the gate (call with the lock held)."""
        if not self.contrast:
            return None
        best = np.full((len(scored), windows), -np.inf, np.float32)
        if self._opposites.pack is not None:
            row = {index: i for i, index in enumerate(scored)}
            owners = np.array([row[index] for index in self._opposites.owners.tolist()], np.int64)
            np.maximum.at(best, owners, self.retriever.score(self._opposites.pack, video))
        return best

    def remove_query(self, index: int) -> None:
        """Remove a standing query by index; an open event of it ends with reason "removed" (yielded by `run`
        with the next window, or when it ends). KeyError for an unknown index."""
        with self._lock:
            position = self.tracker.position(index)
            event = self.tracker.remove(index)
            self.text = {k: np.delete(v, position, axis=0) for k, v in self.text.items()}
            self._opposites.drop(index)
            self._events.drop(index)
            if event is not None:
                self._outbox.append(event)

    def open_events(self) -> list[dict]:
        """A snapshot of the open events (`EventTracker.open_events`), safe from any thread."""
        with self._lock:
            return self.tracker.open_events()

    def query_list(self) -> list[tuple[int, str]]:
        """(index, text) of every standing query."""
        with self._lock:
            return list(zip(self.tracker.indices, self.tracker.texts))

    # ------------------------------------------------------------------------------------------- windows
    def windows(self, source, *, stop: threading.Event | None = None,
                on_frame: Callable | None = None) -> Iterator[list[Window]]:
        """Yield lists of completed windows (one list per encoding batch), in stream order (`stream_windows`)."""
        return stream_windows(source, window=self.window, stride=self.stride, num_frames=self.num_frames,
                              image_size=self.image_size, batch=self.batch, stop=stop, on_frame=on_frame,
                              stats=self.stats)

    # ------------------------------------------------------------------------------------------- events
    def run(self, source, *, stop: threading.Event | None = None, on_frame: Callable | None = None,
            on_window: Callable | None = None) -> Iterator[dict]:
        """Monitor `source` until it ends or `stop` is set; yield event dicts (see `hbci.runtime.events`).

        on_frame(frame) is called for every frame as it arrives; on_window(window) after each window is scored
        and its events were yielded (`scores` / `raw_scores` then hold its values).
        """
        self.stats = MonitorStats()  # figures of this run (a pipeline may run its monitor again on a new stream)
        with self._lock:
            self.tracker.new_stream()
        self.tracker.source = getattr(source, "name", str(source))
        self.tracker.live = bool(getattr(source, "live", False))
        for batch in self.windows(source, stop=stop, on_frame=on_frame):
            begin = time.perf_counter()
            video = self.retriever.encode_video(np.stack([w.frames for w in batch]), np.stack([w.mask for w in batch]))
            with self._lock:
                scored = self.tracker.indices  # queries added or removed meanwhile are matched by index
                raw = self.retriever.score(self.text, video) if scored else np.zeros((0, len(batch)), np.float32)
                rivals = self._contrast_scores(video, scored, len(batch))
            self.stats.encode_seconds += time.perf_counter() - begin
            done = time.monotonic()
            for j, window in enumerate(batch):
                self.stats.windows += 1
                self.stats.window_latency.append(done - window.arrival)
                with self._lock:
                    events = self._take_outbox() + self.tracker.update(
                        window, raw[:, j], scored, None if rivals is None else rivals[:, j], self._order_check(window))
                for event in events:
                    if event["event"] == "start":
                        self.stats.events += 1
                        self.stats.event_latency.append(time.monotonic() - window.arrival)
                    yield event
                if on_window is not None:
                    on_window(window)
        reason = "stopped" if stop is not None and stop.is_set() else "stream_end"
        with self._lock:
            events = self._take_outbox() + self.tracker.finish(reason)
        yield from events

    def _take_outbox(self) -> list[dict]:
        events, self._outbox = self._outbox, []
        return events
