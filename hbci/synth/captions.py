"""Captions of synthetic clips from templates with synonyms, in three phrasings, and their exact inverse.

* classic: the first benchmark's templates and synonyms;
* train: a superset of classic: more synonyms, more sentence frames and clause orders ("after X, Y",
  "before Y, X");
* held_out: sentence frames never used by train (new frames and filler words: "X is moving left", "in this video
  X ..., then Y ..."), for the held-out-look test split. They use no temporal connective that train lacks: the
  tiny text encoder learns language only from train captions, so an unseen word such as "earlier" could not be
  understood (a real CLIP would know it); what is measured is transfer to new phrasing of known words.

Every template names the first event's object `a` and the second's `b`; where `b` comes first in the text
("{b} {vb} after {a} {va}"), word order does not give temporal order. `parse_caption` matches the templates
exactly, so it inverts every phrasing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hbci.synth.world import COLOURS, KINDS, ClipSpec, SceneObject, check_spec

__all__ = ["SHAPE_WORDS", "PHRASINGS", "Phrasing", "caption", "parse_caption", "noun"]

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
}
# (present tense, gerund) pairs; the gerund serves "followed by", "is ...ing" and the like.
_CLASSIC_VERBS: dict[str, tuple[tuple[str, str], ...]] = {
    "move_left": (("moves left", "moving left"), ("moves to the left", "moving to the left"),
                  ("slides to the left", "sliding to the left"), ("goes left", "going left")),
    "move_right": (("moves right", "moving right"), ("moves to the right", "moving to the right"),
                   ("slides to the right", "sliding to the right"), ("goes right", "going right")),
    "move_up": (("moves up", "moving up"), ("goes up", "going up"), ("rises", "rising"),
                ("slides upward", "sliding upward")),
    "move_down": (("moves down", "moving down"), ("goes down", "going down"), ("drops", "dropping"),
                  ("slides downward", "sliding downward")),
    "grow": (("grows", "growing"), ("gets bigger", "getting bigger"), ("expands", "expanding"),
             ("grows larger", "growing larger")),
    "shrink": (("shrinks", "shrinking"), ("gets smaller", "getting smaller"), ("contracts", "contracting")),
    "appear": (("appears", "appearing"), ("shows up", "showing up"), ("fades in", "fading in")),
    "disappear": (("disappears", "disappearing"), ("vanishes", "vanishing"), ("fades out", "fading out")),
}
_MORE_VERBS: dict[str, tuple[tuple[str, str], ...]] = {
    "move_left": (("travels left", "travelling left"), ("drifts to the left", "drifting to the left")),
    "move_right": (("travels right", "travelling right"), ("drifts to the right", "drifting to the right")),
    "move_up": (("climbs", "climbing"), ("floats up", "floating up")),
    "move_down": (("falls", "falling"), ("sinks", "sinking")),
    "grow": (("swells", "swelling"), ("becomes larger", "becoming larger")),
    "shrink": (("becomes smaller", "becoming smaller"), ("dwindles", "dwindling")),
    "appear": (("comes into view", "coming into view"), ("emerges", "emerging")),
    "disappear": (("fades away", "fading away"), ("goes out of view", "going out of view")),
}
_WIDE_VERBS = {k: _CLASSIC_VERBS[k] + _MORE_VERBS[k] for k in KINDS}

_CLASSIC_TWO = (
    "{a} {va}, then {b} {vb}",
    "{a} {va}, and then {b} {vb}",
    "{a} {va}, after that {b} {vb}",
    "first {a} {va}, then {b} {vb}",
    "{a} {ga}, followed by {b} {gb}",
    "{a} {va} before {b} {vb}",
    "{b} {vb} after {a} {va}",
)


@dataclass(frozen=True)
class Phrasing:
    """Templates for one and two events, and the verb synonyms."""

    one: tuple[str, ...]
    two: tuple[str, ...]
    verbs: dict[str, tuple[tuple[str, str], ...]]


PHRASINGS: dict[str, Phrasing] = {
    "classic": Phrasing(("{a} {va}",), _CLASSIC_TWO, _CLASSIC_VERBS),
    "train": Phrasing(
        ("{a} {va}", "we see {a} {ga}", "there is {a} {ga}"),
        _CLASSIC_TWO + (
            "after {a} {va}, {b} {vb}",
            "before {b} {vb}, {a} {va}",
            "{a} {va}, and afterwards {b} {vb}",
            "{a} {va}; next {b} {vb}",
            "we see {a} {ga}, then {b} {gb}",
        ),
        _WIDE_VERBS),
    "held_out": Phrasing(
        ("{a} is {ga}", "in this video {a} {va}", "here, {a} {va}"),
        (
            "{a} {va}, and after that {b} {vb}",
            "{a} {va} first, then {b} {vb}",
            "in this video {a} {va}, then {b} {vb}",
            "{a} is {ga}, then {b} is {gb}",
            "{b} {vb}, after {a} {va}",
            "first {a} is {ga}, and then {b} {vb}",
        ),
        _WIDE_VERBS),
}


def noun(o: SceneObject, rng: np.random.Generator) -> str:
    """'a <colour> <shape word>' with a random synonym of the shape."""
    words = SHAPE_WORDS[o.shape]
    return f"a {o.colour} {words[rng.integers(len(words))]}"


def caption(spec: ClipSpec, rng: np.random.Generator, phrasing: str = "classic") -> str:
    """A caption in one of PHRASINGS; `parse_caption` inverts it to `describe(spec)`."""
    check_spec(spec)
    style = PHRASINGS[phrasing]
    if not spec.events:
        nouns = [noun(o, rng) for o in spec.objects]
        return " and ".join(nouns) + (" stay still" if len(nouns) > 1 else " stays still")
    if len(spec.events) > 2:
        raise ValueError("captions are defined for clips of at most two events")
    fields = {}
    for name, e in zip("ab", spec.events):
        options = style.verbs[e.kind]
        present, gerund = options[rng.integers(len(options))]
        fields.update({name: noun(spec.objects[e.obj], rng), f"v{name}": present, f"g{name}": gerund})
    templates = style.one if len(spec.events) == 1 else style.two
    return templates[rng.integers(len(templates))].format(**fields)


def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


_NOUN = r"a (?P<c{n}>" + "|".join(COLOURS) + r") (?P<s{n}>" + _alternatives(w for ws in SHAPE_WORDS.values()
                                                                           for w in ws) + ")"
_PRESENT = {p: k for k, vs in _WIDE_VERBS.items() for p, _ in vs}
_GERUND = {g: k for k, vs in _WIDE_VERBS.items() for _, g in vs}
_WORD_TO_SHAPE = {w: s for s, ws in SHAPE_WORDS.items() for w in ws}


def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for n in "ab":
        pattern = pattern.replace(re.escape("{" + n + "}"), _NOUN.format(n=n))
        pattern = pattern.replace(re.escape("{v" + n + "}"), f"(?P<v{n}>{_alternatives(_PRESENT)})")
        pattern = pattern.replace(re.escape("{g" + n + "}"), f"(?P<g{n}>{_alternatives(_GERUND)})")
    return re.compile(pattern)


_PATTERNS = [_template_regex(t) for t in dict.fromkeys(t for p in PHRASINGS.values() for t in p.one + p.two)]


def parse_caption(text: str) -> tuple[tuple[str, str, str], ...]:
    """Invert `caption` (any phrasing): (colour, shape, kind) per event in temporal order. Raises ValueError if it
    cannot."""
    text = text.strip()
    for pattern in _PATTERNS:
        m = pattern.fullmatch(text)
        if m is None:
            continue
        events = []
        for n in "ab":
            if m.groupdict().get(f"c{n}") is None:
                continue
            verb = m.group(f"v{n}") if m.groupdict().get(f"v{n}") else None
            kind = _PRESENT[verb] if verb else _GERUND[m.group(f"g{n}")]
            events.append((m.group(f"c{n}"), _WORD_TO_SHAPE[m.group(f"s{n}")], kind))
        return tuple(events)
    if re.search(_NOUN.format(n=0), text) is None:
        raise ValueError(f"no object in {text!r}")
    raise ValueError(f"no event phrase of the synthetic vocabulary in {text!r}")
