"""Runtime preprocessing equals the training loader's, exactly (tolerance 0: both sides run the same numpy/OpenCV
code, and this test keeps it that way): hbci.data.decode_clips + frames_to_tensor against Retriever.load_video +
Retriever.preprocess, on synthetic clips and every decodable media file (ours, and the external ones where present)."""

from __future__ import annotations


import numpy as np
import pytest
from material import DATA_MEDIA, EXTERNAL_MEDIA, MEDIA_FACTS

torch = pytest.importorskip("torch", reason="the training loader needs torch")

from hbci.data import decode_clips, frames_to_tensor  # noqa: E402
from hbci.datasets import VideoItem  # noqa: E402
from hbci.runtime.retriever import Retriever  # noqa: E402



@pytest.fixture(scope="module")
def retriever(runtime_bundle):
    from hbci.runtime.bundle import load_bundle

    return Retriever.load(runtime_bundle, precision=load_bundle(runtime_bundle).precisions[0])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from hbci.synth import generate

    root = tmp_path_factory.mktemp("parity")
    generate(root, seed=4, n_train=0, n_val=0, n_test=3, frames=24, size=64)
    paths = sorted((root / "videos" / "test").glob("*.mp4"))
    paths += [DATA_MEDIA / name for name, facts in sorted(MEDIA_FACTS.items()) if not facts.get("error")]
    if EXTERNAL_MEDIA.is_dir():
        paths += sorted(EXTERNAL_MEDIA.iterdir())
    return paths


def test_runtime_preprocessing_equals_the_training_loader(retriever, videos):
    bundle = retriever.bundle
    items = [VideoItem(p.stem, p, ("x",)) for p in videos]
    clips = decode_clips(items, bundle.num_frames, bundle.image_size, workers=1, progress=False)
    assert len(clips) == len(videos)  # every file decodes (a skipped one would hide a difference)
    training = frames_to_tensor(clips.frames, bundle.mean, bundle.std).numpy()
    for i, path in enumerate(videos):
        frames, mask = retriever.load_video(path)
        np.testing.assert_array_equal(mask, clips.masks[i], err_msg=path.name)
        np.testing.assert_array_equal(frames, clips.frames[i], err_msg=path.name)
        pixels = retriever.preprocess(frames)
        assert pixels.dtype == np.float32
        np.testing.assert_array_equal(pixels, training[i], err_msg=path.name)  # exact
