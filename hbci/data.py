"""Training-side data: decode each clip once into a compact in-memory cache, tokenize captions, make batches.

Frames go through `hbci.runtime.video` (the runtime's own reader and preprocessing), so training and the
deployed runtime see identical pixels.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from hbci.datasets import VideoItem, check_videos, load_split
from hbci.runtime.errors import VideoError
from hbci.runtime.video import CLIP_MEAN, CLIP_STD, load_clip, normalize

__all__ = ["ClipSet", "decode_clips", "load_clipset", "frames_to_tensor", "tokenize", "EOT_ID"]

EOT_ID = 49407


@dataclass
class ClipSet:
    """Decoded clips: uint8 frames [N, T, S, S, 3], frame masks [N, T], and every item's captions."""

    items: list[VideoItem]
    frames: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    def captions(self) -> tuple[list[str], np.ndarray]:
        """All captions flattened, and for each the index of its video (multi-caption evaluation)."""
        texts, owners = [], []
        for index, item in enumerate(self.items):
            texts += list(item.captions)
            owners += [index] * len(item.captions)
        return texts, np.asarray(owners, dtype=np.int64)


def decode_clips(items: list[VideoItem], num_frames: int, image_size: int, workers: int = 2,
                 progress: bool = True, warn=lambda m: print(m, file=sys.stderr)) -> ClipSet:
    """Decode T uniformly sampled frames of every item (OpenCV releases the GIL, so threads decode in parallel).

    A video that yields no frames is skipped with a warning naming it, and the count is reported.
    """
    from tqdm import tqdm

    def one(item: VideoItem):
        try:
            return load_clip(item.path, num_frames, image_size)
        except VideoError as exc:
            return exc

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(tqdm(pool.map(one, items), total=len(items), desc="decoding", disable=not progress,
                            file=sys.stderr, leave=False))
    kept = [(item, r) for item, r in zip(items, results) if not isinstance(r, VideoError)]
    failed = [r for r in results if isinstance(r, VideoError)]
    if failed:
        warn(f"warning: {len(failed)} of {len(items)} videos yielded no frames and were skipped "
             f"(first: {failed[0]})")
    if not kept:
        raise VideoError(items[0].path if items else "<none>", "no video of the split could be decoded")
    frames = np.stack([r[0] for _, r in kept])
    masks = np.stack([r[1] for _, r in kept])
    return ClipSet([item for item, _ in kept], frames, masks)


def load_clipset(data_cfg, split: str, num_frames: int, image_size: int, limit: int = 0,
                 progress: bool = True) -> ClipSet:
    items = load_split(data_cfg.dataset, data_cfg.root, split)
    items = check_videos(items, data_cfg.skip_missing, warn=lambda m: print(m, file=sys.stderr))
    if limit > 0:
        items = items[:limit]
    return decode_clips(items, num_frames, image_size, progress=progress)


def frames_to_tensor(frames: np.ndarray, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """uint8 [B, T, S, S, 3] -> CLIP-normalised float32 [B, T, 3, S, S]."""
    b, t = frames.shape[:2]
    flat = normalize(frames.reshape(b * t, *frames.shape[2:]), mean, std)
    return torch.from_numpy(flat).view(b, t, *flat.shape[1:])


def tokenize(texts: list[str], context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """open_clip tokenization at the bundle's L: ids [N, L] and a mask that is 1 from SOT through EOT.

    The mask comes from the EOT position, never from ids != 0 (id 0 is a real token, '!').
    """
    import open_clip

    ids = open_clip.tokenize(texts, context_length=context_length)
    eot = (ids == EOT_ID).int().argmax(dim=1)
    mask = (torch.arange(context_length)[None] <= eot[:, None]).float()
    return ids.int(), mask
