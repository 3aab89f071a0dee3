"""Dataset loaders on annotation files in the real formats, with tiny generated videos.

Every test that reads annotation files runs on two sets: tests/data/annotations (ours, in the repository: stand-ins
of the same shape for the files we may not redistribute, and the BSD-2-Clause DiDeMo excerpt; see
tests/data/SOURCES.md) and, where it exists, the real files in ../shared/material/annotations. Facts that differ
between the two (ids, a caption) are in `ANNOTATION_SETS`.

Each test builds the dataset's root layout in tmp_path: real files are symlinked under the names the loaders
expect, full files we do not have are generated for the ids of the real ones, and videos are one small mp4v clip
copied under the names the datasets use (video7010.mp4, v_xxx.mp4, <clip>.avi, ...). FFmpeg probes the content,
so an mp4 stream under a .webm/.avi/.m4v name decodes fine.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from hbci.datasets import DATASETS, VideoItem, check_videos, load_split
from hbci.runtime.errors import DatasetError

NUM_FRAMES = 8


@dataclass(frozen=True)
class AnnotationSet:
    root: Path
    anet_ids: tuple[str, ...]      # the ActivityNet excerpt's video ids, in file order
    anet_first_caption: str        # the first video's sentences joined
    msvd_first_test_id: str
    msvd_excerpt_ids: tuple[str, ...]


ANNOTATION_SETS = {
    "ours": AnnotationSet(
        Path(__file__).resolve().parents[1] / "data" / "annotations",
        ("v_bGHTFni16iu", "v_KKIeRy35vh6", "v_T_JqFBGsd2T", "v_kDClzemaRQ-"),
        "A player dances on a stage on the street. A cyclist rides a bike near a river. A teacher swims in a lake on "
        "the street.",
        "PE2yL7Q3L9L_33_46", ("NtRx1jjXzhQ_169_173", "kXmwCpuvFJg_183_202", "DP0_SAFYi4C_3_19")),
    "shared": AnnotationSet(
        Path(),  # the external folder, resolved by the `ann` fixture
        ("v_uqiMw7tQ1Cc", "v_bXdq2zI1Ms0", "v_FsS_NCZEfaI", "v_K6Tm5xHkJ5c"),
        "A weight lifting tutorial is given. The coach helps the guy in red with the proper body placement and "
        "lifting technique.",
        "eyhzdC936uk_15_27", ("-4wsuPCjDBc_5_15", "-7KMZQEsJW4_205_208", "-8y1Q0rA3n8_108_115")),
}


@pytest.fixture(scope="module", params=list(ANNOTATION_SETS))
def ann(request) -> AnnotationSet:
    found = ANNOTATION_SETS[request.param]
    if request.param == "shared":  # skips, saying so in the summary, where the folder is absent
        found = replace(found, root=request.getfixturevalue("shared_material") / "annotations")
    return found


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory) -> bytes:
    """An 8-frame 32x32 mp4v clip whose frames get brighter over time (so frame order is checkable)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, (32, 32))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for i in range(NUM_FRAMES):
        writer.write(np.full((32, 32, 3), 20 + 28 * i, np.uint8))
    writer.release()
    return path.read_bytes()


def put_videos(folder: Path, names: list[str], data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(data)


def link(root: Path, name: str, source: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).symlink_to(source)
    return root / name


def collect() -> tuple[list[str], Callable[[str], None]]:
    messages: list[str] = []
    return messages, messages.append


def test_all_registered():
    assert {"msrvtt", "didemo", "activitynet", "msvd", "csv"} <= set(DATASETS)


def test_unknown_split_names_the_known_ones(tmp_path):
    with pytest.raises(DatasetError, match="unknown split 'test'.*train-9k, train-7k, test-1k"):
        load_split("msrvtt", tmp_path, "test")


# --- MSR-VTT ------------------------------------------------------------------------------------------------------

def test_msrvtt_test_1k_is_the_jsfusion_csv(tmp_path, ann):
    MSRVTT = ann.root / "msrvtt"
    link(tmp_path, "MSRVTT_JSFUSION_test.csv", MSRVTT / "MSRVTT_JSFUSION_test.csv")
    items = load_split("msrvtt", tmp_path, "test-1k")  # no MSRVTT_data.json needed for the test split
    lines = (MSRVTT / "MSRVTT_JSFUSION_test.csv").read_text(encoding="utf-8").splitlines()
    first, last = lines[1].split(",", 3), lines[-1].split(",", 3)
    assert len(items) == 1000 and len({item.video_id for item in items}) == 1000
    assert all(len(item.captions) == 1 for item in items)
    assert (items[0].video_id, items[0].captions[0], items[0].extra["keys"]) == (first[2], first[3], [first[0]])
    assert (items[-1].video_id, items[-1].captions[0]) == (last[2], last[3])
    assert (items[0].video_id, items[-1].video_id) == ("video9770", "video9871")
    assert items[0].path == tmp_path / "videos" / "video9770.mp4"


def test_msrvtt_webm_fallback(tmp_path, clip_bytes, ann):
    MSRVTT = ann.root / "msrvtt"
    link(tmp_path, "MSRVTT_JSFUSION_test.csv", MSRVTT / "MSRVTT_JSFUSION_test.csv")
    videos = tmp_path / "videos"
    put_videos(videos, ["video9770.webm", "video9771.mp4", "video9771.webm"], clip_bytes)
    items = {item.video_id: item for item in load_split("msrvtt", tmp_path, "test-1k")}
    assert items["video9770"].path == videos / "video9770.webm"
    assert items["video9771"].path == videos / "video9771.mp4"  # mp4 preferred
    assert items["video7020"].path == videos / "video7020.mp4"  # neither: reported as the mp4


def _msrvtt_json(path: Path, ids: list[str], seed: int = 0) -> dict[str, list[str]]:
    """A stand-in MSRVTT_data.json: 20 captions per video (as the real one), sentences shuffled so that json order
    differs from sen_id order, plus captions of a video outside the splits. Returns the expected captions."""
    rng = random.Random(seed)
    sentences, expected = [], {}
    for v, video_id in enumerate(ids + ["video9999"]):
        captions = [f"{video_id} caption {k}" for k in range(20)]
        expected[video_id] = captions
        sentences += [{"caption": c, "video_id": video_id, "sen_id": 1000 * v + k} for k, c in enumerate(captions)]
    rng.shuffle(sentences)
    videos = [{"video_id": v, "category": 0, "split": "train", "id": i} for i, v in enumerate(ids)]
    path.write_text(json.dumps({"info": {}, "videos": videos, "sentences": sentences}), encoding="utf-8")
    return expected


def _csv_ids(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "video_id"
    return lines[1:]


@pytest.mark.parametrize("split, head", [("train-9k", "MSRVTT_train.9k.head20.csv"),
                                         ("train-7k", "MSRVTT_train.7k.head20.csv")])
def test_msrvtt_train_collects_all_captions_in_sen_id_order(tmp_path, split, head, ann):
    MSRVTT = ann.root / "msrvtt"
    ids_9k = _csv_ids(MSRVTT / "MSRVTT_train.9k.head20.csv")
    ids_7k = _csv_ids(MSRVTT / "MSRVTT_train.7k.head20.csv")
    link(tmp_path, "MSRVTT_train.9k.csv", MSRVTT / "MSRVTT_train.9k.head20.csv")
    link(tmp_path, "MSRVTT_train.7k.csv", MSRVTT / "MSRVTT_train.7k.head20.csv")
    expected = _msrvtt_json(tmp_path / "MSRVTT_data.json", list(dict.fromkeys(ids_9k + ids_7k)))
    items = load_split("msrvtt", tmp_path, split)
    ids = _csv_ids(MSRVTT / head)
    assert [item.video_id for item in items] == ids and len(ids) == 20
    for item in items:
        assert item.captions == tuple(expected[item.video_id])
        assert item.extra["sen_ids"] == sorted(item.extra["sen_ids"])


def test_msrvtt_options_point_elsewhere(tmp_path, ann):
    MSRVTT = ann.root / "msrvtt"
    ids = _csv_ids(MSRVTT / "MSRVTT_train.9k.head20.csv")
    elsewhere = tmp_path / "annotations"
    elsewhere.mkdir()
    _msrvtt_json(elsewhere / "data.json", ids)
    items = load_split("msrvtt", tmp_path / "root", "train-9k", data_json=elsewhere / "data.json",
                       train_9k_csv=MSRVTT / "MSRVTT_train.9k.head20.csv", video_dir="all")
    assert len(items) == 20 and items[0].path == tmp_path / "root" / "all" / "video0.mp4"
    bom = tmp_path / "bom.csv"  # a spreadsheet export with a byte-order mark
    bom.write_bytes(b"\xef\xbb\xbf" + (MSRVTT / "MSRVTT_train.9k.head20.csv").read_bytes())
    assert load_split("msrvtt", tmp_path / "root", "train-9k", data_json=elsewhere / "data.json",
                      train_9k_csv=bom, video_dir="all") == items


def test_msrvtt_train_video_without_captions_is_warned(tmp_path, ann):
    MSRVTT = ann.root / "msrvtt"
    link(tmp_path, "MSRVTT_train.9k.csv", MSRVTT / "MSRVTT_train.9k.head20.csv")
    ids = _csv_ids(MSRVTT / "MSRVTT_train.9k.head20.csv")
    _msrvtt_json(tmp_path / "MSRVTT_data.json", ids[:17])
    messages, warn = collect()
    items = load_split("msrvtt", tmp_path, "train-9k", warn=warn)
    assert len(items) == 17
    assert len(messages) == 1 and "3 of 20 ids have no captions" in messages[0]
    assert all(video_id in messages[0] for video_id in ids[17:])


def test_msrvtt_errors_name_the_file_and_row(tmp_path, ann):
    MSRVTT = ann.root / "msrvtt"
    with pytest.raises(DatasetError, match="MSRVTT_JSFUSION_test.csv: MSR-VTT test csv not found"):
        load_split("msrvtt", tmp_path, "test-1k")
    link(tmp_path, "MSRVTT_train.9k.csv", MSRVTT / "MSRVTT_train.9k.head20.csv")
    with pytest.raises(DatasetError, match=r"MSRVTT_data\.json: MSR-VTT annotation json not found"):
        load_split("msrvtt", tmp_path, "train-9k")
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps(
        {"sentences": [{"caption": "a", "video_id": "video0", "sen_id": 0}, {"video_id": "video1", "sen_id": 1}]}))
    with pytest.raises(DatasetError, match=r"MSRVTT_data\.json: sentences\[1\] is malformed"):
        load_split("msrvtt", tmp_path, "train-9k")
    bad = tmp_path / "bad.csv"
    bad.write_text("key,vid_key,video_id,sentence\nret0,msr1,video1,a dog\nret1,msr2,video2,\n")
    with pytest.raises(DatasetError, match=r"bad\.csv:3: empty sentence"):
        load_split("msrvtt", tmp_path, "test-1k", test_csv=bad)
    bad.write_text("video,sentence\nvideo1,a dog\n")
    with pytest.raises(DatasetError, match=r"bad\.csv: missing column\(s\) key, vid_key, video_id"):
        load_split("msrvtt", tmp_path, "test-1k", test_csv="bad.csv")


# --- DiDeMo -------------------------------------------------------------------------------------------------------

DIDEMO_JSON = "didemo/test_data.excerpt3videos.json"  # the same file in both sets
M4V = "26292851@N04_4253489686_265c3c8051.m4v"
MPG = "51035693821@N01_7071386095_a7350f43e0.mpg"
AVI = "65430553@N08_7599657594_57ef62657c.avi"


def test_didemo_one_paragraph_per_video_in_json_order(tmp_path, ann):
    DIDEMO = ann.root / DIDEMO_JSON
    link(tmp_path, "test_data.json", DIDEMO)
    items = load_split("didemo", tmp_path, "test")
    records = json.loads(DIDEMO.read_text(encoding="utf-8"))
    assert [item.video_id for item in items] == [M4V, MPG, AVI]  # first-seen order; the json interleaves them
    assert all(len(item.captions) == 1 for item in items)
    for item in items:
        own = [r for r in records if r["video"] == item.video_id]
        assert item.captions[0] == " ".join(r["description"] for r in own)
        assert item.extra["annotation_ids"] == [r["annotation_id"] for r in own]
    assert items[0].captions[0] == (
        "someone kicks the bug towards some rocks. a man in a red shirt stomps on a centipede. man in white shirt "
        "is seen close up of a millipede on the rocks first time foot swipes at wiggly thing")
    assert sum(len(item.extra["annotation_ids"]) for item in items) == 14
    assert (items[0].start, items[0].end) == (None, None)  # the paragraph is about the whole video


def test_didemo_video_names(tmp_path, clip_bytes, ann):
    link(tmp_path, "val_data.json", ann.root / DIDEMO_JSON)
    videos = tmp_path / "videos"
    # AWS download script naming, the exact Flickr name, and a re-encoded copy under a new extension.
    put_videos(videos, [M4V + ".mp4", MPG, AVI[: -len(".avi")] + ".mp4"], clip_bytes)
    paths = {item.video_id: item.path for item in load_split("didemo", tmp_path, "val")}
    assert paths == {M4V: videos / (M4V + ".mp4"), MPG: videos / MPG,
                     AVI: videos / "65430553@N08_7599657594_57ef62657c.mp4"}
    (videos / MPG).unlink()
    assert load_split("didemo", tmp_path, "val")[1].path == videos / MPG  # missing: reported under its json name


def test_didemo_errors(tmp_path, ann):
    with pytest.raises(DatasetError, match=r"train_data\.json: DiDeMo annotation json not found"):
        load_split("didemo", tmp_path, "train")
    records = json.loads((ann.root / DIDEMO_JSON).read_text(encoding="utf-8"))
    del records[5]["video"]
    (tmp_path / "test_data.json").write_text(json.dumps(records))
    with pytest.raises(DatasetError, match=r"test_data\.json: record 5 \(annotation_id 1414\): missing .*'video'"):
        load_split("didemo", tmp_path, "test")
    (tmp_path / "test_data.json").write_text("[{")
    with pytest.raises(DatasetError, match=r"test_data\.json: DiDeMo annotation json is not valid JSON"):
        load_split("didemo", tmp_path, "test")


# --- ActivityNet Captions -----------------------------------------------------------------------------------------

def _uncaptioned_ids(ANET: Path) -> list[str]:
    """Real val ids from val_ids.head10.json; none of them is in the 4-video excerpt of val_1.json."""
    ids = json.loads((ANET / "val_ids.head10.json").read_text(encoding="utf-8"))[:3]
    excerpt = json.loads((ANET / "val_1.excerpt4.json").read_text(encoding="utf-8"))
    assert not set(ids) & set(excerpt)
    return ids


def test_activitynet_paragraphs_prefix_both_ways_and_uncaptioned_ids(tmp_path, clip_bytes, ann):
    ANET, ids = ann.root / "activitynet", ann.anet_ids
    link(tmp_path, "val_1.json", ANET / "val_1.excerpt4.json")
    missing = _uncaptioned_ids(ANET)
    # Ids with and without "v_", and ids without captions interleaved (as in the real 4926-id val_ids.json).
    listed = [ids[0], missing[0], ids[1][2:], ids[2][2:], missing[1], ids[3], missing[2][2:]]
    (tmp_path / "val_ids.json").write_text(json.dumps(listed))
    videos = tmp_path / "videos"
    put_videos(videos, [f"{ids[0]}.mp4", f"{ids[1][2:]}.mp4", f"{ids[2][2:]}.mkv"], clip_bytes)
    messages, warn = collect()
    items = load_split("activitynet", tmp_path, "val", warn=warn)

    assert [item.video_id for item in items] == list(ids)  # named by the caption json's key
    assert len(messages) == 1 and "3 of 7 ids" in messages[0] and "have no captions" in messages[0]
    assert all(i in messages[0] for i in [missing[0], missing[1], missing[2][2:]])
    assert items[0].captions == (ann.anet_first_caption,)
    excerpt = json.loads((ANET / "val_1.excerpt4.json").read_text(encoding="utf-8"))
    for item in items:
        sentences = excerpt[item.video_id]["sentences"]
        assert item.captions == (" ".join(s.strip() for s in sentences),)
        assert item.extra["duration"] == excerpt[item.video_id]["duration"]
    assert any(s.startswith(" ") for s in excerpt[ids[1]]["sentences"])  # the case being tested
    assert [item.path for item in items] == [videos / f"{ids[0]}.mp4", videos / f"{ids[1][2:]}.mp4",
                                             videos / f"{ids[2][2:]}.mkv", videos / f"{ids[3]}.mp4"]


def test_activitynet_caption_keys_without_prefix(tmp_path, ann):
    ids = list(ann.anet_ids)
    excerpt = json.loads((ann.root / "activitynet" / "val_1.excerpt4.json").read_text(encoding="utf-8"))
    (tmp_path / "train.json").write_text(json.dumps({k[2:]: v for k, v in excerpt.items()}))
    (tmp_path / "train_ids.json").write_text(json.dumps(ids + [ids[0][2:]]))  # one repeated
    messages, warn = collect()
    items = load_split("activitynet", tmp_path, "train", warn=warn)
    assert [item.video_id for item in items] == [i[2:] for i in ids]
    assert len(messages) == 1 and "1 of 5 ids are repeated" in messages[0]
    assert items[0].path == tmp_path / "videos" / f"{ids[0][2:]}.mp4"


def test_activitynet_errors(tmp_path, ann):
    ANET = ann.root / "activitynet"
    with pytest.raises(DatasetError, match=r"val_ids\.json: ActivityNet ids file not found"):
        load_split("activitynet", tmp_path, "val")
    link(tmp_path, "val_ids.json", ANET / "val_ids.head10.json")
    link(tmp_path, "val_1.json", ANET / "val_1.excerpt4.json")
    messages, warn = collect()
    with pytest.raises(DatasetError, match="none of its ids has captions"):
        load_split("activitynet", tmp_path, "val", warn=warn)
    assert "10 of 10 ids" in messages[0]
    (tmp_path / "train.json").write_text(json.dumps({"v_a": {"duration": 1.0, "sentences": "not a list"}}))
    (tmp_path / "train_ids.json").write_text(json.dumps(["v_a"]))
    with pytest.raises(DatasetError, match=r"train\.json: entry 'v_a' is malformed"):
        load_split("activitynet", tmp_path, "train")
    (tmp_path / "train_ids.json").write_text(json.dumps(["v_a", 7]))
    with pytest.raises(DatasetError, match=r"train_ids\.json: entry 1 is not a video id"):
        load_split("activitynet", tmp_path, "train")


# --- MSVD ---------------------------------------------------------------------------------------------------------

def _msvd_root(MSVD: Path, tmp_path: Path, cover: int | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """Real test_list.txt; captions_msvd.json = the real 3-clip excerpt plus stand-in captions for the first
    `cover` test clips (all by default), 21 to 81 each as in the real test split."""
    link(tmp_path, "test_list.txt", MSVD / "test_list.txt")
    test_ids = [line for line in (MSVD / "test_list.txt").read_text(encoding="utf-8").split("\n") if line]
    captions = json.loads((MSVD / "captions_msvd.excerpt3.json").read_text(encoding="utf-8"))
    rng = random.Random(0)
    for clip_id in test_ids[:cover]:
        captions[clip_id] = [f"{clip_id} caption {k}" for k in range(rng.randint(21, 81))]
    (tmp_path / "captions_msvd.json").write_text(json.dumps(captions))
    return test_ids, captions


def test_msvd_test_list_yields_its_670_clips_with_all_captions(tmp_path, ann):
    test_ids, captions = _msvd_root(ann.root / "msvd", tmp_path)
    items = load_split("msvd", tmp_path, "test", warn=pytest.fail)
    assert len(test_ids) == 670 and [item.video_id for item in items] == test_ids
    assert all(item.captions == tuple(captions[item.video_id]) for item in items)
    assert items[0].path == tmp_path / "videos" / f"{ann.msvd_first_test_id}.avi"


def test_msvd_excerpt_clips_carry_every_caption_in_order(tmp_path, clip_bytes, ann):
    MSVD, ids = ann.root / "msvd", ann.msvd_excerpt_ids
    _msvd_root(MSVD, tmp_path, cover=0)
    excerpt = json.loads((MSVD / "captions_msvd.excerpt3.json").read_text(encoding="utf-8"))
    (tmp_path / "val_list.txt").write_text("\n".join(excerpt) + "\n\n")
    put_videos(tmp_path / "videos", [f"{ids[0]}.avi", f"{ids[1]}.mp4"], clip_bytes)
    items = load_split("msvd", tmp_path, "val")
    assert [item.video_id for item in items] == list(excerpt)
    assert [len(item.captions) for item in items] == [29, 42, 32]
    assert all(item.captions == tuple(excerpt[item.video_id]) for item in items)
    assert [item.path.name for item in items] == [f"{ids[0]}.avi", f"{ids[1]}.mp4", f"{ids[2]}.avi"]


def test_msvd_clips_without_captions_are_warned_and_counted(tmp_path, ann):
    test_ids, _ = _msvd_root(ann.root / "msvd", tmp_path, cover=667)
    messages, warn = collect()
    items = load_split("msvd", tmp_path, "test", warn=warn)
    assert len(items) == 667
    assert len(messages) == 1 and "3 of 670 ids" in messages[0] and "have no captions" in messages[0]
    assert all(clip_id in messages[0] for clip_id in test_ids[667:])


def test_msvd_errors(tmp_path, ann):
    MSVD = ann.root / "msvd"
    with pytest.raises(DatasetError, match=r"train_list\.txt: MSVD split list not found"):
        load_split("msvd", tmp_path, "train")
    link(tmp_path, "test_list.txt", MSVD / "test_list.txt")
    link(tmp_path, "captions_msvd.json", MSVD / "captions_msvd.excerpt3.json")
    messages, warn = collect()
    with pytest.raises(DatasetError, match="none of its clips has captions"):  # excerpt clips are not test clips
        load_split("msvd", tmp_path, "test", warn=warn)
    assert "670 of 670 ids" in messages[0]
    (tmp_path / "val_list.txt").write_text("clip_a\nclip b\n")
    with pytest.raises(DatasetError, match=r"val_list\.txt:2: malformed id"):
        load_split("msvd", tmp_path, "val")
    (tmp_path / "bad.json").write_text(json.dumps({"clip_a": "one caption, not a list"}))
    (tmp_path / "val_list.txt").write_text("clip_a\n")
    with pytest.raises(DatasetError, match=r"bad\.json: entry 'clip_a' \(listed at .*val_list\.txt:1\) is malformed"):
        load_split("msvd", tmp_path, "val", captions_json="bad.json")


# --- check_videos and decoding ------------------------------------------------------------------------------------

def test_check_videos_missing_is_fatal_or_skipped_and_counted(tmp_path, clip_bytes, ann):
    link(tmp_path, "test_data.json", ann.root / DIDEMO_JSON)
    put_videos(tmp_path / "videos", [M4V, AVI], clip_bytes)
    items = load_split("didemo", tmp_path, "test")
    with pytest.raises(DatasetError) as err:
        check_videos(items, skip_missing=False)
    message = str(err.value)
    assert "1 of 3 videos are missing" in message and MPG in message and str(tmp_path / "videos" / MPG) in message
    messages, warn = collect()
    kept = check_videos(items, skip_missing=True, warn=warn)
    assert [item.video_id for item in kept] == [M4V, AVI]
    assert len(messages) == 1 and "1 of 3 videos are missing" in messages[0] and "skipped" in messages[0]


def test_generated_videos_decode_through_decode_clips(tmp_path, clip_bytes, ann):
    pytest.importorskip("torch")
    from hbci.data import decode_clips

    link(tmp_path, "MSRVTT_JSFUSION_test.csv", ann.root / "msrvtt" / "MSRVTT_JSFUSION_test.csv")
    put_videos(tmp_path / "videos", ["video9770.mp4", "video9771.webm"], clip_bytes)
    items: list[VideoItem] = check_videos(load_split("msrvtt", tmp_path, "test-1k"), skip_missing=True,
                                          warn=lambda _: None)
    assert [item.path.name for item in items] == ["video9770.mp4", "video9771.webm"]
    clips = decode_clips(items, num_frames=4, image_size=32, workers=1, progress=False, warn=pytest.fail)
    assert clips.frames.shape == (2, 4, 32, 32, 3) and clips.frames.dtype == np.uint8
    assert clips.masks.shape == (2, 4) and clips.masks.all()
    brightness = clips.frames.reshape(2, 4, -1).mean(axis=2)
    assert (np.diff(brightness, axis=1) > 10).all()  # uniformly sampled frames, in time order
    texts, owners = clips.captions()
    assert texts == [items[0].captions[0], items[1].captions[0]] and owners.tolist() == [0, 1]
