"""Interleaved timing: every contender runs once per round, in the same order, so machine noise hits all of them."""

from __future__ import annotations

import statistics
import time
from typing import Callable

__all__ = ["interleaved", "median_ms"]


def interleaved(phases: list[dict[str, Callable[[], object]]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of every named call: one warm-up call each, then `rounds` rounds; within a round the
    phases run in order and each phase's calls in order (names must be unique across phases)."""
    calls = {name: fn for phase in phases for name, fn in phase.items()}
    if len(calls) != sum(len(p) for p in phases):
        raise ValueError("call names must be unique across phases")
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for phase in phases:
            for name, fn in phase.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def median_ms(seconds: list[float]) -> float:
    return 1000 * statistics.median(seconds)
