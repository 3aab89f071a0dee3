"""Write a model bundle from a checkpoint: graphs per precision, tokenizer, golden self-check data, manifest.

Every file is written atomically. Re-running with the same checkpoint and options skips graphs that are up to
date (their hashes match the manifest). Validation numbers go into the manifest: the max abs difference of
every graph against torch at batch sizes other than the traced one, and, given a held-out split, retrieval
metrics through the runtime path plus the negative/positive pair score statistics behind calibrated thresholds.
Each graph output's self-check tolerance is recorded per precision (relative to the output's scale, from its
measured error on the golden inputs with a margin: `hbci.runtime.bundle.output_tolerances`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from hbci.checkpoint import load_model, tool_versions
from hbci.export.graphs import example_inputs, export_graph, graph_outputs, scorer_input_names
from hbci.export.precision import FP32_OPS, convert_to_fp16
from hbci.export.tokenizer_json import build_tokenizer_json
from hbci.model import HBCI
from hbci.runtime.bundle import (BCI_SCORER, GOLDEN_FILE, GOLDEN_TOLERANCE, GRAPHS, PROFILES, TOKENIZER_FILE, Golden,
                                 Manifest, ScorerInputs, Validation, graph_file, load_bundle, output_tolerances,
                                 score_statistics, sha256_file, write_manifest)
from hbci.runtime.errors import BundleError
from hbci.runtime.video import CLIP_MEAN, CLIP_STD

__all__ = ["build_bundle", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16")
VALIDATION_BATCHES = (1, 3)  # the graphs are traced at batch 2


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _validate_graph(model: HBCI, graph: str, path: Path, precision: str) -> dict:
    """Max abs difference between ONNX Runtime (CPU) and torch at batch sizes other than the traced one."""
    from hbci.runtime.backends import OrtBackend

    backend = OrtBackend(path, ["CPUExecutionProvider"], optimization="basic" if precision == "fp16" else "all")
    result = {}
    for batch in VALIDATION_BATCHES:
        inputs = example_inputs(model, batch=batch, seed=10 + batch)[graph]
        if graph == BCI_SCORER:  # Nt != Nv, so a swapped axis cannot pass
            text_names, _ = scorer_input_names(model)
            other = example_inputs(model, batch=batch + 2, seed=20 + batch)[graph]
            inputs = {n: (v if n in text_names else other[n]) for n, v in inputs.items()}
        expected = graph_outputs(model, graph, inputs)
        got = backend.run({n: v.numpy() for n, v in inputs.items()})
        result[str(batch)] = max(float(np.abs(got[n] - expected[n]).max()) for n in expected)
    return result


def _write_golden(model: HBCI, path: Path) -> None:
    inputs, outputs = {}, {}
    for graph, graph_inputs in example_inputs(model, batch=2, seed=0).items():
        inputs[graph] = {n: v.numpy() for n, v in graph_inputs.items()}
        outputs[graph] = graph_outputs(model, graph, graph_inputs)
    Golden(inputs, outputs).save(path)


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
    return bundle.manifest if bundle.manifest.source == source else None


def build_bundle(checkpoint: str | Path, out: str | Path, precisions: tuple[str, ...] = PRECISIONS,
                 data: str | None = None, dataset: str = "csv", split: str = "val",
                 force: bool = False) -> Manifest:
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
        _log(f"bundle {out} is up to date (bundle id {existing.bundle_id}); nothing to do")
        return existing

    model, config, payload = load_model(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    graphs: dict[str, dict[str, str]] = {}
    max_abs_diff: dict[str, dict] = {}
    for precision in ["fp32"] + [p for p in precisions if p != "fp32"]:
        graphs[precision] = {}
        for graph in GRAPHS:
            rel = graph_file(graph, precision)
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
            max_abs_diff.setdefault(precision, {})[graph] = diff
            _log(f"[{precision}] {graph}: max |onnxruntime - torch| = {max(diff.values()):.2e} at batch sizes "
                 f"{', '.join(diff)}")
    graphs = {p: g for p, g in graphs.items() if p in precisions}

    build_tokenizer_json(out / TOKENIZER_FILE)
    _write_golden(model, out / GOLDEN_FILE)
    cfg = config.model
    manifest = Manifest(
        num_frames=cfg.num_frames, max_words=cfg.max_words, image_size=model.image_size, mean=CLIP_MEAN,
        std=CLIP_STD, graphs=graphs, tokenizer=TOKENIZER_FILE, golden=GOLDEN_FILE, precisions=tuple(sorted(graphs)),
        embed_dim=model.embed_dim, model_config=json.loads(json.dumps(payload["config"]["model"])),
        golden_tolerance=GOLDEN_TOLERANCE, profiles=PROFILES, scorer_inputs=ScorerInputs(*scorer_input_names(model)),
        fp32_ops_in_fp16=FP32_OPS, tools=tool_versions() | _onnx_versions(), source=source,
        validation=Validation(max_abs_diff_vs_torch=max_abs_diff), checkpoint_versions=payload.get("versions", {}),
        # The FP32 graphs define the model (and the bundle id), even when only FP16 graphs are kept.
        model_precision="fp32", model_graphs={g: sha256_file(out / graph_file(g, "fp32")) for g in GRAPHS})
    manifest = write_manifest(out, manifest)
    manifest = _record_tolerances(out, manifest)
    if data:
        manifest = _validate_retrieval(model, out, manifest, data, dataset, split)
    _log(f"bundle written to {out} (bundle id {manifest.bundle_id})")
    return manifest


def _record_tolerances(out: Path, manifest: Manifest) -> Manifest:
    """Each graph output's relative self-check tolerance per precision, from its error on the golden inputs
    through the runtime path (ONNX Runtime on the CPU) with a margin (`output_tolerances`)."""
    from hbci.runtime.retriever import Retriever

    tolerances = {}
    for precision in manifest.graphs:
        runtime = Retriever.load(out, backend="onnxruntime-cpu", precision=precision, self_check=False)
        errors = runtime.golden_errors()
        tolerances[precision] = output_tolerances(errors, precision)
        worst = max((e, f"{g}/{n}") for g, named in errors.items() for n, e in named.items())
        _log(f"[{precision}] golden self-check: worst relative error {worst[0]:.2e} ({worst[1]})")
    return write_manifest(out, dataclasses.replace(manifest, output_tolerance=tolerances))


def _onnx_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _validate_retrieval(model: HBCI, out: Path, manifest: Manifest, data: str, dataset: str,
                        split: str) -> Manifest:
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
    score_stats = None
    for precision in manifest.graphs:
        runtime = Retriever.load(out, backend="onnxruntime-cpu", precision=precision)
        scores = runtime.score(runtime.encode_text(texts), runtime.encode_video(clips.frames, clips.masks))
        retrieval[precision] = multi_caption_metrics(scores, owners)
        retrieval[precision]["max_abs_score_diff_vs_torch"] = float(np.abs(scores - torch_scores).max())
        _log(f"[{precision}] retrieval on {split}: t2v R@1 {retrieval[precision]['t2v']['R@1']:.1f} "
             f"(torch {retrieval['torch']['t2v']['R@1']:.1f})")
        if precision == "fp32":
            score_stats = score_statistics(scores, owners)
    validation = dataclasses.replace(manifest.validation, retrieval=retrieval)
    return write_manifest(out, dataclasses.replace(manifest, score_stats=score_stats, validation=validation))
