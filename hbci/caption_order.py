"""Order-swapped captions: the text side of the temporal negatives.

A caption that tells two events in order ("X, then Y", "X before Y", "Y after X", "after X, Y") becomes its
order-swapped counterpart by exchanging the two clauses around the connective, which stays where it is: "Y, then
X", "Y before X", "X after Y", "after Y, X". The rewrite keeps every word of the caption, so the only thing a model
can use to tell the two apart is what the connective says about order. This is the caption-side negative of Bagad,
Tapaswi and Snoek, "Test of Time" (CVPR 2023), who swap the events around "before" / "after"; here any of a list
of English connectives, and only for captions whose clip is known to hold two ordered events (the caller checks
`VideoItem.order_cut`): a sentence like "a man walks and then runs" is swapped only where the data says so.
"""

from __future__ import annotations

import re

__all__ = ["swap_event_order", "CONNECTIVES"]

# Between the two clauses, in the order of the text. Longer forms first, so "and after that" wins over "after".
CONNECTIVES: tuple[str, ...] = (
    ", and after that ", ", and afterwards ", ", and then ", ", after that ", ", afterwards ", ", followed by ",
    ", then ", "; next ", "; then ", ", after ", " and then ", " followed by ", " then ", " before ", " after ",
)
# At the start, with the clauses split by the first comma: "after X, Y", "before Y, X".
_LEADING = ("after ", "before ")
# Kept at the front when the clauses are exchanged: "first X, then Y" -> "first Y, then X".
_PREFIXES = ("first ", "we see ", "in this video ")

_MIDDLE = re.compile(r"^(?P<a>.+?)(?P<conn>" + "|".join(re.escape(c) for c in CONNECTIVES) + r")(?P<b>.+)$",
                     re.IGNORECASE | re.DOTALL)


def swap_event_order(caption: str) -> str | None:
    """The caption with its two ordered clauses exchanged, or None when it has no connective to swap around (or
    the swap would give the same text)."""
    text = caption.strip()
    lower = text.lower()
    swapped = None
    for lead in _LEADING:
        if lower.startswith(lead) and ", " in text[len(lead):]:
            first, second = text[len(lead):].split(", ", 1)
            swapped = f"{text[:len(lead)]}{second}, {first}"
            break
    if swapped is None:
        prefix = next((p for p in _PREFIXES if lower.startswith(p)), "")
        m = _MIDDLE.match(text[len(prefix):])
        if m is None:
            return None
        swapped = f"{text[:len(prefix)]}{m['b']}{m['conn']}{m['a']}"
    return swapped if swapped.lower() != lower else None
