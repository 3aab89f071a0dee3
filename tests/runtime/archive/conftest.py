"""Archive test fixtures: a small folder of synthetic videos (short clips, a stream with two events, broken
files) and the demo bundle's retriever."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

FPS, SIZE = 8.0, 64


@pytest.fixture
def unreadable_clips(monkeypatch):
    """Call it to make every folder named `...clips` unreadable (os.scandir raises PermissionError)."""
    import os

    def make():
        real = os.scandir

        def scandir(path="."):
            if str(path).endswith("clips"):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)

    return make


@pytest.fixture(scope="session")
def archive_retriever(runtime_bundle):
    from hbci.runtime.bundle import load_bundle
    from hbci.runtime.retriever import Retriever

    precision = "fp32" if "fp32" in load_bundle(runtime_bundle).precisions else load_bundle(runtime_bundle).precisions[0]
    return Retriever.load(runtime_bundle, precision=precision)


@pytest.fixture(scope="session")
def video_tree(tmp_path_factory) -> Path:
    """clips/ (4 clips of 3 s), stream/stream.mp4 (13 s: idle, clip, idle, clip, idle), broken/ (a file that is
    not a video, and a truncated copy of a clip). Read-only by convention: copy it before changing it."""
    from hbci.synth import make_stream, random_spec, render_clip, write_video

    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(12)
    (root / "clips").mkdir()
    for i in range(4):
        write_video(root / "clips" / f"clip{i}.mp4", render_clip(random_spec(rng), 24, SIZE), FPS)
    (root / "stream").mkdir()
    make_stream(root / "stream" / "stream.mp4", [2.0, random_spec(rng), 3.0, random_spec(rng), 2.0], FPS, SIZE, rng)
    (root / "broken").mkdir()
    (root / "broken" / "notes.mp4").write_bytes(b"this is not a video\n" * 50)
    data = (root / "clips" / "clip0.mp4").read_bytes()
    (root / "broken" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return root


@pytest.fixture
def videos(video_tree, tmp_path) -> Path:
    """A private copy of the video tree (tests change files in it)."""
    return Path(shutil.copytree(video_tree, tmp_path / "videos"))
