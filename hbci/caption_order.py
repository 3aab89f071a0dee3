"""Order-swapped captions: the text side of the temporal negatives.

A caption that tells two events in order ("X, then Y", "X before Y", "Y after X", "after X, Y") becomes its
order-swapped counterpart by exchanging the two clauses around the connective, which stays where it is: "Y, then
X", "Y before X", "X after Y", "after Y, X". The rewrite keeps every word of the caption, so the only thing a model
can use to tell the two apart is what the connective says about order. This is the caption-side negative of Bagad,
Tapaswi and Snoek, "Test of Time" (CVPR 2023), who swap the events around "before" / "after"; here any of a list
of English connectives, and only for captions whose clip is known to hold two ordered events (the caller checks
`VideoItem.order_cut`): a sentence like "a man walks and then runs" is swapped only where the data says so.

The same clauses also give a *restatement*: the caption told in the other clause order with the same meaning
("X before Y" <-> "Y after X", "after X, Y" <-> "before Y, X", and "X, then Y" and every other connective that
tells the events in order -> "Y after X"). Training can put it in place of the caption (`data.caption_restatement`)
so that the clause named first is as often the later event as the earlier one: a text encoder that learnt "the
clause named first happened first" from captions mostly told in order is then wrong half the time, and only the
connective tells the two apart (its swap negative keeps the connective: "Y after X" against "X after Y").
"""

from __future__ import annotations

import re

__all__ = ["swap_event_order", "restate_event_order", "CONNECTIVES"]

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


def _same_case(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


def restate_event_order(caption: str) -> str | None:
    """The caption with its two ordered clauses in the other order and the same meaning (module docstring), or
    None when it has no connective to restate around."""
    text = caption.strip()
    lower = text.lower()
    for lead, other in (("after ", "before "), ("before ", "after ")):
        if lower.startswith(lead) and ", " in text[len(lead):]:
            first, second = text[len(lead):].split(", ", 1)
            return f"{_same_case(other, text)}{second}, {first}"
    prefix = next((p for p in _PREFIXES if lower.startswith(p)), "")
    m = _MIDDLE.match(text[len(prefix):])
    if m is None:
        return None
    if prefix.lower() == "first ":  # "first X, then Y" -> "Y after X": "first Y ..." would name the wrong event
        prefix = ""
    # "Y after X" names the later event first: its restatement is "X before Y"; every other connective names the
    # earlier event first ("X before Y", "X, then Y"), restated as "Y after X".
    connective = "before" if m["conn"].strip(" ,").lower() == "after" else "after"
    return f"{text[:len(prefix)]}{m['b']} {connective} {m['a']}"
