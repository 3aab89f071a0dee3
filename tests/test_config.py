"""Configs: shipped files load, overrides are typed, unknown keys are refused with the valid ones listed."""

import json

import pytest

from hbci.config import apply_overrides, config_from_dict, config_to_dict, load_config
from hbci.runtime.errors import ConfigError


def test_shipped_small_config_loads_by_name():
    cfg = load_config("small")
    assert cfg.model.backbone == "hbci-tiny" and cfg.model.levels == (1, 2, 3)


def test_overrides_are_parsed_with_the_field_type():
    cfg = apply_overrides(load_config("small"), ["model.concepts=1", "model.levels=3", "train.lr=0.01",
                                                 "model.distill_stop_grad=false", "model.distill_temperature=none"])
    assert cfg.model.concepts == 1 and cfg.model.levels == (3,) and cfg.train.lr == 0.01
    assert cfg.model.distill_stop_grad is False and cfg.model.distill_temperature is None


def test_unknown_key_lists_the_valid_ones(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"model": {"conceptz": 4}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "model.conceptz" in str(err.value) and "model.concepts" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ConfigError, match="train.epochs"):
        apply_overrides(load_config("small"), ["train.epoch=3"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="train.epochs"):
        config_from_dict({"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="model.concepts"):
        apply_overrides(load_config("small"), ["model.concepts=2.5"])


def test_invalid_choice_is_refused():
    with pytest.raises(ConfigError, match="video_pooling"):
        apply_overrides(load_config("small"), ["model.video_pooling=max"])


def test_caption_negatives_need_a_temporal_weight_and_ablation_rows_without_one_drop_them(tmp_path):
    from hbci.ablation import ROWS, row_config

    options = ("swapped_caption_negatives", "rendered_order_negatives", "partial_window_negatives")
    for option in options:
        alone = [f"model.{o}={str(o == option).lower()}" for o in options]
        with pytest.raises(ConfigError, match=option):
            apply_overrides(load_config("small"), ["model.temporal_negative_weight=0", *alone])
    with pytest.raises(ConfigError, match="temporal_negative_margin"):
        apply_overrides(load_config("small"), ["model.temporal_negative_weight=0", "model.temporal_negative_margin=0.1",
                                               *(f"model.{o}=false" for o in options)])
    with pytest.raises(ConfigError, match="temporal_negative_margin"):
        apply_overrides(load_config("small"), ["model.temporal_negative_margin=-0.1"])
    with pytest.raises(ConfigError, match="caption_negative_margin"):
        apply_overrides(load_config("small"), ["model.swapped_caption_negatives=false",
                                               "model.caption_negative_margin=0.2"])
    base = apply_overrides(load_config("small"), [*(f"model.{option}=true" for option in options),
                                                  "model.temporal_negative_margin=0.1",
                                                  "model.caption_negative_margin=0.2"])
    for index in range(len(ROWS)):  # every row builds, and a row without temporal negatives has none of them
        model = row_config(base, index, tmp_path).model
        for option in options:
            assert getattr(model, option) == (model.temporal_negative_weight > 0)
        assert (model.temporal_negative_margin > 0) == (model.temporal_negative_weight > 0)
        assert (model.caption_negative_margin > 0) == model.swapped_caption_negatives


def test_seqtransf_row_drops_the_curvature_path_and_later_rows_keep_the_base_one(tmp_path):
    from hbci.ablation import ROWS, row_config

    base = apply_overrides(load_config("small"), ["model.temporal_curvature=true"])
    curvature = [row_config(base, index, tmp_path).model.temporal_curvature for index in range(len(ROWS))]
    assert curvature[1] is False and all(curvature[2:])


def test_round_trip():
    cfg = load_config("small")
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_loader_options_are_a_json_object_from_file_and_command_line(tmp_path):
    path = tmp_path / "options.json"
    path.write_text(json.dumps({"data": {"dataset": "msrvtt", "options": {"video_dir": "clips"}}}))
    cfg = load_config(path)
    assert cfg.data.options == {"video_dir": "clips"}
    cfg = apply_overrides(cfg, ['data.options={"test_csv": "a.csv"}', "data.options.video_dir=/v",
                                "data.options.limit=3"])
    assert cfg.data.options == {"test_csv": "a.csv", "video_dir": "/v", "limit": 3}
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg


def test_loader_options_of_the_wrong_type_name_the_key():
    for bad in (["data.options=3"], ["data.options=[1, 2]"], ["data.options={not json"]):
        with pytest.raises(ConfigError, match="data.options"):
            apply_overrides(load_config("small"), bad)
    with pytest.raises(ConfigError, match="data.options"):
        config_from_dict({"data": {"options": {"video_dir": object()}}})
    with pytest.raises(ConfigError, match="data.skip_missing.x"):  # only a JSON-object field takes entries
        apply_overrides(load_config("small"), ["data.skip_missing.x=1"])


def test_config_copies_the_options_it_is_given():
    options = {"video_dir": "clips"}
    cfg = config_from_dict({"data": {"options": options}})
    options["video_dir"] = "elsewhere"
    assert cfg.data.options == {"video_dir": "clips"}


def test_every_shipped_config_loads():
    from hbci.config import CONFIG_DIR

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.json") if not p.stem.startswith("hbci-"))
    assert {"small", "msrvtt_vitb32", "msrvtt_vitb16", "didemo_vitb32", "activitynet_vitb32"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.model.max_words <= 77 and cfg.train.batch_size > 0


def test_recipes_fit_their_backbone_without_building_it():
    import open_clip

    from hbci.backbone import _check_tag, config_image_size
    from hbci.config import CONFIG_DIR

    for path in sorted(CONFIG_DIR.glob("*_vitb*.json")):
        cfg = load_config(path)
        _check_tag(cfg.model.backbone, cfg.model.pretrained)  # a real tag, trained with the config's activation
        assert cfg.model.max_words <= open_clip.get_model_config(cfg.model.backbone)["text_cfg"]["context_length"]
        assert config_image_size(cfg.model.backbone) == 224
        assert cfg.train.batch_size % 8 == 0, "the global batch splits over 8 GPUs"


def test_a_window_stretch_reaches_the_window_policy_and_out_of_range_is_refused():
    from hbci.data import window_policy

    cfg = apply_overrides(load_config("small"), ["data.window_stretch=0.5"])
    assert window_policy(cfg.data).max_stretch == 0.5
    assert window_policy(load_config("small").data).max_stretch == 0.0  # off unless asked
    for bad in ("-0.1", "1.5"):
        with pytest.raises(ConfigError, match="window_stretch"):
            apply_overrides(load_config("small"), [f"data.window_stretch={bad}"])
