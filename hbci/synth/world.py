"""The synthetic world: coloured shapes, the events they go through, clips, and the hard negatives of a clip.

"Moves left" renders exactly the frames of "moves right" in reverse order (the reversal property), so mean pooling
of frame features cannot tell a clip from its variants. Two worlds share the vocabulary:

* classic: the first benchmark's world: fixed sizes and speeds, events in equal phases filling the clip, linear
  motion, exact colours, no rotation, the classic look (black, still camera);
* wide: wider sizes and speeds, events that fill a random part of the clip with linear or ease-in/out motion,
  colour jitter, slight rotation, and a random look per hard-negative group (see `hbci.synth.look`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from hbci.synth.look import HELD_OUT_FAMILIES, TRAIN_FAMILIES, Look, random_look

__all__ = [
    "COLOURS", "SHAPES", "KINDS", "REVERSE", "EASES", "SceneObject", "Event", "ClipSpec", "World", "CLASSIC",
    "WIDE", "HELD_OUT", "WORLDS", "random_spec", "idle_spec", "variants", "labelled_variants", "describe",
    "event_frames", "clip_states", "spec_to_dict", "spec_from_dict", "check_spec", "VARIANT_CLASSES", "variant_class",
    "order_swap_partners",
]

# RGB; saturated and far apart so they survive mp4v's 4:2:0 chroma at 64 px and a 32 px downscale.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 210, 50),
    "blue": (40, 80, 255),
    "yellow": (240, 230, 30),
    "white": (245, 245, 245),
    "magenta": (230, 40, 230),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
KINDS: tuple[str, ...] = ("move_left", "move_right", "move_up", "move_down", "grow", "shrink", "appear", "disappear")
REVERSE: dict[str, str] = {
    "move_left": "move_right", "move_right": "move_left", "move_up": "move_down", "move_down": "move_up",
    "grow": "shrink", "shrink": "grow", "appear": "disappear", "disappear": "appear",
}
EASES: tuple[str, ...] = ("linear", "in_out")  # in_out is symmetric in time, so reversal keeps the property
# Paths are computed for these kinds; their reverses play the same states backwards (the reversal property).
_FORWARD = frozenset({"move_right", "move_down", "grow", "appear"})

_MARGIN = 0.02
_CORE = 0.8  # two objects may touch but the central 80% of their boxes never overlap in any frame
_LAYOUT_TRIES = 500  # layouts per choice of kinds: enough that crowded pairs (left + up) are not under-represented


@dataclass(frozen=True)
class SceneObject:
    """A shape. (x, y) is its centre in frame fractions at the start of a forward path (left/top end of a move)."""

    colour: str
    shape: str
    x: float
    y: float
    scale: float  # side of the bounding box at full size, as a fraction of the frame side
    tint: tuple[int, int, int] = (0, 0, 0)  # colour jitter: added to the colour's RGB
    angle: float = 0.0  # rotation in degrees (squares and triangles)


@dataclass(frozen=True)
class Event:
    """What one object does, and when: [start, end) as fractions of the clip, or None for equal phases."""

    kind: str
    obj: int  # index into ClipSpec.objects
    amount: float = 0.0  # moves: path length (frame fraction); grow/shrink: small/full size ratio; else unused
    start: float | None = None
    end: float | None = None
    ease: str = "linear"


@dataclass(frozen=True)
class ClipSpec:
    """A clip: objects, events in temporal order, and its look.

    Untimed events fill len(events) equal phases; timed ones their own [start, end). Each object has at most one
    event. Outside its event an object rests at its start state (before) or end state (after): invisible before
    "appear" and after "disappear". An object without an event is static.
    """

    objects: tuple[SceneObject, ...]
    events: tuple[Event, ...]
    look: Look = field(default_factory=Look)


@dataclass(frozen=True)
class World:
    """Ranges the random clips of one world are drawn from."""

    name: str
    scale: tuple[float, float]  # bounding-box side / frame side
    move: tuple[float, float]  # path length / frame side
    ratio: tuple[float, float]  # small / full size for grow and shrink
    tint: int = 0  # largest colour jitter per channel
    angle: float = 0.0  # largest rotation, degrees
    timed: bool = False  # events fill random parts of the clip, with random easing
    looks: tuple[str, ...] = ()  # background families; () = the classic look


CLASSIC = World("classic", scale=(0.30, 0.38), move=(0.25, 0.40), ratio=(0.45, 0.60))
WIDE = World("wide", scale=(0.24, 0.42), move=(0.20, 0.45), ratio=(0.40, 0.65), tint=25, angle=15.0, timed=True,
             looks=TRAIN_FAMILIES)
HELD_OUT = replace(WIDE, name="held_out", looks=HELD_OUT_FAMILIES)  # the wide world in a look never trained on
WORLDS: dict[str, World] = {w.name: w for w in (CLASSIC, WIDE, HELD_OUT)}


def check_spec(spec: ClipSpec) -> None:
    """Raise ValueError unless the spec is well formed (known words, one event per object, ordered timing)."""
    owners = [e.obj for e in spec.events]
    if len(set(owners)) != len(owners):
        raise ValueError("each object may have at most one event")
    for e in spec.events:
        if e.kind not in REVERSE:
            raise ValueError(f"unknown event kind {e.kind!r}; expected one of {', '.join(KINDS)}")
        if not 0 <= e.obj < len(spec.objects):
            raise ValueError(f"event {e.kind} refers to object {e.obj}, but the clip has {len(spec.objects)}")
        if e.ease not in EASES:
            raise ValueError(f"unknown ease {e.ease!r}; expected one of {', '.join(EASES)}")
    timed = [e.start is not None for e in spec.events]
    if any(timed):
        if not all(timed) or any(e.end is None for e in spec.events):
            raise ValueError("either every event of a clip has start and end, or none has")
        bounds = [b for e in spec.events for b in (e.start, e.end)]
        if not (0 <= bounds[0] and all(a <= b for a, b in zip(bounds, bounds[1:])) and bounds[-1] <= 1
                and all(e.start < e.end for e in spec.events)):
            raise ValueError("event times must be ordered, non-overlapping and inside [0, 1]")
    for o in spec.objects:
        if o.colour not in COLOURS or o.shape not in SHAPES:
            raise ValueError(f"unknown colour or shape: {o.colour} {o.shape}")


def event_frames(spec: ClipSpec, frames: int) -> list[tuple[int, int]]:
    """[start, end) frame range of each event (untimed: len(events) near-equal phases); each at least 2 frames
    when the clip has room, and never overlapping the one before."""
    n = len(spec.events)
    if n == 0 or spec.events[0].start is None:
        return [(i * frames // n, (i + 1) * frames // n) for i in range(n)]
    ranges, floor = [], 0
    for e in spec.events:
        a = min(max(int(round(e.start * frames)), floor), frames - 1)
        b = min(max(int(round(e.end * frames)), a + 2), frames)
        ranges.append((a, b))
        floor = b
    return ranges


def _progress(n: int, ease: str) -> np.ndarray:
    p = np.linspace(0.0, 1.0, n) if n > 1 else np.ones(1)
    return p * p * (3 - 2 * p) if ease == "in_out" else p


def _forward_path(obj: SceneObject, kind: str, amount: float, p: np.ndarray) -> np.ndarray:
    """States [n, 4] = (x, y, scale, alpha) of a forward kind at progress p, from its start to its end state."""
    state = np.tile(np.array([obj.x, obj.y, obj.scale, 1.0]), (len(p), 1))
    if kind == "move_right":
        state[:, 0] = obj.x + amount * p
    elif kind == "move_down":
        state[:, 1] = obj.y + amount * p
    elif kind == "grow":
        state[:, 2] = obj.scale * (amount + (1.0 - amount) * p)
    elif kind == "appear":
        state[:, 3] = np.clip((p - 0.25) / 0.5, 0.0, 1.0)  # fades in over the middle half of the event
    return state


def _event_path(obj: SceneObject, event: Event, n: int) -> np.ndarray:
    p = _progress(n, event.ease)
    if event.kind in _FORWARD:
        return _forward_path(obj, event.kind, event.amount, p)
    # The reverse kind plays the forward states backwards: same set of frames, opposite order.
    return _forward_path(obj, REVERSE[event.kind], event.amount, p)[::-1]


def clip_states(spec: ClipSpec, frames: int) -> np.ndarray:
    """Per-frame state [frames, objects, 4] = (x, y, scale, alpha)."""
    states = np.empty((frames, len(spec.objects), 4))
    for j, o in enumerate(spec.objects):
        states[:, j] = (o.x, o.y, o.scale, 1.0)
    for (start, end), event in zip(event_frames(spec, frames), spec.events):
        path = _event_path(spec.objects[event.obj], event, end - start)
        states[:start, event.obj] = path[0]
        states[start:end, event.obj] = path
        states[end:, event.obj] = path[-1]
    return states


def describe(spec: ClipSpec) -> tuple[tuple[str, str, str], ...]:
    """Canonical content of a clip: (colour, shape, kind) per event, in temporal order."""
    return tuple((spec.objects[e.obj].colour, spec.objects[e.obj].shape, e.kind) for e in spec.events)


def _box(state: np.ndarray, spread: float) -> tuple[float, float, float, float]:
    x, y, scale, _ = state
    h = scale * _CORE * spread / 2.0
    return x - h, y - h, x + h, y + h


def _collides(spec: ClipSpec, frames: int = 16) -> bool:
    """True when the cores of two visible objects overlap in some frame."""
    states = clip_states(spec, frames)
    # A rotated square reaches further than its side: cos + sin of the angle.
    spread = [abs(np.cos(np.deg2rad(o.angle))) + abs(np.sin(np.deg2rad(o.angle))) for o in spec.objects]
    for t in range(frames):
        visible = [(states[t, j], spread[j]) for j in range(len(spec.objects)) if states[t, j, 3] > 0]
        for i in range(len(visible)):
            for j in range(i + 1, len(visible)):
                a, b = _box(*visible[i]), _box(*visible[j])
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    return True
    return False


def _place(rng: np.random.Generator, kind: str, colour: str, shape: str, index: int,
           world: World) -> tuple[SceneObject, Event]:
    scale = float(rng.uniform(*world.scale))
    amount = 0.0
    if kind.startswith("move"):
        amount = float(rng.uniform(*world.move))
    elif kind in ("grow", "shrink"):
        amount = float(rng.uniform(*world.ratio))
    lo, hi = scale / 2 + _MARGIN, 1 - scale / 2 - _MARGIN
    horizontal, vertical = kind in ("move_left", "move_right"), kind in ("move_up", "move_down")
    x = float(rng.uniform(lo, hi - amount if horizontal else hi))
    y = float(rng.uniform(lo, hi - amount if vertical else hi))
    return SceneObject(colour, shape, x, y, scale), Event(kind, index, amount)


def _timing(rng: np.random.Generator, n: int) -> list[tuple[float, float, str]]:
    """(start, end, ease) of n events: one fills 55-100% of the clip, two take 30-50% each, in sequence."""
    lengths = rng.uniform(0.55, 1.0, 1) if n == 1 else rng.uniform(0.30, 0.50, n)
    gap = float(rng.uniform(0, 1 - lengths.sum())) if n > 1 else 0.0
    start = float(rng.uniform(0, 1 - lengths.sum() - gap))
    out = []
    for length in lengths:
        out.append((start, min(1.0, start + float(length)), EASES[int(rng.integers(len(EASES)))]))
        start += float(length) + gap
    return out


def _dress(rng: np.random.Generator, spec: ClipSpec, world: World) -> ClipSpec:
    """The wide world's extras on a placed spec: colour jitter and rotation per object, timing per event."""
    objects = tuple(replace(o, tint=tuple(int(v) for v in rng.integers(-world.tint, world.tint + 1, 3)),
                            angle=float(rng.uniform(-world.angle, world.angle)) if o.shape != "circle" else 0.0)
                    for o in spec.objects)
    events = tuple(replace(e, start=s, end=t, ease=ease) for e, (s, t, ease) in zip(spec.events,
                                                                                   _timing(rng, len(spec.events))))
    return replace(spec, objects=objects, events=events)


def random_spec(rng: np.random.Generator, p_single: float = 0.25, max_tries: int = 1000,
                world: World = CLASSIC) -> ClipSpec:
    """A random clip of `world`: one event on one object (probability p_single) or two events on two objects.

    Two objects always differ in both colour and shape, so every caption names each object unambiguously. Layouts
    are resampled until neither the spec nor any of its `variants` has overlapping objects. The classic world
    draws exactly the random numbers the first benchmark drew, so its clips are unchanged.
    """
    n = 1 if rng.random() < p_single else 2
    look = random_look(rng, world.looks) if world.looks else Look()
    for _ in range(max_tries):
        colours = [list(COLOURS)[i] for i in rng.choice(len(COLOURS), n, replace=False)]
        shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), n, replace=False)]
        kinds = [KINDS[i] for i in rng.integers(len(KINDS), size=n)]
        for _ in range(_LAYOUT_TRIES):
            placed = [_place(rng, kinds[i], colours[i], shapes[i], i, world) for i in range(n)]
            spec = ClipSpec(tuple(p[0] for p in placed), tuple(p[1] for p in placed), look)
            if world.timed or world.tint or world.angle:
                spec = _dress(rng, spec, world)
            if not any(_collides(s) for s in [spec, *variants(spec)]):
                return spec
    raise RuntimeError(f"no collision-free layout found in {max_tries} tries")


def idle_spec(rng: np.random.Generator, world: World = CLASSIC) -> ClipSpec:
    """One or two static shapes that do nothing (filler between events), in a random look of `world`."""
    n = int(rng.integers(1, 3))
    colours = [list(COLOURS)[i] for i in rng.choice(len(COLOURS), n, replace=False)]
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), n, replace=False)]
    look = random_look(rng, world.looks) if world.looks else Look()
    for _ in range(1000):
        objects = tuple(_place(rng, "grow", colours[i], shapes[i], i, world)[0] for i in range(n))
        spec = ClipSpec(objects, (), look)
        if world.tint or world.angle:
            spec = _dress(rng, spec, world)
        if not _collides(spec, frames=1):
            return spec
    return ClipSpec(objects[:1], (), look)


def labelled_variants(spec: ClipSpec) -> list[tuple[str, ClipSpec]]:
    """Hard negatives of a spec, each with a label saying how it differs.

    reverse_<i>: event i played backwards (left/right, up/down, grow/shrink, appear/disappear);
    swap_order: the two events in the opposite order (each takes the other's time); swap_colours: the two
    objects exchange colours. Variants keep the look, so only what the label says differs.
    """
    out = []
    for i, e in enumerate(spec.events):
        events = list(spec.events)
        events[i] = replace(e, kind=REVERSE[e.kind])
        out.append((f"reverse_{i}", replace(spec, events=tuple(events))))
    if len(spec.events) == 2:
        a, b = spec.events
        swapped = (replace(b, start=a.start, end=a.end), replace(a, start=b.start, end=b.end))
        out.append(("swap_order", replace(spec, events=swapped)))
    if len(spec.objects) == 2:
        a, b = spec.objects
        out.append(("swap_colours", replace(spec, objects=(replace(a, colour=b.colour), replace(b, colour=a.colour)))))
    return out


# What a hard negative changes, as evaluation and the alert benchmark report it.
VARIANT_CLASSES: tuple[str, ...] = ("left/right", "up/down", "grow/shrink", "appear/disappear", "event order",
                                    "colour swap")
_REVERSE_CLASS = {"move_left": "left/right", "move_right": "left/right", "move_up": "up/down",
                  "move_down": "up/down", "grow": "grow/shrink", "shrink": "grow/shrink",
                  "appear": "appear/disappear", "disappear": "appear/disappear"}


def variant_class(label: str, kinds: list[str] | tuple[str, ...]) -> str:
    """The class (VARIANT_CLASSES) of a `labelled_variants` label; kinds: the base clip's event kinds in order."""
    if label.startswith("reverse_"):
        return _REVERSE_CLASS[kinds[int(label.split("_")[1])]]
    return {"swap_order": "event order", "swap_colours": "colour swap"}[label]


def order_swap_partners(members: list[tuple[object, str] | None]) -> dict[int, int]:
    """For clips given as (group, variant label) (None: not a synthetic clip), index -> index of the same scene
    with its two events in the other order: each group's base and its `swap_order` variant, both ways, where both
    are present."""
    where = {member: i for i, member in enumerate(members) if member is not None}
    partners = {}
    for (group, label), i in where.items():
        if label == "swap_order" and (group, "base") in where:
            partners[i], partners[where[group, "base"]] = where[group, "base"], i
    return partners


def variants(spec: ClipSpec) -> list[ClipSpec]:
    """Hard negatives: same objects other motion direction, other event order, swapped colours."""
    return [s for _, s in labelled_variants(spec)]


def spec_to_dict(spec: ClipSpec, frames: int | None = None) -> dict:
    """JSON-ready spec; with `frames`, each event also gets its name, object and [start_frame, end_frame).

    Fields at their classic defaults are left out, so a classic spec's dict is the first benchmark's.
    """
    events = []
    ranges = event_frames(spec, frames) if frames else [None] * len(spec.events)
    defaults_e, defaults_o = asdict(Event("", 0)), asdict(SceneObject("", "", 0, 0, 0))
    for e, r in zip(spec.events, ranges):
        d = {k: v for k, v in asdict(e).items() if k in ("kind", "obj", "amount") or v != defaults_e[k]}
        d.update(colour=spec.objects[e.obj].colour, shape=spec.objects[e.obj].shape)
        if r is not None:
            d.update(start_frame=r[0], end_frame=r[1])
        events.append(d)
    objects = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(o).items()
                if k not in ("tint", "angle") or v != defaults_o[k]} for o in spec.objects]
    out = {"objects": objects, "events": events}
    if spec.look != Look():
        out["look"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(spec.look).items()}
    return out


def spec_from_dict(d: dict) -> ClipSpec:
    """Inverse of `spec_to_dict` (derived fields are ignored)."""
    objects = tuple(SceneObject(**{**o, "tint": tuple(o.get("tint", (0, 0, 0)))}) for o in d["objects"])
    events = tuple(Event(kind=e["kind"], obj=e["obj"], amount=e["amount"], start=e.get("start"), end=e.get("end"),
                         ease=e.get("ease", "linear")) for e in d["events"])
    spec = ClipSpec(objects, events, Look(**d["look"]) if "look" in d else Look())
    check_spec(spec)
    return spec
