"""TensorRT engines: the logic that runs without TensorRT, and the real build where TensorRT and a GPU exist."""

import importlib.util

import numpy as np
import pytest

from hbci.export.build import EXIT_NO_ENGINES, EXIT_OK, main
from hbci.export.engines import (PROFILES, EngineSkipped, TensorRTInfo, build_engines, engine_name, input_shapes,
                                 tensorrt_status, trtexec_commands)
from hbci.runtime.bundle import load_bundle

pytestmark = pytest.mark.slow
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_engine_names_carry_graph_precision_hash_version_and_sm():
    name = engine_name("video_encoder", "fp16", "ab" * 32, TensorRTInfo("10.3.0", "87"))
    assert name == "video_encoder.fp16.abababababab.trt10.3.0.sm87.engine"


def test_profiles_come_from_the_golden_shapes_and_the_manifest(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    shapes = input_shapes(bundle, "bci_scorer")
    lo, opt, hi = PROFILES["bci_scorer"]["num_videos"]
    assert shapes["video_mask"] == ((lo, 4), (opt, 4), (hi, 4))
    assert shapes["word_mask"][2][0] == PROFILES["bci_scorer"]["num_texts"][2]
    frames = input_shapes(bundle, "video_encoder")["frames"]
    assert frames[0][1:] == (4, 3, bundle.image_size, bundle.image_size)


def test_trtexec_lines_are_strongly_typed_with_all_shapes(tiny_bundle):
    lines = trtexec_commands(load_bundle(tiny_bundle), "fp16")
    assert len(lines) == 3 and all("--stronglyTyped" in line and "--maxShapes=" in line for line in lines)
    assert "frames:32x4x3x" in lines[0]


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed: the skip path does not apply")
def test_without_tensorrt_engines_are_skipped_with_the_reason(tiny_bundle, tiny_checkpoint, tiny_synth, capsys):
    with pytest.raises(EngineSkipped, match="TensorRT is not installed"):
        tensorrt_status()
    args = ["--checkpoint", str(tiny_checkpoint), "--out", str(tiny_bundle), "--data", str(tiny_synth),
            "--split", "test"]
    assert main(args + ["--engines"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "engines skipped" in err and "trtexec --onnx=" in err
    assert main(args + ["--require-engines"]) == EXIT_NO_ENGINES


@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and an NVIDIA GPU (pip install hbci[tensorrt])")
def test_engines_build_and_match_onnxruntime(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    built = build_engines(bundle, ["fp32"], log=print)
    from hbci.runtime.backends import OrtBackend, TensorRTBackend

    feeds = bundle.golden().inputs["video_encoder"]
    trt = TensorRTBackend(bundle.root / built["fp32"]["video_encoder"]).run(feeds)
    ort = OrtBackend(bundle.graph_path("video_encoder", "fp32"), ["CPUExecutionProvider"]).run(feeds)
    assert max(float(np.abs(trt[n] - ort[n]).max()) for n in ort) < 1e-2
