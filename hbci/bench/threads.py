"""Threads: the retriever (three sessions in one process, one window at a time as the live monitor runs it) under
each way ONNX Runtime can share the cores, each in a fresh process, the settings taking turns (no torch).

spin-off: a pool per session whose idle threads sleep (the runtime's default); spin-on: ONNX Runtime's default,
the runtime's setting before; shared: one global pool for every session of the process
(`hbci.runtime.backends.use_shared_thread_pool`; ONNX Runtime's Python API cannot turn its spinning off).
"""

from __future__ import annotations

import statistics

from hbci.bench.footprint import large_bundle
from hbci.bench.probe import THREAD_SETTINGS, measure

__all__ = ["TITLE", "NEEDS_TORCH", "run", "markdown"]

TITLE = "Threads"
NEEDS_TORCH = False


def run(ctx) -> dict:
    from hbci.runtime.demo import BUNDLE_DIR

    repeats, windows = (1, 3) if ctx.quick else (3, 12)
    path, label, why = large_bundle(ctx)
    bundles = [("demo", str(BUNDLE_DIR), "fp16")] + ([(label, path, "int8")] if path else [])
    result = {"repeats": repeats, "windows": windows, "bundles": {}, "left_out": {} if path else {label: why}}
    for label, path, precision in bundles:
        times: dict[str, list[float]] = {s: [] for s in THREAD_SETTINGS}
        for r in range(repeats):
            order = THREAD_SETTINGS[r % 3:] + THREAD_SETTINGS[:r % 3]  # each setting goes first once
            for setting in order:
                probe = measure({"task": "retriever", "bundle": path, "precision": precision, "setting": setting,
                                 "windows": windows})
                times[setting] += probe["ms_per_window_all"]
        result["bundles"][label] = {"precision": precision,
                                    "ms_per_window": {s: statistics.median(t) for s, t in times.items()}}
    return result


def markdown(result: dict, machine: dict) -> list[str]:
    lines = [f"Encode one window + score it against 4 queries, ms per window (median of {result['windows']} windows "
             f"x {result['repeats']} fresh processes per setting):", "",
             "| bundle | " + " | ".join(THREAD_SETTINGS) + " | spin-on / spin-off | shared / spin-off |",
             "|---|" + "---:|" * (len(THREAD_SETTINGS) + 2)]
    for label, b in result["bundles"].items():
        ms = b["ms_per_window"]
        lines.append(f"| {label} ({b['precision']}) | " + " | ".join(f"{ms[s]:.1f}" for s in THREAD_SETTINGS) +
                     f" | {ms['spin-on'] / ms['spin-off']:.2f} | {ms['shared'] / ms['spin-off']:.2f} |")
    for label, why in result.get("left_out", {}).items():
        lines.append(f"| {label} | skipped: {why} | | | | |")
    lines.append("")
    return lines
