"""Backbone weights: local checkpoints written by open_clip itself round-trip exactly; tags fail fast offline."""

from __future__ import annotations

import dataclasses
import time
import warnings

import pytest
import torch

from hbci.backbone import create_backbone, load_backbone_weights
from hbci.config import ModelConfig
from hbci.runtime.errors import ConfigError


@pytest.fixture(scope="module")
def source():
    """A randomly initialised open_clip model of the shipped small config, with weights unlike a fresh init."""
    torch.manual_seed(1)
    model = create_backbone("hbci-tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    differing = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differing, f"weights differ: {differing[:5]}"


def test_open_clip_state_dict_round_trips(source, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    _assert_same_weights(source, create_backbone("hbci-tiny", str(path)))


def test_safetensors_round_trips(source, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file(source.state_dict(), str(path))
    _assert_same_weights(source, create_backbone("hbci-tiny", str(path)))


def test_wrapped_state_dict_of_a_training_run_round_trips(source, tmp_path):
    path = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    _assert_same_weights(source, create_backbone("hbci-tiny", str(path)))


def test_torchscript_archive_round_trips(source, tmp_path):
    """OpenAI's original .pt files are TorchScript; a traced open_clip model stands in for one."""
    path = tmp_path / "tiny-jit.pt"
    inputs = (torch.randn(1, 3, 32, 32), torch.randint(0, 49407, (1, 32)))
    with warnings.catch_warnings():  # torch.jit.trace is deprecated in recent torch
        warnings.simplefilter("ignore")
        torch.jit.trace(source, inputs, strict=False, check_trace=False).save(str(path))
    _assert_same_weights(source, create_backbone("hbci-tiny", str(path)))


def test_the_model_config_loads_a_local_checkpoint(source, tmp_path):
    from hbci.model import HBCI

    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    model = HBCI(dataclasses.replace(ModelConfig(num_frames=4), pretrained=str(path)))
    _assert_same_weights(source, model.clip)


def test_a_checkpoint_of_another_model_is_refused_naming_the_file(source, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    other = create_backbone("hbci-tiny")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("visual.")}
    torch.save(state, tmp_path / "text-only.pt")
    with pytest.raises(ConfigError, match="text-only.pt"):
        load_backbone_weights(other, "hbci-tiny", str(tmp_path / "text-only.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pt"):
        load_backbone_weights(other, "hbci-tiny", str(tmp_path / "junk.pt"))


def test_a_tag_offline_fails_fast_naming_the_tag(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # never a cached copy
    start = time.monotonic()
    with pytest.raises(ConfigError, match="openai") as err:
        create_backbone("ViT-B-32-quickgelu", "openai")
    assert time.monotonic() - start < 10
    assert "ViT-B-32-quickgelu" in str(err.value) and "local checkpoint" in str(err.value)


def test_unknown_tags_and_activation_mismatches_are_refused_before_building():
    with pytest.raises(ConfigError, match="'laion9000'.*tags: openai"):
        create_backbone("ViT-B-32-quickgelu", "laion9000")
    # OpenAI's weights were trained with QuickGELU: loading them into a GELU model would quietly cost accuracy.
    with pytest.raises(ConfigError, match="ViT-B-32-quickgelu"):
        create_backbone("ViT-B-32", "openai")
