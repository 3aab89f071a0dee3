"""The open_clip backbone: construction by name, weights from a tag, a local checkpoint or none, and the
per-frame / per-token features HBCI builds on."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hbci.runtime.errors import ConfigError

__all__ = ["create_backbone", "load_backbone_weights", "backbone_info", "frame_features", "token_features"]

_SHIPPED_CONFIGS = Path(__file__).parent / "configs"


def _register_shipped_configs() -> None:
    import open_clip

    for path in _SHIPPED_CONFIGS.glob("hbci-*.json"):
        if path.stem not in open_clip.list_models():
            open_clip.add_model_config(path)


def create_backbone(name: str, pretrained: str | None = None) -> nn.Module:
    """Build an open_clip CLIP by name with random weights, then load `pretrained` if given.

    `pretrained` is a local checkpoint path (.pt/.pth/.bin/.safetensors, state dict or TorchScript) or an
    open_clip tag (needs a network; fails fast offline with the tag named).
    """
    import open_clip

    _register_shipped_configs()
    if name not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip model {name!r}; see open_clip.list_models()")
    model = open_clip.create_model(name, pretrained=None)
    if pretrained:
        load_backbone_weights(model, name, pretrained)
    return model


def load_backbone_weights(model: nn.Module, name: str, pretrained: str) -> None:
    import open_clip

    if Path(pretrained).exists():
        try:
            open_clip.load_checkpoint(model, pretrained, strict=True, weights_only=True)
        except RuntimeError as exc:
            # open_clip's loader reads state dicts; an OpenAI TorchScript archive goes through its JIT path.
            if "TorchScript" not in str(exc) and "weights_only" not in str(exc):
                raise ConfigError(f"{pretrained}: not a checkpoint of {name}: {exc}") from None
            jit = torch.jit.load(pretrained, map_location="cpu")
            from open_clip.model import build_model_from_openai_state_dict

            model.load_state_dict(build_model_from_openai_state_dict(jit.state_dict()).state_dict(), strict=True)
        return
    if pretrained not in open_clip.list_pretrained_tags_by_model(name):
        raise ConfigError(f"{pretrained!r} is neither a file nor an open_clip pretrained tag of {name} "
                          f"(tags: {', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none'})")
    try:
        loaded = open_clip.create_model(name, pretrained=pretrained)
    except Exception as exc:  # network or hub errors come in many types; report them as one clear error
        raise ConfigError(f"could not fetch open_clip weights {name}/{pretrained} ({type(exc).__name__}: {exc}); "
                          f"offline, pass a local checkpoint path instead") from None
    model.load_state_dict(loaded.state_dict(), strict=True)


def backbone_info(model: nn.Module) -> dict:
    """The facts export and the runtime need: joint width, image size, text context length."""
    image_size = model.visual.image_size
    return {
        "embed_dim": int(model.text_projection.shape[-1] if not isinstance(model.text_projection, nn.Linear)
                         else model.text_projection.out_features),
        "image_size": int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size),
        "context_length": int(model.context_length),
    }


def frame_features(clip: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """[B, T, 3, H, W] -> projected per-frame CLS features [B, T, D]."""
    b, t = frames.shape[:2]
    return clip.encode_image(frames.flatten(0, 1)).view(b, t, -1)


def token_features(clip: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, L] and mask [B, L] -> (word features [B, L, D], sentence feature [B, D]).

    Every token goes through ln_final and the text projection. The sentence is the end-of-text token, found
    from the mask (the last valid position) rather than open_clip's argmax of ids, which would break if a
    tokenizer ever placed a larger id after EOT. CLIP's text encoder is causal, so padding never changes the
    features of earlier tokens.
    """
    length = ids.shape[1]
    if length > clip.context_length:
        raise ConfigError(f"max_words {length} exceeds the backbone's text context length {clip.context_length}")
    x = clip.token_embedding(ids.long()) + clip.positional_embedding[:length]
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    x = clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) else x @ clip.text_projection
    last = (mask.long().sum(dim=1) - 1).clamp(min=0)
    sentence = x.gather(1, last.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)
    return x, sentence

