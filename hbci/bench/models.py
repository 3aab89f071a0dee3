"""The random-weight models and bundles the benchmark measures, built once into its work folder (needs torch).

Two sizes: "small" (the shipped small config: hbci-tiny, 32 px) and "vitb32" (open_clip's ViT-B-32 architecture,
224 px); both T=12, L=32. Weights are random (no downloads): speed and memory depend on shapes, not on what was
learnt. Each bundle is built by the product's own tools: `hbci.export.bundle.build_bundle` (FP32 + FP16) and
`hbci.calibration.gate.quantize_bundle` (INT8 video encoder, MinMax on synthetic clips). The INT8 gate runs with
thresholds opened wide: on random weights retrieval figures mean nothing, and this bundle is for timing only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["SIZES", "Built", "synthetic_data", "build"]

SIZES = {"small": {}, "vitb32": {"backbone": "ViT-B-32"}}


@dataclass(frozen=True)
class Built:
    name: str
    checkpoint: Path
    bundle: Path
    data: Path  # synthetic clips: train.csv calibrates, test.csv is the held-out caption set


def synthetic_data(work: Path, quick: bool) -> Path:
    """A few synthetic clips with captions (hbci.synth), rendered once per work folder."""
    from hbci.synth import generate

    root = work / ("synth-quick" if quick else "synth")
    if not (root / "test.csv").is_file():
        n = 4 if quick else 16
        # context=0: bare training clips, since calibration reads whole videos and refuses start/end spans.
        generate(root, seed=11, n_train=n, n_val=0, n_test=n, frames=24, size=64, context=0)
    return root


def build(work: Path, name: str, quick: bool, log: Callable[[str], None]) -> Built:
    """The checkpoint and the FP32/FP16/INT8 bundle of one size, reusing what an earlier run left in `work`."""
    import torch

    from hbci.calibration.gate import GateThresholds, quantize_bundle
    from hbci.checkpoint import save_checkpoint
    from hbci.config import ExperimentConfig, ModelConfig
    from hbci.export.bundle import build_bundle
    from hbci.model import HBCI
    from hbci.runtime.bundle import load_bundle
    from hbci.runtime.errors import BundleError

    folder = work / name
    checkpoint, bundle = folder / "random.pt", folder / "bundle"
    data = synthetic_data(work, quick)
    if not checkpoint.is_file():
        log(f"[models] {name}: random-weight checkpoint")
        torch.manual_seed(0)
        config = ModelConfig(**SIZES[name])
        save_checkpoint(checkpoint, ExperimentConfig(model=config), HBCI(config).eval())
    try:
        ready = "int8" in load_bundle(bundle).precisions
    except BundleError:
        ready = False
    if not ready:
        log(f"[models] {name}: exporting the FP32/FP16 bundle")
        build_bundle(checkpoint, bundle, ("fp32", "fp16"), force=True)
        log(f"[models] {name}: INT8 video encoder (MinMax on synthetic clips)")
        wide_open = GateThresholds(min_mean_cosine=-1.0, min_clip_cosine=-1.0, max_r1_drop=100.0, max_r5_drop=100.0)
        quantize_bundle(bundle, data / "train.csv", data / "test.csv", max_samples=4 if quick else 8,
                        gate=wide_open, log=lambda m: log(f"[models] {m}"))
    return Built(name, checkpoint, bundle, data)
