"""Backbone pretraining on captioned synthetic stills: captions say what a still shows, stills are deterministic,
and the written weights load as the backbone's `pretrained` file."""

import json
import re

import numpy as np
import pytest

from hbci.pretrain import main, make_stills, still_caption
from hbci.synth import ClipSpec, Event, SceneObject, clip_states


def _spec(*objects):
    return ClipSpec(tuple(objects), ())


def test_caption_names_colour_shape_and_position():
    spec = _spec(SceneObject("red", "square", 0.2, 0.8, 0.3))
    state = np.array([[0.2, 0.8, 0.3, 1.0]])
    caption = still_caption(spec, state, np.random.default_rng(0))
    assert re.fullmatch(r"a red (square|box) at the bottom left", caption)


@pytest.mark.parametrize("state, expected", [
    ((0.5, 0.5, 0.3, 1.0), r"a red (square|box) in the centre"),
    ((0.5, 0.2, 0.3, 0.4), r"a faint red (square|box) at the top"),
    ((0.8, 0.5, 0.15, 1.0), r"a small red (square|box) on the right"),
    ((0.5, 0.5, 0.3, 0.0), r"an empty black frame"),
])
def test_caption_size_faintness_and_invisible_objects(state, expected):
    spec = _spec(SceneObject("red", "square", 0.5, 0.5, 0.3))
    assert re.fullmatch(expected, still_caption(spec, np.array([state]), np.random.default_rng(0)))


def test_every_region_phrase_is_one_of_the_nine_positions():
    from hbci.pretrain import _REGIONS, _region

    assert len(set(_REGIONS)) == 9
    assert {_region(x, y) for x in np.linspace(0, 1, 21) for y in np.linspace(0, 1, 21)} == set(_REGIONS)


def test_caption_of_a_moving_object_follows_the_frame():
    obj = SceneObject("blue", "circle", 0.25, 0.5, 0.3)
    spec = ClipSpec((obj,), (Event("move_right", 0, 0.5),))
    states = clip_states(spec, 24)
    rng = np.random.default_rng(0)
    assert still_caption(spec, states[0], rng).endswith("on the left")
    assert still_caption(spec, states[-1], rng).endswith("on the right")


def test_stills_are_deterministic_and_independent_of_workers():
    count = 2010  # more than one rendering chunk of 500 scenes, so that two workers share the work
    a, ca = make_stills(count, seed=4, image_size=32, workers=1)
    b, cb = make_stills(count, seed=4, image_size=32, workers=2)
    c, _ = make_stills(count, seed=5, image_size=32, workers=1)
    assert a.shape == (count, 32, 32, 3) and a.dtype == np.uint8 and len(ca) == count
    assert np.array_equal(a, b) and ca == cb and not np.array_equal(a, c)


def test_pretrain_lowers_the_loss_and_writes_a_loadable_backbone(tmp_path, capsys):
    from hbci.backbone import create_backbone

    out = tmp_path / "backbone.pt"
    assert main(["--out", str(out), "--steps", "12", "--images", "256", "--batch-size", "64", "--no-progress",
                 "--workers", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["final_loss"] < result["first_loss"]
    assert 0 <= result["held_out_position_accuracy"] <= 100
    assert json.loads(out.with_suffix(".json").read_text()) == result
    model = create_backbone("hbci-tiny", str(out))  # strict load: every key of the backbone is in the file
    import torch

    saved = torch.load(out, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "b.pt"), "--steps", "0"])
