"""Dataset loaders: each turns a dataset's real annotation files into a list of `VideoItem`s.

One registry, one small module per dataset. `load_split(name, root, split)` is the single entry point.
"""

from hbci.datasets.base import DATASETS, VideoItem, check_videos, load_split, register

__all__ = ["DATASETS", "VideoItem", "check_videos", "load_split", "register"]

# Importing the loader modules registers them.
from hbci.datasets import activitynet, didemo, generic_csv, msrvtt, msvd  # noqa: E402,F401
