"""Calibration clips: runtime-identical preprocessing, corrupt files skipped and counted, clear errors."""

import shutil

import numpy as np
import pytest

from hbci.calibration.data import (CalibrationDataError, CalibrationReader, ClipSet, load_clips, spread,
                                   video_paths)
from hbci.runtime.bundle import Bundle, Manifest, load_bundle
from hbci.runtime.errors import DatasetError, HbciError
from hbci.runtime.video import CLIP_MEAN, CLIP_STD


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    """The four facts calibration reads from a bundle (T, size, mean, std), without exporting a model."""
    return Bundle(tmp_path_factory.mktemp("facts"),
                  Manifest(num_frames=4, max_words=16, image_size=32, mean=CLIP_MEAN, std=CLIP_STD, graphs={}))


@pytest.mark.slow
def test_feeds_equal_the_runtime_preprocessing(tiny_fp32_bundle, calib_synth):
    from hbci.runtime.retriever import Retriever

    runtime = Retriever.load(tiny_fp32_bundle, backend="onnxruntime-cpu", self_check=False)
    paths = video_paths(calib_synth / "videos" / "train")[:3]
    clips = load_clips(paths, load_bundle(tiny_fp32_bundle))
    feed = next(clips.feeds(batch=3))
    for i, path in enumerate(paths):
        frames, mask = runtime.load_video(path)
        np.testing.assert_array_equal(feed["frames"][i], runtime.preprocess(frames))
        np.testing.assert_array_equal(feed["frame_mask"][i], mask.astype(np.float32))
    assert feed["frames"].dtype == np.float32 and feed["frames"].shape[1:] == (4, 3, 32, 32)


def test_corrupt_video_is_skipped_with_a_warning_and_a_count(facts, calib_synth, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for path in sorted((calib_synth / "videos" / "train").glob("*.mp4"))[:3]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.mp4").write_bytes(b"\x00garbage, not a video" * 100)
    (folder / "notes.txt").write_text("not a video either; ignored by extension")
    warnings = []
    clips = load_clips(video_paths(folder), facts, source=folder, warn=warnings.append)
    assert len(clips) == 3 and len(clips.skipped) == 1
    assert clips.skipped[0][0].endswith("broken.mp4")
    assert any("broken.mp4" in w for w in warnings)
    assert any("1 of 4" in w for w in warnings)


def test_empty_folder_is_a_clear_error(tmp_path):
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    with pytest.raises(CalibrationDataError, match="nothing_here") as info:
        video_paths(empty)
    assert isinstance(info.value, DatasetError) and isinstance(info.value, HbciError)
    with pytest.raises(CalibrationDataError, match="not found"):
        video_paths(tmp_path / "missing")


def test_folder_where_nothing_decodes_is_a_clear_error(tmp_path, facts):
    folder = tmp_path / "all_broken"
    folder.mkdir()
    for i in range(2):
        (folder / f"b{i}.mp4").write_bytes(b"\x01" * 500)
    with pytest.raises(CalibrationDataError, match="all_broken.*none of the 2"):
        load_clips(video_paths(folder), facts, source=folder, warn=lambda m: None)


def test_captions_csv_and_split_root_sources(calib_synth):
    from_csv = video_paths(calib_synth / "test.csv")
    from_root = video_paths(calib_synth, split="test")
    assert from_csv == from_root and len(from_csv) == 16
    assert all(p.is_file() for p in from_csv)


def test_spread_covers_the_folder_then_offers_replacements():
    order = spread(10, 3)
    assert order[:3] == [0, 4, 9] or order[:3] == [0, 5, 9]
    assert sorted(order) == list(range(10))
    assert spread(3, 5) == [0, 1, 2]


def test_reader_ranges(facts, calib_synth):
    clips = load_clips(video_paths(calib_synth / "videos" / "train"), facts, max_clips=5)
    assert isinstance(clips, ClipSet) and len(clips) == 5
    reader = CalibrationReader(clips)
    assert len(reader) == 5 and sum(1 for _ in iter(reader.get_next, None)) == 5
    reader.set_range(1, 3)
    assert sum(1 for _ in iter(reader.get_next, None)) == 2


@pytest.mark.parametrize("module", ["hbci.calibration", "hbci.calibration.data", "hbci.calibration.quantize",
                                    "hbci.calibration.gate"])
def test_calibration_imports_without_torch(module):
    import subprocess
    import sys

    code = (f"import sys, {module}; bad = [m for m in ('torch', 'open_clip', 'tensorrt') if m in sys.modules]; "
            f"print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
