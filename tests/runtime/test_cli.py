"""Tests for runtime/cli.py (`hbci-run`) in subprocesses: exit codes, never a traceback (every media file included:
ours in tests/data/media and the external ones where present), a missing camera within 2 s, signals drain, no torch anywhere in the runtime path, the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from material import DATA_MEDIA, EXTERNAL_MEDIA, EXTERNAL_REASON, MEDIA_FACTS, external_media

from hbci.runtime.cli import EXIT_CODES

MEDIA_FILES = [pytest.param(DATA_MEDIA / name, id=f"data-{name}") for name in sorted(MEDIA_FACTS)]
MEDIA_FILES += [pytest.param(EXTERNAL_MEDIA / name, id=f"external-{name}") for name in external_media()] or [
    pytest.param(None, marks=pytest.mark.skip(reason=EXTERNAL_REASON), id="external")]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def hbci_run(*args, timeout=120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hbci.runtime.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env or ENV)


def threshold_args(bundle: Path) -> list[str]:
    """A random test bundle has no calibrated thresholds: give one (any value exercises the same path)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    return [] if (manifest.get("score_stats") or {}).get("threshold") else ["--threshold", "0.5"]


def events_of(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("path", MEDIA_FILES)
def test_every_media_file_runs_cleanly(runtime_bundle, path):
    result = hbci_run("--bundle", runtime_bundle, "--video", path, "--query", "a person cooks",
                      "--query", "a man cleans a swimming pool", "--stride", "1", *threshold_args(runtime_bundle))
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 4), result.stderr[-2000:]
    if result.returncode == 0:
        assert "summary:" in result.stderr
        assert all(e["bundle_id"] and e["event"] in ("start", "end") for e in events_of(result))
    else:
        assert result.stderr.count("hbci-run: error:") == 1


def test_missing_camera_exits_3_within_two_seconds(runtime_bundle):
    start = time.monotonic()
    result = hbci_run("--bundle", runtime_bundle, "--camera", "9", "--query", "a person", timeout=30)
    elapsed = time.monotonic() - start
    assert result.returncode == 3, result.stderr
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    assert len(result.stderr.strip().splitlines()) == 1 and "camera 9" in result.stderr
    assert "Traceback" not in result.stderr and "WARN" not in result.stderr


@pytest.mark.parametrize("args, code, message", [
    ((), 2, "give a source"),
    (("--video", "{video}"), 2, "at least one --query"),
    (("--video", "{video}", "--query", "  "), 2, "empty"),
    (("--video", "{video}", "--query-file", "{missing}"), 2, "cannot be read"),
    (("--video", "{video}", "--query", "x", "--threshold", "0.2", "--threshold-off", "0.5"), 2, "must not exceed"),
    (("--video", "{video}", "--query", "x", "--smoothing", "1.5"), 2, "smoothing"),
    (("--video", "{video}", "--query", "x", "--bundle", "{tmp}"), 2, "not a model bundle"),
    (("--video", "{video}", "--query", "x", "--precision", "int8"), 2, "no int8 graphs"),
    (("--video", "{missing}", "--query", "x"), 4, "file not found"),
    (("--video", "{junk}", "--query", "x"), 4, "cannot be opened as a video"),
    (("--url", "ftp://host/x", "--query", "x"), 2, "not a stream URL"),
    (("--url", "rtsp://127.0.0.1:9/x", "--query", "x"), 3, "rtsp://127.0.0.1:9/x"),
    (("--video", "{video}", "--query", "x", "--show"), 5, "--show"),
    (("--video", "{video}", "--query", "x", "--save-clips", "{junk}"), 5, "--save-clips"),
    (("--demo", "--video", "{video}"), 2, "--demo brings its own stream"),
    (("--video", "{video}", "--camera", "0"), 2, "not allowed with"),
])
def test_documented_exit_codes(runtime_bundle, stream_video, tmp_path, args, code, message):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 50)
    values = {"video": stream_video[0], "missing": tmp_path / "missing.mp4", "tmp": tmp_path, "junk": junk}
    args = [a.format(**values) for a in args]
    if "--bundle" not in args:
        args = ["--bundle", str(runtime_bundle), *args]
    env = {k: v for k, v in ENV.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = hbci_run(*threshold_args(runtime_bundle), *args, env=env)  # later flags win
    assert result.returncode == code, result.stderr
    assert code in EXIT_CODES
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_events_are_json_lines_and_clips_are_saved(runtime_bundle, stream_video, tmp_path):
    path, _ = stream_video
    clips = tmp_path / "clips"
    # A threshold every window passes: one event per query, spanning the stream.
    result = hbci_run("--bundle", runtime_bundle, "--video", path, "--query", "a red circle moves left",
                      "--threshold", "-10", "--save-clips", clips)
    assert result.returncode == 0, result.stderr
    events = events_of(result)
    assert [e["event"] for e in events] == ["start", "end"]
    start, end = events
    for key in ("time", "source", "query", "score", "window_start", "window_end", "bundle_id", "id", "clip"):
        assert key in start and key in end
    assert end["reason"] == "stream_end" and end["window_start"] == 0.0 and end["window_end"] == pytest.approx(12.875)
    saved = Path(end["clip"])
    assert saved.is_file() and saved.parent == clips and not list(clips.glob(".*partial*"))
    cap = cv2.VideoCapture(str(saved))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 104
    assert "back end" in result.stderr  # the back end in use is logged once
    assert result.stderr.count("back end") == 1


def test_contrast_gate_from_the_command_line(runtime_bundle, stream_video):
    """--contrast: starts carry the best opposite's score, below the query's own; a query without opposites is
    not gated (contrast_score null), so with a threshold every window passes it alerts at the first window."""
    path, _ = stream_video
    result = hbci_run("--bundle", runtime_bundle, "--video", path, "--query", "a red circle moves left, then a blue "
                      "square grows", "--query", "a dog barks", "--threshold", "-10", "--contrast")
    assert result.returncode == 0, result.stderr
    starts = [e for e in events_of(result) if e["event"] == "start"]
    plain = [e for e in starts if e["query"] == "a dog barks"]
    assert len(plain) == 1 and plain[0]["contrast_score"] is None and plain[0]["window_start"] == 0.0
    assert plain[0]["order_score"] is None  # one event: no order check
    gated = [e for e in starts if e["query"] != "a dog barks"]
    assert gated and all(e["contrast_score"] < e["raw_score"] for e in gated)
    assert all(e["order_score"] > 0 for e in gated)  # two ordered events: the halves agreed where it started


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_drain_and_exit_with_the_documented_code(runtime_bundle, stream_video, signum, code):
    path, _ = stream_video
    proc = subprocess.Popen([sys.executable, "-m", "hbci.runtime.cli", "--bundle", str(runtime_bundle), "--video",
                             str(path), "--realtime", "--query", "anything", "--threshold", "-10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    first = proc.stdout.readline()  # the first event: monitoring is under way
    assert json.loads(first)["event"] == "start"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "summary:" in err
    last = json.loads(out.splitlines()[-1])
    assert last["event"] == "end" and last["reason"] == "stopped"


def test_the_runtime_never_imports_torch(runtime_bundle, stream_video):
    """Load a bundle, encode, score, monitor a file through the CLI and the API: torch never appears."""
    path, segments = stream_video
    code = f"""
import sys
from hbci.runtime.retriever import Retriever
from hbci.runtime.monitor import Monitor
from hbci.runtime.sources import open_source
from hbci.runtime.cli import main
from hbci.runtime.bundle import load_bundle
import hbci.synth, hbci.runtime.demo
bundle = {str(runtime_bundle)!r}
r = Retriever.load(bundle, precision=load_bundle(bundle).precisions[0])
s = r.score(r.encode_text(["a red circle moves left"]), r.encode_video({str(path)!r}))
m = Monitor(r, ["a red circle moves left"], threshold_on=0.0, contrast=True)
with open_source("file", {str(path)!r}) as src:
    list(m.run(src))
rc = main(["--bundle", bundle, "--video", {str(path)!r}, "--query", "x", "--threshold", "0", "--log-level", "error"])
bad = [m for m in ("torch", "open_clip", "tensorrt", "hbci.model", "hbci.data", "hbci.train") if m in sys.modules]
print("BAD", bad, "RC", rc, file=sys.stderr)
sys.exit(1 if bad or rc else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BAD [] RC 0" in result.stderr


def test_synth_imports_without_torch():
    code = "import sys, hbci.synth; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], env=ENV).returncode == 0


def test_query_files_skip_blank_lines_and_comments(runtime_bundle, stream_video, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text("# standing queries\n\na red circle moves left\n  a blue square grows  \n", encoding="utf-8")
    result = hbci_run("--bundle", runtime_bundle, "--video", stream_video[0], "--query-file", queries,
                      "--query", "a green triangle appears", "--threshold", "-10", "--stride", "1")
    assert result.returncode == 0, result.stderr
    started = [e["query"] for e in events_of(result) if e["event"] == "start"]
    assert started == ["a green triangle appears", "a red circle moves left", "a blue square grows"]  # --query first
    assert "for 3 queries" in result.stderr
