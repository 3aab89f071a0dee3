"""Contact sheets: one image of a search's moments, each cell the thumbnail stored at index time for the moment's
best window (its middle sampled frame), with rank, score, file name and times."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hbci.runtime.errors import OutputError

__all__ = ["contact_sheet", "check_sheet_path", "write_contact_sheet"]

_CELL_W, _THUMB_H, _TEXT_H, _COLUMNS = 200, 120, 46, 4
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _clip(text: str, width: int, scale: float) -> str:
    while text and cv2.getTextSize(text, _FONT, scale, 1)[0][0] > width:
        text = "..." + text.removeprefix("...")[1:]
    return text


def contact_sheet(result, thumbnails: list[bytes | None]) -> np.ndarray:
    """A BGR image [H, W, 3] for `result` (a SearchResult) and one JPEG (or None) per moment."""
    moments = result.moments
    columns = max(1, min(_COLUMNS, len(moments)))
    rows = max(1, -(-len(moments) // columns))
    header = 28
    sheet = np.full((header + rows * (_THUMB_H + _TEXT_H), columns * _CELL_W, 3), 255, np.uint8)
    title = _clip(f'"{result.query}"  ({"exact" if result.exact else "two-stage"}, {result.windows} windows)',
                  sheet.shape[1] - 8, 0.5)
    cv2.putText(sheet, title, (4, 19), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (moment, jpeg) in enumerate(zip(moments, thumbnails)):
        x, y = (i % columns) * _CELL_W, header + (i // columns) * (_THUMB_H + _TEXT_H)
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) if jpeg else None
        if image is not None:
            h, w = image.shape[:2]
            scale = min((_CELL_W - 8) / w, (_THUMB_H - 6) / h)
            image = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
            h, w = image.shape[:2]
            top, left = y + 3 + (_THUMB_H - 6 - h) // 2, x + (_CELL_W - w) // 2
            sheet[top:top + h, left:left + w] = image
        else:
            cv2.rectangle(sheet, (x + 4, y + 3), (x + _CELL_W - 4, y + _THUMB_H - 3), (200, 200, 200), -1)
        lines = [f"#{i + 1}  {moment.score:.3f}  {moment.start:.1f}-{moment.end:.1f} s", Path(moment.path).name]
        for j, line in enumerate(lines):
            cv2.putText(sheet, _clip(line, _CELL_W - 8, 0.4), (x + 4, y + _THUMB_H + 16 + 18 * j), _FONT, 0.4,
                        (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def check_sheet_path(path: str | Path) -> Path:
    """OutputError unless `path` names a .png/.jpg file in an existing folder."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise OutputError(f"{path}: a contact sheet is written as .png or .jpg")
    if not path.parent.is_dir():
        raise OutputError(f"{path.parent}: no such folder for the contact sheet")
    return path


def write_contact_sheet(result, thumbnails: list[bytes | None], path: str | Path) -> Path:
    """Render and write the sheet (PNG or JPEG by extension); OutputError if it cannot be written."""
    path = check_sheet_path(path)
    ok, data = cv2.imencode(path.suffix.lower(), contact_sheet(result, thumbnails))
    try:
        if not ok:
            raise OSError("the image could not be encoded")
        path.write_bytes(data.tobytes())
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({getattr(exc, 'strerror', None) or exc})") from None
    return path
