"""hbci-serve end to end: a real process on 127.0.0.1 with a file source, driven over HTTP (httpx): add a query,
receive its event on the SSE stream, remove it, health, metrics, archive search, bad requests, SIGHUP, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import yaml

from tests.runtime.serve.conftest import free_port
from tests.runtime.serve.test_serve_mqtt import MOSQUITTO, Broker, Subscriber

httpx = pytest.importorskip("httpx")

QUERY = "a red circle moves left"


def _start(config_path, env=None):
    return subprocess.Popen([sys.executable, "-m", "hbci.runtime.serve.cli", "--config", str(config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _wait_up(base: str, process, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"hbci-serve exited {process.returncode}: {process.stderr.read()}")
        try:
            health = httpx.get(base + "/healthz", timeout=2).json()
            if any(s["frames"] for s in health["sources"].values()):
                return health
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    pytest.fail("hbci-serve did not come up: " + process.stderr.read())


def _sse(base: str, received: list, stop: threading.Event, ready: threading.Event) -> None:
    with httpx.stream("GET", base + "/events/stream", timeout=httpx.Timeout(60, read=60)) as response:
        ready.set()
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                received.append((kind, json.loads(line[6:])))
            if stop.is_set():
                return


def _collect(sock: socket.socket, datagrams: list) -> None:
    """Read the notify socket as systemd does (a reader that falls behind makes the service drop pings)."""
    while True:
        try:
            datagrams.append(sock.recv(4096).decode())
        except OSError:
            return


@pytest.fixture(scope="module")
def archive_db(short_video, tmp_path_factory, runtime_bundle):
    from hbci.runtime.archive import Archive
    from hbci.runtime.retriever import Retriever

    path = tmp_path_factory.mktemp("archive") / "archive.db"
    retriever = Retriever.load(runtime_bundle, precision="auto")
    with Archive.open(path, retriever, create=True) as archive:
        archive.index([short_video[0]], workers=1)
    return path


def test_service_end_to_end(short_video, archive_db, runtime_bundle, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = {"bundle": str(runtime_bundle), "threads": 1,
              # A threshold below every score: each standing query fires at its first window (this tests the
              # plumbing, not the model's accuracy).
              "sources": [{"name": "yard", "kind": "file", "target": str(short_video[0]), "realtime": True,
                           "threshold_on": -10.0, "threshold_off": -11.0, "stride": 0.5,
                           "retry": {"initial_s": 0.2, "max_s": 0.5}},
                          {"name": "gone", "kind": "file", "target": str(tmp_path / "missing.mp4"),
                           "retry": {"initial_s": 0.2, "max_s": 0.5}}],
              "http": {"port": port, "max_body_bytes": 2048},
              "archive": {"location": str(archive_db)},
              "paths": {"media": str(tmp_path / "media"), "clips": True}}
    broker = subscriber = None
    if MOSQUITTO is not None:  # the events also go to MQTT; availability turns offline on SIGTERM
        (tmp_path / "broker").mkdir()
        broker = Broker(tmp_path / "broker")
        broker.start()
        config["mqtt"] = {"host": "127.0.0.1", "port": broker.port}
        subscriber = Subscriber(broker.port)
    config_path = tmp_path / "serve.yaml"
    config_path.write_text(yaml.safe_dump(config))
    notify_path = tempfile.mkdtemp(prefix="hbci-n", dir="/tmp") + "/notify"  # systemd's notify socket
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    datagrams: list[str] = []
    threading.Thread(target=_collect, args=(notify, datagrams), daemon=True).start()
    process = _start(config_path, {"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "400000"})
    try:
        health = _wait_up(base, process)
        assert health["bundle_id"] and health["backend"]
        # The missing file is down, retried, and the service keeps running.
        gone = health["sources"]["gone"]
        assert not gone["up"] and "missing.mp4" in (gone["error"] or "")

        received, stop, ready = [], threading.Event(), threading.Event()
        reader = threading.Thread(target=_sse, args=(base, received, stop, ready), daemon=True)
        reader.start()
        assert ready.wait(10)
        added = httpx.post(base + "/sources/yard/queries", json={"text": QUERY}, timeout=30)
        assert added.status_code == 201, added.text
        index = added.json()["index"]
        assert httpx.get(base + "/sources/yard/queries").json() == [{"index": index, "text": QUERY}]
        deadline = time.monotonic() + 30
        while not any(k == "start" and e["query"] == QUERY for k, e in received) and time.monotonic() < deadline:
            time.sleep(0.1)
        start = next(e for k, e in received if k == "start" and e["query"] == QUERY)
        assert start["source"] == "yard" and start["event_id"] and start["bundle_id"] == health["bundle_id"]
        thumb = httpx.get(base + start["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
        assert any(e["event_id"] == start["event_id"] for e in httpx.get(base + "/events?source=yard").json())
        # The file ends (reason stream_end), its clip is finished and served; the source is started again.
        deadline = time.monotonic() + 30
        while not any(k == "end" and e["event_id"] == start["event_id"] for k, e in received) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        end = next(e for k, e in received if k == "end" and e["event_id"] == start["event_id"])
        assert end["reason"] == "stream_end" and end["clip_url"] == f"/events/{start['event_id']}/clip.mp4"
        clip = httpx.get(base + end["clip_url"])
        assert clip.status_code == 200 and len(clip.content) > 1000
        assert httpx.get(base + "/events/nope/clip.mp4").status_code == 404

        removed = httpx.delete(base + f"/sources/yard/queries/{index}")
        assert removed.status_code == 200
        assert httpx.get(base + "/sources/yard/queries").json() == []
        assert httpx.delete(base + f"/sources/yard/queries/{index}").status_code == 404

        metrics = httpx.get(base + "/metrics").text
        assert 'hbci_source_up{source="gone"} 0.0' in metrics
        assert 'hbci_frames_total{source="yard"}' in metrics
        assert httpx.get(base + "/version").json()["bundle_id"] == health["bundle_id"]
        assert httpx.get(base + "/stats").json()["archive"]["windows"] > 0

        found = httpx.post(base + "/archive/search", json={"query": QUERY, "top_k": 3}, timeout=30)
        assert found.status_code == 200, found.text
        moments = found.json()["moments"]
        assert moments and moments[0]["path"].endswith("short.mp4")

        # Bad requests: 4xx with a reason, and the service keeps running.
        bad = httpx.post(base + "/sources/yard/queries", content=b"{not json", timeout=5,
                         headers={"content-type": "application/json"})
        assert bad.status_code == 422 and bad.json()["detail"]
        extra = httpx.post(base + "/sources/yard/queries", json={"text": "x", "colour": "red"})
        assert extra.status_code == 422 and "colour" in extra.text
        big = httpx.post(base + "/sources/yard/queries", json={"text": "a" * 4000})
        assert big.status_code == 413 and "2048" in big.json()["detail"]
        assert httpx.post(base + "/sources/nowhere/queries", json={"text": "x"}).status_code == 404
        assert httpx.post(base + "/archive/search", json={"query": "  "}).status_code == 422

        # SIGHUP reloads the standing queries from the file.
        config["sources"][0]["queries"] = ["a blue square grows", QUERY]
        config_path.write_text(yaml.safe_dump(config))
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            texts = [q["text"] for q in httpx.get(base + "/sources/yard/queries").json()]
            if texts == ["a blue square grows", QUERY]:
                break
            time.sleep(0.2)
        assert texts == ["a blue square grows", QUERY]
        deadline = time.monotonic() + 30
        while not any(k == "start" and e["query"] == "a blue square grows" for k, e in received) \
                and time.monotonic() < deadline:
            time.sleep(0.1)

        # SIGTERM drains: the open events end with reason "stopped" on the stream, exit 0.
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stderr.read()
        reader.join(10)
        stopped = [e for k, e in received if k == "end" and e["reason"] == "stopped"]
        assert stopped and {e["query"] for e in stopped} <= {QUERY, "a blue square grows"}
        time.sleep(0.2)
        assert datagrams[0].startswith("READY=1\nSTATUS=2 sources") and datagrams[-1] == "STOPPING=1"
        assert datagrams.count("WATCHDOG=1") >= 2  # from the frame loop and the dead source's retries
        if subscriber is not None:
            subscriber.wait(lambda m: m[0] == "hbci/available" and m[1] == "offline")
            messages = subscriber.events()
            assert any(m["type"] == "new" and m["after"]["id"] == start["event_id"] for m in messages)
            ended = {m["after"]["id"] for m in messages if m["type"] == "end" and m["after"]["end_reason"] == "stopped"}
            assert ended == {e["event_id"] for e in stopped}
    finally:
        notify.close()
        if subscriber is not None:
            subscriber.close()
        if broker is not None:
            broker.stop()
        if process.poll() is None:
            process.kill()
            process.wait()
