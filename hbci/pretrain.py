"""Image-text pretraining of a small backbone on still synthetic frames: `hbci-pretrain --out FILE`.

Real HBCI starts from CLIP, which learnt from images what is where in a frame; HBCI's own components then only
have to learn time. The tiny backbone trained from scratch on the synthetic videos never learns where an object
is, and without positions in the frame features no temporal module can see motion. This is the stand-in for
CLIP's pretraining: the open_clip model is trained contrastively on single frames of random synthetic scenes,
captioned with what a still image shows (colour, shape, size, faintness, position) and nothing about motion or
order, so direction and order must still be learnt by HBCI. Scenes come from their own random stream, not from
the benchmark's clips. The output is an open_clip state dict for `model.pretrained=FILE`.

Measured (400 steps, about 4 minutes on 2 cores): with hbci-tiny's fixed 2-D sin-cos position embedding the
backbone picks the right one of nine position-only captions for 90% of held-out stills; with open_clip's default
learnable embedding (initialised at std 0.09 beside patch embeddings near 0.6) it stayed at chance (12%, chance
11%), having learnt colour, shape and size only.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from hbci.runtime.bundle import atomic_write_bytes
from hbci.runtime.errors import ExitCode, HbciError, exit_code, exit_codes_epilog

__all__ = ["still_caption", "make_stills", "pretrain", "main"]

_PHASE = 7  # the rng stream of pretraining scenes, apart from hbci-synth's split streams (0, 1, 2)
_CLIP_FRAMES = 24  # frames rendered per scene, as hbci-synth's default; stills are taken at random times
_HELD_OUT = 1000  # stills kept out of training for the retrieval and position figures


def _region(x: float, y: float) -> str:
    col = "left" if x < 0.4 else "right" if x > 0.6 else ""
    row = "top" if y < 0.4 else "bottom" if y > 0.6 else ""
    if row and col:
        return f"at the {row} {col}"
    if row:
        return f"at the {row}"
    return f"on the {col}" if col else "in the centre"


_REGIONS = tuple(_region(x, y) for y in (0.2, 0.5, 0.8) for x in (0.2, 0.5, 0.8))
# Other wordings of the same places, as people caption images. CLIP knows "up" and "down" as opposites; a stand-in
# that saw only "top" and "bottom" starts with "moves up" and "moves down" as one sentence (cosine 0.999 of their
# embeddings), which nothing in video training can pull apart (see the README's reading of the ablation).
_ROW_WORDING = {"top": ("up at the top", "high up"), "bottom": ("down at the bottom", "low down")}
_COL_WORDING = {"left": ("to the left",), "right": ("to the right",)}


def _worded_region(x: float, y: float, rng: np.random.Generator) -> str:
    """`_region`'s place, half the time in other words ("up at the top left", "low down", "to the right")."""
    canonical = _region(x, y)
    if rng.random() < 0.5:
        return canonical
    col = "left" if x < 0.4 else "right" if x > 0.6 else ""
    row = "top" if y < 0.4 else "bottom" if y > 0.6 else ""
    if row:
        phrase = _ROW_WORDING[row][int(rng.integers(len(_ROW_WORDING[row])))]
        if not col:
            return phrase
        return f"{phrase} {col}" if phrase.endswith(row) else f"{phrase} on the {col}"
    return _COL_WORDING[col][0] if col else canonical


def still_caption(spec, state: np.ndarray, rng: np.random.Generator, worded: bool = False) -> str:
    """What one frame shows: every visible object with its size, faintness and position, in random order.

    state: [objects, 4] = (x, y, scale, alpha) of `hbci.synth.clip_states` at one frame. worded: places in varied
    words (`_worded_region`), as the training stills have them; otherwise the nine canonical phrases.
    """
    from hbci.synth import SHAPE_WORDS

    parts = []
    for obj, (x, y, scale, alpha) in zip(spec.objects, state):
        if alpha < 0.15:
            continue  # too faint to see at 32 px
        words = SHAPE_WORDS[obj.shape]
        size = "small " if scale < 0.8 * obj.scale else ""
        faint = "faint " if alpha < 0.6 else ""
        place = _worded_region(x, y, rng) if worded else _region(x, y)
        parts.append(f"a {faint}{size}{obj.colour} {words[rng.integers(len(words))]} {place}")
    if not parts:
        return "an empty black frame" if spec.look.background == "black" else "an empty frame"
    rng.shuffle(parts)
    return " and ".join(parts)


def _stills_chunk(args) -> tuple[np.ndarray, list[str]]:
    from hbci.runtime.video import resize_center_crop
    from hbci.synth import WORLDS, clip_states, random_spec, render_clip

    seed, chunk, scenes, per_scene, render_size, image_size, world = args
    rng = np.random.default_rng([seed, _PHASE, chunk])
    images, captions = [], []
    for _ in range(scenes):
        spec = random_spec(rng, world=WORLDS[world])
        frames = render_clip(spec, _CLIP_FRAMES, render_size)
        states = clip_states(spec, _CLIP_FRAMES)
        for t in rng.choice(_CLIP_FRAMES, per_scene, replace=False):
            images.append(frames[t])
            captions.append(still_caption(spec, states[t], rng, worded=True))
    return resize_center_crop(np.stack(images), image_size), captions


def make_stills(count: int, seed: int, image_size: int, render_size: int = 64, per_scene: int = 4,
                workers: int = 1, world: str = "wide") -> tuple[np.ndarray, list[str]]:
    """`count` captioned stills: uint8 [count, S, S, 3] (rendered at hbci-synth's size, then resized and cropped by
    the runtime's preprocessing) and their captions. Deterministic in (count, seed, world), whatever `workers` is.
    world: "wide" (the training looks of hbci-synth's wide world; never its held-out look) or "classic"."""
    if world not in ("wide", "classic"):
        raise ValueError(f"world must be 'wide' or 'classic', got {world!r}")
    scenes = math.ceil(count / per_scene)
    chunk_scenes = 500
    jobs = [(seed, i, min(chunk_scenes, scenes - i * chunk_scenes), per_scene, render_size, image_size, world)
            for i in range(math.ceil(scenes / chunk_scenes))]
    if workers > 1:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_stills_chunk, jobs))
    else:
        parts = [_stills_chunk(job) for job in jobs]
    images = np.concatenate([p[0] for p in parts])[:count]
    captions = [c for p in parts for c in p[1]][:count]
    return images, captions


def _held_out_figures(model, images: np.ndarray, captions: list[str], context_length: int) -> dict:
    """On held-out stills: image->text and text->image R@1 (%), identical captions counting as correct (a still
    with the same description is a right answer); and, on stills of one object, how often (%) the caption with the
    right position beats the same caption with each of the other eight positions (chance 11%): whether the
    backbone learnt where."""
    import torch

    from hbci.data import frames_to_tensor, tokenize

    model.eval()
    with torch.no_grad():
        pictures = model.encode_image(frames_to_tensor(images[:, None])[:, 0], normalize=True)
        texts = model.encode_text(tokenize(captions, context_length)[0].long(), normalize=True)
        sim = (pictures @ texts.T).numpy()
        hits = []
        for picture, caption in zip(pictures, captions):
            region = next((r for r in _REGIONS if caption.endswith(" " + r)), None)
            if region is None or " and " in caption:
                continue
            stem = caption[: -len(region)]
            options = model.encode_text(tokenize([stem + r for r in _REGIONS], context_length)[0].long(),
                                        normalize=True)
            hits.append(_REGIONS[int((options @ picture).argmax())] == region)
    same = np.array(captions)[:, None] == np.array(captions)[None]
    return {"held_out_i2t_R@1": round(float(same[np.arange(len(captions)), sim.argmax(1)].mean() * 100), 1),
            "held_out_t2i_R@1": round(float(same[sim.argmax(0), np.arange(len(captions))].mean() * 100), 1),
            "held_out_position_accuracy": round(float(np.mean(hits) * 100), 1) if hits else float("nan")}


def pretrain(backbone: str, out: Path, steps: int = 400, batch_size: int = 256, lr: float = 1e-3,
             images: int = 40000, seed: int = 0, workers: int = 0, progress: bool = True,
             world: str = "wide") -> dict:
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from hbci.backbone import backbone_info, create_backbone
    from hbci.data import default_workers, frames_to_tensor, tokenize
    from hbci.train import warmup_cosine

    torch.manual_seed(seed)
    model = create_backbone(backbone)
    info = backbone_info(model)
    t0 = time.time()
    stills, captions = make_stills(images + _HELD_OUT, seed, info["image_size"], workers=workers or default_workers(),
                                   world=world)
    test_images, test_captions = stills[images:], captions[images:]
    stills, captions = stills[:images], captions[:images]
    ids_all, _ = tokenize(captions, info["context_length"])
    caption_ids = np.unique(captions, return_inverse=True)[1]  # equal captions, equal ids
    render_seconds = time.time() - t0

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, 0.1))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(images, generator=generator).numpy()
    t0 = time.time()
    model.train()
    first_loss = math.nan
    bar = tqdm(range(steps), desc="pretraining", disable=not progress, file=sys.stderr, leave=False)
    for step in bar:
        start = (step * batch_size) % images
        if start + batch_size > images:
            order = torch.randperm(images, generator=generator).numpy()
            start = 0
        index = np.sort(order[start:start + batch_size])
        image_features = model.encode_image(frames_to_tensor(stills[index][:, None])[:, 0], normalize=True)
        text_features = model.encode_text(ids_all[index].long(), normalize=True)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        # Stills with the same caption are not negatives of each other: they share the target mass.
        same = torch.from_numpy(caption_ids[index][:, None] == caption_ids[index][None]).float()
        target = same / same.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step == 0:
            first_loss = loss.item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    train_seconds = time.time() - t0
    figures = _held_out_figures(model, test_images, test_captions, info["context_length"])
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)
    atomic_write_bytes(out, weights.getvalue())
    result = {"backbone": backbone, "out": str(out), "steps": steps, "batch_size": batch_size, "images": images,
              "seed": seed, "world": world, "first_loss": round(first_loss, 4), "final_loss": round(float(loss.item()), 4),
              **figures, "render_seconds": round(render_seconds, 1), "train_seconds": round(train_seconds, 1)}
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(result, indent=1) + "\n").encode())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hbci-pretrain", description=__doc__.splitlines()[0],
                                     epilog=exit_codes_epilog((ExitCode.OK, ExitCode.INTERNAL, ExitCode.USAGE)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the state dict to write (.pt); a .json summary goes beside it")
    parser.add_argument("--backbone", default="hbci-tiny", help="open_clip model name (default: hbci-tiny)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--images", type=int, default=40000, help="distinct training stills")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="processes rendering stills (0: one per core)")
    parser.add_argument("--world", choices=("wide", "classic"), default="wide",
                        help="the synthetic world the stills come from (hbci-synth --world)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        result = pretrain(args.backbone, Path(args.out), args.steps, args.batch_size, args.lr, args.images,
                          args.seed, args.workers, progress=not args.no_progress, world=args.world)
    except HbciError as exc:
        print(f"hbci-pretrain: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
