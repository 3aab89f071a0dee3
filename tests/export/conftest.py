"""A random-weight tiny model, its checkpoint and a small synthetic split, built once for the export tests."""

import pytest
import torch

from hbci.checkpoint import save_checkpoint
from hbci.config import DataConfig, ExperimentConfig, ModelConfig
from hbci.model import HBCI

TINY = ModelConfig(num_frames=4, max_words=16, temporal_layers=1, num_segments=2, num_phrases=2, concepts=4)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = HBCI(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, ExperimentConfig(model=TINY), model)
    return path


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    from hbci.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=3, n_train=0, n_val=0, n_test=40, frames=12, size=32)
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint, tiny_synth):
    from hbci.export.bundle import build_bundle

    out = tmp_path_factory.mktemp("bundle") / "b"
    build_bundle(tiny_checkpoint, out, ("fp32", "fp16"), data=str(tiny_synth), split="test")
    return out


@pytest.fixture(scope="session")
def data_config(tiny_synth):
    return DataConfig(root=str(tiny_synth))
