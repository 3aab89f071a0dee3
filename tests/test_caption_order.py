"""The caption side of the temporal negatives: exchanging two ordered clauses around their connective."""

import re

import numpy as np
import pytest

from hbci.caption_order import event_clauses, swap_event_order
from hbci.synth.captions import PHRASINGS, caption, parse_caption
from hbci.synth.world import ClipSpec, Event, SceneObject

_FIELDS = dict(a="a red ball", va="moves left", ga="moving left", b="a blue box", vb="grows", gb="growing")


def _words(text: str) -> list[str]:
    return sorted(re.findall(r"\w+", text))


@pytest.mark.parametrize("template", PHRASINGS["train"].two)
def test_every_training_frame_swaps_to_the_other_order(template):
    """The rewrite of every two-event sentence frame that training uses tells the events in the other order."""
    text = template.format(**_FIELDS)
    swapped = swap_event_order(text)
    assert swapped is not None and _words(swapped) == _words(text)  # every word kept
    assert parse_caption(swapped) == parse_caption(text)[::-1]
    assert swap_event_order(swapped) == text  # swapping twice gives the caption back


def test_random_captions_of_a_two_event_clip_swap_to_the_swapped_clip():
    spec = ClipSpec((SceneObject("red", "circle", 0.3, 0.5, 0.2), SceneObject("blue", "square", 0.7, 0.5, 0.2)),
                    (Event("move_up", 0, 0.2, 0.0, 0.4), Event("disappear", 1, 0.0, 0.6, 1.0)))
    rng = np.random.default_rng(3)
    for _ in range(50):
        text = caption(spec, rng, "train")
        assert parse_caption(swap_event_order(text)) == (("blue", "square", "disappear"), ("red", "circle", "move_up"))


@pytest.mark.parametrize("text, expected", [
    ("After the man opens the door, he walks in", "After he walks in, the man opens the door"),
    ("A dog barks and then a cat runs away.", "a cat runs away and then A dog barks."),
    ("first X happens, then Y happens", "first Y happens, then X happens"),
    ("She sings before she dances", "she dances before She sings"),
])
def test_free_text_swaps_around_the_first_connective(text, expected):
    assert swap_event_order(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("A man opens the door, then sits down.", "sits down, then A man opens the door."),
    ("after the dog jumps, it runs!", "after it runs, the dog jumps!"),
    ("Before she dances, she sings?", "Before she sings, she dances?"),
    ("A man sits down. Then he reads a book.", "he reads a book. Then A man sits down."),
    ("X happened. After that, Y happened.", "Y happened. After that, X happened."),
    ("a cat runs. next a dog barks", "a dog barks. next a cat runs"),
])
def test_the_closing_punctuation_stays_at_the_end_and_sentences_swap_around_then(text, expected):
    """Free text (ActivityNet's paragraphs): the full stop stays last, not glued to the clause moved forward, and
    two sentences joined by "Then" / "After that," / "Next" swap as two clauses; twice gives the text back."""
    assert swap_event_order(text) == expected
    assert swap_event_order(expected) == text


@pytest.mark.parametrize("text", ["a red ball moves left", "there is a blue box growing", "", "   ",
                                  "after that", "a cat then a cat"])
def test_captions_without_two_ordered_clauses_have_no_swap(text):
    """No connective, nothing on one side of it, or a swap that gives the same text back."""
    assert swap_event_order(text) is None


_EARLIER = ("a red ball moves left", "a red ball moving left", "a red ball is moving left",
            "a red ball moves left first")
_LATER = ("a blue box grows", "a blue box growing", "a blue box is growing")


@pytest.mark.parametrize("template", [t for phrasing in PHRASINGS.values() for t in phrasing.two])
def test_every_sentence_frame_splits_into_its_events_in_time_order(template):
    """Whatever the connective and whichever event the text names first, the earlier event comes first; the
    swapped caption splits into the same two clauses the other way round."""
    earlier, later = event_clauses(template.format(**_FIELDS))
    assert earlier in _EARLIER and later in _LATER
    assert event_clauses(swap_event_order(template.format(**_FIELDS))) == (later, earlier)


@pytest.mark.parametrize("text, expected", [
    ("After the man opens the door, he walks in", ("the man opens the door", "he walks in")),
    ("before she dances, she sings", ("she sings", "she dances")),
    ("She sings before she dances", ("She sings", "she dances")),
    ("She dances after she sings", ("she sings", "She dances")),
    ("We see a dog bark, followed by a cat running", ("a dog bark", "a cat running")),
    ("A man opens the door, then sits down.", ("A man opens the door", "sits down")),
    ("The cat runs away after the dog barks!", ("the dog barks", "The cat runs away")),
    ("A man sits down. Then he reads a book.", ("A man sits down", "he reads a book")),
    ("X happened. After that, Y happened.", ("X happened", "Y happened")),
])
def test_free_text_splits_at_the_first_connective(text, expected):
    assert event_clauses(text) == expected


@pytest.mark.parametrize("text", ["a red ball moves left", "there is a blue box growing", "", "after that",
                                  "then.", "...", "A man sits down."])
def test_captions_without_two_ordered_clauses_do_not_split(text):
    assert event_clauses(text) is None
