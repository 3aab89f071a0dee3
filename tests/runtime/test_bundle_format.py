"""Tests for runtime/bundle.py without torch: the shipped manifest reads and writes back to the same JSON and bundle
id, unknown or mistyped keys are refused naming them, the layout per precision, golden keys, thresholds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hbci.runtime.bundle import (GRAPHS, Golden, Thresholds, golden_key, graph_file, graph_files, load_bundle,
                                 manifest_sha256, model_id, parse_golden_key, resolve_thresholds,
                                 write_manifest)
from hbci.runtime.errors import BundleError, ConfigError


def test_a_manifest_reads_and_writes_back_unchanged(runtime_bundle, tmp_path):
    raw = json.loads((runtime_bundle / "manifest.json").read_text())
    bundle = load_bundle(runtime_bundle)
    assert json.dumps(bundle.manifest.to_dict(), sort_keys=True) == json.dumps(raw, sort_keys=True)
    assert model_id(bundle.manifest) == raw["bundle_id"] == bundle.bundle_id
    assert manifest_sha256(raw) == raw["manifest_sha256"]
    copy = tmp_path / "copy"
    shutil.copytree(runtime_bundle, copy)
    assert write_manifest(copy, bundle.manifest).bundle_id == bundle.bundle_id  # same files, same id
    assert (copy / "manifest.json").read_text() == (runtime_bundle / "manifest.json").read_text()


def _rewrite(folder, change) -> None:
    """Edit a manifest and give it a matching hash, as a careless tool would: only the key checks can catch it."""
    raw = json.loads((folder / "manifest.json").read_text())
    change(raw)
    raw["manifest_sha256"] = manifest_sha256(raw)
    (folder / "manifest.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(colour="red"), "unknown manifest key 'colour'"),
    (lambda m: m.update(num_frames="12"), "'num_frames' should be int"),
    (lambda m: m.pop("graphs"), "lacks 'graphs'"),
    (lambda m: m["validation"].update(extra=1), "unknown manifest key 'validation.extra'"),
    (lambda m: next(iter(m["graphs"].values())).pop("bci_scorer"), "no bci_scorer graph"),
])
def test_unknown_missing_and_mistyped_keys_are_refused(runtime_bundle, tmp_path, change, message):
    copy = tmp_path / "copy"
    shutil.copytree(runtime_bundle, copy)
    _rewrite(copy, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(copy, verify_hashes=False)


def test_layout_and_golden_keys(runtime_bundle):
    assert graph_file("video_encoder", "int8") == "int8/video_encoder.onnx"
    assert graph_files("int8")["text_encoder"] == graph_file("text_encoder", "int8") == "int8/text_encoder.onnx"
    assert graph_files("int8")["bci_scorer"] == graph_file("bci_scorer", "fp32") == "fp32/bci_scorer.onnx"
    assert parse_golden_key(golden_key("bci_scorer", "in", "word_mask")) == ("bci_scorer", "in", "word_mask")
    with pytest.raises(ValueError):
        graph_file("video_encoder", "fp8")
    golden = load_bundle(runtime_bundle).golden()
    assert set(golden.inputs) == set(golden.outputs) == set(GRAPHS)
    with np.load(runtime_bundle / "golden.npz") as data:
        assert sum(len(g) for g in (*golden.inputs.values(), *golden.outputs.values())) == len(data.files)


def test_golden_saves_and_loads(tmp_path):
    golden = Golden({"video_encoder": {"frames": np.ones((1, 2))}}, {"video_encoder": {"video_global": np.zeros(3)}})
    golden.save(tmp_path / "g.npz")
    again = Golden.load(tmp_path / "g.npz")
    assert again.inputs["video_encoder"]["frames"].tolist() == [[1.0, 1.0]]
    assert again.outputs["video_encoder"]["video_global"].shape == (3,)


def test_thresholds_are_resolved_in_one_place():
    calibrated = Thresholds(0.8, 0.7)
    assert resolve_thresholds(calibrated) == (0.8, 0.7)
    assert resolve_thresholds(calibrated, 0.5) == pytest.approx((0.5, 0.4))  # the calibrated gap below `on`
    assert resolve_thresholds(None, 0.5) == (0.5, 0.5)
    assert resolve_thresholds(calibrated, None, 0.75) == (0.8, 0.75)
    with pytest.raises(ConfigError, match="calibrated"):
        resolve_thresholds(None, bundle_id="b")
    with pytest.raises(ConfigError, match="must not exceed"):
        resolve_thresholds(None, 0.2, 0.3)


def test_the_graph_io_names_are_the_bundles(runtime_bundle):
    """The names the runtime feeds and reads are those of the graphs in the bundle (its golden data has them)."""
    from hbci.runtime.bundle import GLOBAL_OUTPUTS, TEXT_INPUTS, VIDEO_INPUTS

    golden = load_bundle(runtime_bundle).golden()
    assert tuple(golden.inputs["video_encoder"]) == VIDEO_INPUTS
    assert tuple(golden.inputs["text_encoder"]) == TEXT_INPUTS
    for graph, name in GLOBAL_OUTPUTS.items():
        assert golden.outputs[graph][name].ndim == 2
    assert "scores" in golden.outputs["bci_scorer"]


def test_output_tolerances_keep_a_margin_and_a_floor_and_errors_are_relative():
    from hbci.runtime.bundle import MIN_RELATIVE_TOLERANCE, TOLERANCE_MARGIN, output_tolerances, relative_error

    assert relative_error(np.array([6.0, 0.1]), np.array([6.0, -0.2])) == pytest.approx(0.3 / 6)
    assert relative_error(np.zeros(2), np.zeros(3)) == float("inf")
    assert np.isnan(relative_error(np.array([np.nan]), np.array([1.0])))
    tolerances = output_tolerances({"g": {"tiny": 1e-9, "big": 0.0123}}, "int8")
    assert tolerances["g"]["tiny"] == MIN_RELATIVE_TOLERANCE["int8"]
    assert tolerances["g"]["big"] == pytest.approx(0.05)  # 4 x 0.0123 = 0.0492, rounded up to 2 digits
    assert tolerances["g"]["big"] >= TOLERANCE_MARGIN * 0.0123
