"""The per-variant breakdown of hbci.evaluate, and its paired comparison of two models, against a hand count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hbci.data import ClipSet
from hbci.datasets import VideoItem
from hbci.evaluate import against_report, evaluate, variant_accuracy, variant_hits


def _entry(video, group, variant, kinds):
    return {"video": video, "group": group, "variant": variant, "events": [{"kind": k} for k in kinds]}


def test_variant_accuracy_counts_base_variant_pairs_both_ways(tmp_path):
    meta = [_entry("v/0.mp4", "g0", "base", ["move_left", "grow"]),
            _entry("v/1.mp4", "g0", "reverse_0", ["move_right", "grow"]),
            _entry("v/2.mp4", "g0", "reverse_1", ["move_left", "shrink"]),
            _entry("v/3.mp4", "g0", "swap_order", ["grow", "move_left"]),
            _entry("v/4.mp4", "g1", "base", ["move_up"]),
            _entry("v/5.mp4", "g1", "reverse_0", ["move_down"])]
    items = [VideoItem(str(i), tmp_path / e["video"], ("c",)) for i, e in enumerate(meta)]
    clips = ClipSet(items, np.zeros((6, 1)), np.ones((6, 1), bool))
    owners = np.arange(6)
    sim = np.eye(6)
    sim[0, 1] = 1.0      # base's caption ties with its left/right variant: wrong (ties count against)
    sim[5, 4] = 2.0      # the move_down caption prefers the move_up clip: wrong
    result = variant_accuracy(sim, owners, clips, {e["video"]: e for e in meta}, tmp_path)
    assert result["left/right"] == {"accuracy": 50.0, "n": 2}
    assert result["grow/shrink"] == {"accuracy": 100.0, "n": 2}
    assert result["event order"] == {"accuracy": 100.0, "n": 2}
    assert result["up/down"] == {"accuracy": 50.0, "n": 2}
    assert result["direction"] == {"accuracy": 50.0, "n": 4}
    assert result["colour swap"] == {"accuracy": None, "n": 0}
    outside = ClipSet([VideoItem("x", Path("/elsewhere/x.mp4"), ("c",))], np.zeros((1, 1)), np.ones((1, 1), bool))
    assert variant_accuracy(np.eye(1), np.arange(1), outside, {}, tmp_path)["direction"]["n"] == 0


def test_event_order_is_split_by_how_the_caption_tells_it(tmp_path):
    """A caption naming the later event first ("Y after X") counts as told backwards; one whose colours cannot be
    found is counted in the total only."""
    def entry(video, variant, events):
        return {"video": video, "group": "g", "variant": variant,
                "events": [{"kind": k, "colour": c} for k, c in events]}

    meta = [entry("v/0.mp4", "base", [("move_left", "red"), ("grow", "blue")]),
            entry("v/1.mp4", "swap_order", [("grow", "blue"), ("move_left", "red")])]
    captions = [("a red ball moves left, then a blue box grows", "a blue box grows after a red ball moves left",
                 "something happens"),
                ("a red ball moves left after a blue box grows",)]
    items = [VideoItem(str(i), tmp_path / e["video"], c) for i, (e, c) in enumerate(zip(meta, captions))]
    clips = ClipSet(items, np.zeros((2, 1)), np.ones((2, 1), bool))
    owners = np.array([0, 0, 0, 1])
    sim = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # only "blue ... after red ..." is wrong
    result = variant_accuracy(sim, owners, clips, {e["video"]: e for e in meta}, tmp_path)
    assert result["event order"] == {"accuracy": 75.0, "n": 4}
    assert result["order told in order"] == {"accuracy": 100.0, "n": 1}
    assert result["order told backwards"] == {"accuracy": 50.0, "n": 2}


def test_event_order_is_split_by_how_many_events_are_moves(tmp_path):
    """Each order pair counts under the number of moves among its clip's two events: no move, one, two."""
    def group(name, kinds):
        events = [{"kind": k, "colour": c} for k, c in zip(kinds, ("red", "blue"))]
        return [{"video": f"v/{name}0.mp4", "group": name, "variant": "base", "events": events},
                {"video": f"v/{name}1.mp4", "group": name, "variant": "swap_order", "events": events[::-1]}]

    meta = group("a", ("grow", "appear")) + group("b", ("move_left", "shrink")) + group("c", ("move_left", "move_up"))
    items = [VideoItem(str(i), tmp_path / e["video"], (f"caption {i}",)) for i, e in enumerate(meta)]
    clips = ClipSet(items, np.zeros((6, 1)), np.ones((6, 1), bool))
    sim = np.eye(6)
    sim[5, 4] = 2.0  # the second two-move clip's caption prefers its order swap: wrong
    result = variant_accuracy(sim, np.arange(6), clips, {e["video"]: e for e in meta}, tmp_path)
    assert result["event order"] == {"accuracy": 83.3, "n": 6}
    assert result["order, no move"] == {"accuracy": 100.0, "n": 2}
    assert result["order, one move"] == {"accuracy": 100.0, "n": 2}
    assert result["order, two moves"] == {"accuracy": 50.0, "n": 2}


def test_two_models_compare_pair_by_pair_on_the_hard_negatives(tmp_path, monkeypatch):
    """`evaluate(..., against=)` pairs the variant hits of both models: on the event-order pairs below model A is
    right on 3 of 4, B on 2 of 4 (two pairs only A gets right, one only B); the difference and its paired error
    follow by hand."""
    import hbci.evaluate as ev

    def entry(video, variant, events):
        return {"video": video, "group": "g", "variant": variant,
                "events": [{"kind": k, "colour": c} for k, c in events]}

    meta = [entry("v/0.mp4", "base", [("move_left", "red"), ("grow", "blue")]),
            entry("v/1.mp4", "swap_order", [("grow", "blue"), ("move_left", "red")])]
    captions = [("a red ball moves left, then a blue box grows", "a blue box grows after a red ball moves left"),
                ("a blue box grows, then a red ball moves left", "a red ball moves left after a blue box grows")]
    items = [VideoItem(str(i), tmp_path / e["video"], c) for i, (e, c) in enumerate(zip(meta, captions))]
    clips = ClipSet(items, np.zeros((2, 1)), np.ones((2, 1), bool))
    owners = np.array([0, 0, 1, 1])
    sims = {"a": np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]),   # wrong on caption 1 only
            "b": np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])}   # wrong on captions 2 and 3
    assert variant_hits(sims["a"], owners, clips, {e["video"]: e for e in meta}, tmp_path)["event order"] == [
        True, False, True, True]
    monkeypatch.setattr(ev, "_similarities", lambda model, *_: (sims[model], {}))
    result = evaluate("a", clips, meta={e["video"]: e for e in meta}, root=tmp_path, against="b")
    order = result["against"]["variants"]["event order"]
    diffs = np.array([0.0, -1.0, 1.0, 1.0])  # A's hit minus B's, pair by pair
    assert order["accuracy a"] == 75.0 and order["accuracy b"] == 50.0 and order["difference"] == 25.0
    assert order["se_paired"] == pytest.approx(100 * diffs.std(ddof=1) / 2)
    assert (order["a_only"], order["b_only"], order["n"]) == (2, 1, 4)
    assert "colour swap" not in result["against"]["variants"]  # no pairs: nothing to compare
    assert "event order 75.0% against 50.0% (+25.0" in against_report(result["against"])
