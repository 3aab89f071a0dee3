"""How much a model's score drops when a window is not cut exactly on its event: the alignment curve.

    python benchmarks/bench_alignment.py --bundle B --data data/synth [--split test|heldout] [--json out.json]

The split's clips (held out from training) are laid end to end in one stream (`hbci.synth.make_stream`, each clip
in its own look, no filler). For every clip, 3 s windows (the runtime's default window) start at the clip's start
shifted by 0, +-0.25, +-0.5 and +-1.0 s; each window's T frames are the runtime's: the stream's frames inside the
span, sampled at segment centres (as `hbci.runtime.monitor` samples), resized and cropped by the runtime, encoded
and scored by `Retriever` on the exported bundle against the clip's caption. Per offset it prints:

* mean score, and mean score relative to aligned (ratio of the means);
* the share of events whose score is at or above the bundle's global threshold (its manifest's thresholds.on);
* the share at or above a per-query threshold set from that query's negatives at a 1% false-alarm rate: the 99th
  percentile of the query's scores on every window (all offsets) of every other clip that does not overlap its
  own clip. A measurement of what per-query calibration could reach, not the runtime's feature;
* for the clips whose caption tells two events in order (`hbci.caption_order.event_clauses`), how often the order
  is told right: by the whole window (the caption scores above its order-swapped form) and by the contrast gate's
  order check (`hbci.runtime.monitor.order_scores` above 0: the window's halves show the events in that order).
No torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hbci.caption_order import event_clauses, swap_event_order
from hbci.runtime.monitor import order_scores
from hbci.runtime.retriever import Retriever
from hbci.runtime.video import frame_times, read_indices, resize_center_crop
from hbci.runtime.windows import sample_span
from hbci.synth import make_stream, spec_from_dict

OFFSETS = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0)


def stream_of_split(data: Path, split: str, folder: Path, limit: int = 0):
    """Lay the split's clips end to end; return (stream path, [(start_s, caption)], fps, clip seconds)."""
    meta = json.loads((data / "meta.json").read_text())
    settings, entries = meta["settings"], meta["splits"][split]
    if limit:
        entries = entries[:limit]
    fps, frames = float(settings["fps"]), int(settings["frames"])
    path = folder / f"{split}-stream.mp4"
    found = make_stream(path, [spec_from_dict(e) for e in entries], fps, int(settings["size"]),
                        np.random.default_rng(0), clip_frames=frames)
    return path, [(s.start_s, e["captions"][0]) for s, e in zip(found, entries)], fps, frames / fps


def window_frames(times: np.ndarray, crops: np.ndarray, start: float, length: float, num_frames: int):
    """The runtime's window over [start, start + length) (`sample_span`, at any offset, not only on the stride)."""
    _, chosen, mask = sample_span(times, start, length, num_frames)
    frames = np.zeros((num_frames, *crops.shape[1:]), np.uint8)
    frames[:len(chosen)] = crops[chosen]
    return frames, mask


def alignment_curve(retriever: Retriever, stream: Path, clips: list[tuple[float, str]], window: float,
                    offsets=OFFSETS, far: float = 0.01) -> dict:
    """Scores of every clip's caption on its shifted windows, and the figures per offset (module docstring)."""
    bundle = retriever.bundle
    times = frame_times(stream)
    crops, got = read_indices(stream, np.arange(len(times)), lambda f: resize_center_crop(f[None], bundle.image_size)[0])
    crops, times = np.stack(crops), times[got]
    starts = np.array([s for s, _ in clips])
    n, k = len(clips), len(offsets)
    batch = [window_frames(times, crops, s + o, window, bundle.num_frames) for s in starts for o in offsets]
    video = retriever.encode_video(np.stack([b[0] for b in batch]), np.stack([b[1] for b in batch]))
    text = retriever.encode_text([c for _, c in clips])
    scores = retriever.score(text, video).reshape(n, n, k)  # [query, clip, offset]
    own = scores[np.arange(n), np.arange(n)]  # [n, k]
    # A query's negatives: windows of other clips that do not overlap its own clip.
    shift = np.array(offsets)
    win_start = starts[:, None] + shift[None]  # [clip, offset]
    overlaps = (win_start[None] < starts[:, None, None] + window) & (win_start[None] + window > starts[:, None, None])
    negatives = np.where(overlaps, np.nan, scores)
    per_query = np.nanquantile(negatives.reshape(n, -1), 1 - far, axis=1)
    threshold = bundle.thresholds.on if bundle.thresholds is not None else None
    aligned = own[:, list(offsets).index(0.0)]
    whole, halves = _order_told(retriever, clips, batch, video, own)
    rows = []
    for j, o in enumerate(offsets):
        rows.append({"offset_s": o, "mean_score": float(own[:, j].mean()),
                     "relative_to_aligned": float(own[:, j].mean() / aligned.mean()),
                     "share_at_global_threshold": None if threshold is None else float((own[:, j] >= threshold).mean()),
                     "share_at_per_query_threshold": float((own[:, j] >= per_query).mean()),
                     "order_by_whole_window": float(whole[:, j].mean()) if len(whole) else None,
                     "order_by_halves": float(halves[:, j].mean()) if len(halves) else None})
    return {"events": n, "ordered_events": len(whole), "window_s": window, "global_threshold": threshold,
            "false_alarm_rate": far, "per_query_threshold_mean": float(per_query.mean()), "rows": rows}


def _order_told(retriever: Retriever, clips, batch, video, own: np.ndarray, chunk: int = 64):
    """[ordered clips, offsets] booleans: the order told right by the whole window (its caption's score, `own`
    [clip, offset], above its swapped form's) and by the order check (`order_scores` above 0), for the clips whose
    caption splits into two events. Each chunk of clips is scored on its own windows only."""
    k = own.shape[1]
    ordered = [i for i, (_, c) in enumerate(clips) if event_clauses(c) is not None and swap_event_order(c)]
    whole, halves = np.zeros((len(ordered), k), bool), np.zeros((len(ordered), k), bool)
    for lo in range(0, len(ordered), chunk):
        part = ordered[lo:lo + chunk]
        rows = np.array([i * k + j for i in part for j in range(k)])  # their windows, clip-major
        diagonal = (np.arange(len(part)), np.arange(len(part)))
        swapped = retriever.score(retriever.encode_text([swap_event_order(clips[i][1]) for i in part]),
                                  {key: v[rows] for key, v in video.items()}).reshape(len(part), len(part), k)
        whole[lo:lo + len(part)] = own[part] > swapped[diagonal]
        events = retriever.encode_text([e for i in part for e in event_clauses(clips[i][1])])
        found = order_scores(retriever, events, np.stack([batch[r][0] for r in rows]),
                             np.stack([batch[r][1] for r in rows])).reshape(len(part), len(part), k)
        halves[lo:lo + len(part)] = found[diagonal] > 0
    return whole, halves


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--data", required=True, help="hbci-synth output folder (meta.json)")
    ap.add_argument("--split", default="test", help="test (in distribution) or heldout (the held-out look)")
    ap.add_argument("--clips", type=int, default=0, help="first N clips of the split (0: all)")
    ap.add_argument("--window", type=float, default=0.0, help="window seconds (default: the clips' length)")
    ap.add_argument("--precision", default=None, help="default: fp32 if the bundle has it, else its first")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    from hbci.runtime.bundle import load_bundle

    precisions = load_bundle(args.bundle, verify_hashes=False).precisions
    precision = args.precision or ("fp32" if "fp32" in precisions else precisions[0])
    retriever = Retriever.load(args.bundle, precision=precision)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hbci-bench-alignment-") as tmp:
        stream, clips, fps, clip_s = stream_of_split(Path(args.data), args.split, Path(tmp), args.clips)
        result = alignment_curve(retriever, stream, clips, args.window or clip_s)
    result.update(bundle_id=retriever.bundle_id, precision=precision, split=args.split, data=args.data,
                  seconds=round(time.perf_counter() - t0, 1))
    print(f"bundle {retriever.bundle_id} ({precision}), {args.split} split of {args.data}: {result['events']} clips "
          f"end to end, {result['window_s']:g} s windows; global threshold {result['global_threshold']}, per-query "
          f"thresholds at {100 * result['false_alarm_rate']:g}% false alarms (mean {result['per_query_threshold_mean']:.3f})")
    print(f"order told right for the {result['ordered_events']} clips of two ordered events: by the whole window "
          f"(caption above its swapped form) and by the order check (the window's halves)")
    print("offset s   mean score   vs aligned   >= global threshold   >= per-query threshold   order: whole / halves")
    for r in result["rows"]:
        g = "-" if r["share_at_global_threshold"] is None else f"{100 * r['share_at_global_threshold']:5.1f}%"
        order = "-" if r["order_by_whole_window"] is None else \
            f"{100 * r['order_by_whole_window']:5.1f}% / {100 * r['order_by_halves']:5.1f}%"
        print(f"{r['offset_s']:+8.2f}   {r['mean_score']:10.3f}   {100 * r['relative_to_aligned']:9.1f}%   "
              f"{g:>19}   {100 * r['share_at_per_query_threshold']:21.1f}%   {order:>20}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
