"""Write tests/data/annotations: annotation files in the real datasets' formats, with ids and sentences made here.

    python tests/data/make_annotations.py

Run by hand (the files are committed). The MSR-VTT, MSVD and ActivityNet Captions files we studied carry no licence
that lets us redistribute them, so these are stand-ins of the same shape: the same columns and JSON layout, the
same sizes (1000 test rows, 670 MSVD test ids, 21-81 captions per clip), the quirks the loaders must handle
(leading spaces in ActivityNet sentences, listed ids without captions, a trailing newline), and made-up ids and
sentences. The MSR-VTT ids are names of the form videoNNNN, and the ones the tests name (video9770 first, video9871
last, video9771, video7020) are placed where the real split has them. The DiDeMo excerpt is a copy of the real file
(BSD-2-Clause, see SOURCES.md); it is not written here.
"""

from __future__ import annotations

import csv
import io
import json
import random
import string
from pathlib import Path

OUT = Path(__file__).resolve().parent / "annotations"

WHO = ["a man", "a woman", "a child", "a chef", "a dog", "a cyclist", "a teacher",
       "an old man", "a girl", "a boy", "a singer", "a player"]
DOES = ["is cooking pasta", "rides a bike", "plays the guitar", "talks to the camera", "cleans a window",
        "runs on a beach", "paints a wall", "reads a book", "dances on a stage", "throws a ball", "fixes a car",
        "feeds a cat", "climbs a rock", "swims in a lake", "sings a song", "folds a shirt"]
WHERE = ["", " in a kitchen", " outside", " at night", " in a park", " on the street", " in a classroom",
         " near a river"]


def sentence(rng: random.Random) -> str:
    return f"{rng.choice(WHO)} {rng.choice(DOES)}{rng.choice(WHERE)}"


def youtube_like_id(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "-_") for _ in range(11))


def msrvtt(rng: random.Random) -> None:
    folder = OUT / "msrvtt"
    folder.mkdir(parents=True, exist_ok=True)
    pinned = {0: 9770, 1: 9771, 999: 9871}
    rest = [v for v in range(7010, 10000) if v not in pinned.values() and v != 7020]
    chosen = rng.sample(rest, 1000 - len(pinned) - 1) + [7020]
    rng.shuffle(chosen)
    ids = [pinned.get(i) for i in range(1000)]
    free = iter(chosen)
    ids = [v if v is not None else next(free) for v in ids]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["key", "vid_key", "video_id", "sentence"])
    for i, v in enumerate(ids):
        writer.writerow([f"ret{i}", f"msr{v}", f"video{v}", sentence(rng)])
    (folder / "MSRVTT_JSFUSION_test.csv").write_text(buffer.getvalue(), encoding="utf-8")
    for name, pool in (("9k", range(1, 7010)), ("7k", range(1, 7010))):
        train = ["video0"] + [f"video{v}" for v in sorted(rng.sample(list(pool), 19))]
        (folder / f"MSRVTT_train.{name}.head20.csv").write_text("video_id\n" + "\n".join(train) + "\n")


def msvd(rng: random.Random) -> None:
    folder = OUT / "msvd"
    folder.mkdir(parents=True, exist_ok=True)

    def clip_id() -> str:
        start = rng.randint(0, 300)
        return f"{youtube_like_id(rng)}_{start}_{start + rng.randint(3, 20)}"

    excerpt = {clip_id(): [sentence(rng) for _ in range(n)] for n in (29, 42, 32)}
    (folder / "captions_msvd.excerpt3.json").write_text(json.dumps(excerpt, indent=1) + "\n", encoding="utf-8")
    test_ids = [clip_id() for _ in range(670)]
    (folder / "test_list.txt").write_text("\n".join(test_ids) + "\n", encoding="utf-8")


def activitynet(rng: random.Random) -> None:
    folder = OUT / "activitynet"
    folder.mkdir(parents=True, exist_ok=True)
    captions = {}
    for k in range(4):
        duration = round(rng.uniform(30, 200), 2)
        n = rng.randint(2, 4)
        cuts = sorted(round(rng.uniform(0, duration), 2) for _ in range(2 * n))
        # Real files have sentences after the first starting with one or two spaces; the loader must strip them.
        sentences = [sentence(rng).capitalize() + "." for _ in range(n)]
        sentences = [s if i == 0 else " " * (1 + (i + k) % 2) + s for i, s in enumerate(sentences)]
        captions[f"v_{youtube_like_id(rng)}"] = {"duration": duration,
                                                 "timestamps": [cuts[2 * i:2 * i + 2] for i in range(n)],
                                                 "sentences": sentences}
    (folder / "val_1.excerpt4.json").write_text(json.dumps(captions, indent=1) + "\n", encoding="utf-8")
    others = [f"v_{youtube_like_id(rng)}" for _ in range(10)]
    (folder / "val_ids.head10.json").write_text(json.dumps(others, indent=1) + "\n", encoding="utf-8")


def main() -> int:
    rng = random.Random(20240317)
    msrvtt(rng)
    msvd(rng)
    activitynet(rng)
    print(f"wrote the stand-in annotation files under {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
