"""The INT8 tests' fixtures: the session's tiny FP32 bundle (tests/conftest.py) and a small synthetic benchmark.

Tests that change a bundle work on a copy (`fresh_bundle`), so the session's bundle is built only once.
"""

import shutil

import pytest


@pytest.fixture(scope="session")
def calib_synth(tmp_path_factory):
    """train: 12 clips (calibration), test: 16 clips with one caption each (held out)."""
    from hbci.synth import generate

    root = tmp_path_factory.mktemp("calib_synth")
    # The classic world: bare training clips (calibration reads whole videos) and no held-out-look split, so the
    # folder holds exactly these two splits.
    generate(root, seed=5, n_train=12, n_val=0, n_test=16, frames=8, size=32, world="classic")
    return root


@pytest.fixture
def fresh_bundle(tiny_fp32_bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_fp32_bundle, out)
    return out
