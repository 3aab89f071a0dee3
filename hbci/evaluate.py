"""Evaluation: encode a split once, score every caption against every video in chunks, report retrieval metrics.

`hbci-eval CHECKPOINT --data DIR` prints t2v and v2t R@1/5/10, MdR, MnR; DSL (dual softmax) and per-level
results are reported beside them, never mixed into the main numbers.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from hbci.data import ClipSet, frames_to_tensor, tokenize
from hbci.metrics import dual_softmax, format_metrics, multi_caption_metrics
from hbci.model import HBCI

__all__ = ["encode_videos", "encode_texts", "score_all", "evaluate", "main"]


def _cat(packs: list[dict]) -> dict:
    return {k: torch.cat([p[k] for p in packs]) for k in packs[0]}


def _device(model: HBCI) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_videos(model: HBCI, clips: ClipSet, batch_size: int = 128) -> dict:
    packs, device = [], _device(model)
    for start in range(0, len(clips), batch_size):
        frames = frames_to_tensor(clips.frames[start:start + batch_size]).to(device)
        mask = torch.from_numpy(clips.masks[start:start + batch_size]).float().to(device)
        packs.append(model.encode_video(frames, mask))
    return _cat(packs)


@torch.no_grad()
def encode_texts(model: HBCI, texts: list[str], batch_size: int = 256) -> dict:
    packs, device = [], _device(model)
    for start in range(0, len(texts), batch_size):
        ids, mask = tokenize(texts[start:start + batch_size], model.config.max_words)
        packs.append(model.encode_text(ids.to(device), mask.to(device)))
    return _cat(packs)


@torch.no_grad()
def score_all(model: HBCI, text: dict, video: dict, chunk: int = 64) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Fused [Nt, Nv] and per-level scores, computed over chunks of videos so memory stays bounded."""
    n = next(iter(video.values())).shape[0]
    fused, levels = [], {}
    for start in range(0, n, chunk):
        part = {k: v[start:start + chunk] for k, v in video.items()}
        sims = model.score_levels(text, part)
        fused.append(model.fuse(sims))
        for level, sim in sims.items():
            levels.setdefault(level, []).append(sim)
    return torch.cat(fused, 1).cpu().numpy(), {lv: torch.cat(s, 1).cpu().numpy() for lv, s in levels.items()}


def evaluate(model: HBCI, clips: ClipSet, batch_size: int = 128) -> dict:
    model.eval()
    texts, owners = clips.captions()
    sim, levels = score_all(model, encode_texts(model, texts, batch_size), encode_videos(model, clips, batch_size))
    result = multi_caption_metrics(sim, owners)
    result["dsl"] = multi_caption_metrics(dual_softmax(sim), owners)
    if len(levels) > 1:
        result["levels"] = {str(lv): multi_caption_metrics(s, owners) for lv, s in levels.items()}
    result["n_videos"], result["n_captions"] = len(clips), len(texts)
    return result


def report(result: dict) -> str:
    lines = [f"t2v  {format_metrics(result['t2v'])}", f"v2t  {format_metrics(result['v2t'])}",
             f"(DSL, test-time normalisation, reported separately) t2v {format_metrics(result['dsl']['t2v'])}"]
    for level, res in result.get("levels", {}).items():
        lines.append(f"(level {level} alone) t2v {format_metrics(res['t2v'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from hbci.checkpoint import load_model
    from hbci.config import DataConfig
    from hbci.data import load_clipset
    from hbci.runtime.errors import ExitCode, HbciError, exit_code, exit_codes_epilog

    parser = argparse.ArgumentParser(prog="hbci-eval", description=__doc__.splitlines()[0],
                                     epilog=exit_codes_epilog((ExitCode.OK, ExitCode.INTERNAL, ExitCode.USAGE)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="dataset root (for csv: folder with <split>.csv)")
    parser.add_argument("--dataset", default="csv")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args(argv)
    try:
        model, _, _ = load_model(args.checkpoint)
        clips = load_clipset(DataConfig(dataset=args.dataset, root=args.data), args.split,
                             model.config.num_frames, model.image_size)
        result = evaluate(model, clips, args.batch_size)
    except HbciError as exc:
        print(f"hbci-eval: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    print(f"{args.split}: {result['n_videos']} videos, {result['n_captions']} captions")
    print(json.dumps(result, indent=1) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
