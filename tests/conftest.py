"""Shared fixtures: offline, seeded, CPU-only; the shared material folder beside the repository; one random-weight
tiny HBCI checkpoint and its FP32 bundle, built once per session for the export, calibration and runtime tests."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "material"

# The smallest model that still has every component (torch is imported inside the fixtures: the runtime tests
# must collect without it).
TINY_MODEL = dict(num_frames=4, max_words=16, temporal_layers=1, num_segments=2, num_phrases=2, concepts=4)


@pytest.fixture(scope="session")
def shared_material() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared material folder not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch", reason="building a test checkpoint needs torch")
    from hbci.checkpoint import save_checkpoint
    from hbci.config import ExperimentConfig, ModelConfig
    from hbci.model import HBCI

    config = ModelConfig(**TINY_MODEL)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_ckpt") / "tiny.pt"
    save_checkpoint(path, ExperimentConfig(model=config), HBCI(config))
    return path


@pytest.fixture(scope="session")
def tiny_fp32_bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    """The tiny checkpoint exported at FP32 (no data: golden self-check on built-in inputs). Read-only: tests that
    change a bundle work on a copy."""
    from hbci.export.bundle import build_bundle

    out = tmp_path_factory.mktemp("tiny_fp32_bundle") / "bundle"
    build_bundle(tiny_checkpoint, out, ("fp32",))
    return out
