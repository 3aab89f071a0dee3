"""Scorer: pairs/s of the BCI scorer graph as the runtime runs it (chunks of texts x videos, `Retriever.score`)
against torch scoring every pair at once (`HBCI.score` on the whole gallery), with peak memory (needs torch).

Packs are the encoders' outputs on real pipeline inputs (a few synthetic clips and captions), repeated to fill
the gallery: the scorer's cost depends on the shapes, not on the values.
"""

from __future__ import annotations

import numpy as np

from hbci.bench import models
from hbci.bench.probe import measure
from hbci.bench.timing import interleaved, median_ms

__all__ = ["TITLE", "NEEDS_TORCH", "run", "markdown"]

TITLE = "Scorer"
NEEDS_TORCH = True


def _packs(retriever, built, texts: int, videos: int) -> tuple[dict, dict]:
    import csv

    with open(built.data / "test.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:4]
    video = retriever.encode_video([built.data / r["video"] for r in rows])
    text = retriever.encode_text([r["caption"] for r in rows])
    tile = lambda pack, n: {k: np.resize(v, (n, *v.shape[1:])) for k, v in pack.items()}  # noqa: E731
    return tile(text, texts), tile(video, videos)


def _size(ctx, name: str) -> dict:
    import torch

    from hbci.checkpoint import load_model
    from hbci.runtime.retriever import Retriever

    built = models.build(ctx.work, name, ctx.quick, ctx.log)
    nt, nv = (4, 64) if ctx.quick else (16, 1024)
    rounds = 2 if ctx.quick else 5
    now = Retriever.load(built.bundle, backend="onnxruntime-cpu", precision="fp32")
    before = Retriever(now.bundle, {g: b.reopened(spinning=True) for g, b in now.backends.items()}, now.precision)
    text, video = _packs(now, built, nt, nv)
    model = load_model(built.checkpoint)[0].eval()
    torch_text = {k: torch.from_numpy(v) for k, v in text.items()}
    torch_video = {k: torch.from_numpy(v) for k, v in video.items()}
    with torch.no_grad():
        times = interleaved([{"runtime_before": lambda: before.score(text, video)},
                             {"torch_all_pairs": lambda: model.score(torch_text, torch_video),
                              "runtime": lambda: now.score(text, video)}], rounds)
        reference = model.score(torch_text, torch_video).numpy()
    difference = float(np.abs(now.score(text, video) - reference).max())

    packs = ctx.work / name / "scorer_packs.npz"
    np.savez(packs, **{f"text/{k}": v for k, v in text.items()}, **{f"video/{k}": v for k, v in video.items()})
    memory = {engine: measure({"task": "score", "engine": engine, "bundle": str(built.bundle),
                               "checkpoint": str(built.checkpoint), "packs": str(packs)})
              for engine in ("runtime", "torch")}
    pairs = nt * nv
    rows = {k: {"ms": median_ms(v), "pairs_per_s": pairs / median_ms(v) * 1e3} for k, v in times.items()}
    return {"config": model.config.backbone, "texts": nt, "videos": nv, "rounds": rounds,
            "chunk": {"texts": now.score_text_chunk, "videos": now.score_chunk}, "rows": rows,
            "x_torch": rows["torch_all_pairs"]["ms"] / rows["runtime"]["ms"],
            "before_over_now": rows["runtime_before"]["ms"] / rows["runtime"]["ms"],
            "max_abs_difference": difference, "memory": memory}


def run(ctx) -> dict:
    sizes = ["small"] if ctx.quick else ["small", "vitb32"]
    return {"sizes": {name: _size(ctx, name) for name in sizes}}


def markdown(result: dict, machine: dict) -> list[str]:
    lines = ["| size | texts x videos | runtime, chunked (texts x videos per call) pairs/s | torch, all pairs at once "
             "pairs/s | runtime x torch | runtime peak RSS MB | torch peak RSS MB | runtime, spinning on (before) "
             "pairs/s | now / before | max abs difference |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in result["sizes"].items():
        r = s["rows"]
        lines.append(f"| {name} ({s['config']}) | {s['texts']} x {s['videos']} | {r['runtime']['pairs_per_s']:,.0f} "
                     f"({s['chunk']['texts']} x {s['chunk']['videos']}) | {r['torch_all_pairs']['pairs_per_s']:,.0f} | "
                     f"{s['x_torch']:.2f} | {s['memory']['runtime']['peak_rss_mb']:.0f} | "
                     f"{s['memory']['torch']['peak_rss_mb']:.0f} | {r['runtime_before']['pairs_per_s']:,.0f} | "
                     f"{s['before_over_now']:.2f} | {s['max_abs_difference']:.1e} |")
    lines.append("")
    return lines
