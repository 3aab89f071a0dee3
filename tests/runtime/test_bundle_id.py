"""The bundle id names the model (runtime/bundle.py `model_id`): derived files (INT8 graphs, TensorRT engines,
dropping a precision) leave it unchanged, a changed defining graph or preprocessing changes it, an edited
manifest is still refused, and format-1 manifests upgrade. No torch."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from hbci.runtime.bundle import (GRAPHS, graph_file, load_bundle, manifest_sha256, upgrade_manifest,
                                 write_manifest)
from hbci.runtime.errors import BundleError


@pytest.fixture
def bundle_copy(runtime_bundle, tmp_path):
    return shutil.copytree(runtime_bundle, tmp_path / "bundle")


def test_engines_and_int8_graphs_leave_the_bundle_id_unchanged(bundle_copy):
    bundle = load_bundle(bundle_copy)
    precision = bundle.precisions[0]
    (bundle_copy / "engines").mkdir()
    (bundle_copy / "engines" / "video_encoder.plan").write_bytes(b"a serialized engine")
    (bundle_copy / "int8").mkdir()
    shutil.copy(bundle.graph_path("video_encoder", precision), bundle_copy / graph_file("video_encoder", "int8"))
    int8 = {g: str(bundle.graph_path(g, precision).relative_to(bundle_copy)) for g in GRAPHS}
    int8["video_encoder"] = graph_file("video_encoder", "int8")
    grown = write_manifest(bundle_copy, dataclasses.replace(
        bundle.manifest, graphs={**bundle.manifest.graphs, "int8": int8},
        engines={precision: {"video_encoder": "engines/video_encoder.plan"}}))
    assert grown.bundle_id == bundle.bundle_id
    assert grown.manifest_sha256 != bundle.manifest.manifest_sha256  # the manifest itself did change
    assert load_bundle(bundle_copy).bundle_id == bundle.bundle_id  # and verifies


def test_a_changed_graph_or_preprocessing_changes_the_bundle_id(bundle_copy):
    bundle = load_bundle(bundle_copy)
    changed = dict(bundle.manifest.model_graphs)
    changed["bci_scorer"] = "0" * 64  # a retrained or re-exported model
    assert write_manifest(bundle_copy, dataclasses.replace(bundle.manifest, model_graphs=changed)).bundle_id \
        != bundle.bundle_id
    assert write_manifest(bundle_copy, dataclasses.replace(bundle.manifest, mean=(0.5, 0.5, 0.5))).bundle_id \
        != bundle.bundle_id
    # Without recorded model graphs, the most precise graphs present define the model (for a shipped copy that
    # dropped FP32, its FP16 graphs: another id than the source's FP32 graphs give).
    precision = bundle.precisions[0]
    own = {graph: bundle.manifest.files[rel] for graph, rel in bundle.manifest.graphs[precision].items()}
    expected = write_manifest(bundle_copy, dataclasses.replace(bundle.manifest, model_graphs=own,
                                                               model_precision=precision)).bundle_id
    fresh = write_manifest(bundle_copy, dataclasses.replace(bundle.manifest, model_graphs=None, model_precision=None))
    assert fresh.model_precision == precision and fresh.model_graphs == own and fresh.bundle_id == expected


@pytest.mark.parametrize("edit", [lambda m: m.update(num_frames=8), lambda m: m.update(bundle_id="0" * 16),
                                  lambda m: m["score_stats"]["threshold"].update(on=0.1)])
def test_an_edited_manifest_is_refused(bundle_copy, edit):
    raw = json.loads((bundle_copy / "manifest.json").read_text())
    edit(raw)
    (bundle_copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="modified after it was written"):
        load_bundle(bundle_copy)


def test_an_edited_manifest_with_a_fixed_hash_still_needs_the_right_bundle_id(bundle_copy):
    raw = json.loads((bundle_copy / "manifest.json").read_text())
    raw["num_frames"] = 8  # preprocessing changed, bundle id not recomputed
    raw["manifest_sha256"] = manifest_sha256(raw)
    (bundle_copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="bundle id mismatch"):
        load_bundle(bundle_copy)


def test_format_1_manifests_upgrade_and_are_refused_until_then(bundle_copy):
    import hashlib

    # A format-1 manifest names no model graphs: the upgrade takes the most precise graphs present (a shipped copy
    # that dropped FP32: its FP16 graphs), and the id is the one format 2 gives those graphs.
    bundle = load_bundle(bundle_copy)
    precision = bundle.precisions[0]
    own = {graph: bundle.manifest.files[rel] for graph, rel in bundle.manifest.graphs[precision].items()}
    expected = write_manifest(bundle_copy, dataclasses.replace(bundle.manifest, model_graphs=own,
                                                               model_precision=precision)).bundle_id
    raw = json.loads((bundle_copy / "manifest.json").read_text())
    v1 = {k: v for k, v in raw.items() if k not in ("bundle_id", "manifest_sha256", "model_graphs",
                                                     "model_precision")} | {"format_version": 1}
    v1["bundle_id"] = hashlib.sha256(json.dumps(v1, sort_keys=True).encode()).hexdigest()[:16]
    (bundle_copy / "manifest.json").write_text(json.dumps(v1))
    with pytest.raises(BundleError, match="upgrade_bundle.py"):
        load_bundle(bundle_copy)
    upgraded = upgrade_manifest(bundle_copy)
    assert upgraded.model_graphs == own and upgraded.model_precision == precision
    assert load_bundle(bundle_copy).bundle_id == upgraded.bundle_id == expected
    with pytest.raises(BundleError, match="nothing to upgrade"):
        upgrade_manifest(bundle_copy)
