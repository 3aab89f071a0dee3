"""A random-weight tiny model exported once (FP32 bundle) and a small synthetic benchmark, for the INT8 tests.

Tests that change a bundle work on a copy (`fresh_bundle`), so the session's bundle is built only once.
"""

import shutil

import pytest
import torch

from hbci.checkpoint import save_checkpoint
from hbci.config import ExperimentConfig, ModelConfig
from hbci.model import HBCI

TINY = ModelConfig(num_frames=4, max_words=16, temporal_layers=1, num_segments=2, num_phrases=2, concepts=4)


@pytest.fixture(scope="session")
def calib_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("calib_ckpt") / "tiny.pt"
    save_checkpoint(path, ExperimentConfig(model=TINY), HBCI(TINY))
    return path


@pytest.fixture(scope="session")
def calib_synth(tmp_path_factory):
    """train: 12 clips (calibration), test: 16 clips with one caption each (held out)."""
    from hbci.synth import generate

    root = tmp_path_factory.mktemp("calib_synth")
    generate(root, seed=5, n_train=12, n_val=0, n_test=16, frames=8, size=32)
    return root


@pytest.fixture(scope="session")
def calib_bundle(tmp_path_factory, calib_checkpoint):
    from hbci.export.bundle import build_bundle

    out = tmp_path_factory.mktemp("calib_bundle") / "bundle"
    build_bundle(calib_checkpoint, out, ("fp32",))
    return out


@pytest.fixture
def fresh_bundle(calib_bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(calib_bundle, out)
    return out
