"""Tests for runtime/video.py: sampling, decoding every media file (ours in tests/data/media and the external ones
where present), rotation, errors, preprocessing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from material import DATA_MEDIA, EXTERNAL_MEDIA, EXTERNAL_REASON, MEDIA_FACTS, external_media

from hbci.runtime.errors import VideoError
from hbci.runtime.video import (
    CLIP_MEAN,
    CLIP_STD,
    count_frames,
    load_clip,
    normalize,
    preprocess,
    read_frames,
    read_frames_with_times,
    read_indices,
    resize_center_crop,
    sample_indices,
)

MEDIA = EXTERNAL_MEDIA
MEDIA_FILES = external_media() or [pytest.param(None, marks=pytest.mark.skip(reason=EXTERNAL_REASON), id="external")]
needs_media = pytest.mark.skipif(not MEDIA.is_dir(), reason=EXTERNAL_REASON)

T = 16
# Every shared file decodes with OpenCV 5.0 / FFmpeg; none is expected to raise. A file that starts failing is
# a regression; one that is meant to fail goes here with the start of its VideoError reason.
EXPECTED_ERRORS: dict[str, str] = {}
# Files with fewer than T decodable frames: their true counts (the rest give T valid frames).
SHORT_FILES = {
    "decord__unordered.mov": 4,
    "decord__video_0.mov": 3,
    "decord__video_90.mov": 3,
    "decord__video_180.mov": 3,
    "decord__video_270.mov": 3,
    "moviepy__test_video.mp4": 5,
}


@pytest.mark.parametrize(
    "n, t, expected",
    [
        (10, 5, [1, 3, 5, 7, 9]),
        (12, 4, [1, 4, 7, 10]),
        (7, 3, [1, 3, 5]),  # floor(7/6), floor(21/6), floor(35/6)
        (8, 3, [1, 4, 6]),  # floor(8/6), floor(24/6), floor(40/6)
        (100, 1, [50]),
        (5, 5, [0, 1, 2, 3, 4]),
        (3, 5, [0, 1, 2]),
        (0, 4, []),
    ],
)
def test_sample_indices_hand_computed(n, t, expected):
    idx = sample_indices(n, t)
    assert idx.dtype.kind == "i"
    assert idx.tolist() == expected


def test_sample_indices_distinct_increasing_in_range():
    for n in range(1, 80):
        for t in range(1, n + 1):
            idx = sample_indices(n, t)
            assert len(idx) == t and idx[0] >= 0 and idx[-1] < n and np.all(np.diff(idx) > 0)


def test_sample_indices_rejects_bad_arguments():
    with pytest.raises(ValueError):
        sample_indices(10, 0)
    with pytest.raises(ValueError):
        sample_indices(-1, 4)


def _check_padded(frames: np.ndarray, mask: np.ndarray, valid: int) -> None:
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[0] == T and frames.shape[3] == 3
    assert mask.dtype == bool and mask.tolist() == [True] * valid + [False] * (T - valid)
    assert not frames[valid:].any()


@needs_media
@pytest.mark.parametrize("name", MEDIA_FILES)
def test_every_media_file(name):
    path = MEDIA / name
    if name in EXPECTED_ERRORS:
        with pytest.raises(VideoError) as info:
            read_frames(path, T)
        assert name in str(info.value) and info.value.reason.startswith(EXPECTED_ERRORS[name])
        return
    frames, mask = read_frames(path, T)
    _check_padded(frames, mask, SHORT_FILES.get(name, T))
    assert frames[mask].any(), "all decoded frames are black"


@pytest.mark.parametrize("name", sorted(MEDIA_FACTS))
def test_every_fixture_file(name):
    """Our files (tests/data/media): every frame written decodes, in display order and upright, whatever the
    container claims; damaged files give what survives or one clear VideoError."""
    facts, path = MEDIA_FACTS[name], DATA_MEDIA / name
    if facts.get("error"):
        with pytest.raises(VideoError) as info:
            read_frames(path, T)
        assert name in str(info.value) and info.value.reason.startswith(facts["error"])
        return
    frames, mask = read_frames(path, 64)
    n = int(mask.sum())
    if facts["frames"] is None:  # damaged part way: fewer frames than the container claims, never a padded lie
        assert 0 < n < facts["claimed_frames"]
    else:
        assert n == facts["frames"]
    assert count_frames(path) == n
    assert list(frames.shape[1:3]) == facts["size"]
    assert mask.tolist() == [True] * n + [False] * (64 - n) and not frames[n:].any()
    if frames.shape[1] > 1:  # frame i is brighter than frame i - 1 (a 1x1 frame is too small for H.264 to keep it)
        assert (np.diff(frames[:n].reshape(n, -1).mean(axis=1)) > 0).all(), "frames out of order"


@needs_media
def test_container_frame_count_is_not_trusted():
    # no_duration.webm reports a huge negative frame count; corrupted.mp4 claims 50 but breaks part way.
    assert count_frames(MEDIA / "moviepy__no_duration.webm") == 74
    n = count_frames(MEDIA / "decord__corrupted.mp4")
    assert 0 < n < 50
    frames, mask = read_frames(MEDIA / "decord__corrupted.mp4", 64)
    assert mask.sum() == n and not frames[n:].any()


def test_our_container_frame_counts_are_not_trusted():
    # A WebM written to a pipe has no duration (OpenCV reports a huge negative count); a cut MP4 claims 50.
    no_duration = DATA_MEDIA / "vp9_opus_no_duration.webm"
    cap = cv2.VideoCapture(str(no_duration))
    claimed = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    cap.release()
    assert claimed != 30 and count_frames(no_duration) == 30
    n = count_frames(DATA_MEDIA / "h264_faststart_cut.mp4")
    assert 0 < n < 50
    frames, mask = read_frames(DATA_MEDIA / "h264_faststart_cut.mp4", 64)
    assert mask.sum() == n and not frames[n:].any()


ROTATED = {"ours": (DATA_MEDIA, "h264_rotate{}_568x320.mov"), "external": (MEDIA, "decord__video_{}.mov")}


@pytest.mark.parametrize("source", list(ROTATED))
@pytest.mark.parametrize("angle, rotate", [(90, cv2.ROTATE_90_CLOCKWISE), (180, cv2.ROTATE_180),
                                           (270, cv2.ROTATE_90_COUNTERCLOCKWISE)])
def test_rotation_metadata_is_applied(source, angle, rotate):
    folder, pattern = ROTATED[source]
    if not folder.is_dir():
        pytest.skip(EXTERNAL_REASON)
    path = folder / pattern.format(angle)
    frames, mask = read_frames(path, 3)  # all 3 frames, so frames[0] is the first one
    raw = cv2.VideoCapture(str(path))
    raw.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    ok, stored = raw.read()
    raw.release()
    assert ok and stored.shape[:2] == (320, 568)  # as stored: landscape
    if angle != 180:
        assert frames.shape[1:3] == (568, 320)  # upright: portrait, height and width swapped
    expected = cv2.cvtColor(cv2.rotate(stored, rotate), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(frames[0], expected)


@pytest.mark.parametrize("path", [DATA_MEDIA / "h264_1x1.mp4", MEDIA / "moviepy__test_video.mp4"],
                         ids=["ours", "external"])
def test_one_by_one_video(path):
    if not path.parent.is_dir():
        pytest.skip(EXTERNAL_REASON)
    frames, mask = read_frames(path, 8)
    assert frames.shape == (8, 1, 1, 3) and mask.sum() == 5
    clip, clip_mask = load_clip(path, 8, 32)
    assert clip.shape == (8, 32, 32, 3) and (clip_mask == mask).all()
    # A 1x1 frame is a constant colour; the resize keeps it constant.
    assert (clip[:5] == frames[:5]).all()
    assert not clip[5:].any()


def test_resize_center_crop_one_by_one_array():
    frames = np.array([[[[7, 100, 250]]], [[[0, 0, 0]]]], dtype=np.uint8)
    out = resize_center_crop(frames, 5)
    assert out.shape == (2, 5, 5, 3)
    assert (out[0] == [7, 100, 250]).all() and not out[1].any()


def _write(path: Path, values: list[int], size=(48, 64), fourcc="mp4v", fps=10.0) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (size[1], size[0]))
    assert w.isOpened()
    for v in values:
        w.write(np.full((*size, 3), v, np.uint8))
    w.release()


def _brightness(frames: np.ndarray) -> list[int]:
    return [int(round(f.mean() / 10.0)) for f in frames]


def test_samples_the_right_frames(tmp_path):
    path = tmp_path / "ten.mp4"
    _write(path, [10 * i for i in range(10)])  # frame i has brightness 10 i
    frames, mask = read_frames(path, 4)
    assert mask.all()
    assert _brightness(frames) == sample_indices(10, 4).tolist() == [1, 3, 6, 8]
    _, _, times = read_frames_with_times(path, 4)
    np.testing.assert_allclose(times, [0.1, 0.3, 0.6, 0.8], atol=1e-6)


def test_fewer_frames_than_requested(tmp_path):
    path = tmp_path / "seven.mp4"
    _write(path, [10 * i for i in range(7)])
    frames, mask, times = read_frames_with_times(path, 12)
    assert mask.tolist() == [True] * 7 + [False] * 5
    assert _brightness(frames[:7]) == list(range(7)) and not frames[7:].any()
    assert np.isfinite(times[:7]).all() and np.isnan(times[7:]).all()


def test_truncated_file_whose_container_count_lies(tmp_path):
    path = tmp_path / "cut.mkv"
    _write(path, [10 * i for i in range(20)])
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    cap = cv2.VideoCapture(str(path))
    claimed = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    cap.release()
    n = count_frames(path)
    assert claimed == 20 and 0 < n < 20
    frames, mask = read_frames(path, 20)
    assert mask.sum() == n and _brightness(frames[:n]) == list(range(n))


def test_read_indices_applies_the_transform_and_reports_what_it_read(tmp_path):
    path = tmp_path / "ten.mp4"
    _write(path, [10 * i for i in range(10)])
    calls = []

    def halve(frame):
        calls.append(frame.shape)
        return frame[::2, ::2]

    frames, got = read_indices(path, [2, 5, 9, 30], halve)  # 30 lies past the end: not read, not reported
    assert got.tolist() == [2, 5, 9] and len(calls) == 3
    assert [f.shape for f in frames] == [(24, 32, 3)] * 3 and _brightness(np.stack(frames)) == [2, 5, 9]


def test_frames_after_a_resolution_change_take_the_first_frame_size():
    from hbci.runtime.video import FirstFrameSize  # what read_frames and live sources use, so that frames stack

    same = FirstFrameSize()
    out = [same(np.full((48, 64, 3), 100, np.uint8)), same(np.full((20, 30, 3), 100, np.uint8))]
    assert out[1].shape == out[0].shape == (48, 64, 3) and (out[1] == 100).all()


@pytest.mark.parametrize("content", [b"", b"\x00garbage, not a video\xff" * 200])
def test_non_video_file_raises(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError) as info:
        read_frames(path, 4)
    assert str(path) in str(info.value)


def test_missing_path_and_directory_raise(tmp_path):
    with pytest.raises(VideoError, match="file not found"):
        read_frames(tmp_path / "nope.mp4", 4)
    with pytest.raises(VideoError, match="not a regular file"):
        read_frames(tmp_path, 4)


def test_resize_center_crop_matches_reference():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 100, 250, 3), dtype=np.uint8)
    out = resize_center_crop(frames, 32)
    # Short side 100 -> 32, long side int(32 * 250 / 100) = 80, crop offset round((80 - 32) / 2) = 24.
    ref = np.stack([cv2.resize(f, (80, 32), interpolation=cv2.INTER_CUBIC)[:, 24:56] for f in frames])
    np.testing.assert_array_equal(out, ref)
    tall = np.ascontiguousarray(frames.transpose(0, 2, 1, 3))
    ref_tall = np.stack([cv2.resize(f, (32, 80), interpolation=cv2.INTER_CUBIC)[24:56] for f in tall])
    np.testing.assert_array_equal(resize_center_crop(tall, 32), ref_tall)
    assert resize_center_crop(frames[:0], 32).shape == (0, 32, 32, 3)


def test_normalize_matches_naive_formula():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    out = normalize(frames)
    assert out.dtype == np.float32 and out.shape == (2, 3, 4, 4) and out.flags.c_contiguous
    for c in range(3):
        ref = (frames[..., c] / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]
        np.testing.assert_allclose(out[:, c], ref, rtol=1e-5, atol=1e-5)


def test_preprocess_crops_once():
    """Frames of any size are resized and cropped; frames already S x S (cropped by the caller) go straight to
    normalisation, with the same result as cropping them again."""
    rng = np.random.default_rng(2)
    large = rng.integers(0, 256, (3, 50, 70, 3), dtype=np.uint8)
    crops = resize_center_crop(large, 16)
    np.testing.assert_array_equal(preprocess(large, 16), normalize(crops))
    np.testing.assert_array_equal(preprocess(crops, 16), normalize(resize_center_crop(crops, 16)))
    with pytest.raises(ValueError):
        preprocess(crops.astype(np.float32), 16)


def test_load_clip_pads_with_zeros(tmp_path):
    path = tmp_path / "three.mp4"
    _write(path, [60, 120, 180])
    clip, mask = load_clip(path, 5, 24)
    assert clip.shape == (5, 24, 24, 3) and mask.tolist() == [True, True, True, False, False]
    assert _brightness(clip[:3]) == [6, 12, 18] and not clip[3:].any()


def test_import_pulls_no_torch():
    code = "import sys, hbci.runtime.video; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_jpeg_thumbnail_shrinks_the_long_side_and_never_enlarges():
    import cv2

    from hbci.runtime.video import jpeg_thumbnail

    frame = np.zeros((60, 200, 3), np.uint8)
    frame[:, :100] = (255, 0, 0)  # red on the left, in RGB
    small = cv2.imdecode(np.frombuffer(jpeg_thumbnail(frame, 50), np.uint8), cv2.IMREAD_COLOR)
    assert small.shape == (15, 50, 3)
    assert small[7, 10, 2] > 200 and small[7, 10, 0] < 60  # still red (BGR once decoded): the channels are right
    same = cv2.imdecode(np.frombuffer(jpeg_thumbnail(frame, 500), np.uint8), cv2.IMREAD_COLOR)
    assert same.shape == (60, 200, 3)
