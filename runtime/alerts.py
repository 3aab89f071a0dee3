"""Scoring alerts against known events: which alerts found a true occurrence, which occurrences were found.

Used by the demo summary, the alert benchmark (`benchmarks/bench_alerts.py`) and the tests. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["Interval", "overlap", "match_alerts", "alerts_from_events"]


@dataclass(frozen=True)
class Interval:
    start: float
    end: float


def overlap(a: Interval, b: Interval) -> float:
    """Length of the intersection of two closed intervals (0 when disjoint)."""
    return max(0.0, min(a.end, b.end) - max(a.start, b.start))


def alerts_from_events(events: Sequence[dict]) -> dict[str, list[Interval]]:
    """Per query, the extents [window_start, window_end] of its events (the "end" records carry the extent)."""
    out: dict[str, list[Interval]] = {}
    for e in events:
        if e.get("event") == "end":
            out.setdefault(e["query"], []).append(Interval(float(e["window_start"]), float(e["window_end"])))
    return out


def match_alerts(alerts: Sequence[Interval], truths: Sequence[Interval], min_overlap: float,
                 ignore: Sequence[Interval] = ()) -> dict:
    """Match one query's alerts to its true occurrences.

    An alert is a true positive when it overlaps some occurrence by at least `min_overlap` seconds (or by the
    occurrence's whole length, when that is shorter); an occurrence is found when some alert matches it. An
    alert matching nothing but overlapping an `ignore` interval (an ambiguous occurrence: for example, the
    query's event as half of a two-event clip) by `min_overlap` is neither true nor false. Returns counts:
    tp (alerts that match), fp, ignored, found (occurrences found), occurrences.
    """
    def hits(alert: Interval, target: Interval) -> bool:
        return overlap(alert, target) >= min(min_overlap, target.end - target.start) - 1e-9

    tp = fp = ignored = 0
    found = [False] * len(truths)
    for alert in alerts:
        matched = [i for i, truth in enumerate(truths) if hits(alert, truth)]
        for i in matched:
            found[i] = True
        if matched:
            tp += 1
        elif any(hits(alert, other) for other in ignore):
            ignored += 1
        else:
            fp += 1
    return {"tp": tp, "fp": fp, "ignored": ignored, "found": sum(found), "occurrences": len(truths)}
