"""Write open_clip's CLIP BPE tokenizer as a HF `tokenizers` JSON file for the model bundle.

The runtime must tokenize without torch or open_clip, so the bundle carries a `tokenizer.json` that the Rust
`tokenizers` library runs. It is built from the very vocabulary file open_clip ships
(`bpe_simple_vocab_16e6.txt.gz`, read from the installed package, never downloaded) and reproduces
`open_clip.tokenizer.SimpleTokenizer` id for id on text that has already been cleaned (see
`hbci.runtime.tokenizer.clean_text`; the cleaning is Python code, ftfy and html, so it is not in the JSON):

* no normalizer: cleaning (ftfy, HTML unescape, whitespace, lower case) is done before, exactly as open_clip does
  it; a JSON normalizer such as NFC would change strings that open_clip leaves alone;
* pre-tokenizer: CLIP's regex (case-insensitive, as open_clip compiles it) keeps the matches and drops the rest,
  then the byte-level map (CLIP's `bytes_to_unicode`, the same table as GPT-2's) with no prefix space;
* model: BPE with the `</w>` end-of-word suffix, ids in open_clip's order (256 byte symbols, the same with
  `</w>`, one per merge, then `<start_of_text>` 49406 and `<end_of_text>` 49407);
* post-processor: `<start_of_text> ... <end_of_text>`, so the file is usable on its own; truncation and padding
  to the bundle's context length are left to the caller, since open_clip truncates its own way.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

__all__ = [
    "BPE_FILENAME",
    "SOT_TOKEN",
    "EOT_TOKEN",
    "VOCAB_SIZE",
    "CLIP_SPLIT_PATTERN",
    "default_bpe_path",
    "bytes_to_unicode",
    "read_merges",
    "build_vocab",
    "build_tokenizer",
    "build_tokenizer_json",
]

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
VOCAB_SIZE = 49408
# open_clip keeps merge lines 1 .. 49152-256-2 of the file (line 0 is a version header): 48894 merges, so that
# bytes (512 with and without </w>) + merges + 2 specials = 49408 ids.
_N_MERGES = 49152 - 256 - 2

# open_clip's pattern (compiled there with re.IGNORECASE); (?i) keeps the same case folding for `'s` and friends.
CLIP_SPLIT_PATTERN = (
    r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)


def default_bpe_path() -> Path:
    """The BPE vocabulary file shipped inside the installed open_clip package (located without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed; pass bpe_path= to the BPE vocabulary file")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BPE_FILENAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{BPE_FILENAME} not found in the open_clip package at {spec.submodule_search_locations}")


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character map: printable Latin-1 bytes map to themselves, the rest
    (control characters, space, ...) to code points from 256 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    # Insertion order matters to the caller: printable bytes first, then the remapped ones (open_clip's id order).
    return table


def read_merges(bpe_path: str | Path | None = None) -> list[tuple[str, str]]:
    """The merges open_clip uses, in rank order, from the gzipped vocabulary file."""
    path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = []
    for line in lines[1 : _N_MERGES + 1]:
        first, second = line.split()
        merges.append((first, second))
    if len(merges) != _N_MERGES:
        raise ValueError(f"{path}: expected {_N_MERGES} merges, found {len(merges)}")
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id in open_clip's order: bytes, bytes + `</w>`, merged pairs, then the two special tokens."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges] + [SOT_TOKEN, EOT_TOKEN]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        # A duplicate token would silently shift every later id.
        raise ValueError(f"vocabulary has {len(vocab)} distinct tokens, expected {VOCAB_SIZE}")
    return vocab


def build_tokenizer(bpe_path: str | Path | None = None) -> Tokenizer:
    """The `tokenizers.Tokenizer` equivalent of open_clip's SimpleTokenizer (for cleaned text)."""
    merges = read_merges(bpe_path)
    vocab = build_vocab(merges)
    tokenizer = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    # Registered as special tokens so that a literal "<end_of_text>" in the text maps to its id, as in open_clip.
    tokenizer.add_special_tokens([SOT_TOKEN, EOT_TOKEN])
    sot, eot = vocab[SOT_TOKEN], vocab[EOT_TOKEN]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{SOT_TOKEN} $A {EOT_TOKEN}",
        pair=f"{SOT_TOKEN} $A {EOT_TOKEN} $B {EOT_TOKEN}",
        special_tokens=[(SOT_TOKEN, sot), (EOT_TOKEN, eot)],
    )
    # `</w>` -> space first (per token), then bytes back to text.
    tokenizer.decoder = decoders.Sequence([decoders.BPEDecoder(suffix="</w>"), decoders.ByteLevel()])
    return tokenizer


def build_tokenizer_json(path: str | Path, *, bpe_path: str | Path | None = None) -> Path:
    """Write the tokenizer JSON to `path` (parent folders are created) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(bpe_path)
    if tokenizer.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        raise ValueError(f"tokenizer has {tokenizer.get_vocab_size(with_added_tokens=True)} ids, expected {VOCAB_SIZE}")
    tmp = out.with_name(out.name + ".tmp")
    tokenizer.save(str(tmp), pretty=False)
    tmp.replace(out)  # atomic: a bundle never holds a half-written tokenizer
    return out
