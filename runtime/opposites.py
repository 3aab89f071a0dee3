"""A query's opposites: captions of what the clip it describes would show if one thing in it went the other way.

The monitor's contrast gate (`hbci.runtime.monitor.Monitor`, contrast=True) lets a standing query open an event only
on a window where it outscores each of its opposites. The opposites of "a red circle moves left, then a blue square
grows" are one caption per direction word, flipped ("... moves right, then ...", "... then a blue square
shrinks"), and the two colours exchanged. A window that shows the query's look-alike (the same objects, the other
direction) scores the look-alike's caption, which is one of these, at least as high as the query: the gate asks
the model which of the two it sees, instead of asking whether the query passes a threshold that a near miss also
passes. The look-alike with the events in the other order is the gate's order check (`hbci.runtime.monitor`), not
an opposite.

The word pairs are plain English motion words (left/right, up/down, grows/shrinks, appears/disappears, enters/leaves,
opens/closes, ...), flipped one occurrence at a time with case kept; a caption that names two colours also gets them
exchanged. A query with none of these has no opposites; the gate then lets it through as without contrast.
"""

from __future__ import annotations

import re

__all__ = ["opposite_captions", "FLIPS", "COLOURS", "MAX_OPPOSITES"]

MAX_OPPOSITES = 8  # bounds the extra scoring per query (a long caption full of direction words)

_PAIRS = (
    ("left", "right"), ("leftward", "rightward"), ("leftwards", "rightwards"), ("up", "down"),
    ("upward", "downward"), ("upwards", "downwards"), ("rises", "falls"), ("rising", "falling"), ("rise", "fall"),
    ("grows", "shrinks"), ("growing", "shrinking"), ("grow", "shrink"), ("bigger", "smaller"),
    ("expands", "contracts"), ("expanding", "contracting"), ("appears", "disappears"), ("appearing", "disappearing"),
    ("appear", "disappear"), ("fades in", "fades out"), ("fading in", "fading out"), ("enters", "leaves"),
    ("entering", "leaving"), ("opens", "closes"), ("opening", "closing"), ("forward", "backward"),
    ("forwards", "backwards"), ("clockwise", "counterclockwise"), ("towards", "away from"), ("pushes", "pulls"),
    ("pushing", "pulling"), ("comes into view", "goes out of view"), ("coming into view", "going out of view"),
)
# Words whose opposite is named by another word (one way only).
_ONE_WAY = (("drops", "rises"), ("dropping", "rising"), ("sinks", "rises"), ("sinking", "rising"),
            ("larger", "smaller"), ("vanishes", "appears"), ("vanishing", "appearing"), ("shows up", "disappears"),
            ("showing up", "disappearing"), ("anticlockwise", "clockwise"), ("exits", "enters"),
            ("exiting", "entering"), ("climbs", "falls"), ("climbing", "falling"), ("descends", "rises"),
            ("descending", "rising"), ("swells", "shrinks"), ("swelling", "shrinking"), ("dwindles", "grows"),
            ("dwindling", "growing"), ("emerges", "disappears"), ("emerging", "disappearing"),
            ("fades away", "fades in"), ("fading away", "fading in"), ("grows larger", "shrinks"),
            ("growing larger", "shrinking"), ("becomes smaller", "becomes larger"),
            ("becoming smaller", "becoming larger"), ("floats up", "sinks"), ("floating up", "sinking"))
FLIPS: dict[str, str] = {**{a: b for a, b in _PAIRS}, **{b: a for a, b in _PAIRS}, **dict(_ONE_WAY)}

# A caption naming two colours has one more opposite: the two exchanged ("a red car passes a blue one" -> "a blue
# car passes a red one"), the look-alike where the objects trade colours.
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta", "pink", "brown", "white", "black",
           "grey", "gray", "silver", "gold")
_COLOUR = re.compile(r"\b(" + "|".join(COLOURS) + r")\b", re.IGNORECASE)

# Longer phrases first, so "grows larger" wins over "grows" and "shows up" over "up".
_WORD = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(FLIPS, key=len, reverse=True)) + r")\b",
                   re.IGNORECASE)


def _cased_like(word: str, replacement: str) -> str:
    """replacement, capitalised where word is."""
    return replacement[:1].upper() + replacement[1:] if word[:1].isupper() else replacement


def _exchange_colours(text: str) -> str | None:
    colours = list(dict.fromkeys(m.group(0).lower() for m in _COLOUR.finditer(text)))
    if len(colours) != 2:
        return None
    other = {colours[0]: colours[1], colours[1]: colours[0]}
    return _COLOUR.sub(lambda m: _cased_like(m.group(0), other[m.group(0).lower()]), text)


def opposite_captions(caption: str) -> list[str]:
    """The caption's opposites (see the module docstring), each once, never the caption itself; at most
    MAX_OPPOSITES, in the order of the text."""
    text = " ".join(caption.split())
    found = [text[:m.start()] + _cased_like(m.group(0), FLIPS[m.group(0).lower()]) + text[m.end():]
              for m in _WORD.finditer(text)]
    found.append(_exchange_colours(text))
    opposites, seen = [], {text.lower()}
    for candidate in found:
        if candidate is not None and candidate.lower() not in seen:
            seen.add(candidate.lower())
            opposites.append(candidate)
    return opposites[:MAX_OPPOSITES]
