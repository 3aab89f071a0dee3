"""The open_clip backbone: construction by name, weights from a tag, a local checkpoint or none, and the
per-frame / per-token features HBCI builds on."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hbci.runtime.errors import ConfigError

__all__ = ["create_backbone", "load_backbone_weights", "resolve_pretrained", "config_image_size", "backbone_info",
           "freeze_image_layers", "frame_features", "token_features"]

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
    # Resolved before the build, so that a wrong tag or a failed download costs a fraction of a second.
    checkpoint = resolve_pretrained(name, pretrained) if pretrained else None
    model = open_clip.create_model(name, pretrained=None)
    if checkpoint is not None:
        load_backbone_weights(model, name, str(checkpoint))
    return model


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (OpenAI's original CLIP .pt files) is a zip holding compiled code beside the data."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _load_torchscript(model: nn.Module, path: Path, name: str) -> None:
    """Copy a TorchScript archive's weights by name. Its state dict also holds metadata (OpenAI's
    input_resolution, context_length, vocab_size) and buffers open_clip rebuilds itself (attn_mask); those keys
    are dropped, every parameter must match. torch.jit.load runs the archive's TorchScript code: trusted files only."""
    archive = torch.jit.load(str(path), map_location="cpu")
    own = model.state_dict()
    extra = {"input_resolution", "context_length", "vocab_size", "attn_mask"}
    state = {k: v for k, v in archive.state_dict().items() if k not in extra or k in own}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: TorchScript weights do not fit {name}: {exc}") from None


def _check_tag(name: str, pretrained: str) -> dict:
    """The open_clip config of a pretrained tag, refused when the tag does not belong to the model or was trained
    with another activation (OpenAI's weights need the "-quickgelu" configs)."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise ConfigError(f"{pretrained!r} is neither a file nor an open_clip pretrained tag of {name} "
                          f"(tags: {', '.join(tags) or 'none'})")
    tag_cfg = get_pretrained_cfg(name, pretrained)
    model_cfg = open_clip.get_model_config(name) or {}
    tag_quick, model_quick = bool(tag_cfg.get("quick_gelu", False)), bool(model_cfg.get("quick_gelu", False))
    if tag_quick != model_quick:
        hint = f"{name}-quickgelu" if tag_quick else name.removesuffix("-quickgelu")
        raise ConfigError(f"open_clip weights {name}/{pretrained} were trained with "
                          f"{'QuickGELU' if tag_quick else 'GELU'} but {name} uses "
                          f"{'QuickGELU' if model_quick else 'GELU'}; use backbone {hint!r}")
    return tag_cfg


def load_backbone_weights(model: nn.Module, name: str, pretrained: str) -> None:
    """Load `pretrained` into `model` strictly: a local file, or an open_clip tag (downloaded or from the cache).

    Local files: an open_clip state dict (.pt/.pth/.bin, also wrapped as {"state_dict": ...} or with "module."
    prefixes) or .safetensors, through open_clip.load_checkpoint with weights_only=True; or a TorchScript archive.
    A tag trained with another activation than the model config (OpenAI's weights need QuickGELU) is refused.
    """
    import open_clip

    path = resolve_pretrained(name, pretrained)
    if _is_torchscript(path):
        _load_torchscript(model, path, name)
        return
    try:
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except Exception as exc:  # pickle, zip, safetensors and shape errors: one message naming the file
        raise ConfigError(f"{path}: not a checkpoint of {name} ({type(exc).__name__}: {exc})") from None


def resolve_pretrained(name: str, pretrained: str) -> Path:
    """A local checkpoint file as given, or an open_clip tag's file (downloaded, or from the hub cache)."""
    from open_clip.pretrained import download_pretrained

    path = Path(pretrained).expanduser()
    if path.is_file():
        return path
    tag_cfg = _check_tag(name, pretrained)
    try:
        checkpoint = download_pretrained(tag_cfg)
    except Exception as exc:  # network or hub errors come in many types; report them as one clear error
        raise ConfigError(f"could not fetch open_clip weights {name}/{pretrained} ({type(exc).__name__}: {exc}); "
                          f"offline, pass a local checkpoint path instead") from None
    if not checkpoint:
        raise ConfigError(f"open_clip has no download for {name}/{pretrained}")
    return Path(checkpoint)


def config_image_size(name: str) -> int:
    """The input image size of an open_clip model config, without building the model."""
    import open_clip

    _register_shipped_configs()
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ConfigError(f"unknown open_clip model {name!r}; see open_clip.list_models()")
    size = cfg["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def backbone_info(model: nn.Module) -> dict:
    """The facts export and the runtime need: joint width, image size, text context length."""
    image_size = model.visual.image_size
    return {
        "embed_dim": int(model.text_projection.shape[-1] if not isinstance(model.text_projection, nn.Linear)
                         else model.text_projection.out_features),
        "image_size": int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size),
        "context_length": int(model.context_length),
    }


def freeze_image_layers(clip: nn.Module, blocks: int) -> None:
    """Keep the image tower's patch embedding and its first `blocks` residual blocks as they are: no gradient
    reaches them, so the backward pass stops above them."""
    if blocks == 0:
        return
    visual = clip.visual
    resblocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if resblocks is None:
        raise ConfigError(f"train.vision_frozen_blocks needs a ViT image tower; {type(visual).__name__} has no "
                          f"residual blocks to freeze")
    if blocks > len(resblocks):
        raise ConfigError(f"train.vision_frozen_blocks is {blocks}, but the image tower has {len(resblocks)} blocks")
    # What sits before the blocks differs between open_clip ViTs (no class token, no ln_pre): take what exists.
    stem = [getattr(visual, name, None) for name in ("conv1", "class_embedding", "positional_embedding", "ln_pre")]
    for part in [*stem, *resblocks[:blocks]]:
        if part is not None:
            part.requires_grad_(False)


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

