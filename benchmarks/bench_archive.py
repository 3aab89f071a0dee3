"""Archive benchmarks: retrieval quality of two-stage search against --exact, and search latency at scale.

    python benchmarks/bench_archive.py quality --data data/synth [--split test] [--candidates 8,16,32,64,128]
    python benchmarks/bench_archive.py latency [--sizes 10000,100000] [--queries 40] [--exact-queries 5]

quality: indexes the split's videos as files (one archive per data folder, reused) and, for every caption, asks
for the top moment with two-stage search at each --candidates M and with --exact: t2v R@1 is the share of
captions whose top moment is in their own video (each synthetic clip is 3 s: one window).

latency: an embedded archive of N windows whose packs are replicated from real encoded windows (the bundle's
video encoder on random synthetic clips), each copy with Gaussian noise (sigma 0.02 of each array's spread, the
global embedding renormalised) so the ANN index is not degenerate. Builds it through the store interface
(build time = writing arrays, rows, thumbnails and the ANN index; encoding is reported separately as
windows/s), then times captions of fresh random clips: p50/p95 of two-stage and exact search, their ratio,
stage one's share, bytes per window, and (where stage one is usearch) the same searches with the exact product
as stage one: their latency and how often they give the same moments. Each N
runs in its own process so peak RSS is its own. No torch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hbci.runtime.archive import Archive, FileRecord, open_store
from hbci.runtime.archive import embedded
from hbci.runtime.archive.indexer import DEFAULT_STRIDE, DEFAULT_WINDOW, THUMBNAIL_SIZE, archive_meta
from hbci.runtime.archive.search import DEFAULT_CANDIDATES
from hbci.runtime.demo import BUNDLE_DIR
from hbci.runtime.retriever import Retriever


def load_retriever(bundle: str | None) -> Retriever:
    from hbci.runtime.bundle import load_bundle

    bundle = bundle or BUNDLE_DIR
    precisions = load_bundle(bundle).precisions
    return Retriever.load(bundle, precision="fp32" if "fp32" in precisions else precisions[0])


# ------------------------------------------------------------------------------------------------ quality
def quality(args) -> dict:
    retriever = load_retriever(args.bundle)
    data = Path(args.data)
    rows = list(csv.DictReader(open(data / f"{args.split}.csv")))
    db = Path(args.db or data / f"archive-{args.split}-{retriever.bundle_id}.db")
    with Archive.open(db, retriever, create=True) as archive:
        summary = archive.index([data / "videos" / args.split], progress=False)
        print(f"indexed {summary.scanned} files, {summary.total_windows} windows ({summary.windows} encoded now)",
              file=sys.stderr)
        sizes = [int(m) for m in args.candidates.split(",")]
        hits = {m: 0 for m in sizes} | {"exact": 0}
        ms = {m: [] for m in hits}
        for i, row in enumerate(rows):
            target = str((data / row["video"]).absolute())
            for m in hits:
                result = archive.search(row["caption"], 1, candidates=DEFAULT_CANDIDATES if m == "exact" else m,
                                        exact=m == "exact")
                hits[m] += result.moments[0].path == target
                ms[m].append(1000 * result.seconds["total"])
            if (i + 1) % 100 == 0:
                print(f"{i + 1}/{len(rows)} captions", file=sys.stderr)
    n = len(rows)
    table = {str(m): {"t2v_R@1": round(100 * hits[m] / n, 2), "ms_p50": round(float(np.median(ms[m])), 1)}
             for m in hits}
    print(f"{args.split} split of {data} ({n} captions, {summary.total_windows} windows), bundle "
          f"{retriever.bundle_id}:")
    print(f"{'M':>6}  {'t2v R@1':>8}  {'vs exact':>8}  {'ms p50':>7}")
    for m, row in table.items():
        delta = row["t2v_R@1"] - table["exact"]["t2v_R@1"]
        print(f"{m:>6}  {row['t2v_R@1']:8.2f}  {delta:+8.2f}  {row['ms_p50']:7.1f}")
    return {"data": str(data), "split": args.split, "captions": n, "bundle_id": retriever.bundle_id,
            "results": table}


# ------------------------------------------------------------------------------------------------ latency
def real_windows(retriever: Retriever, count: int, seed: int):
    """Encoded windows of random synthetic clips (rendered in memory) and a thumbnail per clip."""
    import cv2

    from hbci.synth import random_spec, render_clip
    from hbci.runtime.video import sample_indices

    rng = np.random.default_rng(seed)
    t = retriever.bundle.num_frames
    clips = [render_clip(random_spec(rng), 24, 64) for _ in range(count)]
    frames = np.stack([c[sample_indices(24, t)] for c in clips])
    started = time.perf_counter()
    packs = retriever.encode_video(frames)
    rate = count / (time.perf_counter() - started)
    thumbs = [cv2.imencode(".jpg", cv2.resize(c[12], (THUMBNAIL_SIZE, THUMBNAIL_SIZE)))[1].tobytes() for c in clips]
    return packs, thumbs, rate


def replicate(packs: dict, n: int, rng: np.random.Generator, start: int) -> dict:
    base = len(next(iter(packs.values())))
    pick = (np.arange(start, start + n) % base)
    out = {}
    for key, value in packs.items():
        rows = value[pick].astype(np.float32)
        if key.endswith("mask"):
            out[key] = rows
            continue
        rows = rows + rng.normal(0, 0.02 * float(value.std()) + 1e-6, rows.shape).astype(np.float32)
        if key == "video_global":
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[key] = rows
    return out


def _reset_peak() -> None:
    """Start a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latency_one(args, n: int) -> dict:
    retriever = load_retriever(args.bundle)
    packs, thumbs, encode_rate = real_windows(retriever, 256, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    folder = Path(tempfile.mkdtemp(prefix="hbci-bench-archive-", dir=args.work))
    db = folder / "archive.db"
    started = time.perf_counter()
    per_file = 1000
    with open_store(db, create=True) as store:
        store.reset(archive_meta(retriever, DEFAULT_WINDOW, DEFAULT_STRIDE))
        for f, first in enumerate(range(0, n, per_file)):
            count = min(per_file, n - first)
            path = f"/bench/video{f:05d}.mp4"
            writer = store.write_file(path, f"{f:064x}")
            for b in range(0, count, 250):
                k = min(250, count - b)
                windows = [(first + b + j, float(first + b + j), float(first + b + j) + 2.875) for j in range(k)]
                windows = [(i - first, s - first, e - first) for i, s, e in windows]
                writer.add(windows, replicate(packs, k, rng, first + b), [thumbs[(first + b + j) % len(thumbs)]
                                                                          for j in range(k)])
            writer.commit(FileRecord(path, 0, 0, f"{f:064x}", "indexed", None, count, float(count)))
        store.finish()
    build = time.perf_counter() - started
    peak_build = _peak_mib()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    from hbci.synth import caption, random_spec

    qrng = np.random.default_rng(args.seed + 2)
    queries = [caption(random_spec(qrng), qrng) for _ in range(args.queries)]
    _reset_peak()
    with Archive.open(db, retriever) as archive:
        archive.search(queries[0], 10)  # warm-up: maps, ANN index loaded
        ann = archive.stats().details["stage_one"]
        two = [archive.search(q, 10) for q in queries]
        peak_search = _peak_mib()
        _reset_peak()
        exact = [archive.search(q, 10, exact=True).seconds["total"] for q in queries[:args.exact_queries]]
        peak_exact = _peak_mib()
        versus = None
        if ann == "usearch HNSW":  # the same searches with the exact product as stage one, for comparison
            limit, embedded.ANN_MIN_VALUES = embedded.ANN_MIN_VALUES, float("inf")
            archive.search(queries[0], 10)
            plain = [archive.search(q, 10) for q in queries]
            embedded.ANN_MIN_VALUES = limit
            top = [a.moments[0].window_id == b.moments[0].window_id for a, b in zip(two, plain)]
            # Copies of one real window differ only by the noise: a different top moment can be a near tie.
            gap = [b.moments[0].score - a.moments[0].score for a, b in zip(two, plain)]
            overlap = [len({m.window_id for m in a.moments} & {m.window_id for m in b.moments}) / len(b.moments)
                       for a, b in zip(two, plain)]
            versus = {"two_stage_ms_p50": round(1000 * float(np.median([r.seconds["total"] for r in plain])), 2),
                      "stage_one_ms_p50": round(1000 * float(np.median([r.seconds["stage_one"] for r in plain])),
                                                2),
                      "same_top_moment": round(float(np.mean(top)), 3),
                      "top10_overlap": round(float(np.mean(overlap)), 3),
                      "top_score_gap": {"p50": round(float(np.median(gap)), 5), "max": round(float(max(gap)), 5)}}
    for p in sorted(folder.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    folder.rmdir()
    q = lambda xs, p: round(1000 * float(np.quantile(xs, p)), 2)  # noqa: E731
    totals = [r.seconds["total"] for r in two]
    return {"windows": n, "candidates": DEFAULT_CANDIDATES, "stage_one": ann,
            "two_stage_ms": {"p50": q(totals, 0.5), "p95": q(totals, 0.95), "n": len(two)},
            "stage_one_ms_p50": q([r.seconds["stage_one"] for r in two], 0.5),
            "text_ms_p50": q([r.seconds["text"] for r in two], 0.5),
            "exact_ms": {"p50": q(exact, 0.5), "p95": q(exact, 0.95), "n": len(exact)},
            "speedup_p50": round(float(np.median(exact) / np.median(totals)), 1),
            "bytes_per_window": round(size / n), "build_s": round(build, 1),
            "peak_rss_mib": {"build": round(peak_build), "two_stage": round(peak_search), "exact": round(peak_exact)},
            "encode_windows_per_s": round(encode_rate, 1), "exact_stage_one": versus}


def latency(args) -> dict:
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        command = [sys.executable, __file__, "latency-one", "--n", str(n), "--queries", str(args.queries),
                   "--exact-queries", str(args.exact_queries), "--seed", str(args.seed)]
        command += ["--bundle", args.bundle] if args.bundle else []
        command += ["--work", args.work] if args.work else []
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        r = results[-1]
        v = r["exact_stage_one"]
        print(f"N={n}: two-stage p50 {r['two_stage_ms']['p50']} ms p95 {r['two_stage_ms']['p95']} ms "
              f"(text {r['text_ms_p50']} ms, stage one {r['stage_one']} {r['stage_one_ms_p50']} ms) | exact p50 "
              f"{r['exact_ms']['p50']} ms p95 {r['exact_ms']['p95']} ms (n={r['exact_ms']['n']}) | "
              f"x{r['speedup_p50']} | {r['bytes_per_window']} B/window | build {r['build_s']} s | peak RSS MiB: "
              f"build {r['peak_rss_mib']['build']}, two-stage {r['peak_rss_mib']['two_stage']}, exact "
              f"{r['peak_rss_mib']['exact']} | "
              f"encode {r['encode_windows_per_s']} windows/s"
              + (f" | with an exact stage one: p50 {v['two_stage_ms_p50']} ms (stage one {v['stage_one_ms_p50']} "
                 f"ms), same top moment {v['same_top_moment']} (top score gap p50 {v['top_score_gap']['p50']}, max "
                 f"{v['top_score_gap']['max']}), top-10 overlap {v['top10_overlap']}" if v else ""),
              flush=True)
    return {"load": os.getloadavg(), "results": results}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--data", required=True, help="a hbci-synth folder")
    q.add_argument("--split", default="test")
    q.add_argument("--candidates", default="8,16,32,64,128")
    q.add_argument("--db", help="archive path (default: inside --data, reused)")
    for name in ("latency", "latency-one"):
        s = sub.add_parser(name)
        s.add_argument("--sizes", default="10000,100000")
        s.add_argument("--n", type=int)
        s.add_argument("--queries", type=int, default=40)
        s.add_argument("--exact-queries", type=int, default=5, help="exact search is slow at 100k: fewer queries")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--work", help="folder for the temporary archives (default: the system's temp folder)")
    for s in sub.choices.values():
        s.add_argument("--bundle", help="model bundle (default: the shipped demo bundle)")
        s.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.command == "latency-one":
        print(json.dumps(latency_one(args, args.n)))
        return 0
    result = quality(args) if args.command == "quality" else latency(args)
    result["load_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
