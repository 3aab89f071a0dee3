"""Where a model loses the direction of a move: text and video probes for the left/right and up/down pairs, and a
text probe for the order of two events.

    python benchmarks/probe_direction.py --checkpoint runs/small/best.pt --data data/synth [--split test]
    python benchmarks/probe_direction.py --backbone data/synth/backbone.pt --data data/synth

With --checkpoint (a trained HBCI model) or --backbone (an `hbci-pretrain` backbone, before video training) it
prints, per direction pair:

* text: the cosine of the global text embeddings of "a <colour> <shape> moves <a>" and "... moves <b>", averaged
  over colours and shapes (1.0: the model reads the two captions as one sentence);
* frames: over the split's single-move clips of each axis, the change of the backbone's frame feature from the
  first to the last frame, relative to the mean frame-feature norm (how much the picture the model sees moves);
* with --checkpoint only, video: the cosine of a clip's global video embedding and that of its own frames played
  backwards (1.0: the model cannot tell the clip from its reversal);
* text, event order: the cosine of "X, then Y" and "Y, then X" (and three other clause orders of training's
  templates) over pairs of events (1.0: the text side cannot tell the order of two events);
* with --checkpoint only, video, event order: over the split's two-event clips that have an order-swapped variant,
  how often a clip's caption scores the clip above (a) its own frames rotated at the event boundary, the swap
  negative training uses, and (b) the rendered clip with the events swapped, which hard-negative evaluation uses.
  A model that rejects (a) far more often than (b) tells the cut in (a), not the order;
* with --checkpoint only, text, event order on the clip: over the split's captions that have a clause-swapped
  form (`hbci.caption_order`: "X, then Y" -> "Y, then X"), how often a caption scores its own clip above that
  form, and the median gap between the two scores. The alert benchmark's event-order look-alikes are such forms,
  and they are compared with a threshold, not with the true caption: a small gap fires them however often the
  true caption wins.

A diagnosis, not a gate: the README quotes it for the trained model and its backbone. Needs torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from hbci.synth import KINDS, order_swap_partners, variant_class

PAIRS = (("moves left", "moves right"), ("moves up", "moves down"))
# A move kind's axis is the class of its reversal, as evaluation counts it.
AXIS_OF = {kind: variant_class("reverse_0", [kind]) for kind in KINDS if kind.startswith("move_")}
NOUNS = [f"{c} {s}" for c in ("red", "blue", "green") for s in ("circle", "square", "triangle")]

ORDER_TEMPLATES = ("{a}, then {b}", "{a} before {b}", "{b} after {a}", "first {a}, then {b}")
_EVENTS = ("a red circle moves left", "a blue square grows", "a green triangle moves up", "a red square appears")


def order_text_cosines(encode) -> dict[str, float]:
    """Per template, the mean cosine of a two-event caption and the same caption with the events swapped."""
    pairs = [(a, b) for a in _EVENTS for b in _EVENTS if a != b]
    out = {}
    for template in ORDER_TEMPLATES:
        ea = encode([template.format(a=a, b=b) for a, b in pairs])
        eb = encode([template.format(a=b, b=a) for a, b in pairs])
        out[template] = round(float((ea * eb).sum(-1).mean()), 3)
    return out


def text_cosines(encode) -> dict[str, float]:
    """encode(list of captions) -> [N, D] unit vectors; the mean cosine of each pair's captions."""
    out = {}
    for a, b in PAIRS:
        ea, eb = encode([f"a {n} {a}" for n in NOUNS]), encode([f"a {n} {b}" for n in NOUNS])
        out[f"{a} / {b}"] = round(float((ea * eb).sum(-1).mean()), 3)
    return out


def split_clips(data: Path, split: str, num_frames: int, image_size: int):
    """The split decoded as the model takes it (`hbci.data.ClipSet`), each clip's meta.json entry, and the clips'
    length in frames (meta.json's settings)."""
    from hbci.config import DataConfig
    from hbci.data import load_clipset
    from hbci.evaluate import clip_entries, synth_meta

    config = DataConfig(root=str(data))
    clips = load_clipset(config, split, num_frames, image_size, 0, False)
    frames = json.loads((data / "meta.json").read_text())["settings"]["frames"]
    return clips, clip_entries(clips, synth_meta(config, split) or {}, data), frames


@torch.no_grad()
def probe(clip, clips, entries: list, model=None) -> dict:
    """Per axis, over the single-move clips: the frame-feature change first -> last and (with a model) the cosine
    of the clip's video embedding and its reversal's."""
    from hbci.backbone import frame_features
    from hbci.data import frames_to_tensor

    rows: dict[str, list[tuple[float, float]]] = {"left/right": [], "up/down": []}
    for i, entry in enumerate(entries):
        if not (entry and len(entry["events"]) == 1 and entry["events"][0]["kind"] in AXIS_OF):
            continue
        mask = torch.from_numpy(clips.masks[i:i + 1]).float()
        feats = frame_features(clip, frames_to_tensor(clips.frames[i:i + 1]))
        n = int(mask.sum())
        change = float((feats[0, n - 1] - feats[0, 0]).norm() / feats[0, :n].norm(dim=-1).mean())
        reversal = float("nan")
        if model is not None:
            backwards = torch.cat([feats[:, :n].flip(1), feats[:, n:]], 1)
            reversal = float((model.video_pack(feats, mask)["video_global"] *
                              model.video_pack(backwards, mask)["video_global"]).sum())
        rows[AXIS_OF[entry["events"][0]["kind"]]].append((change, reversal))
    return {axis: {"clips": len(r), "frame_change": round(float(np.mean([c for c, _ in r])), 3) if r else None,
                   "cos_clip_reversed": (round(float(np.mean([v for _, v in r])), 4)
                                         if r and model is not None else None)}
            for axis, r in rows.items()}


def boundary_cut(events: list[dict], clip_frames: int, num_frames: int) -> int:
    """How many of the T sampled frames (`hbci.runtime.video.sample_indices`) come before the midpoint between a
    two-event clip's events (from meta.json's start/end frames)."""
    from hbci.runtime.video import sample_indices

    midpoint = (events[0]["end_frame"] + events[1]["start_frame"]) / 2
    return int((np.asarray(sample_indices(clip_frames, num_frames)) < midpoint).sum())


@torch.no_grad()
def order_video(model, clips, entries: list, clip_frames: int) -> dict:
    """Share (%) of (caption, clip) pairs of base/order-swapped clips where the caption scores its clip above the
    clip's frames rotated at the event boundary, and above the rendered order-swapped clip; pairs whose cut leaves
    under 2 frames on a side are skipped, as training skips them."""
    from hbci.data import frames_to_tensor
    from hbci.evaluate import encode_texts

    partners = order_swap_partners([(e["group"], e["variant"]) if e else None for e in entries])
    t = model.config.num_frames
    rows, rotated, swapped = [], [], []
    for i, partner in sorted(partners.items()):
        if not clips.masks[i].all():
            continue
        cut = boundary_cut(entries[i]["events"], clip_frames, t)
        if 2 <= cut <= t - 2:
            rows.append(i)
            rotated.append(np.concatenate([clips.frames[i, cut:], clips.frames[i, :cut]]))
            swapped.append(partner)
    if not rows:
        return {"pairs": 0, "over_rotated": None, "over_swapped": None}
    texts = encode_texts(model, [clips.items[i].captions[0] for i in rows])
    mask = torch.ones(len(rows), t)

    def scores(frames: np.ndarray) -> np.ndarray:
        video = model.encode_video(frames_to_tensor(frames), mask)
        return model.fuse(model.level_similarities(texts, video, paired=True)).numpy()

    own, rot, other = scores(clips.frames[rows]), scores(np.stack(rotated)), scores(clips.frames[swapped])
    return {"pairs": len(rows), "over_rotated": round(100 * float(np.mean(own > rot)), 1),
            "over_swapped": round(100 * float(np.mean(own > other)), 1)}


def order_caption(model, clips) -> dict:
    """Over the clips' captions with a clause-swapped form: the share (%) scoring their own clip above that form,
    and the median fused-score gap (caption minus swapped form)."""
    from hbci.caption_order import swap_event_order
    from hbci.data import frames_to_tensor
    from hbci.evaluate import encode_texts

    rows = [(i, caption, swap_event_order(caption)) for i, item in enumerate(clips.items) for caption in item.captions]
    rows = [(i, caption, swapped) for i, caption, swapped in rows if swapped and swapped != caption]
    if not rows:
        return {"captions": 0, "over_swapped_caption": None, "median_gap": None}
    owners = [i for i, _, _ in rows]
    video = model.encode_video(frames_to_tensor(clips.frames[owners]), torch.from_numpy(clips.masks[owners]).float())

    def scores(texts: list[str]) -> np.ndarray:
        return model.fuse(model.level_similarities(encode_texts(model, texts), video, paired=True)).numpy()

    gap = scores([c for _, c, _ in rows]) - scores([s for _, _, s in rows])
    return {"captions": len(rows), "over_swapped_caption": round(100 * float(np.mean(gap > 0)), 1),
            "median_gap": round(float(np.median(gap)), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a trained HBCI checkpoint (best.pt)")
    source.add_argument("--backbone", help="an hbci-pretrain backbone file (hbci-tiny)")
    ap.add_argument("--data", required=True, help="hbci-synth output folder (meta.json)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)

    from hbci.backbone import config_image_size, create_backbone
    from hbci.data import tokenize

    if args.checkpoint:
        from hbci.checkpoint import load_model

        model, _, _ = load_model(args.checkpoint)
        model.eval()
        clip, num_frames, image_size = model.clip, model.config.num_frames, model.image_size

        def encode(texts):
            return model.encode_text(*tokenize(texts, model.config.max_words))["text_global"]
    else:
        model, num_frames = None, 12
        clip = create_backbone("hbci-tiny", args.backbone).eval()
        image_size = config_image_size("hbci-tiny")

        def encode(texts):
            ids, _ = tokenize(texts, 32)
            out = clip.encode_text(ids)
            return out / out.norm(dim=-1, keepdim=True)

    clips, entries, clip_frames = split_clips(Path(args.data), args.split, num_frames, image_size)
    with torch.no_grad():
        result = {"source": args.checkpoint or args.backbone, "text_cosine": text_cosines(encode),
                  "order_text_cosine": order_text_cosines(encode),
                  "split": args.split, "axes": probe(clip, clips, entries, model)}
        if model is not None:
            result["order_video"] = order_video(model, clips, entries, clip_frames)
            result["order_caption"] = order_caption(model, clips)
    print(f"{result['source']} ({args.split} split of {args.data})")
    for pair, cos in result["text_cosine"].items():
        print(f"  text cosine {pair:26s} {cos:.3f}")
    for template, cos in result["order_text_cosine"].items():
        print(f"  text cosine, events swapped in {template!r}: {cos:.3f}")
    for axis, r in result["axes"].items():
        line = f"  {axis:10s} {r['clips']:3d} single-move clips: frame change first->last {r['frame_change']}"
        if r["cos_clip_reversed"] is not None:
            line += f", video cosine clip/reversed {r['cos_clip_reversed']}"
        print(line)
    if "order_video" in result:
        r = result["order_video"]
        print(f"  event order, {r['pairs']} two-event clips with a swapped variant: the caption prefers its clip over "
              f"its frames rotated at the event boundary {r['over_rotated']}%, over the rendered swapped clip "
              f"{r['over_swapped']}%")
        r = result["order_caption"]
        print(f"  event order, {r['captions']} captions with a clause-swapped form: the caption scores its clip above "
              f"that form {r['over_swapped_caption']}%, median gap {r['median_gap']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
