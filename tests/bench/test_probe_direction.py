"""benchmarks/probe_direction.py, the README's direction diagnosis: its cosines behave as cosines (one sentence
gives 1.0) and a run on a small synthetic split reports every single-move clip under its axis."""

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
