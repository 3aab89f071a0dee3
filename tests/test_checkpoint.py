"""HBCI checkpoints: weights, config and versions round-trip through weights_only loading; another model
configuration is refused with the differing key named."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hbci.checkpoint import FORMAT, load_model, read_checkpoint, save_checkpoint
from hbci.config import ModelConfig, load_config
from hbci.model import HBCI
from hbci.runtime.errors import ConfigError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    config = dataclasses.replace(load_config("small"), model=ModelConfig(num_frames=4, concepts=4))
    model = HBCI(config.model)
    optimizer = torch.optim.AdamW(model.parameters())
    model.logit_scale.grad = torch.ones(())
    optimizer.step()
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.pt", config, model, epoch=3,
                           optimizer=optimizer.state_dict(), rng=torch.get_rng_state(),
                           val={"t2v": {"R@1": 12.5, "MdR": 4.0}})
    return path, config, model


def test_round_trip_with_weights_only(saved):
    path, config, model = saved
    payload = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code anywhere in it
    assert payload["format"] == FORMAT and payload["epoch"] == 3 and set(payload["versions"]) >= {"torch", "hbci"}
    loaded, loaded_config, _ = load_model(path, expected=config.model)
    assert loaded_config == config
    reference = model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())
    assert not loaded.training


def test_another_model_configuration_is_refused_naming_the_key(saved):
    path, config, _ = saved
    with pytest.raises(ConfigError, match=r"concepts: checkpoint 4 vs expected 8"):
        load_model(path, expected=dataclasses.replace(config.model, concepts=8))
    load_model(path, expected=dataclasses.replace(config.model, pretrained="openai"))  # weights come with it


def test_a_file_that_is_not_an_hbci_checkpoint_is_refused(tmp_path):
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not an hbci checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
