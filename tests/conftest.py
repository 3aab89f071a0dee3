"""Shared fixtures: offline, seeded, CPU-only; the shared material folder beside the repository."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "material"


@pytest.fixture(scope="session")
def shared_material() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared material folder not found at {SHARED}")
    return SHARED
