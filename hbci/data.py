"""Training-side data: evaluation clips, the training frame pool and its windows, captions tokenized.

Evaluation splits are `ClipSet`s: each clip's T frames at the segment centres of its span, exactly what the runtime
samples. Training draws windows at random from a `FramePool`: every training item's frames around its span (a
little more than the largest window shift on each side, at most `data.pool_frames`), resized and centre-cropped
once; `hbci.sampling` says how a window is drawn and when it still matches its caption.

Without a frame cache, videos are decoded straight through `hbci.runtime.video` (the runtime's own reader and
preprocessing), so training and the deployed runtime see identical pixels. With `data.cache_dir` (see
`hbci.framecache`, written by `hbci-prepare`), frames come from the cache and are cropped by the same
`resize_center_crop`; clip sets and pools are materialised once in the cache folder and memory-mapped, so the
processes of a multi-GPU run share one copy through the page cache instead of decoding and holding one each.
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
from hbci.framecache import CacheSpec, FrameCache, read_span, span_indices, timestamps
from hbci.runtime.errors import ConfigError, DatasetError, VideoError
from hbci.runtime.video import CLIP_MEAN, CLIP_STD, load_clip, normalize, read_indices, resize_center_crop, sample_indices
from hbci.sampling import WindowPolicy, draw_window, partial_windows

__all__ = ["ClipSet", "FramePool", "WindowBatch", "decode_clips", "decode_pool", "load_items", "load_clipset",
           "load_pool", "cached_clipset", "cached_pool", "pool_span", "window_policy", "default_workers",
           "frames_to_tensor", "tokenize", "EOT_ID"]

CLIPS_FORMAT = "hbci-clips/1"
POOL_FORMAT = "hbci-pool/1"

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


def _cached_items(data_cfg, split: str, items: list[VideoItem], image_size: int, warn):
    """(cache, the items it holds). Videos hbci-prepare could not decode (its failed.json) are skipped with a
    warning that counts them; a video the cache has never seen is an error (run hbci-prepare), never a silent
    fallback to other pixels."""
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
    return cache, present


def _materialised_name(cache: FrameCache, split: str, kind: str, key: dict) -> Path:
    digest = hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(split).name)
    return cache.root / "clips" / f"{name}-{kind}-{digest}"


def cached_clipset(data_cfg, split: str, items: list[VideoItem], num_frames: int, image_size: int,
                   workers: int = 2, progress: bool = True, warn=_stderr) -> ClipSet:
    """The split's clips from the frame cache, materialised once under `<cache_dir>/clips/` and memory-mapped."""
    cache, present = _cached_items(data_cfg, split, items, image_size, warn)
    rows = [[item.video_id, cache.key(item.path), item.start, item.end] for item in present]
    key = {"format": CLIPS_FORMAT, "cache": asdict(cache.spec), "num_frames": num_frames,
           "image_size": image_size, "items": rows}
    base = _materialised_name(cache, split, f"T{num_frames}-S{image_size}", key)
    marker, frames_path, masks_path = (base.with_name(base.name + suffix)
                                       for suffix in (".json", ".frames.npy", ".masks.npy"))
    if not (marker.is_file() and frames_path.is_file() and masks_path.is_file()):
        masks = np.zeros((len(present), num_frames), dtype=bool)

        def fill(frames, index):
            item = present[index]
            frames[index], masks[index] = cache.entry(item.path).clip(num_frames, image_size, item.start, item.end)

        _write_memmap(frames_path, (len(present), num_frames, image_size, image_size, 3), fill, len(present),
                      workers, progress, "clips from cache", cache, present)
        np.save(masks_path, masks)
        marker.write_text(json.dumps(key))  # written last: its presence means the arrays are complete
    return ClipSet(present, np.load(frames_path, mmap_mode="r"), np.load(masks_path))


def _write_memmap(path: Path, shape: tuple, fill, count: int, workers: int, progress: bool, desc: str,
                  cache: FrameCache, items: list[VideoItem] | None = None) -> None:
    """Write an array straight to disk (never all of it in memory) by `fill(array, index)` for every index, then
    rename it into place. A damaged cache entry is named, with how to mend it."""
    from tqdm import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)

    def one(index: int) -> None:
        try:
            fill(array, index)
        except (OSError, ValueError, KeyError) as exc:
            where = cache.entry_path(items[index].path) if items else cache.root
            raise DatasetError(f"{where}: unreadable cache entry ({type(exc).__name__}: {exc}); delete it and run "
                               f"hbci-prepare again") from None

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(tqdm(pool.map(one, range(count)), total=count, desc=desc, disable=not progress, file=sys.stderr,
                      leave=False))
        array.flush()
        del array
        os.replace(tmp, path)
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


# ------------------------------------------------------------------------------------------------ training pool
@dataclass
class WindowBatch:
    """Training windows: frames, masks, and which of them have temporal negatives."""

    frames: np.ndarray  # uint8 [B, T, S, S, 3]
    masks: np.ndarray  # bool [B, T]
    reverse: np.ndarray  # bool [B]: the window played backwards contradicts its captions
    cut: np.ndarray  # int64 [B]: frames [cut:] then [:cut] put its events in the other order; 0: no such cut
    rendered: np.ndarray | None = None  # uint8 [B, T, S, S, 3]: the same window of the item's order_negative video
    rendered_valid: np.ndarray | None = None  # bool [B]: it exists and the window shows both events
    partial: np.ndarray | None = None  # int64 [B, T]: a window holding one event whole and little of the other,
    #                                    as flat indices (row * T + frame) into this batch's frames (`partial_window`)
    partial_valid: np.ndarray | None = None  # bool [B]: the row has one


def _frames_before(times: np.ndarray, t: float | None, open_end: int) -> int:
    """How many of a window's frame times lie before `t` seconds; `open_end` where t is None (an open span end)."""
    return open_end if t is None else int((times < t - 1e-6).sum())


@dataclass
class FramePool:
    """Every training item's frames around its span, resized and centre-cropped: uint8 frames [total, S, S, 3],
    their times in seconds in the item's video, and offsets [N + 1] (item i holds frames[offsets[i]:offsets[i+1]])."""

    items: list[VideoItem]
    frames: np.ndarray
    times: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    def item_times(self, index: int) -> np.ndarray:
        return self.times[self.offsets[index]:self.offsets[index + 1]]

    def order_partners(self) -> np.ndarray:
        """int64 [N]: for each item the pool index of its `order_negative` video's item, -1 where it has none or
        the pool lacks it (first item of that video)."""
        first: dict[Path, int] = {}
        for i, item in enumerate(self.items):
            first.setdefault(Path(item.path), i)
        return np.array([first.get(Path(item.order_negative), -1) if item.order_negative is not None else -1
                         for item in self.items], dtype=np.int64)

    def windows(self, index: np.ndarray, num_frames: int, policy: WindowPolicy, seed: int,
                partners: np.ndarray | None = None, partial: bool = False) -> WindowBatch:
        """One window per item of `index`, drawn by `hbci.sampling.draw_window` with a generator seeded by
        (seed, item): the same windows in one process or split over several, and after a resume.

        partners (`order_partners()`): also cut the same window, at the same times from the span's start, out of
        each item's order-swapped video, valid where the window shows part of both events (as `cut`).

        partial: also give each two-event window a partial negative (`hbci.sampling.partial_window`), spliced from
        this batch's frames, its neighbour being the next full row's window."""
        b = len(index)
        size = self.frames.shape[1:]
        frames = np.zeros((b, num_frames, *size), np.uint8)
        masks = np.zeros((b, num_frames), bool)
        reverse, cut = np.zeros(b, bool), np.zeros(b, np.int64)
        rendered = np.zeros_like(frames) if partners is not None else None
        rendered_valid = np.zeros(b, bool) if partners is not None else None
        slots = np.zeros((b, 3), np.int64) if partial else None  # window frames before: the events, the cut, the end
        for row, i in enumerate(index):
            item, times = self.items[i], self.item_times(i)
            picked = draw_window(times, (item.start, item.end), (item.event_start, item.event_end), num_frames,
                                 policy, np.random.default_rng([seed, int(i)]), item.order_cut)
            frames[row, :len(picked)] = self.frames[self.offsets[i] + picked]
            masks[row, :len(picked)] = True
            reverse[row] = item.time_sensitive
            if item.order_cut is not None:
                shown = times[picked]
                k = _frames_before(shown, item.order_cut, 0)
                cut[row] = k if 2 <= k <= len(picked) - 2 else 0  # both parts must show something of an event
                if partial:
                    first = item.event_start if item.event_start is not None else item.start
                    last = item.event_end if item.event_end is not None else item.end
                    slots[row] = (_frames_before(shown, first, 0), k, _frames_before(shown, last, len(shown)))
            if partners is not None and cut[row] > 0 and partners[i] >= 0:
                rendered[row, :len(picked)] = self._frames_at(int(partners[i]), times[picked] - (item.start or 0.0))
                rendered_valid[row] = True
        partial_order, partial_valid = None, None
        if partial:
            rngs = [np.random.default_rng([seed, int(i), 1]) for i in index]
            partial_order, partial_valid = partial_windows(masks, cut, slots, policy.min_event_share * 2 / 3, rngs)
        return WindowBatch(frames, masks, reverse, cut, rendered, rendered_valid, partial_order, partial_valid)

    def _frames_at(self, index: int, offsets: np.ndarray) -> np.ndarray:
        """Item `index`'s frames nearest to `offsets` seconds from its span's start."""
        times = self.item_times(index)
        nearest = np.abs(times[None] - (offsets + (self.items[index].start or 0.0))[:, None]).argmin(1)
        return self.frames[self.offsets[index] + nearest]


def window_policy(data_cfg) -> WindowPolicy:
    return WindowPolicy(max_shift=data_cfg.window_shift, min_event_share=data_cfg.min_event_share,
                        min_clip_share=data_cfg.min_clip_share, random_frames=data_cfg.frame_sampling == "random",
                        each_event=data_cfg.each_event_share, max_stretch=data_cfg.window_stretch)


def pool_span(times: np.ndarray, item: VideoItem, max_shift: float, most: int) -> np.ndarray:
    """Indices of the frames a pool keeps for an item: those within a little more than `max_shift` of the span's
    length around it (the whole video for an item without a span), at most `most` (uniformly subsampled)."""
    start, end = item.start, item.end
    if start is not None and end is not None:
        margin = max_shift * (end - start) * 1.1 + 1e-3  # a frame more than the shift: spans end on a frame time
        start, end = start - margin, end + margin
    keep = span_indices(times, start, end)
    return keep[sample_indices(len(keep), most)] if len(keep) > most else keep


def _pool_plan(items, times_of, max_shift, most):
    plans = [pool_span(times_of(item), item, max_shift, most) for item in items]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in plans])]).astype(np.int64)
    return plans, offsets


def decode_pool(items: list[VideoItem], image_size: int, max_shift: float, most: int, workers: int = 2,
                progress: bool = True, warn=_stderr) -> FramePool:
    """Decode the pool straight from the videos (held in memory). A video that yields no frames is skipped with a
    warning that counts and names it."""
    from tqdm import tqdm

    def times_of(item):
        try:
            return timestamps(item.path)[0]
        except VideoError as exc:
            return exc

    with ThreadPoolExecutor(max(1, workers)) as pool:
        found = list(tqdm(pool.map(times_of, items), total=len(items), desc="timing", disable=not progress,
                          file=sys.stderr, leave=False))
    failed = [t for t in found if isinstance(t, VideoError)]
    if failed:
        warn(f"warning: {len(failed)} of {len(items)} videos yielded no frames and were skipped "
             f"(first: {failed[0]})")
    kept = [(item, t) for item, t in zip(items, found) if not isinstance(t, VideoError)]
    if not kept:
        raise VideoError(items[0].path if items else "<none>", "no video of the split could be decoded")
    times_by_item = {id(item): t for item, t in kept}
    items = [item for item, _ in kept]
    plans, offsets = _pool_plan(items, lambda item: times_by_item[id(item)], max_shift, most)
    frames = np.zeros((int(offsets[-1]), image_size, image_size, 3), np.uint8)
    got = np.ones(len(frames), bool)

    def one(index: int) -> None:
        item, plan = items[index], plans[index]
        crops, read = read_indices(item.path, plan, lambda f: resize_center_crop(f[None], image_size)[0])
        position = np.searchsorted(plan, read)
        frames[offsets[index] + position] = np.stack(crops) if crops else frames[:0]
        got[offsets[index]:offsets[index + 1]] = np.isin(plan, read)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(tqdm(pool.map(one, range(len(items))), total=len(items), desc="decoding pool", disable=not progress,
                  file=sys.stderr, leave=False))
    times = np.concatenate([times_by_item[id(item)][plan] for item, plan in zip(items, plans)])
    return _drop_unread(FramePool(items, frames, times, offsets), got)


def _drop_unread(pool: FramePool, got: np.ndarray) -> FramePool:
    """A stream that broke off after its first pass keeps the frames before the damage."""
    if got.all():
        return pool
    counts = np.add.reduceat(got, pool.offsets[:-1]) if len(pool.items) else np.zeros(0, np.int64)
    keep_items = counts > 0
    offsets = np.concatenate([[0], np.cumsum(counts[keep_items])]).astype(np.int64)
    return FramePool([it for it, k in zip(pool.items, keep_items) if k], pool.frames[got], pool.times[got], offsets)


def cached_pool(data_cfg, split: str, items: list[VideoItem], image_size: int, max_shift: float, most: int,
                workers: int = 2, progress: bool = True, warn=_stderr) -> FramePool:
    """The pool from the frame cache, materialised once under `<cache_dir>/clips/` and memory-mapped (skipping and
    refusing videos as `cached_clipset` does)."""
    cache, present = _cached_items(data_cfg, split, items, image_size, warn)
    entries_times = {}

    def times_of(item):
        key = cache.key(item.path)
        if key not in entries_times:
            entries_times[key] = cache.entry(item.path).times
        return entries_times[key]

    plans, offsets = _pool_plan(present, times_of, max_shift, most)
    rows = [[item.video_id, cache.key(item.path), item.start, item.end] for item in present]
    key = {"format": POOL_FORMAT, "cache": asdict(cache.spec), "image_size": image_size, "max_shift": max_shift,
           "most": most, "items": rows}
    base = _materialised_name(cache, split, f"pool-S{image_size}", key)
    marker, frames_path, times_path = (base.with_name(base.name + suffix)
                                       for suffix in (".json", ".frames.npy", ".times.npy"))
    if not (marker.is_file() and frames_path.is_file() and times_path.is_file()):
        def fill(frames, index):
            item = present[index]
            frames[offsets[index]:offsets[index + 1]] = resize_center_crop(
                cache.entry(item.path).frames(plans[index]), image_size)

        _write_memmap(frames_path, (int(offsets[-1]), image_size, image_size, 3), fill, len(present), workers,
                      progress, "pool from cache", cache, present)
        np.save(times_path, np.concatenate([times_of(item)[plan] for item, plan in zip(present, plans)]))
        marker.write_text(json.dumps(key))  # written last: its presence means the arrays are complete
    return FramePool(present, np.load(frames_path, mmap_mode="r"), np.load(times_path), offsets)


def load_pool(data_cfg, split: str, image_size: int, limit: int = 0, progress: bool = True) -> FramePool:
    """The training pool of a split (from the cache when `data.cache_dir` is set)."""
    items = load_items(data_cfg, split)
    if limit > 0:
        items = items[:limit]
    workers = data_cfg.workers or default_workers()
    if data_cfg.cache_dir:
        return cached_pool(data_cfg, split, items, image_size, data_cfg.window_shift, data_cfg.pool_frames,
                           workers, progress)
    return decode_pool(items, image_size, data_cfg.window_shift, data_cfg.pool_frames, workers, progress)
