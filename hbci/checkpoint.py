"""HBCI checkpoints: weights plus the config that rebuilds the model and the versions that wrote it.

Written atomically; read with `torch.load(weights_only=True)`, so a checkpoint never executes code.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from hbci.config import ExperimentConfig, config_from_dict, config_to_dict
from hbci.runtime.errors import ConfigError

__all__ = ["save_checkpoint", "read_checkpoint", "load_model", "tool_versions", "FORMAT"]

FORMAT = "hbci-checkpoint/1"


def tool_versions() -> dict[str, str]:
    import open_clip

    import hbci

    return {"hbci": hbci.__version__, "torch": str(torch.__version__), "open_clip": str(open_clip.__version__)}


def save_checkpoint(path: str | Path, config: ExperimentConfig, model: torch.nn.Module, **state) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "config": config_to_dict(config), "versions": tool_versions(),
               "model": model.state_dict(), **state}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a half-written checkpoint
    return path


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of many kinds: one clear message
        raise ConfigError(f"{path}: not a readable hbci checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{path}: not an hbci checkpoint (format {payload.get('format') if isinstance(payload, dict) else None!r}, expected {FORMAT})")
    return payload


def _config_difference(a: dict, b: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            diffs += _config_difference(a[key], b[key], f"{prefix}{key}.")
        elif a.get(key) != b.get(key):
            diffs.append(f"{prefix}{key}: checkpoint {a.get(key)!r} vs expected {b.get(key)!r}")
    return diffs


def load_model(path: str | Path, expected=None):
    """Rebuild the model from a checkpoint's own config and load its weights strictly.

    `expected` (a ModelConfig) refuses a checkpoint of another model configuration, naming the difference.
    Returns (model, experiment config, payload).
    """
    from hbci.model import HBCI

    payload = read_checkpoint(path)
    config = config_from_dict(payload["config"], str(path))
    if expected is not None:
        ignore = {"pretrained"}
        a = {k: v for k, v in config_to_dict(config.model).items() if k not in ignore}
        b = {k: v for k, v in config_to_dict(expected).items() if k not in ignore}
        diffs = _config_difference(a, b)
        if diffs:
            raise ConfigError(f"{path}: checkpoint is of another model configuration: {'; '.join(diffs)}")
    # The checkpoint holds every weight: never fetch the backbone's pretrained weights again.
    model = HBCI(dataclasses.replace(config.model, pretrained=None))
    result = model.load_state_dict(payload["model"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(f"{path}: weights do not match the model: missing {result.missing_keys[:5]}, "
                          f"unexpected {result.unexpected_keys[:5]}")
    model.eval()
    return model, config, payload
