"""CLIP text tokenizer for the runtime: id-exact with open_clip's SimpleTokenizer, without torch or open_clip.

Two halves, both needed for parity:

* `clean_text` is open_clip's default ("lower") cleaning, step for step: `ftfy.fix_text`, `html.unescape` twice,
  strip, collapse whitespace with `str.split` (not a regex: `str.split` also splits on a few control characters),
  lower case. It is Python, so it cannot live in the JSON file.
* the bundle's `tokenizer.json` (written by `hbci.export.tokenizer_json`) does the BPE in Rust.

Literal special-token text: open_clip's regex turns the text "<end_of_text>" into the EOT id, but only where its
scan starts a token there; after punctuation ("x.<end_of_text>") the "<" is swallowed by the punctuation run and
the rest is ordinary text. HF's added-token matching would find the literal everywhere, so each text is first cut
into open_clip's pieces with the JSON's own pre-tokenizer, and the pieces are encoded as pre-tokenized words: a
piece that is exactly a special token gets its id, as in open_clip, and nothing else can.

Truncation is open_clip's: keep the first L ids and overwrite the last kept one with EOT. Padding id is 0, which
is also the real token "!", so the mask comes from the lengths.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import ftfy
import numpy as np
from tokenizers import Tokenizer

from hbci.runtime.errors import BundleError, QueryError

__all__ = ["SOT_TOKEN", "EOT_TOKEN", "DEFAULT_CONTEXT_LENGTH", "clean_text", "ClipTokenizer"]

SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
DEFAULT_CONTEXT_LENGTH = 77
PAD_ID = 0


def clean_text(text: str) -> str:
    """open_clip's default text cleaning (SimpleTokenizer with clean="lower"), in the same order."""
    if not isinstance(text, str):
        raise QueryError(f"a text query must be a str, got {type(text).__name__}")
    text = ftfy.fix_text(text)
    # Twice: captions scraped from the web are often escaped twice ("&amp;amp;").
    text = html.unescape(html.unescape(text))
    text = text.strip()
    text = " ".join(text.split()).strip()
    return text.lower()


class ClipTokenizer:
    """Cleans, tokenizes and pads a batch of texts to `context_length` ids, as open_clip's tokenizer does."""

    def __init__(self, tokenizer: Tokenizer, context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
            raise ValueError(f"context_length must be an int >= 2 (room for SOT and EOT), got {context_length!r}")
        sot_id = tokenizer.token_to_id(SOT_TOKEN)
        eot_id = tokenizer.token_to_id(EOT_TOKEN)
        if sot_id is None or eot_id is None or tokenizer.pre_tokenizer is None:
            raise BundleError(f"the tokenizer has no {SOT_TOKEN}/{EOT_TOKEN} tokens or no pre-tokenizer: not a CLIP tokenizer")
        # A JSON may carry its own truncation or padding; ours is applied afterwards, open_clip's way.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self._pre_tokenizer = tokenizer.pre_tokenizer
        self._context_length = context_length
        self._sot_id = int(sot_id)
        self._eot_id = int(eot_id)

    @classmethod
    def from_file(cls, path: str | Path, context_length: int = DEFAULT_CONTEXT_LENGTH) -> ClipTokenizer:
        """Load a `tokenizer.json` (as written by `hbci.export.tokenizer_json.build_tokenizer_json`)."""
        path = Path(path)
        if not path.is_file():
            raise BundleError(f"{path}: tokenizer file not found")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception on malformed JSON
            raise BundleError(f"{path}: not a readable tokenizers JSON ({exc})") from exc
        return cls(tokenizer, context_length)

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def sot_id(self) -> int:
        return self._sot_id

    @property
    def eot_id(self) -> int:
        return self._eot_id

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def _pieces(self, cleaned: str) -> list[str]:
        # open_clip's regex matches, as substrings of the cleaned text (offsets are in characters).
        return [cleaned[start:end] for _, (start, end) in self._pre_tokenizer.pre_tokenize_str(cleaned)]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Unpadded, untruncated ids `[SOT, ..., EOT]` per text (open_clip's `[sot] + encode(text) + [eot]`)."""
        texts = self._check(texts)
        pieces = [self._pieces(clean_text(text)) for text in texts]
        encodings = self._tokenizer.encode_batch(pieces, is_pretokenized=True, add_special_tokens=False)
        return [[self._sot_id, *encoding.ids, self._eot_id] for encoding in encodings]

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids int32 [N, L] (padded with 0) and a bool mask [N, L], True from SOT to EOT inclusive."""
        all_ids = self.encode(texts)
        length = self._context_length
        ids = np.full((len(all_ids), length), PAD_ID, dtype=np.int32)
        mask = np.zeros((len(all_ids), length), dtype=bool)
        for row, seq in enumerate(all_ids):
            if len(seq) > length:
                seq = seq[:length]
                seq[-1] = self._eot_id
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = True
        return ids, mask

    @staticmethod
    def _check(texts: Sequence[str]) -> list[str]:
        # A bare str is one text, as in open_clip; anything else must be a sequence of str.
        if isinstance(texts, str):
            return [texts]
        if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence):
            raise QueryError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise QueryError(f"text {i} must be a str, got {type(text).__name__}")
        return list(texts)
