"""Tests for runtime/alerts.py and the demo's ground truth: alert matching against a naive reading of the rules."""

from __future__ import annotations

from hbci.runtime.alerts import Interval, alerts_from_events, match_alerts, overlap
from hbci.runtime.demo import occurrences


def test_overlap():
    assert overlap(Interval(0, 3), Interval(2, 5)) == 1
    assert overlap(Interval(0, 1), Interval(2, 5)) == 0
    assert overlap(Interval(1, 2), Interval(0, 5)) == 1


def test_match_alerts_counts():
    truths = [Interval(4, 7), Interval(25, 28)]
    alerts = [Interval(4.0, 6.875), Interval(5.5, 8.0), Interval(12, 15), Interval(27.5, 30)]
    result = match_alerts(alerts, truths, min_overlap=1.5)
    # 4-6.875 and 5.5-8 hit the first; 12-15 hits nothing; 27.5-30 overlaps the second by only 0.5 s
    assert result == {"tp": 2, "fp": 2, "ignored": 0, "found": 1, "occurrences": 2}


def test_ambiguous_occurrences_are_not_counted():
    result = match_alerts([Interval(10, 13)], [], 1.5, ignore=[Interval(10, 13)])
    assert result == {"tp": 0, "fp": 0, "ignored": 1, "found": 0, "occurrences": 0}


def test_alerts_come_from_end_records():
    events = [{"event": "start", "query": "q", "window_start": 1, "window_end": 4},
              {"event": "end", "query": "q", "window_start": 1, "window_end": 6}]
    assert alerts_from_events(events) == {"q": [Interval(1, 6)]}


def test_occurrences_exact_ambiguous_and_hard_negative():
    known = [
        {"start_s": 0, "end_s": 3, "events": [["red", "circle", "move_left"]]},
        {"start_s": 5, "end_s": 8, "events": [["red", "circle", "move_left"], ["blue", "square", "grow"]]},
        {"start_s": 10, "end_s": 13, "events": [["blue", "square", "grow"], ["red", "circle", "move_left"]]},
    ]
    exact, ambiguous = occurrences("a red ball moves to the left", known)
    assert exact == [Interval(0, 3)] and ambiguous == [Interval(5, 8), Interval(10, 13)]
    exact, ambiguous = occurrences("a red circle moves left, then a blue square grows", known)
    assert exact == [Interval(5, 8)] and ambiguous == []  # the swapped order at 10-13 is a hard negative
    assert occurrences("a man cleans a pool", known) == ([], [])
