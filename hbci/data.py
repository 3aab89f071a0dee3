"""Training-side data: each split's clips as one compact array of T frames, captions tokenized, batches made.

Without a frame cache, clips are decoded straight from the videos through `hbci.runtime.video` (the runtime's own
reader and preprocessing), so training and the deployed runtime see identical pixels. With `data.cache_dir` (see
`hbci.framecache`, written by `hbci-prepare`), the T frames are sampled from the cached frames and cropped by the
same `resize_center_crop`; the split's clip array is materialised once in the cache folder and memory-mapped, so
the processes of a multi-GPU run share one copy through the page cache instead of decoding and holding one each.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from hbci.datasets import DATASETS, VideoItem, check_videos, load_split
from hbci.framecache import CacheSpec, FrameCache, read_span
from hbci.runtime.errors import ConfigError, DatasetError, VideoError
from hbci.runtime.video import CLIP_MEAN, CLIP_STD, load_clip, normalize

__all__ = ["ClipSet", "decode_clips", "load_items", "load_clipset", "cached_clipset", "default_workers",
           "frames_to_tensor", "tokenize", "EOT_ID"]

CLIPS_FORMAT = "hbci-clips/1"

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


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def default_workers() -> int:
    """One decoding thread per CPU core this process may use, at most 16."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(16, cores))


def decode_clips(items: list[VideoItem], num_frames: int, image_size: int, workers: int = 2,
                 progress: bool = True, warn=_stderr) -> ClipSet:
    """Decode T uniformly sampled frames of every item (OpenCV releases the GIL, so threads decode in parallel).

    An item with a [start, end] span samples its frames inside the span. A video that yields no frames is
    skipped with a warning naming it, and the count is reported.
    """
    from tqdm import tqdm

    def one(item: VideoItem):
        try:
            if item.start is None and item.end is None:
                return load_clip(item.path, num_frames, image_size)
            return read_span(item.path, num_frames, image_size, item.start, item.end)
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


def _check_options(dataset: str, options: dict) -> None:
    """Refuse loader options the dataset's loader does not take, listing the ones it does."""
    if not options or dataset not in DATASETS:
        return  # an unknown dataset is reported by load_split, with the known ones
    params = inspect.signature(DATASETS[dataset]).parameters
    accepted = [name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "warn"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"data.options: the {dataset} loader has no option(s) {', '.join(unknown)}; "
                          f"its options: {', '.join(accepted) or 'none'}")


def load_items(data_cfg, split: str, warn=_stderr) -> list[VideoItem]:
    """One split's items from the dataset's loader, with `data.options`; missing videos per `data.skip_missing`."""
    _check_options(data_cfg.dataset, data_cfg.options)
    items = load_split(data_cfg.dataset, data_cfg.root, split, **data_cfg.options)
    return check_videos(items, data_cfg.skip_missing, warn=warn)


def load_clipset(data_cfg, split: str, num_frames: int, image_size: int, limit: int = 0,
                 progress: bool = True) -> ClipSet:
    items = load_items(data_cfg, split)
    if limit > 0:
        items = items[:limit]
    workers = data_cfg.workers or default_workers()
    if data_cfg.cache_dir:
        return cached_clipset(data_cfg, split, items, num_frames, image_size, workers, progress)
    return decode_clips(items, num_frames, image_size, workers=workers, progress=progress)


def cached_clipset(data_cfg, split: str, items: list[VideoItem], num_frames: int, image_size: int,
                   workers: int = 2, progress: bool = True, warn=_stderr) -> ClipSet:
    """The split's clips from the frame cache, materialised once under `<cache_dir>/clips/` and memory-mapped.

    Videos hbci-prepare could not decode (its failed.json) are skipped with a warning that counts them; a video
    the cache has never seen is an error (run hbci-prepare), never a silent fallback to other pixels.
    """
    cache = FrameCache(data_cfg.cache_dir, CacheSpec.from_config(data_cfg, image_size), data_cfg.root)
    failures = cache.failures()
    present, failed, missing = [], [], []
    for item in items:
        if cache.has(item.path):
            present.append(item)
        elif cache.key(item.path) in failures:
            failed.append(item)
        else:
            missing.append(item)
    if missing:
        raise DatasetError(f"{len(missing)} of {len(items)} videos of split {split!r} are not in the frame cache "
                           f"{cache.root} (first: {missing[0].path}); run hbci-prepare with this config first")
    if failed:
        first = failures[cache.key(failed[0].path)]
        warn(f"warning: {len(failed)} of {len(items)} videos of split {split!r} could not be decoded by "
             f"hbci-prepare and are skipped (first: {first['path']}: {first['reason']}; all in "
             f"{cache.root / 'failed.json'})")
    if not present:
        raise DatasetError(f"no video of split {split!r} is in the frame cache {cache.root}")
    rows = [[item.video_id, cache.key(item.path), item.start, item.end] for item in present]
    key = {"format": CLIPS_FORMAT, "cache": asdict(cache.spec), "num_frames": num_frames,
           "image_size": image_size, "items": rows}
    digest = hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(split).name)
    base = cache.root / "clips" / f"{name}-T{num_frames}-S{image_size}-{digest}"
    marker, frames_path, masks_path = (base.with_name(base.name + suffix)
                                       for suffix in (".json", ".frames.npy", ".masks.npy"))
    if not (marker.is_file() and frames_path.is_file() and masks_path.is_file()):
        _materialise(cache, present, num_frames, image_size, workers, progress, frames_path, masks_path)
        marker.write_text(json.dumps(key))  # written last: its presence means the arrays are complete
    return ClipSet(present, np.load(frames_path, mmap_mode="r"), np.load(masks_path))


def _materialise(cache: FrameCache, items: list[VideoItem], num_frames: int, image_size: int, workers: int,
                 progress: bool, frames_path: Path, masks_path: Path) -> None:
    """Write the clip array straight to disk (never all of it in memory), then rename it into place."""
    from tqdm import tqdm

    frames_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = frames_path.with_name(f"{frames_path.name}.{os.getpid()}.tmp")
    frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                       shape=(len(items), num_frames, image_size, image_size, 3))
    masks = np.zeros((len(items), num_frames), dtype=bool)

    def one(index: int) -> None:
        item = items[index]
        try:
            frames[index], masks[index] = cache.entry(item.path).clip(num_frames, image_size, item.start, item.end)
        except (OSError, ValueError, KeyError) as exc:  # a damaged entry file: name it, and how to mend it
            raise DatasetError(f"{cache.entry_path(item.path)}: unreadable cache entry ({type(exc).__name__}: "
                               f"{exc}); delete it and run hbci-prepare again") from None

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(tqdm(pool.map(one, range(len(items))), total=len(items), desc="clips from cache",
                      disable=not progress, file=sys.stderr, leave=False))
        frames.flush()
        del frames
        os.replace(tmp, frames_path)
        np.save(masks_path, masks)
    finally:
        if tmp.exists():
            tmp.unlink()


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
