"""benchmarks/bench_alerts.py: every hard-negative query of a stream is filed under what it changes and under how
many events it names, and the per-variant and per-event-count false-alert counts add up to each kind's total."""

from types import SimpleNamespace

import numpy as np
import pytest

from hbci.caption_order import event_clauses
from hbci.synth import VARIANT_CLASSES, parse_caption


def test_hard_negatives_are_filed_by_variant_and_counted(tmp_path, benchmark_script):
    bench = benchmark_script("bench_alerts")
    path, known, queries, variant_of = bench.stream_case(tmp_path, seed=5, index=0, clips=4, fps=8.0, size=32)
    hard = [q for q, kind in queries if kind == "hard_negative"]
    assert hard and sorted(variant_of) == sorted(hard)
    assert set(variant_of.values()) <= set(VARIANT_CLASSES)

    # Every window scores 1.0 for every query: each query alerts once over the whole stream.
    windows = [(i * 0.5, i * 0.5 + 3.0) for i in range(int(known[-1]["end_s"]) * 2)]
    case = {"path": path, "known": known, "queries": queries, "variant_of": variant_of, "spans": windows,
            "scores": np.ones((len(queries), len(windows)), np.float32)}
    bundle = SimpleNamespace(thresholds=None)
    retriever = SimpleNamespace(bundle=bundle, bundle_id="test")
    result = bench.evaluate(retriever, [case], 3.0, 0.5, 0.0, 0.5, 0.4)
    by_variant = result["hard_negatives_by_variant"]
    assert sum(v["queries"] for v in by_variant.values()) == len(hard)
    assert sum(v["fp"] for v in by_variant.values()) == result["by_kind"]["hard_negative"]["fp"] == len(hard)
    by_events = result["false_alerts_by_events"]
    for kind, total in result["by_kind"].items():
        assert sum(v["queries"] for v in by_events[kind].values()) == total["queries"]
        assert sum(v["fp"] for v in by_events[kind].values()) == total["fp"]
    two_event_hard = sum(len(parse_caption(q.lower())) == 2 for q in hard)
    assert 0 < two_event_hard < len(hard)  # both kinds occur in this stream
    assert by_events["hard_negative"][2]["queries"] == by_events["hard_negative"][2]["fp"] == two_event_hard


def test_the_contrast_replay_gates_starts_on_the_recorded_opposite_and_order_scores(tmp_path, benchmark_script):
    """Replayed with the contrast gate, a query alerts only where its recorded score beats its opposites' and its
    recorded order score is above 0: ties everywhere give no alert, no opposites (-inf) and no order checks (NaN)
    give the alerts of the plain replay, order scores of 0 block the ordered queries."""
    bench = benchmark_script("bench_alerts")
    path, known, queries, variant_of = bench.stream_case(tmp_path, seed=5, index=0, clips=2, fps=8.0, size=32)
    windows = [(i * 0.5, i * 0.5 + 3.0) for i in range(int(known[-1]["end_s"]) * 2)]
    scores = np.ones((len(queries), len(windows)), np.float32)
    case = {"path": path, "known": known, "queries": queries, "variant_of": variant_of, "spans": windows,
            "scores": scores, "contrast": np.full_like(scores, -np.inf), "order": np.full_like(scores, np.nan)}
    retriever = SimpleNamespace(bundle=SimpleNamespace(thresholds=None), bundle_id="test")
    plain = bench.evaluate(retriever, [case], 3.0, 0.5, 0.0, 0.5, 0.4)
    free = bench.evaluate(retriever, [case], 3.0, 0.5, 0.0, 0.5, 0.4, contrast=True)
    assert free["method"] == "global+contrast" and (free["tp"], free["fp"]) == (plain["tp"], plain["fp"]) != (0, 0)
    case["contrast"] = scores.copy()
    tied = bench.evaluate(retriever, [case], 3.0, 0.5, 0.0, 0.5, 0.4, contrast=True)
    assert (tied["tp"], tied["fp"], tied["recall"]) == (0, 0, 0.0)
    case["contrast"] = np.full_like(scores, -np.inf)
    ordered = np.array([event_clauses(q) is not None for q, _ in queries])
    assert 0 < ordered.sum() < len(queries)
    case["order"][ordered] = 0.0
    blocked = bench.evaluate(retriever, [case], 3.0, 0.5, 0.0, 0.5, 0.4, contrast=True)
    case["order"][ordered] = 0.1
    passed = bench.evaluate(retriever, [case], 3.0, 0.5, 0.0, 0.5, 0.4, contrast=True)
    assert (passed["tp"], passed["fp"]) == (plain["tp"], plain["fp"])
    assert blocked["tp"] + blocked["fp"] == plain["tp"] + plain["fp"] - ordered.sum()  # one alert per query


def test_a_held_out_world_draws_every_clip_and_look_alike_in_the_unseen_look(tmp_path, benchmark_script, monkeypatch):
    from hbci.synth import HELD_OUT_FAMILIES, ClipSpec

    bench = benchmark_script("bench_alerts")
    rendered = []
    real = bench.make_stream

    def spy(path, segments, *args, **kwargs):
        rendered.extend(s for s in segments if isinstance(s, ClipSpec))
        return real(path, segments, *args, **kwargs)

    monkeypatch.setattr(bench, "make_stream", spy)
    for world, looks in (("held_out", set(HELD_OUT_FAMILIES)), ("classic", {"black"})):
        rendered.clear()
        _, known, queries, _ = bench.stream_case(tmp_path, seed=5, index=0, clips=3, fps=8.0, size=32, world=world)
        assert len(rendered) == len(known) == 3 and {s.look.background for s in rendered} <= looks


def test_other_renderings_keep_the_clips_and_their_length_in_seconds(tmp_path, benchmark_script):
    """--fps / --size / --clip-seconds: the same clips (drawn before anything that depends on the rendering) last
    clip_seconds whatever the frame rate, and the video holds them at that rate and size."""
    import cv2

    bench = benchmark_script("bench_alerts")
    cases = {}
    for fps, seconds in ((8.0, 3.0), (24.0, 3.0), (24.0, 1.0)):
        folder = tmp_path / f"{fps:g}-{seconds:g}"
        folder.mkdir()
        cases[fps, seconds] = bench.stream_case(folder, seed=5, index=0, clips=3, fps=fps, size=40,
                                                clip_seconds=seconds)
    for (fps, seconds), (path, known, _, _) in cases.items():
        assert [k["events"] for k in known] == [k["events"] for k in cases[8.0, 3.0][1]]
        assert all(abs(k["end_s"] - k["start_s"] - seconds) < 1e-9 for k in known)
        capture = cv2.VideoCapture(str(path))
        frames = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames += 1
            assert frame.shape[:2] == (40, 40)
        capture.release()
        assert frames / fps >= known[-1]["end_s"] + 2 - 1e-9  # the last clip and its 2-6 s of filler, all written


def test_the_rendering_options_are_checked_before_any_work(benchmark_script):
    bench = benchmark_script("bench_alerts")
    for bad in (["--fps", "0"], ["--size", "4"], ["--clip-seconds", "-1"]):
        with pytest.raises(SystemExit) as exc:
            bench.main(["--bundle", "/nonexistent"] + bad)
        assert exc.value.code == 2
