"""How a synthetic clip looks apart from its objects: background families and camera shake.

A `Look` is data (it travels in meta.json with its clip), and `background` / `camera_offsets` are pure functions of
it, so a look renders the same pixels anywhere. Families:

* training: black, shade (a flat dark colour), gradient (two shades along a random direction), noise (a shade with
  static grain), stripes (a low-contrast sinusoidal texture);
* held out: tiles (a rotated checkerboard of two shades), used only by the held-out-look test split and never by
  training or `hbci-pretrain`, so that split measures transfer to a look the model never saw.

Backgrounds stay dark (every channel at most 150) and objects saturated, so a colour name stays true on any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Look", "TRAIN_FAMILIES", "HELD_OUT_FAMILIES", "random_look", "background", "camera_offsets"]

TRAIN_FAMILIES: tuple[str, ...] = ("black", "shade", "gradient", "noise", "stripes")
HELD_OUT_FAMILIES: tuple[str, ...] = ("tiles",)
_FAMILIES = TRAIN_FAMILIES + HELD_OUT_FAMILIES
_MAX_SHAKE = 2  # pixels: the largest camera offset, whatever the frame size


@dataclass(frozen=True)
class Look:
    """A background and a camera. The default is the classic look: black, still camera."""

    background: str = "black"  # one of TRAIN_FAMILIES or HELD_OUT_FAMILIES
    colour: tuple[int, int, int] = (0, 0, 0)  # base shade, RGB
    colour2: tuple[int, int, int] = (0, 0, 0)  # second shade (gradient end, stripes and tiles contrast)
    angle: float = 0.0  # direction of the gradient, stripes or tiles, degrees
    period: float = 0.25  # stripes and tiles period, as a fraction of the frame side
    grain: float = 0.0  # std of the static noise, grey levels (noise family)
    shake: float = 0.0  # std of the camera's per-frame offset, pixels (rounded, at most 2)
    seed: int = 0  # the grain pattern and the shake sequence

    def __post_init__(self):
        if self.background not in _FAMILIES:
            raise ValueError(f"unknown background {self.background!r}; expected one of {', '.join(_FAMILIES)}")
        object.__setattr__(self, "colour", tuple(int(c) for c in self.colour))
        object.__setattr__(self, "colour2", tuple(int(c) for c in self.colour2))


def _shade(rng: np.random.Generator) -> np.ndarray:
    """A dark colour: a grey level up to 90 with a tint of up to 15 levels per channel."""
    return np.clip(rng.uniform(0, 90) + rng.uniform(-15, 15, 3), 0, 110)


def random_look(rng: np.random.Generator, families: tuple[str, ...] = TRAIN_FAMILIES) -> Look:
    """A random look of one of `families` (uniformly), with half the clips shaking slightly."""
    family = families[int(rng.integers(len(families)))]
    base = _shade(rng)
    second = np.clip(base + rng.uniform(-40, 40, 3), 0, 150)
    shake = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.5 else 0.0
    look = dict(background=family, angle=float(rng.uniform(0, 180)), period=float(rng.uniform(0.12, 0.35)),
                shake=shake, seed=int(rng.integers(1 << 30)))
    if family == "black":
        return Look(**look)
    look.update(colour=tuple(np.rint(base).astype(int)), colour2=tuple(np.rint(second).astype(int)))
    if family == "noise":
        look["grain"] = float(rng.uniform(4, 12))
    return Look(**look)


def background(look: Look, side: int) -> np.ndarray:
    """The static background, uint8 [side, side, 3]; coordinates are frame fractions, so any size shows one scene."""
    if look.background == "black":
        return np.zeros((side, side, 3), np.uint8)
    a, b = np.array(look.colour, np.float32), np.array(look.colour2, np.float32)
    y, x = (np.mgrid[0:side, 0:side].astype(np.float32) + 0.5) / side
    theta = np.deg2rad(look.angle)
    u = x * np.cos(theta) + y * np.sin(theta)  # along the look's direction
    v = -x * np.sin(theta) + y * np.cos(theta)
    if look.background in ("shade", "noise"):
        weight = np.zeros_like(u)
    elif look.background == "gradient":
        weight = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    elif look.background == "stripes":
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * u / look.period)
    else:  # tiles
        weight = ((np.floor(u / look.period) + np.floor(v / look.period)) % 2).astype(np.float32)
    image = a + (b - a) * weight[..., None]
    if look.grain > 0:
        image = image + np.random.default_rng(look.seed).normal(0, look.grain, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def camera_offsets(look: Look, frames: int) -> np.ndarray:
    """Integer (dx, dy) camera offset of each frame, [frames, 2]: zero for a still camera."""
    if look.shake <= 0:
        return np.zeros((frames, 2), np.int64)
    noise = np.random.default_rng([look.seed, 1]).normal(0, look.shake, (frames, 2))
    return np.clip(np.rint(noise), -_MAX_SHAKE, _MAX_SHAKE).astype(np.int64)
