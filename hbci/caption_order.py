"""Order-swapped captions: the text side of the temporal negatives.

A caption that tells two events in order ("X, then Y", "X before Y", "Y after X", "after X, Y") becomes its
order-swapped counterpart by exchanging the two clauses around the connective, which stays where it is: "Y, then
X", "Y before X", "X after Y", "after Y, X". The rewrite keeps every word of the caption, so the only thing a model
can use to tell the two apart is what the connective says about order. This is the caption-side negative of Bagad,
Tapaswi and Snoek, "Test of Time" (CVPR 2023), who swap the events around "before" / "after"; here any of a list
of English connectives, and only for captions whose clip is known to hold two ordered events (the caller checks
`VideoItem.order_cut`): a sentence like "a man walks and then runs" is swapped only where the data says so.

Free text ends as it began: the closing punctuation ("." "!" "?") stays at the end of the swapped caption and is
left out of the split events, and two sentences joined by "Then" ("A man sits down. Then he reads.", as
ActivityNet's paragraphs run) split like a comma and "then".
"""

from __future__ import annotations

import re

__all__ = ["swap_event_order", "event_clauses", "CONNECTIVES"]

# Between the two clauses, in the order of the text. Longer forms first, so "and after that" wins over "after".
CONNECTIVES: tuple[str, ...] = (
    ", and after that ", ", and afterwards ", ", and then ", ", after that ", ", afterwards ", ", followed by ",
    ", then ", ". after that, ", ". afterwards, ", ". next, ", ". then, ", ". after that ", ". afterwards ", ". next ",
    ". then ", "; next ", "; then ", ", after ", " and then ", " followed by ", " then ", " before ", " after ",
)
# At the start, with the clauses split by the first comma: "after X, Y", "before Y, X".
_LEADING = ("after ", "before ")
# Kept at the front when the clauses are exchanged: "first X, then Y" -> "first Y, then X".
_PREFIXES = ("first ", "we see ", "in this video ")

_MIDDLE = re.compile(r"^(?P<a>.+?)(?P<conn>" + "|".join(re.escape(c) for c in CONNECTIVES) + r")(?P<b>.+)$",
                     re.IGNORECASE | re.DOTALL)


_CLOSING = re.compile(r"\s*[.!?]+$")  # a sentence's closing punctuation


def _clauses(caption: str) -> tuple[str, str, str, str, bool, str] | None:
    """(prefix, first clause, connective, second clause, leading, closing) in the order of the text, or None.
    leading: the connective opens the caption ("after X, Y": prefix is "after ", connective ", "); closing: the
    punctuation that ends it, kept out of the clauses."""
    text = caption.strip()
    closing = _CLOSING.search(text)
    closing = closing.group() if closing else ""
    text = text[:len(text) - len(closing)]
    lower = text.lower()
    for lead in _LEADING:
        if lower.startswith(lead) and ", " in text[len(lead):]:
            first, second = text[len(lead):].split(", ", 1)
            return text[:len(lead)], first, ", ", second, True, closing
    prefix = next((p for p in _PREFIXES if lower.startswith(p)), "")
    m = _MIDDLE.match(text[len(prefix):])
    if m is None:
        return None
    return text[:len(prefix)], m["a"], m["conn"], m["b"], False, closing


def swap_event_order(caption: str) -> str | None:
    """The caption with its two ordered clauses exchanged, or None when it has no connective to swap around (or
    the swap would give the same text)."""
    parts = _clauses(caption)
    if parts is None:
        return None
    prefix, first, conn, second, _, closing = parts
    swapped = f"{prefix}{second}{conn}{first}{closing}"
    return swapped if swapped.lower() != caption.strip().lower() else None


def event_clauses(caption: str) -> tuple[str, str] | None:
    """The caption's two events as two captions, (earlier, later) in the time they happen, or None when it has no
    connective to split at: "X, then Y", "X before Y", "Y after X", "after X, Y", "before Y, X" all give (X, Y).
    A clause keeps its own words ("first X, then Y" gives ("X", "Y"); "X first, then Y" gives ("X first", "Y"))."""
    parts = _clauses(caption)
    if parts is None:
        return None
    prefix, first, conn, second, leading, _ = parts
    word = (prefix if leading else conn).strip(" ,;.").lower()
    if leading:  # "after X, Y": X first; "before Y, X": X first
        return (first, second) if word == "after" else (second, first)
    return (second, first) if word == "after" else (first, second)
