"""The caption side of the temporal negatives: exchanging two ordered clauses around their connective."""

import re

import numpy as np
import pytest

from hbci.caption_order import restate_event_order, swap_event_order
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
    ("A dog barks and then a cat runs away.", "a cat runs away. and then A dog barks"),
    ("first X happens, then Y happens", "first Y happens, then X happens"),
    ("She sings before she dances", "she dances before She sings"),
])
def test_free_text_swaps_around_the_first_connective(text, expected):
    assert swap_event_order(text) == expected


@pytest.mark.parametrize("text", ["a red ball moves left", "there is a blue box growing", "", "   ",
                                  "after that", "a cat then a cat"])
def test_captions_without_two_ordered_clauses_have_no_swap(text):
    """No connective, nothing on one side of it, or a swap that gives the same text back."""
    assert swap_event_order(text) is None


@pytest.mark.parametrize("template", PHRASINGS["train"].two)
def test_every_training_frame_restates_in_the_other_clause_order_with_the_same_meaning(template):
    text = template.format(**_FIELDS)
    restated = restate_event_order(text)
    assert restated is not None and restated != text
    named_first = min(("red", "blue"), key=text.index)
    assert min(("red", "blue"), key=restated.index) != named_first  # the other clause comes first
    if "{va}" in template:  # present tense: lands on a training frame, which the parser reads
        assert parse_caption(restated) == parse_caption(text)
        # its swap negative keeps the connective and tells the other order
        assert parse_caption(swap_event_order(restated)) == parse_caption(text)[::-1]
    else:  # gerunds ("X moving, followed by Y growing"): no frame to parse, the connective says it
        assert " after " in restated and restated.index("blue") < restated.index("red")


@pytest.mark.parametrize("text, expected", [
    ("After the man opens the door, he walks in", "Before he walks in, the man opens the door"),
    ("She sings before she dances", "she dances after She sings"),
    ("she dances after she sings", "she sings before she dances"),
    ("first X happens, then Y happens", "Y happens after X happens"),
    ("we see X, followed by Y", "we see Y after X"),
])
def test_free_text_restates_around_the_first_connective(text, expected):
    assert restate_event_order(text) == expected


@pytest.mark.parametrize("text", ["a red ball moves left", "there is a blue box growing", "", "after that"])
def test_captions_without_two_ordered_clauses_have_no_restatement(text):
    assert restate_event_order(text) is None


def test_training_restates_only_two_event_windows_and_about_the_share_asked():
    from hbci.train import restated_captions

    texts = [f"a red ball moves left, then a blue box grows {i}" for i in range(400)]
    cut = np.where(np.arange(400) % 4 == 0, 0, 5)  # every fourth window shows one event only
    index = np.arange(400)
    assert restated_captions(texts, cut, index, 0.0, seed=7) == texts
    everything = restated_captions(texts, cut, index, 1.0, seed=7)
    assert [t == r for t, r in zip(texts, everything)] == [c == 0 for c in cut]
    half = restated_captions(texts, cut, index, 0.5, seed=7)
    changed = sum(t != r for t, r in zip(texts, half))
    assert 0.4 * 300 < changed < 0.6 * 300
    assert half == restated_captions(texts, cut, index, 0.5, seed=7)  # the same draw for the same seed and items
    assert half != restated_captions(texts, cut, index, 0.5, seed=8)
