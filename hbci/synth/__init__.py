"""Synthetic text-video benchmark: coloured shapes that move, grow, shrink, appear and vanish, with template captions.

Hard negatives differ only in motion direction, temporal order or attribute binding, so mean pooling of frame
features cannot separate them. Clips are written as real mp4v files and read back through `hbci.runtime.video`,
like real data. numpy + OpenCV only (no torch). One module per concept:

* `world`: vocabulary, clip specs, the classic and wide worlds, hard-negative variants;
* `look`: backgrounds and camera shake (training families and the held-out one);
* `render`: frames and mp4v files;
* `captions`: the classic, train and held-out phrasings, and their inverse;
* `stream`: long videos of clips between idle filler, with event times;
* `dataset`: the benchmark's splits on disk (`generate`); `cli`: `hbci-synth`.
"""

from hbci.synth.captions import PHRASINGS, SHAPE_WORDS, Phrasing, caption, noun, parse_caption
from hbci.synth.cli import main
from hbci.synth.dataset import SPLITS, TRAIN_COLUMNS, generate
from hbci.synth.look import HELD_OUT_FAMILIES, TRAIN_FAMILIES, Look, background, camera_offsets, random_look
from hbci.synth.render import object_colour, render_clip, write_video
from hbci.synth.stream import StreamEvent, StreamSegment, make_stream
from hbci.synth.world import (CLASSIC, COLOURS, EASES, HELD_OUT, KINDS, REVERSE, SHAPES, VARIANT_CLASSES, WIDE,
                              WORLDS, ClipSpec, Event, SceneObject, World, check_spec, clip_states, describe,
                              event_frames, idle_spec, labelled_variants, order_swap_partners, random_spec,
                              spec_from_dict, spec_to_dict, variant_class, variants)

__all__ = [
    "COLOURS", "SHAPES", "KINDS", "REVERSE", "EASES", "SceneObject", "Event", "ClipSpec", "World", "CLASSIC",
    "WIDE", "HELD_OUT", "WORLDS", "Look", "TRAIN_FAMILIES", "HELD_OUT_FAMILIES", "StreamEvent", "StreamSegment",
    "random_spec", "idle_spec", "random_look", "variants", "labelled_variants", "order_swap_partners",
    "VARIANT_CLASSES", "variant_class",
    "describe", "event_frames", "clip_states", "check_spec", "background", "camera_offsets", "render_clip",
    "object_colour", "SHAPE_WORDS",
    "PHRASINGS", "Phrasing", "noun", "caption", "parse_caption", "spec_to_dict", "spec_from_dict", "write_video",
    "SPLITS", "TRAIN_COLUMNS", "generate", "make_stream", "main",
]
