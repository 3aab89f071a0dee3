"""The runtime CLIP tokenizer: id-exact with golden ids and with open_clip, torch-free at import.

Golden ids come from two places, each a parameter of the `golden` fixture: computed here by open_clip's tokenizer
(the train extra) on our strings (tests/data/tokenizer_strings.json and the sentences and paragraphs of
tests/data/annotations), and the external file of 1064 strings tokenized by OpenAI's reference tokenizer, where
the external material folder is present."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from material import DATA, EXTERNAL, EXTERNAL_REASON
from tokenizers import Tokenizer

from hbci.export.tokenizer_json import build_tokenizer_json
from hbci.runtime.errors import BundleError, QueryError
from hbci.runtime.tokenizer import ClipTokenizer, clean_text

GOLDEN = EXTERNAL / "golden" / "clip_token_ids.json"
SOT, EOT = 49406, 49407


@pytest.fixture(scope="module")
def json_path(tmp_path_factory) -> Path:
    return build_tokenizer_json(tmp_path_factory.mktemp("bundle") / "tokenizer.json")


def _our_strings() -> list[str]:
    """Edge strings, then sentences (leading spaces kept) and joined paragraphs from tests/data/annotations."""
    import csv

    texts = json.loads((DATA / "tokenizer_strings.json").read_text(encoding="utf-8"))["strings"]
    with open(DATA / "annotations/msrvtt/MSRVTT_JSFUSION_test.csv", newline="", encoding="utf-8") as fh:
        sentences = [row["sentence"] for row in csv.DictReader(fh)]
    texts += sentences + [" ".join(sentences[i:i + 5]) for i in range(0, len(sentences), 5)]  # CLIP4Clip paragraphs
    anet = json.loads((DATA / "annotations/activitynet/val_1.excerpt4.json").read_text(encoding="utf-8"))
    texts += [s for video in anet.values() for s in video["sentences"]]
    texts += [" ".join(s.strip() for s in video["sentences"]) for video in anet.values()]
    didemo = json.loads((DATA / "annotations/didemo/test_data.excerpt3videos.json").read_text(encoding="utf-8"))
    texts += [r["description"] for r in didemo]
    for video in dict.fromkeys(r["video"] for r in didemo):
        texts.append(" ".join(r["description"] for r in didemo if r["video"] == video))
    return texts


def _open_clip_golden(open_clip) -> list[dict]:
    """Golden cases in the external file's form, computed by open_clip's tokenizer."""
    reference = open_clip.tokenizer.SimpleTokenizer()
    texts = _our_strings()
    padded = open_clip.tokenize(texts, context_length=77).numpy()
    cases = []
    for text, row in zip(texts, padded):
        ids = [reference.sot_token_id] + reference.encode(text) + [reference.eot_token_id]
        case = {"text": text, "ids": ids}
        if len(ids) > 77:
            case["ids_truncated_77"] = ids[:76] + [EOT]
        assert row.tolist() == _padded(case.get("ids_truncated_77", ids), 77)  # open_clip agrees with itself
        cases.append(case)
    return cases


@pytest.fixture(scope="module", params=["open_clip", "external"])
def golden(request) -> list[dict]:
    if request.param == "open_clip":
        return _open_clip_golden(pytest.importorskip("open_clip", reason="open_clip (the train extra) computes "
                                                                         "the golden ids"))
    if not GOLDEN.is_file():
        pytest.skip(EXTERNAL_REASON)
    data = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert data["sot"] == SOT and data["eot"] == EOT and data["context_length"] == 77
    return data["cases"]


@pytest.fixture(scope="module")
def open_clip_module():
    return pytest.importorskip("open_clip")


def _padded(ids: list[int], length: int) -> list[int]:
    return ids + [0] * (length - len(ids))


def _fuzz_strings(n: int, seed: int) -> list[str]:
    """Random strings over the characters and fragments where a tokenizer port is most likely to slip."""
    pool = list("abcXYZ '.,!?-_<>/&;#0123456789\t\n ")
    pool += list("éñüßİıſǅﬀ’“”–—…•½²日本🙂\u0301\u200b\u00a0\u3000\x1c\x85\ufeff")
    pool += ["&amp;", "&lt;", "&#39;", "<end_of_text>", "<start_of_text>", "<ſtart_of_text>", "'s", "'ll"]
    pool += ["Ã©", "â€™", " the ", " running "]
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 30))) for _ in range(n)]


# --- the JSON file -------------------------------------------------------------------------------------------


def test_json_vocab_and_special_ids(json_path):
    tok = Tokenizer.from_file(str(json_path))
    assert tok.get_vocab_size(with_added_tokens=True) == 49408
    assert tok.token_to_id("<start_of_text>") == SOT
    assert tok.token_to_id("<end_of_text>") == EOT
    # Spot checks of open_clip's id order: bytes, bytes + </w>, merges.
    assert tok.token_to_id("!") == 0 and tok.token_to_id("!</w>") == 256 and tok.token_to_id("a</w>") == 320
    spec = json.loads(json_path.read_text(encoding="utf-8"))
    assert spec["normalizer"] is None  # cleaning is done before, in Python, exactly as open_clip does it
    assert spec["model"]["end_of_word_suffix"] == "</w>"


def test_json_alone_matches_golden_on_cleaned_text(json_path, golden):
    tok = Tokenizer.from_file(str(json_path))
    encodings = tok.encode_batch([clean_text(case["text"]) for case in golden])
    mismatched = [case["text"] for case, enc in zip(golden, encodings) if enc.ids != case["ids"]]
    assert mismatched == []
    assert tok.decode(tok.encode("a photo of a cat").ids) == "a photo of a cat"


# --- golden ids (OpenAI CLIP reference tokenizer) ------------------------------------------------------------


def test_all_golden_strings_id_exact_at_77(json_path, golden, request):
    tokenizer = ClipTokenizer.from_file(json_path, context_length=77)
    ids, mask = tokenizer([case["text"] for case in golden])
    assert ids.shape == (len(golden), 77) and ids.dtype == np.int32
    assert mask.shape == (len(golden), 77) and mask.dtype == np.bool_
    mismatched = []
    for row, case in enumerate(golden):
        expected = case.get("ids_truncated_77", case["ids"])
        if ids[row].tolist() != _padded(expected, 77):
            mismatched.append(case["text"])
        assert mask[row].sum() == len(expected)
    assert mismatched == []
    if request.node.callspec.params["golden"] == "external":
        assert len(golden) == 1064
    assert sum("ids_truncated_77" in case for case in golden) >= 1  # the truncation path was exercised


def test_unpadded_encode_equals_golden(json_path, golden):
    tokenizer = ClipTokenizer.from_file(json_path)
    assert tokenizer.encode([case["text"] for case in golden]) == [case["ids"] for case in golden]


# --- open_clip at the bundle's short context length ----------------------------------------------------------


def test_equal_to_open_clip_at_32(json_path, golden, open_clip_module):
    texts = [case["text"] for case in golden]
    ours, mask = ClipTokenizer.from_file(json_path, context_length=32)(texts)
    theirs = open_clip_module.tokenize(texts, context_length=32).numpy()
    np.testing.assert_array_equal(ours, theirs)
    by_model = open_clip_module.get_tokenizer("ViT-B-32", context_length=32)(texts).numpy()
    np.testing.assert_array_equal(ours, by_model)
    truncated = np.array([len(case["ids"]) > 32 for case in golden])
    assert truncated.sum() > 10  # paragraphs and long sentences really are cut at 32
    assert (ours[truncated, -1] == EOT).all() and mask[truncated].all()


def test_fuzz_equal_to_open_clip(json_path, open_clip_module):
    texts = _fuzz_strings(1500, seed=0)
    ours, _ = ClipTokenizer.from_file(json_path, context_length=32)(texts)
    theirs = open_clip_module.tokenize(texts, context_length=32).numpy()
    bad = [texts[i] for i in np.flatnonzero((ours != theirs).any(axis=1))]
    assert bad == []


def test_clean_text_equals_open_clip_cleaning(open_clip_module):
    from open_clip.tokenizer import SimpleTokenizer

    reference = SimpleTokenizer().clean_fn  # the default clean="lower"
    texts = _fuzz_strings(300, seed=1) + ["<b>&amp;amp;</b>", "  WHEEL\n\t and fruit  ", "x\x1cy", "ÃƒÂ©", "İ"]
    assert [clean_text(t) for t in texts] == [reference(t) for t in texts]


@pytest.mark.parametrize(
    "text",
    ["<end_of_text>", "a<start_of_text>b", "x.<end_of_text>", "<<end_of_text>>", "'<end_of_text>", "<ſtart_of_text>"],
)
def test_literal_special_tokens_like_open_clip(json_path, open_clip_module, text):
    # open_clip maps the literal only where its regex scan starts a token; after punctuation it is plain text.
    ours = ClipTokenizer.from_file(json_path, context_length=77).encode([text])[0]
    theirs = open_clip_module.tokenize([text], context_length=77)[0]
    assert _padded(ours, 77) == theirs.tolist()


def test_literal_special_token_examples(json_path):
    tokenizer = ClipTokenizer.from_file(json_path)
    assert tokenizer.encode(["<end_of_text>"]) == [[SOT, EOT, EOT]]
    assert EOT not in tokenizer.encode(["x.<end_of_text>"])[0][1:-1]


# --- mask, padding, truncation -------------------------------------------------------------------------------


def test_mask_comes_from_lengths_not_ids(json_path):
    tokenizer = ClipTokenizer.from_file(json_path, context_length=8)
    ids, mask = tokenizer(["!_", "", "a b c d e f g h i j"])
    # "!_" has the real token id 0 ("!" inside a punctuation run): inside the mask, unlike the padding zeros.
    assert ids[0].tolist() == [SOT, 0, 318, EOT, 0, 0, 0, 0]
    assert mask[0].tolist() == [True, True, True, True, False, False, False, False]
    assert ids[1].tolist() == [SOT, EOT, 0, 0, 0, 0, 0, 0]
    assert mask[1].tolist() == [True, True] + [False] * 6
    # Truncated: first 8 ids kept, the last one overwritten with EOT, mask full.
    assert ids[2].tolist() == [SOT, 320, 321, 322, 323, 324, 325, EOT]
    assert mask[2].all()


def test_mask_is_a_prefix_ending_at_eot(json_path):
    tokenizer = ClipTokenizer.from_file(json_path, context_length=16)
    ids, mask = tokenizer(_fuzz_strings(200, seed=2))
    lengths = mask.sum(axis=1)
    assert (lengths >= 2).all()
    assert (mask == (np.arange(16)[None, :] < lengths[:, None])).all()
    assert (ids[:, 0] == SOT).all()
    assert (ids[np.arange(len(ids)), lengths - 1] == EOT).all()
    assert (ids[~mask] == 0).all()


def test_exact_length_is_not_truncated(json_path):
    tokenizer = ClipTokenizer.from_file(json_path, context_length=5)
    ids, mask = tokenizer(["a b c"])  # SOT a b c EOT: exactly 5
    assert ids.tolist() == [[SOT, 320, 321, 322, EOT]] and mask.all()


def test_attributes_and_single_string(json_path):
    tokenizer = ClipTokenizer.from_file(json_path, context_length=32)
    assert (tokenizer.context_length, tokenizer.sot_id, tokenizer.eot_id) == (32, SOT, EOT)
    assert tokenizer.vocab_size == 49408
    one, _ = tokenizer("a photo of a cat")
    many, _ = tokenizer(["a photo of a cat"])
    np.testing.assert_array_equal(one, many)
    empty_ids, empty_mask = tokenizer([])
    assert empty_ids.shape == (0, 32) and empty_mask.shape == (0, 32)


# --- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["ok", None], [b"bytes"], ("ok", 1.5)])
def test_non_str_input_raises_query_error(json_path, bad):
    tokenizer = ClipTokenizer.from_file(json_path)
    with pytest.raises(QueryError):
        tokenizer(bad)


def test_clean_text_rejects_non_str():
    with pytest.raises(QueryError):
        clean_text(None)  # type: ignore[arg-type]


def test_bad_context_length_and_missing_file(json_path, tmp_path):
    for bad in (0, 1, 7.0, True):
        with pytest.raises(ValueError):
            ClipTokenizer.from_file(json_path, context_length=bad)  # type: ignore[arg-type]
    with pytest.raises(BundleError):
        ClipTokenizer.from_file(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError):
        ClipTokenizer.from_file(broken)


# --- no torch at runtime -----------------------------------------------------------------------------------------


def test_runtime_tokenizer_does_not_import_torch(json_path):
    code = (
        "import sys\n"
        "import hbci.runtime.tokenizer as t\n"
        f"ids, mask = t.ClipTokenizer.from_file({str(json_path)!r}, 77)(['a photo of a cat'])\n"
        "assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407], ids\n"
        "bad = sorted(m for m in ('torch', 'open_clip', 'regex') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
