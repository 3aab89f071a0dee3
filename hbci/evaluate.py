"""Evaluation: encode a split once, score every caption against every video in chunks, report retrieval metrics.

`hbci-eval CHECKPOINT --data DIR` prints t2v and v2t R@1/5/10, MdR, MnR of the test split, and of the held-out-look
split beside it when the data has one; DSL (dual softmax) and per-level results are reported beside them, never
mixed into the main numbers. Clips are aligned and sampled at segment centres, exactly as the runtime samples.

On the synthetic benchmark (a meta.json beside the CSVs), a per-variant breakdown: for every clip and each of its
hard-negative variants in the split (same objects, one thing changed), how often a caption scores its own clip
above the other, both ways (ties count as wrong; chance 50%), by what the variant changed: left/right, up/down
(a move reversed), grow/shrink, appear/disappear, event order, colour swap. Event order is also split by how the
caption tells it (`ORDER_TELLINGS`) and by how many of the clip's two events are moves (`ORDER_BY_MOVES`).

`--against OTHER` compares two models on the same queries: the R@1 difference with its paired standard error
(queries both models get right or wrong add nothing), the figure behind "beats X by more than two standard
errors"; the standard error of each rate alone treats the two as independent samples and overstates it. On the
synthetic benchmark it compares the per-variant breakdown the same way, pair by pair (event order: "+7.9 points,
2.5 SE" rather than two rates whose difference is within their separate errors).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

from hbci.data import ClipSet, frames_to_tensor, tokenize
from hbci.metrics import (dual_softmax, format_metrics, multi_caption_metrics, multi_caption_ranks, paired_difference,
                          paired_hit_difference)
from hbci.model import HBCI
from hbci.synth import VARIANT_CLASSES, variant_class

__all__ = ["encode_videos", "encode_texts", "score_all", "evaluate", "synth_meta", "clip_entries", "variant_accuracy",
           "VARIANT_CLASSES", "main"]


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


def synth_meta(data_cfg, split: str) -> dict[str, dict] | None:
    """{video path relative to the data root: its meta.json entry} for a synthetic split, else None."""
    path = Path(data_cfg.root) / "meta.json"
    if data_cfg.dataset != "csv" or not split or not path.is_file():
        return None
    entries = json.loads(path.read_text()).get("splits", {}).get(split)
    return {e["video"]: e for e in entries} if entries else None


def clip_entries(clips: ClipSet, meta: dict[str, dict], root: str | Path) -> list[dict | None]:
    """Each clip's meta.json entry (`synth_meta`), None for a clip outside the data root or not in the meta."""
    root = Path(root).resolve()
    paths = [Path(item.path).resolve() for item in clips.items]
    return [meta.get(p.relative_to(root).as_posix()) if p.is_relative_to(root) else None for p in paths]


def variant_accuracy(sim: np.ndarray, owners: np.ndarray, clips: ClipSet, meta: dict[str, dict],
                     root: str | Path) -> dict:
    """Per variant class (VARIANT_CLASSES, and "direction" = left/right + up/down): the share (%) of (caption,
    other member) pairs of base-variant pairs where the caption scores its own clip strictly higher, and n
    (`variant_hits`)."""
    return _accuracies(variant_hits(sim, owners, clips, meta, root))


def _accuracies(hits: dict[str, list[bool]]) -> dict:
    return {name: {"accuracy": round(100 * float(np.mean(h)), 1) if h else None, "n": len(h)}
            for name, h in hits.items()}


def variant_hits(sim: np.ndarray, owners: np.ndarray, clips: ClipSet, meta: dict[str, dict],
                 root: str | Path) -> dict[str, list[bool]]:
    """Per variant class, whether each (caption, other member) pair of the split's base-variant pairs has the
    caption score its own clip strictly higher; the pairs come in an order fixed by the clips and captions alone,
    so two models' lists compare pair by pair. Event order is also split by how the caption tells it
    (`ORDER_TELLINGS`): naming the events in the order they happen ("X, then Y", "after X, Y") or the other way
    round ("Y after X", "before Y, X"), and by how many of the owner clip's events are moves (`ORDER_BY_MOVES`)."""
    entries = clip_entries(clips, meta, root)
    where = {(e["group"], e["variant"]): i for i, e in enumerate(entries) if e is not None}
    texts = clips.captions()[0]
    captions_of = [np.flatnonzero(owners == i) for i in range(len(clips))]
    hits: dict[str, list[bool]] = {c: [] for c in VARIANT_CLASSES + ORDER_TELLINGS + ORDER_BY_MOVES}
    for (group, label), i in where.items():
        base = where.get((group, "base"))
        if label == "base" or base is None:
            continue
        name = variant_class(label, [e["kind"] for e in entries[base]["events"]])
        for own, other in ((base, i), (i, base)):
            for c in captions_of[own]:
                hit = bool(sim[c, own] > sim[c, other])
                hits[name].append(hit)
                if name == "event order":
                    events = entries[own]["events"]
                    hits[ORDER_BY_MOVES[min(sum(e["kind"].startswith("move_") for e in events), 2)]].append(hit)
                    backwards = _names_later_event_first(texts[c], events)
                    if backwards is not None:
                        hits[ORDER_TELLINGS[backwards]].append(hit)
    hits["direction"] = hits["left/right"] + hits["up/down"]
    return hits


# Event order, split by whether the caption names the events in the order they happen.
ORDER_TELLINGS: tuple[str, ...] = ("order told in order", "order told backwards")
# Event order, split by how many of the clip's two events are moves.
ORDER_BY_MOVES: tuple[str, ...] = ("order, no move", "order, one move", "order, two moves")


def _names_later_event_first(text: str, events: list[dict]) -> bool | None:
    """Whether a two-event caption names the later event's object first (found by its colour word); None when
    that cannot be told (not two events, the same colour twice, a colour not named)."""
    colours = [e.get("colour") for e in events]
    if len(colours) != 2 or None in colours or colours[0] == colours[1]:
        return None
    found = [re.search(rf"\b{re.escape(c)}\b", text.lower()) for c in colours]
    return None if None in found else found[1].start() < found[0].start()


def _similarities(model: HBCI, clips: ClipSet, texts: list[str], batch_size: int):
    model.eval()
    return score_all(model, encode_texts(model, texts, batch_size), encode_videos(model, clips, batch_size))


def evaluate(model: HBCI, clips: ClipSet, batch_size: int = 128, meta: dict[str, dict] | None = None,
             root: str | Path | None = None, against: HBCI | None = None) -> dict:
    """Retrieval metrics of a clip set; with a synthetic split's meta (`synth_meta`) and its data root, also the
    per-variant breakdown (`variant_accuracy`), for the fused score and for each level alone. With `against`
    (another model taking the same clips), "against": per direction the paired R@1 difference, model minus it
    (`hbci.metrics.paired_difference`)."""
    texts, owners = clips.captions()
    sim, levels = _similarities(model, clips, texts, batch_size)
    with_variants = meta is not None and root is not None

    def metrics(scores: np.ndarray, hits: dict | None = None) -> dict:
        result = multi_caption_metrics(scores, owners)
        if with_variants:
            result["variants"] = _accuracies(hits or variant_hits(scores, owners, clips, meta, root))
        return result

    hits = variant_hits(sim, owners, clips, meta, root) if with_variants else None
    result = metrics(sim, hits)
    result["dsl"] = multi_caption_metrics(dual_softmax(sim), owners)
    if len(levels) > 1:
        result["levels"] = {str(lv): metrics(s) for lv, s in levels.items()}
    result["n_videos"], result["n_captions"] = len(clips), len(texts)
    if against is not None:
        other = _similarities(against, clips, texts, batch_size)[0]
        ours, theirs = multi_caption_ranks(sim, owners), multi_caption_ranks(other, owners)
        result["against"] = {d: paired_difference(ours[i], theirs[i]) for i, d in enumerate(("t2v", "v2t"))}
        if with_variants:
            theirs_hits = variant_hits(other, owners, clips, meta, root)
            result["against"]["variants"] = {name: paired_hit_difference(hits[name], theirs_hits[name])
                                             for name in hits if len(hits[name]) >= 2}
    return result


def against_report(result: dict) -> str:
    """The `--against` comparison: R@1 per direction, then the hard-negative pairs per variant class if any."""
    lines = [
        f"{d}  R@1 {r['R@1 a']:.1f} against {r['R@1 b']:.1f}: {r['difference']:+.1f} points, paired standard error "
        f"{r['se_paired']:.2f} ({_in_se(r)} SE; as independent samples {r['se_independent']:.2f}); right only "
        f"with this model on {r['a_only']} queries, only with the other on {r['b_only']} (n={r['n']})"
        for d, r in result.items() if d in ("t2v", "v2t")]
    if result.get("variants"):
        lines.append("hard negatives, own clip over its variant: " + ", ".join(
            f"{name} {r['accuracy a']:.1f}% against {r['accuracy b']:.1f}% ({r['difference']:+.1f}, {_in_se(r)} SE, "
            f"n={r['n']})" for name, r in result["variants"].items()))
    return "\n".join(lines)


def _in_se(r: dict) -> str:
    return f"{abs(r['difference']) / max(r['se_paired'], 1e-9):.1f}"


def report(result: dict) -> str:
    lines = [f"t2v  {format_metrics(result['t2v'])}", f"v2t  {format_metrics(result['v2t'])}",
             f"(DSL, test-time normalisation, reported separately) t2v {format_metrics(result['dsl']['t2v'])}"]
    for level, res in result.get("levels", {}).items():
        line = f"(level {level} alone) t2v {format_metrics(res['t2v'])}"
        if "variants" in res:
            line += "; hard negatives " + ", ".join(f"{name} {v['accuracy']:.1f}%" for name, v in
                                                    res["variants"].items()
                                                    if v["accuracy"] is not None and name != "direction")
        lines.append(line)
    if "variants" in result:
        shown = [f"{name} {v['accuracy']:.1f}% (n={v['n']})" for name, v in result["variants"].items()
                 if v["accuracy"] is not None]
        lines.append("hard negatives, own clip over its variant: " + ", ".join(shown))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from hbci.checkpoint import load_model
    from hbci.config import DataConfig
    from hbci.data import load_clipset
    from hbci.runtime.errors import ConfigError, ExitCode, HbciError, exit_code, exit_codes_epilog

    parser = argparse.ArgumentParser(prog="hbci-eval", description=__doc__.splitlines()[0],
                                     epilog=exit_codes_epilog((ExitCode.OK, ExitCode.INTERNAL, ExitCode.USAGE)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="dataset root (for csv: folder with <split>.csv)")
    parser.add_argument("--dataset", default="csv")
    parser.add_argument("--split", action="append",
                        help="split to evaluate (repeatable; default: test, and heldout beside it when the data "
                             "has a heldout.csv)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--against", metavar="CHECKPOINT",
                        help="also compare with this model on the same queries: R@1 difference and its paired "
                             "standard error")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args(argv)
    data = DataConfig(dataset=args.dataset, root=args.data)
    splits = args.split or ["test"] + (["heldout"] if (Path(args.data) / "heldout.csv").is_file() else [])
    try:
        model, _, _ = load_model(args.checkpoint)
        other = load_model(args.against)[0] if args.against else None
        if other is not None and (other.config.num_frames, other.image_size) != (model.config.num_frames,
                                                                                   model.image_size):
            raise ConfigError(f"--against {args.against} takes {other.config.num_frames} frames of "
                              f"{other.image_size} px, {args.checkpoint} {model.config.num_frames} of "
                              f"{model.image_size}: they cannot be compared on the same clips")
        results = {}
        for split in splits:
            clips = load_clipset(data, split, model.config.num_frames, model.image_size)
            results[split] = evaluate(model, clips, args.batch_size, synth_meta(data, split), args.data, other)
            if other is not None:
                results[split]["against"]["checkpoint"] = args.against
    except HbciError as exc:
        print(f"hbci-eval: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[splits[0]], indent=1))
        return 0
    for split, result in results.items():
        print(f"{split}: {result['n_videos']} videos, {result['n_captions']} captions")
        print(report(result))
        if "against" in result:
            print(f"against {result['against']['checkpoint']}:")
            print(against_report(result["against"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
