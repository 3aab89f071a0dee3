"""Tests for runtime/events.py: hysteresis and smoothing on plain score rows, queries added and removed between
windows (stable indices, a removed query's open event ends with reason "removed"), rows matched by index."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hbci.runtime.errors import ConfigError
from hbci.runtime.events import EventTracker


def window(k: int) -> SimpleNamespace:
    return SimpleNamespace(start=float(k), end=k + 0.875)


def test_hysteresis_on_score_rows():
    tracker = EventTracker(threshold_on=0.5, threshold_off=0.3, bundle_id="b", source="s")
    tracker.add("q")
    events = []
    for k, raw in enumerate([0.0, 0.6, 0.5, 0.35, 0.2]):
        events += tracker.update(window(k), np.array([raw], np.float32))
    assert [(e["event"], e["time"]) for e in events] == [("start", 1.875), ("end", 4.875)]
    assert (events[1]["window_start"], events[1]["window_end"], events[1]["reason"]) == (1.0, 3.875, "below_threshold")
    assert events[0]["query_index"] == 0 and events[0]["source"] == "s" and events[0]["bundle_id"] == "b"


def test_removing_a_query_ends_its_event_and_indices_stay():
    tracker = EventTracker(threshold_on=0.5, threshold_off=0.5)
    a, b = tracker.add("a"), tracker.add("b")
    started = tracker.update(window(0), np.array([0.9, 0.9], np.float32))
    assert [(e["query"], e["query_index"]) for e in started] == [("a", a), ("b", b)]
    end = tracker.remove(a)
    assert end["event"] == "end" and end["reason"] == "removed" and end["id"] == started[0]["id"]
    assert tracker.remove(b)["reason"] == "removed"
    c = tracker.add("c")
    assert c == 2 and tracker.texts == ["c"] and tracker.remove(c) is None  # never started: no event
    with pytest.raises(KeyError):
        tracker.remove(a)


def test_rows_are_matched_by_index_when_queries_change_between_scoring_and_update():
    tracker = EventTracker(threshold_on=0.5, threshold_off=0.5)
    a = tracker.add("a")
    scored = tracker.indices
    b = tracker.add("b")  # added after the window was scored: not in its rows
    events = tracker.update(window(0), np.array([0.9], np.float32), scored)
    assert [e["query_index"] for e in events] == [a]
    assert np.isnan(tracker.scores[1]) and tracker.scores[0] == pytest.approx(0.9)
    events = tracker.update(window(1), np.array([0.9, 0.9], np.float32), [a, b])
    assert [e["query_index"] for e in events] == [b]


def test_finish_ends_open_events_at_the_last_window():
    tracker = EventTracker(threshold_on=0.5, threshold_off=0.5, smoothing=0.5)
    tracker.add("q")
    tracker.update(window(0), np.array([1.0], np.float32))
    tracker.update(window(1), np.array([0.6], np.float32))  # smoothed 0.8
    (end,) = tracker.finish("stopped")
    assert end["reason"] == "stopped" and end["time"] == 1.875 and end["score"] == pytest.approx(0.8)
    assert tracker.finish("stopped") == []
    with pytest.raises(ConfigError):
        EventTracker(threshold_on=0.5, threshold_off=0.5, smoothing=1.0)


def test_open_events_snapshot():
    tracker = EventTracker(threshold_on=0.5, threshold_off=0.5)
    tracker.add("a")
    tracker.add("b")
    tracker.update(window(0), np.array([0.9, 0.1], np.float32))
    tracker.update(window(1), np.array([0.7, 0.1], np.float32))
    (open_event,) = tracker.open_events()
    assert open_event == {"id": 0, "query": "a", "query_index": 0, "window_start": 0.0, "window_end": 1.875,
                          "peak_score": pytest.approx(0.9), "peak_raw_score": pytest.approx(0.9)}


def test_the_order_check_is_asked_only_where_a_query_would_start_and_blocks_at_or_below_zero():
    tracker = EventTracker(threshold_on=0.5, threshold_off=0.3)
    tracker.add("ordered")
    tracker.add("plain")
    asked = []
    verdicts = {0: [-0.2, 0.0, 0.4], 1: [None, None, None]}

    def order_at(k):
        def order(index):
            asked.append((k, index))
            return verdicts[index][k]
        return order

    events = []
    rows = [[0.9, 0.1], [0.9, 0.9], [0.9, 0.9], [0.9, 0.9]]
    for k, row in enumerate(rows[:3]):
        events += tracker.update(window(k), np.array(row, np.float32), contrast=np.array([-np.inf, -np.inf]),
                                 order=order_at(k))
    # window 0: "plain" is below threshold, not asked; "ordered" is blocked (-0.2), then by a tie (0.0), starts at 0.4
    assert asked == [(0, 0), (1, 0), (1, 1), (2, 0)]
    assert [(e["query"], e["time"], e["order_score"]) for e in events] == [("plain", 1.875, None),
                                                                          ("ordered", 2.875, 0.4)]
    events = tracker.update(window(3), np.array(rows[3], np.float32), order=order_at(3))
    assert events == [] and asked[-1] == (2, 0)  # open events go on without asking
    started = EventTracker(threshold_on=0.5, threshold_off=0.3)
    started.add("q")
    assert "order_score" not in started.update(window(0), np.array([0.9], np.float32))[0]  # no check, no key
