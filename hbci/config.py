"""Experiment configuration: frozen dataclasses loaded from JSON, with dotted `key=value` overrides.

An unknown key or a value of the wrong type is a `ConfigError` that names the key, the file and the valid keys,
so a typo never silently trains the default model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from hbci.runtime.errors import ConfigError

__all__ = [
    "ModelConfig", "DataConfig", "TrainConfig", "ExperimentConfig",
    "load_config", "apply_overrides", "config_to_dict", "config_from_dict", "shipped_config_path",
]

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "hbci-tiny"          # open_clip model name (or a shipped hbci config name)
    pretrained: str | None = None        # open_clip tag, local checkpoint path, or None for random init
    num_frames: int = 12                 # T, fixed per bundle
    max_words: int = 32                  # L, fixed per bundle
    temporal_layers: int = 2             # 0 = no temporal transformer (CLIP4Clip meanP)
    temporal_heads: int = 4
    temporal_trend: bool = False         # add the clip's feature trend to every frame (direction visible from step 0)
    temporal_curvature: bool = False     # and its curvature (the order of two events visible from step 0)
    video_pooling: str = "text_guided"   # level 3 video side: "text_guided" (X-Pool) or "mean"
    levels: tuple[int, ...] = (1, 2, 3)  # 1 frame/word, 2 segment/phrase, 3 video/sentence
    num_segments: int = 4                # learnable queries pooling frames into segments (level 2)
    num_phrases: int = 4                 # learnable queries pooling words into phrases (level 2)
    concepts: int = 8                    # K; 1 = no concept decoupling
    bci_iterations: int = 2              # I; 0 = no interaction (levels 1/2 fall back to mean pooling)
    fusion: str = "mean"                 # final score: "mean" of the levels, or "finest" level only (as HBI)
    decorrelation_weight: float = 0.1    # lambda_dec; 0 disables the DiCoSA-style loss
    distill_weight: float = 1.0          # lambda_kl; 0 disables cross-level similarity distillation
    distill_direction: str = "fine_to_coarse"  # or "coarse_to_fine"
    distill_temperature: float | None = None   # None: 1/logit_scale; 1.0 distils raw cosines (HBI)
    distill_stop_grad: bool = True       # False reproduces HBI (gradients reach the teacher level)
    temporal_negative_weight: float = 0.0  # weight of the loss against a window's time-reversed / order-swapped self
    swapped_caption_negatives: bool = False  # with it, also against its caption's two clauses exchanged (text side)
    rendered_order_negatives: bool = False  # and against its scene filmed with the events swapped (order_negative)
    partial_window_negatives: bool = False  # and against a window with one event whole, little of the other
    temporal_negative_margin: float = 0.0  # the video-side negatives must score this far below their positive
    caption_negative_margin: float = 0.0  # and the swapped caption this far below its own (cosine gaps)

    def __post_init__(self):
        checks = [
            (self.video_pooling in ("text_guided", "mean"), "video_pooling must be 'text_guided' or 'mean'"),
            (self.fusion in ("mean", "finest"), "fusion must be 'mean' or 'finest'"),
            (self.distill_direction in ("fine_to_coarse", "coarse_to_fine"),
             "distill_direction must be 'fine_to_coarse' or 'coarse_to_fine'"),
            (len(self.levels) > 0 and set(self.levels) <= {1, 2, 3} and len(set(self.levels)) == len(self.levels),
             "levels must be a non-empty subset of [1, 2, 3]"),
            (self.concepts >= 1, "concepts must be >= 1"),
            (self.bci_iterations >= 0, "bci_iterations must be >= 0"),
            (self.num_frames >= 1 and self.max_words >= 3, "num_frames >= 1 and max_words >= 3"),
            (self.temporal_negative_weight >= 0, "temporal_negative_weight must be >= 0"),
            (0 <= self.temporal_negative_margin < 2 and 0 <= self.caption_negative_margin < 2,
             "temporal_negative_margin and caption_negative_margin must be in [0, 2) (cosine gaps)"),
            (not self.swapped_caption_negatives or self.temporal_negative_weight > 0,
             "swapped_caption_negatives needs temporal_negative_weight > 0 (its weight)"),
            (not self.rendered_order_negatives or self.temporal_negative_weight > 0,
             "rendered_order_negatives needs temporal_negative_weight > 0 (its weight)"),
            (not self.partial_window_negatives or self.temporal_negative_weight > 0,
             "partial_window_negatives needs temporal_negative_weight > 0 (its weight)"),
            (self.temporal_negative_margin == 0 or self.temporal_negative_weight > 0,
             "temporal_negative_margin needs temporal_negative_weight > 0 (the term it shapes)"),
            (self.caption_negative_margin == 0 or self.swapped_caption_negatives,
             "caption_negative_margin needs swapped_caption_negatives (the term it shapes)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"model: {message}")
        object.__setattr__(self, "levels", tuple(sorted(self.levels)))


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "csv"                 # a name from hbci.datasets.DATASETS
    root: str = "data/synth"             # dataset folder (for "csv": holds <split>.csv files)
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    skip_missing: bool = False           # missing videos: skip with a count, or fail
    options: dict[str, Any] = field(default_factory=dict)  # the loader's keyword options, e.g. {"video_dir": "clips"}
    cache_dir: str | None = None         # frame cache written by hbci-prepare; None decodes the videos directly
    cache_fps: float = 3.0               # frames kept per second of video in the cache (a floor of 64 per video)
    cache_short_side: int = 0            # cached frames' short side in pixels; 0 = 8/7 of the model image size
    cache_codec: str = "jpg"             # "jpg" (quality 95, ~10x smaller) or "raw" (uint8 arrays, lossless)
    workers: int = 0                     # decoding threads; 0 = one per CPU core (at most 16)
    heldout_split: str = ""              # a second test split reported beside test (synthetic: "heldout")
    # Training windows (hbci.sampling): random offsets and frames, the overlap rule; evaluation is always aligned.
    frame_sampling: str = "random"       # "random": a random frame per segment; "centre": the runtime's centres
    window_shift: float = 1 / 3          # windows start up to this share of their clip's length early or late
    min_event_share: float = 0.6         # a shifted window keeps at least this share of the captioned events
    min_clip_share: float = 0.6          # and lies at least this share on its clip
    each_event_share: bool = False       # two ordered events: min_event_share of each, not of the two together
    window_stretch: float = 0.0          # half the windows up to this share longer than their clip, holding it all
    pool_frames: int = 48                # frames kept per training item around its span (more are subsampled)

    def __post_init__(self):
        if self.cache_codec not in ("jpg", "raw"):
            raise ConfigError("data: cache_codec must be 'jpg' or 'raw'")
        if not self.cache_fps > 0 or self.cache_short_side < 0 or self.workers < 0:
            raise ConfigError("data: cache_fps must be > 0, cache_short_side and workers >= 0")
        if self.frame_sampling not in ("random", "centre"):
            raise ConfigError("data: frame_sampling must be 'random' or 'centre'")
        if not (0 <= self.window_shift < 1 and 0 < self.min_event_share <= 1 and 0 < self.min_clip_share <= 1):
            raise ConfigError("data: window_shift must be in [0, 1), min_event_share and min_clip_share in (0, 1]")
        if not 0 <= self.window_stretch <= 1:
            raise ConfigError("data: window_stretch must be in [0, 1]")
        if self.pool_frames < 1:
            raise ConfigError("data: pool_frames must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/small"
    epochs: int = 10
    batch_size: int = 64                 # the global batch: under torchrun each process takes batch_size / world
    lr: float = 1e-3                     # learning rate of the new HBCI modules
    backbone_lr_scale: float = 1e-3      # CLIP's lr = lr * this (about 1e-3 for pretrained CLIP)
    vision_lr_scale: float = 1.0         # CLIP's image tower at backbone lr * this (the README: 0.1 keeps up/down)
    vision_frozen_blocks: int = 0        # the image tower's patch embedding and first N blocks stay as pretrained
                                         # (no backward pass through them: a faster step)
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    num_threads: int = 0                 # torch intra-op threads; 0 = torch's default
    eval_every: int = 1                  # epochs between validations
    eval_batch_size: int = 128
    amp: bool = True                     # bfloat16/float16 autocast where a GPU exists; ignored on CPU
    max_train_clips: int = 0             # 0 = all; a positive number trains on a prefix (smoke tests)
    shuffle_block: int = 1               # shuffle runs of this many consecutive clips together, so that hard
                                         # negatives listed next to each other share a batch (synthetic groups)
    device: str = "auto"                 # "auto" (the GPU where one exists), "cuda" or "cpu"

    def __post_init__(self):
        if self.device not in ("auto", "cuda", "cpu"):
            raise ConfigError("train: device must be 'auto', 'cuda' or 'cpu'")
        if not self.vision_lr_scale > 0:
            raise ConfigError("train: vision_lr_scale must be > 0")
        if self.vision_frozen_blocks < 0:
            raise ConfigError("train: vision_frozen_blocks must be >= 0")


@dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def shipped_config_path(name: str) -> Path:
    return CONFIG_DIR / f"{name}.json"


def _valid_keys(cls) -> list[str]:
    hints, keys = get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += [f"{f.name}.{k}" for k in _valid_keys(hints[f.name])]
        else:
            keys.append(f.name)
    return keys


def _is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_value(v) for k, v in value.items())
    return False


def _coerce_dict(value: Any, key: str, source: str) -> dict:
    """A JSON object: a mapping from the config file, or a JSON string from the command line."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: {key} must be a JSON object, got {value!r} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key} must be a JSON object (a mapping), got {value!r}")
    if not _is_json_value(value):
        raise ConfigError(f"{source}: {key} must hold only JSON values with string keys, got {value!r}")
    return json.loads(json.dumps(value))  # a deep copy: the frozen config never shares a mutable dict


def _coerce(value: Any, hint, key: str, source: str):
    """Check (and for CLI strings, parse) one value against its field's type hint."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is dict or hint is dict:
        return _coerce_dict(value, key, source)
    if origin is tuple or hint is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], key, source) for v in value)
    if args and type(None) in args:  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, key, source)
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, bool):
            return value
    elif hint in (int, float):
        # A CLI string is parsed; a JSON number is accepted (an int where a float is wanted, never a bool).
        if isinstance(value, str):
            try:
                return hint(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool):
            return hint(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{source}: {key} must be of type {getattr(hint, '__name__', hint)}, got {value!r}")


def _build(cls, values: dict, source: str, prefix: str = ""):
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        valid = ", ".join(prefix + k for k in _valid_keys(cls))
        raise ConfigError(f"{source}: unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
                          f"valid keys: {valid}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {prefix}{name} must be a mapping")
            kwargs[name] = _build(hint, value, source, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, prefix + name, source)
    return cls(**kwargs)


def config_from_dict(values: dict, source: str = "<dict>") -> ExperimentConfig:
    return _build(ExperimentConfig, values, source)


def config_to_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def load_config(path_or_name: str | Path) -> ExperimentConfig:
    """Load a config JSON file, or a shipped config by name ("small")."""
    path = Path(path_or_name)
    if not path.exists():
        shipped = shipped_config_path(str(path_or_name))
        if not shipped.exists():
            names = sorted(p.stem for p in CONFIG_DIR.glob("*.json") if not p.stem.startswith("hbci-"))
            raise ConfigError(f"{path_or_name}: no such config file or shipped config (shipped: {', '.join(names)})")
        path = shipped
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    return config_from_dict(values, str(path))


def _parse_entry(raw: str):
    """One entry of a JSON-object field given as `section.field.name=value`: JSON if it parses, else the string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def apply_overrides(config: ExperimentConfig, overrides: list[str], source: str = "command line") -> ExperimentConfig:
    """Apply `section.key=value` overrides; values are parsed with the field's type.

    A JSON-object field takes a whole object (`data.options={"video_dir": "clips"}`) or one entry at a time
    (`data.options.video_dir=clips`; the value is parsed as JSON when it parses, else kept as a string).
    """
    values = config_to_dict(config)
    sections = {f.name: get_type_hints(get_type_hints(ExperimentConfig)[f.name])
                for f in dataclasses.fields(ExperimentConfig)}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        known = len(parts) >= 2 and parts[0] in values and parts[1] in values[parts[0]]
        is_dict = known and get_origin(sections[parts[0]][parts[1]]) is dict
        if not known or len(parts) > 3 or (len(parts) == 3 and not is_dict):
            raise ConfigError(f"{source}: unknown config key {key!r}; valid keys: {', '.join(_valid_keys(ExperimentConfig))}")
        if len(parts) == 3:
            values[parts[0]][parts[1]][parts[2]] = _parse_entry(raw)
        elif is_dict:  # parsed now, so that later `section.field.name=` entries add to it
            values[parts[0]][parts[1]] = _coerce_dict(raw, key, source)
        else:
            values[parts[0]][parts[1]] = raw
    return config_from_dict(values, source)
