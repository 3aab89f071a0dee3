"""INT8 for a bundle: calibrate, quantize the encoders, and let them in only through an accuracy gate.

    quantize_bundle(bundle_dir, calib_videos, calib_captions, calib_texts=None, method="minmax",
                    max_samples=None, gate=GateThresholds()) -> manifest

Both encoders get static per-channel Q/DQ: the video encoder for speed (it runs on every window), the text encoder
for memory (a ViT-B/32-sized text encoder is 250 MB in FP32, two thirds of an INT8 bundle's weights; it runs once
per query, so its speed hardly matters). The scorer stays FP32. The text encoder is calibrated on captions of the
calibration side, never the held-out ones: calib_texts (a captions CSV or a text file, one sentence per line) when
given, else the captions of calib_videos when it is a captions CSV, else those of the calibration half of
calib_captions. With a plain video folder and no calib_texts there are none: the text encoder stays FP32, with a
warning and a note in the manifest (`int8_gate.text_encoder`).

Which clips calibrate and which judge (never the same clips):
  * calib_videos (a folder of videos, or a captions CSV / dataset split CSV) calibrates; calib_captions (a
    captions CSV, `video,caption`, paths relative to the CSV's folder) is the held-out set of the gate. A video
    that appears in both is dropped from calibration, with a warning and a count in the manifest.
  * calib_captions alone: its videos, in CSV order, are cut in two: the first half (floor(n/2) videos)
    calibrates and the second half is the held-out set. Said in a warning and recorded in the manifest.
  * no calib_captions: refused. Without held-out captions there is no retrieval check, and the gate does not
    pass a graph on cosines alone.

The gate (defaults in GateThresholds; every figure goes to the manifest's `validation.int8_gate`):
  1. structure: Q/DQ only in front of MatMul/Gemm/Conv, zero points 0, per-channel weights (`inspect_qdq`);
  2. cosine similarity of every encoder output, INT8 against FP32, per held-out clip or caption (each output
     flattened per item): mean over clips >= min_mean_cosine (0.99) and worst clip >= min_clip_cosine (0.95);
  3. text-to-video R@1 and R@5 on the held-out set, computed through the runtime (`Retriever.load` of the
     staged bundle at precision "int8" and "fp32", `encode_text`, `encode_video`, `Retriever.score`): the INT8
     figure may be at most max_r1_drop (1.0) / max_r5_drop (1.0) points below FP32. Below 100 held-out
     captions one caption is worth more than a point, so the default then means "no caption may be lost"
     (a warning says so);
  4. the bundle's golden inputs (written by export): cosine of every quantized encoder's output, INT8 against
     the golden FP32 outputs, per golden item, >= min_clip_cosine; and the runtime's own golden
     self-check at load (`Retriever.load(..., precision="int8")`) must pass.

The golden tolerance. The self-check compares max |output - golden| against one absolute number for every
output of every graph, and the outputs differ in scale: unit-vector entries are ~0.2, the un-normalised level-3
pool values reach ~6. INT8 rounding is relative, so on the pool values of the trained small model the INT8 error
on the golden inputs is ~0.35 (cosine 0.999), above export's 0.25, with retrieval unchanged. The gate therefore
keeps golden_tolerance["int8"] when the INT8 graph fits it and otherwise raises it to 1.25 x the measured error
(rounded up to 0.01; the margin is for other back ends' INT8 kernels, e.g. TensorRT), but only after the cosine
check above has shown the INT8 outputs are right in direction; the old and new tolerances go to the manifest.
That absolute number is now only the fallback: the manifest also records a relative tolerance per output
(`output_tolerance["int8"]`: each quantized encoder's relative golden error with the margin of
`hbci.runtime.bundle.output_tolerances`; graphs INT8 keeps in FP32 keep their FP32 tolerances), which the
runtime's self-check uses, so every output keeps a check as tight as its own measured error allows.

Atomicity: the INT8 graph is written into a hidden staging folder inside the bundle (with hard links to the
other files and a staged manifest, so `Retriever.load` sees a complete bundle); only when every check passes is
they are renamed to `int8/video_encoder.onnx` (and `int8/text_encoder.onnx`) and the bundle's manifest rewritten (`write_manifest`). A failed gate
removes the staging folder, leaves the bundle and its manifest untouched, and raises `GateFailed`, whose message
lists every check with its value and threshold.

Up to date: when the manifest already holds INT8 graphs gated on the same FP32 encoders, the same
calibration, caption and held-out files (names, sizes, modification times), method, sample count and thresholds, nothing
is redone (force=True redoes it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hbci.calibration import quantize as _quantize_module
from hbci.calibration.data import (MAX_HISTOGRAM_CLIPS, CalibrationDataError, CalibrationReader, CaptionSet,
                                   calibration_captions, default_clip_count, load_clips, video_paths)
from hbci.calibration.quantize import METHODS, CalibrationError, inspect_qdq
from hbci.runtime.bundle import (TEXT_ENCODER, VIDEO_ENCODER, Bundle, Manifest, Validation, graph_file, graph_files,
                                 load_bundle, output_tolerances, relative_error, write_manifest)
from hbci.runtime.errors import BundleError, GateRefused, VideoError

__all__ = ["GateThresholds", "GateFailed", "quantize_bundle", "cosine_report", "int8_tolerance", "BACKENDS",
           "INT8_GRAPHS"]

BACKENDS = ("onnxruntime", "modelopt")
INT8_GRAPHS = graph_files("int8")  # the bundle layout: INT8 video and text encoders, FP32 scorer
_ENCODERS = (VIDEO_ENCODER, TEXT_ENCODER)
SMALL_HELD_OUT = 100  # captions; below this one caption is worth more than one point of R@1
GATE_CHUNK = 16       # held-out clips decoded and encoded at a time (bounds memory on large held-out sets)


@dataclass(frozen=True)
class GateThresholds:
    min_mean_cosine: float = 0.99   # per output: mean over held-out clips of cos(INT8, FP32)
    min_clip_cosine: float = 0.95   # per output: the worst held-out clip
    max_r1_drop: float = 1.0        # points of t2v R@1 the INT8 graph may lose against FP32
    max_r5_drop: float = 1.0        # points of t2v R@5


class GateFailed(CalibrationError, GateRefused):
    """The INT8 graph failed the accuracy gate; nothing was written. The message lists every check."""

    def __init__(self, report: str, figures: dict):
        super().__init__(report)
        self.figures = figures


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cosine_report(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per output: cosine of each clip's flattened output, INT8 vs FP32 -> {"mean", "min", "n"}.

    Two all-zero vectors count as identical (cosine 1); one zero and one not as 0.
    """
    result = {}
    for name, ref in reference.items():
        a = np.asarray(ref, np.float64).reshape(len(ref), -1)
        b = np.asarray(other[name], np.float64).reshape(len(ref), -1)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        dot = (a * b).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where((na > 0) & (nb > 0), dot / (na * nb), np.where((na == 0) & (nb == 0), 1.0, 0.0))
        result[name] = {"mean": float(cos.mean()), "min": float(cos.min()), "n": int(len(cos))}
    return result


# ------------------------------------------------------------------------------------------------ planning
def _read_texts(source) -> list[str]:
    """Sentences of a captions CSV (`video,caption`) or of a text file (one per line)."""
    from hbci.datasets.generic_csv import read_captions_csv

    source = Path(source)
    if source.suffix.lower() == ".csv":
        return [c for item in read_captions_csv(source) for c in item.captions]
    try:
        return [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationDataError(f"{source}: cannot read calibration captions ({exc})") from None


def _plan(calib_videos, calib_captions, warn, calib_texts=None) -> dict:
    plan = _plan_videos(calib_videos, calib_captions, warn)
    if calib_texts:
        plan["calib_texts"], plan["texts_source"] = _read_texts(calib_texts), str(calib_texts)
    if plan["calib_texts"]:
        held = {c for item in plan["gate_items"] for c in item.captions}
        plan["calib_texts"] = [t for t in plan["calib_texts"] if t not in held]  # never calibrate on the judges
    return plan


def _plan_videos(calib_videos, calib_captions, warn) -> dict:
    from hbci.datasets.generic_csv import read_captions_csv

    if not calib_captions:
        raise CalibrationDataError("the INT8 accuracy gate needs held-out captions: give calib_captions "
                                   "(--calib-captions FILE, a video,caption CSV); calibration videos alone "
                                   "cannot show that retrieval survives quantization")
    items = read_captions_csv(calib_captions)
    if any(item.start is not None or item.end is not None for item in items):
        raise CalibrationDataError(f"{calib_captions}: rows with start/end spans are not supported by the INT8 "
                                   f"gate; give whole clips")
    if calib_videos:
        calib = video_paths(calib_videos)
        held = {item.path.resolve() for item in items}
        overlap = [p for p in calib if p.resolve() in held]
        if overlap:
            warn(f"warning: {len(overlap)} calibration video(s) in {calib_videos} are also in the held-out set "
                 f"{calib_captions}; they are left out of calibration")
            calib = [p for p in calib if p.resolve() not in held]
            if not calib:
                raise CalibrationDataError(f"{calib_videos}: every video is also in the held-out set "
                                           f"{calib_captions}; give other videos for calibration")
        csv_texts = Path(calib_videos).suffix.lower() == ".csv"
        return {"calib_paths": calib, "calib_source": str(calib_videos), "gate_items": items,
                "split": "calibration folder and held-out captions CSV", "overlap_excluded": len(overlap),
                "calib_texts": _read_texts(calib_videos) if csv_texts else None,
                "texts_source": str(calib_videos) if csv_texts else None}
    if len(items) < 2:
        raise CalibrationDataError(f"{calib_captions}: {len(items)} video(s); splitting it into calibration and "
                                   f"held-out halves needs at least 2 (or give calib_videos)")
    half = len(items) // 2
    warn(f"warning: no calibration videos given: calibrating on the first {half} videos of {calib_captions} "
         f"and gating on the other {len(items) - half}")
    return {"calib_paths": [item.path for item in items[:half]], "calib_source": f"{calib_captions} (first half)",
            "gate_items": items[half:], "split": f"captions CSV halves: first {half} videos calibrate, last "
                                                 f"{len(items) - half} are held out", "overlap_excluded": 0,
            "calib_texts": [c for item in items[:half] for c in item.captions],
            "texts_source": f"{calib_captions} (first half)"}


def _file_key(paths) -> list:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append([str(p), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(p), None, None])
    return out


def _inputs_key(bundle: Bundle, plan: dict, calib_captions, method, clips, backend, gate, max_gate_videos) -> str:
    texts = plan["calib_texts"] or []
    body = {"fp32_video_encoder": bundle.graph_sha256(VIDEO_ENCODER, "fp32"),
            "fp32_text_encoder": bundle.graph_sha256(TEXT_ENCODER, "fp32"),
            "texts": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
            "calibration": _file_key(plan["calib_paths"]), "captions": _file_key([calib_captions]),
            "held_out": _file_key(sorted({str(i.path) for i in plan["gate_items"]})), "method": method,
            "clips": clips, "backend": backend, "thresholds": asdict(gate), "max_gate_videos": max_gate_videos}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ staging
def _stage(bundle: Bundle, staging: Path, quantized: dict[str, Path], manifest: Manifest) -> None:
    """A complete bundle in `staging`: hard links (or copies) of the bundle's files, the INT8 graphs, a manifest."""
    for rel in bundle.manifest.files:
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(bundle.root / rel, target)
        except OSError:
            shutil.copyfile(bundle.root / rel, target)
    for graph, int8_file in quantized.items():
        dest = staging / graph_file(graph, "int8")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.unlink()  # a link to an earlier INT8 graph of the bundle
        os.replace(int8_file, dest)
    write_manifest(staging, manifest)


def _golden(bundle: Bundle, quantized: dict[str, Path]) -> dict:
    """The INT8 encoders on the bundle's golden inputs: max abs error and cosines per output (output names are
    unique across the graphs)."""
    from hbci.runtime.backends import OrtBackend

    golden = bundle.golden()
    report = {"max_abs_diff": {}, "relative_error": {}, "cosine": {}}
    for graph, path in quantized.items():
        expected = golden.outputs[graph]
        got = OrtBackend(path, ["CPUExecutionProvider"]).run(golden.inputs[graph])
        report["max_abs_diff"].update({n: float(np.abs(got[n] - v).max()) for n, v in expected.items()})
        report["relative_error"][graph] = {n: relative_error(got[n], v) for n, v in expected.items()}
        report["cosine"].update(cosine_report(expected, got))
    return report


def int8_tolerance(current: float, golden: dict) -> float:
    """The INT8 self-check tolerance: the current one when the INT8 graph's golden differences fit in it, else
    the worst difference with a 25% margin, rounded up to 0.01."""
    worst = max(golden["max_abs_diff"].values(), default=0.0)
    if worst <= current:
        return current
    return float(np.ceil(worst * 1.25 * 100) / 100)


# ------------------------------------------------------------------------------------------------ the gate
def _held_out(staging: Path, items, gate_backend: str, warn, log) -> dict:
    """Encode the held-out clips and captions with the FP32 and INT8 runtimes of the staged bundle.

    The cosines cover both encoders' outputs (the text encoder's are equal when it stays FP32)."""
    from hbci.metrics import multi_caption_metrics
    from hbci.runtime.retriever import Retriever

    fp32 = Retriever.load(staging, backend=gate_backend, precision="fp32")
    try:
        int8 = Retriever.load(staging, backend=gate_backend, precision="int8")
        self_check = None
    except BundleError as exc:
        int8 = Retriever.load(staging, backend=gate_backend, precision="int8", self_check=False)
        self_check = str(exc)
    packs = {"fp32": [], "int8": []}
    kept, skipped = [], []
    for start in range(0, len(items), GATE_CHUNK):
        chunk, frames, masks = items[start:start + GATE_CHUNK], [], []
        for item in chunk:
            try:
                clip, mask = fp32.load_video(item.path)
            except VideoError as exc:
                skipped.append((str(item.path), exc.reason))
                warn(f"warning: skipping unreadable held-out video {item.path}: {exc.reason}")
                continue
            frames.append(clip)
            masks.append(mask)
            kept.append(item)
        if frames:
            frames, masks = np.stack(frames), np.stack(masks)
            packs["fp32"].append(fp32.encode_video(frames, masks))
            packs["int8"].append(int8.encode_video(frames, masks))
        log(f"[int8 gate] encoded {len(kept)}/{len(items)} held-out videos")
    if not kept:
        raise CalibrationDataError(f"none of the {len(items)} held-out videos could be decoded")
    video = {p: {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} for p, chunks in packs.items()}
    texts = [c for item in kept for c in item.captions]
    owners = np.array([i for i, item in enumerate(kept) for _ in item.captions])
    retrieval, text = {}, {}
    for name, runtime in (("fp32", fp32), ("int8", int8)):
        text[name] = runtime.encode_text(texts)
        retrieval[name] = multi_caption_metrics(runtime.score(text[name], video[name]), owners)
    cosine = {**cosine_report(video["fp32"], video["int8"]), **cosine_report(text["fp32"], text["int8"])}
    return {"cosine": cosine, "retrieval": retrieval,
            "videos": len(kept), "captions": len(texts), "skipped": skipped, "self_check": self_check,
            "backend": int8.backend_name}


def _checks(structure: dict, held: dict, gate: GateThresholds, golden: dict) -> list[dict]:
    checks = [{"check": "Q/DQ only around MatMul/Gemm/Conv, zero points 0, per-channel weights",
               "value": f"{len(structure['problems'])} problem(s)", "threshold": "0",
               "passed": not structure["problems"],
               "detail": "; ".join(structure["problems"][:5]) + (" ..." if len(structure["problems"]) > 5 else "")}]
    for name, c in held["cosine"].items():
        checks.append({"check": f"cosine {name} mean", "value": round(c["mean"], 6),
                       "threshold": f">= {gate.min_mean_cosine}", "passed": c["mean"] >= gate.min_mean_cosine})
        checks.append({"check": f"cosine {name} worst clip", "value": round(c["min"], 6),
                       "threshold": f">= {gate.min_clip_cosine}", "passed": c["min"] >= gate.min_clip_cosine})
    r32, r8 = held["retrieval"]["fp32"]["t2v"], held["retrieval"]["int8"]["t2v"]
    for k, limit in (("R@1", gate.max_r1_drop), ("R@5", gate.max_r5_drop)):
        drop = r32[k] - r8[k]
        checks.append({"check": f"t2v {k} drop (points)", "value": round(drop, 4), "threshold": f"<= {limit}",
                       "passed": drop <= limit + 1e-9, "detail": f"fp32 {r32[k]:.2f}, int8 {r8[k]:.2f}"})
    name, worst = min(((n, c["min"]) for n, c in golden["cosine"].items()), key=lambda x: x[1])
    checks.append({"check": "golden inputs: cosine vs the FP32 golden outputs, worst output and clip",
                   "value": round(worst, 6), "threshold": f">= {gate.min_clip_cosine}",
                   "passed": worst >= gate.min_clip_cosine, "detail": name})
    error = max((e for errors in golden["relative_error"].values() for e in errors.values()), default=0.0)
    checks.append({"check": "runtime self-check at load (worst relative |int8 - golden|, per-output tolerances)",
                   "value": round(error, 6), "threshold": "recorded per output", "passed": held["self_check"] is None,
                   "detail": held["self_check"] or ""})
    return checks


def _structure(per_graph: dict[str, dict]) -> dict:
    """One structure report for the quantized graphs: counts summed, problems named by graph, and per graph."""
    total = {"problems": [f"{g}: {p}" for g, r in per_graph.items() for p in r["problems"]],
             "per_graph": {g: {k: v for k, v in r.items() if k != "problems"} for g, r in per_graph.items()}}
    for report in per_graph.values():
        for k, v in report.items():
            if isinstance(v, int):
                total[k] = total.get(k, 0) + v
            elif isinstance(v, dict):  # quantized_nodes: {op: count}
                merged = total.setdefault(k, {})
                for op, n in v.items():
                    merged[op] = merged.get(op, 0) + n
    return total


def _report(checks: list[dict], header: str) -> str:
    lines = [header]
    for c in checks:
        detail = f"  ({c['detail']})" if c.get("detail") else ""
        lines.append(f"  {'ok  ' if c['passed'] else 'FAIL'}  {c['check']}: {c['value']} (threshold {c['threshold']})"
                     f"{detail}")
    return "\n".join(lines)


def _clip_count(method: str, backend: str, max_samples: int | None, warn) -> int:
    """Validate the request; the number of calibration clips to use."""
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    if backend not in BACKENDS:
        raise CalibrationError(f"unknown quantization back end {backend!r}; choose from {', '.join(BACKENDS)}")
    clips_wanted = int(max_samples) if max_samples else default_clip_count(method)
    if clips_wanted < 1:
        raise CalibrationError(f"max_samples must be positive, got {max_samples}")
    if method != "minmax" and clips_wanted > MAX_HISTOGRAM_CLIPS:
        warn(f"warning: the {method} calibrator keeps every intermediate tensor in memory; using "
             f"{MAX_HISTOGRAM_CLIPS} clips instead of {clips_wanted}")
        clips_wanted = MAX_HISTOGRAM_CLIPS
    return clips_wanted


def _quantize(fp32_path: Path, out: Path, clips, method: str, backend: str) -> None:
    if backend == "modelopt":
        _quantize_module.quantize_with_modelopt(fp32_path, out, clips, method=method)
    else:
        _quantize_module.quantize_graph(fp32_path, out, CalibrationReader(clips), method=method)


def _with_int8(manifest: Manifest, tolerance: float, quantized, golden: dict) -> Manifest:
    """The manifest with the INT8 graphs (the `quantized` ones, FP32 files for the rest) and their self-check
    tolerances added: the absolute fallback, and per output the relative tolerance of each quantized graph (from
    its golden error) beside the FP32 graphs' recorded ones for the graphs INT8 keeps in FP32."""
    precisions = sorted(set(manifest.precisions or manifest.graphs) | {"int8"})
    graphs = {g: f if g in quantized else graph_file(g, "fp32") for g, f in INT8_GRAPHS.items()}
    recorded = dict(manifest.output_tolerance or {})
    int8 = {g: t for g, t in (recorded.get("fp32") or {}).items() if g not in quantized}
    int8 |= output_tolerances(golden["relative_error"], "int8")
    return dataclasses.replace(manifest, graphs={**manifest.graphs, "int8": graphs},
                               precisions=tuple(precisions),
                               golden_tolerance={**(manifest.golden_tolerance or {}), "int8": tolerance},
                               output_tolerance=recorded | {"int8": int8})


def _figures(*, key: str, method: str, backend: str, gate: GateThresholds, plan: dict, clips, clips_wanted: int,
             captions: CaptionSet | None, calib_captions, held: dict, golden: dict, tolerance: float,
             tolerance_before: float, structure: dict, checks: list[dict], seconds: float) -> dict:
    """Every figure of the gate, as recorded in the manifest's validation.int8_gate."""
    fp32, int8 = held["retrieval"]["fp32"], held["retrieval"]["int8"]
    return {
        "passed": all(c["passed"] for c in checks), "key": key, "method": method, "backend": backend,
        "gate_backend": held["backend"], "thresholds": asdict(gate), "split": plan["split"],
        "calibration": {"source": plan["calib_source"], "clips": len(clips), "requested": clips_wanted,
                        "candidates": len(plan["calib_paths"]), "skipped": len(clips.skipped),
                        "skipped_files": [p for p, _ in clips.skipped[:20]],
                        "overlap_excluded": plan["overlap_excluded"]},
        "text_encoder": ({"precision": "int8", "method": method, "backend": "onnxruntime",
                          "captions": len(captions), "source": plan["texts_source"]} if captions else
                         {"precision": "fp32", "why": "no calibration captions (give calib_texts / --calib-texts)"}),
        "held_out": {"source": str(calib_captions), "videos": held["videos"], "captions": held["captions"],
                     "skipped": len(held["skipped"]), "skipped_files": [p for p, _ in held["skipped"][:20]]},
        "cosine": held["cosine"],
        "retrieval": {"fp32": fp32, "int8": int8,
                      "delta": {f"{d}_{k}": round(int8[d][k] - fp32[d][k], 6)
                                for d in ("t2v", "v2t") for k in ("R@1", "R@5", "R@10")}},
        "golden_max_abs_diff": golden["max_abs_diff"],
        "golden_relative_error": golden["relative_error"], "golden_cosine": golden["cosine"],
        "golden_tolerance": tolerance, "golden_tolerance_before": tolerance_before,
        "qdq": {k: v for k, v in structure.items() if k != "problems"}, "checks": checks,
        "seconds": round(seconds, 1),
    }


def _commit(bundle: Bundle, staging: Path, manifest: Manifest, figures: dict, quantized) -> Manifest:
    """Move the gated graphs into the bundle, then write the manifest that names them."""
    for graph in quantized:
        final = bundle.root / graph_file(graph, "int8")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / graph_file(graph, "int8"), final)
    stale = bundle.root / graph_file(TEXT_ENCODER, "int8")
    if TEXT_ENCODER not in quantized and stale.exists():
        stale.unlink()  # an earlier run's INT8 text encoder, no longer named by the manifest
    validation = dataclasses.replace(manifest.validation or Validation(), int8_gate=figures)
    return write_manifest(bundle.root, dataclasses.replace(manifest, validation=validation))


def quantize_bundle(bundle_dir: str | Path, calib_videos: str | Path | None = None,
                    calib_captions: str | Path | None = None, calib_texts: str | Path | None = None, *,
                    method: str = "minmax",
                    max_samples: int | None = None, gate: GateThresholds = GateThresholds(),
                    backend: str = "onnxruntime", gate_backend: str = "onnxruntime-cpu",
                    max_gate_videos: int | None = None, force: bool = False,
                    log: Callable[[str], None] = _stderr) -> Manifest:
    """Calibrate, quantize and gate the bundle's encoders; on success add the INT8 graphs to the bundle.

    method: "minmax" (default), "entropy" or "percentile" (onnxruntime calibrators). max_samples: calibration
    clips (default 64 for minmax, 16 for the histogram methods, which are capped at 32). backend: "onnxruntime"
    or "modelopt" (needs `pip install nvidia-modelopt`). gate_backend: the runtime back end the gate measures
    (ONNX Runtime on the CPU by default: the reference). max_gate_videos: use at most this many held-out videos
    (default all). Returns the new manifest; raises GateFailed (nothing written) when a check fails.
    """
    t0 = time.perf_counter()
    warn = log
    bundle = load_bundle(bundle_dir)
    if "fp32" not in bundle.manifest.graphs:
        raise BundleError(f"{bundle.root}: INT8 is quantized from the FP32 graphs, and this bundle has none")
    clips_wanted = _clip_count(method, backend, max_samples, warn)
    plan = _plan(calib_videos, calib_captions, warn, calib_texts)
    if max_gate_videos:
        plan["gate_items"] = plan["gate_items"][:max_gate_videos]
    key = _inputs_key(bundle, plan, calib_captions, method, clips_wanted, backend, gate, max_gate_videos)
    previous = (bundle.manifest.validation or Validation()).int8_gate or {}
    if not force and "int8" in bundle.manifest.graphs and previous.get("key") == key:
        log(f"[int8] bundle {bundle.root} already holds an INT8 graph gated on the same inputs; nothing to do")
        return bundle.manifest

    clips = load_clips(plan["calib_paths"], bundle, clips_wanted, plan["calib_source"], warn)
    captions = calibration_captions(bundle, plan["calib_texts"]) if plan["calib_texts"] else None
    if captions is None:
        warn("warning: no captions on the calibration side (a video folder and no calib_texts): the text encoder "
             "stays FP32 in the INT8 bundle")
    log(f"[int8] calibrating the video encoder on {len(clips)} clips ({method}, {backend})"
        + (f" and the text encoder on {len(captions)} captions" if captions else ""))
    staging = Path(tempfile.mkdtemp(dir=bundle.root, prefix=".int8-staging-"))
    try:
        quantized = {VIDEO_ENCODER: staging / "video_encoder.int8.onnx"}
        _quantize(bundle.graph_path(VIDEO_ENCODER, "fp32"), quantized[VIDEO_ENCODER], clips, method, backend)
        if captions:
            # The text encoder through ONNX Runtime whatever the back end: it is small and runs once per query.
            quantized[TEXT_ENCODER] = staging / "text_encoder.int8.onnx"
            _quantize_module.quantize_graph(bundle.graph_path(TEXT_ENCODER, "fp32"), quantized[TEXT_ENCODER],
                                            CalibrationReader(captions, batch=16), method="minmax")
        structure = _structure({g: inspect_qdq(p) for g, p in quantized.items()})
        golden = _golden(bundle, quantized)
        tolerance_before = bundle.manifest.tolerance("int8")
        tolerance = int8_tolerance(tolerance_before, golden)
        if tolerance != tolerance_before:
            log(f"[int8] the INT8 encoders differ from the golden outputs by up to "
                f"{max(golden['max_abs_diff'].values()):.3f} (> golden_tolerance {tolerance_before}); "
                f"the INT8 self-check tolerance becomes {tolerance} if the gate passes")
        manifest = _with_int8(bundle.manifest, tolerance, quantized, golden)
        _stage(bundle, staging, quantized, manifest)
        log(f"[int8] gate: encoding {len(plan['gate_items'])} held-out videos with the FP32 and INT8 runtimes")
        held = _held_out(staging, plan["gate_items"], gate_backend, warn, log)
        checks = _checks(structure, held, gate, golden)
        if held["captions"] < SMALL_HELD_OUT:
            warn(f"warning: the held-out set has {held['captions']} captions (< {SMALL_HELD_OUT}): one caption "
                 f"is worth {100 / held['captions']:.2f} points of R@1")
        figures = _figures(key=key, method=method, backend=backend, gate=gate, plan=plan, clips=clips,
                           clips_wanted=clips_wanted, captions=captions, calib_captions=calib_captions, held=held, golden=golden,
                           tolerance=tolerance, tolerance_before=tolerance_before, structure=structure,
                           checks=checks, seconds=time.perf_counter() - t0)
        header = (f"INT8 accuracy gate {'passed' if figures['passed'] else 'FAILED'} for {bundle.root} "
                  f"({len(clips)} calibration clips, {held['videos']} held-out videos / {held['captions']} "
                  f"captions, {method}):")
        report = _report(checks, header)
        if not figures["passed"]:
            raise GateFailed(report + "\nno INT8 graph was written; the bundle is unchanged", figures)
        log(report)
        manifest = _commit(bundle, staging, manifest, figures, quantized)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    written = ", ".join(str(bundle.root / graph_file(g, "int8")) for g in quantized)
    log(f"[int8] wrote {written} (bundle id {manifest.bundle_id})")
    return manifest
