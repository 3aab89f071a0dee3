"""Where the tests' files are: tests/data (in the repository) and the external material folder (optional).

tests/data holds fixtures the project may redistribute (see tests/data/SOURCES.md). The external folder,
../shared/material beside the repository or $HBCI_TEST_MATERIAL, holds real footage and annotation files that
cannot be shipped; tests that need it skip with `EXTERNAL_REASON`, and tests/conftest.py counts them in the summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["DATA", "DATA_MEDIA", "MEDIA_FACTS", "EXTERNAL", "EXTERNAL_MEDIA", "EXTERNAL_REASON", "external_media"]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
DATA_MEDIA = DATA / "media"
# What a reader must get from each of our media files (written by tests/data/make_media.py).
MEDIA_FACTS: dict[str, dict] = json.loads((DATA_MEDIA / "media.json").read_text())["files"]

EXTERNAL = Path(os.environ.get("HBCI_TEST_MATERIAL") or ROOT.parent / "shared" / "material")
EXTERNAL_MEDIA = EXTERNAL / "media"
EXTERNAL_REASON = (f"needs the external material folder {EXTERNAL} (real footage and annotation files the project "
                   f"may not redistribute; set HBCI_TEST_MATERIAL to a copy)")


def external_media() -> list[str]:
    """Names of the external media files, [] when the folder is absent."""
    return sorted(p.name for p in EXTERNAL_MEDIA.iterdir()) if EXTERNAL_MEDIA.is_dir() else []
