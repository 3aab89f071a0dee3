"""Tests for hbci/synth (the classic world, and the API every world shares): determinism, captions, the reversal property, hard-negative groups, the CLI, streams."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from hbci import synth
from hbci.runtime.video import count_frames, read_frames
from hbci.synth import ClipSpec, Event, SceneObject

SMALL = dict(n_train=8, n_val=5, n_test=12, frames=12, size=32, fps=6.0, world="classic")


def _decoded(out: Path, frames: int) -> dict[str, np.ndarray]:
    videos = sorted((out / "videos").rglob("*.mp4"))
    assert videos
    return {str(v.relative_to(out)): read_frames(v, frames)[0] for v in videos}


def test_same_seed_same_files_other_seed_differs(tmp_path):
    a, b, c = (synth.generate(tmp_path / k, seed=s, **SMALL) for k, s in (("a", 3), ("b", 3), ("c", 4)))
    assert a["clips"] == {"train": 8, "val": 5, "test": 12}
    for split in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{split}.csv").read_text() == (tmp_path / "b" / f"{split}.csv").read_text()
    assert (tmp_path / "a/meta.json").read_text() == (tmp_path / "b/meta.json").read_text()
    fa, fb = _decoded(tmp_path / "a", 12), _decoded(tmp_path / "b", 12)
    assert fa.keys() == fb.keys()
    for key in fa:
        np.testing.assert_array_equal(fa[key], fb[key])
    assert (tmp_path / "a/test.csv").read_text() != (tmp_path / "c/test.csv").read_text()


def test_workers_do_not_change_the_output(tmp_path):
    synth.generate(tmp_path / "one", seed=7, workers=1, **SMALL)
    synth.generate(tmp_path / "two", seed=7, workers=2, **SMALL)
    assert (tmp_path / "one/meta.json").read_text() == (tmp_path / "two/meta.json").read_text()
    fa, fb = _decoded(tmp_path / "one", 12), _decoded(tmp_path / "two", 12)
    for key in fa:
        np.testing.assert_array_equal(fa[key], fb[key])


def test_captions_parse_back_to_their_spec():
    rng = np.random.default_rng(0)
    seen_words = set()
    for _ in range(300):
        spec = synth.random_spec(rng)
        for _ in range(5):
            text = synth.caption(spec, rng)
            assert synth.parse_caption(text) == synth.describe(spec), text
            # Well under CLIP's 77; each word here is one BPE token (max seen: 19 tokens with SOT/EOT).
            assert len(text.split()) + text.count(",") + 2 <= 28, text
            seen_words.update(text.replace(",", "").split())
    # The synonyms and the order-inverting template are actually used.
    assert {"ball", "box", "vanishes", "after", "followed", "then"} <= seen_words


def test_parse_caption_rejects_text_without_events():
    with pytest.raises(ValueError):
        synth.parse_caption("a cat on a mat")


def _one(kind: str, amount: float) -> ClipSpec:
    return ClipSpec((SceneObject("red", "circle", 0.3, 0.3, 0.34),), (Event(kind, 0, amount),))


@pytest.mark.parametrize("forward, amount", [("move_right", 0.35), ("move_down", 0.35), ("grow", 0.5),
                                             ("appear", 0.0)])
def test_reverse_kind_renders_the_same_frames_backwards(forward, amount):
    a = synth.render_clip(_one(forward, amount), 16, 64)
    b = synth.render_clip(_one(synth.REVERSE[forward], amount), 16, 64)
    np.testing.assert_array_equal(b, a[::-1])
    assert not np.array_equal(a, b)  # only the order differs, and it does differ


def test_two_event_phases_and_static_objects():
    spec = ClipSpec(
        (SceneObject("red", "circle", 0.25, 0.25, 0.34), SceneObject("blue", "square", 0.75, 0.75, 0.34)),
        (Event("move_right", 0, 0.4), Event("appear", 1)),
    )
    frames = synth.render_clip(spec, 12, 64)
    assert synth.event_frames(spec, 12) == [(0, 6), (6, 12)]
    blue = np.array(synth.COLOURS["blue"])
    # The square is invisible until its phase, the circle rests at its end position during the second phase.
    assert not (frames[:6] == blue).all(axis=-1).any()
    assert (frames[-1] == blue).all(axis=-1).sum() > 100
    red_cols = lambda f: np.nonzero((f == synth.COLOURS["red"]).all(axis=-1).any(axis=0))[0].mean()
    assert red_cols(frames[5]) > red_cols(frames[0]) + 20 and red_cols(frames[11]) == red_cols(frames[5])


def test_render_is_pure_and_colours_survive_mp4v(tmp_path):
    spec = synth.random_spec(np.random.default_rng(5))
    a, b = synth.render_clip(spec, 8, 64), synth.render_clip(spec, 8, 64)
    assert a.dtype == np.uint8 and a.shape == (8, 64, 64, 3)
    np.testing.assert_array_equal(a, b)
    for colour, rgb in synth.COLOURS.items():
        still = ClipSpec((SceneObject(colour, "square", 0.5, 0.5, 0.34),), ())
        synth.write_video(tmp_path / f"{colour}.mp4", synth.render_clip(still, 4, 64), 8)
        decoded, _ = read_frames(tmp_path / f"{colour}.mp4", 4)
        assert np.abs(decoded[:, 32, 32].astype(int) - rgb).max() <= 20, colour  # mp4v at 64 px: a few levels off
        assert decoded[:, 2, 2].max() <= 12  # the background stays black


def test_variants_are_hard_negatives():
    spec = ClipSpec(
        (SceneObject("red", "circle", 0.25, 0.25, 0.3), SceneObject("blue", "square", 0.7, 0.7, 0.3)),
        (Event("move_left", 0, 0.3), Event("grow", 1, 0.5)),
    )
    labelled = dict(synth.labelled_variants(spec))
    assert set(labelled) == {"reverse_0", "reverse_1", "swap_order", "swap_colours"}
    assert synth.describe(labelled["reverse_0"])[0][2] == "move_right"
    assert synth.describe(labelled["swap_order"]) == synth.describe(spec)[::-1]
    assert synth.describe(labelled["swap_colours"]) == (("blue", "circle", "move_left"), ("red", "square", "grow"))
    assert len({synth.describe(s) for s in [spec, *labelled.values()]}) == 5
    kinds = [e.kind for e in spec.events]
    assert {label: synth.variant_class(label, kinds) for label in labelled} == {
        "reverse_0": "left/right", "reverse_1": "grow/shrink", "swap_order": "event order",
        "swap_colours": "colour swap"}


def _meta_groups(out: Path, split: str) -> dict[str, list[dict]]:
    meta = json.loads((out / "meta.json").read_text())
    groups = defaultdict(list)
    for clip in meta["splits"][split]:
        groups[clip["group"]].append(clip)
    return groups


def test_hard_negative_groups_in_test_and_train(tmp_path):
    synth.generate(tmp_path, seed=1, n_train=30, n_val=10, n_test=60, frames=8, size=32)
    test = _meta_groups(tmp_path, "test")
    labels = {c["variant"] for g in test.values() for c in g}
    assert {"base", "reverse_0", "reverse_1", "swap_order", "swap_colours"} <= labels
    assert sum(len(g) >= 2 for g in test.values()) >= len(test) - 1  # only the last group may be cut short
    descriptions = [tuple((e["colour"], e["shape"], e["kind"]) for e in c["events"])
                    for g in test.values() for c in g]
    assert len(set(descriptions)) == len(descriptions) == 60  # a test caption matches only its own clip
    train = _meta_groups(tmp_path, "train")
    assert any({"base", "reverse_0"} <= {c["variant"] for c in g} for g in train.values())


def test_cli_writes_the_layout(tmp_path, capsys):
    out = tmp_path / "bench"
    assert synth.main(["--out", str(out), "--seed", "2", "--train", "4", "--val", "2", "--test", "6",
                       "--frames", "10", "--size", "32", "--train-captions", "2", "--world", "classic"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["clips"] == {"train": 4, "val": 2, "test": 6}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["settings"]["seed"] == 2 and meta["settings"]["fps"] == 8.0 and meta["settings"]["frames"] == 10
    for split, n in (("train", 4), ("val", 2), ("test", 6)):
        with (out / f"{split}.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == ["video", "caption"]
        videos = sorted({r["video"] for r in rows})
        assert len(videos) == n and all(v.startswith(f"videos/{split}/") for v in videos)
        per_video = 2 if split == "train" else 1
        assert len(rows) <= n * per_video and (split == "train" or len(rows) == n)
        clip = meta["splits"][split][0]
        assert {"id", "video", "group", "variant", "captions", "objects", "events"} <= set(clip)
        assert {"kind", "colour", "shape", "start_frame", "end_frame"} <= set(clip["events"][0])
        assert synth.spec_from_dict(clip) is not None
        assert count_frames(out / videos[0]) == 10


def test_spec_dict_round_trip():
    spec = synth.random_spec(np.random.default_rng(9))
    assert synth.spec_from_dict(json.loads(json.dumps(synth.spec_to_dict(spec, 24)))) == spec


def test_generate_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="even"):
        synth.generate(tmp_path, seed=0, n_train=1, n_val=1, n_test=1, size=33)


def test_make_stream_reports_event_times(tmp_path):
    rng = np.random.default_rng(4)
    a, b = synth.random_spec(rng), synth.random_spec(rng)
    path = tmp_path / "stream.mp4"
    segments = synth.make_stream(path, [2.0, a, 1.5, b, 1.0], fps=10, size=32, rng=rng, clip_frames=20)
    assert count_frames(path) == 20 + 20 + 15 + 20 + 10
    assert [s.spec for s in segments] == [a, b]
    assert (segments[0].start_s, segments[0].end_s) == (2.0, 4.0)
    assert (segments[1].start_s, segments[1].end_s) == (5.5, 7.5)
    first = segments[0].events[0]
    assert first.start_s == 2.0 and first.kind == a.events[0].kind
    assert synth.parse_caption(segments[1].caption) == synth.describe(b)


def test_import_pulls_no_torch():
    code = "import sys, hbci.synth; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
