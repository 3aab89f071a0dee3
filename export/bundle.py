"""Write a model bundle from a checkpoint: graphs per precision, tokenizer, golden self-check data, manifest.

Every file is written atomically. Re-running with the same checkpoint and options skips graphs that are up to
date (their hashes match the manifest). Validation numbers go into the manifest: the max abs difference of
every graph against torch at batch sizes other than the traced one, and, given a held-out split, retrieval
metrics through the runtime path plus the negative/positive pair score statistics behind calibrated thresholds.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

from hbci.checkpoint import load_model, tool_versions
from hbci.export.engines import PROFILES
from hbci.export.graphs import GRAPHS, example_inputs, export_graph, scorer_input_names
from hbci.export.precision import FP32_OPS, convert_to_fp16
from hbci.export.tokenizer_json import build_tokenizer_json
from hbci.model import HBCI
from hbci.runtime.bundle import FORMAT_VERSION, atomic_write_bytes, load_bundle, sha256_file, write_manifest
from hbci.runtime.errors import BundleError
from hbci.runtime.video import CLIP_MEAN, CLIP_STD

__all__ = ["build_bundle", "PRECISIONS", "GOLDEN_TOLERANCE", "score_statistics"]

PRECISIONS = ("fp32", "fp16")
# Max abs difference the runtime's self-check accepts against the FP32 torch outputs.
GOLDEN_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2, "int8": 0.25}
VALIDATION_BATCHES = (1, 3)  # the graphs are traced at batch 2


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _graph_outputs(model: HBCI, graph: str, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    from hbci.export.graphs import _wrapper

    wrapper, names = _wrapper(model, graph)
    with torch.no_grad():
        values = wrapper(*inputs.values())
    return {n: v.numpy() for n, v in zip(names, values)}


def _validate_graph(model: HBCI, graph: str, path: Path, precision: str) -> dict:
    """Max abs difference between ONNX Runtime (CPU) and torch at batch sizes other than the traced one."""
    from hbci.runtime.backends import OrtBackend

    backend = OrtBackend(path, ["CPUExecutionProvider"], optimization="basic" if precision == "fp16" else "all")
    result = {}
    for batch in VALIDATION_BATCHES:
        inputs = example_inputs(model, batch=batch, seed=10 + batch)[graph]
        if graph == "bci_scorer":  # Nt != Nv, so a swapped axis cannot pass
            text_names, _ = scorer_input_names(model)
            other = example_inputs(model, batch=batch + 2, seed=20 + batch)[graph]
            inputs = {n: (v if n in text_names else other[n]) for n, v in inputs.items()}
        expected = _graph_outputs(model, graph, inputs)
        got = backend.run({n: v.numpy() for n, v in inputs.items()})
        result[str(batch)] = max(float(np.abs(got[n] - expected[n]).max()) for n in expected)
    return result


def score_statistics(scores: np.ndarray, owners: np.ndarray) -> dict:
    """Statistics of matched and unmatched (caption, video) scores on a held-out set, and the threshold pair
    the live monitor defaults to: `on` is the score that best separates them (max F1 of matched vs unmatched
    pairs), `off` sits halfway back toward the negatives' 99th percentile, giving hysteresis."""
    positive_mask = np.zeros(scores.shape, bool)
    positive_mask[np.arange(len(owners)), owners] = True
    positives, negatives = scores[positive_mask], scores[~positive_mask]

    def describe(x):
        q = np.quantile(x, [0.01, 0.05, 0.5, 0.95, 0.99, 0.999])
        return {"n": int(x.size), "mean": float(x.mean()), "std": float(x.std()),
                **{f"p{p}": float(v) for p, v in zip(("1", "5", "50", "95", "99", "99.9"), q)}}

    candidates = np.unique(np.quantile(np.concatenate([positives, negatives]), np.linspace(0.5, 0.9999, 400)))
    best, best_f1 = float(candidates[-1]), -1.0
    for threshold in candidates:
        tp = float((positives >= threshold).sum())
        fp = float((negatives >= threshold).sum())
        fn = float(positives.size - tp)
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        if f1 > best_f1:
            best, best_f1 = float(threshold), f1
    negative_p99 = float(np.quantile(negatives, 0.99))
    off = best - 0.5 * max(best - negative_p99, 0.0)
    return {"positive": describe(positives), "negative": describe(negatives),
            "threshold": {"on": best, "off": off, "f1": best_f1}}


def _write_golden(model: HBCI, path: Path) -> None:
    arrays = {}
    for graph, inputs in example_inputs(model, batch=2, seed=0).items():
        arrays |= {f"{graph}/in/{n}": v.numpy() for n, v in inputs.items()}
        arrays |= {f"{graph}/out/{n}": v for n, v in _graph_outputs(model, graph, inputs).items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _export_atomic(model: HBCI, graph: str, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.onnx")
    export_graph(model, graph, tmp)
    tmp.replace(path)


def _up_to_date(root: Path, source: dict) -> dict | None:
    """The existing manifest if it was written from the same checkpoint and options and is intact."""
    try:
        bundle = load_bundle(root)
    except BundleError:
        return None
    return bundle.manifest if bundle.manifest.get("source") == source else None


def build_bundle(checkpoint: str | Path, out: str | Path, precisions: tuple[str, ...] = PRECISIONS,
                 data: str | None = None, dataset: str = "csv", split: str = "val", force: bool = False) -> dict:
    """Build (or bring up to date) the bundle in `out`; return its manifest."""
    from hbci.runtime.video import load_clip  # noqa: F401  (fail early if OpenCV is missing)

    out = Path(out)
    unknown = set(precisions) - set(PRECISIONS)
    if unknown or not precisions:
        raise BundleError(f"unknown precision(s) {', '.join(sorted(unknown)) or '(none)'}; "
                          f"export writes {', '.join(PRECISIONS)} (int8 comes from calibration)")
    source = {"checkpoint_sha256": sha256_file(checkpoint), "precisions": sorted(precisions),
              "data": data, "dataset": dataset, "split": split}
    existing = None if force else _up_to_date(out, source)
    if existing is not None:
        _log(f"bundle {out} is up to date (bundle id {existing['bundle_id']}); nothing to do")
        return existing

    model, config, payload = load_model(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    graphs: dict[str, dict[str, str]] = {}
    validation: dict = {"max_abs_diff_vs_torch": {}}
    for precision in ["fp32"] + [p for p in precisions if p != "fp32"]:
        graphs[precision] = {}
        for graph in GRAPHS:
            rel = f"{precision}/{graph}.onnx"
            path = out / rel
            _log(f"[{precision}] {graph}: exporting")
            if precision == "fp32":
                _export_atomic(model, graph, path)
            else:
                tmp = path.with_name(f".{graph}.tmp.onnx")
                convert_to_fp16(out / graphs["fp32"][graph], tmp)
                tmp.replace(path)
            graphs[precision][graph] = rel
            diff = _validate_graph(model, graph, path, precision)
            validation["max_abs_diff_vs_torch"].setdefault(precision, {})[graph] = diff
            _log(f"[{precision}] {graph}: max |onnxruntime - torch| = {max(diff.values()):.2e} at batch sizes "
                 f"{', '.join(diff)}")
    graphs = {p: g for p, g in graphs.items() if p in precisions}

    build_tokenizer_json(out / "tokenizer.json")
    _write_golden(model, out / "golden.npz")
    cfg = config.model
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_config": json.loads(json.dumps(payload["config"]["model"])),
        "num_frames": cfg.num_frames, "max_words": cfg.max_words, "image_size": model.image_size,
        "embed_dim": model.embed_dim, "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
        "precisions": sorted(graphs), "graphs": graphs, "tokenizer": "tokenizer.json", "golden": "golden.npz",
        "golden_tolerance": GOLDEN_TOLERANCE, "profiles": PROFILES,
        "scorer_inputs": dict(zip(("text", "video"), scorer_input_names(model))), "fp32_ops_in_fp16": list(FP32_OPS),
        "tools": tool_versions() | _onnx_versions(), "source": source, "validation": validation,
        "checkpoint_versions": payload.get("versions", {}),
    }
    manifest = write_manifest(out, manifest)
    if data:
        manifest = _validate_retrieval(model, out, manifest, data, dataset, split)
    _log(f"bundle written to {out} (bundle id {manifest['bundle_id']})")
    return manifest


def _onnx_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _validate_retrieval(model: HBCI, out: Path, manifest: dict, data: str, dataset: str, split: str) -> dict:
    """Retrieval on a held-out split: torch against every precision through the runtime path, and the score
    statistics for thresholds (from the FP32 graphs, which the other precisions are gated against)."""
    from hbci.config import DataConfig
    from hbci.data import load_clipset
    from hbci.evaluate import encode_texts, encode_videos, score_all
    from hbci.metrics import multi_caption_metrics
    from hbci.runtime.retriever import Retriever

    clips = load_clipset(DataConfig(dataset=dataset, root=data), split, model.config.num_frames, model.image_size)
    texts, owners = clips.captions()
    torch_scores, _ = score_all(model, encode_texts(model, texts), encode_videos(model, clips))
    retrieval = {"split": f"{dataset}:{data}:{split}", "n_videos": len(clips), "n_captions": len(texts),
                 "torch": multi_caption_metrics(torch_scores, owners)}
    for precision in manifest["graphs"]:
        runtime = Retriever.load(out, backend="onnxruntime-cpu", precision=precision)
        scores = runtime.score(runtime.encode_text(texts), runtime.encode_video(clips.frames, clips.masks))
        retrieval[precision] = multi_caption_metrics(scores, owners)
        retrieval[precision]["max_abs_score_diff_vs_torch"] = float(np.abs(scores - torch_scores).max())
        _log(f"[{precision}] retrieval on {split}: t2v R@1 {retrieval[precision]['t2v']['R@1']:.1f} "
             f"(torch {retrieval['torch']['t2v']['R@1']:.1f})")
        if precision == "fp32":
            manifest["score_stats"] = score_statistics(scores, owners)
    manifest["validation"]["retrieval"] = retrieval
    return write_manifest(out, manifest)
