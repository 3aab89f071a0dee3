"""Alert events from window scores: per standing query, EMA smoothing and a hysteresis state machine. Pure logic
(no model, no video), shared by the monitor and the alert benchmark's replay of recorded scores.

Per query the score is smoothed, `s_k = smoothing * s_(k-1) + (1 - smoothing) * raw_k` (smoothing 0: none). An
event starts at the first window whose smoothed score is >= `threshold_on`, and ends at the first later window
whose smoothed score is < `threshold_off`, or when the stream ends, monitoring stops or the query is removed.
Two JSON-ready dicts per event, sharing an `id`:

  start: event "start", id, query, query_index, time (stream seconds when the alert is known: the triggering
         window's last frame), score (smoothed), raw_score, window_start, window_end (first and last frame time of
         the triggering window), threshold (the query's own `on`), calibrated_score, threshold_source, source,
         bundle_id [, wall_time for live sources] [, contrast_score with the contrast gate: the best opposite's raw
         score on the triggering window, null for a query without opposites] [, order_score with the gate's order
         check: the triggering window's order score, null for a query without one]
  end:   event "end", same keys, plus reason ("below_threshold" | "stream_end" | "stopped" | "removed"); here
         window_start is the first frame of the event's first window and window_end the last frame of its last
         window at or above `threshold_off`: the extent of the match. duration = window_end - window_start.
         peak_score (smoothed), peak_raw_score and peak_window_start/peak_window_end (the window with the highest
         raw score: the best localisation). time and score are those of the window that ended it (for a stream
         end, a stop or a removal: the last window scored).

The contrast gate (`update(..., contrast=..., order=...)`, `hbci.runtime.monitor`): a query whose raw score does
not beat its best opposite's on a window, or whose order score there is not above 0, cannot start an event there;
events already open go on by the thresholds alone.

Thresholds are per query: each query has its own on/off pair when the monitor calibrated it against the bundle's
background gallery (`hbci.runtime.gallery`; threshold_source "query"), else the tracker's global pair
(threshold_source "global"). calibrated_score is the smoothed score's position in the query's null distribution
(the share of gallery windows scoring below it, in [0, 1]; `calibrated_score`), null without a gallery. In an end
line, threshold is the query's `off`.

`query_index` is the query's number in its monitor: given in order from 0 as queries are added, never reused.
`id` counts events from 0 in one tracker (it continues across runs of one pipeline): unique per pipeline, so a
service that runs several prefixes it with the source (and a boot id) where it needs a globally stable id.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from hbci.runtime.errors import ConfigError

__all__ = ["EventTracker", "OpenEvent", "TimeSpan", "END_REASONS", "calibrated_score"]

END_REASONS = ("below_threshold", "stream_end", "stopped", "removed")


class TimeSpan(Protocol):
    """What the tracker needs of a window: the times of its first and last frame."""

    start: float
    end: float


@dataclass
class OpenEvent:
    """An open event of one query (updated in place while it lasts)."""

    id: int
    start: float
    end: float
    peak_score: float
    peak_raw: float
    peak_window: tuple[float, float]


def calibrated_score(null: np.ndarray | None, score: float) -> float | None:
    """The share of a query's sorted null scores below `score` (None without a null distribution)."""
    if null is None or len(null) == 0 or not math.isfinite(score):
        return None
    return round(float(np.searchsorted(null, score, side="left")) / len(null), 6)


@dataclass
class _Query:
    index: int
    text: str
    score: float = math.nan  # smoothed
    raw: float = math.nan
    rival: float = math.nan  # its best opposite's raw score on the last window (the contrast gate; NaN without)
    active: OpenEvent | None = None
    on: float | None = None  # its own thresholds (None: the tracker's)
    off: float | None = None
    null: np.ndarray | None = None  # its sorted null scores (the gallery), for calibrated_score


class EventTracker:
    """Turns each window's raw scores into events, for a changing set of standing queries.

    Not thread-safe by itself: the monitor serialises calls.
    """

    def __init__(self, *, threshold_on: float, threshold_off: float, smoothing: float = 0.0, bundle_id: str = "",
                 source: str = "", live: bool = False):
        if not (math.isfinite(smoothing) and 0 <= smoothing < 1):
            raise ConfigError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.threshold_on, self.threshold_off, self.smoothing = float(threshold_on), float(threshold_off), smoothing
        self.bundle_id, self.source, self.live = bundle_id, source, live
        self.events = 0  # events started
        self._queries: list[_Query] = []
        self._next_query = 0
        self._next_event = 0
        self._last: TimeSpan | None = None  # the last window scored

    # ------------------------------------------------------------------------------------------- queries
    def add(self, text: str, thresholds: tuple[float, float] | None = None, null: np.ndarray | None = None) -> int:
        """Add a query (it takes part from the next window on), with its own (on, off) thresholds and sorted null
        scores if calibrated; return its index."""
        on, off = (None, None) if thresholds is None else (float(thresholds[0]), float(thresholds[1]))
        if on is not None and not (math.isfinite(on) and math.isfinite(off) and off <= on):
            raise ConfigError(f"a query's thresholds must be finite with off <= on, got on {on!r}, off {off!r}")
        self._queries.append(_Query(self._next_query, text, on=on, off=off, null=null))
        self._next_query += 1
        return self._queries[-1].index

    def remove(self, index: int) -> dict | None:
        """Remove a query; the end event (reason "removed") of its open event, if it had one."""
        position = self.position(index)
        query = self._queries.pop(position)
        if query.active is None or self._last is None:
            return None
        return self._end(query, self._last, query.score, query.raw, "removed")

    def position(self, index: int) -> int:
        """Where query `index` is in `texts` (and in the score rows); KeyError if there is no such query."""
        for position, query in enumerate(self._queries):
            if query.index == index:
                return position
        raise KeyError(index)

    @property
    def indices(self) -> list[int]:
        return [q.index for q in self._queries]

    @property
    def texts(self) -> list[str]:
        return [q.text for q in self._queries]

    @property
    def scores(self) -> np.ndarray:
        return np.array([q.score for q in self._queries], float)

    @property
    def raw_scores(self) -> np.ndarray:
        return np.array([q.raw for q in self._queries], float)

    @property
    def contrast_scores(self) -> np.ndarray:
        """Each query's best opposite's raw score on the last window (-inf: no opposites; NaN: no contrast gate)."""
        return np.array([q.rival for q in self._queries], float)

    def thresholds(self, index: int) -> tuple[float, float]:
        """(on, off) of query `index`: its own, or the tracker's."""
        return self._pair(self._queries[self.position(index)])

    def _pair(self, query: _Query) -> tuple[float, float]:
        return (self.threshold_on, self.threshold_off) if query.on is None else (query.on, query.off)

    @property
    def active(self) -> list[OpenEvent | None]:
        return [q.active for q in self._queries]

    def open_events(self) -> list[dict]:
        """A snapshot of the open events: id, query, query_index, window_start / window_end (the extent so far),
        peak_score, peak_raw_score."""
        return [{"id": q.active.id, "query": q.text, "query_index": q.index, "window_start": q.active.start,
                 "window_end": q.active.end, "peak_score": q.active.peak_score, "peak_raw_score": q.active.peak_raw}
                for q in self._queries if q.active is not None]

    # ------------------------------------------------------------------------------------------- events
    def new_stream(self) -> None:
        """A new stream begins: smoothing starts over (the previous stream's events were ended by `finish`)."""
        for query in self._queries:
            query.score, query.raw, query.rival, query.active = math.nan, math.nan, math.nan, None
        self._last = None

    def update(self, window: TimeSpan, raw: np.ndarray, indices: list[int] | None = None,
               contrast: np.ndarray | None = None, order: Callable[[int], float | None] | None = None) -> list[dict]:
        """Score one window: raw holds one score per query, in `texts` order, or, with `indices`, for the queries
        with those indices (a query added since is left out of this window). contrast, in the same order: each
        query's best opposite's raw score on this window (the contrast gate: an event starts only where the raw
        score is above it; -inf for a query without opposites). order: query index -> its order score on this
        window, or None for a query without an order check; called only for a query that would start otherwise,
        which then starts only if the score is above 0. Return the events it causes."""
        self._last = window
        raw = np.asarray(raw)
        row = {index: i for i, index in enumerate(self.indices if indices is None else indices)}
        queries = [q for q in self._queries if q.index in row]
        rows = np.asarray([row[q.index] for q in queries], dtype=np.int64)
        raw = raw[rows]
        rivals = [None] * len(queries) if contrast is None else np.asarray(contrast, float)[rows].tolist()
        previous = np.array([q.score for q in queries], float)
        # Exactly this expression (raw stays float32, as the scorer gives it): smoothed scores must not move.
        smoothed = np.where(np.isnan(previous), raw, self.smoothing * previous + (1 - self.smoothing) * raw)
        events = []
        for query, score, r, rival in zip(queries, smoothed.tolist(), raw.tolist(), rivals):
            query.score, query.raw = score, r
            query.rival = math.nan if rival is None else rival
            active = query.active
            on, off = self._pair(query)
            if active is None:
                passes = score >= on and (rival is None or r > rival)
                ordered = order(query.index) if passes and order is not None else None  # asked only here: costly
                if passes and (ordered is None or ordered > 0):
                    query.active = OpenEvent(self._next_event, window.start, window.end, score, r,
                                           (window.start, window.end))
                    self._next_event += 1
                    self.events += 1
                    events.append(self._base("start", query, window, score, r))
                    if rival is not None:
                        events[-1]["contrast_score"] = round(rival, 6) if math.isfinite(rival) else None
                    if order is not None:
                        events[-1]["order_score"] = None if ordered is None else round(ordered, 6)
            elif score >= off:
                active.end = window.end
                active.peak_score = max(active.peak_score, score)
                if r > active.peak_raw:
                    active.peak_raw, active.peak_window = r, (window.start, window.end)
            else:
                events.append(self._end(query, window, score, r, "below_threshold"))
        return events

    def finish(self, reason: str) -> list[dict]:
        """End every open event (reason "stream_end" or "stopped") at the last window scored."""
        if self._last is None:
            return []
        return [self._end(q, self._last, q.score, q.raw, reason) for q in self._queries if q.active is not None]

    def _base(self, kind: str, query: _Query, window: TimeSpan, score: float, raw: float) -> dict:
        event = {"event": kind, "id": query.active.id, "query": query.text, "query_index": query.index,
                 "time": round(window.end, 6), "score": round(score, 6), "raw_score": round(raw, 6),
                 "window_start": round(window.start, 6), "window_end": round(window.end, 6),
                 "threshold": self._pair(query)[0 if kind == "start" else 1],
                 "calibrated_score": calibrated_score(query.null, score),
                 "threshold_source": "global" if query.on is None else "query",
                 "source": self.source, "bundle_id": self.bundle_id}
        if self.live:
            event["wall_time"] = round(time.time(), 3)
        return event

    def _end(self, query: _Query, window: TimeSpan, score: float, raw: float, reason: str) -> dict:
        active = query.active
        event = self._base("end", query, window, float(score), float(raw))
        event.update(window_start=round(active.start, 6), window_end=round(active.end, 6),
                     duration=round(active.end - active.start, 6), reason=reason,
                     peak_score=round(active.peak_score, 6), peak_raw_score=round(active.peak_raw, 6),
                     peak_window_start=round(active.peak_window[0], 6),
                     peak_window_end=round(active.peak_window[1], 6))
        query.active = None
        return event
