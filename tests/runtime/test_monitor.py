"""Tests for runtime/monitor.py: the window grid and its sampling (equal to the training loader's clip), EMA
smoothing, hysteresis events, live skipping, short files, thresholds from the manifest; then end to end."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from hbci.runtime.errors import ConfigError, QueryError
from hbci.runtime.bundle import Manifest, ScoreStats, default_thresholds
from hbci.runtime.monitor import Monitor
from hbci.runtime.sources import Frame, open_source
from hbci.runtime.video import load_clip
from hbci.synth import random_spec, render_clip, write_video


class FakeRetriever:
    """Scores come from a script: window w scores script[w] (one value per query)."""

    def __init__(self, script=None, num_frames=4, image_size=8, thresholds=None):
        self.script = [np.atleast_1d(np.asarray(s, float)) for s in (script or [])]
        self.bundle = SimpleNamespace(num_frames=num_frames, image_size=image_size, thresholds=thresholds,
                                      gallery_path=None)
        self.bundle_id = "fake"
        self.calls, self.encoded = 0, []

    def encode_text(self, texts):
        self.calls += 1
        return {"n": np.arange(len(texts))}

    def encode_video(self, frames, mask):
        self.encoded.append((frames, mask))
        start = sum(len(f) for f, _ in self.encoded[:-1])
        return {"w": np.arange(start, start + len(frames))}

    def score(self, text, video):
        return np.stack([self.script[w] for w in video["w"]], axis=1)


class FakeSource:
    def __init__(self, n, fps=8.0, live=False, pending=0, size=16):
        self.frames = [Frame(i, i / fps, np.full((size, size, 3), i % 256, np.uint8), float(i)) for i in range(n)]
        self.live, self.realtime, self.name, self._pending = live, live, "fake", pending

    def __iter__(self):
        return iter(self.frames)

    def pending(self):
        return self._pending


def test_window_grid_covers_the_stream():
    m = Monitor(FakeRetriever(), ["q"], window=3.0, stride=0.5, threshold_on=1.0)
    windows = [w for batch in m.windows(FakeSource(8 * 13)) for w in batch]  # 13 s at 8 fps
    assert [w.index for w in windows] == list(range(21))
    assert [(w.start, w.end) for w in windows[:2]] == [(0.0, 2.875), (0.5, 3.375)]
    assert windows[-1].end == pytest.approx(12.875)  # the last window ends at the last frame
    assert all(w.count == 24 and w.mask.all() for w in windows)


def test_window_over_a_clip_equals_the_training_clip(tmp_path):
    """A 3 s window laid over a 24-frame 8 fps clip holds exactly the frames load_clip gives training."""
    spec = random_spec(np.random.default_rng(5))
    path = write_video(tmp_path / "clip.mp4", render_clip(spec, 24, 64), 8.0)
    retriever = FakeRetriever(num_frames=12, image_size=32)
    m = Monitor(retriever, ["q"], window=3.0, stride=0.5, threshold_on=1.0)
    with open_source("file", path) as src:
        windows = [w for batch in m.windows(src) for w in batch]
    expected, mask = load_clip(path, 12, 32)
    assert len(windows) == 1 and windows[0].mask.all() and mask.all()
    np.testing.assert_array_equal(windows[0].frames, expected)  # exact, not approximately


def test_short_stream_gives_one_masked_window():
    m = Monitor(FakeRetriever([[0.0]], num_frames=4), ["q"], window=3.0, threshold_on=1.0)
    windows = [w for batch in m.windows(FakeSource(3)) for w in batch]
    assert len(windows) == 1 and windows[0].count == 3
    assert windows[0].mask.tolist() == [True, True, True, False] and not windows[0].frames[3].any()


def test_hysteresis_events_and_their_extent():
    raw = [0.0, 0.6, 0.5, 0.35, 0.2, 0.7, 0.7]
    m = Monitor(FakeRetriever([[r] for r in raw]), ["q"], window=1.0, stride=1.0, threshold_on=0.5,
                threshold_off=0.3, batch=3)
    events = list(m.run(FakeSource(8 * 7)))  # 7 s: windows 0..6
    kinds = [(e["event"], e["id"], e["time"]) for e in events]
    assert kinds == [("start", 0, 1.875), ("end", 0, 4.875), ("start", 1, 5.875), ("end", 1, 6.875)]
    first_end = events[1]
    assert (first_end["window_start"], first_end["window_end"]) == (1.0, 3.875)  # windows 1..3 were >= off
    assert first_end["reason"] == "below_threshold" and first_end["peak_raw_score"] == 0.6
    assert (first_end["peak_window_start"], first_end["peak_window_end"]) == (1.0, 1.875)
    assert events[3]["reason"] == "stream_end"
    assert all(e["bundle_id"] == "fake" and e["query"] == "q" and e["source"] == "fake" for e in events)
    assert "wall_time" not in events[0]
    assert m.retriever.calls == 1  # queries encoded once
    assert m.stats.windows == 7 and m.stats.events == 2


def test_each_query_has_its_own_state():
    raw = [[0.9, 0.0], [0.9, 0.9], [0.0, 0.9]]
    m = Monitor(FakeRetriever(raw), ["a", "b"], window=1.0, stride=1.0, threshold_on=0.5, threshold_off=0.5)
    events = list(m.run(FakeSource(8 * 3)))
    assert [(e["event"], e["query"]) for e in events] == [("start", "a"), ("start", "b"), ("end", "a"),
                                                           ("end", "b")]


def test_ema_smoothing():
    raw = [1.0, 0.0, 0.0, 1.0]
    m = Monitor(FakeRetriever([[r] for r in raw]), ["q"], window=1.0, stride=1.0, smoothing=0.5,
                threshold_on=10.0)
    list(m.run(FakeSource(8 * 4)))
    expected = 1.0
    for r in raw[1:]:
        expected = 0.5 * expected + 0.5 * r
    assert m.scores[0] == pytest.approx(expected)


def test_live_source_skips_to_the_newest_window():
    m = Monitor(FakeRetriever([[0.0]] * 100), ["q"], window=1.0, stride=0.25, threshold_on=1.0)
    batches = list(m.windows(FakeSource(8 * 10, live=True, pending=0)))
    assert all(len(b) == 1 for b in batches)
    behind = Monitor(FakeRetriever([[0.0]] * 100), ["q"], window=1.0, stride=0.25, threshold_on=1.0)
    batches = list(behind.windows(FakeSource(8 * 10, live=True, pending=5)))  # always behind: only the end
    assert len(batches) == 1 and behind.stats.windows_skipped > 0


def test_thresholds_default_to_the_manifest_and_are_checked():
    manifest = Manifest(num_frames=4, max_words=16, image_size=8, mean=(0, 0, 0), std=(1, 1, 1), graphs={})
    stats = ScoreStats.from_dict({"threshold": {"on": 0.4, "off": 0.3, "f1": 0.9}})
    calibrated = dataclasses.replace(manifest, score_stats=stats)
    assert default_thresholds(calibrated) == (0.4, 0.3) and default_thresholds(manifest) is None
    m = Monitor(FakeRetriever(thresholds=calibrated.thresholds), ["q"])
    assert (m.threshold_on, m.threshold_off) == (0.4, 0.3)
    with pytest.raises(ConfigError, match="calibrated"):
        Monitor(FakeRetriever(), ["q"])
    with pytest.raises(ConfigError, match="must not exceed"):
        Monitor(FakeRetriever(), ["q"], threshold_on=0.2, threshold_off=0.3)
    with pytest.raises(ConfigError):
        Monitor(FakeRetriever(), ["q"], threshold_on=0.2, smoothing=1.0)
    with pytest.raises(ConfigError):
        Monitor(FakeRetriever(), ["q"], threshold_on=0.2, stride=0)
    with pytest.raises(QueryError):
        Monitor(FakeRetriever(), [], threshold_on=0.2)


def test_end_to_end_scores_equal_the_retriever_on_the_same_frames(runtime_bundle, stream_video):
    """The monitor's raw scores are exactly Retriever.score of its windows (nothing else in between)."""
    from hbci.runtime.retriever import Retriever

    path, segments = stream_video
    retriever = Retriever.load(runtime_bundle, precision=_precision(runtime_bundle))
    queries = [s.caption for s in segments]
    m = Monitor(retriever, queries, window=3.0, stride=1.0, threshold_on=1e9, batch=4)
    with open_source("file", path) as src:
        windows = [w for batch in m.windows(src) for w in batch]
    with open_source("file", path) as src:
        list(m.run(src))
    last = windows[-1]
    direct = retriever.score(retriever.encode_text(queries), retriever.encode_video(last.frames, last.mask))
    np.testing.assert_allclose(m.raw_scores, direct[:, 0], atol=1e-5)


def _precision(bundle) -> str:
    from hbci.runtime.bundle import load_bundle

    precisions = load_bundle(bundle, verify_hashes=False).precisions
    return "fp32" if "fp32" in precisions else precisions[0]


class ByTextRetriever(FakeRetriever):
    """Scores by query text: window w of query q scores script[q][w]."""

    def encode_text(self, texts):
        self.calls += 1
        return {"text": np.array(texts, dtype=object)}

    def score(self, text, video):
        return np.array([[self.script_by_text[q][w] for w in video["w"]] for q in text["text"]], np.float32)


def test_queries_added_and_removed_while_running():
    retriever = ByTextRetriever()
    retriever.script_by_text = {"a": [0.9] * 8, "b": [0.0, 0.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]}
    m = Monitor(retriever, ["a"], window=1.0, stride=1.0, threshold_on=0.5, threshold_off=0.5, batch=1)
    events = []
    for event in m.run(FakeSource(8 * 8)):  # windows 0..7
        events.append(event)
        if event["event"] == "start" and event["query"] == "a":
            b = m.add_query("b")  # from window 1 on
        if event["event"] == "start" and event["query"] == "b":
            m.remove_query(0)  # "a" has an open event: it ends with reason "removed"
    assert [(e["event"], e["query"], e.get("reason")) for e in events] == [
        ("start", "a", None), ("start", "b", None), ("end", "a", "removed"), ("end", "b", "stream_end")]
    assert b == 1 and events[1]["query_index"] == 1 and events[1]["time"] == 2.875
    assert m.query_list() == [(1, "b")] and m.queries == ["b"] and retriever.calls == 2
    with pytest.raises(KeyError):
        m.remove_query(0)


def test_a_monitor_may_start_without_queries_when_asked():
    m = Monitor(ByTextRetriever(), [], threshold_on=0.5, require_queries=False)
    assert list(m.run(FakeSource(8 * 4))) == [] and m.stats.windows > 0


def test_stream_windows_of_a_file_are_the_windows_of_its_frame_times(stream_video):
    """What the archive indexes (stream_windows over a file) is what cut_windows says for the file's frame times."""
    from hbci.runtime.monitor import stream_windows
    from hbci.runtime.windows import cut_windows

    path, _ = stream_video
    with open_source("file", path) as src:
        times = [frame.time for frame in src]
    with open_source("file", path) as src:
        got = [w for batch in stream_windows(src, window=3.0, stride=0.5, num_frames=12, image_size=32, batch=5)
               for w in batch]
    expected = cut_windows(times, 3.0, 0.5, 12)
    assert [(w.index, w.start, w.end, w.count, w.mask.tolist()) for w in got] == \
        [(s.index, s.start, s.end, s.count, s.mask.tolist()) for s in expected]
    assert all(w.frames.shape == (12, 32, 32, 3) for w in got)


def test_contrast_gate_starts_an_event_only_where_the_query_beats_its_opposites():
    script = {"a box moves left": [0.9, 0.9, 0.8, 0.1, 0.9], "a box moves right": [0.95, 0.5, 0.99, 0.0, 0.9],
              "a dog barks": [0.9, 0.0, 0.0, 0.0, 0.0]}
    queries = ["a box moves left", "a dog barks"]

    def run(contrast):
        retriever = ByTextRetriever()
        retriever.script_by_text = script
        m = Monitor(retriever, queries, window=1.0, stride=1.0, threshold_on=0.5, threshold_off=0.3, batch=2,
                    contrast=contrast)
        return m, list(m.run(FakeSource(8 * 5)))  # windows 0..4

    plain, events = run(False)
    assert [(e["event"], e["query"], e["time"]) for e in events if e["event"] == "start"] == [
        ("start", "a box moves left", 0.875), ("start", "a dog barks", 0.875), ("start", "a box moves left", 4.875)]
    assert all("contrast_score" not in e for e in events) and np.isnan(plain.contrast_scores).all()

    gated, events = run(True)
    starts = [e for e in events if e["event"] == "start"]
    # window 0: its opposite scores higher; window 1: it wins; window 2 (opposite higher again) keeps the open
    # event; window 4: a tie is no win. "a dog barks" has no opposite: never gated, contrast_score null.
    assert [(e["query"], e["time"], e["contrast_score"]) for e in starts] == [
        ("a dog barks", 0.875, None), ("a box moves left", 1.875, 0.5)]
    ends = [e for e in events if e["event"] == "end" and e["query"] == "a box moves left"]
    assert [(e["window_start"], e["window_end"]) for e in ends] == [(1.0, 2.875)]
    assert gated.contrast_scores[0] == pytest.approx(0.9) and gated.contrast_scores[1] == -np.inf


def test_contrast_opposites_follow_queries_added_and_removed():
    retriever = ByTextRetriever()
    retriever.script_by_text = {"a moves left": [0.9] * 6, "a moves right": [0.0] * 6,
                                "b grows": [0.9] * 6, "b shrinks": [0.95, 0.95, 0.95, 0.95, 0.1, 0.1]}
    m = Monitor(retriever, ["a moves left"], window=1.0, stride=1.0, threshold_on=0.5, threshold_off=0.5, batch=1,
                contrast=True)
    events = []
    for event in m.run(FakeSource(8 * 6)):  # windows 0..5
        events.append(event)
        if event["event"] == "start" and event["query"] == "a moves left":
            m.add_query("b grows")  # scored from window 1 on, gated by "b shrinks" until window 4
            m.remove_query(0)
    assert [(e["event"], e["query"], e["time"]) for e in events] == [
        ("start", "a moves left", 0.875), ("end", "a moves left", 0.875), ("start", "b grows", 4.875),
        ("end", "b grows", 5.875)]
    assert events[2]["contrast_score"] == pytest.approx(0.1)


def test_an_opposite_the_encoder_refuses_is_left_out_and_the_rest_still_gate():
    """A query near the length limit whose flipped word makes one opposite too long: that opposite is dropped
    (never scored: the script has no row for it), the others still gate, and the query itself is monitored."""

    class LimitedRetriever(ByTextRetriever):
        def encode_text(self, texts):
            if any(len(t) > 39 for t in texts):
                raise QueryError("too long")
            return super().encode_text(texts)

    query = "a box moves left, then a ball moves up"  # 38 characters; "... a ball moves down" is 40
    retriever = LimitedRetriever()
    # video ids: windows 0 and 1, then the halves of window 1 (2 and 3), encoded for the order check
    retriever.script_by_text = {query: [0.9, 0.9], "a box moves right, then a ball moves up": [0.95, 0.1],
                                "a box moves left": [None, None, 0.8, 0.2], "a ball moves up": [None, None, 0.1, 0.7]}
    m = Monitor(retriever, [query], window=1.0, stride=1.0, threshold_on=0.5, threshold_off=0.5, contrast=True)
    events = list(m.run(FakeSource(8 * 2)))  # window 0: the opposite wins; window 1: the query does
    assert [(e["event"], e["time"]) for e in events] == [("start", 1.875), ("end", 1.875)]
    assert events[0]["contrast_score"] == pytest.approx(0.1)
    assert events[0]["order_score"] == pytest.approx((0.8 - 0.1) - (0.2 - 0.7))


def test_order_check_starts_an_ordered_query_only_where_its_halves_show_its_events_in_order():
    """The order check, on windows where the query would start: halves encoded there only, the swapped caption
    never scored (the script has no row for it), a score at or below 0 blocks, the next window may start."""
    from hbci.runtime.windows import window_halves

    query = "a box moves left, then a ball moves up"
    retriever = ByTextRetriever()
    # video ids: windows 0-3 (one batch); then the halves of window 1 (4, 5), of window 2 (6, 7), of window 3 (8, 9)
    retriever.script_by_text = {
        query: [0.1, 0.9, 0.9, 0.9], "a box moves right, then a ball moves up": [0.0] * 4,
        "a box moves left, then a ball moves down": [0.0] * 4,
        "a box moves left": [None] * 4 + [0.2, 0.6, 0.5, 0.5, 0.9, 0.1],
        "a ball moves up": [None] * 4 + [0.6, 0.2, 0.5, 0.5, 0.1, 0.9]}
    m = Monitor(retriever, [query], window=1.0, stride=1.0, threshold_on=0.5, threshold_off=0.3, batch=4,
                contrast=True)
    events = list(m.run(FakeSource(8 * 4)))
    # window 0: below threshold, no halves; window 1: the halves show the events the other way round (-0.8);
    # window 2: no order either way (0, a tie is no start); window 3: in order (1.6)
    assert [(e["event"], e["time"]) for e in events] == [("start", 3.875), ("end", 3.875)]
    assert events[0]["order_score"] == pytest.approx(1.6) and events[0]["contrast_score"] == pytest.approx(0.0)
    assert [len(f) for f, _ in retriever.encoded] == [4, 2, 2, 2] and m.stats.order_checks == 3
    frames, mask = retriever.encoded[1]
    expected, expected_mask = window_halves(retriever.encoded[0][0][1], retriever.encoded[0][1][1])
    assert np.array_equal(frames, expected) and np.array_equal(mask, expected_mask)


def test_order_check_follows_queries_added_and_removed():
    """The order check of a query added while running uses its own events; a removed query's events are never
    scored again (their script rows are deleted once it is removed)."""
    first, second = "a box grows, then a ball moves up", "a box moves left, then a ball shrinks"
    retriever = ByTextRetriever()
    # video ids: window 0 is 0, the halves it asks for 1 and 2; window 1 is 3, its halves 4 and 5; window 2 is 6
    second_rows = [None, None, None, 0.9, None, None, 0.9]
    retriever.script_by_text = {
        first: [0.9], "a box shrinks, then a ball moves up": [0.0], "a box grows, then a ball moves down": [0.0],
        second: second_rows, "a box moves right, then a ball shrinks": [0.0 if v else v for v in second_rows],
        "a box moves left, then a ball grows": [0.0 if v else v for v in second_rows],
        "a box grows": [None, 0.9, 0.1], "a ball moves up": [None, 0.1, 0.9],
        "a box moves left": [None] * 4 + [0.9, 0.1], "a ball shrinks": [None] * 4 + [0.1, 0.9]}
    m = Monitor(retriever, [first], window=1.0, stride=1.0, threshold_on=0.5, threshold_off=0.5, batch=1,
                contrast=True)
    events = []
    for event in m.run(FakeSource(8 * 3)):
        events.append(event)
        if event["event"] == "start" and event["query"] == first:
            m.add_query(second)
            m.remove_query(0)
            for text in ("a box grows", "a ball moves up"):
                del retriever.script_by_text[text]
    assert [(e["event"], e["query"], e["time"]) for e in events] == [
        ("start", first, 0.875), ("end", first, 0.875), ("start", second, 1.875), ("end", second, 2.875)]
    assert events[0]["order_score"] == pytest.approx(1.6) and events[2]["order_score"] == pytest.approx(1.6)


def test_order_scores_of_several_windows_in_one_call_and_nan_where_a_half_is_empty():
    """Batched: every window's halves in one encoder call, each pair scored on its windows' halves; a window whose
    second half holds no frame gets NaN and is not encoded."""
    from hbci.runtime.monitor import order_scores

    class HalfRetriever(ByTextRetriever):
        def encode_video(self, frames, mask):
            self.encoded.append((frames, mask))
            return {"w": frames[:, 0, 0, 0, 0].astype(int)}  # a half is named by its first frame's value

    retriever = HalfRetriever()
    # window 0 = frames 0..3 (halves start at 0 and 2), window 2 = frames 20..23 (halves 20, 22); window 1 has
    # one valid frame, so its second half is empty
    retriever.script_by_text = {"x": {0: 0.9, 2: 0.1, 20: 0.2, 22: 0.7}, "y": {0: 0.1, 2: 0.8, 20: 0.6, 22: 0.3}}
    frames = np.stack([np.arange(4), np.arange(10, 14), np.arange(20, 24)]).astype(np.uint8)
    frames = frames[:, :, None, None, None] * np.ones((1, 1, 2, 2, 3), np.uint8)
    mask = np.ones((3, 4), bool)
    mask[1, 1:] = False
    found = order_scores(retriever, retriever.encode_text(["x", "y"]), frames, mask)
    assert found.shape == (1, 3) and np.isnan(found[0, 1])
    assert found[0, 0] == pytest.approx((0.9 - 0.1) - (0.1 - 0.8))
    assert found[0, 2] == pytest.approx((0.2 - 0.6) - (0.7 - 0.3))
    assert len(retriever.encoded) == 1 and retriever.encoded[0][0][:, 0, 0, 0, 0].tolist() == [0, 2, 20, 22]


def test_a_one_frame_model_keeps_its_opposites_and_has_no_order_check():
    """Windows of one frame have no halves: the gate then gates by the opposites alone."""
    query = "a box moves left, then a ball grows"
    retriever = ByTextRetriever(num_frames=1)
    retriever.script_by_text = {query: [0.9, 0.9], "a box moves right, then a ball grows": [0.95, 0.1],
                                "a box moves left, then a ball shrinks": [0.0, 0.0]}
    m = Monitor(retriever, [query], window=1.0, stride=1.0, threshold_on=0.5, threshold_off=0.5, contrast=True)
    events = list(m.run(FakeSource(8 * 2)))
    assert [(e["event"], e["time"]) for e in events] == [("start", 1.875), ("end", 1.875)]
    assert "order_score" not in events[0] and m.stats.order_checks == 0
