"""Encoders: torch eager FP32 against ONNX Runtime FP32 / FP16 / INT8 (and TensorRT where present), for the small
config and a ViT-B/32-sized model: 12-frame clips/s, queries/s, peak memory, the compute floor (needs torch).

Inputs are real pipeline data: synthetic clips decoded and preprocessed by the runtime, captions tokenized by the
bundle's tokenizer. Every ONNX Runtime row runs twice, in sessions with spinning off (the runtime's setting) and
on (ONNX Runtime's default, the runtime's setting before), in two phases of every round:
[torch, FP32, FP16, INT8 with spinning on] then [torch, FP32, FP16, INT8 with spinning off], so the "before"
phase reproduces the old interleaved benchmarks and each ratio compares figures of the same rounds. Ratios to
torch use the torch timings of the same phase. Peak memory is measured per row in a fresh process (load the graph
or the checkpoint, encode the same batch twice). The floor is FLOPs / peak (see `hbci.bench.machine`).
"""

from __future__ import annotations

import csv

import numpy as np

from hbci.bench import models
from hbci.bench.flops import count_flops
from hbci.bench.machine import peak_ops
from hbci.bench.probe import measure
from hbci.bench.timing import interleaved, median_ms
from hbci.runtime.bundle import relative_error  # one definition: the self-check's

__all__ = ["TITLE", "NEEDS_TORCH", "run", "markdown", "relative_errors"]

TITLE = "Encoders"
NEEDS_TORCH = True
PRECISIONS = ("fp32", "fp16", "int8")
GRAPHS = {"video_encoder": "clips", "text_encoder": "queries"}


def relative_errors(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per output: max |a - b| / max |b| ("max": the self-check's own `relative_error`, the figure its per-output
    tolerance must allow), ||a - b|| / ||b|| ("norm") and max |a - b| ("max_abs")."""
    out = {}
    for name, ref in reference.items():
        ref, got = ref.astype(np.float64), other[name].astype(np.float64)
        norm = float(np.linalg.norm(ref))
        diff = got - ref
        out[name] = {"max": relative_error(got, ref),
                     "norm": float(np.linalg.norm(diff)) / norm if norm else 0.0,
                     "max_abs": float(np.abs(diff).max())}
    return out


def _inputs(built: models.Built, retriever, batches: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
    with open(built.data / "test.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    t = retriever.bundle.num_frames
    clips = []
    for row in rows[: batches["video_encoder"]]:
        frames, mask = retriever.load_video(built.data / row["video"])
        clips.append((retriever.preprocess(frames), mask))
    while len(clips) < batches["video_encoder"]:
        clips += clips[: batches["video_encoder"] - len(clips)]
    captions = [r["caption"] for r in rows]
    captions = (captions * (batches["text_encoder"] // len(captions) + 1))[: batches["text_encoder"]]
    ids, mask = retriever.tokenizer(captions)
    frames = np.stack([c[0] for c in clips]).reshape(len(clips), t, *clips[0][0].shape[1:])
    return {"video_encoder": {"frames": frames, "frame_mask": np.stack([c[1] for c in clips]).astype(np.float32)},
            "text_encoder": {"token_ids": ids, "token_mask": mask.astype(np.float32)}}


def _tensorrt_reason(bundle) -> str | None:
    """None when TensorRT engines can be timed here, else why not."""
    try:
        from hbci.export.engines import EngineSkipped, tensorrt_status
    except ImportError as exc:
        return f"hbci.export is not importable ({exc})"
    try:
        tensorrt_status()
    except EngineSkipped as exc:
        return str(exc)
    if not bundle.manifest.engines:
        return "no engines in the bundle (python export/build_engines.py --require-engines builds them)"
    return None


def _size(ctx, name: str) -> dict:
    import torch

    from hbci.checkpoint import load_model
    from hbci.runtime.backends import OrtBackend, create_backend
    from hbci.runtime.retriever import Retriever

    built = models.build(ctx.work, name, ctx.quick, ctx.log)
    retriever = Retriever.load(built.bundle, backend="onnxruntime-cpu", precision="fp32")
    bundle = retriever.bundle
    batches = {"video_encoder": 2 if ctx.quick else (8 if name == "small" else 1),
               "text_encoder": 4 if ctx.quick else 16}
    rounds = 2 if ctx.quick else (20 if name == "small" else 10)
    feeds = _inputs(built, retriever, batches)
    model = load_model(built.checkpoint)[0].eval()
    torch_calls = {"video_encoder": lambda f: model.encode_video(torch.from_numpy(f["frames"]),
                                                                 torch.from_numpy(f["frame_mask"])),
                   "text_encoder": lambda f: model.encode_text(torch.from_numpy(f["token_ids"]),
                                                               torch.from_numpy(f["token_mask"]))}
    trt_reason = _tensorrt_reason(bundle)
    result = {"config": model.config.backbone, "image_size": model.image_size, "num_frames": bundle.num_frames,
              "max_words": bundle.max_words, "bundle_id": bundle.bundle_id, "rounds": rounds,
              "torch_threads": torch.get_num_threads(), "graphs": {}}
    for graph, unit in GRAPHS.items():
        f = feeds[graph]
        batch = batches[graph]
        paths = {p: bundle.graph_path(graph, p) for p in PRECISIONS}
        # INT8 quantizes the video encoder only; the INT8 bundle's text encoder is the FP32 graph.
        precisions = [p for p in PRECISIONS if p == "fp32" or paths[p] != paths["fp32"]]
        sessions = {}
        for p in precisions:
            optimization = "basic" if p == "fp16" else "all"  # as Retriever.load: FP16 ViTs crash ORT at "all"
            for spinning in (True, False):
                sessions[(p, spinning)] = OrtBackend(paths[p], ["CPUExecutionProvider"], optimization=optimization,
                                                     spinning=spinning)
        extra = {}
        engine = bundle.engine_path(graph, "fp16") if trt_reason is None else None
        if engine is not None:
            extra["tensorrt_fp16"] = create_backend("tensorrt", paths["fp16"], engine)

        def ort_call(backend):
            return lambda: backend.run(f)

        with torch.no_grad():
            before = {"torch_before": lambda: torch_calls[graph](f)}
            before |= {f"{p}_before": ort_call(sessions[(p, True)]) for p in precisions}
            now = {"torch": lambda: torch_calls[graph](f)}
            now |= {p: ort_call(sessions[(p, False)]) for p in precisions}
            now |= {k: ort_call(b) for k, b in extra.items()}
            times = interleaved([before, now], rounds)
            reference = {k: v.numpy() for k, v in torch_calls[graph](f).items()}
        outputs = {p: sessions[(p, False)].run(f) for p in precisions}
        flops = sum(count_flops(paths["fp32"], f).values())
        ctx.log(f"[encoders] {name} {graph}: {flops / 1e9:.2f} GFLOP per call of {batch} {unit}")

        npz = ctx.work / name / f"inputs_{graph}.npz"
        np.savez(npz, **f)
        memory = {"torch": measure({"task": "torch", "checkpoint": str(built.checkpoint), "graph": graph,
                                    "inputs": str(npz)})}
        for p in precisions:
            memory[p] = measure({"task": "graph", "graph": str(paths[p]), "inputs": str(npz),
                                 "optimization": "basic" if p == "fp16" else "all"})

        torch_ms, torch_before_ms = median_ms(times["torch"]), median_ms(times["torch_before"])
        rows = [{"row": "torch eager fp32", "precision": "fp32", "ms": torch_ms, "per_s": batch / torch_ms * 1e3,
                 "x_torch": 1.0, "ms_before": torch_before_ms, "memory": memory["torch"]}]
        for p in precisions:
            ms, ms_before = median_ms(times[p]), median_ms(times[f"{p}_before"])
            rows.append({"row": f"onnxruntime {p}", "precision": p, "ms": ms, "per_s": batch / ms * 1e3,
                         "x_torch": torch_ms / ms, "ms_before": ms_before,
                         "x_torch_before": torch_before_ms / ms_before, "before_over_now": ms_before / ms,
                         "memory": memory[p], "cosine_vs_torch": _min_cosine(reference, outputs[p]),
                         "relative_error_vs_fp32": None if p == "fp32" else relative_errors(outputs["fp32"], outputs[p])})
        for k in extra:
            ms = median_ms(times[k])
            rows.append({"row": k.replace("_", " "), "precision": "fp16", "ms": ms, "per_s": batch / ms * 1e3,
                         "x_torch": torch_ms / ms})
        if trt_reason is not None:
            rows.append({"row": "tensorrt", "skipped": trt_reason})
        for row in rows:
            if "precision" in row:
                floor_ms = flops / peak_ops(ctx.machine["cpu"], row["precision"]) * 1e3
                row |= {"floor_ms": floor_ms, "floor_per_s": batch / floor_ms * 1e3, "x_floor": row["ms"] / floor_ms}
        result["graphs"][graph] = {"unit": unit, "batch": batch, "gflop": flops / 1e9, "rows": rows}
    result["golden_relative_error"] = _golden_errors(bundle)
    return result


def _min_cosine(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> float:
    worst = 1.0
    for name, ref in reference.items():
        a, b = ref.reshape(len(ref), -1).astype(np.float64), other[name].reshape(len(ref), -1).astype(np.float64)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        keep = (na > 0) & (nb > 0)
        if keep.any():
            worst = min(worst, float(((a * b).sum(1)[keep] / na[keep] / nb[keep]).min()))
    return worst


def _golden_errors(bundle) -> dict:
    """Per graph and output, the INT8 and FP16 graphs' relative error against the FP32 graph on the bundle's golden
    inputs (what the self-check at load runs)."""
    from hbci.runtime.backends import OrtBackend

    with np.load(bundle.golden_path) as golden:
        data = {k: golden[k] for k in golden.files}
    out = {}
    for graph in ("video_encoder", "text_encoder", "bci_scorer"):
        prefix = f"{graph}/in/"
        feeds = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
        fp32 = OrtBackend(bundle.graph_path(graph, "fp32"), ["CPUExecutionProvider"]).run(feeds)
        for p in ("fp16", "int8"):
            path = bundle.graph_path(graph, p)
            if p == "int8" and path == bundle.graph_path(graph, "fp32"):
                continue
            got = OrtBackend(path, ["CPUExecutionProvider"], optimization="basic" if p == "fp16" else "all").run(feeds)
            out.setdefault(p, {})[graph] = relative_errors(fp32, got)
    return out


def run(ctx) -> dict:
    sizes = ["small"] if ctx.quick else ["small", "vitb32"]
    return {"sizes": {name: _size(ctx, name) for name in sizes},
            "left_out": ["vitb32 (--quick)"] if ctx.quick else []}


def _fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def markdown(result: dict, machine: dict) -> list[str]:
    lines = []
    for name, size in result["sizes"].items():
        lines.append(f"**{name}** ({size['config']}, {size['image_size']} px, T={size['num_frames']}, "
                     f"L={size['max_words']}, random weights, bundle {size['bundle_id']}; median of {size['rounds']} "
                     f"interleaved rounds; torch threads {size['torch_threads']})")
        lines.append("")
        for graph, g in size["graphs"].items():
            unit = g["unit"]
            lines.append(f"{graph}, batch {g['batch']} {unit} ({g['gflop']:.2f} GFLOP of MatMul/Gemm/Conv per call):")
            lines.append("")
            lines.append(f"| back end | {unit}/s | x torch | floor {unit}/s | measured / floor | peak RSS MB "
                         f"(above imports) | spinning on (before): {unit}/s | x torch before | now / before | "
                         f"min cosine vs torch |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for row in g["rows"]:
                if "skipped" in row:
                    lines.append(f"| {row['row']} | skipped: {row['skipped']} | | | | | | | | |")
                    continue
                mem = row.get("memory")
                mem_s = f"{mem['peak_rss_mb']:.0f} ({mem['peak_rss_mb'] - mem['baseline_rss_mb']:.0f})" if mem else ""
                before = row.get("ms_before")
                before_s = _fmt(g["batch"] / before * 1e3) if before else ""
                xb = f"{row['x_torch_before']:.2f}" if "x_torch_before" in row else ""
                ratio = f"{row['before_over_now']:.2f}" if "before_over_now" in row else ""
                cos = f"{row['cosine_vs_torch']:.5f}" if "cosine_vs_torch" in row else ""
                lines.append(f"| {row['row']} | {_fmt(row['per_s'])} | {row['x_torch']:.2f} | "
                             f"{_fmt(row['floor_per_s'])} | {row['x_floor']:.1f} | {mem_s} | {before_s} | {xb} | "
                             f"{ratio} | {cos} |")
            lines.append("")
    if result.get("left_out"):
        lines.append(f"Left out: {', '.join(result['left_out'])}.")
        lines.append("")
    errors = {name: size["golden_relative_error"] for name, size in result["sizes"].items()}
    lines.append("Relative error of the FP16 and INT8 graphs against the FP32 graph on each bundle's golden inputs, "
                 "per output (max |a-b| / max |b|; the figure a per-output relative self-check must allow):")
    lines.append("")
    lines.append("| size | precision | graph | output | max rel. | norm rel. | max abs |")
    lines.append("|---|---|---|---|---:|---:|---:|")
    for name, by_precision in errors.items():
        for p, by_graph in by_precision.items():
            for graph, outs in by_graph.items():
                for out, e in outs.items():
                    lines.append(f"| {name} | {p} | {graph} | {out} | {e['max']:.4f} | {e['norm']:.4f} | "
                                 f"{e['max_abs']:.4f} |")
    lines.append("")
    return lines
