"""Tests for the wide synthetic world: looks, timing, phrasings, training clips in context, the held-out split."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hbci import synth
from hbci.runtime.video import count_frames, read_frames
from hbci.synth import ClipSpec, Event, Look, SceneObject


def test_every_phrasing_parses_back_and_held_out_templates_are_never_trained():
    rng = np.random.default_rng(0)
    for world in (synth.WIDE, synth.HELD_OUT, synth.CLASSIC):
        for _ in range(150):
            spec = synth.random_spec(rng, world=world)
            for phrasing in synth.PHRASINGS:
                text = synth.caption(spec, rng, phrasing)
                assert synth.parse_caption(text) == synth.describe(spec), text
    train, held = synth.PHRASINGS["train"], synth.PHRASINGS["held_out"]
    assert not set(held.one + held.two) & set(train.one + train.two)
    assert set(synth.PHRASINGS["classic"].two) <= set(train.two)  # classic captions stay in distribution


def test_wide_specs_vary_and_stay_well_formed():
    rng = np.random.default_rng(1)
    specs = [synth.random_spec(rng, world=synth.WIDE) for _ in range(60)]
    looks = {s.look.background for s in specs}
    assert looks <= set(synth.TRAIN_FAMILIES) and len(looks) >= 4
    assert {e.ease for s in specs for e in s.events} == {"linear", "in_out"}
    assert any(o.tint != (0, 0, 0) for s in specs for o in s.objects)
    for s in specs:
        synth.check_spec(s)
        ranges = synth.event_frames(s, 24)
        assert all(b - a >= 2 for a, b in ranges) and all(b <= c for (_, b), (c, _) in zip(ranges, ranges[1:]))
        assert synth.spec_from_dict(json.loads(json.dumps(synth.spec_to_dict(s, 24)))) == s
    held = {synth.random_spec(rng, world=synth.HELD_OUT).look.background for _ in range(10)}
    assert held == set(synth.HELD_OUT_FAMILIES)


def test_timed_reversal_keeps_the_reversal_property():
    """A still camera and an event centred in the clip: the reversed kind renders the same frames backwards."""
    obj = SceneObject("red", "square", 0.3, 0.4, 0.3, tint=(10, -5, 0), angle=8.0)
    look = Look("stripes", (40, 30, 50), (70, 60, 40), angle=30.0)
    for kind, amount in (("move_right", 0.3), ("grow", 0.5), ("appear", 0.0)):
        spec = ClipSpec((obj,), (Event(kind, 0, amount, 0.2, 0.8, "in_out"),), look)
        forward = synth.render_clip(spec, 20, 64)
        backward = synth.render_clip(replace(spec, events=(replace(spec.events[0], kind=synth.REVERSE[kind]),)), 20,
                                     64)
        np.testing.assert_array_equal(backward, forward[::-1])


def test_swap_order_exchanges_the_events_times():
    a = SceneObject("red", "circle", 0.2, 0.2, 0.3)
    b = SceneObject("blue", "square", 0.7, 0.7, 0.3)
    spec = ClipSpec((a, b), (Event("grow", 0, 0.5, 0.0, 0.4), Event("appear", 1, 0.0, 0.5, 0.9)))
    swapped = dict(synth.labelled_variants(spec))["swap_order"]
    assert [(e.kind, e.start, e.end) for e in swapped.events] == [("appear", 0.0, 0.4), ("grow", 0.5, 0.9)]
    with pytest.raises(ValueError, match="ordered"):
        synth.check_spec(replace(spec, events=spec.events[::-1]))


def test_backgrounds_and_camera_shake():
    for family in synth.TRAIN_FAMILIES + synth.HELD_OUT_FAMILIES:
        look = synth.random_look(np.random.default_rng(3), (family,))
        image = synth.background(look, 48)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8 and image.max() <= 150 + 12 * 4
        np.testing.assert_array_equal(image, synth.background(look, 48))  # a pure function of the look
    assert not synth.background(Look(), 16).any()
    shaky = Look("shade", (30, 30, 30), shake=1.0, seed=5)
    offsets = synth.camera_offsets(shaky, 200)
    assert np.abs(offsets).max() <= 2 and offsets.std() > 0.3
    assert not synth.camera_offsets(Look(), 10).any()
    with pytest.raises(ValueError, match="unknown background"):
        Look("plaid")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_wide_benchmark_layout_context_and_held_out_split(tmp_path):
    out = tmp_path / "wide"
    summary = synth.generate(out, seed=2, n_train=12, n_val=4, n_test=10, frames=16, size=32, fps=8.0)
    assert summary["clips"] == {"train": 12, "val": 4, "test": 10, "heldout": 10}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["settings"]["world"] == "wide" and meta["settings"]["heldout_looks"] == ["tiles"]
    for split in ("train", "val", "test"):
        assert all(c.get("look", {}).get("background", "black") != "tiles" for c in meta["splits"][split])
    assert all(c["look"]["background"] == "tiles" for c in meta["splits"]["heldout"])
    train_rows = _rows(out / "train.csv")
    assert list(train_rows[0]) == list(synth.TRAIN_COLUMNS)
    assert list(_rows(out / "heldout.csv")[0]) == ["video", "caption"]
    for row, clip in zip(train_rows, meta["splits"]["train"]):
        before, after = clip["context"]["before"]["frames"], clip["context"]["after"]["frames"]
        assert count_frames(out / row["video"]) == before + 16 + after
        assert float(row["start"]) == pytest.approx(before / 8) and float(row["end"]) == pytest.approx((before + 15) / 8)
        assert float(row["start"]) <= float(row["event_start"]) < float(row["event_end"]) <= float(row["end"])
        assert row["time_sensitive"] == "1"
        assert (row["order_cut"] != "") == (len(clip["events"]) == 2)
    # A two-event clip and its group's order swap name each other, their events at the same times in the clip.
    by_video = {row["video"]: (row, clip) for row, clip in zip(train_rows, meta["splits"]["train"])}
    named = {v: row["order_negative"] for v, (row, _) in by_video.items() if row["order_negative"]}
    assert named, "the 12 training clips hold a two-event group's base and its swap"
    for video, partner in named.items():
        (row, clip), (other, other_clip) = by_video[video], by_video[partner]
        assert named[partner] == video and clip["group"] == other_clip["group"]
        assert {clip["variant"], other_clip["variant"]} == {"base", "swap_order"}
        assert [e["kind"] for e in clip["events"]] == [e["kind"] for e in reversed(other_clip["events"])]
        assert float(row["order_cut"]) - float(row["start"]) == pytest.approx(
            float(other["order_cut"]) - float(other["start"]))
    assert all(not row["order_negative"] for row, clip in by_video.values() if clip["variant"] not in
               ("base", "swap_order") or len(clip["events"]) < 2)
    # The clip inside its context is the clip itself: the rendered frames between start and end.
    row, clip = train_rows[0], meta["splits"]["train"][0]
    before = clip["context"]["before"]["frames"]
    decoded, _ = read_frames(out / row["video"], count_frames(out / row["video"]))
    rendered = synth.render_clip(synth.spec_from_dict(clip), 16, 32)
    assert np.abs(decoded[before:before + 16].astype(int) - rendered).mean() < 6  # mp4v at 32 px


def test_wide_output_is_deterministic_and_worker_independent(tmp_path):
    kwargs = dict(seed=4, n_train=6, n_val=2, n_test=4, frames=12, size=32)
    synth.generate(tmp_path / "a", workers=1, **kwargs)
    synth.generate(tmp_path / "b", workers=2, **kwargs)
    assert (tmp_path / "a/meta.json").read_text() == (tmp_path / "b/meta.json").read_text()
    for video in sorted((tmp_path / "a" / "videos").rglob("*.mp4")):
        other = tmp_path / "b" / video.relative_to(tmp_path / "a")
        n = count_frames(video)
        np.testing.assert_array_equal(read_frames(video, n)[0], read_frames(other, n)[0])


def test_classic_world_refuses_wide_only_settings(tmp_path):
    with pytest.raises(ValueError, match="classic world"):
        synth.generate(tmp_path, seed=0, n_train=1, n_val=1, n_test=1, world="classic", n_heldout=3)
    with pytest.raises(SystemExit):
        synth.main(["--out", str(tmp_path), "--world", "classic", "--context", "1.0", "--train", "1"])


def test_order_swap_partners_pair_a_base_with_its_swap_only():
    members = [("g0", "base"), ("g0", "reverse_0"), ("g0", "swap_order"), None, ("g1", "swap_order"),
               ("g2", "base"), ("g2", "swap_order")]
    assert synth.order_swap_partners(members) == {2: 0, 0: 2, 6: 5, 5: 6}  # g1 has no base in the split
