"""Alert precision and recall of the live monitor on held-out synthetic streams with distractors: the global
thresholds beside per-query thresholds from the bundle's background gallery, at each stride.

    python benchmarks/bench_alerts.py                       # the shipped demo bundle, strides 0.25 and 0.5 s
    python benchmarks/bench_alerts.py --bundle B --streams 20 --seed 1000 --json out.json

Methods: "global" (every query at the bundle's calibrated on/off) and "per-query" (each query's own thresholds
from its null distribution over the gallery at --false-alarm-rate, `hbci.runtime.gallery`; only for a bundle with
a gallery), each also with the contrast gate ("+contrast": `Monitor(contrast=True)`, its opposites and its order
check; the same recorded scores, with each query's opposites scored on every window, so the recorded encode time
includes theirs, and the order check's halves encoded on every window outside that time). The gallery's streams use
another seed (`hbci.runtime.gallery.GALLERY_SEED`); the rate was chosen on --seed 0, never on the reported seed
1000.

Each stream (`hbci.synth.make_stream`, seeded by (--seed, stream number), so never the training, validation or
test clips) holds --clips random clips (of --world: classic by default, held_out for the look training never saw)
separated by 2-6 s of idle filler (static shapes), 3 s clips at 8 fps and 64 x 64 pixels unless --clip-seconds,
--fps and --size say otherwise (other renderings of the same clips). Per stream the monitor watches, all at
once:
  * positive queries: each clip's own caption (it occurs at that clip);
  * hard negatives: for each clip, a caption of one of its variants (motion reversed, order swapped, colours
    swapped) that does not occur anywhere in the stream;
  * unrelated queries: captions of fresh random clips that do not occur in the stream.
An alert (an event's extent, [window_start, window_end]) is a true positive when it overlaps an occurrence of
its query by at least half a window; otherwise a false positive, except over an ambiguous clip that contains the
query's events and more (a one-event query inside a two-event clip), where it is not counted. Precision =
TP / (TP + FP); recall = occurrences found / occurrences. No torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from hbci.runtime.alerts import alerts_from_events, match_alerts
from hbci.runtime.bundle import default_thresholds, load_bundle, resolve_thresholds
from hbci.runtime.demo import BUNDLE_DIR, known_clip, occurrences
from hbci.runtime.events import EventTracker
from hbci.runtime.gallery import DEFAULT_FALSE_ALARM_RATE, load_gallery, query_thresholds
from hbci.runtime.monitor import DEFAULT_SMOOTHING, DEFAULT_STRIDE, DEFAULT_WINDOW, Monitor
from hbci.runtime.retriever import Retriever
from hbci.runtime.sources import open_source
from hbci.synth import (VARIANT_CLASSES, WORLDS, caption, describe, labelled_variants, make_stream, parse_caption,
                        random_spec, variant_class)

KINDS = ("positive", "hard_negative", "unrelated")


def stream_case(folder: Path, seed: int, index: int, clips: int, fps: float, size: int, world: str = "classic",
                clip_seconds: float = 3.0):
    """Render one stream (its clips drawn from `hbci.synth.WORLDS[world]`, each lasting clip_seconds at fps
    frames per second, size x size pixels); return (path, known clips, [(query, kind)], {hard-negative query: its
    VARIANT_CLASSES class})."""
    rng = np.random.default_rng([seed, index])
    specs, seen = [], set()
    while len(specs) < clips:
        spec = random_spec(rng, world=WORLDS[world])
        if describe(spec) not in seen:
            specs.append(spec)
            seen.add(describe(spec))
    segments: list = [float(rng.uniform(2, 6))]
    for spec in specs:
        segments += [spec, float(rng.integers(2 * fps, 6 * fps + 1)) / fps]
    path = folder / f"stream-{seed}-{index}.mp4"
    found = make_stream(path, segments, fps, size, rng, clip_frames=max(2, round(clip_seconds * fps)))
    known = [known_clip(s) for s in found]
    queries = [(s.caption, "positive") for s in found]
    variant_of = {}
    for spec in specs:
        options = [(label, v) for label, v in labelled_variants(spec) if describe(v) not in seen]
        if options:
            label, variant = options[int(rng.integers(len(options)))]
            queries.append((caption(variant, rng), "hard_negative"))
            variant_of[queries[-1][0]] = variant_class(label, [e.kind for e in spec.events])
    while sum(kind == "unrelated" for _, kind in queries) < max(1, clips // 2):
        spec = random_spec(rng, world=WORLDS[world])
        if describe(spec) not in seen:
            queries.append((caption(spec, rng), "unrelated"))
    return path, known, queries, variant_of


def record_streams(retriever: Retriever, folder: Path, streams: int, seed: int, clips: int, window: float,
                   stride: float, fps: float = 8.0, size: int = 64, log=print, world: str = "classic",
                   clip_seconds: float = 3.0) -> list[dict]:
    """Render the streams and score every window against every query once (through the monitor, as live)."""
    cases = []
    for index in range(streams):
        path, known, queries, variant_of = stream_case(folder, seed, index, clips, fps, size, world, clip_seconds)
        monitor = Monitor(retriever, [q for q, _ in queries], window=window, stride=stride, threshold_on=1e9,
                          contrast=True)
        spans, rows, rivals, orders = [], [], [], []

        def record(w) -> None:
            spans.append((w.start, w.end))
            rows.append(monitor.raw_scores.astype(np.float32))
            rivals.append(monitor.contrast_scores.astype(np.float32))
            orders.append(monitor.order_scores(w.frames, w.mask).astype(np.float32))

        with open_source("file", path) as source:
            for _ in monitor.run(source, on_window=record):
                pass
        cases.append({"path": path, "known": known, "queries": queries, "variant_of": variant_of, "spans": spans,
                      "scores": np.stack(rows, axis=1), "contrast": np.stack(rivals, axis=1),
                      "order": np.stack(orders, axis=1),
                      "stats": monitor.stats.summary()})
        log(f"stream {index + 1}/{streams}: {len(known)} clips, {len(queries)} queries, {len(rows)} windows")
    return cases


def replay(case: dict, threshold_on: float, threshold_off: float, smoothing: float, bundle_id: str,
           per_query: list | None = None, contrast: bool = False) -> list[dict]:
    """The events the monitor would raise on a recorded stream at these settings (its own event logic, fed the
    recorded scores: nothing is encoded again). per_query: each query's `QueryThresholds`, as the monitor sets
    them from the gallery; contrast: with the contrast gate."""
    tracker = EventTracker(threshold_on=threshold_on, threshold_off=threshold_off, smoothing=smoothing,
                           bundle_id=bundle_id, source=str(case["path"]))
    for i, (query, _) in enumerate(case["queries"]):
        if per_query is None:
            tracker.add(query)
        else:
            tracker.add(query, per_query[i].own, per_query[i].null)
    events = []
    for k, ((start, end), raw) in enumerate(zip(case["spans"], case["scores"].T)):
        order = case["order"][:, k].tolist() if contrast else None  # query index i is row i here
        events += tracker.update(SimpleNamespace(start=start, end=end), raw,
                                 contrast=case["contrast"][:, k] if contrast else None,
                                 order=(lambda i: None if np.isnan(order[i]) else order[i]) if contrast else None)
    return events + tracker.finish("stream_end")


def calibrate_cases(retriever: Retriever, cases: list[dict], rate: float) -> None:
    """Each case's per-query thresholds (`case["per_query"]`) from the bundle's gallery, as the monitor sets them."""
    gallery = load_gallery(retriever.bundle)
    fallback = resolve_thresholds(retriever.bundle.thresholds, None, None, retriever.bundle_id)
    for case in cases:
        text = retriever.encode_text([q for q, _ in case["queries"]])
        case["per_query"] = query_thresholds(retriever, text, gallery, fallback, rate)


def evaluate(retriever: Retriever, cases: list[dict], window: float, stride: float, smoothing: float,
             threshold_on: float | None, threshold_off: float | None, per_query: bool = False,
             contrast: bool = False) -> dict:
    """Alert precision / recall over recorded streams at one setting (per_query: each query's own thresholds,
    `calibrate_cases`; contrast: with the contrast gate)."""
    on, off = resolve_thresholds(retriever.bundle.thresholds, threshold_on, threshold_off, retriever.bundle_id)
    totals = {k: {"tp": 0, "fp": 0, "ignored": 0, "found": 0, "occurrences": 0, "queries": 0} for k in KINDS}
    by_variant = {c: {"queries": 0, "fp": 0} for c in VARIANT_CLASSES}  # the hard negatives, by what they change
    by_events = {kind: {n: {"queries": 0, "fp": 0} for n in (1, 2)} for kind in KINDS}  # by events in the query
    for case in cases:
        alerts = alerts_from_events(replay(case, on, off, smoothing, retriever.bundle_id,
                                           case["per_query"] if per_query else None, contrast))
        for text, kind in case["queries"]:
            truths, ambiguous = occurrences(text, case["known"])
            result = match_alerts(alerts.get(text, []), truths, window / 2, ambiguous)
            for key, value in result.items():
                totals[kind][key] += value
            totals[kind]["queries"] += 1
            events = _event_count(text)
            if events in (1, 2):
                by_events[kind][events]["queries"] += 1
                by_events[kind][events]["fp"] += result["fp"]
            if text in case["variant_of"]:
                by_variant[case["variant_of"][text]]["queries"] += 1
                by_variant[case["variant_of"][text]]["fp"] += result["fp"]
    tp = sum(t["tp"] for t in totals.values())
    fp = sum(t["fp"] for t in totals.values())
    found = totals["positive"]["found"]
    occurrences_ = totals["positive"]["occurrences"]
    precision = tp / max(tp + fp, 1)
    recall = found / max(occurrences_, 1)
    easy_fp = totals["positive"]["fp"] + totals["unrelated"]["fp"]
    method = ("per-query" if per_query else "global") + ("+contrast" if contrast else "")
    return {"method": method, "window": window, "stride": stride,
            "smoothing": smoothing, "threshold_on": on,
            "threshold_off": off, "precision": precision, "recall": recall,
            "precision_without_hard_negatives": tp / max(tp + easy_fp, 1),
            "f1": 2 * precision * recall / max(precision + recall, 1e-12), "tp": tp, "fp": fp,
            "ignored": sum(t["ignored"] for t in totals.values()), "by_kind": totals,
            "hard_negatives_by_variant": by_variant, "false_alerts_by_events": by_events}


def _event_count(query: str) -> int | None:
    """How many events a synthetic-vocabulary query names (None if the caption parser cannot read it)."""
    try:
        return len(parse_caption(query.lower()))
    except ValueError:
        return None


def _print_result(result: dict) -> None:
    k = result["by_kind"]
    print(f"{result['method']:18s} stride {result['stride']:.2f} s: precision {result['precision']:.3f}  recall {result['recall']:.3f}  F1 {result['f1']:.3f}  "
          f"(TP {result['tp']}, FP {result['fp']}, not counted over ambiguous clips {result['ignored']})")
    print(f"  precision without the hard-negative queries: {result['precision_without_hard_negatives']:.3f}")
    for kind in KINDS:
        t = k[kind]
        extra = f", {t['found']}/{t['occurrences']} occurrences found" if kind == "positive" else ""
        print(f"  {kind:13s} {t['queries']:4d} queries: {t['tp']} true, {t['fp']} false alerts{extra}")
    print("  hard-negative false alerts by what the query changes: " + ", ".join(
        f"{c} {v['fp']} ({v['queries']} queries)" for c, v in result["hard_negatives_by_variant"].items()))
    print("  false alerts by events in the query: " + "; ".join(
        f"{kind} " + ", ".join(f"{n}-event {v['fp']} ({v['queries']} queries)" for n, v in per.items())
        for kind, per in result["false_alerts_by_events"].items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(BUNDLE_DIR))
    ap.add_argument("--precision", default=None, help="default: fp32 if the bundle has it, else its first")
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1000, help="stream seeds: (seed, 0..streams-1)")
    ap.add_argument("--clips", type=int, default=8, help="clips per stream")
    ap.add_argument("--world", choices=sorted(WORLDS), default="classic",
                    help="what the clips look like (%(default)s; held_out: the look training never saw, "
                         "`hbci.synth.HELD_OUT`); the idle filler and the captions stay classic")
    ap.add_argument("--fps", type=float, default=8.0, help="the streams' frame rate (%(default)s)")
    ap.add_argument("--size", type=int, default=64, help="their frames' side in pixels (%(default)s)")
    ap.add_argument("--clip-seconds", type=float, default=3.0,
                    help="how long each clip's events last (%(default)s; the model learnt from 3 s clips, so "
                         "set --window to match another length)")
    ap.add_argument("--window", type=float, default=DEFAULT_WINDOW)
    ap.add_argument("--stride", type=float, nargs="+", default=[DEFAULT_STRIDE, 0.5],
                    help="strides to measure, seconds (%(default)s)")
    ap.add_argument("--smoothing", type=float, default=DEFAULT_SMOOTHING)
    ap.add_argument("--threshold", type=float, help="default: the bundle's calibrated 'on'")
    ap.add_argument("--threshold-off", type=float, help="default: the bundle's calibrated 'off'")
    ap.add_argument("--false-alarm-rate", type=float, nargs="+", default=[DEFAULT_FALSE_ALARM_RATE],
                    help="per-query method: false-alarm rate(s) on the gallery (%(default)s)")
    ap.add_argument("--sweep", action="store_true",
                    help="also print precision/recall over a range of global 'on' thresholds and smoothings (the "
                         "same recorded scores; off keeps the calibrated gap below on)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.fps <= 0 or args.size < 8 or args.clip_seconds <= 0:
        ap.error("--fps and --clip-seconds must be above 0 and --size at least 8")

    precisions = load_bundle(args.bundle, verify_hashes=False).precisions
    precision = args.precision or ("fp32" if "fp32" in precisions else precisions[0])
    retriever = Retriever.load(args.bundle, precision=precision)
    has_gallery = retriever.bundle.manifest.gallery is not None
    if not has_gallery:
        print(f"bundle {retriever.bundle_id} has no background gallery (hbci-gallery BUNDLE adds one): "
              f"global thresholds only", file=sys.stderr)
    start = time.perf_counter()
    results, sweep, windows, encode_ms = [], [], 0, 0.0
    print(f"bundle {retriever.bundle_id} ({precision}), {args.streams} streams x {args.clips} clips (seeds "
          f"({args.seed}, 0..{args.streams - 1}), {args.world} world, {args.clip_seconds:g} s clips at "
          f"{args.fps:g} fps, {args.size} px), window {args.window} s, smoothing {args.smoothing}")
    for stride in args.stride:
        with tempfile.TemporaryDirectory(prefix="hbci-bench-alerts-") as tmp:
            cases = record_streams(retriever, Path(tmp), args.streams, args.seed, args.clips, args.window, stride,
                                   args.fps, args.size, log=lambda m: print(m, file=sys.stderr), world=args.world,
                                   clip_seconds=args.clip_seconds)
        windows += sum(c["stats"]["windows"] for c in cases)
        encode_ms += sum(c["stats"]["encode_ms_per_window"] * c["stats"]["windows"] for c in cases)
        result = evaluate(retriever, cases, args.window, stride, args.smoothing, args.threshold,
                          args.threshold_off)
        print(f"global thresholds on {result['threshold_on']:.4f} / off {result['threshold_off']:.4f}")
        _print_result(result)
        results.append(result)
        gated = evaluate(retriever, cases, args.window, stride, args.smoothing, args.threshold, args.threshold_off,
                         contrast=True)
        _print_result(gated)
        results.append(gated)
        for rate in args.false_alarm_rate if has_gallery else []:
            calibrate_cases(retriever, cases, rate)
            ons = np.array([t.on for c in cases for t in c["per_query"]])
            r = evaluate(retriever, cases, args.window, stride, args.smoothing, None, None, per_query=True)
            floor = r["threshold_on"]  # the global on: no query's threshold goes below it
            at_floor = int((ons == floor).sum())
            r.update(false_alarm_rate=rate, per_query_on={"min": float(ons.min()), "median": float(np.median(ons)),
                                                          "max": float(ons.max()), "floor": floor,
                                                          "at_floor": at_floor, "queries": int(ons.size)})
            print(f"per-query thresholds at false-alarm rate {rate:g}: on min {ons.min():.4f} / median "
                  f"{np.median(ons):.4f} / max {ons.max():.4f}; {at_floor} of {ons.size} queries at the floor "
                  f"(the global on) {floor:.4f}")
            _print_result(r)
            results.append(r)
            r = evaluate(retriever, cases, args.window, stride, args.smoothing, None, None, per_query=True,
                         contrast=True)
            r.update(false_alarm_rate=rate)
            _print_result(r)
            results.append(r)
        if args.sweep:
            calibrated = default_thresholds(retriever.bundle.manifest) or (result["threshold_on"],) * 2
            gap = calibrated[0] - calibrated[1]
            print("sweep: on     smoothing  precision  recall  F1     false alerts (hard negative / unrelated / "
                  "positive queries elsewhere)")
            for smoothing in (0.0, 0.3, 0.6):
                for on in np.round(np.arange(0.70, 0.881, 0.02), 3):
                    r = evaluate(retriever, cases, args.window, stride, smoothing, float(on), float(on) - gap)
                    sweep.append(r)
                    k = r["by_kind"]
                    print(f"       {on:.3f}  {smoothing:.1f}        {r['precision']:.3f}      {r['recall']:.3f}   "
                          f"{r['f1']:.3f}  {k['hard_negative']['fp']} / {k['unrelated']['fp']} / "
                          f"{k['positive']['fp']}")
    summary = {"bundle_id": retriever.bundle_id, "precision_graphs": precision, "streams": args.streams,
               "seed": args.seed, "world": args.world, "clips_per_stream": args.clips, "fps": args.fps,
               "size": args.size, "clip_seconds": args.clip_seconds, "windows": windows,
               "encode_ms_per_window": encode_ms / max(windows, 1), "seconds": round(time.perf_counter() - start, 1),
               "results": results, "sweep": sweep}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
