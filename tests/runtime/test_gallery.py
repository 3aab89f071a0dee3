"""Per-query alert thresholds from the bundle's background gallery: the gallery is a verified derived file (not
part of the bundle id), each standing query gets thresholds from its null scores (never below the global pair),
events carry the calibrated score, and hbci-gallery builds a gallery with the bundle's own video encoder."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from hbci.runtime.bundle import load_bundle, write_manifest
from hbci.runtime.errors import BundleError, ConfigError
from hbci.runtime.events import EventTracker, calibrated_score
from hbci.runtime.gallery import DEFAULT_FALSE_ALARM_RATE, build_gallery, load_gallery, query_thresholds
from hbci.runtime.monitor import Monitor
from hbci.runtime.retriever import Retriever

QUERIES = ["a red circle moves left", "a green square moves up", "a blue triangle grows larger"]


@pytest.fixture(scope="module")
def retriever(trained_bundle):
    # The shipped demo bundle carries a gallery; losing it must fail here, not skip every gallery test.
    assert load_bundle(trained_bundle).manifest.gallery is not None, "rebuild it: hbci-gallery runtime/demo/bundle"
    return Retriever.load(trained_bundle, backend="onnxruntime-cpu", precision="fp16")


def _without_gallery(bundle, folder):
    copy = folder / "no-gallery"
    shutil.copytree(bundle, copy)
    (copy / "gallery.npz").unlink()
    return write_manifest(copy, dataclasses.replace(load_bundle(copy, verify_hashes=False).manifest, gallery=None)), copy


def test_the_gallery_is_verified_and_not_part_of_the_bundle_id(retriever, tmp_path):
    bundle = retriever.bundle
    info = bundle.manifest.gallery
    assert info.file in bundle.manifest.files and info.windows == len(next(iter(load_gallery(bundle).values())))
    assert set(load_gallery(bundle)) == set(bundle.manifest.scorer_inputs.video)
    manifest, _ = _without_gallery(bundle.root, tmp_path)
    assert manifest.bundle_id == bundle.bundle_id and info.file not in manifest.files

    tampered = tmp_path / "tampered"
    shutil.copytree(bundle.root, tampered)
    data = bytearray((tampered / info.file).read_bytes())
    data[len(data) // 2] ^= 1
    (tampered / info.file).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="gallery.npz"):
        load_bundle(tampered)


def test_each_query_gets_thresholds_from_its_null_scores_never_below_the_global_pair(retriever):
    on, off = retriever.bundle.thresholds.on, retriever.bundle.thresholds.off
    text = retriever.encode_text(QUERIES)
    null = retriever.score(text, load_gallery(retriever.bundle))  # the scorer graph, as the runtime runs it
    result = query_thresholds(retriever, text, load_gallery(retriever.bundle), (on, off), 0.01)
    for row, own in zip(null, result):
        expected = max(float(np.quantile(row, 0.99)), on)
        assert own.on == pytest.approx(expected) and own.off == pytest.approx(expected - (on - off))
        assert own.source == "query" and np.array_equal(own.null, np.sort(row))
    # A lower rate never lowers a threshold; no gallery means the global pair for every query.
    strict = query_thresholds(retriever, text, load_gallery(retriever.bundle), (on, off), 0.001)
    assert all(s.on >= r.on for s, r in zip(strict, result))
    fallback = query_thresholds(retriever, text, None, (on, off))
    assert [(t.on, t.off, t.source) for t in fallback] == [(on, off, "global")] * 3
    with pytest.raises(ConfigError, match="false-alarm rate"):
        query_thresholds(retriever, text, load_gallery(retriever.bundle), (on, off), 1.5)


def test_the_monitor_calibrates_queries_as_they_are_registered(retriever):
    monitor = Monitor(retriever, QUERIES[:2])
    assert monitor.per_query_thresholds and monitor.false_alarm_rate == DEFAULT_FALSE_ALARM_RATE
    index = monitor.add_query(QUERIES[2])
    expected = query_thresholds(retriever, retriever.encode_text(QUERIES), load_gallery(retriever.bundle),
                                retriever.bundle.thresholds, DEFAULT_FALSE_ALARM_RATE)
    for i, own in zip([0, 1, index], expected):
        assert monitor.thresholds_of(i) == pytest.approx((own.on, own.off))
        assert monitor.thresholds_of(i)[0] >= monitor.threshold_on  # the global pair is the floor

    explicit = Monitor(retriever, QUERIES, threshold_on=0.5)
    assert not explicit.per_query_thresholds and explicit.thresholds_of(0) == (0.5, explicit.threshold_off)
    assert not Monitor(retriever, QUERIES, false_alarm_rate=None).per_query_thresholds
    with pytest.raises(ConfigError, match="false_alarm_rate"):
        Monitor(retriever, QUERIES, false_alarm_rate=0.0)


def test_a_bundle_without_a_gallery_keeps_the_global_thresholds(retriever, tmp_path):
    _, copy = _without_gallery(retriever.bundle.root, tmp_path)
    plain = Retriever.load(copy, backend="onnxruntime-cpu", precision="fp16")
    monitor = Monitor(plain, QUERIES)
    assert not monitor.per_query_thresholds
    assert monitor.thresholds_of(1) == (monitor.threshold_on, monitor.threshold_off)


def test_events_carry_the_calibrated_score_and_the_querys_own_threshold():
    null = np.sort(np.linspace(0.0, 0.5, 100))
    tracker = EventTracker(threshold_on=0.4, threshold_off=0.3)
    tracker.add("own", (0.6, 0.55), null)
    tracker.add("global")
    span = SimpleNamespace(start=0.0, end=1.0)
    events = tracker.update(span, np.array([0.5, 0.45]))  # 0.5 < its own 0.6; 0.45 >= the global 0.4
    assert [e["query"] for e in events] == ["global"]
    assert events[0]["threshold"] == 0.4 and events[0]["threshold_source"] == "global"
    assert events[0]["calibrated_score"] is None
    (start,) = tracker.update(SimpleNamespace(start=1.0, end=2.0), np.array([0.7, 0.45]))
    assert start["query"] == "own" and start["threshold"] == 0.6 and start["threshold_source"] == "query"
    assert start["calibrated_score"] == 1.0 and start["raw_score"] == pytest.approx(0.7)
    (end,) = tracker.update(SimpleNamespace(start=2.0, end=3.0), np.array([0.25, 0.45]))
    assert end["event"] == "end" and end["threshold"] == 0.55
    assert end["calibrated_score"] == calibrated_score(null, 0.25) == 0.5  # 50 of 100 null scores below 0.25
    with pytest.raises(ConfigError):
        tracker.add("bad", (0.3, 0.4))


def test_hbci_gallery_builds_a_gallery_with_the_bundles_own_encoder(retriever, tmp_path):
    _, copy = _without_gallery(retriever.bundle.root, tmp_path)
    manifest = build_gallery(copy, streams=1, clips=2, max_windows=6)
    assert manifest.bundle_id == retriever.bundle_id and manifest.gallery.windows == 6
    assert manifest.gallery.precision == "fp16" and "7919" in manifest.gallery.source
    bundle = load_bundle(copy)  # hashes verified, the gallery's included
    gallery = load_gallery(bundle)
    assert all(len(v) == 6 and np.isfinite(v).all() for v in gallery.values())
    assert Monitor(Retriever.load(copy, backend="onnxruntime-cpu", precision="fp16"), QUERIES).per_query_thresholds

    result = subprocess.run([sys.executable, "-m", "hbci.runtime.gallery", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("hbci-gallery: error:")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
