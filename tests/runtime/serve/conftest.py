"""Service test fixtures: a short synthetic video, a free port, the config writer."""

from __future__ import annotations

import socket

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")


@pytest.fixture(scope="session")
def short_video(tmp_path_factory):
    """A 4 s synthetic stream at 8 fps: idle, one clip, idle. Returns (path, caption of the clip)."""
    from hbci.synth import make_stream, random_spec

    rng = np.random.default_rng(7)
    spec = random_spec(rng)
    path = tmp_path_factory.mktemp("serve") / "short.mp4"
    make_stream(path, [0.5, spec, 0.5], 8.0, 64, rng)
    return path, spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
