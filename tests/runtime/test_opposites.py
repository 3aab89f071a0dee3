"""runtime/opposites.py: a query's opposites are the captions of its look-alikes that differ in direction or colour,
never the query itself, with case and the other words kept; the look-alikes in the other order are left to the
monitor's order check, which needs the query split into its events."""

import numpy as np
import pytest

from hbci.caption_order import event_clauses, swap_event_order
from hbci.runtime.opposites import FLIPS, MAX_OPPOSITES, opposite_captions
from hbci.synth import describe, labelled_variants, random_spec
from hbci.synth.captions import caption, parse_caption


def test_one_flip_per_direction_word_then_the_colours_and_never_the_order():
    assert opposite_captions("a red ball moves left, then a blue box grows") == [
        "a red ball moves right, then a blue box grows",
        "a red ball moves left, then a blue box shrinks",
        "a blue ball moves left, then a red box grows"]


def test_phrases_whole_words_and_case():
    assert opposite_captions("A car Turns Counterclockwise") == ["A car Turns Clockwise"]
    assert opposite_captions("a green disc shows up") == ["a green disc disappears"]
    assert opposite_captions("a light fades in") == ["a light fades out"]
    # "leftover" and "upbeat" hold no direction word; "up" does not match inside them
    assert opposite_captions("a leftover box sits upbeat") == []
    assert opposite_captions("a dog   barks") == []


def test_two_colours_are_exchanged_and_one_or_three_are_not():
    assert opposite_captions("Red boxes pass a blue car and a red van") == ["Blue boxes pass a red car and a blue van"]
    assert opposite_captions("a red box") == opposite_captions("a red box, a blue car and a green van") == []


def test_every_flip_has_an_opposite_that_differs():
    for word, opposite in FLIPS.items():
        assert opposite != word and opposite_captions(f"it {word} now") == [f"it {opposite} now"]


def test_never_the_query_and_never_more_than_the_cap():
    text = " then ".join(["a box moves left"] * 20)
    opposites = opposite_captions(text)
    assert len(opposites) == MAX_OPPOSITES and text not in opposites
    assert len({o.lower() for o in opposites}) == len(opposites)


@pytest.mark.parametrize("phrasing", ["classic", "train"])
def test_the_opposites_of_a_caption_name_its_order_and_direction_look_alikes(phrasing):
    """For random synthetic clips, each of the clip's variants (motion reversed, order swapped, colours swapped: the
    look-alikes the alert benchmark queries) is told by one of its caption's opposites or, for the order swap, by
    the order check (the caption splits into its two events), and no opposite tells the clip itself."""
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(150):
        spec = random_spec(rng)
        text = caption(spec, rng, phrasing)
        told = set()
        for opposite in opposite_captions(text):
            try:
                told.add(parse_caption(opposite))
            except ValueError:  # a flipped synonym outside the synthetic vocabulary ("floats down")
                pass
        assert describe(spec) not in told, text
        if event_clauses(text) is not None:  # the order check: the clauses are the events, earlier first
            told.add(parse_caption(swap_event_order(text)))
        for label, variant in labelled_variants(spec):
            assert describe(variant) in told, (text, label)
            covered += 1
    assert covered > 250
