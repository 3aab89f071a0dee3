"""Helpers the dataset loaders share: option paths, annotation reading with errors that name the file, video lookup.

Kept private: the public surface is each loader, reached through `load_split`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from hbci.runtime.errors import DatasetError

__all__ = ["Warn", "stderr_warn", "option_path", "read_json", "read_id_lines", "find_video", "check_split",
           "report_skipped", "require_items"]

Warn = Callable[[str], None]


def stderr_warn(message: str) -> None:
    print(message, file=sys.stderr)


def option_path(root: Path, value: str | Path) -> Path:
    """A file or folder option: absolute as given, relative to the dataset root otherwise."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    try:
        # utf-8-sig: a byte-order mark (as some editors write) is dropped instead of breaking the parse.
        with path.open(encoding="utf-8-sig") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: {what} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_id_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """One id per line, blank lines ignored; returns (line number, id). An id with inner whitespace is malformed."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    result = []
    with path.open(encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, start=1):
            value = line.strip()
            if not value:
                continue
            if len(value.split()) != 1:
                raise DatasetError(f"{path}:{line_no}: malformed id {value!r} (one id per line expected)")
            result.append((line_no, value))
    return result


def find_video(folder: Path, names: Iterable[str]) -> Path:
    """The first candidate file name that exists in `folder`, else the first candidate.

    Returning a path even when nothing exists keeps missing videos visible: `check_videos` reports them (by id and
    path) instead of the loader dropping them.
    """
    names = list(names)
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return folder / names[0]


def check_split(dataset: str, split: str, known: Sequence[str]) -> None:
    if split not in known:
        raise DatasetError(f"{dataset}: unknown split {split!r}; known: {', '.join(known)}")


def report_skipped(warn: Warn, ids: Sequence[str], total: int, reason: str) -> None:
    """One warning naming how many ids were skipped and why, with the first few ids."""
    if not ids:
        return
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    warn(f"warning: {len(ids)} of {total} ids {reason} and were skipped: {shown}")


def require_items(items: list, message: str) -> list:
    """An empty split is an error (usually annotation files that do not belong together), never an empty list."""
    if not items:
        raise DatasetError(message)
    return items
