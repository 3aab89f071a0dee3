"""Runtime test fixtures: a bundle (the shipped demo bundle, or a random-weight tiny one built with torch when the
demo bundle is absent) and small synthetic videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hbci.runtime.demo import BUNDLE_DIR


def shipped_bundle() -> Path | None:
    return BUNDLE_DIR if (BUNDLE_DIR / "manifest.json").is_file() else None


@pytest.fixture(scope="session")
def runtime_bundle(request) -> Path:
    """A bundle for runtime tests: the shipped demo bundle when present (fast, no torch), else the session's random
    tiny FP32 bundle (tests/conftest.py; needs torch)."""
    if shipped_bundle() is not None:
        return BUNDLE_DIR
    return request.getfixturevalue("tiny_fp32_bundle")


@pytest.fixture(scope="session")
def trained_bundle() -> Path:
    """The shipped demo bundle, trained and calibrated: needed where detections must be right."""
    if shipped_bundle() is None:
        pytest.skip(f"the demo bundle is not shipped at {BUNDLE_DIR} (scripts/build_demo_bundle.sh)")
    return BUNDLE_DIR


@pytest.fixture(scope="session")
def stream_video(tmp_path_factory):
    """A 13 s synthetic stream at 8 fps: idle, a clip, idle, a clip, idle. Returns (path, segments)."""
    from hbci.synth import make_stream, random_spec

    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("stream") / "stream.mp4"
    segments = make_stream(path, [2.0, random_spec(rng), 3.0, random_spec(rng), 2.0], 8.0, 64, rng)
    return path, segments
