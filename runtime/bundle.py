"""The model bundle: one folder with the ONNX graphs per precision, `tokenizer.json`, `golden.npz` and
`manifest.json`. This module reads and verifies bundles (no torch); `hbci.export.bundle` writes them.

Verification refuses, with the file named: an unknown format version, a manifest edited after it was written
(its `bundle_id` is the hash of its own content), and any file whose sha256 differs from the manifest's.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hbci.runtime.errors import BundleError

__all__ = ["FORMAT_VERSION", "MANIFEST", "Bundle", "load_bundle", "write_manifest", "sha256_file", "manifest_id",
           "atomic_write_bytes"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_id(manifest: dict) -> str:
    """The bundle id: sha256 of the manifest's canonical JSON without the id itself (first 16 hex digits)."""
    body = {k: v for k, v in manifest.items() if k != "bundle_id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; bundles are read by service accounts too
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its folder and manifest, with the facts the runtime needs as attributes."""

    root: Path
    manifest: dict

    @property
    def bundle_id(self) -> str:
        return self.manifest["bundle_id"]

    @property
    def num_frames(self) -> int:
        return int(self.manifest["num_frames"])

    @property
    def max_words(self) -> int:
        return int(self.manifest["max_words"])

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.manifest["mean"])

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.manifest["std"])

    @property
    def precisions(self) -> list[str]:
        return list(self.manifest["graphs"])

    def graph_path(self, graph: str, precision: str) -> Path:
        graphs = self.manifest["graphs"]
        if precision not in graphs:
            raise BundleError(f"{self.root}: no {precision} graphs in this bundle (has: {', '.join(graphs)})")
        return self.root / graphs[precision][graph]

    @property
    def tokenizer_path(self) -> Path:
        return self.root / self.manifest["tokenizer"]

    @property
    def golden_path(self) -> Path:
        return self.root / self.manifest["golden"]


def load_bundle(root: str | Path, verify_hashes: bool = True) -> Bundle:
    """Read and verify a bundle folder; raise BundleError naming the file at fault."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: not found (is {root} a model bundle?)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: not a bundle manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path}: unknown bundle format version {version!r} (this runtime reads {FORMAT_VERSION})")
    if manifest.get("bundle_id") != manifest_id(manifest):
        raise BundleError(f"{path}: manifest was modified after it was written (bundle id mismatch)")
    for name in ("files", "graphs", "num_frames", "max_words", "image_size", "mean", "std", "tokenizer", "golden"):
        if name not in manifest:
            raise BundleError(f"{path}: manifest lacks {name!r}")
    if verify_hashes:
        for rel, expected in manifest["files"].items():
            file = root / rel
            if not file.is_file():
                raise BundleError(f"{file}: listed in the manifest but missing")
            if sha256_file(file) != expected:
                raise BundleError(f"{file}: contents differ from the manifest (sha256 mismatch): "
                                  f"the file was changed or damaged")
    return Bundle(root, manifest)


def write_manifest(root: Path, manifest: dict) -> dict:
    """Hash every file the manifest names, set the bundle id, write manifest.json atomically."""
    manifest = {k: v for k, v in manifest.items() if k != "bundle_id"}
    manifest["files"] = {rel: sha256_file(root / rel) for rel in sorted(_bundle_files(root, manifest))}
    manifest["bundle_id"] = manifest_id(manifest)
    atomic_write_bytes(root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


def _bundle_files(root: Path, manifest: dict) -> list[str]:
    files = [manifest["tokenizer"], manifest["golden"]]
    for group in ("graphs", "engines"):
        for per_precision in manifest.get(group, {}).values():
            files += list(per_precision.values())
    return files
