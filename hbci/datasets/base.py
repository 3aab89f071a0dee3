"""The dataset registry and the item every loader yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hbci.runtime.errors import DatasetError

__all__ = ["VideoItem", "DATASETS", "register", "load_split", "check_videos"]


@dataclass(frozen=True)
class VideoItem:
    """One video (or one [start, end] span of it) and all its captions, in annotation order.

    Optional timing for training windows (seconds from the video's start; see `hbci.data.draw_window`):
    event_start/event_end bound what the captions describe inside the span (default: the span), order_cut is where
    one described event ends and the next begins (swapping the parts before and after it contradicts the
    captions), time_sensitive says the span played backwards contradicts them, order_negative is another video of
    the split showing the same scene with the described events in the other order, at the same times from its
    span's start, which the captions must not match.
    """

    video_id: str
    path: Path
    captions: tuple[str, ...]
    start: float | None = None
    end: float | None = None
    extra: dict = field(default_factory=dict, compare=False)
    event_start: float | None = None
    event_end: float | None = None
    order_cut: float | None = None
    time_sensitive: bool = False
    order_negative: Path | None = None


Loader = Callable[..., list[VideoItem]]
DATASETS: dict[str, Loader] = {}


def register(name: str):
    def wrap(fn: Loader) -> Loader:
        DATASETS[name] = fn
        return fn
    return wrap


def load_split(name: str, root: str | Path, split: str, **options) -> list[VideoItem]:
    """Load one split of a registered dataset. Options are the loader's keyword arguments."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](Path(root), split, **options)


def check_videos(items: list[VideoItem], skip_missing: bool, warn: Callable[[str], None] = print) -> list[VideoItem]:
    """Report videos whose file is missing, with ids and paths and a count: fatal, or skipped when asked."""
    missing = [item for item in items if not item.path.is_file()]
    if not missing:
        return items
    listing = "; ".join(f"{item.video_id} ({item.path})" for item in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    message = f"{len(missing)} of {len(items)} videos are missing: {listing}{more}"
    if not skip_missing:
        raise DatasetError(message + " (pass skip_missing to train on the rest)")
    warn(f"warning: {message}; skipped")
    return [item for item in items if item.path.is_file()]
