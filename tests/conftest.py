"""Shared fixtures: offline, seeded, CPU-only; the external material folder (optional, see tests/material.py); one
random-weight tiny HBCI checkpoint and its FP32 bundle, built once per session for the export, calibration and
runtime tests. A line at the end of the run counts the tests skipped for want of the external folder."""

import os
from pathlib import Path

import pytest

from material import EXTERNAL, EXTERNAL_REASON

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The smallest model that still has every component (torch is imported inside the fixtures: the runtime tests
# must collect without it).
TINY_MODEL = dict(num_frames=4, max_words=16, temporal_layers=1, num_segments=2, num_phrases=2, concepts=4)


@pytest.fixture(scope="session")
def shared_material() -> Path:
    """The external material folder; tests that need it skip (with the reason) where it is absent."""
    if not EXTERNAL.is_dir():
        pytest.skip(EXTERNAL_REASON)
    return EXTERNAL


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    external = sum(1 for report in skipped if EXTERNAL_REASON in str(report.longrepr))
    if external:
        terminalreporter.write_line(f"{external} tests skipped for want of the external material folder {EXTERNAL} "
                                    f"(real footage and annotation files the project may not redistribute; set "
                                    f"HBCI_TEST_MATERIAL to a copy). pytest -rs lists every skip with its reason.")


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
