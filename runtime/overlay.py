"""The `--show` window: the newest frame with each query's smoothed score, threshold and alert state drawn on it."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from hbci.runtime.errors import OutputError

__all__ = ["Display"]

_MIN_SIDE = 480  # small sources (the 64 px synthetic demo) are enlarged to be readable


class Display:
    """An OpenCV window. Raises OutputError at construction when no window can be shown."""

    def __init__(self, title: str = "hbci-run"):
        self.title = title
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise OutputError("--show needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set")
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise OutputError("--show needs an OpenCV build with GUI support (pip install opencv-python rather "
                              f"than opencv-python-headless): {str(exc).strip().splitlines()[-1]}") from None

    def show(self, frame, monitor) -> bool:
        """Draw and show; False once the user pressed q or Esc."""
        image = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        h, w = image.shape[:2]
        if min(h, w) < _MIN_SIDE:
            scale = _MIN_SIDE / min(h, w)
            image = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_NEAREST)
        y = 22
        cv2.putText(image, f"t={frame.time:7.2f}s", (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1,
                    cv2.LINE_AA)
        for query, score, active in zip(monitor.queries, monitor.scores, monitor.active):
            y += 22
            colour = (40, 40, 255) if active is not None else (200, 200, 200)
            value = "  --  " if np.isnan(score) else f"{score:+.3f}"
            label = f"{'ALERT ' if active is not None else ''}{value} {query}"
            cv2.putText(image, label[:80], (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
        cv2.imshow(self.title, image)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass
