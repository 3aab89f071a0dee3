"""Export end to end: graphs match torch, retrieval through the runtime equals torch, bundles are verified."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from hbci.checkpoint import load_model
from hbci.data import load_clipset
from hbci.evaluate import encode_texts, encode_videos, score_all
from hbci.metrics import ranks
from hbci.runtime.bundle import load_bundle
from hbci.runtime.errors import BundleError
from hbci.runtime.retriever import Retriever

pytestmark = pytest.mark.slow


def test_graphs_are_opset_18_or_newer_and_checker_clean(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    for precision in ("fp32", "fp16"):
        for graph in ("video_encoder", "text_encoder", "bci_scorer"):
            proto = onnx.load(str(bundle.graph_path(graph, precision)))
            onnx.checker.check_model(proto)
            assert next(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 18


def test_scorer_graph_multiplies_with_matmul_not_einsum(tiny_bundle):
    """Training scores all pairs with einsum (`hbci.layers.broadcast_matmul`); the exported scorer keeps MatMul,
    which TensorRT's ONNX parser takes with broadcasting."""
    ops = {n.op_type for n in onnx.load(str(load_bundle(tiny_bundle).graph_path("bci_scorer", "fp32"))).graph.node}
    assert "MatMul" in ops and "Einsum" not in ops


def test_fp16_graphs_keep_fp32_io_and_layernorm(tiny_bundle):
    proto = onnx.load(str(load_bundle(tiny_bundle).graph_path("video_encoder", "fp16")))
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in proto.graph.input)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in proto.graph.output)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    ln_weights = {n.input[1] for n in proto.graph.node if n.op_type == "LayerNormalization"}
    assert ln_weights and all(t.data_type == onnx.TensorProto.FLOAT
                              for t in proto.graph.initializer if t.name in ln_weights)


def test_manifest_records_differences_at_untraced_batch_sizes(tiny_bundle):
    manifest = load_bundle(tiny_bundle).manifest
    diffs = manifest.validation.max_abs_diff_vs_torch
    for graph in ("video_encoder", "text_encoder", "bci_scorer"):
        assert set(diffs["fp32"][graph]) == {"1", "3"}
        assert max(diffs["fp32"][graph].values()) < 1e-4
        assert max(diffs["fp16"][graph].values()) < 5e-2


def test_runtime_retrieval_equals_torch(tiny_bundle, tiny_checkpoint, data_config):
    model, _, _ = load_model(tiny_checkpoint)
    clips = load_clipset(data_config, "test", model.config.num_frames, model.image_size, progress=False)
    texts, owners = clips.captions()
    torch_scores, _ = score_all(model, encode_texts(model, texts), encode_videos(model, clips))
    runtime = Retriever.load(tiny_bundle, backend="onnxruntime-cpu", precision="fp32")
    scores = runtime.score(runtime.encode_text(texts), runtime.encode_video(clips.frames, clips.masks))
    assert np.abs(scores - torch_scores).max() < 1e-4
    # Ranks equal except where two items tie within float noise.
    for a, b in ((scores, torch_scores), (scores.T, torch_scores.T)):
        ra, rb = ranks(a, np.arange(len(a)) if a.shape[0] == a.shape[1] else None), ranks(b)
        assert (ra == rb).mean() == 1.0
    retrieval = load_bundle(tiny_bundle).manifest.validation.retrieval
    for direction in ("t2v", "v2t"):
        for k in ("R@1", "R@5", "R@10"):
            assert retrieval["fp32"][direction][k] == retrieval["torch"][direction][k]
            assert abs(retrieval["fp16"][direction][k] - retrieval["torch"][direction][k]) <= 0.5 + 1e-9


def test_score_statistics_and_thresholds_are_recorded(tiny_bundle):
    stats = load_bundle(tiny_bundle).manifest.score_stats
    assert stats.positive["n"] == 40 and stats.negative["n"] == 40 * 39
    assert stats.threshold.off <= stats.threshold.on


def test_tampered_file_is_refused_naming_it(tiny_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    path = copy / "fp32" / "bci_scorer.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="bci_scorer.onnx"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="bci_scorer.onnx"):
        Retriever.load(copy)


def test_unknown_format_version_and_edited_manifest_are_refused(tiny_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest | {"format_version": 99}))
    with pytest.raises(BundleError, match="format version 99"):
        load_bundle(copy)
    (copy / "manifest.json").write_text(json.dumps(manifest | {"num_frames": 8}))
    with pytest.raises(BundleError, match="manifest.json.*modified"):
        load_bundle(copy)


def test_rerun_skips_an_up_to_date_bundle(tiny_bundle, tiny_checkpoint, tiny_synth, capsys):
    from hbci.export.bundle import build_bundle

    before = (tiny_bundle / "manifest.json").read_bytes()
    build_bundle(tiny_checkpoint, tiny_bundle, ("fp32", "fp16"), data=str(tiny_synth), split="test")
    assert "up to date" in capsys.readouterr().err
    assert (tiny_bundle / "manifest.json").read_bytes() == before


def test_self_check_catches_a_backend_that_computes_garbage(tiny_bundle):
    runtime = Retriever.load(tiny_bundle, backend="onnxruntime-cpu")
    assert runtime.self_check() is None

    class Constant:
        name = "broken"
        input_names = runtime.backends["video_encoder"].input_names

        def run(self, feeds):
            real = runtime_backend.run(feeds)
            return {k: np.zeros_like(v) for k, v in real.items()}

    runtime_backend = runtime.backends["video_encoder"]
    runtime.backends["video_encoder"] = Constant()
    assert "video_encoder" in runtime.self_check()


def test_torch_scores_independent_of_chunking(tiny_checkpoint, data_config):
    model, _, _ = load_model(tiny_checkpoint)
    clips = load_clipset(data_config, "test", model.config.num_frames, model.image_size, progress=False)
    texts, _ = clips.captions()
    text, video = encode_texts(model, texts), encode_videos(model, clips)
    a, _ = score_all(model, text, video, chunk=7)
    b, _ = score_all(model, text, video, chunk=64)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert torch.is_tensor(text["text_global"])


class _Shifted:
    """A back end whose output `name` is its real output with `delta` added to one element."""

    def __init__(self, backend, name, delta):
        self.backend, self.output, self.delta = backend, name, delta
        self.name, self.input_names = backend.name, backend.input_names

    def run(self, feeds):
        outputs = self.backend.run(feeds)
        value = outputs[self.output].copy()
        value.flat[value.size // 2] += self.delta
        return outputs | {self.output: value}


def test_each_output_has_its_own_recorded_relative_tolerance(tiny_bundle):
    from hbci.runtime.bundle import MIN_RELATIVE_TOLERANCE

    manifest = load_bundle(tiny_bundle).manifest
    golden = load_bundle(tiny_bundle).golden()
    for precision in ("fp32", "fp16"):
        recorded = manifest.output_tolerance[precision]
        for graph, outputs in golden.outputs.items():
            assert set(recorded[graph]) == set(outputs), (precision, graph)
            for name in outputs:
                tolerance, relative = manifest.output_check(precision, graph, name)
                assert relative and MIN_RELATIVE_TOLERANCE[precision] <= tolerance < 0.1


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("graph,name", [("video_encoder", "pool_values"), ("video_encoder", "video_global"),
                                        ("text_encoder", "text_global")])
def test_an_output_beyond_its_tolerance_fails_the_self_check_and_one_within_passes(tiny_bundle, precision, graph,
                                                                                    name):
    runtime = Retriever.load(tiny_bundle, backend="onnxruntime-cpu", precision=precision)
    tolerance, relative = runtime.bundle.manifest.output_check(precision, graph, name)
    assert relative
    scale = float(np.abs(runtime.bundle.golden().outputs[graph][name]).max())
    real = runtime.backends[graph]
    runtime.backends[graph] = _Shifted(real, name, 0.5 * tolerance * scale)
    assert runtime.self_check() is None
    runtime.backends[graph] = _Shifted(real, name, 1.5 * tolerance * scale)
    problem = runtime.self_check()
    assert problem is not None and f"{graph} output {name}" in problem and "relative error" in problem


def test_a_bundle_without_recorded_tolerances_falls_back_to_the_absolute_one(tiny_bundle, tmp_path):
    import dataclasses

    from hbci.runtime.bundle import write_manifest

    copy = tmp_path / "old"
    shutil.copytree(tiny_bundle, copy)
    write_manifest(copy, dataclasses.replace(load_bundle(copy).manifest, output_tolerance=None))
    runtime = Retriever.load(copy, backend="onnxruntime-cpu", precision="fp32")
    tolerance, relative = runtime.bundle.manifest.output_check("fp32", "video_encoder", "pool_values")
    assert not relative and tolerance == 1e-3
    real = runtime.backends["video_encoder"]
    runtime.backends["video_encoder"] = _Shifted(real, "pool_values", 0.5 * tolerance)
    assert runtime.self_check() is None
    runtime.backends["video_encoder"] = _Shifted(real, "pool_values", 2 * tolerance)
    assert "max abs difference" in runtime.self_check()


def test_a_gallery_is_added_to_an_exported_bundle_without_changing_its_id(tiny_bundle, tmp_path):
    from hbci.runtime.gallery import build_gallery, load_gallery
    from hbci.runtime.monitor import Monitor

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    before = load_bundle(copy).manifest
    manifest = build_gallery(copy, streams=1, clips=2, max_windows=8)
    assert manifest.bundle_id == before.bundle_id and manifest.gallery.precision == "fp32"
    assert manifest.output_tolerance == before.output_tolerance and manifest.score_stats == before.score_stats
    gallery = load_gallery(load_bundle(copy))
    assert set(gallery) == set(manifest.scorer_inputs.video) and len(gallery["video_mask"]) == 8
    monitor = Monitor(Retriever.load(copy, backend="onnxruntime-cpu"), ["a red circle moves left"])
    assert monitor.per_query_thresholds and monitor.thresholds_of(0)[0] >= monitor.threshold_on


def test_the_trend_and_curvature_paths_export_and_pass_the_golden_check(tmp_path):
    """The temporal transformer's trend and curvature paths go into the video encoder graph: a bundle of a tiny
    model with both builds, and its FP32 video encoder on ONNX Runtime matches torch on the golden inputs."""
    from hbci.checkpoint import save_checkpoint
    from hbci.config import ExperimentConfig, ModelConfig
    from hbci.export.bundle import build_bundle
    from hbci.model import HBCI
    from tests.conftest import TINY_MODEL

    config = ModelConfig(**TINY_MODEL, temporal_trend=True, temporal_curvature=True)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "c.pt", ExperimentConfig(model=config), HBCI(config))
    build_bundle(tmp_path / "c.pt", tmp_path / "bundle", ("fp32",))
    errors = Retriever.load(tmp_path / "bundle", backend="onnxruntime-cpu", precision="fp32",
                            self_check=False).golden_errors()
    assert errors["video_encoder"] and max(errors["video_encoder"].values()) < 1e-4
