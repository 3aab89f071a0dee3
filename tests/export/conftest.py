"""A small synthetic split and the tiny checkpoint (tests/conftest.py) exported at FP32 and FP16 with data,
built once for the export tests."""

import pytest

from hbci.config import DataConfig


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
