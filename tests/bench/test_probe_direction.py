"""benchmarks/probe_direction.py, the README's direction diagnosis: its cosines behave as cosines (one sentence
gives 1.0) and a run on a small synthetic split reports every single-move clip under its axis and counts every
caption with a clause-swapped form."""

import csv
import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="the probe runs the torch model")


def test_text_cosines_read_one_sentence_as_one_and_opposites_apart(benchmark_script):
    import torch

    probe = benchmark_script("probe_direction")
    same = probe.text_cosines(lambda texts: torch.ones(len(texts), 4) / 2)
    assert all(v == pytest.approx(1.0) for v in same.values())
    opposite = probe.text_cosines(lambda texts: torch.tensor(
        [[-1.0, 0.0] if ("right" in t or "down" in t) else [1.0, 0.0] for t in texts]))
    assert all(v == pytest.approx(-1.0) for v in opposite.values())


def test_order_cosines_read_swapped_events_apart_only_when_the_encoder_does(benchmark_script):
    import torch

    probe = benchmark_script("probe_direction")
    same = probe.order_text_cosines(lambda texts: torch.ones(len(texts), 4) / 2)
    assert set(same) == set(probe.ORDER_TEMPLATES) and all(v == pytest.approx(1.0) for v in same.values())

    def first_event(texts):  # +1 when the temporally first event is the circle's, else -1 (reads "after" right)
        def first(t):
            if " after " in t:
                return t.split(" after ")[1]
            return t.removeprefix("first ")
        return torch.tensor([[1.0 if first(t).startswith("a red circle") else -1.0, 1.0] for t in texts]) / 2 ** 0.5

    told = probe.order_text_cosines(first_event)
    assert all(v < 0.75 for v in told.values())  # pairs with the circle first or last are told apart


def test_probe_reports_every_single_move_clip_under_its_axis(tmp_path, tiny_checkpoint, benchmark_script):
    from hbci.synth import generate

    probe = benchmark_script("probe_direction")
    data = tmp_path / "synth"
    generate(data, seed=3, n_train=0, n_val=0, n_test=60, frames=12, size=32)
    entries = json.loads((data / "meta.json").read_text())["splits"]["test"]
    expected = {"left/right": 0, "up/down": 0}
    for e in entries:
        if len(e["events"]) == 1 and e["events"][0]["kind"] in probe.AXIS_OF:
            expected[probe.AXIS_OF[e["events"][0]["kind"]]] += 1
    assert sum(expected.values()) > 0

    out = tmp_path / "probe.json"
    assert probe.main(["--checkpoint", str(tiny_checkpoint), "--data", str(data), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {axis: r["clips"] for axis, r in result["axes"].items()} == expected
    for r in result["axes"].values():
        if r["clips"]:
            assert r["frame_change"] > 0 and -1.0 <= r["cos_clip_reversed"] <= 1.0 + 1e-6
    assert all(-1.0 <= c <= 1.0 + 1e-6 and np.isfinite(c) for c in result["text_cosine"].values())
    assert all(-1.0 <= c <= 1.0 + 1e-6 and np.isfinite(c) for c in result["order_text_cosine"].values())
    info = json.loads((data / "meta.json").read_text())
    groups = {e["group"] for e in entries if e["variant"] == "swap_order"}
    expected_pairs = sum(2 <= probe.boundary_cut(e["events"], info["settings"]["frames"], 4) <= 2  # T=4: tiny model
                         for e in entries if e["group"] in groups and e["variant"] in ("base", "swap_order"))
    order = result["order_video"]
    assert expected_pairs > 0 and order["pairs"] == expected_pairs
    assert 0 <= order["over_rotated"] <= 100 and 0 <= order["over_swapped"] <= 100
    from hbci.caption_order import swap_event_order

    with open(data / "test.csv", newline="") as f:  # the captions the probe reads, one per clip
        captions = [row["caption"] for row in csv.DictReader(f)]
    swappable = [c for c in captions if swap_event_order(c) not in (None, c)]
    assert len(swappable) > 0 and result["order_caption"]["captions"] == len(swappable)
    assert 0 <= result["order_caption"]["over_swapped_caption"] <= 100
    assert -2.0 <= result["order_caption"]["median_gap"] <= 2.0


def test_boundary_cut_counts_the_sampled_frames_before_the_gap_between_events(benchmark_script):
    probe = benchmark_script("probe_direction")
    events = [{"start_frame": 0, "end_frame": 9}, {"start_frame": 14, "end_frame": 23}]
    # 24 frames sampled at 12 segment centres: 1, 3, ..., 23; the gap's midpoint is 11.5 -> 6 frames before it
    assert probe.boundary_cut(events, 24, 12) == 6
    assert probe.boundary_cut([{"start_frame": 0, "end_frame": 20}, {"start_frame": 22, "end_frame": 24}], 24, 12) == 10  # 1..19 < 21
