"""Tests for runtime/pipeline.py: a pipeline gives the monitor's events to its sinks in order, standing queries are
added and removed from another thread while it runs, drain ends open events with reason "stopped" and closes
sinks and source, a failing source is kept in `error` and `status`, a SourceSpec pipeline runs again."""

from __future__ import annotations

import io
import json
import queue
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from hbci.runtime.errors import ConfigError, SourceError
from hbci.runtime.monitor import Monitor
from hbci.runtime.pipeline import JsonLinesSink, MonitorSettings, Pipeline, RecentEvents, Sink, SourceSpec
from hbci.runtime.sources import Frame, SourceStats, open_source

FPS = 8.0


class ScriptedRetriever:
    """Scores by query text: window w of query q scores script[q][w] (0 past the script's end)."""

    def __init__(self, script: dict[str, list[float]]):
        self.script = script
        self.bundle = SimpleNamespace(num_frames=4, image_size=8, thresholds=None, gallery_path=None)
        self.bundle_id = "scripted"
        self.encoded_texts: list[str] = []
        self._windows = 0

    def encode_text(self, texts):
        self.encoded_texts += list(texts)
        return {"text": np.array(texts, dtype=object)}

    def encode_video(self, frames, mask):
        first, self._windows = self._windows, self._windows + len(frames)
        return {"w": np.arange(first, self._windows)}

    def score(self, text, video):
        def value(q, w):
            row = self.script.get(q, [])
            return row[w] if w < len(row) else 0.0

        return np.array([[value(q, w) for w in video["w"]] for q in text["text"]], np.float32)


class SteppedSource:
    """A file-like source whose frames the test hands over one second (8 frames) at a time."""

    def __init__(self):
        self.name, self.kind, self.live, self.realtime, self.fps = "stepped", "file", False, False, FPS
        self.stats = SourceStats()
        self._queue: queue.Queue = queue.Queue()
        self._next = 0
        self.closed = False

    def second(self) -> None:
        for _ in range(int(FPS)):
            i = self._next
            self._queue.put(Frame(i, i / FPS, np.full((16, 16, 3), i % 256, np.uint8), float(i)))
            self._next += 1

    def end(self) -> None:
        self._queue.put(None)

    def __iter__(self):
        while (frame := self._queue.get()) is not None:
            yield frame

    def pending(self) -> int:
        return self._queue.qsize()

    def interrupt(self) -> None:
        self._queue.put(None)

    def close(self) -> None:
        self.closed = True


class Recorder(Sink):
    """Records what a sink is given, and announces every scored window."""

    def __init__(self):
        self.calls: list[str] = []
        self.events: list[dict] = []
        self.windows: queue.Queue = queue.Queue()

    def start(self, pipeline):
        self.calls.append("start")

    def frame(self, frame):
        if "frame" not in self.calls:
            self.calls.append("frame")

    def window(self, window):
        self.windows.put(window.index)

    def event(self, event):
        self.events.append(event)

    def close(self):
        self.calls.append("close")


def settings(**overrides) -> MonitorSettings:
    return MonitorSettings(**{"window": 1.0, "stride": 1.0, "threshold_on": 0.5, "threshold_off": 0.5, "batch": 1}
                           | overrides)


def step(source: SteppedSource, recorder: Recorder, window: int) -> None:
    """Hand over one more second and wait until its window was scored and its events given to the sinks."""
    source.second()
    assert recorder.windows.get(timeout=30) == window


def test_queries_change_while_the_pipeline_runs_in_its_thread():
    retriever = ScriptedRetriever({"a": [0.9] * 20, "b": [0.0, 0.0, 0.9, 0.9, 0.9, 0.9, 0.0, 0.0]})
    source, recorder = SteppedSource(), Recorder()
    pipeline = Pipeline(source, retriever, ["a"], settings=settings(), sinks=[recorder], name="cam1")
    pipeline.start()
    # Window k (second k) completes with the first frame of second k + 1.
    source.second()
    step(source, recorder, 0)
    b = pipeline.add_query("b")  # from another thread, while running; scored from the next window on
    step(source, recorder, 1)
    step(source, recorder, 2)
    step(source, recorder, 3)
    pipeline.remove_query(0)  # "a" has an open event: it ends with reason "removed"
    step(source, recorder, 4)
    assert pipeline.queries() == [(b, "b")] and pipeline.running
    status = pipeline.status()
    # Window 4 completed with the first frame of second 5; the rest of second 5 may still be on its way.
    assert status["name"] == "cam1" and 5 * 8 < status["frames"] <= 6 * 8 and status["windows"] == 5
    assert status["last_frame_age_s"] >= 0 and status["frames_per_s"] > 0 and status["error"] is None
    assert pipeline.drain(timeout=30)
    events = [(e["event"], e["query"], e.get("reason")) for e in recorder.events]
    assert events == [("start", "a", None), ("start", "b", None), ("end", "a", "removed"), ("end", "b", "stopped")]
    assert recorder.events[1]["time"] == 2.875 and recorder.events[1]["query_index"] == b == 1
    assert recorder.calls == ["start", "frame", "close"] and source.closed
    assert retriever.encoded_texts == ["a", "b"]  # each query encoded once, when given
    assert pipeline.error is None and not pipeline.running
    with pytest.raises(KeyError):
        pipeline.remove_query(0)


def test_a_pipeline_may_start_without_queries():
    retriever = ScriptedRetriever({"late": [0.9] * 10})
    source, recorder = SteppedSource(), Recorder()
    pipeline = Pipeline(source, retriever, [], settings=settings(), sinks=[recorder], require_queries=False)
    pipeline.start()
    source.second()
    step(source, recorder, 0)
    pipeline.add_query("late")
    step(source, recorder, 1)
    source.end()
    assert pipeline.join(timeout=30)
    assert [(e["event"], e["reason"] if "reason" in e else None) for e in recorder.events] == [
        ("start", None), ("end", "stream_end")]


def test_a_lost_source_is_kept_and_reported():
    class LostSource(SteppedSource):
        def __iter__(self):
            yield from super().__iter__()
            raise SourceError("camera 9 was lost and did not come back")

    source, recorder = LostSource(), Recorder()
    pipeline = Pipeline(source, ScriptedRetriever({}), ["q"], settings=settings(), sinks=[recorder])
    pipeline.start()
    source.second()
    source.end()
    assert pipeline.join(timeout=30)
    assert isinstance(pipeline.error, SourceError) and "lost" in pipeline.status()["error"]
    assert recorder.calls[-1] == "close" and source.closed and not pipeline.status()["running"]
    with pytest.raises(ConfigError, match="has been used"):
        pipeline.run()  # an opened source runs once; a SourceSpec opens again


def test_the_pipeline_gives_the_monitors_events_and_runs_a_spec_again(runtime_bundle, stream_video):
    from hbci.runtime.retriever import Retriever

    path, _ = stream_video
    retriever = Retriever.load(runtime_bundle, backend="onnxruntime-cpu", precision="auto")
    every = MonitorSettings(stride=1.0, smoothing=0.5, threshold_on=-10.0)  # both alert from the first window on
    with open_source("file", path) as source:
        direct = list(Monitor(retriever, ["a red circle", "a blue square"], stride=1.0, smoothing=0.5,
                              threshold_on=-10.0).run(source))
    stdout, recent = io.StringIO(), RecentEvents()
    pipeline = Pipeline(SourceSpec("file", str(path)), retriever, ["a red circle", "a blue square"],
                        settings=every, sinks=[recent, JsonLinesSink(stdout)])
    first = pipeline.run()
    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert recent.events() == lines == direct and direct
    assert first["frames"] == 13 * 8 and first["windows"] == 11
    pipeline.run()  # a SourceSpec opens the stream again; queries stay, smoothing starts over, event ids go on
    again = recent.events()[len(direct):]
    assert [e["id"] for e in again] == [e["id"] + 2 for e in direct]
    assert [e | {"id": 0} for e in again] == [e | {"id": 0} for e in direct]
    status = pipeline.status()
    assert status["source"]["kind"] == "file" and status["source"]["target"] == str(path)
    assert status["backend"].startswith("onnxruntime") and status["bundle_id"] == retriever.bundle_id


def test_stop_before_the_run_ends_it_at_once(runtime_bundle, stream_video):
    from hbci.runtime.retriever import Retriever

    path, _ = stream_video
    stop = threading.Event()
    stop.set()  # a signal came while the model was loading
    recorder = Recorder()
    pipeline = Pipeline(SourceSpec("file", str(path)), Retriever.load(runtime_bundle, backend="onnxruntime-cpu", precision="auto"),
                        ["q"], settings=MonitorSettings(threshold_on=-10.0), sinks=[recorder], stop=stop)
    summary = pipeline.run()
    assert summary["frames"] <= 8 and recorder.calls[-1] == "close" and pipeline.stopping
