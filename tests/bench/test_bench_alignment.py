"""benchmarks/bench_alignment.py on the shipped demo bundle and a few synthetic test clips: the curve's rows, and
the order figures for clips of two ordered events (the whole window, the order check's halves)."""

import numpy as np
import pytest

from hbci import synth
from hbci.runtime.demo import BUNDLE_DIR
from hbci.runtime.retriever import Retriever


@pytest.fixture(scope="module")
def clips_stream(tmp_path_factory):
    data = tmp_path_factory.mktemp("align-data")
    assert synth.main(["--out", str(data), "--seed", "3", "--train", "1", "--val", "1", "--test", "10",
                       "--heldout", "1", "--workers", "1"]) == 0
    return data, tmp_path_factory.mktemp("align-stream")


def test_curve_rows_and_order_figures(clips_stream, benchmark_script):
    bench = benchmark_script("bench_alignment")
    data, folder = clips_stream
    retriever = Retriever.load(BUNDLE_DIR, precision="fp16")
    stream, clips, fps, clip_s = bench.stream_of_split(data, "test", folder)
    result = bench.alignment_curve(retriever, stream, clips, clip_s, offsets=(-0.5, 0.0, 0.5))
    ordered = sum(bench.event_clauses(c) is not None for _, c in clips)
    assert 0 < ordered < len(clips) == result["events"] == 10 and result["ordered_events"] == ordered
    aligned = result["rows"][1]
    assert aligned["offset_s"] == 0.0 and aligned["relative_to_aligned"] == pytest.approx(1.0)
    for row in result["rows"]:
        for key in ("share_at_per_query_threshold", "order_by_whole_window", "order_by_halves"):
            assert 0.0 <= row[key] <= 1.0


def test_order_figures_do_not_depend_on_the_chunking_and_flip_with_the_captions(clips_stream, benchmark_script):
    """The order check on the swapped captions is right exactly where it was wrong on the captions (its score
    changes sign when the events are exchanged), and scoring in chunks of 2 or all at once gives the same verdicts."""
    bench = benchmark_script("bench_alignment")
    data, folder = clips_stream
    retriever = Retriever.load(BUNDLE_DIR, precision="fp16")
    stream, clips, _, clip_s = bench.stream_of_split(data, "test", folder)
    offsets = (0.0, 0.5)
    times = bench.frame_times(stream)
    crops, got = bench.read_indices(stream, np.arange(len(times)),
                                    lambda f: bench.resize_center_crop(f[None], retriever.bundle.image_size)[0])
    crops, times = np.stack(crops), times[got]
    batch = [bench.window_frames(times, crops, s + o, clip_s, retriever.bundle.num_frames)
             for s, _ in clips for o in offsets]
    video = retriever.encode_video(np.stack([b[0] for b in batch]), np.stack([b[1] for b in batch]))

    def told(captions, chunk):
        n = len(captions)
        own = retriever.score(retriever.encode_text([c for _, c in captions]), video).reshape(n, n, len(offsets))
        return bench._order_told(retriever, captions, batch, video, own[np.arange(n), np.arange(n)], chunk)

    whole, halves = told(clips, 64)
    whole_2, halves_2 = told(clips, 2)
    assert np.array_equal(whole, whole_2) and np.array_equal(halves, halves_2)
    swapped = [(s, bench.swap_event_order(c) or c) for s, c in clips]
    whole_s, halves_s = told(swapped, 64)
    assert np.array_equal(halves_s, ~halves) and np.array_equal(whole_s, ~whole)
